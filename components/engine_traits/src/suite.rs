//! The shared engine test suite: every [`KvEngine`] implementation calls
//! [`run_all`] from its own tests with a factory for fresh, empty engines.

use crate::*;

/// Runs every case in the suite, each on a fresh engine from `new_engine`.
pub fn run_all<E: KvEngine>(mut new_engine: impl FnMut() -> E) {
    point_ops(&new_engine());
    column_families_are_isolated(&new_engine());
    write_batch_is_atomic_and_ordered(&new_engine());
    delete_range(&new_engine());
    snapshot_isolation(&new_engine());
    iterator_bounds_and_seeks(&new_engine());
    reverse_scan(&new_engine());
    invalid_cf_is_an_error(&new_engine());
    sync_write(&new_engine());
}

pub fn point_ops<E: KvEngine>(e: &E) {
    assert_eq!(e.get_value(b"k").unwrap(), None);
    e.put_cf(CF_DEFAULT, b"k", b"v1").unwrap();
    assert_eq!(e.get_value(b"k").unwrap().as_deref(), Some(&b"v1"[..]));
    e.put_cf(CF_DEFAULT, b"k", b"v2").unwrap();
    assert_eq!(e.get_value(b"k").unwrap().as_deref(), Some(&b"v2"[..]));
    e.put_cf(CF_DEFAULT, b"empty", b"").unwrap();
    assert_eq!(e.get_value(b"empty").unwrap().as_deref(), Some(&b""[..]));
    e.delete_cf(CF_DEFAULT, b"k").unwrap();
    assert_eq!(e.get_value(b"k").unwrap(), None);
}

pub fn column_families_are_isolated<E: KvEngine>(e: &E) {
    for (i, cf) in ALL_CFS.iter().enumerate() {
        e.put_cf(cf, b"same", &[i as u8]).unwrap();
    }
    for (i, cf) in ALL_CFS.iter().enumerate() {
        assert_eq!(e.get_value_cf(cf, b"same").unwrap(), Some(vec![i as u8]), "cf {cf}");
    }
}

