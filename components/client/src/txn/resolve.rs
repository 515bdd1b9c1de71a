//! Settling another transaction's lock met on the way: ask its primary
//! how the transaction ended (CheckTxnStatus) and, for an async-commit
//! transaction whose primary is still locked, every key
//! (CheckSecondaryLocks), as client-go's `lock_resolver.go` does.

use atoll_proto::kvrpcpb::{
    CheckSecondaryLocksRequest, CheckTxnStatusRequest, LockInfo, Op, PessimisticRollbackRequest,
    ResolveLockRequest,
};
use parking_lot::Mutex;

use super::{classify, describe, expired, KeyOutcome, TxnClient};
use crate::raw::{outcome, Call, Error, Result};

/// What the primary says of its transaction.
enum Status {
    /// Still running (or its primary's prewrite not there yet): wait.
    Alive,
    /// Ended: committed at this ts, or rolled back (0).
    Ended(u64),
    /// An async-commit transaction: the primary's lock (it lists the
    /// secondaries) decides nothing alone.
    AsyncLocked(Box<LockInfo>),
}

/// How an async-commit (or 1PC) transaction ended, from its keys.
pub(super) enum Settled {
    Committed(u64),
    RolledBack,
    /// A key holds a lock that waits for its primary's commit: the
    /// transaction commits in two phases after all.
    NotAsync(String),
    /// A store could not answer (yet).
    Unknown(String),
}

impl TxnClient {
    /// Settles another transaction's lock met at `caller_ts`: asks its
    /// primary how the transaction ended (rolling it back if its lock
    /// expired) and, if it ended, commits or rolls back `lock`'s key to
    /// match. Returns false if the owner is still alive (wait, retry).
    ///
    /// A pessimistic lock is only ever released (PessimisticRollback),
    /// never resolved: `lock` is what the caller saw, and the key may hold
    /// the same transaction's prewrite by now, which a ResolveLock rollback
    /// would remove from under a transaction that still commits (its
    /// primary's pessimistic lock expired and was released without a
    /// rollback record, then prewritten anyway: TiKV allows that).
    /// client-go's lock_resolver.go, resolvePessimisticLock, does the same.
    pub async fn resolve_lock(&self, lock: &LockInfo, caller_ts: u64) -> Result<bool> {
        let current_ts = self.current_ts().await?;
        let start_ts = lock.lock_version;
        let one_key = || vec![lock.key.clone()];
        let status = self.check_txn_status(lock, caller_ts, current_ts, false).await?;
        if lock.lock_type == Op::PessimisticLock as i32 {
            if let Status::Ended(_) = status {
                // CheckTxnStatus released the primary's own.
                if lock.key == lock.primary_lock {
                    return Ok(true);
                }
                return self.release_pessimistic(lock).await;
            }
        }
        match status {
            Status::Alive => Ok(false),
            Status::Ended(commit_ts) => self.resolve_keys(start_ts, one_key(), commit_ts).await,
            Status::AsyncLocked(primary) => {
                // Its owner beats the primary's TTL while it runs.
                if !expired(start_ts, primary.lock_ttl, current_ts) {
                    return Ok(false);
                }
                let mut keys = primary.secondaries.clone();
                keys.push(lock.primary_lock.clone());
                match self.settle(start_ts, keys.clone()).await? {
                    Settled::Committed(ts) => self.resolve_keys(start_ts, keys, ts).await,
                    Settled::RolledBack => self.resolve_keys(start_ts, keys, 0).await,
                    Settled::Unknown(_) => Ok(false),
                    // Two phases after all: the primary decides
                    // (`force_sync_commit`), rolling back an expired lock.
                    Settled::NotAsync(_) => {
                        match self.check_txn_status(lock, caller_ts, current_ts, true).await? {
                            Status::Ended(ts) => self.resolve_keys(start_ts, one_key(), ts).await,
                            _ => Ok(false),
                        }
                    }
                }
            }
        }
    }

