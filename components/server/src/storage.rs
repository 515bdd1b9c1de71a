//! Raw KV semantics over raftstore: validation, TTL encoding, region
//! clipping, and linearizable reads. The gRPC layer (`kv`) only converts.

use std::sync::Arc;
use std::time::Duration;

use atoll_engine_traits::{data_cf, Iterable, KvEngine, Peekable};
use atoll_proto::atollpb::{
    CasRequest, CmdType, DeleteRangeRequest, DeleteRequest, PutRequest, RaftCmdRequest, RaftRequestHeader, Request,
};
use atoll_proto::kvrpcpb::Context;
use atoll_raftstore::codec::RawValue;
use atoll_raftstore::{clip_to_region, keys, region_contains, CasResult, Error, ReadResponse, StoreHandle};
use tokio::sync::oneshot;

use crate::config::ServerConfig;

pub type Result<T> = std::result::Result<T, Error>;

/// How long a request may wait for raft before failing (the client retries).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct RawStorage<E: KvEngine> {
    store: StoreHandle<E>,
    max_key: usize,
    max_value: usize,
    max_scan: u32,
}

/// Waits for a raftstore callback. A dropped callback means the store is
/// shutting down; a timeout becomes `StaleCommand`, which clients retry
/// (safe: raw puts and deletes are idempotent).
async fn wait<T>(rx: oneshot::Receiver<Result<T>>) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(Error::Shutdown),
        Err(_) => Err(Error::StaleCommand),
    }
}

fn header(ctx: &Context) -> RaftRequestHeader {
    RaftRequestHeader { region_id: ctx.region_id, peer: ctx.peer.clone(), region_epoch: ctx.region_epoch.clone(), term: 0 }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidRequest(msg.into())
}

/// A key-value pair as the client sees it.
pub type Pair = (Vec<u8>, Vec<u8>);

/// How to scan: pairs per range, keys only, direction.
#[derive(Clone, Copy, Debug)]
pub struct ScanOpts {
    pub limit: u32,
    pub key_only: bool,
    pub reverse: bool,
}

