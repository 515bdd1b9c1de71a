//! An in-memory [`KvEngine`] for deterministic simulation tests.
//!
//! Each column family is a copy-on-write `BTreeMap` behind an `Arc`, so a
//! snapshot is one `Arc` clone and a write after a snapshot copies the map
//! once. It is built for tests with small data sets, not for production.
//! It depends only on `engine_traits`.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use atoll_engine_traits::{
    EngineIterator, Error, Iterable, KvEngine, Peekable, Result, Snapshot, WriteBatch,
    WriteOptions, ALL_CFS,
};
use parking_lot::RwLock;

type Map = Arc<BTreeMap<Vec<u8>, Vec<u8>>>;

fn cf_index(cf: &str) -> Result<usize> {
    let cf = if cf.is_empty() { atoll_engine_traits::CF_DEFAULT } else { cf };
    ALL_CFS.iter().position(|c| *c == cf).ok_or_else(|| Error::InvalidCf(cf.to_owned()))
}

/// The engine handle; clones share the same data.
#[derive(Clone, Default)]
pub struct MemoryEngine {
    cfs: Arc<RwLock<Vec<Map>>>,
}

impl MemoryEngine {
    pub fn new() -> Self {
        MemoryEngine { cfs: Arc::new(RwLock::new(vec![Map::default(); ALL_CFS.len()])) }
    }
}

impl Peekable for MemoryEngine {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let i = cf_index(cf)?;
        Ok(self.cfs.read()[i].get(key).cloned())
    }
}

impl Iterable for MemoryEngine {
    type Iterator = MemoryIterator;
    fn iterator_cf(&self, cf: &str, lower: &[u8], upper: &[u8]) -> Result<MemoryIterator> {
        let i = cf_index(cf)?;
        let map = self.cfs.read()[i].clone();
        Ok(MemoryIterator::new(map, lower, upper))
    }
}

enum Op {
    Put(usize, Vec<u8>, Vec<u8>),
    Delete(usize, Vec<u8>),
    DeleteRange(usize, Vec<u8>, Vec<u8>),
}

/// A list of mutations applied under one lock.
#[derive(Default)]
pub struct MemoryWriteBatch {
    ops: Vec<Op>,
    size: usize,
}

impl WriteBatch for MemoryWriteBatch {
    fn put_cf(&mut self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        let i = cf_index(cf)?;
        self.size += key.len() + value.len();
        self.ops.push(Op::Put(i, key.to_vec(), value.to_vec()));
        Ok(())
    }
    fn delete_cf(&mut self, cf: &str, key: &[u8]) -> Result<()> {
        let i = cf_index(cf)?;
        self.size += key.len();
        self.ops.push(Op::Delete(i, key.to_vec()));
        Ok(())
    }
    fn delete_range_cf(&mut self, cf: &str, start: &[u8], end: &[u8]) -> Result<()> {
        let i = cf_index(cf)?;
        self.size += start.len() + end.len();
        self.ops.push(Op::DeleteRange(i, start.to_vec(), end.to_vec()));
        Ok(())
    }
    fn count(&self) -> usize {
        self.ops.len()
    }
    fn data_size(&self) -> usize {
        self.size
    }
    fn clear(&mut self) {
        self.ops.clear();
        self.size = 0;
    }
}

impl KvEngine for MemoryEngine {
    type Snapshot = MemorySnapshot;
    type WriteBatch = MemoryWriteBatch;

    fn write_batch(&self) -> MemoryWriteBatch {
        MemoryWriteBatch::default()
    }
    fn write_batch_with_cap(&self, cap: usize) -> MemoryWriteBatch {
        MemoryWriteBatch { ops: Vec::with_capacity(cap.min(1024)), size: 0 }
    }
    fn write(&self, wb: &mut MemoryWriteBatch, _opts: WriteOptions) -> Result<()> {
        let mut cfs = self.cfs.write();
        for op in &wb.ops {
            match op {
                Op::Put(i, k, v) => {
                    Arc::make_mut(&mut cfs[*i]).insert(k.clone(), v.clone());
                }
                Op::Delete(i, k) => {
                    Arc::make_mut(&mut cfs[*i]).remove(k);
                }
                Op::DeleteRange(i, s, e) => {
                    if s >= e {
                        continue;
                    }
                    let map = Arc::make_mut(&mut cfs[*i]);
                    let doomed: Vec<Vec<u8>> = map
                        .range::<[u8], _>((Bound::Included(&s[..]), Bound::Excluded(&e[..])))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in doomed {
                        map.remove(&k);
                    }
                }
            }
        }
        drop(cfs);
        wb.clear();
        Ok(())
    }
    fn snapshot(&self) -> MemorySnapshot {
        MemorySnapshot { cfs: self.cfs.read().clone() }
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn approximate_size_cf(&self, cf: &str, start: &[u8], end: &[u8]) -> Result<u64> {
        let mut size = 0u64;
        self.scan_cf(cf, start, end, false, &mut |k, v| {
            size += (k.len() + v.len()) as u64;
            Ok(true)
        })?;
        Ok(size)
    }
}

/// A frozen copy of every column family.
pub struct MemorySnapshot {
    cfs: Vec<Map>,
}

impl Peekable for MemorySnapshot {
    fn get_value_cf(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.cfs[cf_index(cf)?].get(key).cloned())
    }
}

