//! Commit, BatchRollback and Cleanup.

use atoll_engine_traits::KvEngine;
use atoll_proto::kvrpcpb::Context;
use atoll_txn::{actions, TimeStamp};

use crate::txn::{Result, TxnStorage};

impl<E: KvEngine> TxnStorage<E> {
    pub async fn commit(
        &self,
        ctx: &Context,
        raw: &[Vec<u8>],
        start_ts: TimeStamp,
        commit_ts: TimeStamp,
    ) -> Result<()> {
        self.execute_each("kv_commit", ctx, raw, |txn, reader, k| {
            actions::commit(txn, reader, k, start_ts, commit_ts)
        })
        .await
    }

    pub async fn batch_rollback(
        &self,
        ctx: &Context,
        raw: &[Vec<u8>],
        start_ts: TimeStamp,
    ) -> Result<()> {
        self.execute_each("kv_batch_rollback", ctx, raw, |txn, reader, k| {
            actions::rollback(txn, reader, k, start_ts).map(drop)
        })
        .await
    }

    /// Cleanup (TiKV): roll back `start_ts` on `key` unless its lock is
    /// still alive at `current_ts` (0: roll back regardless). A committed
    /// transaction is `Committed` with its commit ts.
    pub async fn cleanup(
        &self,
        ctx: &Context,
        raw: &[u8],
        start_ts: TimeStamp,
        current_ts: TimeStamp,
    ) -> Result<()> {
        let keys = self.keys("kv_cleanup", ctx, [raw])?;
        self.update_max_ts(current_ts).await?;
        self.execute(ctx, &keys, |txn, reader| {
            let key = &keys[0];
            if let Some(lock) = reader.load_lock(key)? {
                if lock.ts == start_ts && current_ts != 0 && !lock.is_expired(current_ts) {
                    return Err(atoll_txn::Error::KeyIsLocked(Box::new(lock.info(key))).into());
                }
            }
            actions::rollback(txn, reader, key, start_ts)?;
            Ok(())
        })
        .await
    }
}
