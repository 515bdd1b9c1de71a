//! Deciding what became of a transaction whose lock a reader met:
//! CheckTxnStatus on its primary, CheckSecondaryLocks on an async-commit
//! transaction's keys, and TxnHeartBeat, which keeps a primary alive.

use atoll_engine_traits::{Iterable, Peekable};

use super::cleanup::rollback_lock;
use super::make_rollback;
use crate::{
    CommitRecord, Error, Key, Lock, LockInfo, LockType, MvccReader, MvccTxn, Result, TimeStamp,
};

/// The answer of CheckTxnStatus (kvrpcpb `Action` in comments).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnStatus {
    /// Still locked; `pushed`: its min_commit_ts was moved past the caller
    /// (MinCommitTSPushed), so the caller may read around it.
    Uncommitted {
        lock: Box<Lock>,
        pushed: bool,
    },
    Committed {
        commit_ts: TimeStamp,
    },
    /// Rolled back before (NoAction).
    RolledBack,
    /// The lock had expired and was rolled back now (TTLExpireRollback).
    TtlExpireRollback,
    /// A pessimistic lock had expired and was removed (TTLExpirePessimisticRollback).
    TtlExpirePessimisticRollback,
    /// No lock nor record: a rollback record was written (LockNotExistRollback).
    LockNotExistRollback,
    /// No lock nor record, resolving a pessimistic lock: nothing done
    /// (LockNotExistDoNothing).
    LockNotExistDoNothing,
}

/// What CheckTxnStatus is asked.
#[derive(Clone, Debug)]
pub struct CheckTxnStatusArgs {
    pub lock_ts: TimeStamp,
    pub caller_start_ts: TimeStamp,
    pub current_ts: TimeStamp,
    pub rollback_if_not_exist: bool,
    pub force_sync_commit: bool,
    pub resolving_pessimistic_lock: bool,
    pub verify_is_primary: bool,
}

/// CheckTxnStatus on the transaction's primary `key`.
pub fn check_txn_status<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &Key,
    a: &CheckTxnStatusArgs,
) -> Result<TxnStatus> {
    if let Some(mut lock) = reader.load_lock(key)? {
        if lock.ts == a.lock_ts {
            if a.verify_is_primary && Key::from_raw(&lock.primary) != *key {
                return Err(Error::PrimaryMismatch(Box::new(lock.info(key))));
            }
            if lock.use_async_commit && !a.force_sync_commit {
                // Its fate is decided by its secondaries, never by a TTL.
                return Ok(TxnStatus::Uncommitted { lock: Box::new(lock), pushed: false });
            }
            if lock.is_expired(a.current_ts) {
                if a.resolving_pessimistic_lock && lock.lock_type == LockType::Pessimistic {
                    txn.unlock_key(key);
                    return Ok(TxnStatus::TtlExpirePessimisticRollback);
                }
                rollback_lock(txn, reader, key, &lock)?;
                return Ok(TxnStatus::TtlExpireRollback);
            }
            if lock.min_commit_ts != 0
                && a.caller_start_ts != u64::MAX
                && a.caller_start_ts >= lock.min_commit_ts
            {
                lock.min_commit_ts = (a.caller_start_ts + 1).max(a.current_ts);
                txn.put_lock(key, &lock);
            }
            // TiKV's check_txn_status_lock_exists: whenever the lock's
            // min_commit_ts is past the caller, whoever pushed it, its
            // transaction's locks cannot block the caller's read; a caller
            // at u64::MAX is an autocommit point get, which may pass a lock
            // that has not committed.
            let pushed = (a.caller_start_ts != 0 && lock.min_commit_ts > a.caller_start_ts)
                || a.caller_start_ts == u64::MAX;
            return Ok(TxnStatus::Uncommitted { lock: Box::new(lock), pushed });
        }
    }
    match reader.commit_record(key, a.lock_ts)? {
        CommitRecord::Committed(commit_ts, _) => Ok(TxnStatus::Committed { commit_ts }),
        CommitRecord::RolledBack => Ok(TxnStatus::RolledBack),
        // TiKV's order (src/storage/txn/actions/check_txn_status.rs,
        // check_txn_status_missing_lock): not found first unless asked to
        // roll back, so a client resolving a live transaction's pessimistic
        // lock never reads "nothing done" as "rolled back".
        CommitRecord::None if !a.rollback_if_not_exist => {
            Err(Error::TxnNotFound { start_ts: a.lock_ts, primary: key.clone() })
        }
        CommitRecord::None if a.resolving_pessimistic_lock => Ok(TxnStatus::LockNotExistDoNothing),
        CommitRecord::None => {
            make_rollback(txn, reader, key, a.lock_ts, true)?;
            Ok(TxnStatus::LockNotExistRollback)
        }
    }
}

/// What the secondaries of an async-commit transaction say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecondaryLocks {
    /// Every key still holds the transaction's (prewrite) lock.
    Locked(Vec<LockInfo>),
    Committed(TimeStamp),
    /// A key was rolled back, or had nothing and is now rolled back.
    RolledBack,
}

/// CheckSecondaryLocks: the first key that is not locked decides.
pub fn check_secondary_locks<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    keys: &[Key],
    start_ts: TimeStamp,
) -> Result<SecondaryLocks> {
    let mut locks = Vec::with_capacity(keys.len());
    for key in keys {
        match reader.load_lock(key)? {
            Some(lock) if lock.ts == start_ts && lock.lock_type != LockType::Pessimistic => {
                locks.push(lock.info(key));
                continue;
            }
            Some(lock) if lock.ts == start_ts => {
                // Only pessimistically locked: the prewrite never came, so
                // the transaction cannot have committed.
                txn.unlock_key(key);
                make_rollback(txn, reader, key, start_ts, true)?;
                return Ok(SecondaryLocks::RolledBack);
            }
            _ => {}
        }
        return Ok(match reader.commit_record(key, start_ts)? {
            CommitRecord::Committed(commit_ts, _) => SecondaryLocks::Committed(commit_ts),
            CommitRecord::RolledBack => SecondaryLocks::RolledBack,
            CommitRecord::None => {
                make_rollback(txn, reader, key, start_ts, true)?;
                SecondaryLocks::RolledBack
            }
        });
    }
    Ok(SecondaryLocks::Locked(locks))
}

/// TxnHeartBeat: raises the primary lock's TTL to `advise_ttl` and
/// returns the TTL it has.
pub fn txn_heart_beat<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &Key,
    start_ts: TimeStamp,
    advise_ttl: u64,
) -> Result<u64> {
    match reader.load_lock(key)? {
        Some(mut lock) if lock.ts == start_ts => {
            if lock.ttl < advise_ttl {
                lock.ttl = advise_ttl;
                txn.put_lock(key, &lock);
            }
            Ok(lock.ttl)
        }
        _ => Err(Error::TxnNotFound { start_ts, primary: key.clone() }),
    }
}
