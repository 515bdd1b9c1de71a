//! Prewrite: optimistic and pessimistic, async commit and 1PC.

use atoll_engine_traits::KvEngine;
use atoll_proto::kvrpcpb::Context;
use atoll_txn::actions::{self, Mutation};
use atoll_txn::{Key, Lock, LockType, MvccReader, MvccTxn, Op, TimeStamp};

use crate::metrics::TXN_PREWRITES;
use crate::txn::{bad, PrewriteArgs, PrewriteOutcome, Result, TxnStorage};

impl<E: KvEngine> TxnStorage<E> {
    /// Prewrite. Async commit and 1PC: the store's `max_ts` (synced for
    /// the region's leader term) decides `min_commit_ts`, with the keys in
    /// the memory lock table from before that until the write is applied.
    pub async fn prewrite(&self, ctx: &Context, a: PrewriteArgs) -> Result<PrewriteOutcome> {
        let keys = self.keys("kv_prewrite", ctx, a.mutations.iter().map(|m| m.key.as_slice()))?;
        if keys.is_empty() {
            return Err(bad("prewrite with no mutations"));
        }
        if let Some(m) = a.mutations.iter().find(|m| m.value.len() > self.max_value) {
            return Err(bad(format!(
                "value of {} bytes exceeds max-value-size {}",
                m.value.len(),
                self.max_value
            )));
        }
        let mut props = a.props;
        check_start_ts(props.start_ts)?;
        let computed_ts = props.use_async_commit || a.try_one_pc;
        // The floor of a computed commit ts; u64::MAX is none ("latest").
        let floor = props.start_ts.max(props.for_update_ts).max(props.min_commit_ts).checked_add(1);
        let floor = match floor {
            Some(f) if f < u64::MAX || !computed_ts => f,
            _ => {
                return Err(atoll_txn::Error::InvalidTxnTso(format!(
                    "start_ts {}, for_update_ts {} and min_commit_ts {} leave no commit ts below u64::MAX",
                    props.start_ts, props.for_update_ts, props.min_commit_ts
                ))
                .into())
            }
        };
        let cmd = self.begin(ctx, &keys).await?;
        if a.mutations.iter().any(|m| matches!(m.op, Op::Insert | Op::CheckNotExists)) {
            // Checking that a key is missing reads it at start_ts (TiKV's
            // actions/prewrite.rs: "checkNotExists is equivalent to a
            // get"): a later async-commit or 1PC writer must commit above.
            // Under the latches, before any min_commit_ts is computed.
            self.update_max_ts(props.start_ts).await?;
        }
        let mut memory_locks = None;
        if computed_ts {
            self.sync_max_ts(cmd.read.region.id, cmd.read.term).await?;
            let locks = keys
                .iter()
                .zip(&a.mutations)
                .map(|(k, m)| {
                    let t = match m.op {
                        Op::Del => LockType::Delete,
                        Op::Lock | Op::CheckNotExists => LockType::Lock,
                        _ => LockType::Put,
                    };
                    let mut lock =
                        Lock::new(t, props.primary.clone(), props.start_ts, props.lock_ttl);
                    lock.use_async_commit = props.use_async_commit;
                    (k.clone(), lock)
                })
                .collect();
            let (guard, min_commit_ts) = self.cm.lock_keys(locks, floor);
            memory_locks = Some(guard);
            props.min_commit_ts = min_commit_ts;
        } else {
            props.min_commit_ts = 0;
        }
        let reader = MvccReader::new(&*cmd.read.snapshot);
        let mut txn = if a.try_one_pc { MvccTxn::one_pc() } else { MvccTxn::new() };
        let mut out = PrewriteOutcome::default();
        let primary = Key::from_raw(&props.primary);
        for (key, m) in keys.into_iter().zip(a.mutations) {
            let secondaries =
                (props.use_async_commit && key == primary).then_some(a.secondaries.as_slice());
            let mutation = Mutation { op: m.op, key, value: m.value };
            match actions::prewrite(&mut txn, &reader, &props, mutation, secondaries, m.action) {
                Ok(ts) => out.min_commit_ts = out.min_commit_ts.max(ts),
                Err(atoll_txn::Error::Committed { commit_ts, .. }) => {
                    // A resent prewrite of a committed transaction: write
                    // nothing, answer the commit ts it has (TiKV's
                    // Prewriter::write_result), not a fresh one.
                    return Ok(PrewriteOutcome {
                        errors: vec![],
                        min_commit_ts: if props.use_async_commit { commit_ts } else { 0 },
                        one_pc_commit_ts: if a.try_one_pc { commit_ts } else { 0 },
                    });
                }
                Err(e @ (atoll_txn::Error::Engine(_) | atoll_txn::Error::Corruption(_))) => {
                    return Err(e.into())
                }
                Err(e) => out.errors.push(e),
            }
        }
        if !out.errors.is_empty() {
            out.min_commit_ts = 0;
            return Ok(out);
        }
        if a.try_one_pc {
            let commit_ts = out.min_commit_ts.max(props.min_commit_ts);
            actions::commit_one_pc(&mut txn, &reader, commit_ts)?;
            out.one_pc_commit_ts = commit_ts;
            out.min_commit_ts = 0;
        } else if !props.use_async_commit {
            out.min_commit_ts = 0;
        }
        self.finish(ctx, cmd, txn, memory_locks).await?;
        let kind = match (a.try_one_pc, props.use_async_commit) {
            (true, _) => "one_pc",
            (false, true) => "async_commit",
            (false, false) => "two_phase",
        };
        TXN_PREWRITES.with_label_values(&[kind]).inc();
        Ok(out)
    }
}

/// A transaction's start ts: neither 0 (no transaction) nor u64::MAX
/// (which reads take as "the latest").
pub(in crate::txn) fn check_start_ts(start_ts: TimeStamp) -> Result<()> {
    if start_ts == 0 || start_ts == u64::MAX {
        return Err(atoll_txn::Error::InvalidTxnTso(format!("start_ts {start_ts}")).into());
    }
    Ok(())
}
