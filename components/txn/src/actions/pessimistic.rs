//! Pessimistic locks: taken before a pessimistic transaction's prewrite,
//! released by it, by PessimisticRollback, or by lock resolution.

use atoll_engine_traits::{Iterable, Peekable};

use super::is_rolled_back;
use super::prewrite::key_exists;
use crate::error::ConflictReason;
use crate::{Error, Key, Lock, LockType, MvccReader, MvccTxn, Result, TimeStamp};

/// What a PessimisticLock request says about its transaction.
#[derive(Clone, Debug, Default)]
pub struct PessimisticLockProps {
    pub start_ts: TimeStamp,
    pub primary: Vec<u8>,
    pub lock_ttl: u64,
    pub for_update_ts: TimeStamp,
    pub min_commit_ts: TimeStamp,
    /// Read the key's latest value for the caller.
    pub need_value: bool,
}

/// Locks `key` for the transaction. `should_not_exist`: the key is being
/// inserted (`Assertion::NotExist`). Returns the latest value when
/// `need_value` (else `None`).
pub fn pessimistic_lock<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    props: &PessimisticLockProps,
    key: &Key,
    should_not_exist: bool,
) -> Result<Option<Vec<u8>>> {
    let start_ts = props.start_ts;
    let for_update_ts = props.for_update_ts;
    let value = |reader: &MvccReader<'_, S>| -> Result<Option<Vec<u8>>> {
        if props.need_value {
            reader.get_committed(key, u64::MAX)
        } else {
            Ok(None)
        }
    };
    if let Some(mut lock) = reader.load_lock(key)? {
        if lock.ts != start_ts {
            return Err(Error::KeyIsLocked(Box::new(lock.info(key))));
        }
        if lock.lock_type != LockType::Pessimistic {
            return Err(Error::LockTypeNotMatch { key: key.clone(), start_ts });
        }
        // Locked before by this transaction (a resent or repeated request).
        if lock.for_update_ts < for_update_ts || lock.ttl < props.lock_ttl {
            lock.for_update_ts = lock.for_update_ts.max(for_update_ts);
            lock.ttl = lock.ttl.max(props.lock_ttl);
            txn.put_lock(key, &lock);
        }
        return value(reader);
    }
    if let Some((commit_ts, write)) = reader.seek_write(key, u64::MAX)? {
        if commit_ts > for_update_ts {
            return Err(Error::WriteConflict {
                key: key.clone(),
                primary: props.primary.clone(),
                start_ts,
                conflict_start_ts: write.start_ts,
                conflict_commit_ts: commit_ts,
                reason: ConflictReason::PessimisticRetry,
            });
        }
        if commit_ts >= start_ts && is_rolled_back(reader, key, start_ts)? {
            return Err(Error::PessimisticLockRolledBack { key: key.clone(), start_ts });
        }
    }
    if should_not_exist && key_exists(reader, key)? {
        return Err(Error::AlreadyExist { key: key.clone() });
    }
    let mut lock =
        Lock::new(LockType::Pessimistic, props.primary.clone(), start_ts, props.lock_ttl);
    lock.for_update_ts = for_update_ts;
    lock.min_commit_ts = props.min_commit_ts;
    txn.put_lock(key, &lock);
    value(reader)
}

/// PessimisticRollback: removes the transaction's pessimistic lock on
/// `key` if it was taken at or before `for_update_ts`; writes no record.
pub fn pessimistic_rollback<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &Key,
    start_ts: TimeStamp,
    for_update_ts: TimeStamp,
) -> Result<bool> {
    match reader.load_lock(key)? {
        Some(lock)
            if lock.lock_type == LockType::Pessimistic
                && lock.ts == start_ts
                && lock.for_update_ts <= for_update_ts =>
        {
            txn.unlock_key(key);
            Ok(true)
        }
        _ => Ok(false),
    }
}
