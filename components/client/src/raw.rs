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
use tonic::transport::Channel;

use crate::cache::{CachedRegion, RegionCache};
use crate::keys::KeyMap;
use atoll_codec::api::ApiVersion;

#[derive(Clone, Debug)]
pub struct Config {
    pub pd_endpoints: Vec<String>,
    /// Per-RPC timeout.
    pub timeout: Duration,
    /// Deadline of each attempt, meant to be well below the cluster's
    /// election timeout: a leader that is dead, paused or cut off is given
    /// up on this soon. A read then asks another peer (which names the new
    /// leader once there is one); a write's outcome is then unknown,
    /// `Error::Undetermined`, since it may have reached the store. Keep it
    /// above the time the largest request takes on a healthy store.
    pub attempt_timeout: Duration,
    /// Attempts per operation (region errors, unreachable stores) before giving up.
    pub max_attempts: usize,
    /// Ceiling of the exponential backoff between attempts.
    pub max_backoff: Duration,
    /// The API version to speak; `None` asks PD for the cluster's (waiting
    /// up to `timeout` for the cluster to be bootstrapped). In API V2 the
    /// client works in the `DEFAULT` keyspace.
    pub api_version: Option<ApiVersion>,
    /// Mutual TLS to PD and stores (default: plaintext).
    pub security: atoll_util::tls::SecurityConfig,
}

impl Config {
    pub fn new(pd_endpoints: Vec<String>) -> Self {
        Config {
            pd_endpoints,
            timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            max_attempts: 40,
            max_backoff: Duration::from_millis(1000),
            api_version: None,
            security: atoll_util::tls::SecurityConfig::default(),
        }
    }

    /// Mutual TLS with the cluster's CA and this client's certificate.
    pub fn with_security(mut self, security: atoll_util::tls::SecurityConfig) -> Self {
        self.security = security;
        self
    }

