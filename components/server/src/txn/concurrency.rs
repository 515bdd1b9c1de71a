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
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atoll_txn::{Key, Lock, TimeStamp};
use parking_lot::Mutex;

/// Bits of a timestamp below its physical milliseconds.
const LOGICAL_BITS: u32 = 18;

pub struct ConcurrencyManager {
    max_ts: AtomicU64,
    /// The highest ts a request may raise `max_ts` to: the latest PD
    /// timestamp seen plus `drift` (0: none seen yet). TiKV's
    /// `max_ts_limit`: one read at a ts far ahead would otherwise push
    /// every later async-commit and 1PC commit ts up with it, to u64::MAX
    /// at worst, where commits stop being visible.
    limit: AtomicU64,
    /// `server.max-ts-drift`, as a timestamp difference.
    drift: u64,
    /// Key → (lock, how many commands hold it: a resent prewrite may
    /// guard the same key again while the first is still in flight).
    locks: Mutex<BTreeMap<Key, (Lock, usize)>>,
}

/// `update_max_ts` refused a ts above the limit (the limit it had).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AboveLimit(pub TimeStamp);

/// Memory locks of one command; dropping it removes them.
pub struct MemoryLocks {
    cm: Arc<ConcurrencyManager>,
    keys: Vec<Key>,
}

impl ConcurrencyManager {
    pub fn new(max_drift: Duration) -> Self {
        let ms = u64::try_from(max_drift.as_millis()).unwrap_or(u64::MAX >> LOGICAL_BITS);
        ConcurrencyManager {
            max_ts: AtomicU64::new(0),
            limit: AtomicU64::new(0),
            drift: ms.min(u64::MAX >> LOGICAL_BITS) << LOGICAL_BITS,
            locks: Mutex::default(),
        }
    }

    pub fn max_ts(&self) -> TimeStamp {
        self.max_ts.load(Ordering::SeqCst)
    }

    pub fn max_ts_limit(&self) -> TimeStamp {
        self.limit.load(Ordering::SeqCst)
    }

    /// Raises the limit to `pd_ts` (a timestamp from PD) plus the drift
    /// allowance; it never falls, and never reaches u64::MAX.
    pub fn set_max_ts_limit(&self, pd_ts: TimeStamp) {
        let limit = pd_ts.saturating_add(self.drift).min(u64::MAX - 1);
        self.limit.fetch_max(limit, Ordering::SeqCst);
    }

    /// Raises `max_ts` to `ts` if `ts` is within the limit. u64::MAX
    /// ("latest", an autocommit point get) changes nothing and is fine.
    pub fn update_max_ts(&self, ts: TimeStamp) -> Result<(), AboveLimit> {
        if ts == u64::MAX {
            return Ok(());
        }
        let limit = self.max_ts_limit();
        if ts > limit {
            return Err(AboveLimit(limit));
        }
        self.max_ts.fetch_max(ts, Ordering::SeqCst);
        Ok(())
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
        // max_ts ≤ limit < u64::MAX (update_max_ts), so this cannot overflow.
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

    /// Every memory lock in the encoded range `[start, end)` (empty end:
    /// unbounded) that `f` picks, in key order. Memory locks live only
    /// while a prewrite is in flight, so there are few.
    pub fn all_in_range(
        &self,
        start: &Key,
        end: &Key,
        f: impl Fn(&Key, &Lock) -> bool,
    ) -> Vec<(Key, Lock)> {
        if !end.as_encoded().is_empty() && start >= end {
            return vec![]; // an empty range (BTreeMap::range panics on it)
        }
        let table = self.locks.lock();
        let upper = if end.as_encoded().is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end.clone())
        };
        table
            .range((Bound::Included(start.clone()), upper))
            .filter(|(k, (l, _))| f(k, l))
            .map(|(k, (l, _))| (k.clone(), l.clone()))
            .collect()
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
        let cm = Arc::new(ConcurrencyManager::new(Duration::from_secs(60)));
        cm.set_max_ts_limit(1000);
        cm.update_max_ts(100).unwrap();
        cm.update_max_ts(u64::MAX).unwrap();
        cm.update_max_ts(50).unwrap();
        assert_eq!(cm.max_ts(), 100);
        let lock = Lock::new(LockType::Put, b"p".to_vec(), 10, 3000);
        let (guard, ts) = cm.lock_keys(vec![(Key::from_raw(b"a"), lock.clone())], 10);
        assert_eq!(ts, 101);
        assert_eq!(cm.lock_of(&Key::from_raw(b"a")).unwrap().min_commit_ts, 101);
        let (guard2, ts2) = cm.lock_keys(vec![(Key::from_raw(b"a"), lock.clone())], 200);
        assert_eq!(ts2, 200);
        let (guard3, _) = cm.lock_keys(vec![(Key::from_raw(b"c"), lock.clone())], 10);
        let any = |_: &Key, _: &Lock| true;
        let all = cm.all_in_range(&Key::from_raw(b""), &Key::from_encoded(vec![]), any);
        let keys: Vec<Key> = all.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec![Key::from_raw(b"a"), Key::from_raw(b"c")], "every lock, in order");
        let upper = cm.all_in_range(&Key::from_raw(b"b"), &Key::from_encoded(vec![]), any);
        assert_eq!(upper.len(), 1);
        // A range whose end is before its start is empty (a fuzz finding).
        assert!(cm.all_in_range(&Key::from_raw(b"b"), &Key::from_raw(b"a"), any).is_empty());
        drop(guard3);
        drop(guard);
        assert!(cm.lock_of(&Key::from_raw(b"a")).is_some(), "still held by the second");
        drop(guard2);
        assert!(cm.lock_of(&Key::from_raw(b"a")).is_none());
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    /// TiKV's max_ts_limit: PD's time plus the drift; it never falls and
    /// never reaches u64::MAX; a ts above it changes nothing.
    #[test]
    fn max_ts_stays_within_pd_time_plus_the_drift() {
        let cm = ConcurrencyManager::new(Duration::from_secs(1));
        let drift = 1000 << LOGICAL_BITS;
        assert_eq!(cm.update_max_ts(1), Err(AboveLimit(0)), "no PD time seen yet");
        cm.set_max_ts_limit(5000 << LOGICAL_BITS);
        assert_eq!(cm.max_ts_limit(), (5000 << LOGICAL_BITS) + drift);
        cm.update_max_ts((5000 << LOGICAL_BITS) + drift).unwrap();
        let above = (5000 << LOGICAL_BITS) + drift + 1;
        assert_eq!(cm.update_max_ts(above), Err(AboveLimit(above - 1)));
        assert_eq!(cm.max_ts(), (5000 << LOGICAL_BITS) + drift, "unchanged");
        cm.set_max_ts_limit(10);
        assert_eq!(cm.max_ts_limit(), (5000 << LOGICAL_BITS) + drift, "never falls");
        cm.set_max_ts_limit(u64::MAX - 5);
        assert_eq!(cm.max_ts_limit(), u64::MAX - 1);
        assert_eq!(cm.update_max_ts(u64::MAX), Ok(()), "\"latest\" reads raise nothing");
    }
}
