//! Get, BatchGet, Scan and ScanLock: `max_ts` first, then the memory
//! locks, then a snapshot.

use atoll_engine_traits::KvEngine;
use atoll_proto::kvrpcpb::Context;
use atoll_txn::{Key, LockInfo, LockRead, MvccReader, ReadLocks, TimeStamp};

use crate::request::snapshot;
use crate::txn::{bad, KeyResult, Result, TxnStorage};

impl<E: KvEngine> TxnStorage<E> {
    /// A read at `ts` first raises `max_ts`, then checks the memory locks
    /// (see `concurrency`), then reads a snapshot taken after both. A
    /// memory lock has no value yet: one the request names as committed
    /// still blocks (TiKV's read_key_check passes only resolved ones).
    fn memory_lock_blocking(
        &self,
        key: &Key,
        ts: TimeStamp,
        passing: &ReadLocks,
    ) -> Option<atoll_txn::Error> {
        let lock = self.cm.lock_of(key)?;
        let blocks = passing.check(key, &lock, ts) != LockRead::Pass;
        blocks.then(|| atoll_txn::Error::KeyIsLocked(Box::new(lock.info(key))))
    }

    pub async fn get(&self, ctx: &Context, key: &[u8], ts: TimeStamp) -> Result<Option<Vec<u8>>> {
        let key = self.keys("kv_get", ctx, [key])?.remove(0);
        let passing = read_locks(ctx);
        self.update_max_ts(ts).await?;
        if let Some(e) = self.memory_lock_blocking(&key, ts, &passing) {
            return Err(e.into());
        }
        let read = snapshot(&self.store, ctx).await?;
        Self::in_region(&read, &key)?;
        Ok(MvccReader::new(&*read.snapshot).get_passing(&key, ts, &passing)?)
    }

    /// The existing keys' values, and the locks in the way of others.
    pub async fn batch_get(
        &self,
        ctx: &Context,
        raw: &[Vec<u8>],
        ts: TimeStamp,
    ) -> Result<Vec<KeyResult>> {
        let keys = self.keys("kv_batch_get", ctx, raw.iter().map(Vec::as_slice))?;
        let passing = read_locks(ctx);
        self.update_max_ts(ts).await?;
        let blocked: Vec<Option<atoll_txn::Error>> =
            keys.iter().map(|k| self.memory_lock_blocking(k, ts, &passing)).collect();
        let read = snapshot(&self.store, ctx).await?;
        let reader = MvccReader::new(&*read.snapshot);
        let mut out = vec![];
        for ((key, raw), blocked) in keys.iter().zip(raw).zip(blocked) {
            Self::in_region(&read, key)?;
            if let Some(e) = blocked {
                out.push((raw.clone(), Err(e)));
                continue;
            }
            match reader.get_passing(key, ts, &passing) {
                Ok(Some(v)) => out.push((raw.clone(), Ok(v))),
                Ok(None) => {}
                Err(e @ atoll_txn::Error::KeyIsLocked(_)) => out.push((raw.clone(), Err(e))),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// A snapshot scan within the region. Forward: `[start, end)`. Reverse
    /// (TiKV): `start` is the exclusive upper bound and `end` the inclusive
    /// lower one. Locked keys come back as pairs with their error.
    #[allow(clippy::too_many_arguments)]
    pub async fn scan(
        &self,
        ctx: &Context,
        start: &[u8],
        end: &[u8],
        limit: u32,
        key_only: bool,
        reverse: bool,
        ts: TimeStamp,
    ) -> Result<Vec<KeyResult>> {
        if limit > self.max_scan {
            return Err(bad(format!(
                "scan limit {limit} exceeds max-scan-limit {}",
                self.max_scan
            )));
        }
        let (lo, hi) = if reverse { (end, start) } else { (start, end) };
        let (lo, hi) = (self.bound("kv_scan", ctx, lo)?, self.bound("kv_scan", ctx, hi)?);
        let passing = read_locks(ctx);
        self.update_max_ts(ts).await?;
        // Every blocking memory lock of the request's range, before the
        // snapshot (a lock applied and gone after it is in the snapshot);
        // the region's range is known only from the snapshot.
        let mem = self.cm.all_in_range(&lo, &hi, |k, l| passing.check(k, l, ts) != LockRead::Pass);
        let read = snapshot(&self.store, ctx).await?;
        let Some((lo, hi)) = Self::clip(&read, &lo, &hi) else { return Ok(vec![]) };
        let mut out = vec![];
        let in_range = |k: &Key| *k >= lo && (hi.as_encoded().is_empty() || *k < hi);
        if let Some((key, lock)) = mem.into_iter().find(|(k, _)| in_range(k)) {
            let raw = key.to_raw()?;
            out.push((raw, Err(atoll_txn::Error::KeyIsLocked(Box::new(lock.info(&key))))));
            return Ok(out);
        }
        let reader = MvccReader::new(&*read.snapshot);
        let mut failed = None;
        reader.scan_keys(&lo, &hi, reverse, &mut |key| {
            if out.len() >= limit as usize {
                return Ok(false);
            }
            match reader.get_passing(&key, ts, &passing) {
                Ok(Some(v)) => out.push((key.to_raw()?, Ok(if key_only { vec![] } else { v }))),
                Ok(None) => {}
                Err(e @ atoll_txn::Error::KeyIsLocked(_)) => out.push((key.to_raw()?, Err(e))),
                Err(e) => {
                    failed = Some(e);
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(out),
        }
    }

    /// Locks with ts ≤ `max_ts` in `[start, end)` clipped to the region
    /// (the end may lie past it: ScanLock's end is the caller's global one).
    /// A memory lock there (a prewrite not applied yet) fails the request
    /// with KeyIsLocked, as in TiKV's Storage::scan_lock: it would be
    /// missed, and GC would pass it by.
    pub async fn scan_lock(
        &self,
        ctx: &Context,
        max_ts: TimeStamp,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<LockInfo>> {
        let (lo, hi) =
            (self.bound("kv_scan_lock", ctx, start)?, self.bound("kv_scan_lock", ctx, end)?);
        self.update_max_ts(max_ts).await?;
        let mem = self.cm.all_in_range(&lo, &hi, |_, l| l.ts <= max_ts);
        let read = snapshot(&self.store, ctx).await?;
        let Some((lo, hi)) = Self::clip(&read, &lo, &hi) else { return Ok(vec![]) };
        let in_range = |k: &Key| *k >= lo && (hi.as_encoded().is_empty() || *k < hi);
        if let Some((key, lock)) = mem.into_iter().find(|(k, _)| in_range(k)) {
            return Err(atoll_txn::Error::KeyIsLocked(Box::new(lock.info(&key))).into());
        }
        let limit = if limit == 0 { self.max_scan } else { limit.min(self.max_scan) };
        Ok(MvccReader::new(&*read.snapshot).scan_locks(&lo, &hi, max_ts, limit as usize)?)
    }
}

/// The locks a read's Context lets it pass (see [`ReadLocks`]).
fn read_locks(ctx: &Context) -> ReadLocks {
    ReadLocks { resolved: ctx.resolved_locks.clone(), committed: ctx.committed_locks.clone() }
}