impl<E: KvEngine> RawStorage<E> {
    pub fn new(store: StoreHandle<E>, cfg: &ServerConfig) -> Self {
        RawStorage {
            store,
            max_key: cfg.max_key_size.0 as usize,
            max_value: cfg.max_value_size.0 as usize,
            max_scan: cfg.max_scan_limit,
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(bad("key is empty"));
        }
        if key.len() > self.max_key {
            return Err(bad(format!("key of {} bytes exceeds max-key-size {}", key.len(), self.max_key)));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value {
            return Err(bad(format!("value of {} bytes exceeds max-value-size {}", value.len(), self.max_value)));
        }
        Ok(())
    }

    fn check_ctx(&self, ctx: &Context) -> Result<()> {
        if let Some(p) = &ctx.peer {
            if p.store_id != 0 && p.store_id != self.store.store_id {
                return Err(Error::StoreNotMatch { requested: p.store_id, actual: self.store.store_id });
            }
        }
        Ok(())
    }

    async fn snapshot(&self, ctx: &Context) -> Result<ReadResponse<E::Snapshot>> {
        self.check_ctx(ctx)?;
        let (tx, rx) = oneshot::channel();
        self.store.read(header(ctx), Box::new(move |r| drop(tx.send(r))));
        wait(rx).await
    }

    async fn write(&self, ctx: &Context, requests: Vec<Request>) -> Result<atoll_raftstore::WriteResponse> {
        self.check_ctx(ctx)?;
        let req = RaftCmdRequest { header: Some(header(ctx)), requests, admin_request: None };
        let (tx, rx) = oneshot::channel();
        self.store.write(req, Box::new(move |r| drop(tx.send(r))));
        wait(rx).await
    }

    fn in_region(read: &ReadResponse<E::Snapshot>, key: &[u8]) -> Result<()> {
        if region_contains(&read.region, key) {
            Ok(())
        } else {
            Err(Error::KeyNotInRegion { key: key.to_vec(), region: read.region.clone() })
        }
    }

    fn load(snap: &E::Snapshot, cf: &str, key: &[u8], now: u64) -> Result<Option<RawValue>> {
        let Some(v) = snap.get_value_cf(cf, &keys::data_key(key))? else { return Ok(None) };
        let rv = RawValue::decode(&v).map_err(Error::Raft)?;
        Ok((!rv.is_expired(now)).then_some(rv))
    }

    pub async fn get(&self, ctx: &Context, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_key(key)?;
        let cf = data_cf(cf)?;
        let read = self.snapshot(ctx).await?;
        Self::in_region(&read, key)?;
        Ok(Self::load(&read.snapshot, cf, key, atoll_util::time::unix_secs())?.map(|v| v.value))
    }

    /// Seconds left to live: `Some(0)` for a key without TTL, `None` if absent.
    pub async fn get_ttl(&self, ctx: &Context, cf: &str, key: &[u8]) -> Result<Option<u64>> {
        self.check_key(key)?;
        let cf = data_cf(cf)?;
        let read = self.snapshot(ctx).await?;
        Self::in_region(&read, key)?;
        let now = atoll_util::time::unix_secs();
        Ok(Self::load(&read.snapshot, cf, key, now)?.map(|v| v.ttl_left(now).unwrap_or(0)))
    }

    pub async fn batch_get(&self, ctx: &Context, cf: &str, keys: &[Vec<u8>]) -> Result<Vec<Pair>> {
        for k in keys {
            self.check_key(k)?;
        }
        let cf = data_cf(cf)?;
        let read = self.snapshot(ctx).await?;
        let now = atoll_util::time::unix_secs();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            Self::in_region(&read, k)?;
            if let Some(v) = Self::load(&read.snapshot, cf, k, now)? {
                out.push((k.clone(), v.value));
            }
        }
        Ok(out)
    }

    pub async fn put(&self, ctx: &Context, cf: &str, key: Vec<u8>, value: Vec<u8>, ttl: u64) -> Result<()> {
        self.batch_put(ctx, cf, vec![(key, value)], &[ttl]).await
    }

    /// `ttls` is empty (no TTL), one value for all pairs, or one per pair.
    pub async fn batch_put(&self, ctx: &Context, cf: &str, pairs: Vec<Pair>, ttls: &[u64]) -> Result<()> {
        if pairs.is_empty() {
            return Err(bad("batch put with no pairs"));
        }
        if ttls.len() > 1 && ttls.len() != pairs.len() {
            return Err(bad(format!("{} ttls for {} pairs", ttls.len(), pairs.len())));
        }
        let cf = data_cf(cf)?;
        let now = atoll_util::time::unix_secs();
        let mut reqs = Vec::with_capacity(pairs.len());
        for (i, (k, v)) in pairs.into_iter().enumerate() {
            self.check_key(&k)?;
            self.check_value(&v)?;
            let ttl = ttls.get(i).or(ttls.first()).copied().unwrap_or(0);
            reqs.push(Request {
                cmd_type: CmdType::Put as i32,
                put: Some(PutRequest { cf: cf.into(), key: k, value: RawValue::new(v, ttl, now).encode() }),
                ..Default::default()
            });
        }
        self.write(ctx, reqs).await.map(|_| ())
    }

    pub async fn batch_delete(&self, ctx: &Context, cf: &str, keys: Vec<Vec<u8>>) -> Result<()> {
        if keys.is_empty() {
            return Err(bad("batch delete with no keys"));
        }
        let cf = data_cf(cf)?;
        let mut reqs = Vec::with_capacity(keys.len());
        for k in keys {
            self.check_key(&k)?;
            reqs.push(Request {
                cmd_type: CmdType::Delete as i32,
                delete: Some(DeleteRequest { cf: cf.into(), key: k }),
                ..Default::default()
            });
        }
        self.write(ctx, reqs).await.map(|_| ())
    }

