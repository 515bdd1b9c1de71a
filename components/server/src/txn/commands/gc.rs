//! GC of one region, KvDeleteRange and UnsafeDestroyRange.

use atoll_codec::data::{data_end_key, data_key};
use atoll_engine_traits::{KvEngine, WriteBatch, WriteOptions, CF_DEFAULT, CF_LOCK, CF_WRITE};
use atoll_proto::atollpb::{CmdType, DeleteRangeRequest, Request};
use atoll_proto::kvrpcpb::Context;
use atoll_proto::metapb;
use atoll_txn::{actions, Key, MvccReader, TimeStamp};

use crate::request::snapshot;
use crate::txn::{Result, TxnStorage, GC_BATCH_KEYS};

impl<E: KvEngine> TxnStorage<E> {
    /// Garbage-collects `region` (if this store leads it) up to
    /// `safe_point`, [`GC_BATCH_KEYS`] keys per raft command. Returns
    /// (keys looked at, versions removed).
    pub async fn gc_region(
        &self,
        region: &metapb::Region,
        safe_point: TimeStamp,
    ) -> Result<(u64, u64)> {
        let peer = region.peers.iter().find(|p| p.store_id == self.store.store_id).cloned();
        let ctx = Context {
            region_id: region.id,
            region_epoch: region.region_epoch.clone(),
            peer,
            api_version: self.api.to_proto(),
            ..Default::default()
        };
        let (mut scanned, mut removed) = (0u64, 0u64);
        let mut from = Key::from_encoded(region.start_key.clone());
        let end = Key::from_encoded(region.end_key.clone());
        loop {
            let read = snapshot(&self.store, &ctx).await?;
            let mut keys = Vec::with_capacity(GC_BATCH_KEYS);
            MvccReader::new(&*read.snapshot).scan_keys(&from, &end, false, &mut |k| {
                keys.push(k);
                Ok(keys.len() < GC_BATCH_KEYS)
            })?;
            drop(read);
            let Some(last) = keys.last() else { return Ok((scanned, removed)) };
            // Past every version of the last key and before the next key.
            from = Key::from_encoded([last.as_encoded(), &[0xff; 9]].concat());
            let full = keys.len() == GC_BATCH_KEYS;
            scanned += keys.len() as u64;
            removed += self
                .execute(&ctx, &keys, |txn, reader| {
                    let mut n = 0;
                    for k in &keys {
                        n += actions::gc_key(txn, reader, k, safe_point)? as u64;
                    }
                    Ok(n)
                })
                .await?;
            if !full {
                return Ok((scanned, removed));
            }
        }
    }

    /// KvDeleteRange: removes every version and lock of `[start, end)`
    /// within the region through raft.
    pub async fn delete_range(&self, ctx: &Context, start: &[u8], end: &[u8]) -> Result<()> {
        let (lo, hi) =
            (self.bound("kv_delete_range", ctx, start)?, self.bound("kv_delete_range", ctx, end)?);
        let read = snapshot(&self.store, ctx).await?;
        let Some((lo, hi)) = Self::clip(&read, &lo, &hi) else { return Ok(()) };
        let requests = [CF_DEFAULT, CF_LOCK, CF_WRITE]
            .into_iter()
            .map(|cf| Request {
                cmd_type: CmdType::DeleteRange as i32,
                delete_range: Some(DeleteRangeRequest {
                    cf: cf.into(),
                    start_key: lo.as_encoded().to_vec(),
                    end_key: hi.as_encoded().to_vec(),
                }),
                ..Default::default()
            })
            .collect();
        self.propose(ctx, read.term, requests, ()).await
    }

    /// UnsafeDestroyRange: deletes `[start, end)` from this store's data
    /// column families directly — no raft, no region — as TiKV does for
    /// dropped tables; the client sends it to every store.
    pub fn unsafe_destroy_range(&self, ctx: &Context, start: &[u8], end: &[u8]) -> Result<()> {
        let (lo, hi) = (
            self.bound("unsafe_destroy_range", ctx, start)?,
            self.bound("unsafe_destroy_range", ctx, end)?,
        );
        let (lo, hi) = (data_key(lo.as_encoded()), data_end_key(hi.as_encoded()));
        if lo >= hi {
            return Ok(());
        }
        let mut wb = self.engine.write_batch();
        for cf in [CF_DEFAULT, CF_LOCK, CF_WRITE] {
            wb.delete_range_cf(cf, &lo, &hi).map_err(atoll_raftstore::Error::from)?;
        }
        self.engine.write(&mut wb, WriteOptions::sync()).map_err(atoll_raftstore::Error::from)?;
        Ok(())
    }
}