    /// Releases the pessimistic `lock` of an ended transaction (only a
    /// pessimistic lock no newer than the one seen goes); true if done.
    async fn release_pessimistic(&self, lock: &LockInfo) -> Result<bool> {
        let for_update_ts = match lock.lock_for_update_ts {
            0 => u64::MAX,
            ts => ts,
        };
        let released = self
            .inner
            .on_region(&lock.key, Call::Write("pessimistic_rollback"), |mut c, _, ctx| {
                let req = PessimisticRollbackRequest {
                    context: Some(ctx),
                    start_version: lock.lock_version,
                    for_update_ts,
                    keys: vec![lock.key.clone()],
                };
                async move {
                    let r = c.kv_pessimistic_rollback(req).await?.into_inner();
                    outcome(r.region_error, String::new(), r.errors)
                }
            })
            .await;
        match released {
            Ok((_, errors)) => Ok(errors.is_empty()),
            Err(Error::Undetermined(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// CheckTxnStatus on `lock`'s primary.
    async fn check_txn_status(
        &self,
        lock: &LockInfo,
        caller_ts: u64,
        current_ts: u64,
        force_sync_commit: bool,
    ) -> Result<Status> {
        // Only a lock whose TTL ran out may have its transaction rolled
        // back when the primary holds no lock: before that, the primary's
        // prewrite may simply not have arrived yet (TiKV's Go client asks
        // with `rollback_if_not_exist` only after the TTL expired:
        // client-go txnkv/txnlock/lock_resolver.go, getTxnStatusFromLock).
        let rollback_if_not_exist = expired(lock.lock_version, lock.lock_ttl, current_ts);
        let primary = lock.primary_lock.clone();
        let status = self
            .inner
            .on_region(&primary, Call::Write("check_txn_status"), |mut c, _, ctx| {
                let req = CheckTxnStatusRequest {
                    context: Some(ctx),
                    primary_key: primary.clone(),
                    lock_ts: lock.lock_version,
                    caller_start_ts: caller_ts,
                    current_ts,
                    rollback_if_not_exist,
                    force_sync_commit,
                    resolving_pessimistic_lock: lock.lock_type == Op::PessimisticLock as i32,
                    ..Default::default()
                };
                async move {
                    let r = c.kv_check_txn_status(req).await?.into_inner();
                    let status = (r.error, r.lock_ttl, r.commit_version, r.lock_info);
                    outcome(r.region_error, String::new(), status)
                }
            })
            .await;
        Ok(match status {
            // Checking may write a rollback: an unanswered check is simply
            // asked again later.
            Err(Error::Undetermined(_)) => Status::Alive,
            Err(e) => return Err(e),
            // The primary is not written yet and its owner may still be
            // prewriting: wait until the lock expires.
            Ok((_, (Some(e), ..))) if e.txn_not_found.is_some() => Status::Alive,
            Ok((_, (Some(e), ..))) => match classify(e) {
                KeyOutcome::Locked(_) | KeyOutcome::Undetermined(_) => Status::Alive,
                KeyOutcome::Refused(m) => return Err(Error::Server(m)),
            },
            Ok((_, (None, _, _, Some(l)))) if l.use_async_commit && !force_sync_commit => {
                Status::AsyncLocked(Box::new(l))
            }
            Ok((_, (None, ttl, ..))) if ttl > 0 => Status::Alive,
            Ok((_, (None, _, commit_ts, _))) => Status::Ended(commit_ts),
        })
    }

    /// Asks every key of transaction `start_ts` whether it is locked
    /// (CheckSecondaryLocks). A key with neither lock nor commit record
    /// is rolled back by the check itself, so no prewrite can lock it
    /// later: all locked means committed at the largest `min_commit_ts`,
    /// and every reader and the owner reach the same answer.
    pub(super) async fn settle(&self, start_ts: u64, keys: Vec<Vec<u8>>) -> Result<Settled> {
        let found = Mutex::new((vec![], 0u64, false));
        let items = keys.into_iter().map(|k| (k, ())).collect();
        let errors = self
            .per_region("check_secondary_locks", items, |mut t, ctx, chunk| {
                let keys: Vec<Vec<u8>> = chunk.into_iter().map(|(k, _)| k).collect();
                let asked = keys.len();
                let found = &found;
                let req = CheckSecondaryLocksRequest {
                    context: Some(ctx),
                    keys,
                    start_version: start_ts,
                };
                async move {
                    // Asking again is harmless: an unanswered check is retried.
                    let r = t.kv_check_secondary_locks(req).await?.into_inner();
                    if r.region_error.is_none() && r.error.is_none() {
                        let mut f = found.lock();
                        f.1 = f.1.max(r.commit_ts);
                        // Fewer locks than keys: a key was rolled back.
                        f.2 |= r.commit_ts == 0 && r.locks.len() < asked;
                        f.0.extend(r.locks);
                    }
                    outcome(r.region_error, String::new(), r.error.into_iter().collect())
                }
            })
            .await;
        let errors = match errors {
            Ok(errors) => errors,
            Err(Error::Undetermined(m)) => return Ok(Settled::Unknown(m)),
            Err(e) => return Err(e),
        };
        let (locks, commit_ts, rolled_back) = found.into_inner();
        Ok(if commit_ts != 0 {
            Settled::Committed(commit_ts)
        } else if rolled_back {
            Settled::RolledBack
        } else if let Some(e) = errors.first() {
            Settled::Unknown(describe(e))
        } else if let Some(l) = locks.iter().find(|l| !l.use_async_commit || l.min_commit_ts == 0) {
            Settled::NotAsync(format!("{:?} is not an async-commit lock", l.key))
        } else {
            Settled::Committed(locks.iter().map(|l| l.min_commit_ts).max().unwrap_or(0))
        })
    }

    /// Commits (`commit_ts` > 0) or rolls back (0) `keys` of transaction
    /// `start_ts` (ResolveLock); true if every region answered.
    pub(super) async fn resolve_keys(
        &self,
        start_ts: u64,
        keys: Vec<Vec<u8>>,
        commit_ts: u64,
    ) -> Result<bool> {
        let items = keys.into_iter().map(|k| (k, ())).collect();
        let resolved = self
            .per_region("resolve_lock", items, |mut t, ctx, chunk| {
                let req = ResolveLockRequest {
                    context: Some(ctx),
                    start_version: start_ts,
                    commit_version: commit_ts,
                    keys: chunk.into_iter().map(|(k, _)| k).collect(),
                    ..Default::default()
                };
                async move {
                    let r = t.kv_resolve_lock(req).await?.into_inner();
                    outcome(r.region_error, String::new(), r.error.into_iter().collect())
                }
            })
            .await;
        match resolved {
            Ok(errors) => Ok(errors.is_empty()),
            Err(Error::Undetermined(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
