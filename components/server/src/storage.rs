//! Raw KV semantics over raftstore: validation, TTL encoding, region
//! clipping, and linearizable reads. The gRPC layer (`kv`) only converts.
//!
//! This is the request boundary of the key space (`atoll_codec::api`): a
//! request's `Context.api_version` must be the cluster's, its keys are mapped
//! to region keys here, and scans map them back. Below this module every key
//! is a region key.

use std::sync::Arc;

use atoll_codec::api::{ApiVersion, KEYSPACE_PREFIX_LEN, RAW_KEY_PREFIX};
use atoll_engine_traits::{data_cf, Iterable, KvEngine, Peekable};
use atoll_proto::atollpb::{
    CasRequest, CmdType, DeleteRangeRequest, DeleteRequest, PutRequest, Request,
};
use atoll_proto::kvrpcpb::Context;
use atoll_proto::metapb;
use atoll_raftstore::codec::RawValue;
use atoll_raftstore::{
    clip_to_region, keys, region_contains, CasResult, Error, ReadResponse, StoreHandle,
};

use crate::checksum::Checksum;
use crate::config::ServerConfig;
use crate::request;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone)]
pub struct RawStorage<E: KvEngine> {
    store: StoreHandle<E>,
    api: ApiVersion,
    max_key: usize,
    max_value: usize,
    max_scan: u32,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidRequest(msg.into())
}

/// Is `bound` a valid bound of an API V2 raw range: a raw key (`r...`), or
/// `s`, the end of the last keyspace?
fn is_v2_raw_bound(bound: &[u8]) -> bool {
    bound.first() == Some(&RAW_KEY_PREFIX) || bound == [RAW_KEY_PREFIX + 1]
}

/// The region key of a raw request's `key` if `region` holds it: the
/// store's key-in-region check.
pub fn region_key_in(api: ApiVersion, region: &metapb::Region, key: &[u8]) -> Option<Vec<u8>> {
    let region_key = api.raw_region_key(key);
    region_contains(region, &region_key).then_some(region_key)
}

/// The engine range (data keys) of a raw request's range `[lo, hi)` (empty
/// `hi` = unbounded) inside `region`, or `None` if they do not meet: what
/// scans and checksums visit.
pub fn data_range_in(
    api: ApiVersion,
    region: &metapb::Region,
    lo: &[u8],
    hi: &[u8],
) -> Option<(Vec<u8>, Vec<u8>)> {
    let (lo, hi) = clip_to_region(region, &api.raw_region_bound(lo), &api.raw_region_bound(hi));
    (hi.is_empty() || lo < hi).then(|| (keys::data_key(&lo), keys::data_end_key(&hi)))
}

/// A key-value pair as the client sees it.
pub type Pair = (Vec<u8>, Vec<u8>);

/// How to scan: pairs per range, keys only, direction.
#[derive(Clone, Copy, Debug)]
pub struct ScanOpts {
    pub limit: u32,
    pub key_only: bool,
    pub reverse: bool,
    /// A RawBatchScan (for error messages).
    pub batch: bool,
}