impl Iterable for MemorySnapshot {
    type Iterator = MemoryIterator;
    fn iterator_cf(&self, cf: &str, lower: &[u8], upper: &[u8]) -> Result<MemoryIterator> {
        Ok(MemoryIterator::new(self.cfs[cf_index(cf)?].clone(), lower, upper))
    }
}

impl Snapshot for MemorySnapshot {}

/// A cursor over a frozen map; it re-seeks by key, so it never holds a borrow.
pub struct MemoryIterator {
    map: Map,
    lower: Vec<u8>,
    upper: Option<Vec<u8>>,
    current: Option<(Vec<u8>, Vec<u8>)>,
}

impl MemoryIterator {
    fn new(map: Map, lower: &[u8], upper: &[u8]) -> Self {
        let upper = if upper.is_empty() { None } else { Some(upper.to_vec()) };
        MemoryIterator { map, lower: lower.to_vec(), upper, current: None }
    }

    fn upper_bound(&self) -> Bound<&[u8]> {
        match &self.upper {
            Some(u) => Bound::Excluded(&u[..]),
            None => Bound::Unbounded,
        }
    }

    fn set(&mut self, kv: Option<(&Vec<u8>, &Vec<u8>)>) -> bool {
        self.current = kv.map(|(k, v)| (k.clone(), v.clone()));
        self.current.is_some()
    }

    /// First entry at or after `from` within the bounds.
    fn first_from(&mut self, from: Bound<&[u8]>) -> bool {
        if let (Some(u), Bound::Included(f) | Bound::Excluded(f)) = (&self.upper, from) {
            if f >= &u[..] {
                return self.set(None);
            }
        }
        let map = self.map.clone();
        let kv = map.range::<[u8], _>((from, self.upper_bound())).next();
        self.set(kv)
    }

    /// Last entry before `to` within the bounds.
    fn last_before(&mut self, to: Bound<&[u8]>) -> bool {
        if let Bound::Included(t) | Bound::Excluded(t) = to {
            if t < &self.lower[..] || (matches!(to, Bound::Excluded(_)) && t == &self.lower[..]) {
                return self.set(None);
            }
        }
        let map = self.map.clone();
        let kv = map.range::<[u8], _>((Bound::Included(&self.lower[..]), to)).next_back();
        self.set(kv)
    }

    fn clamp_upper<'a>(&'a self, to: Bound<&'a [u8]>) -> Bound<&'a [u8]> {
        match (&self.upper, to) {
            (Some(u), Bound::Included(k)) if k >= &u[..] => Bound::Excluded(&u[..]),
            (Some(u), Bound::Excluded(k)) if k > &u[..] => Bound::Excluded(&u[..]),
            (Some(u), Bound::Unbounded) => Bound::Excluded(&u[..]),
            _ => to,
        }
    }
}

impl EngineIterator for MemoryIterator {
    fn seek_to_first(&mut self) -> Result<bool> {
        let lower = self.lower.clone();
        Ok(self.first_from(Bound::Included(&lower)))
    }
    fn seek_to_last(&mut self) -> Result<bool> {
        let upper = self.upper.clone();
        let to = match &upper {
            Some(u) => Bound::Excluded(&u[..]),
            None => Bound::Unbounded,
        };
        Ok(self.last_before(to))
    }
    fn seek(&mut self, key: &[u8]) -> Result<bool> {
        let from = if key < &self.lower[..] { self.lower.clone() } else { key.to_vec() };
        Ok(self.first_from(Bound::Included(&from)))
    }
    fn seek_for_prev(&mut self, key: &[u8]) -> Result<bool> {
        if key < &self.lower[..] {
            self.current = None;
            return Ok(false);
        }
        let key = key.to_vec();
        let upper = self.upper.clone();
        let this = MemoryIterator { map: self.map.clone(), lower: vec![], upper, current: None };
        let to = this.clamp_upper(Bound::Included(&key));
        let to = match to {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let to_ref = match &to {
            Bound::Included(k) => Bound::Included(&k[..]),
            Bound::Excluded(k) => Bound::Excluded(&k[..]),
            Bound::Unbounded => Bound::Unbounded,
        };
        Ok(self.last_before(to_ref))
    }
    fn next(&mut self) -> Result<bool> {
        let cur = self.current.take().expect("next on invalid iterator").0;
        Ok(self.first_from(Bound::Excluded(&cur)))
    }
    fn prev(&mut self) -> Result<bool> {
        let cur = self.current.take().expect("prev on invalid iterator").0;
        Ok(self.last_before(Bound::Excluded(&cur)))
    }
    fn valid(&self) -> bool {
        self.current.is_some()
    }
    fn key(&self) -> &[u8] {
        &self.current.as_ref().expect("key on invalid iterator").0
    }
    fn value(&self) -> &[u8] {
        &self.current.as_ref().expect("value on invalid iterator").1
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_engine_suite() {
        atoll_engine_traits::suite::run_all(super::MemoryEngine::new);
    }
}
