//! Prewrite: the first phase of a commit, one lock per key.

use atoll_engine_traits::{Iterable, Peekable};

use super::{committed_at, is_rolled_back};
use crate::error::ConflictReason;
use crate::{
    Error, Key, Lock, LockType, MvccReader, MvccTxn, Op, Result, TimeStamp, WriteType,
    SHORT_VALUE_MAX_LEN,
};

/// What a whole prewrite request says about its transaction.
#[derive(Clone, Debug, Default)]
pub struct PrewriteProps {
    pub start_ts: TimeStamp,
    /// The primary key as the user sent it.
    pub primary: Vec<u8>,
    pub lock_ttl: u64,
    pub txn_size: u64,
    /// Non-zero for a pessimistic transaction.
    pub for_update_ts: TimeStamp,
    /// Async commit or 1PC: the lock's min_commit_ts, computed by the
    /// caller from the store's max_ts after the keys were guarded; 0
    /// otherwise.
    pub min_commit_ts: TimeStamp,
    pub use_async_commit: bool,
}

/// One key of a prewrite.
#[derive(Clone, Debug)]
pub struct Mutation {
    pub op: Op,
    pub key: Key,
    pub value: Vec<u8>,
}

/// What a pessimistic transaction expects of a key (kvrpcpb
/// `PrewriteRequest.PessimisticAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PessimisticAction {
    /// The key was not locked pessimistically (and optimistic prewrites).
    SkipPessimisticCheck = 0,
    /// The key must hold the transaction's pessimistic lock.
    DoPessimisticCheck = 1,
    /// Not locked; check the key's constraints as an optimistic prewrite would.
    DoConstraintCheck = 2,
}

/// Prewrites one key: checks locks, conflicts and constraints, then writes
/// the lock (and a long value) — or, for 1PC, records it in the txn for
/// [`super::commit_one_pc`]. `secondaries` is `Some` on the primary of an
/// async-commit transaction. Returns the key's min_commit_ts (0 unless
/// async commit / 1PC).
///
/// A resent prewrite of a transaction already committed on this key
/// fails [`Error::Committed`] with its commit ts: the caller writes
/// nothing and answers that ts (TiKV's `check_committed_record_on_err`,
/// actions/common.rs, on the same errors: write conflict, lock not found,
/// another transaction's lock).
pub fn prewrite<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    props: &PrewriteProps,
    m: Mutation,
    secondaries: Option<&[Vec<u8>]>,
    action: PessimisticAction,
) -> Result<TimeStamp> {
    let start_ts = props.start_ts;
    let pessimistic = props.for_update_ts != 0;
    if pessimistic && m.op == Op::CheckNotExists {
        // As TiKV (actions/prewrite.rs, PrewriteMutation::from_mutation): a
        // pessimistic transaction checks existence when it locks; over its
        // own pessimistic lock this would leave that lock behind.
        return Err(Error::InvalidRequest(
            "cannot handle CheckNotExists in a pessimistic prewrite".into(),
        ));
    }
    let mut ttl = props.lock_ttl;
    let mut min_commit_ts = props.min_commit_ts;
    let mut had_pessimistic_lock = false;
    match reader.load_lock(&m.key)? {
        Some(lock) if lock.ts != start_ts => {
            already_committed(reader, &m.key, start_ts)?;
            return Err(if action == PessimisticAction::DoPessimisticCheck {
                Error::PessimisticLockNotFound { key: m.key, start_ts }
            } else {
                Error::KeyIsLocked(Box::new(lock.info(&m.key)))
            });
        }
        Some(lock) if lock.lock_type == LockType::Pessimistic => {
            if !pessimistic {
                return Err(Error::LockTypeNotMatch { key: m.key, start_ts });
            }
            // Ours: overwrite it; TTL and min_commit_ts may have been pushed.
            ttl = ttl.max(lock.ttl);
            if min_commit_ts != 0 {
                min_commit_ts = min_commit_ts.max(lock.min_commit_ts);
            }
            had_pessimistic_lock = true;
        }
        Some(lock) => {
            // Already prewritten (a resent request): nothing to do.
            return Ok(if lock.use_async_commit { lock.min_commit_ts } else { 0 });
        }
        None if action == PessimisticAction::DoPessimisticCheck => {
            // The lock is gone (resolved by someone, or never taken): this
            // may only go on if nothing was written since the transaction
            // started, so nothing it read could have changed.
            if let Some((commit_ts, _)) = reader.seek_write(&m.key, u64::MAX)? {
                if commit_ts >= start_ts {
                    already_committed(reader, &m.key, start_ts)?;
                    return Err(Error::PessimisticLockNotFound { key: m.key, start_ts });
                }
            }
        }
        None => check_newer_version(reader, props, &m.key, action)?,
    }
    if matches!(m.op, Op::Insert | Op::CheckNotExists) && key_exists(reader, &m.key)? {
        return Err(Error::AlreadyExist { key: m.key });
    }
    let lock_type = match m.op {
        Op::Put | Op::Insert => LockType::Put,
        Op::Del => LockType::Delete,
        Op::Lock => LockType::Lock,
        // Nothing to lock; under async commit or 1PC its answer is the
        // transaction's min_commit_ts (above start_ts), never 0.
        Op::CheckNotExists => return Ok(min_commit_ts),
        Op::Rollback | Op::PessimisticLock => {
            return Err(Error::InvalidRequest(format!("{:?} is not a prewrite mutation", m.op)))
        }
    };
    let mut lock = Lock::new(lock_type, props.primary.clone(), start_ts, ttl);
    lock.for_update_ts = props.for_update_ts;
    lock.txn_size = props.txn_size;
    lock.min_commit_ts = min_commit_ts;
    lock.use_async_commit = props.use_async_commit;
    if let Some(s) = secondaries {
        lock.secondaries = s.to_vec();
    }
    if lock_type == LockType::Put {
        if m.value.len() <= SHORT_VALUE_MAX_LEN {
            lock.short_value = Some(m.value);
        } else {
            txn.put_value(&m.key, start_ts, m.value);
        }
    }
    txn.put_prewrite_lock(m.key, lock, had_pessimistic_lock);
    Ok(min_commit_ts)
}

