//! Commit: two-phase commit, async commit and 1PC, and what a prewrite
//! that did not finish leaves.

use std::sync::atomic::{AtomicBool, Ordering};

use atoll_proto::kvrpcpb::{self, prewrite_request::PessimisticAction, Op, PrewriteRequest};
use parking_lot::Mutex;

use super::resolve::Settled;
use super::transaction::{Mutation, State, Transaction};
use super::write::send_commit;
use super::{classify, KeyOutcome, ASYNC_COMMIT_KEYS, COMMIT_ATTEMPTS};
use crate::raw::{outcome, Call, Error, Result};

/// What the prewrites of every key left.
#[derive(Debug, PartialEq, Eq)]
enum Prewritten {
    /// Locks that wait for the primary's commit (two-phase commit); the
    /// commit ts must not be below `min_commit_ts` (0: no floor).
    Locked { min_commit_ts: u64 },
    /// Async commit: committed when the last prewrite succeeded, at the
    /// largest `min_commit_ts` the stores answered.
    AsyncCommitted(u64),
    /// 1PC: one request wrote every commit record, at this ts.
    OnePc(u64),
}

/// A prewrite that did not finish.
struct PrewriteFailed {
    error: Error,
    /// Could what was sent commit with no commit request of ours
    /// (async-commit locks; a 1PC request whose answer was lost)? Then
    /// the outcome is settled the way a reader settles it, never assumed.
    may_commit: bool,
}

/// The answers of one prewrite round's requests that had no key error.
#[derive(Default)]
struct Answers {
    min_commit_ts: Vec<u64>,
    one_pc_commit_ts: u64,
}

impl Answers {
    fn outcome(&self, use_async: bool) -> Prewritten {
        if self.one_pc_commit_ts != 0 {
            return Prewritten::OnePc(self.one_pc_commit_ts);
        }
        let max = self.min_commit_ts.iter().copied().max().unwrap_or(0);
        // A store that answers 0 wrote a lock that waits for the primary's
        // commit (TiKV falls back so, e.g. past max_commit_ts): two phases.
        if use_async && self.min_commit_ts.iter().all(|ts| *ts != 0) {
            Prewritten::AsyncCommitted(max)
        } else {
            Prewritten::Locked { min_commit_ts: max }
        }
    }
}

impl Transaction {
    /// Commits every buffered write as the transaction's options say.
    /// `Ok(Some(commit_ts))` once committed (the cleanup of the other
    /// keys' locks follows before this returns; readers finish any left);
    /// `Ok(None)` if there was nothing to write.
    pub async fn commit(&mut self) -> Result<Option<u64>> {
        self.active()?;
        if self.buffer.is_empty() {
            self.state = State::Committed;
            self.heartbeat = None;
            return Ok(None);
        }
        let primary = self
            .primary
            .clone()
            .unwrap_or_else(|| self.buffer.keys().next().expect("not empty").clone());
        self.sent = true;
        self.keep_alive(&primary);
        let res = match self.prewrite(&primary).await {
            Ok(Prewritten::OnePc(ts)) => Ok(ts),
            Ok(Prewritten::AsyncCommitted(ts)) => {
                // Committed already: only the locks are left to clear.
                let keys = self.buffer.keys().cloned().collect();
                self.commit_keys(keys, ts).await;
                Ok(ts)
            }
            Ok(Prewritten::Locked { min_commit_ts }) => {
                self.two_phase(&primary, min_commit_ts).await
            }
            Err(failed) => self.after_failed_prewrite(failed).await,
        };
        self.heartbeat = None;
        self.state = match &res {
            Ok(_) => State::Committed,
            Err(Error::Undetermined(_)) => State::Undetermined,
            Err(_) => State::RolledBack,
        };
        res.map(Some)
    }

    /// Does this commit use async commit (asked for, and small enough)?
    fn use_async(&self) -> bool {
        self.options.async_commit && self.buffer.len() <= ASYNC_COMMIT_KEYS
    }

    /// The second phase: the primary's commit is the commit point.
    async fn two_phase(&mut self, primary: &[u8], min_commit_ts: u64) -> Result<u64> {
        // A failure to get a ts leaves locks that expire: nothing committed.
        let commit_ts = self.client.current_ts().await?.max(min_commit_ts);
        self.commit_primary(primary, commit_ts).await?;
        let secondaries = self.buffer.keys().filter(|k| **k != primary).cloned().collect();
        self.commit_keys(secondaries, commit_ts).await;
        Ok(commit_ts)
    }

    /// Commits `keys` of a committed transaction. A key left locked (its
    /// region unreachable) is finished by the first reader that meets it;
    /// a key whose lock is gone without our commit record breaks the
    /// transaction's atomicity (a bug somewhere), so it is logged loudly.
    async fn commit_keys(&self, keys: Vec<Vec<u8>>, commit_ts: u64) {
        let start_ts = self.start_ts;
        let items = keys.into_iter().map(|k| (k, ())).collect();
        let answered = self
            .client
            .per_region("commit", items, |t, ctx, chunk| {
                send_commit(
                    t,
                    ctx,
                    start_ts,
                    chunk.into_iter().map(|(k, _)| k).collect(),
                    commit_ts,
                )
            })
            .await;
        for e in answered.unwrap_or_default() {
            if let KeyOutcome::Refused(m) = classify(e) {
                tracing::error!(
                    start_ts,
                    commit_ts,
                    "a committed transaction's key refused its commit: {m}"
                );
            }
        }
    }

