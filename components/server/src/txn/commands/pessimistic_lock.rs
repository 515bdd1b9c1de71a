//! PessimisticLock (waiting for other transactions' locks: see
//! `crate::lock_manager`) and PessimisticRollback.

use std::time::Instant;

use atoll_engine_traits::KvEngine;
use atoll_proto::kvrpcpb::Context;
use atoll_txn::{actions, Key, LockInfo, MvccReader, MvccTxn, TimeStamp, WaitFor};

use super::prewrite::check_start_ts;
use crate::lock_manager::{key_hash, Wait};
use crate::metrics::{LOCK_WAITS, LOCK_WAIT_DURATION};
use crate::txn::scheduler::Cmd;
use crate::txn::{bad, PessimisticLockArgs, Result, TxnStorage};

/// A PessimisticLock's answer: one value per key (when asked for), or the
/// per-key errors (nothing written).
type LockOutcome = std::result::Result<Vec<Option<Vec<u8>>>, Vec<atoll_txn::Error>>;

/// One attempt at the locks.
enum Attempt<S> {
    Done(LockOutcome),
    /// Only other transactions' locks were in the way, the first `info`;
    /// `cmd` still holds the latches.
    Locked {
        cmd: Cmd<S>,
        info: Box<LockInfo>,
        errors: Vec<atoll_txn::Error>,
    },
}

impl<E: KvEngine> TxnStorage<E> {
    /// PessimisticLock: all keys or none. A request that meets only other
    /// transactions' locks waits for the first to go, up to its
    /// `wait_timeout`, then tries again; one whose wait would close a
    /// cycle of waits is answered `Deadlock` at once (`crate::lock_manager`).
    pub async fn pessimistic_lock(
        &self,
        ctx: &Context,
        a: PessimisticLockArgs,
    ) -> Result<LockOutcome> {
        let keys =
            self.keys("kv_pessimistic_lock", ctx, a.keys.iter().map(|(k, _)| k.as_slice()))?;
        if keys.is_empty() {
            return Err(bad("pessimistic lock with no keys"));
        }
        check_start_ts(a.props.start_ts)?;
        if a.props.for_update_ts == u64::MAX {
            let e = format!("for_update_ts {}", a.props.for_update_ts);
            return Err(atoll_txn::Error::InvalidTxnTso(e).into());
        }
        self.update_max_ts(a.props.for_update_ts).await?;
        let deadline = self.locks.wait_for(a.wait_timeout).map(|d| Instant::now() + d);
        loop {
            let (cmd, info, errors) = match self.lock_once(ctx, &a, &keys).await? {
                Attempt::Done(out) => return Ok(out),
                Attempt::Locked { cmd, info, errors } => (cmd, info, errors),
            };
            let Some(deadline) = deadline.filter(|d| Instant::now() < *d) else {
                if deadline.is_none() {
                    LOCK_WAITS.with_label_values(&["not_waiting"]).inc();
                }
                return Ok(Err(errors));
            };
            // Under the latches, so the release cannot be missed.
            let Some(mut wait) = self.locks.waiters.register(info.key.as_encoded()) else {
                LOCK_WAITS.with_label_values(&["full"]).inc();
                return Ok(Err(errors));
            };
            drop(cmd);
            if let Some(deadlock) =
                self.wait_for_lock(&mut wait, &info, a.props.start_ts, deadline).await
            {
                return Ok(Err(vec![deadlock]));
            }
        }
    }

    /// Locks every key, or finds what is in the way.
    async fn lock_once(
        &self,
        ctx: &Context,
        a: &PessimisticLockArgs,
        keys: &[Key],
    ) -> Result<Attempt<E::Snapshot>> {
        let cmd = self.begin(ctx, keys).await?;
        let mut txn = MvccTxn::new();
        let mut values = Vec::with_capacity(keys.len());
        let mut errors = vec![];
        {
            let reader = MvccReader::new(&*cmd.read.snapshot);
            for (key, (_, should_not_exist)) in keys.iter().zip(&a.keys) {
                match actions::pessimistic_lock(&mut txn, &reader, &a.props, key, *should_not_exist)
                {
                    Ok(v) => values.push(v),
                    Err(e @ (atoll_txn::Error::Engine(_) | atoll_txn::Error::Corruption(_))) => {
                        return Err(e.into())
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        if errors.is_empty() {
            self.finish(ctx, cmd, txn, None).await?;
            return Ok(Attempt::Done(Ok(values)));
        }
        let locked: Option<Vec<&LockInfo>> = errors
            .iter()
            .map(|e| match e {
                atoll_txn::Error::KeyIsLocked(info) if info.lock.ts != a.props.start_ts => {
                    Some(&**info)
                }
                _ => None,
            })
            .collect();
        match locked.and_then(|l| l.first().map(|i| (*i).clone())) {
            Some(info) => Ok(Attempt::Locked { cmd, info: Box::new(info), errors }),
            None => Ok(Attempt::Done(Err(errors))),
        }
    }

    /// Waits for `info`'s lock to go (woken) or `deadline`, unless the
    /// detector finds the wait closes a cycle: then the `Deadlock` error.
    async fn wait_for_lock(
        &self,
        wait: &mut Wait<'_>,
        info: &LockInfo,
        start_ts: TimeStamp,
        deadline: Instant,
    ) -> Option<atoll_txn::Error> {
        let key = info.key.to_raw().unwrap_or_else(|_| info.key.as_encoded().to_vec());
        let w =
            WaitFor { txn: start_ts, wait_for_txn: info.lock.ts, key_hash: key_hash(&key), key };
        if let Some(wait_chain) = self.locks.detect(&w).await {
            LOCK_WAITS.with_label_values(&["deadlock"]).inc();
            return Some(atoll_txn::Error::Deadlock {
                key: info.key.clone(),
                start_ts,
                lock_ts: info.lock.ts,
                key_hash: w.key_hash,
                wait_chain,
            });
        }
        let started = Instant::now();
        let woken = wait.until(deadline).await;
        LOCK_WAIT_DURATION.observe(started.elapsed().as_secs_f64());
        LOCK_WAITS.with_label_values(&[if woken { "woken" } else { "timeout" }]).inc();
        self.locks.wait_ended(&w).await;
        None
    }

    pub async fn pessimistic_rollback(
        &self,
        ctx: &Context,
        raw: &[Vec<u8>],
        start_ts: TimeStamp,
        for_update_ts: TimeStamp,
    ) -> Result<()> {
        self.execute_each("kv_pessimistic_rollback", ctx, raw, |txn, reader, k| {
            actions::pessimistic_rollback(txn, reader, k, start_ts, for_update_ts).map(drop)
        })
        .await
    }
}
