//! A gRPC client for PD (`pdpb`), used by stores and by Atoll's own client.
//!
//! Finds the PD leader through `GetMembers`, stamps every request with the
//! cluster id, turns response-header errors into [`PdError`], and reconnects
//! with backoff when the connection breaks. Depends only on `proto` and
//! `codec` (for the cluster's API version) and `util` (TLS).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use atoll_codec::api::ApiVersion;
use atoll_proto::keyspacepb;
use atoll_proto::metapb;
use atoll_proto::pdpb::{self, ErrorType};
use parking_lot::RwLock;
use tokio::sync::mpsc;
use tonic::transport::ClientTlsConfig;

mod leader;
pub use leader::LEADER_SEARCH_TIMEOUT;
use leader::{connect_leader, url, Conn};

lazy_static::lazy_static! {
    /// Searches for the PD leader after a failure, by outcome.
    static ref PD_CLIENT_RECONNECTS: prometheus::IntCounterVec = prometheus::register_int_counter_vec!(
        "atoll_pd_client_reconnects_total",
        "Searches for the PD leader after a failed request or stream, by outcome",
        &["result"]
    )
    .unwrap();
}

#[derive(Debug, thiserror::Error)]
pub enum PdError {
    #[error("cannot reach PD at {endpoints:?}: {msg}")]
    Unreachable { endpoints: Vec<String>, msg: String },
    #[error("PD error {kind:?}: {msg}")]
    Header { kind: ErrorType, msg: String },
    #[error("PD rpc failed: {0}")]
    Rpc(#[from] tonic::Status),
    #[error("PD returned an invalid response: {0}")]
    Invalid(String),
}

impl PdError {
    /// Worth retrying after a pause.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PdError::Unreachable { .. } | PdError::Rpc(_))
    }
}

pub type Result<T> = std::result::Result<T, PdError>;

trait HasHeader {
    fn header(&self) -> Option<&pdpb::ResponseHeader>;
}

macro_rules! has_header {
    ($($t:ty),*) => {$(
        impl HasHeader for $t {
            fn header(&self) -> Option<&pdpb::ResponseHeader> { self.header.as_ref() }
        }
    )*};
}
has_header!(
    pdpb::GetMembersResponse,
    pdpb::AllocIdResponse,
    pdpb::IsBootstrappedResponse,
    pdpb::BootstrapResponse,
    pdpb::PutStoreResponse,
    pdpb::GetStoreResponse,
    pdpb::GetAllStoresResponse,
    pdpb::GetRegionResponse,
    pdpb::ScanRegionsResponse,
    pdpb::AskBatchSplitResponse,
    pdpb::ReportBatchSplitResponse,
    pdpb::StoreHeartbeatResponse,
    pdpb::GetClusterConfigResponse,
    keyspacepb::LoadKeyspaceResponse,
    pdpb::TsoResponse,
    pdpb::GetGcSafePointResponse,
    pdpb::UpdateGcSafePointResponse
);

fn check<T: HasHeader>(resp: T) -> Result<T> {
    if let Some(e) = resp.header().and_then(|h| h.error.as_ref()) {
        let kind = ErrorType::try_from(e.r#type).unwrap_or(ErrorType::Unknown);
        if kind != ErrorType::Ok {
            return Err(PdError::Header { kind, msg: e.message.clone() });
        }
    }
    Ok(resp)
}

/// A region as PD knows it, with its leader if reported.
#[derive(Clone, Debug)]
pub struct RegionInfo {
    pub region: metapb::Region,
    pub leader: Option<metapb::Peer>,
}

/// An open region heartbeat stream (see [`PdClient::region_heartbeat`]).
pub struct HeartbeatChannel {
    pub requests: mpsc::Sender<pdpb::RegionHeartbeatRequest>,
    pub responses: tonic::Streaming<pdpb::RegionHeartbeatResponse>,
    /// [`PdClient::leader_changes`] when the stream's leader was connected.
    pub leader_changes: u64,
}

pub struct PdClient {
    endpoints: Vec<String>,
    /// Client TLS (CA + own certificate) when the cluster runs mutual TLS.
    tls: Option<ClientTlsConfig>,
    conn: RwLock<Conn>,
    /// Bumped by every reconnect (see [`PdClient::reconnect`]).
    generation: AtomicU64,
    /// Bumped by every reconnect that reached a different leader than the
    /// connection had (see [`PdClient::leader_changes`]).
    leader_changes: AtomicU64,
    /// One leader search at a time; holds the failure of the last search
    /// that found none, for the callers that waited on it.
    reconnecting: tokio::sync::Mutex<Option<String>>,
    /// Bumped by every search that found no leader.
    failed_searches: AtomicU64,
}

/// Attempts per call before giving up (with backoff between them).
const CALL_ATTEMPTS_MAX: usize = 10;

macro_rules! call {
    ($self:ident, $client:ident, $method:ident, $req:expr) => {{
        let mut attempt = 0;
        loop {
            let (mut c, header, seen) = {
                let conn = $self.conn.read();
                (conn.$client.clone(), $self.header_of(&conn), $self.generation())
            };
            let mut req = $req;
            req.header = header;
            match c.$method(req).await {
                Ok(r) => break check(r.into_inner()),
                Err(status) => {
                    attempt += 1;
                    if attempt >= CALL_ATTEMPTS_MAX || !retryable(&status) {
                        tracing::debug!(
                            "PD {} failed after {attempt} attempts: {status}",
                            stringify!($method)
                        );
                        break Err(PdError::Rpc(status));
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                    let _ = $self.reconnect(seen).await;
                }
            }
        }
    }};
}

fn retryable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
    )
}

