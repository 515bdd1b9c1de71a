//! The store's `max_ts` and its in-memory lock table, which together make
//! async commit and 1PC safe (TiKV's concurrency manager).
//!
//! Every read at ts `R` raises `max_ts` to `R`, THEN looks for memory locks
//! on its keys. An async-commit prewrite puts its locks into the table and
//! reads `max_ts` under the same mutex, then computes `min_commit_ts =
//! max_ts + 1`. Either the prewrite saw `R` (so its commit ts is above
//! every such read), or the read finds the memory lock and treats it as a
//! lock in storage. The memory locks stay until the write is applied (or
//! certainly dropped), after which readers see the lock in the engine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use atoll_txn::{Key, Lock, TimeStamp};
use parking_lot::Mutex;

#[derive(Default)]
pub struct ConcurrencyManager {
    max_ts: AtomicU64,
    /// Key → (lock, how many commands hold it: a resent prewrite may
    /// guard the same key again while the first is still in flight).
    locks: Mutex<BTreeMap<Key, (Lock, usize)>>,
}

/// Memory locks of one command; dropping it removes them.
pub struct MemoryLocks {
    cm: Arc<ConcurrencyManager>,
    keys: Vec<Key>,
}

impl ConcurrencyManager {
    pub fn max_ts(&self) -> TimeStamp {
        self.max_ts.load(Ordering::SeqCst)
    }

    /// Raises `max_ts` to `ts` (never to u64::MAX, which means "latest").
    pub fn update_max_ts(&self, ts: TimeStamp) {
        if ts != u64::MAX {
            self.max_ts.fetch_max(ts, Ordering::SeqCst);
        }
    }

    /// Puts `locks` into the table and returns the min_commit_ts they get:
    /// above `max_ts` (read under the table's mutex), `floor` and any
    /// `min_commit_ts` already in the locks. The caller writes that value
    /// into the locks it persists.
    pub fn lock_keys(
        self: &Arc<Self>,
        locks: Vec<(Key, Lock)>,
        floor: TimeStamp,
    ) -> (MemoryLocks, TimeStamp) {
        let mut table = self.locks.lock();
        let mut min_commit_ts = (self.max_ts() + 1).max(floor);
        for (_, l) in &locks {
            min_commit_ts = min_commit_ts.max(l.min_commit_ts);
        }
        let mut keys = Vec::with_capacity(locks.len());
        for (key, mut lock) in locks {
            lock.min_commit_ts = min_commit_ts;
            let e = table.entry(key.clone()).or_insert((lock, 0));
            e.1 += 1;
            keys.push(key);
        }
        (MemoryLocks { cm: self.clone(), keys }, min_commit_ts)
    }

    /// The memory lock on `key`, if any.
    pub fn lock_of(&self, key: &Key) -> Option<Lock> {
        self.locks.lock().get(key).map(|(l, _)| l.clone())
    }

    /// The first memory lock in the encoded range `[start, end)` (empty
    /// end: unbounded) that `f` picks.
    pub fn find_in_range(
        &self,
        start: &Key,
        end: &Key,
        f: impl Fn(&Key, &Lock) -> bool,
    ) -> Option<(Key, Lock)> {
        if !end.as_encoded().is_empty() && start >= end {
            return None; // an empty range (BTreeMap::range panics on it)
        }
        let table = self.locks.lock();
        let upper = if end.as_encoded().is_empty() {
            std::ops::Bound::Unbounded
        } else {
            std::ops::Bound::Excluded(end.clone())
        };
        table
            .range((std::ops::Bound::Included(start.clone()), upper))
            .find(|(k, (l, _))| f(k, l))
            .map(|(k, (l, _))| (k.clone(), l.clone()))
    }
}

impl Drop for MemoryLocks {
    fn drop(&mut self) {
        let mut table = self.cm.locks.lock();
        for k in &self.keys {
            if let Some(e) = table.get_mut(k) {
                e.1 -= 1;
                if e.1 == 0 {
                    table.remove(k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_txn::LockType;

    #[test]
    fn min_commit_ts_is_above_every_read_seen_and_locks_go_on_drop() {
        let cm = Arc::new(ConcurrencyManager::default());
        cm.update_max_ts(100);
        cm.update_max_ts(u64::MAX);
        cm.update_max_ts(50);
        assert_eq!(cm.max_ts(), 100);
        let lock = Lock::new(LockType::Put, b"p".to_vec(), 10, 3000);
        let (guard, ts) = cm.lock_keys(vec![(Key::from_raw(b"a"), lock.clone())], 10);
        assert_eq!(ts, 101);
        assert_eq!(cm.lock_of(&Key::from_raw(b"a")).unwrap().min_commit_ts, 101);
        let (guard2, ts2) = cm.lock_keys(vec![(Key::from_raw(b"a"), lock)], 200);
        assert_eq!(ts2, 200);
        let any = |_: &Key, _: &Lock| true;
        assert!(cm.find_in_range(&Key::from_raw(b""), &Key::from_encoded(vec![]), any).is_some());
        assert!(cm.find_in_range(&Key::from_raw(b"b"), &Key::from_encoded(vec![]), any).is_none());
        // A range whose end is before its start is empty (a fuzz finding).
        assert!(cm.find_in_range(&Key::from_raw(b"b"), &Key::from_raw(b"a"), any).is_none());
        drop(guard);
        assert!(cm.lock_of(&Key::from_raw(b"a")).is_some(), "still held by the second");
        drop(guard2);
        assert!(cm.lock_of(&Key::from_raw(b"a")).is_none());
    }
}