    pub fn with_api_version(mut self, v: ApiVersion) -> Self {
        self.api_version = Some(v);
        self
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
    /// A request that is not safe to repeat was sent and its answer lost:
    /// it may or may not have been applied. Not retried.
    #[error("undetermined: {0}; the request may or may not have been applied")]
    Undetermined(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A transaction did not commit, and never will (a write conflict, its
    /// lock rolled back by a reader, a prewrite that failed).
    #[error("transaction aborted: {0}")]
    Aborted(String),
    /// A pessimistic lock whose wait would have closed a cycle of waits
    /// (TiKV's `Deadlock`): the lock request was refused, nothing of it
    /// taken, so the other transactions go on. Roll the transaction back
    /// (its earlier locks stay until then) and run it again.
    #[error("deadlock: {0}")]
    Deadlock(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A region's start key and the `(wire key, item)`s that fall in it.
pub(crate) type KeyGroup<K> = (Vec<u8>, Vec<(Vec<u8>, K)>);

/// What one RPC attempt produced.
pub(crate) enum Attempt<T> {
    Done(T),
    Region(Box<errorpb::Error>),
}

pub struct RawClient {
    pd: Arc<PdClient>,
    pub(crate) keys: KeyMap,
    cache: RegionCache,
    conns: RwLock<HashMap<String, TikvClient<Channel>>>,
    pub(crate) cfg: Config,
}

/// The keyspace Atoll's client works in on an API V2 cluster.
pub(crate) const KEYSPACE: &str = "DEFAULT";
/// Pause between asking PD whether the cluster is bootstrapped yet.
const BOOTSTRAP_POLL: Duration = Duration::from_millis(200);

/// A write whose RPC failed. Resending it is safe only if it certainly
/// never reached a store (no connection could be made): a put resent after
/// it applied can overwrite a newer write, a CAS compare against its own
/// write. Anything else is [`Error::Undetermined`], which is not retried.
pub(crate) fn write_rpc_error(what: &str, status: tonic::Status) -> Error {
    if never_sent(&status) {
        Error::Rpc(status)
    } else {
        Error::Undetermined(format!("{what}: {status}"))
    }
}

/// Did the RPC fail to connect (so nothing was sent)?
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(io.kind(), ConnectionRefused | HostUnreachable | NetworkUnreachable) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// What an operation does to the data, for its attempts' deadline.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Call {
    /// Changes nothing: safe to try again anywhere.
    Read,
    /// Changes data (named for errors): once sent, its outcome is only
    /// known from an answer.
    Write(&'static str),
}

/// Turns `(region_error, error)` into an attempt result.
pub(crate) fn outcome<T>(
    region_error: Option<errorpb::Error>,
    error: String,
    value: T,
) -> Result<Attempt<T>> {
    if let Some(e) = region_error {
        return Ok(Attempt::Region(Box::new(e)));
    }
    if error.starts_with(UNDETERMINED_PREFIX) {
        return Err(Error::Undetermined(error));
    }
    if !error.is_empty() {
        return Err(Error::Server(error));
    }
    Ok(Attempt::Done(value))
}

/// How a store's `error` begins when it cannot know a write's outcome
/// (raftstore's `Error::Undetermined`).
const UNDETERMINED_PREFIX: &str = "undetermined: ";

impl RawClient {
    pub async fn connect(cfg: Config) -> Result<RawClient> {
        let (pd, api) = Self::connect_pd(&cfg).await?;
        let keys = match api {
            ApiVersion::V1 => KeyMap::v1(),
            ApiVersion::V2 => KeyMap::v2(pd.load_keyspace(KEYSPACE).await?.id),
        };
        Ok(Self::with_keys(pd, keys, cfg))
    }

    /// A client over `keys` (the transactional client routes its own).
    pub(crate) fn with_keys(pd: PdClient, keys: KeyMap, cfg: Config) -> RawClient {
        RawClient {
            pd: Arc::new(pd),
            keys,
            cache: RegionCache::default(),
            conns: RwLock::new(HashMap::new()),
            cfg,
        }
    }

    /// PD, and the API version to speak (the configured one, or the
    /// cluster's once it is bootstrapped).
    pub(crate) async fn connect_pd(cfg: &Config) -> Result<(PdClient, ApiVersion)> {
        let tls = cfg.security.client_tls().map_err(|e| Error::Invalid(e.to_string()))?;
        let pd = PdClient::connect_with_tls(&cfg.pd_endpoints, cfg.timeout, tls).await?;
        let api = match cfg.api_version {
            Some(v) => v,
            None => Self::cluster_api_version(&pd, cfg.timeout).await?,
        };
        Ok((pd, api))
    }

    /// The cluster's API version, once it is bootstrapped.
    async fn cluster_api_version(pd: &PdClient, wait: Duration) -> Result<ApiVersion> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(v) = pd.api_version().await? {
                return Ok(v);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Exhausted {
                    attempts: 1,
                    last: format!("the cluster was not bootstrapped within {wait:?}, so its API version is unknown"),
                });
            }
            tokio::time::sleep(BOOTSTRAP_POLL).await;
        }
    }

    pub fn pd(&self) -> &PdClient {
        &self.pd
    }

    /// The API version this client speaks.
    pub fn api_version(&self) -> ApiVersion {
        self.keys.api_version()
    }

    /// The region key (PD routing, region bounds) of a user key.
    pub fn region_key(&self, key: &[u8]) -> Vec<u8> {
        self.keys.region_key(&self.keys.wire(key))
    }

    /// The key a raw request carries for a user key (in API V2 with the
    /// keyspace prefix).
    pub fn wire_key(&self, key: &[u8]) -> Vec<u8> {
        self.keys.wire(key)
    }

    pub(crate) fn ctx(&self, r: &CachedRegion, peer: &atoll_proto::metapb::Peer) -> Context {
        Context {
            region_id: r.region.id,
            region_epoch: r.region.region_epoch.clone(),
            peer: Some(peer.clone()),
            api_version: self.keys.api_version().to_proto(),
            ..Default::default()
        }
    }

    /// Does the region hold the wire key?
    pub(crate) fn holds(&self, r: &CachedRegion, wire: &[u8]) -> bool {
        r.contains(&self.keys.region_key(wire))
    }

    async fn locate(&self, key: &[u8]) -> Result<CachedRegion> {
        let region_key = self.keys.region_key(key);
        if let Some(r) = self.cache.lookup(&region_key) {
            return Ok(r);
        }
        let info = self.pd.get_region(&region_key).await?.ok_or_else(|| Error::Exhausted {
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
        let ch = atoll_util::tls::endpoint(&addr, self.pd.tls())
            .map_err(Error::Invalid)?
            .connect_timeout(Duration::from_secs(3))
            .timeout(self.cfg.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let c = TikvClient::new(ch)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
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

    pub(crate) async fn backoff(&self, attempt: usize) {
        let ms = (10u64 << attempt.min(7)).min(self.cfg.max_backoff.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// Runs `f` against the region holding the wire `key`, retrying on
    /// region errors. `call` says what an attempt past its deadline means:
    /// a read is tried again elsewhere, a write is undetermined.
    pub(crate) async fn on_region<T, F, Fut>(
        &self,
        key: &[u8],
        call: Call,
        f: F,
    ) -> Result<(CachedRegion, T)>
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
            let run = f(client, r.clone(), self.ctx(&r, &peer));
            let res = match tokio::time::timeout(self.cfg.attempt_timeout, run).await {
                Ok(res) => res,
                Err(_) => match call {
                    Call::Write(what) => {
                        // The next operation on the region asks another
                        // peer first.
                        self.cache.rotate_leader(r.region.id);
                        return Err(Error::Undetermined(format!(
                            "{what}: no answer from store {} within {:?}",
                            peer.store_id, self.cfg.attempt_timeout
                        )));
                    }
                    Call::Read => {
                        // Ask another peer; it knows the new leader once one
                        // is elected.
                        last = format!("store {} did not answer in time", peer.store_id);
                        self.cache.rotate_leader(r.region.id);
                        continue;
                    }
                },
            };
            match res {
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
        let key = &self.keys.wire(key);
        let (_, v) = self
            .on_region(key, Call::Read, |mut c, _, ctx| async move {
                let r = c
                    .raw_get(RawGetRequest {
                        context: Some(ctx),
                        key: key.to_vec(),
                        cf: String::new(),
                    })
                    .await?
                    .into_inner();
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
        let key = &self.keys.wire(key);
        self.on_region(key, Call::Write("put"), |mut c, _, ctx| async move {
            let req = RawPutRequest {
                context: Some(ctx),
                key: key.to_vec(),
                value: value.to_vec(),
                ttl: ttl_secs,
                ..Default::default()
            };
            let r = c.raw_put(req).await.map_err(|e| write_rpc_error("put", e))?.into_inner();
            outcome(r.region_error, r.error, ())
        })
        .await
        .map(|_| ())
    }

    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        let key = &self.keys.wire(key);
        self.on_region(key, Call::Write("delete"), |mut c, _, ctx| async move {
            let req =
                RawDeleteRequest { context: Some(ctx), key: key.to_vec(), ..Default::default() };
            let r = c.raw_delete(req).await.map_err(|e| write_rpc_error("delete", e))?.into_inner();
            outcome(r.region_error, r.error, ())
        })
        .await
        .map(|_| ())
    }

    /// Seconds left to live (`Some(0)` = no TTL), or `None` if absent.
    pub async fn get_key_ttl(&self, key: &[u8]) -> Result<Option<u64>> {
        let key = &self.keys.wire(key);
        let (_, v) = self
            .on_region(key, Call::Read, |mut c, _, ctx| async move {
                let req = RawGetKeyTtlRequest {
                    context: Some(ctx),
                    key: key.to_vec(),
                    cf: String::new(),
                };
                let r = c.raw_get_key_ttl(req).await?.into_inner();
                outcome(r.region_error, r.error, (!r.not_found).then_some(r.ttl))
            })
            .await?;
        Ok(v)
    }

    /// Sets `key` to `new` if its current value is `previous` (`None` = absent).
    /// Returns whether it swapped, and the value found.
    pub async fn compare_and_swap(
        &self,
        key: &[u8],
        previous: Option<&[u8]>,
        new: &[u8],
    ) -> Result<(bool, Option<Vec<u8>>)> {
        let key = &self.keys.wire(key);
        let (_, v) = self
            .on_region(key, Call::Write("compare_and_swap"), |mut c, _, ctx| async move {
                let req = RawCasRequest {
                    context: Some(ctx),
                    key: key.to_vec(),
                    value: new.to_vec(),
                    previous_not_exist: previous.is_none(),
                    previous_value: previous.map(|p| p.to_vec()).unwrap_or_default(),
                    ..Default::default()
                };
                let r = c
                    .raw_compare_and_swap(req)
                    .await
                    .map_err(|e| write_rpc_error("compare_and_swap", e))?
                    .into_inner();
                let prev = (!r.previous_not_exist).then_some(r.previous_value);
                outcome(r.region_error, r.error, (r.succeed, prev))
            })
            .await?;
        Ok(v)
    }

    /// Groups wire keys by region (in key order).
    pub(crate) async fn group<K: Clone>(
        &self,
        mut items: Vec<(Vec<u8>, K)>,
    ) -> Result<Vec<KeyGroup<K>>> {
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let mut groups: Vec<KeyGroup<K>> = vec![];
        let mut current: Option<CachedRegion> = None;
        for item in items {
            if !current.as_ref().is_some_and(|r| self.holds(r, &item.0)) {
                current = Some(self.locate(&item.0).await?);
                groups.push((item.0.clone(), vec![]));
            }
            groups.last_mut().expect("group pushed").1.push(item);
        }
        Ok(groups)
    }

    pub async fn batch_put(&self, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let pairs = pairs.into_iter().map(|(k, v)| (self.keys.wire(&k), v)).collect();
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
                .on_region(first, Call::Write("batch_put"), |mut c, r, ctx| {
                    let group = group.clone();
                    async move {
                        if !group.iter().all(|(k, _)| self.holds(&r, k)) {
                            return Ok(Attempt::Done(false));
                        }
                        let pairs = group
                            .into_iter()
                            .map(|(key, value)| KvPair { key, value, error: None })
                            .collect();
                        let req =
                            RawBatchPutRequest { context: Some(ctx), pairs, ..Default::default() };
                        let r = c
                            .raw_batch_put(req)
                            .await
                            .map_err(|e| write_rpc_error("batch_put", e))?
                            .into_inner();
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
        let mut pending: Vec<(Vec<u8>, ())> =
            keys.into_iter().map(|k| (self.keys.wire(&k), ())).collect();
        for _ in 0..self.cfg.max_attempts {
            if pending.is_empty() {
                return Ok(out);
            }
            let mut retry = vec![];
            for (first, group) in self.group(std::mem::take(&mut pending)).await? {
                let keys: Vec<Vec<u8>> = group.iter().map(|(k, _)| k.clone()).collect();
                let (_, got) = self
                    .on_region(&first, Call::Read, |mut c, r, ctx| {
                        let keys = keys.clone();
                        async move {
                            if !keys.iter().all(|k| self.holds(&r, k)) {
                                return Ok(Attempt::Done(None));
                            }
                            let req =
                                RawBatchGetRequest { context: Some(ctx), keys, cf: String::new() };
                            let r = c.raw_batch_get(req).await?.into_inner();
                            outcome(r.region_error, String::new(), Some(r.pairs))
                        }
                    })
                    .await?;
                match got {
                    Some(pairs) => {
                        out.extend(pairs.into_iter().map(|p| (self.keys.user(p.key), p.value)))
                    }
                    None => retry.extend(group),
                }
            }
            pending = retry;
        }
        Err(Error::Exhausted {
            attempts: self.cfg.max_attempts,
            last: "regions kept changing".into(),
        })
    }

    pub async fn batch_delete(&self, keys: Vec<Vec<u8>>) -> Result<()> {
        for k in keys {
            self.delete(&k).await?;
        }
        Ok(())
    }

    /// Pairs in `[start, end)` (empty end = unbounded), at most `limit`.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        let end = self.keys.wire_end(end);
        let mut cur = Some(self.keys.wire(start));
        while let Some(from) = cur.take().filter(|_| (out.len() as u32) < limit) {
            let want = limit - out.len() as u32;
            let (r, kvs) = self
                .on_region(&from, Call::Read, |mut c, _, ctx| {
                    let req = RawScanRequest {
                        context: Some(ctx),
                        start_key: from.clone(),
                        end_key: end.clone(),
                        limit: want,
                        ..Default::default()
                    };
                    async move {
                        let r = c.raw_scan(req).await?.into_inner();
                        outcome(r.region_error, String::new(), r.kvs)
                    }
                })
                .await?;
            out.extend(kvs.into_iter().map(|p| (self.keys.user(p.key), p.value)));
            cur = self.next_region_start(&r, &end);
        }
        Ok(out)
    }

    /// Where a range walk continues after region `r`: its end, unless the
    /// range (wire `end`, empty = unbounded) or the key space ends first.
    pub(crate) fn next_region_start(&self, r: &CachedRegion, end: &[u8]) -> Option<Vec<u8>> {
        self.keys
            .wire_of_region_end(&r.region.end_key)
            .filter(|e| end.is_empty() || e.as_slice() < end)
    }

    /// Runs `f` once per region over the wire range `[start, end)` (empty
    /// end = unbounded), each time with that region's part of the range.
    async fn each_region<T, F, Fut>(
        &self,
        start: &[u8],
        end: &[u8],
        call: Call,
        f: F,
    ) -> Result<Vec<T>>
    where
        F: Fn(TikvClient<Channel>, Context, Vec<u8>, Vec<u8>) -> Fut,
        Fut: Future<Output = Result<Attempt<T>>>,
    {
        let mut out = vec![];
        let mut cur = Some(start.to_vec());
        while let Some(from) = cur.take() {
            let (r, v) = self
                .on_region(&from, call, |c, r, ctx| {
                    let hi = match self.next_region_start(&r, end) {
                        Some(region_end) => region_end,
                        None => end.to_vec(),
                    };
                    f(c, ctx, from.clone(), hi)
                })
                .await?;
            out.push(v);
            cur = self.next_region_start(&r, end);
        }
        Ok(out)
    }

    /// Deletes every key in `[start, end)` (empty end = unbounded).
    pub async fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        if !end.is_empty() && start >= end {
            return Err(Error::Invalid("delete_range start must be below end".into()));
        }
        let (start, end) = (self.keys.wire(start), self.keys.wire_end(end));
        self.each_region(
            &start,
            &end,
            Call::Write("delete_range"),
            |mut c, ctx, lo, hi| async move {
                let req = RawDeleteRangeRequest {
                    context: Some(ctx),
                    start_key: lo,
                    end_key: hi,
                    cf: String::new(),
                };
                let r = c
                    .raw_delete_range(req)
                    .await
                    .map_err(|e| write_rpc_error("delete_range", e))?
                    .into_inner();
                outcome(r.region_error, r.error, ())
            },
        )
        .await
        .map(|_| ())
    }

    /// RawChecksum of `[start, end)` (empty end = unbounded), computed by the
    /// stores: (crc64-xor, pairs, bytes) over the keys as requests carry
    /// them (in API V2 with the keyspace prefix) and their values.
    pub async fn checksum(&self, start: &[u8], end: &[u8]) -> Result<(u64, u64, u64)> {
        let (start, end) = (self.keys.wire(start), self.keys.wire_end(end));
        let parts = self
            .each_region(&start, &end, Call::Read, |mut c, ctx, lo, hi| async move {
                let ranges = vec![KeyRange { start_key: lo, end_key: hi }];
                let req = RawChecksumRequest {
                    context: Some(ctx),
                    algorithm: ChecksumAlgorithm::Crc64Xor as i32,
                    ranges,
                };
                let r = c.raw_checksum(req).await?.into_inner();
                outcome(r.region_error, r.error, (r.checksum, r.total_kvs, r.total_bytes))
            })
            .await?;
        Ok(parts.into_iter().fold((0, 0, 0), |(c, k, b), (pc, pk, pb)| (c ^ pc, k + pk, b + pb)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_s_undetermined_error_stays_undetermined() {
        let e = outcome(
            None,
            "undetermined: no answer within 10s; the request may or may not have been applied"
                .into(),
            (),
        )
        .err()
        .expect("an error");
        assert!(matches!(e, Error::Undetermined(_)), "{e}");
        let e = outcome(None, "invalid request: empty key".into(), ()).err().expect("an error");
        assert!(matches!(e, Error::Server(_)), "{e}");
        assert!(matches!(outcome(None, String::new(), 7), Ok(Attempt::Done(7))));
    }
}