impl<E: KvEngine> RawStorage<E> {
    pub fn new(store: StoreHandle<E>, cfg: &ServerConfig, api: ApiVersion) -> Self {
        RawStorage {
            store,
            api,
            max_key: cfg.max_key_size.0 as usize,
            max_value: cfg.max_value_size.0 as usize,
            max_scan: cfg.max_scan_limit,
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        // In API V2 the user's key follows `r` + the 3-byte keyspace id.
        let prefix = if self.api == ApiVersion::V2 { KEYSPACE_PREFIX_LEN } else { 0 };
        if key.len() <= prefix {
            return Err(bad("key is empty"));
        }
        if key.len() > self.max_key {
            return Err(bad(format!(
                "key of {} bytes exceeds max-key-size {}",
                key.len(),
                self.max_key
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value {
            return Err(bad(format!(
                "value of {} bytes exceeds max-value-size {}",
                value.len(),
                self.max_value
            )));
        }
        Ok(())
    }

    fn check_api(&self, cmd: &str, ctx: &Context) -> Result<()> {
        request::check_api(self.api, cmd, ctx)
    }

    /// API version, then (V2) key mode: raw commands take only raw keys.
    fn check_keys<'a>(
        &self,
        cmd: &str,
        ctx: &Context,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        self.check_api(cmd, ctx)?;
        if self.api == ApiVersion::V2 {
            if let Some(k) = keys.into_iter().find(|k| k.first() != Some(&RAW_KEY_PREFIX)) {
                return Err(bad(format!(
                    "key mode not matched: {cmd} in API V2 takes raw keys (prefix 'r'), got {k:?}"
                )));
            }
        }
        Ok(())
    }

    /// API version, then (V2) range mode: both bounds in the raw key space.
    fn check_ranges(&self, cmd: &str, ctx: &Context, ranges: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.check_api(cmd, ctx)?;
        if self.api == ApiVersion::V2 {
            if let Some((s, e)) =
                ranges.iter().find(|(s, e)| !is_v2_raw_bound(s) || !is_v2_raw_bound(e))
            {
                return Err(bad(format!(
                    "key mode not matched: {cmd} in API V2 takes raw ranges (both bounds with prefix 'r'), got [{s:?}, {e:?})"
                )));
            }
        }
        Ok(())
    }

    fn region_key(&self, key: &[u8]) -> Vec<u8> {
        self.api.raw_region_key(key)
    }

    fn user_key(&self, region_key: &[u8]) -> Result<Vec<u8>> {
        self.api
            .raw_user_key(region_key)
            .map_err(|e| Error::Corruption(format!("stored key {region_key:?}: {e}")))
    }

    async fn snapshot(&self, ctx: &Context) -> Result<ReadResponse<E::Snapshot>> {
        request::snapshot(&self.store, ctx).await
    }

    async fn write(
        &self,
        ctx: &Context,
        requests: Vec<Request>,
    ) -> Result<atoll_raftstore::WriteResponse> {
        request::write(&self.store, ctx, 0, requests, ()).await
    }

    /// The region key of the user's `key`, which must lie in the read's region.
    fn in_region(&self, read: &ReadResponse<E::Snapshot>, key: &[u8]) -> Result<Vec<u8>> {
        let region_key = self.api.raw_region_key(key);
        atoll_raftstore::check_key_in_region(&read.region, &region_key, key)?;
        Ok(region_key)
    }

    fn load(snap: &E::Snapshot, cf: &str, region_key: &[u8], now: u64) -> Result<Option<RawValue>> {
        let Some(v) = snap.get_value_cf(cf, &keys::data_key(region_key))? else { return Ok(None) };
        let rv = RawValue::decode(&v)
            .map_err(|e| Error::Corruption(format!("stored value of {region_key:?}: {e}")))?;
        Ok((!rv.is_expired(now)).then_some(rv))
    }

    pub async fn get(&self, ctx: &Context, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_keys("raw_get", ctx, [key])?;
        self.check_key(key)?;
        let cf = data_cf(cf)?;
        let read = self.snapshot(ctx).await?;
        let key = self.in_region(&read, key)?;
        Ok(Self::load(&read.snapshot, cf, &key, atoll_util::time::unix_secs())?.map(|v| v.value))
    }

    /// Seconds left to live: `Some(0)` for a key without TTL, `None` if absent.
    pub async fn get_ttl(&self, ctx: &Context, cf: &str, key: &[u8]) -> Result<Option<u64>> {
        self.check_keys("raw_get_key_ttl", ctx, [key])?;
        self.check_key(key)?;
        let cf = data_cf(cf)?;
        let read = self.snapshot(ctx).await?;
        let key = self.in_region(&read, key)?;
        let now = atoll_util::time::unix_secs();
        Ok(Self::load(&read.snapshot, cf, &key, now)?.map(|v| v.ttl_left(now).unwrap_or(0)))
    }

    pub async fn batch_get(&self, ctx: &Context, cf: &str, keys: &[Vec<u8>]) -> Result<Vec<Pair>> {
        self.check_keys("raw_batch_get", ctx, keys.iter().map(Vec::as_slice))?;
        for k in keys {
            self.check_key(k)?;
        }
        let cf = data_cf(cf)?;
        let read = self.snapshot(ctx).await?;
        let now = atoll_util::time::unix_secs();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let region_key = self.in_region(&read, k)?;
            if let Some(v) = Self::load(&read.snapshot, cf, &region_key, now)? {
                out.push((k.clone(), v.value));
            }
        }
        Ok(out)
    }

    pub async fn put(
        &self,
        ctx: &Context,
        cf: &str,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: u64,
    ) -> Result<()> {
        self.put_pairs("raw_put", ctx, cf, vec![(key, value)], &[ttl]).await
    }

    /// `ttls` is empty (no TTL), one value for all pairs, or one per pair.
    pub async fn batch_put(
        &self,
        ctx: &Context,
        cf: &str,
        pairs: Vec<Pair>,
        ttls: &[u64],
    ) -> Result<()> {
        self.put_pairs("raw_batch_put", ctx, cf, pairs, ttls).await
    }

    async fn put_pairs(
        &self,
        cmd: &str,
        ctx: &Context,
        cf: &str,
        pairs: Vec<Pair>,
        ttls: &[u64],
    ) -> Result<()> {
        self.check_keys(cmd, ctx, pairs.iter().map(|(k, _)| k.as_slice()))?;
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
                put: Some(PutRequest {
                    cf: cf.into(),
                    key: self.region_key(&k),
                    value: RawValue::new(v, ttl, now).encode(),
                }),
                ..Default::default()
            });
        }
        self.write(ctx, reqs).await.map(|_| ())
    }

