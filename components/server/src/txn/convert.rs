//! Transactional results and errors as `kvrpcpb` messages.

use atoll_proto::errorpb;
use atoll_proto::kvrpcpb::{self, write_conflict, KeyError, KvPair};
use atoll_txn::{ConflictReason, Key, LockInfo};

use super::{Error, KeyResult, SecondaryLocks, TxnStatus};
use crate::metrics::GRPC_ERRORS;

/// The user's key, or the stored bytes if they do not decode (reported,
/// never hidden).
fn raw(key: &Key) -> Vec<u8> {
    key.to_raw().unwrap_or_else(|_| key.as_encoded().to_vec())
}

pub fn lock_info(l: &LockInfo) -> kvrpcpb::LockInfo {
    kvrpcpb::LockInfo {
        primary_lock: l.lock.primary.clone(),
        lock_version: l.lock.ts,
        key: raw(&l.key),
        lock_ttl: l.lock.ttl,
        txn_size: l.lock.txn_size,
        lock_type: l.lock.lock_type.op() as i32,
        lock_for_update_ts: l.lock.for_update_ts,
        use_async_commit: l.lock.use_async_commit,
        min_commit_ts: l.lock.min_commit_ts,
        secondaries: l.lock.secondaries.clone(),
        ..Default::default()
    }
}

/// A transaction rule's error as the client reads it (TiKV's mapping).
pub fn key_error(e: &atoll_txn::Error) -> KeyError {
    use atoll_txn::Error as E;
    let mut k = KeyError::default();
    match e {
        E::KeyIsLocked(info) => k.locked = Some(lock_info(info)),
        E::WriteConflict {
            key,
            primary,
            start_ts,
            conflict_start_ts,
            conflict_commit_ts,
            reason,
        } => {
            k.conflict = Some(kvrpcpb::WriteConflict {
                start_ts: *start_ts,
                conflict_ts: *conflict_start_ts,
                key: raw(key),
                primary: primary.clone(),
                conflict_commit_ts: *conflict_commit_ts,
                reason: match reason {
                    ConflictReason::Optimistic => write_conflict::Reason::Optimistic,
                    ConflictReason::PessimisticRetry => write_conflict::Reason::PessimisticRetry,
                    ConflictReason::SelfRolledBack => write_conflict::Reason::SelfRolledBack,
                    ConflictReason::LazyUniquenessCheck => {
                        write_conflict::Reason::LazyUniquenessCheck
                    }
                } as i32,
            });
            k.retryable = e.to_string();
        }
        E::AlreadyExist { key } => k.already_exist = Some(kvrpcpb::AlreadyExist { key: raw(key) }),
        E::TxnLockNotFound { .. } => k.retryable = e.to_string(),
        E::TxnNotFound { start_ts, primary } => {
            k.txn_not_found =
                Some(kvrpcpb::TxnNotFound { start_ts: *start_ts, primary_key: raw(primary) })
        }
        E::CommitTsExpired { key, start_ts, attempted, min_commit_ts } => {
            k.commit_ts_expired = Some(kvrpcpb::CommitTsExpired {
                start_ts: *start_ts,
                attempted_commit_ts: *attempted,
                key: raw(key),
                min_commit_ts: *min_commit_ts,
            })
        }
        E::Deadlock { key, lock_ts, key_hash, wait_chain, .. } => {
            k.deadlock = Some(kvrpcpb::Deadlock {
                lock_ts: *lock_ts,
                lock_key: raw(key),
                deadlock_key_hash: *key_hash,
                wait_chain: wait_chain.iter().map(crate::lock_manager::wait_for_entry).collect(),
            })
        }
        E::PrimaryMismatch(info) => {
            k.primary_mismatch = Some(kvrpcpb::PrimaryMismatch { lock_info: Some(lock_info(info)) })
        }
        E::PessimisticLockNotFound { .. }
        | E::PessimisticLockRolledBack { .. }
        | E::LockTypeNotMatch { .. }
        | E::Committed { .. }
        | E::InvalidTxnTso(_)
        | E::InvalidMaxTsUpdate { .. }
        | E::InvalidRequest(_)
        | E::Corruption(_)
        | E::Engine(_) => k.abort = e.to_string(),
    }
    k
}

