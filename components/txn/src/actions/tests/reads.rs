//! Reads, scans and GC of the MVCC actions.

use super::*;

#[test]
fn snapshot_reads_see_what_was_committed_at_their_ts() {
    let s = Store::new();
    s.put("a", "v1", 10, 20);
    s.put("a", "v2", 30, 40);
    s.must_get("a", 19, None);
    s.must_get("a", 20, Some("v1"));
    s.must_get("a", 39, Some("v1"));
    s.must_get("a", 40, Some("v2"));
    // A delete, then a Lock record and a rollback on top: neither hides the delete.
    s.prewrite_op(
        Op::Del,
        "a",
        "",
        &Store::props("a", 50),
        PessimisticAction::SkipPessimisticCheck,
    )
    .unwrap();
    s.commit("a", 50, 60).unwrap();
    s.prewrite_op(
        Op::Lock,
        "a",
        "",
        &Store::props("a", 70),
        PessimisticAction::SkipPessimisticCheck,
    )
    .unwrap();
    s.commit("a", 70, 80).unwrap();
    s.rollback("a", 90).unwrap();
    s.must_get("a", 100, None);
    s.must_get("a", 59, Some("v2"));
}

#[test]
fn long_values_go_to_the_default_cf_short_ones_inline() {
    let s = Store::new();
    let long = "x".repeat(crate::SHORT_VALUE_MAX_LEN + 1);
    let short = "y".repeat(crate::SHORT_VALUE_MAX_LEN);
    s.put("long", &long, 10, 11);
    s.put("short", &short, 10, 11);
    assert_eq!(s.write_count(CF_DEFAULT), 1);
    s.must_get("long", 11, Some(&long));
    s.must_get("short", 11, Some(&short));
    // Rolling back a long value's lock removes the value too.
    s.prewrite_put("long", &long, "long", 20).unwrap();
    assert_eq!(s.write_count(CF_DEFAULT), 2);
    s.rollback("long", 20).unwrap();
    assert_eq!(s.write_count(CF_DEFAULT), 1);
    s.must_get("long", 30, Some(&long));
}

#[test]
fn a_lock_blocks_reads_at_or_after_its_start_only() {
    let s = Store::new();
    s.put("a", "old", 5, 6);
    s.prewrite_put("a", "new", "a", 10).unwrap();
    s.must_get("a", 9, Some("old"));
    match s.get("a", 10) {
        Err(Error::KeyIsLocked(info)) => {
            assert_eq!(info.key, k("a"));
            assert_eq!(info.lock.ts, 10);
            assert_eq!(info.lock.primary, b"a");
        }
        other => panic!("expected locked, got {other:?}"),
    }
    // Lock-only and pessimistic locks change nothing: reads go past them.
    s.prewrite_op(
        Op::Lock,
        "b",
        "",
        &Store::props("b", 10),
        PessimisticAction::SkipPessimisticCheck,
    )
    .unwrap();
    s.must_get("b", 20, None);
    s.pessimistic_lock("c", "c", 10, 10).unwrap();
    s.must_get("c", 20, None);
}

#[test]
fn gc_keeps_what_reads_at_the_safe_point_see() {
    let s = Store::new();
    let long = "l".repeat(300);
    s.put("a", &long, 10, 11);
    s.put("a", "v2", 20, 21);
    s.rollback("a", 25).unwrap();
    s.put("a", "v3", 30, 31);
    s.put("b", "v", 10, 11);
    s.prewrite_op(
        Op::Del,
        "b",
        "",
        &Store::props("b", 20),
        PessimisticAction::SkipPessimisticCheck,
    )
    .unwrap();
    s.commit("b", 20, 21).unwrap();
    assert_eq!(s.run(|txn, r| gc_key(txn, r, &k("a"), 26)).unwrap(), 2, "the rollback and v1");
    assert_eq!(s.write_count(CF_DEFAULT), 0, "v1's long value went with it");
    s.must_get("a", 26, Some("v2"));
    s.must_get("a", 31, Some("v3"));
    assert_eq!(
        s.run(|txn, r| gc_key(txn, r, &k("b"), 30)).unwrap(),
        2,
        "a delete takes everything"
    );
    s.must_get("b", 30, None);
    assert_eq!(s.run(|txn, r| gc_key(txn, r, &k("a"), 26)).unwrap(), 0, "nothing left to remove");
}

#[test]
fn scans_visit_locked_and_committed_keys_once_each_in_order() {
    let s = Store::new();
    s.put("a", "1", 10, 11);
    s.put("a", "2", 12, 13);
    s.prewrite_put("b", "x", "b", 14).unwrap(); // locked, no record yet
    s.put("c", "3", 10, 11);
    s.prewrite_put("c", "y", "c", 20).unwrap(); // locked and committed before
    s.put("d", "4", 10, 11);
    let snap = s.engine.snapshot();
    let r = MvccReader::new(&snap);
    let collect = |start: &str, end: &str, reverse: bool| {
        let mut seen = vec![];
        let (start, end) =
            (k(start), if end.is_empty() { Key::from_encoded(vec![]) } else { k(end) });
        r.scan_keys(&start, &end, reverse, &mut |key| {
            seen.push(String::from_utf8(key.to_raw().unwrap()).unwrap());
            Ok(true)
        })
        .unwrap();
        seen
    };
    assert_eq!(collect("a", "", false), ["a", "b", "c", "d"]);
    assert_eq!(collect("a", "", true), ["d", "c", "b", "a"]);
    assert_eq!(collect("b", "d", false), ["b", "c"]);
    assert_eq!(collect("b", "d", true), ["c", "b"]);
    let locks = r.scan_locks(&k("a"), &Key::from_encoded(vec![]), 15, 0).unwrap();
    assert_eq!(
        locks.iter().map(|l| l.key.clone()).collect::<Vec<_>>(),
        [k("b")],
        "c's lock is at 20"
    );
    assert_eq!(r.scan_locks(&k("a"), &Key::from_encoded(vec![]), 100, 1).unwrap().len(), 1);
    assert_eq!(s.write_count(CF_LOCK), 2);
}