pub fn write_batch_is_atomic_and_ordered<E: KvEngine>(e: &E) {
    let mut wb = e.write_batch();
    assert!(wb.is_empty());
    wb.put_cf(CF_DEFAULT, b"a", b"1").unwrap();
    wb.put_cf(CF_RAFT, b"a", b"r").unwrap();
    wb.put_cf(CF_DEFAULT, b"b", b"2").unwrap();
    wb.delete_cf(CF_DEFAULT, b"b").unwrap();
    wb.put_cf(CF_DEFAULT, b"c", b"3").unwrap();
    assert_eq!(wb.count(), 5);
    assert!(wb.data_size() > 0);
    // Nothing is visible before the write.
    assert_eq!(e.get_value(b"a").unwrap(), None);
    e.write(&mut wb, WriteOptions::default()).unwrap();
    assert_eq!(e.get_value(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(e.get_value_cf(CF_RAFT, b"a").unwrap(), Some(b"r".to_vec()));
    assert_eq!(e.get_value(b"b").unwrap(), None, "later delete in the batch wins");
    assert_eq!(e.get_value(b"c").unwrap(), Some(b"3".to_vec()));
    assert!(wb.is_empty(), "write leaves the batch empty for reuse");
    wb.put_cf(CF_DEFAULT, b"d", b"4").unwrap();
    wb.clear();
    assert_eq!(wb.count(), 0);
    e.write(&mut wb, WriteOptions::default()).unwrap();
    assert_eq!(e.get_value(b"d").unwrap(), None, "a cleared batch writes nothing");
}

pub fn delete_range<E: KvEngine>(e: &E) {
    for k in [b"a", b"b", b"c", b"d"] {
        e.put_cf(CF_DEFAULT, k, k).unwrap();
        e.put_cf(CF_WRITE, k, k).unwrap();
    }
    let mut wb = e.write_batch();
    wb.delete_range_cf(CF_DEFAULT, b"b", b"d").unwrap();
    e.write(&mut wb, WriteOptions::default()).unwrap();
    let keys = collect(e, CF_DEFAULT, b"", b"", false);
    assert_eq!(keys, vec![b"a".to_vec(), b"d".to_vec()]);
    assert_eq!(collect(e, CF_WRITE, b"", b"", false).len(), 4, "other cf untouched");
}

pub fn snapshot_isolation<E: KvEngine>(e: &E) {
    e.put_cf(CF_DEFAULT, b"k", b"old").unwrap();
    let snap = e.snapshot();
    e.put_cf(CF_DEFAULT, b"k", b"new").unwrap();
    e.put_cf(CF_DEFAULT, b"k2", b"x").unwrap();
    assert_eq!(snap.get_value(b"k").unwrap(), Some(b"old".to_vec()));
    assert_eq!(snap.get_value(b"k2").unwrap(), None);
    let mut seen = vec![];
    snap.scan_cf(CF_DEFAULT, b"", b"", false, &mut |k, _| {
        seen.push(k.to_vec());
        Ok(true)
    })
    .unwrap();
    assert_eq!(seen, vec![b"k".to_vec()]);
    assert_eq!(e.get_value(b"k").unwrap(), Some(b"new".to_vec()));
}

pub fn iterator_bounds_and_seeks<E: KvEngine>(e: &E) {
    for k in [&b"a"[..], b"b", b"c", b"d", b"e"] {
        e.put_cf(CF_DEFAULT, k, k).unwrap();
    }
    let mut it = e.iterator_cf(CF_DEFAULT, b"b", b"e").unwrap();
    assert!(it.seek_to_first().unwrap());
    assert_eq!(it.key(), b"b");
    assert_eq!(it.value(), b"b");
    assert!(it.next().unwrap());
    assert_eq!(it.key(), b"c");
    assert!(it.seek_to_last().unwrap());
    assert_eq!(it.key(), b"d", "upper bound is exclusive");
    assert!(!it.next().unwrap());
    assert!(!it.valid());
    assert!(it.seek(b"bb").unwrap());
    assert_eq!(it.key(), b"c");
    assert!(it.seek_for_prev(b"cc").unwrap());
    assert_eq!(it.key(), b"c");
    assert!(it.prev().unwrap());
    assert_eq!(it.key(), b"b");
    assert!(!it.prev().unwrap(), "lower bound is inclusive and final");
    assert!(!it.seek(b"z").unwrap());
    assert!(!it.seek_for_prev(b"a").unwrap());
}

pub fn reverse_scan<E: KvEngine>(e: &E) {
    for i in 0..100u32 {
        e.put_cf(CF_DEFAULT, &i.to_be_bytes(), b"v").unwrap();
    }
    let fwd = collect(e, CF_DEFAULT, &10u32.to_be_bytes(), &20u32.to_be_bytes(), false);
    let mut rev = collect(e, CF_DEFAULT, &10u32.to_be_bytes(), &20u32.to_be_bytes(), true);
    assert_eq!(fwd.len(), 10);
    rev.reverse();
    assert_eq!(fwd, rev);
    // Early stop.
    let mut n = 0;
    e.scan_cf(CF_DEFAULT, b"", b"", true, &mut |_, _| {
        n += 1;
        Ok(n < 3)
    })
    .unwrap();
    assert_eq!(n, 3);
}

pub fn invalid_cf_is_an_error<E: KvEngine>(e: &E) {
    assert!(matches!(e.get_value_cf("nope", b"k"), Err(Error::InvalidCf(_))));
    let mut wb = e.write_batch();
    assert!(wb.put_cf("nope", b"k", b"v").is_err());
    assert!(e.iterator_cf("nope", b"", b"").is_err());
}

pub fn sync_write<E: KvEngine>(e: &E) {
    let mut wb = e.write_batch_with_cap(1024);
    wb.put_cf(CF_RAFT, b"state", b"1").unwrap();
    e.write(&mut wb, WriteOptions::sync()).unwrap();
    e.sync().unwrap();
    assert_eq!(e.get_value_cf(CF_RAFT, b"state").unwrap(), Some(b"1".to_vec()));
    assert!(e.approximate_size_cf(CF_RAFT, b"", b"").is_ok());
}

fn collect<E: KvEngine>(e: &E, cf: &str, start: &[u8], end: &[u8], reverse: bool) -> Vec<Vec<u8>> {
    let mut out = vec![];
    e.scan_cf(cf, start, end, reverse, &mut |k, _| {
        out.push(k.to_vec());
        Ok(true)
    })
    .unwrap();
    out
}