    pub async fn delete_range(&self, ctx: &Context, cf: &str, start: Vec<u8>, end: Vec<u8>) -> Result<()> {
        let cf = data_cf(cf)?;
        if !end.is_empty() && start >= end {
            return Err(bad("delete range start must be below end"));
        }
        let req = Request {
            cmd_type: CmdType::DeleteRange as i32,
            delete_range: Some(DeleteRangeRequest { cf: cf.into(), start_key: start, end_key: end }),
            ..Default::default()
        };
        self.write(ctx, vec![req]).await.map(|_| ())
    }

    /// Returns whether it swapped and the live previous value.
    #[allow(clippy::too_many_arguments)]
    pub async fn compare_and_swap(
        &self,
        ctx: &Context,
        cf: &str,
        key: Vec<u8>,
        previous: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl: u64,
    ) -> Result<(bool, Option<Vec<u8>>)> {
        self.check_key(&key)?;
        self.check_value(&value)?;
        let cf = data_cf(cf)?;
        let now = atoll_util::time::unix_secs();
        let req = Request {
            cmd_type: CmdType::CompareAndSwap as i32,
            cas: Some(CasRequest {
                cf: cf.into(),
                key,
                value: RawValue::new(value, ttl, now).encode(),
                previous_not_exist: previous.is_none(),
                previous_value: previous.unwrap_or_default(),
                now_secs: now,
            }),
            ..Default::default()
        };
        let resp = self.write(ctx, vec![req]).await?;
        let CasResult { succeed, previous } = resp.cas.ok_or_else(|| Error::Raft("cas without result".into()))?;
        let previous = match previous {
            Some(p) => Some(RawValue::decode(&p).map_err(Error::Raft)?.value),
            None => None,
        };
        Ok((succeed, previous))
    }

    /// Scans each range within one region, `opts.limit` pairs per range.
    /// Forward: `[start, end)`. Reverse (TiKV semantics): `start` is the
    /// exclusive upper bound and `end` the inclusive lower one. Ranges are
    /// clipped to the region; an empty bound means "region edge".
    pub async fn scan(&self, ctx: &Context, cf: &str, ranges: &[(Vec<u8>, Vec<u8>)], opts: ScanOpts) -> Result<Vec<Pair>> {
        if opts.limit > self.max_scan {
            return Err(bad(format!("scan limit {} exceeds max-scan-limit {}", opts.limit, self.max_scan)));
        }
        let cf = data_cf(cf)?;
        let read = self.snapshot(ctx).await?;
        let mut out = vec![];
        for (s, e) in ranges {
            out.extend(Self::scan_range(&read, cf, s, e, opts)?);
        }
        Ok(out)
    }

    fn scan_range(read: &ReadResponse<E::Snapshot>, cf: &str, start: &[u8], end: &[u8], opts: ScanOpts) -> Result<Vec<Pair>> {
        let ScanOpts { limit, key_only, reverse } = opts;
        let (lo, hi) = if reverse { (end, start) } else { (start, end) };
        let (lo, hi) = clip_to_region(&read.region, lo, hi)?;
        if !hi.is_empty() && lo >= hi {
            return Ok(vec![]);
        }
        let snap: &Arc<E::Snapshot> = &read.snapshot;
        let now = atoll_util::time::unix_secs();
        let mut out = Vec::with_capacity(limit.min(1024) as usize);
        let mut bad_value = None;
        snap.scan_cf(cf, &keys::data_key(&lo), &keys::data_end_key(&hi), reverse, &mut |k, v| {
            if out.len() >= limit as usize {
                return Ok(false);
            }
            match RawValue::decode(v) {
                Ok(rv) if rv.is_expired(now) => {}
                Ok(rv) => out.push((keys::origin_key(k).to_vec(), if key_only { vec![] } else { rv.value })),
                Err(e) => {
                    bad_value = Some(e);
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        if let Some(e) = bad_value {
            return Err(Error::Raft(e));
        }
        Ok(out)
    }
}