    /// A prewrite failed. Two-phase: the primary's commit was never sent,
    /// so nothing can commit; roll back what we can (readers roll back the
    /// rest). Otherwise ask every key how the transaction ended
    /// (CheckSecondaryLocks, which rolls back a key that holds no lock, so
    /// the answer is final) and finish it accordingly.
    async fn after_failed_prewrite(&mut self, failed: PrewriteFailed) -> Result<u64> {
        let reason = failed.error;
        if !failed.may_commit {
            let _ = self.rollback_keys().await;
            return Err(aborted(reason));
        }
        let keys: Vec<Vec<u8>> = self.buffer.keys().cloned().collect();
        match self.client.settle(self.start_ts, keys.clone()).await {
            Ok(Settled::Committed(ts)) => {
                let _ = self.client.resolve_keys(self.start_ts, keys, ts).await;
                Ok(ts)
            }
            Ok(Settled::RolledBack) => {
                let _ = self.client.resolve_keys(self.start_ts, keys, 0).await;
                let _ = self.rollback_keys().await;
                Err(aborted(reason))
            }
            Ok(Settled::NotAsync(why) | Settled::Unknown(why)) => Err(Error::Undetermined(
                format!("prewrite: {reason}; asking its keys how it ended: {why}"),
            )),
            Err(e) => Err(Error::Undetermined(format!(
                "prewrite: {reason}; asking its keys how it ended: {e}"
            ))),
        }
    }

    /// Prewrites every buffered key (async commit and 1PC as the options
    /// say and the transaction allows).
    async fn prewrite(&self, primary: &[u8]) -> std::result::Result<Prewritten, PrewriteFailed> {
        let use_async = self.use_async();
        // Once a request that writes locks left, never 1PC: a commit in
        // the prewrite would leave those locks behind.
        let locks_sent = AtomicBool::new(false);
        let mut in_doubt = None;
        let c = &self.client;
        let fail = |error, one_pc: bool| PrewriteFailed { error, may_commit: use_async || one_pc };
        for attempt in 0..c.inner.cfg.max_attempts {
            let answers = Mutex::new(Answers::default());
            let one_pc_sent = AtomicBool::new(false);
            let items = self.buffer.iter().map(|(k, m)| (k.clone(), m.clone())).collect();
            let sent = c
                .per_region("prewrite", items, |mut t, ctx, chunk| {
                    let one_pc = self.options.one_pc
                        && chunk.len() == self.buffer.len()
                        && !locks_sent.load(Ordering::SeqCst);
                    if one_pc {
                        one_pc_sent.store(true, Ordering::SeqCst);
                    } else {
                        locks_sent.store(true, Ordering::SeqCst);
                    }
                    let req = self.prewrite_request(ctx, primary, chunk, use_async, one_pc);
                    let answers = &answers;
                    async move {
                        let r = t
                            .kv_prewrite(req)
                            .await
                            .map_err(|e| crate::raw::write_rpc_error("prewrite", e))?
                            .into_inner();
                        if r.region_error.is_none() && r.errors.is_empty() {
                            let mut a = answers.lock();
                            a.min_commit_ts.push(r.min_commit_ts);
                            a.one_pc_commit_ts = a.one_pc_commit_ts.max(r.one_pc_commit_ts);
                        }
                        outcome(r.region_error, String::new(), r.errors)
                    }
                })
                .await;
            let one_pc = one_pc_sent.load(Ordering::SeqCst);
            let errors = match sent {
                Ok(e) => e,
                Err(Error::Undetermined(m)) => {
                    // Resending is safe (a store answers a resent prewrite
                    // of a committed transaction with its commit ts), but
                    // a 1PC write in doubt is settled, not resent in
                    // another shape; two-phase just rolls back.
                    if one_pc || !use_async {
                        return Err(fail(Error::Undetermined(m), one_pc));
                    }
                    in_doubt = Some(m);
                    c.inner.backoff(attempt).await;
                    continue;
                }
                Err(e) => return Err(fail(e, false)),
            };
            if errors.is_empty() {
                return Ok(answers.into_inner().outcome(use_async));
            }
            // Only locks of others are worth waiting for; prewriting the
            // whole set again is idempotent.
            for e in errors {
                match classify(e) {
                    KeyOutcome::Locked(l) => match c.resolve_lock(&l, self.start_ts).await {
                        Ok(true) => {}
                        Ok(false) => c.inner.backoff(attempt).await,
                        Err(e) => return Err(fail(e, false)),
                    },
                    KeyOutcome::Undetermined(m) if use_async && !one_pc => in_doubt = Some(m),
                    KeyOutcome::Undetermined(m) => {
                        return Err(fail(Error::Undetermined(m), one_pc))
                    }
                    KeyOutcome::Refused(m) => return Err(fail(Error::Aborted(m), false)),
                }
            }
        }
        let last = in_doubt.unwrap_or_else(|| "locks kept blocking the prewrite".into());
        Err(fail(c.exhausted(&last), false))
    }

