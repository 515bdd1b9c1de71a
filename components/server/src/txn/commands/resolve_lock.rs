//! ResolveLock: commits or rolls back transactions' locks.

use std::collections::HashMap;

use atoll_engine_traits::KvEngine;
use atoll_proto::kvrpcpb::Context;
use atoll_txn::{actions, Key, LockType, MvccReader, TimeStamp};

use crate::request::{check_api, snapshot};
use crate::txn::{Result, TxnStorage, RESOLVE_BATCH_MAX};

impl<E: KvEngine> TxnStorage<E> {
    /// ResolveLock: commits (commit ts > 0) or rolls back (0) the
    /// transactions of `txns` (start ts → commit ts) on `raw` keys, or on
    /// every lock of theirs in the region when `raw` is empty, at most
    /// [`RESOLVE_BATCH_MAX`] keys per raft command.
    pub async fn resolve_lock(
        &self,
        ctx: &Context,
        txns: HashMap<TimeStamp, TimeStamp>,
        raw: &[Vec<u8>],
    ) -> Result<()> {
        check_api(self.api, "kv_resolve_lock", ctx)?;
        for (&start_ts, &commit_ts) in &txns {
            if commit_ts != 0 && commit_ts <= start_ts {
                return Err(atoll_txn::Error::InvalidTxnTso(format!(
                    "commit_ts {commit_ts} is not after start_ts {start_ts}"
                ))
                .into());
            }
        }
        if !raw.is_empty() {
            let keys = self.keys("kv_resolve_lock", ctx, raw.iter().map(Vec::as_slice))?;
            return self.resolve_keys(ctx, &keys, &txns).await.map(|_| ());
        }
        loop {
            let read = snapshot(&self.store, ctx).await?;
            let (lo, hi) = (
                Key::from_encoded(read.region.start_key.clone()),
                Key::from_encoded(read.region.end_key.clone()),
            );
            let mut keys = vec![];
            MvccReader::new(&*read.snapshot).scan_locks_with(&lo, &hi, &mut |key, lock| {
                if txns.contains_key(&lock.ts) {
                    keys.push(key);
                }
                Ok(keys.len() < RESOLVE_BATCH_MAX)
            })?;
            drop(read);
            if keys.is_empty() || self.resolve_keys(ctx, &keys, &txns).await? == 0 {
                return Ok(());
            }
        }
    }

    /// Resolves the locks of `txns` on `keys` in one command; returns how
    /// many it resolved.
    async fn resolve_keys(
        &self,
        ctx: &Context,
        keys: &[Key],
        txns: &HashMap<TimeStamp, TimeStamp>,
    ) -> Result<usize> {
        self.execute(ctx, keys, |txn, reader| {
            let mut resolved = 0;
            for key in keys {
                let Some(lock) = reader.load_lock(key)? else { continue };
                let Some(&commit_ts) = txns.get(&lock.ts) else { continue };
                resolved += 1;
                if commit_ts == 0 {
                    actions::rollback(txn, reader, key, lock.ts)?;
                } else if lock.lock_type == LockType::Pessimistic {
                    // Locked, never prewritten: no data of a committed transaction.
                    actions::pessimistic_rollback(txn, reader, key, lock.ts, u64::MAX)?;
                } else {
                    actions::commit(txn, reader, key, lock.ts, commit_ts)?;
                }
            }
            Ok(resolved)
        })
        .await
    }
}