    pub async fn delete(&self, ctx: &Context, cf: &str, key: Vec<u8>) -> Result<()> {
        self.delete_keys("raw_delete", ctx, cf, vec![key]).await
    }

    pub async fn batch_delete(&self, ctx: &Context, cf: &str, keys: Vec<Vec<u8>>) -> Result<()> {
        self.delete_keys("raw_batch_delete", ctx, cf, keys).await
    }

    async fn delete_keys(
        &self,
        cmd: &str,
        ctx: &Context,
        cf: &str,
        keys: Vec<Vec<u8>>,
    ) -> Result<()> {
        self.check_keys(cmd, ctx, keys.iter().map(Vec::as_slice))?;
        if keys.is_empty() {
            return Err(bad("batch delete with no keys"));
        }
        let cf = data_cf(cf)?;
        let mut reqs = Vec::with_capacity(keys.len());
        for k in keys {
            self.check_key(&k)?;
            reqs.push(Request {
                cmd_type: CmdType::Delete as i32,
                delete: Some(DeleteRequest { cf: cf.into(), key: self.region_key(&k) }),
                ..Default::default()
            });
        }
        self.write(ctx, reqs).await.map(|_| ())
    }

    pub async fn delete_range(
        &self,
        ctx: &Context,
        cf: &str,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> Result<()> {
        self.check_ranges("raw_delete_range", ctx, &[(start.clone(), end.clone())])?;
        let cf = data_cf(cf)?;
        if !end.is_empty() && start >= end {
            return Err(bad("delete range start must be below end"));
        }
        let (start_key, end_key) =
            (self.api.raw_region_bound(&start), self.api.raw_region_bound(&end));
        let req = Request {
            cmd_type: CmdType::DeleteRange as i32,
            delete_range: Some(DeleteRangeRequest { cf: cf.into(), start_key, end_key }),
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
        self.check_keys("raw_compare_and_swap", ctx, [key.as_slice()])?;
        self.check_key(&key)?;
        self.check_value(&value)?;
        let cf = data_cf(cf)?;
        let now = atoll_util::time::unix_secs();
        let req = Request {
            cmd_type: CmdType::CompareAndSwap as i32,
            cas: Some(CasRequest {
                cf: cf.into(),
                key: self.region_key(&key),
                value: RawValue::new(value, ttl, now).encode(),
                previous_not_exist: previous.is_none(),
                previous_value: previous.unwrap_or_default(),
                now_secs: now,
            }),
            ..Default::default()
        };
        let resp = self.write(ctx, vec![req]).await?;
        let CasResult { succeed, previous } =
            resp.cas.ok_or_else(|| Error::Internal("cas without result".into()))?;
        let previous = match previous {
            Some(p) => Some(RawValue::decode(&p).map_err(Error::Corruption)?.value),
            None => None,
        };
        Ok((succeed, previous))
    }

    /// Scans each range within one region, `opts.limit` pairs per range.
    /// Forward: `[start, end)`. Reverse (TiKV semantics): `start` is the
    /// exclusive upper bound and `end` the inclusive lower one. Ranges are
    /// clipped to the region; an empty bound means "region edge".
    pub async fn scan(
        &self,
        ctx: &Context,
        cf: &str,
        ranges: &[(Vec<u8>, Vec<u8>)],
        opts: ScanOpts,
    ) -> Result<Vec<Pair>> {
        let cmd = if opts.batch { "raw_batch_scan" } else { "raw_scan" };
        self.check_ranges(cmd, ctx, ranges)?;
        if opts.limit > self.max_scan {
            return Err(bad(format!(
                "scan limit {} exceeds max-scan-limit {}",
                opts.limit, self.max_scan
            )));
        }
        let cf = data_cf(cf)?;
        let read = self.snapshot(ctx).await?;
        let mut out = vec![];
        for (s, e) in ranges {
            let (lo, hi) = if opts.reverse { (e, s) } else { (s, e) };
            let mut taken = 0;
            self.visit_range(&read, cf, lo, hi, opts.reverse, &mut |k, v| {
                if taken >= opts.limit {
                    return Ok(false);
                }
                taken += 1;
                out.push((k, if opts.key_only { vec![] } else { v.value }));
                Ok(true)
            })?;
        }
        Ok(out)
    }

    /// RawChecksum (crc64-xor of user key and value, pair count, bytes) of
    /// the live pairs of `ranges` inside the region.
    pub async fn checksum(&self, ctx: &Context, ranges: &[(Vec<u8>, Vec<u8>)]) -> Result<Checksum> {
        self.check_ranges("raw_checksum", ctx, ranges)?;
        let cf = data_cf("")?;
        let read = self.snapshot(ctx).await?;
        let mut sum = Checksum::default();
        for (lo, hi) in ranges {
            self.visit_range(&read, cf, lo, hi, false, &mut |k, v| {
                sum.add(&k, &v.value);
                Ok(true)
            })?;
        }
        Ok(sum)
    }

    /// Visits the live pairs of the user range `[lo, hi)` (empty `hi` =
    /// unbounded) inside the read's region, as (user key, value), until `f`
    /// returns false.
    fn visit_range(
        &self,
        read: &ReadResponse<E::Snapshot>,
        cf: &str,
        lo: &[u8],
        hi: &[u8],
        reverse: bool,
        f: &mut dyn FnMut(Vec<u8>, RawValue) -> Result<bool>,
    ) -> Result<()> {
        let Some((start, end)) = data_range_in(self.api, &read.region, lo, hi) else {
            return Ok(());
        };
        let snap: &Arc<E::Snapshot> = &read.snapshot;
        let now = atoll_util::time::unix_secs();
        let mut failed = None;
        snap.scan_cf(cf, &start, &end, reverse, &mut |k, v| {
            let pair = RawValue::decode(v)
                .map_err(|e| Error::Corruption(format!("stored value of {k:?}: {e}")))
                .and_then(|rv| Ok((self.user_key(keys::origin_key(k))?, rv)));
            match pair {
                Ok((_, rv)) if rv.is_expired(now) => Ok(true),
                Ok((key, rv)) => f(key, rv).or_else(|e| {
                    failed = Some(e);
                    Ok(false)
                }),
                Err(e) => {
                    failed = Some(e);
                    Ok(false)
                }
            }
        })?;
        failed.map_or(Ok(()), Err)
    }
}