    /// The prewrite of `chunk` (keys of one region).
    fn prewrite_request(
        &self,
        ctx: kvrpcpb::Context,
        primary: &[u8],
        chunk: Vec<(Vec<u8>, Mutation)>,
        use_async: bool,
        one_pc: bool,
    ) -> PrewriteRequest {
        let pessimistic = self.options.pessimistic;
        // The primary's lock lists every other key: a reader that meets
        // any lock finds them all from there.
        let secondaries = if use_async && chunk.iter().any(|(k, _)| k == primary) {
            self.buffer.keys().filter(|k| *k != primary).cloned().collect()
        } else {
            vec![]
        };
        let (mutations, actions) = chunk
            .into_iter()
            .map(|(key, m)| {
                let action = if self.locked.contains(&key) {
                    PessimisticAction::DoPessimisticCheck
                } else {
                    PessimisticAction::SkipPessimisticCheck
                };
                let (op, value) = match m {
                    Mutation::Put(v) => (Op::Put, v),
                    Mutation::Delete => (Op::Del, vec![]),
                    Mutation::Lock => (Op::Lock, vec![]),
                };
                (
                    kvrpcpb::Mutation { op: op as i32, key, value, ..Default::default() },
                    action as i32,
                )
            })
            .unzip();
        PrewriteRequest {
            context: Some(ctx),
            mutations,
            primary_lock: primary.to_vec(),
            start_version: self.start_ts,
            lock_ttl: self.lock_ttl(),
            pessimistic_actions: if pessimistic { actions } else { vec![] },
            txn_size: self.buffer.len() as u64,
            for_update_ts: if pessimistic { self.for_update_ts } else { 0 },
            use_async_commit: use_async,
            secondaries,
            try_one_pc: one_pc,
            ..Default::default()
        }
    }

    /// Commits the primary key: the transaction's commit point. Sent again
    /// while its answer is lost (committing twice is harmless); a refusal
    /// means the lock is gone (rolled back by a reader): aborted.
    async fn commit_primary(&self, primary: &[u8], commit_ts: u64) -> Result<()> {
        let c = &self.client;
        let mut last = String::new();
        // Did any send possibly reach the store? If none did, the commit
        // never happened and never will (only this client commits the
        // primary; readers roll it back once its lock expires).
        let mut maybe_applied = false;
        for attempt in 0..COMMIT_ATTEMPTS {
            let res = c
                .inner
                .on_region(primary, Call::Write("commit"), |t, _, ctx| {
                    send_commit(t, ctx, self.start_ts, vec![primary.to_vec()], commit_ts)
                })
                .await
                .map(|(_, errors)| errors.into_iter().next());
            match res {
                Ok(None) => return Ok(()),
                Ok(Some(e)) => match classify(e) {
                    KeyOutcome::Undetermined(m) => {
                        maybe_applied = true;
                        last = m;
                    }
                    KeyOutcome::Locked(l) => last = format!("locked by {}", l.lock_version),
                    // The lock is gone and no commit record of ours is
                    // there: rolled back by a reader.
                    KeyOutcome::Refused(m) => return Err(Error::Aborted(m)),
                },
                Err(Error::Undetermined(m)) => {
                    maybe_applied = true;
                    last = m;
                }
                Err(e) => last = e.to_string(),
            }
            c.inner.backoff(attempt).await;
        }
        if maybe_applied {
            Err(Error::Undetermined(format!("commit of the primary key: {last}")))
        } else {
            Err(Error::Aborted(format!("the primary key's commit never reached a store: {last}")))
        }
    }
}

/// The error of a transaction whose failed prewrite certainly committed
/// nothing.
fn aborted(prewrite: Error) -> Error {
    match prewrite {
        Error::Aborted(m) => Error::Aborted(m),
        other => Error::Aborted(format!("prewrite failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::{Answers, Prewritten};

    fn answers(min_commit_ts: &[u64], one_pc_commit_ts: u64) -> Answers {
        Answers { min_commit_ts: min_commit_ts.to_vec(), one_pc_commit_ts }
    }

    #[test]
    fn async_commit_needs_every_store_to_answer_a_min_commit_ts() {
        assert_eq!(answers(&[7, 9, 8], 0).outcome(true), Prewritten::AsyncCommitted(9));
        // One store fell back to a lock that waits for the primary's commit.
        assert_eq!(answers(&[7, 0], 0).outcome(true), Prewritten::Locked { min_commit_ts: 7 });
        assert_eq!(answers(&[0, 0], 0).outcome(false), Prewritten::Locked { min_commit_ts: 0 });
    }

    #[test]
    fn a_one_pc_answer_is_the_commit() {
        assert_eq!(answers(&[0], 12).outcome(false), Prewritten::OnePc(12));
        assert_eq!(answers(&[0], 12).outcome(true), Prewritten::OnePc(12));
    }
}
