//! What a snapshot read does about a lock it meets: TiKV's
//! `Lock::check_ts_conflict` (`components/txn_types/src/lock.rs`) and the
//! `access_locks` of its `PointGetter` (`src/storage/mvcc/reader/
//! point_getter.rs`).

use crate::{Key, Lock, LockType, TimeStamp};

/// The locks a read may pass by, from its request's Context: transactions
/// the client already found rolled back (`resolved_locks`: read below
/// their lock) or committed (`committed_locks`: read the lock's own value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadLocks {
    pub resolved: Vec<TimeStamp>,
    pub committed: Vec<TimeStamp>,
}

/// What a read at some ts does about one lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockRead {
    /// The lock changes nothing the read can see.
    Pass,
    /// Its transaction may commit at or below the read ts: KeyIsLocked.
    Blocked,
    /// Its transaction committed: the read sees the lock's value.
    UseLockValue,
}

impl ReadLocks {
    /// What a read at `ts` does about `lock` on `key`.
    pub fn check(&self, key: &Key, lock: &Lock, ts: TimeStamp) -> LockRead {
        if !lock.blocks_read_at(ts) || self.resolved.contains(&lock.ts) {
            return LockRead::Pass;
        }
        if self.committed.contains(&lock.ts) {
            return LockRead::UseLockValue;
        }
        // A read at u64::MAX ("the latest", an autocommit point get) passes
        // the primary lock of a two-phase transaction: it has not
        // committed, so the latest committed value is what a read sees.
        // Not an async-commit lock: that transaction may be committed
        // already, by its secondaries (TiKV: same rule).
        if ts == u64::MAX && !lock.use_async_commit && Key::from_raw(&lock.primary) == *key {
            return LockRead::Pass;
        }
        LockRead::Blocked
    }
}

/// The value a committed lock stands for: a Put's value (inline, or in the
/// default CF at the lock's ts, read by `load`), nothing for a Delete.
pub(crate) fn lock_value(
    lock: &Lock,
    load: impl FnOnce() -> crate::Result<Option<Vec<u8>>>,
) -> crate::Result<Option<Vec<u8>>> {
    match lock.lock_type {
        LockType::Put => match &lock.short_value {
            Some(v) => Ok(Some(v.clone())),
            None => load(),
        },
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_committed_and_the_latest() {
        let key = Key::from_raw(b"k");
        let mut lock = Lock::new(LockType::Put, b"k".to_vec(), 100, 3000);
        let none = ReadLocks::default();
        assert_eq!(none.check(&key, &lock, 99), LockRead::Pass, "a later transaction");
        assert_eq!(none.check(&key, &lock, 200), LockRead::Blocked);
        let resolved = ReadLocks { resolved: vec![100], committed: vec![] };
        assert_eq!(resolved.check(&key, &lock, 200), LockRead::Pass);
        let committed = ReadLocks { resolved: vec![], committed: vec![100] };
        assert_eq!(committed.check(&key, &lock, 200), LockRead::UseLockValue);
        let other = ReadLocks { resolved: vec![99], committed: vec![101] };
        assert_eq!(other.check(&key, &lock, 200), LockRead::Blocked);

        assert_eq!(none.check(&key, &lock, u64::MAX), LockRead::Pass, "primary, two-phase");
        let secondary = Key::from_raw(b"s");
        assert_eq!(none.check(&secondary, &lock, u64::MAX), LockRead::Blocked, "a secondary");
        lock.use_async_commit = true;
        assert_eq!(none.check(&key, &lock, u64::MAX), LockRead::Blocked, "async commit");
    }

    #[test]
    fn a_committed_locks_value() {
        let mut lock = Lock::new(LockType::Put, b"k".to_vec(), 100, 3000);
        lock.short_value = Some(b"v".to_vec());
        assert_eq!(lock_value(&lock, || unreachable!()).unwrap(), Some(b"v".to_vec()));
        lock.short_value = None;
        assert_eq!(
            lock_value(&lock, || Ok(Some(b"long".to_vec()))).unwrap(),
            Some(b"long".to_vec())
        );
        lock.lock_type = LockType::Delete;
        assert_eq!(lock_value(&lock, || unreachable!()).unwrap(), None);
    }
}
