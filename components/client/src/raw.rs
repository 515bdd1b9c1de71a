//! The raw KV client.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use atoll_pd_client::PdClient;
use atoll_proto::errorpb;
use atoll_proto::kvrpcpb::*;
use atoll_proto::tikvpb::tikv_client::TikvClient;
use parking_lot::RwLock;
use std::collections::HashMap;
use tonic::transport::{Channel, Endpoint};

use crate::cache::{CachedRegion, RegionCache};
use atoll_codec::encode_bytes;

#[derive(Clone, Debug)]
pub struct Config {
    pub pd_endpoints: Vec<String>,
    /// Per-RPC timeout.
    pub timeout: Duration,
    /// Attempts per operation (region errors, unreachable stores) before giving up.
    pub max_attempts: usize,
    /// Ceiling of the exponential backoff between attempts.
    pub max_backoff: Duration,
}

impl Config {
    pub fn new(pd_endpoints: Vec<String>) -> Self {
        Config { pd_endpoints, timeout: Duration::from_secs(10), max_attempts: 40, max_backoff: Duration::from_millis(1000) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pd: {0}")]
    Pd(#[from] atoll_pd_client::PdError),
    /// The server rejected the request itself (bad input); not retried.
    #[error("server rejected the request: {0}")]
    Server(String),
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Exhausted { attempts: usize, last: String },
    #[error("rpc: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("invalid argument: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What one RPC attempt produced.
enum Attempt<T> {
    Done(T),
    Region(errorpb::Error),
}

pub struct RawClient {
    pd: Arc<PdClient>,
    cache: RegionCache,
    conns: RwLock<HashMap<String, TikvClient<Channel>>>,
    cfg: Config,
}

fn ctx(r: &CachedRegion, peer: &atoll_proto::metapb::Peer) -> Context {
    Context { region_id: r.region.id, region_epoch: r.region.region_epoch.clone(), peer: Some(peer.clone()), ..Default::default() }
}

fn region_end_raw(r: &CachedRegion) -> Vec<u8> {
    atoll_codec::decode_bound(&r.region.end_key).unwrap_or_default()
}

/// Turns `(region_error, error)` into an attempt result.
fn outcome<T>(region_error: Option<errorpb::Error>, error: String, value: T) -> Result<Attempt<T>> {
    if let Some(e) = region_error {
        return Ok(Attempt::Region(e));
    }
    if !error.is_empty() {
        return Err(Error::Server(error));
    }
    Ok(Attempt::Done(value))
}

impl RawClient {
    pub async fn connect(cfg: Config) -> Result<RawClient> {
        let pd = PdClient::connect(&cfg.pd_endpoints, cfg.timeout).await?;
        Ok(RawClient { pd: Arc::new(pd), cache: RegionCache::default(), conns: RwLock::new(HashMap::new()), cfg })
    }

    pub fn pd(&self) -> &PdClient {
        &self.pd
    }

    async fn locate(&self, key: &[u8]) -> Result<CachedRegion> {
        let enc = encode_bytes(key);
        if let Some(r) = self.cache.lookup(&enc) {
            return Ok(r);
        }
        let info = self.pd.get_region(&enc).await?.ok_or_else(|| Error::Exhausted {
            attempts: 1,
            last: format!("PD knows no region for key {key:?} yet"),
        })?;
        let r = CachedRegion { region: info.region, leader: info.leader.filter(|l| l.id != 0) };
        self.cache.insert(r.clone());
        Ok(r)
    }

    async fn client_for(&self, store_id: u64) -> Result<TikvClient<Channel>> {
        let addr = match self.cache.store_addr(store_id) {
            Some(a) => a,
            None => {
                let s = self.pd.get_store(store_id).await?;
                self.cache.put_store(store_id, s.address.clone());
                s.address
            }
        };
        if let Some(c) = self.conns.read().get(&addr) {
            return Ok(c.clone());
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Invalid(e.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(self.cfg.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let c = TikvClient::new(ch).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20);
        self.conns.write().insert(addr, c.clone());
        Ok(c)
    }

    fn on_region_error(&self, r: &CachedRegion, e: &errorpb::Error) {
        if let Some(nl) = &e.not_leader {
            match &nl.leader {
                Some(l) => self.cache.update_leader(r.region.id, l.clone()),
                None => self.cache.rotate_leader(r.region.id),
            }
            return;
        }
        if let Some(en) = &e.epoch_not_match {
            self.cache.invalidate(r.region.id);
            for cur in &en.current_regions {
                self.cache.insert(CachedRegion { region: cur.clone(), leader: None });
            }
            return;
        }
        if e.store_not_match.is_some() {
            if let Some(p) = r.target() {
                self.cache.forget_store(p.store_id);
            }
        }
        self.cache.invalidate(r.region.id);
    }

    async fn backoff(&self, attempt: usize) {
        let ms = (10u64 << attempt.min(7)).min(self.cfg.max_backoff.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Runs `f` against the region holding `key`, retrying on region errors.
    async fn on_region<T, F, Fut>(&self, key: &[u8], f: F) -> Result<(CachedRegion, T)>
    where
        F: Fn(TikvClient<Channel>, CachedRegion, Context) -> Fut,
        Fut: Future<Output = Result<Attempt<T>>>,
    {
        let mut last = String::new();
        for attempt in 0..self.cfg.max_attempts {
            let r = match self.locate(key).await {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    self.backoff(attempt).await;
                    continue;
                }
            };
            let Some(peer) = r.target() else {
                self.cache.invalidate(r.region.id);
                continue;
            };
            let client = self.client_for(peer.store_id).await?;
            match f(client, r.clone(), ctx(&r, &peer)).await {
                Ok(Attempt::Done(v)) => return Ok((r, v)),
                Ok(Attempt::Region(e)) => {
                    last = e.message.clone();
                    // A hint to another store: go there now. A hint to the
                    // store we asked means it cannot lead right now (e.g. a
                    // leader transfer in progress): back off.
                    let immediate = e
                        .not_leader
                        .as_ref()
                        .and_then(|n| n.leader.as_ref())
                        .is_some_and(|l| l.store_id != peer.store_id);
                    self.on_region_error(&r, &e);
                    if !immediate {
                        self.backoff(attempt).await;
                    }
                }
                Err(Error::Rpc(status)) => {
                    // The store may be down (or back at a new address): re-resolve
                    // it next time and try another peer now.
                    last = status.to_string();
                    self.cache.forget_store(peer.store_id);
                    self.cache.rotate_leader(r.region.id);
                    self.backoff(attempt).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Exhausted { attempts: self.cfg.max_attempts, last })
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let (_, v) = self
            .on_region(key, |mut c, _, ctx| async move {
                let r = c.raw_get(RawGetRequest { context: Some(ctx), key: key.to_vec(), cf: String::new() }).await?.into_inner();
                outcome(r.region_error, r.error, (!r.not_found).then_some(r.value))
            })
            .await?;
        Ok(v)
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_with_ttl(key, value, 0).await
    }

    /// `ttl_secs == 0` means no expiry.
    pub async fn put_with_ttl(&self, key: &[u8], value: &[u8], ttl_secs: u64) -> Result<()> {
        self.on_region(key, |mut c, _, ctx| async move {
            let req = RawPutRequest { context: Some(ctx), key: key.to_vec(), value: value.to_vec(), ttl: ttl_secs, ..Default::default() };
            let r = c.raw_put(req).await?.into_inner();
            outcome(r.region_error, r.error, ())
        })
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        self.on_region(key, |mut c, _, ctx| async move {
            let req = RawDeleteRequest { context: Some(ctx), key: key.to_vec(), ..Default::default() };
            let r = c.raw_delete(req).await?.into_inner();
            outcome(r.region_error, r.error, ())
        })
        .await
        .map(|_| ())
    }

    /// Seconds left to live (`Some(0)` = no TTL), or `None` if absent.
    pub async fn get_key_ttl(&self, key: &[u8]) -> Result<Option<u64>> {
        let (_, v) = self
            .on_region(key, |mut c, _, ctx| async move {
                let req = RawGetKeyTtlRequest { context: Some(ctx), key: key.to_vec(), cf: String::new() };
                let r = c.raw_get_key_ttl(req).await?.into_inner();
                outcome(r.region_error, r.error, (!r.not_found).then_some(r.ttl))
            })
            .await?;
        Ok(v)
    }

    /// Sets `key` to `new` if its current value is `previous` (`None` = absent).
    /// Returns whether it swapped, and the value found.
    pub async fn compare_and_swap(&self, key: &[u8], previous: Option<&[u8]>, new: &[u8]) -> Result<(bool, Option<Vec<u8>>)> {
        let (_, v) = self
            .on_region(key, |mut c, _, ctx| async move {
                let req = RawCasRequest {
                    context: Some(ctx),
                    key: key.to_vec(),
                    value: new.to_vec(),
                    previous_not_exist: previous.is_none(),
                    previous_value: previous.map(|p| p.to_vec()).unwrap_or_default(),
                    ..Default::default()
                };
                let r = c.raw_compare_and_swap(req).await?.into_inner();
                let prev = (!r.previous_not_exist).then_some(r.previous_value);
                outcome(r.region_error, r.error, (r.succeed, prev))
            })
            .await?;
        Ok(v)
    }

    /// Groups keys by region (in key order).
    async fn group<K: Clone>(&self, mut items: Vec<(Vec<u8>, K)>) -> Result<Vec<(Vec<u8>, Vec<(Vec<u8>, K)>)>> {
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let mut groups: Vec<(Vec<u8>, Vec<(Vec<u8>, K)>)> = vec![];
        let mut current: Option<CachedRegion> = None;
        for item in items {
            let enc = encode_bytes(&item.0);
            if !current.as_ref().is_some_and(|r| r.contains_encoded(&enc)) {
                current = Some(self.locate(&item.0).await?);
                groups.push((item.0.clone(), vec![]));
            }
            groups.last_mut().expect("group pushed").1.push(item);
        }
        Ok(groups)
    }

    pub async fn batch_put(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        for (first, group) in self.group(pairs).await? {
            self.batch_put_group(&first, group).await?;
        }
        Ok(())
    }

    /// Puts one region's pairs; if the region changed, re-splits them.
    fn batch_put_group<'a>(
        &'a self,
        first: &'a [u8],
        group: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let res = self
                .on_region(first, |mut c, r, ctx| {
                    let group = group.clone();
                    async move {
                        if !group.iter().all(|(k, _)| r.contains_encoded(&encode_bytes(k))) {
                            return Ok(Attempt::Done(false));
                        }
                        let pairs = group.into_iter().map(|(key, value)| KvPair { key, value, error: None }).collect();
                        let req = RawBatchPutRequest { context: Some(ctx), pairs, ..Default::default() };
                        let r = c.raw_batch_put(req).await?.into_inner();
                        outcome(r.region_error, r.error, true)
                    }
                })
                .await?;
            if !res.1 {
                // The region shrank under us: regroup these pairs.
                for (f, g) in self.group(group).await? {
                    self.batch_put_group(&f, g).await?;
                }
            }
            Ok(())
        })
    }

    pub async fn batch_get(&self, keys: Vec<Vec<u8>>) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        let mut pending: Vec<(Vec<u8>, ())> = keys.into_iter().map(|k| (k, ())).collect();
        for _ in 0..self.cfg.max_attempts {
            if pending.is_empty() {
                return Ok(out);
            }
            let mut retry = vec![];
            for (first, group) in self.group(std::mem::take(&mut pending)).await? {
                let keys: Vec<Vec<u8>> = group.iter().map(|(k, _)| k.clone()).collect();
                let (_, got) = self
                    .on_region(&first, |mut c, r, ctx| {
                        let keys = keys.clone();
                        async move {
                            if !keys.iter().all(|k| r.contains_encoded(&encode_bytes(k))) {
                                return Ok(Attempt::Done(None));
                            }
                            let req = RawBatchGetRequest { context: Some(ctx), keys, cf: String::new() };
                            let r = c.raw_batch_get(req).await?.into_inner();
                            outcome(r.region_error, String::new(), Some(r.pairs))
                        }
                    })
                    .await?;
                match got {
                    Some(pairs) => out.extend(pairs.into_iter().map(|p| (p.key, p.value))),
                    None => retry.extend(group),
                }
            }
            pending = retry;
        }
        Err(Error::Exhausted { attempts: self.cfg.max_attempts, last: "regions kept changing".into() })
    }

    pub async fn batch_delete(&self, keys: Vec<Vec<u8>>) -> Result<()> {
        for k in keys {
            self.delete(&k).await?;
        }
        Ok(())
    }

    /// Pairs in `[start, end)` (empty end = unbounded), at most `limit`.
    pub async fn scan(&self, start: &[u8], end: &[u8], limit: u32) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        let mut cur = start.to_vec();
        while (out.len() as u32) < limit {
            let want = limit - out.len() as u32;
            let (r, kvs) = self
                .on_region(&cur, |mut c, _, ctx| {
                    let cur = cur.clone();
                    async move {
                        let req = RawScanRequest {
                            context: Some(ctx),
                            start_key: cur,
                            end_key: end.to_vec(),
                            limit: want,
                            ..Default::default()
                        };
                        let r = c.raw_scan(req).await?.into_inner();
                        outcome(r.region_error, String::new(), r.kvs)
                    }
                })
                .await?;
            out.extend(kvs.into_iter().map(|p| (p.key, p.value)));
            let region_end = region_end_raw(&r);
            if r.region.end_key.is_empty() || (!end.is_empty() && region_end.as_slice() >= end) {
                break;
            }
            cur = region_end;
        }
        Ok(out)
    }

    /// Deletes every key in `[start, end)` (empty end = unbounded).
    pub async fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        if !end.is_empty() && start >= end {
            return Err(Error::Invalid("delete_range start must be below end".into()));
        }
        let mut cur = start.to_vec();
        loop {
            let (r, ()) = self
                .on_region(&cur, |mut c, r, ctx| {
                    let cur = cur.clone();
                    async move {
                        let region_end = region_end_raw(&r);
                        let hi = if r.region.end_key.is_empty() || (!end.is_empty() && end < region_end.as_slice()) {
                            end.to_vec()
                        } else {
                            region_end
                        };
                        let req = RawDeleteRangeRequest { context: Some(ctx), start_key: cur, end_key: hi, cf: String::new() };
                        let r = c.raw_delete_range(req).await?.into_inner();
                        outcome(r.region_error, r.error, ())
                    }
                })
                .await?;
            let region_end = region_end_raw(&r);
            if r.region.end_key.is_empty() || (!end.is_empty() && region_end.as_slice() >= end) {
                return Ok(());
            }
            cur = region_end;
        }
    }
}