fn backoff(attempt: usize) -> Duration {
    Duration::from_millis((50u64 << attempt.min(5)).min(2000))
}

// `call!` sets the header of requests built with `Default::default()`.
#[allow(clippy::field_reassign_with_default)]
impl PdClient {
    /// Connects to the first reachable endpoint, retrying for up to `wait`.
    pub async fn connect(endpoints: &[String], wait: Duration) -> Result<PdClient> {
        Self::connect_with_tls(endpoints, wait, None).await
    }

    /// [`PdClient::connect`] over mutual TLS when `tls` is given.
    pub async fn connect_with_tls(
        endpoints: &[String],
        wait: Duration,
        tls: Option<ClientTlsConfig>,
    ) -> Result<PdClient> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut attempt = 0;
        loop {
            match connect_leader(endpoints, tls.as_ref()).await {
                Ok(conn) => {
                    return Ok(PdClient {
                        endpoints: endpoints.to_vec(),
                        tls,
                        conn: RwLock::new(conn),
                        generation: AtomicU64::new(0),
                        leader_changes: AtomicU64::new(0),
                        reconnecting: tokio::sync::Mutex::new(None),
                        failed_searches: AtomicU64::new(0),
                    })
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    attempt += 1;
                    if attempt == 1 || attempt % 20 == 0 {
                        tracing::info!("no PD leader reached yet (attempt {attempt}): {e}");
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    /// The client TLS settings this client connects with, if any.
    pub fn tls(&self) -> Option<&ClientTlsConfig> {
        self.tls.as_ref()
    }

    /// The connection's generation: it changes with every reconnect (a
    /// failed request that saw generation `n` searches only if it is still
    /// `n`).
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// How many times a reconnect reached another leader (its URL differs
    /// from the one before): a stream opened when this was `n` is at a
    /// leader this client has left once it differs. A search that found
    /// the same leader again leaves it alone, so transient errors of other
    /// callers do not move streams.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes.load(Ordering::Acquire)
    }

    /// Finds the leader again, unless another caller did since `seen` (the
    /// generation its failed request used): one search at a time, and a
    /// burst of failed requests costs one search, not one each. A caller
    /// that waited on a search that found no leader gets its failure.
    async fn reconnect(&self, seen: u64) -> Result<()> {
        let failed_before = self.failed_searches.load(Ordering::Acquire);
        let mut last_failure = self.reconnecting.lock().await;
        if self.generation() != seen {
            return Ok(());
        }
        if self.failed_searches.load(Ordering::Acquire) != failed_before {
            let msg = last_failure.clone().unwrap_or_default();
            return Err(PdError::Unreachable { endpoints: self.endpoints.clone(), msg });
        }
        let mut candidates = self.endpoints.clone();
        for u in self.conn.read().member_urls.iter() {
            if !candidates.iter().any(|c| url(c, self.tls.as_ref()) == *u) {
                candidates.push(u.clone());
            }
        }
        match connect_leader(&candidates, self.tls.as_ref()).await {
            Ok(c) => {
                PD_CLIENT_RECONNECTS.with_label_values(&["leader"]).inc();
                let now = c.leader_url.clone();
                let was = {
                    // Counted under the lock, so a reader of the connection
                    // sees the count that goes with it.
                    let mut conn = self.conn.write();
                    if conn.leader_url != now {
                        self.leader_changes.fetch_add(1, Ordering::AcqRel);
                    }
                    std::mem::replace(&mut *conn, c).leader_url
                };
                if was != now {
                    tracing::info!(from = %was, to = %now, "PD leader changed");
                }
                self.generation.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                PD_CLIENT_RECONNECTS.with_label_values(&["no_leader"]).inc();
                *last_failure = Some(e.to_string());
                self.failed_searches.fetch_add(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    fn header_of(&self, conn: &Conn) -> Option<pdpb::RequestHeader> {
        Some(pdpb::RequestHeader { cluster_id: conn.cluster_id, sender_id: 0 })
    }

    fn header(&self) -> Option<pdpb::RequestHeader> {
        self.header_of(&self.conn.read())
    }

    pub fn cluster_id(&self) -> u64 {
        self.conn.read().cluster_id
    }

    pub fn leader_url(&self) -> String {
        self.conn.read().leader_url.clone()
    }

    pub async fn get_members(&self) -> Result<pdpb::GetMembersResponse> {
        call!(self, pd, get_members, pdpb::GetMembersRequest::default())
    }

    pub async fn alloc_id(&self) -> Result<u64> {
        Ok(call!(self, pd, alloc_id, pdpb::AllocIdRequest::default())?.id)
    }

    pub async fn is_bootstrapped(&self) -> Result<bool> {
        Ok(call!(self, pd, is_bootstrapped, pdpb::IsBootstrappedRequest::default())?.bootstrapped)
    }

    /// Returns `Ok(false)` if another store bootstrapped the cluster first.
    /// `api_version` becomes the cluster's for good.
    pub async fn bootstrap(
        &self,
        store: metapb::Store,
        region: metapb::Region,
        api_version: ApiVersion,
    ) -> Result<bool> {
        let req = pdpb::BootstrapRequest {
            header: None,
            store: Some(store),
            region: Some(region),
            api_version: u32::from(api_version.config_value()),
        };
        match call!(self, pd, bootstrap, req.clone()) {
            Ok(_) => Ok(true),
            Err(PdError::Header { kind: ErrorType::AlreadyBootstrapped, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn put_store(&self, store: metapb::Store) -> Result<()> {
        call!(
            self,
            pd,
            put_store,
            pdpb::PutStoreRequest { header: None, store: Some(store.clone()) }
        )?;
        Ok(())
    }

    pub async fn get_store(&self, id: u64) -> Result<metapb::Store> {
        call!(self, pd, get_store, pdpb::GetStoreRequest { header: None, store_id: id })?
            .store
            .ok_or_else(|| PdError::Invalid(format!("store {id} missing from response")))
    }

    pub async fn get_all_stores(&self) -> Result<Vec<metapb::Store>> {
        let req = pdpb::GetAllStoresRequest { header: None, exclude_tombstone_stores: true };
        Ok(call!(self, pd, get_all_stores, req.clone())?.stores)
    }

    pub async fn get_cluster_config(&self) -> Result<metapb::Cluster> {
        call!(self, pd, get_cluster_config, pdpb::GetClusterConfigRequest::default())?
            .cluster
            .ok_or_else(|| PdError::Invalid("cluster config missing".into()))
    }

    /// The cluster's GC safe point (0 until a client sets one): versions
    /// older than it that no read at or after it can see may be removed.
    pub async fn get_gc_safe_point(&self) -> Result<u64> {
        let req = pdpb::GetGcSafePointRequest { header: None };
        Ok(call!(self, pd, get_gc_safe_point, req.clone())?.safe_point)
    }

    /// Moves the GC safe point up to `safe_point` (never down); returns the
    /// safe point in force. Locks below it must be resolved first, as
    /// TiKV's clients do before calling it.
    pub async fn update_gc_safe_point(&self, safe_point: u64) -> Result<u64> {
        let req = pdpb::UpdateGcSafePointRequest { header: None, safe_point };
        Ok(call!(self, pd, update_gc_safe_point, req.clone())?.new_safe_point)
    }

    /// The cluster's API version; `None` until it is bootstrapped.
    pub async fn api_version(&self) -> Result<Option<ApiVersion>> {
        let v = call!(self, pd, get_cluster_config, pdpb::GetClusterConfigRequest::default())?
            .api_version;
        match v {
            0 => Ok(None),
            v => u8::try_from(v)
                .ok()
                .and_then(ApiVersion::from_config)
                .map(Some)
                .ok_or_else(|| PdError::Invalid(format!("unknown cluster api version {v}"))),
        }
    }

    /// The region containing `key` (in the cluster's region key space).
    pub async fn get_region(&self, key: &[u8]) -> Result<Option<RegionInfo>> {
        let req =
            pdpb::GetRegionRequest { header: None, region_key: key.to_vec(), need_buckets: false };
        let r = call!(self, pd, get_region, req.clone())?;
        Ok(r.region.map(|region| RegionInfo { region, leader: r.leader }))
    }

    pub async fn get_region_by_id(&self, id: u64) -> Result<Option<RegionInfo>> {
        let req = pdpb::GetRegionByIdRequest { header: None, region_id: id, need_buckets: false };
        let r = call!(self, pd, get_region_by_id, req.clone())?;
        Ok(r.region.map(|region| RegionInfo { region, leader: r.leader }))
    }

    pub async fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: i32,
    ) -> Result<Vec<RegionInfo>> {
        let req = pdpb::ScanRegionsRequest {
            header: None,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            limit,
        };
        let r = call!(self, pd, scan_regions, req.clone())?;
        Ok(r.regions
            .into_iter()
            .filter_map(|x| {
                x.region.map(|region| RegionInfo { region, leader: x.leader.filter(|l| l.id != 0) })
            })
            .collect())
    }

    pub async fn ask_batch_split(
        &self,
        region: &metapb::Region,
        count: u32,
    ) -> Result<Vec<pdpb::SplitId>> {
        let req = pdpb::AskBatchSplitRequest {
            header: None,
            region: Some(region.clone()),
            split_count: count,
        };
        let r = call!(self, pd, ask_batch_split, req.clone())?;
        if r.ids.len() != count as usize {
            return Err(PdError::Invalid(format!("asked {count} split ids, got {}", r.ids.len())));
        }
        Ok(r.ids)
    }

    pub async fn report_batch_split(&self, regions: Vec<metapb::Region>) -> Result<()> {
        call!(
            self,
            pd,
            report_batch_split,
            pdpb::ReportBatchSplitRequest { header: None, regions: regions.clone() }
        )?;
        Ok(())
    }

    pub async fn store_heartbeat(&self, stats: pdpb::StoreStats) -> Result<()> {
        call!(
            self,
            pd,
            store_heartbeat,
            pdpb::StoreHeartbeatRequest { header: None, stats: Some(stats.clone()) }
        )?;
        Ok(())
    }

    pub async fn load_keyspace(&self, name: &str) -> Result<keyspacepb::KeyspaceMeta> {
        let req = keyspacepb::LoadKeyspaceRequest { header: None, name: name.to_owned() };
        call!(self, keyspace, load_keyspace, req.clone())?
            .keyspace
            .ok_or_else(|| PdError::Invalid("keyspace missing".into()))
    }

    /// One timestamp from the TSO stream (`physical << 18 | logical`);
    /// through a PD leader change it finds the new leader and asks again.
    pub async fn get_ts(&self) -> Result<u64> {
        let mut attempt = 0;
        loop {
            let seen = self.generation();
            match self.get_ts_once().await {
                Err(e) if e.is_retryable() && attempt + 1 < CALL_ATTEMPTS_MAX => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                    let _ = self.reconnect(seen).await;
                }
                r => return r,
            }
        }
    }

    async fn get_ts_once(&self) -> Result<u64> {
        let mut c = self.conn.read().pd.clone();
        let req = pdpb::TsoRequest { header: self.header(), count: 1, dc_location: String::new() };
        let mut stream = c.tso(tokio_stream::once(req)).await?.into_inner();
        let resp = stream.message().await?.ok_or_else(|| {
            PdError::Rpc(tonic::Status::unavailable("tso stream closed without an answer"))
        })?;
        let ts = check(resp)?
            .timestamp
            .ok_or_else(|| PdError::Invalid("tso without timestamp".into()))?;
        Ok(((ts.physical as u64) << 18) | ts.logical as u64)
    }

    /// Opens the region heartbeat stream at the leader this client is
    /// connected to: requests go into the returned sender (bounded),
    /// operators come back on the stream, with [`PdClient::leader_changes`]
    /// as it was for that connection. Waits at most `timeout` for PD to
    /// accept it. On failure the caller decides when to look for the
    /// leader again ([`PdClient::refresh_leader`]).
    pub async fn region_heartbeat(
        &self,
        queue: usize,
        timeout: Duration,
    ) -> Result<HeartbeatChannel> {
        let (tx, rx) = mpsc::channel(queue);
        // Read under the connection's lock, as a reconnect counts.
        let (mut c, leader_changes) = {
            let conn = self.conn.read();
            (conn.pd.clone(), self.leader_changes())
        };
        let open = c.region_heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx));
        match tokio::time::timeout(timeout, open).await {
            Ok(Ok(resp)) => {
                Ok(HeartbeatChannel { requests: tx, responses: resp.into_inner(), leader_changes })
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(PdError::Rpc(tonic::Status::deadline_exceeded(format!(
                "PD did not accept the region heartbeat stream within {timeout:?}"
            )))),
        }
    }

    /// Finds the PD leader again (after a stream broke or was refused).
    pub async fn refresh_leader(&self) -> Result<()> {
        self.reconnect(self.generation()).await
    }

    /// The request header (cluster id) callers put on streamed requests.
    pub fn request_header(&self) -> Option<pdpb::RequestHeader> {
        self.header()
    }
}