/// A command's per-key errors (conflicts, locks met), counted as key
/// errors of the request when there are any.
pub fn key_errors(kind: &str, errors: &[atoll_txn::Error]) -> Vec<KeyError> {
    if !errors.is_empty() {
        GRPC_ERRORS.with_label_values(&[kind, "key"]).inc();
    }
    errors.iter().map(key_error).collect()
}

/// A command's error: a region error (the client retries elsewhere) or a
/// key error (for the user; `abort` carries store errors such as
/// `undetermined: ...`).
pub fn split(kind: &str, e: Error) -> (Option<errorpb::Error>, Option<KeyError>) {
    match e {
        Error::Store(e) => match e.to_region_error() {
            Some(re) => {
                GRPC_ERRORS.with_label_values(&[kind, "region"]).inc();
                (Some(re), None)
            }
            None => {
                GRPC_ERRORS.with_label_values(&[kind, "other"]).inc();
                (None, Some(KeyError { abort: e.to_string(), ..Default::default() }))
            }
        },
        Error::Mvcc(e) => {
            GRPC_ERRORS.with_label_values(&[kind, "key"]).inc();
            (None, Some(key_error(&e)))
        }
    }
}

/// For responses whose error is a plain string.
pub fn split_string(kind: &str, e: Error) -> (Option<errorpb::Error>, String) {
    match split(kind, e) {
        (Some(re), _) => (Some(re), String::new()),
        (None, k) => (None, k.map(|k| format!("{k:?}")).unwrap_or_default()),
    }
}

pub fn pairs(results: Vec<KeyResult>) -> Vec<KvPair> {
    results
        .into_iter()
        .map(|(key, r)| match r {
            Ok(value) => KvPair { error: None, key, value },
            Err(e) => KvPair { error: Some(key_error(&e)), key, value: vec![] },
        })
        .collect()
}

/// CheckTxnStatus's (lock_ttl, commit_version, action, lock_info): one of
/// the three shapes the client accepts — locked (0, ttl, Some), committed
/// (ts, 0, None), rolled back (0, 0, None).
pub fn txn_status(
    primary: &[u8],
    s: TxnStatus,
) -> (u64, u64, kvrpcpb::Action, Option<kvrpcpb::LockInfo>) {
    use kvrpcpb::Action as A;
    match s {
        TxnStatus::Uncommitted { lock, pushed } => {
            let info = LockInfo { key: Key::from_raw(primary), lock: *lock };
            let action = if pushed { A::MinCommitTsPushed } else { A::NoAction };
            (info.lock.ttl, 0, action, Some(lock_info(&info)))
        }
        TxnStatus::Committed { commit_ts } => (0, commit_ts, A::NoAction, None),
        TxnStatus::RolledBack => (0, 0, A::NoAction, None),
        TxnStatus::TtlExpireRollback => (0, 0, A::TtlExpireRollback, None),
        TxnStatus::TtlExpirePessimisticRollback => (0, 0, A::TtlExpirePessimisticRollback, None),
        TxnStatus::LockNotExistRollback => (0, 0, A::LockNotExistRollback, None),
        TxnStatus::LockNotExistDoNothing => (0, 0, A::LockNotExistDoNothing, None),
    }
}

/// CheckSecondaryLocks's (locks, commit_ts).
pub fn secondary_locks(s: SecondaryLocks) -> (Vec<kvrpcpb::LockInfo>, u64) {
    match s {
        SecondaryLocks::Locked(locks) => (locks.iter().map(lock_info).collect(), 0),
        SecondaryLocks::Committed(ts) => (vec![], ts),
        SecondaryLocks::RolledBack => (vec![], 0),
    }
}
