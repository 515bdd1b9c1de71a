//! Rollback of a transaction on one key (BatchRollback, Cleanup, and
//! ResolveLock / CheckTxnStatus deciding a transaction is dead).

use atoll_engine_traits::{Iterable, Peekable};

use super::make_rollback;
use crate::{CommitRecord, Error, Key, Lock, LockType, MvccReader, MvccTxn, Result, TimeStamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackOutcome {
    /// The transaction's lock was removed and a rollback record written.
    Released,
    /// No lock of the transaction: a rollback record now guards the key
    /// against a late prewrite (or one was there already).
    Recorded,
}

/// Rolls back transaction `start_ts` on `key`. A committed transaction
/// cannot be rolled back (`Committed`).
pub fn rollback<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &Key,
    start_ts: TimeStamp,
) -> Result<RollbackOutcome> {
    if let Some(lock) = reader.load_lock(key)? {
        if lock.ts == start_ts {
            rollback_lock(txn, reader, key, &lock)?;
            return Ok(RollbackOutcome::Released);
        }
    }
    match reader.commit_record(key, start_ts)? {
        CommitRecord::Committed(commit_ts, _) => {
            Err(Error::Committed { key: key.clone(), start_ts, commit_ts })
        }
        CommitRecord::RolledBack => Ok(RollbackOutcome::Recorded),
        CommitRecord::None => {
            make_rollback(txn, reader, key, start_ts, true)?;
            Ok(RollbackOutcome::Recorded)
        }
    }
}

/// Removes the transaction's own `lock` on `key` (and its long value) and
/// leaves a rollback record; the primary of a pessimistic transaction
/// gets a protected one, as TiKV does.
pub(crate) fn rollback_lock<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &Key,
    lock: &Lock,
) -> Result<()> {
    if lock.lock_type == LockType::Put && lock.short_value.is_none() {
        txn.delete_value(key, lock.ts);
    }
    let protected = lock.for_update_ts != 0 && Key::from_raw(&lock.primary) == *key;
    make_rollback(txn, reader, key, lock.ts, protected)?;
    txn.unlock_key(key);
    Ok(())
}