/// The write-conflict check of a key that holds no lock.
///
/// Optimistic transactions, and a pessimistic one's `DoConstraintCheck`
/// key (its check deferred from locking), conflict with any commit after
/// start_ts, as TiKV's `check_for_newer_version` (actions/prewrite.rs);
/// another key of a pessimistic transaction only with one after its
/// for_update_ts.
fn check_newer_version<S: Peekable + Iterable>(
    reader: &MvccReader<'_, S>,
    props: &PrewriteProps,
    key: &Key,
    action: PessimisticAction,
) -> Result<()> {
    let start_ts = props.start_ts;
    let Some((commit_ts, write)) = reader.seek_write(key, u64::MAX)? else { return Ok(()) };
    let (limit, reason) = if action == PessimisticAction::DoConstraintCheck {
        (start_ts, ConflictReason::LazyUniquenessCheck)
    } else if props.for_update_ts != 0 {
        (props.for_update_ts, ConflictReason::Optimistic)
    } else {
        (start_ts, ConflictReason::Optimistic)
    };
    if commit_ts > limit {
        already_committed(reader, key, start_ts)?;
        return Err(Error::WriteConflict {
            key: key.clone(),
            primary: props.primary.clone(),
            start_ts,
            conflict_start_ts: write.start_ts,
            conflict_commit_ts: commit_ts,
            reason,
        });
    }
    if commit_ts >= start_ts && is_rolled_back(reader, key, start_ts)? {
        return Err(Error::WriteConflict {
            key: key.clone(),
            primary: props.primary.clone(),
            start_ts,
            conflict_start_ts: start_ts,
            conflict_commit_ts: start_ts,
            reason: ConflictReason::SelfRolledBack,
        });
    }
    Ok(())
}

/// `Err(Committed)` if the transaction `start_ts` is committed on `key`.
fn already_committed<S: Peekable + Iterable>(
    reader: &MvccReader<'_, S>,
    key: &Key,
    start_ts: TimeStamp,
) -> Result<()> {
    match committed_at(reader, key, start_ts)? {
        Some(commit_ts) => Err(Error::Committed { key: key.clone(), start_ts, commit_ts }),
        None => Ok(()),
    }
}

/// Does the key have a value now? (Lock and Rollback records say nothing.)
pub(crate) fn key_exists<S: Peekable + Iterable>(
    reader: &MvccReader<'_, S>,
    key: &Key,
) -> Result<bool> {
    Ok(
        matches!(reader.seek_data_write(key, u64::MAX)?, Some((_, w)) if w.write_type == WriteType::Put),
    )
}
