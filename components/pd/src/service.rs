//! The gRPC services: `pdpb.PD` and `keyspacepb.Keyspace`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use atoll_codec::api::ApiVersion;
use atoll_proto::keyspacepb::{self, keyspace_server::Keyspace};
use atoll_proto::metapb;
use atoll_proto::pdpb::{self, pd_server::Pd, ErrorType};
use futures::{Stream, StreamExt};
use parking_lot::{Mutex, RwLock};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use std::collections::HashMap;

use crate::cluster::{Cluster, RegionInfo};
use crate::config::Config;
use crate::id::IdAllocator;
use crate::keyspace;
use crate::metrics::*;
use crate::schedule::{OpKind, OpStatus, OpStep, Operator, Operators};
use crate::storage::{ClusterMeta, Storage};
use crate::tso::Tso;

/// Responses queued per region-heartbeat stream before the stream is closed.
const HEARTBEAT_STREAM_QUEUE_MAX: usize = 1024;
/// Responses queued per TSO stream.
const TSO_STREAM_QUEUE_MAX: usize = 256;

/// Shared state behind every service.
pub struct PdCore {
    pub cfg: Config,
    /// Fixed when the cluster is created; kept outside `meta` so headers
    /// never need its lock.
    cluster_id: u64,
    pub member_id: u64,
    pub storage: Storage,
    pub meta: Mutex<ClusterMeta>,
    pub cluster: RwLock<Cluster>,
    pub ids: IdAllocator,
    pub tso: Tso,
    pub safe_point: Mutex<u64>,
    pub started_at: i64,
    pub started: Instant,
    pub operators: Mutex<Operators>,
    /// The region-heartbeat response stream of each store (for pushing
    /// operator commands as soon as they are made).
    hb_streams: Mutex<HashMap<u64, mpsc::Sender<Result<pdpb::RegionHeartbeatResponse, Status>>>>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl PdCore {
    pub fn open(cfg: Config) -> Result<Arc<Self>, crate::storage::StorageError> {
        let storage = Storage::open(&cfg.data_dir)?;
        let meta = match storage.load_meta()? {
            Some(m) => m,
            None => {
                // A fresh cluster id: time-based with random low bits, as PD does.
                let id = (atoll_util::time::unix_secs() << 32) | u64::from(rand::random::<u32>());
                let m = ClusterMeta {
                    cluster_id: id,
                    bootstrapped: false,
                    max_peer_count: cfg.max_replicas,
                    api_version: 0,
                };
                storage.save_meta(&m)?;
                m
            }
        };
        let mut cluster = Cluster::default();
        cluster.api_version = meta.api_version();
        for s in storage.load_stores()? {
            cluster.put_store(s);
        }
        for r in storage.load_regions()? {
            cluster.put_region(RegionInfo::new(r, None));
        }
        PD_REGIONS.set(cluster.region_count() as i64);
        PD_STORES.set(cluster.stores.len() as i64);
        let ids = IdAllocator::new(storage.clone(), cfg.id_alloc_step)?;
        let tso = Tso::new(storage.clone(), cfg.tso_save_interval.as_millis())?;
        let safe_point = storage.load_safe_point()?;
        Ok(Arc::new(PdCore {
            member_id: meta.cluster_id ^ 0x5eed,
            cluster_id: meta.cluster_id,
            cfg,
            storage,
            meta: Mutex::new(meta),
            cluster: RwLock::new(cluster),
            ids,
            tso,
            safe_point: Mutex::new(safe_point),
            started_at: atoll_util::time::unix_secs() as i64,
            started: Instant::now(),
            operators: Mutex::new(Operators::default()),
            hb_streams: Mutex::new(HashMap::new()),
        }))
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn header(&self) -> Option<pdpb::ResponseHeader> {
        Some(pdpb::ResponseHeader { cluster_id: self.cluster_id(), error: None })
    }

    pub fn error_header(
        &self,
        t: ErrorType,
        msg: impl Into<String>,
    ) -> Option<pdpb::ResponseHeader> {
        Some(pdpb::ResponseHeader {
            cluster_id: self.cluster_id(),
            error: Some(pdpb::Error { r#type: t as i32, message: msg.into() }),
        })
    }

    /// Rejects requests addressed to another cluster (0 = "any", as TiKV clients start).
    fn check_header(&self, h: Option<&pdpb::RequestHeader>) -> Result<(), Status> {
        let id = h.map(|h| h.cluster_id).unwrap_or(0);
        if id != 0 && id != self.cluster_id() {
            return Err(Status::failed_precondition(format!(
                "mismatched cluster id: request {id}, this cluster {}",
                self.cluster_id()
            )));
        }
        Ok(())
    }

    fn not_bootstrapped(&self) -> Option<Option<pdpb::ResponseHeader>> {
        (!self.meta.lock().bootstrapped)
            .then(|| self.error_header(ErrorType::NotBootstrapped, "cluster is not bootstrapped"))
    }

    fn member(&self) -> pdpb::Member {
        let url = format!("http://{}", self.cfg.advertise());
        pdpb::Member {
            name: self.cfg.name.clone(),
            member_id: self.member_id,
            peer_urls: vec![url.clone()],
            client_urls: vec![url],
            ..Default::default()
        }
    }

    fn region_response(&self, r: Option<RegionInfo>) -> pdpb::GetRegionResponse {
        let (region, leader, pending) = match r {
            Some(r) => (Some(r.region), r.leader, r.pending_peers),
            None => (None, None, vec![]),
        };
        pdpb::GetRegionResponse {
            header: self.header(),
            region,
            leader,
            pending_peers: pending,
            ..Default::default()
        }
    }

    /// Applies a region heartbeat, persisting what changed.
    pub fn handle_region_heartbeat(
        &self,
        req: &pdpb::RegionHeartbeatRequest,
    ) -> Option<pdpb::RegionHeartbeatResponse> {
        PD_HEARTBEATS.with_label_values(&["region"]).inc();
        let out = self.cluster.write().on_region_heartbeat(req);
        if out.stale {
            return None;
        }
        self.persist_region_change(out.save.as_ref(), &out.removed);
        PD_REGIONS.set(self.cluster.read().region_count() as i64);
        if let Some(mut resp) = out.response {
            PD_OPERATORS.with_label_values(&["keyspace-split"]).inc();
            resp.header = self.header();
            return Some(resp);
        }
        let info = self.cluster.read().region_by_id(req.region.as_ref()?.id).cloned()?;
        let (cmd, ended) = self.operators.lock().on_heartbeat(&info, Instant::now());
        if let Some((desc, status)) = ended {
            let event = if status == OpStatus::Finished { "finished" } else { "timeout" };
            PD_OPERATOR_EVENTS.with_label_values(&[desc, event]).inc();
            tracing::info!(region = info.region.id, "operator {desc} {event}");
        }
        let mut resp = cmd?;
        resp.header = self.header();
        Some(resp)
    }

    /// Writes a routing-table change to storage: the new or changed region,
    /// and deletion of the regions it replaced.
    fn persist_region_change(&self, save: Option<&metapb::Region>, removed: &[u64]) {
        for id in removed {
            if let Err(e) = self.storage.delete_region(*id) {
                tracing::error!("delete region {id}: {e}");
            }
        }
        if let Some(r) = save {
            if let Err(e) = self.storage.save_region(r) {
                tracing::error!("save region {}: {e}", r.id);
            }
        }
    }

    /// A leader reports the regions a split produced: record them all at
    /// once, so the routing table never has a gap where the parent was
    /// (the children's own heartbeats fill in their leaders).
    pub fn on_split_report(&self, regions: Vec<metapb::Region>) {
        let mut c = self.cluster.write();
        for region in regions {
            let leader = c.region_by_id(region.id).and_then(|r| r.leader.clone());
            let Some(removed) = c.put_region(RegionInfo::new(region.clone(), leader)) else {
                continue;
            };
            self.persist_region_change(Some(&region), &removed);
        }
        PD_REGIONS.set(c.region_count() as i64);
    }

    /// One scheduling round: new operators from the schedulers, each with
    /// its first command pushed to the region's leader right away.
    pub fn run_schedulers(&self) {
        if !self.meta.lock().bootstrapped {
            return;
        }
        let cfg = self.cfg.schedule_config();
        let now = Instant::now();
        let new_ops = {
            let c = self.cluster.read();
            let mut ops = self.operators.lock();
            let views = crate::schedule::store_views(&c, now, self.started, &cfg);
            for region_id in ops.doomed(&views) {
                if let Some(op) = ops.remove(region_id) {
                    PD_OPERATOR_EVENTS.with_label_values(&[op.desc, "cancelled"]).inc();
                    tracing::info!(
                        region = region_id,
                        "operator {} cancelled: its target store is down",
                        op.desc
                    );
                }
            }
            let mut alloc = || self.ids.alloc().ok();
            crate::schedule::schedule(&c, &ops, now, self.started, &cfg, &mut alloc)
        };
        for op in new_ops {
            self.start_operator(op, false);
        }
    }

    /// Registers an operator and sends its first command. `admin` operators
    /// (from the HTTP API) replace a running one.
    pub fn start_operator(&self, op: Operator, admin: bool) -> bool {
        let region_id = op.region_id;
        let desc = op.desc;
        let Some(info) = self.cluster.read().region_by_id(region_id).cloned() else { return false };
        let cmd = op.command(&info);
        if !self.operators.lock().add(op, admin) {
            return false;
        }
        PD_OPERATORS.with_label_values(&[desc]).inc();
        tracing::info!(region = region_id, "operator {desc} created");
        if let Some(cmd) = cmd {
            self.push_to_leader(&info, cmd);
        }
        true
    }

    /// Sends a command on the leader store's heartbeat stream, if it has one.
    fn push_to_leader(&self, info: &RegionInfo, mut cmd: pdpb::RegionHeartbeatResponse) {
        let Some(store) = info.leader.as_ref().map(|l| l.store_id) else { return };
        cmd.header = self.header();
        if let Some(tx) = self.hb_streams.lock().get(&store) {
            let _ = tx.try_send(Ok(cmd));
        }
    }

    /// Admin: move the region's leader to `to_store`.
    pub fn admin_transfer_leader(&self, region_id: u64, to_store: u64) -> Result<(), String> {
        let info =
            self.cluster.read().region_by_id(region_id).cloned().ok_or("region not found")?;
        if !info
            .region
            .peers
            .iter()
            .any(|p| p.store_id == to_store && p.role != metapb::PeerRole::Learner as i32)
        {
            return Err(format!("region {region_id} has no voter on store {to_store}"));
        }
        let op = Operator::new(
            region_id,
            OpKind::Leader,
            "admin-transfer-leader",
            vec![OpStep::TransferLeader { to_store }],
            Instant::now(),
            self.cfg.operator_timeout.0,
        );
        self.start_operator(op, true);
        Ok(())
    }

    /// Admin: split the region at `keys` (none: in half by size), given as
    /// a raw request would carry them (in API V2 with the keyspace prefix).
    pub fn admin_split_region(&self, region_id: u64, keys: Vec<Vec<u8>>) -> Result<(), String> {
        let (info, api) = {
            let c = self.cluster.read();
            (c.region_by_id(region_id).cloned().ok_or("region not found")?, c.api_version)
        };
        let api = api.ok_or("cluster is not bootstrapped")?;
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| api.raw_region_key(k)).collect();
        let r = &info.region;
        for k in &keys {
            if k <= &r.start_key || (!r.end_key.is_empty() && k >= &r.end_key) {
                return Err(format!(
                    "split key {} is not inside region {region_id}",
                    crate::http::hex(k)
                ));
            }
        }
        let cmd = info.split_command(keys);
        PD_OPERATORS.with_label_values(&["admin-split-region"]).inc();
        self.push_to_leader(&info, cmd);
        Ok(())
    }
}

pub struct PdService {
    pub core: Arc<PdCore>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Pd for PdService {
    async fn get_members(
        &self,
        req: Request<pdpb::GetMembersRequest>,
    ) -> Result<Response<pdpb::GetMembersResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_members"]).inc();
        self.core.check_header(req.get_ref().header.as_ref())?;
        let m = self.core.member();
        Ok(Response::new(pdpb::GetMembersResponse {
            header: self.core.header(),
            members: vec![m.clone()],
            leader: Some(m.clone()),
            etcd_leader: Some(m),
            ..Default::default()
        }))
    }

    type TsoStream = BoxStream<pdpb::TsoResponse>;

    async fn tso(
        &self,
        req: Request<Streaming<pdpb::TsoRequest>>,
    ) -> Result<Response<Self::TsoStream>, Status> {
        let mut inbound = req.into_inner();
        let core = self.core.clone();
        let (tx, rx) = mpsc::channel(TSO_STREAM_QUEUE_MAX);
        tokio::spawn(async move {
            while let Some(item) = inbound.next().await {
                let resp = match item {
                    Err(e) => {
                        tracing::debug!("tso stream ended: {e}");
                        break;
                    }
                    Ok(r) => {
                        let start = Instant::now();
                        let res = core.check_header(r.header.as_ref()).and_then(|()| {
                            core.tso
                                .alloc(r.count)
                                .map_err(|e| Status::invalid_argument(e.to_string()))
                        });
                        PD_TSO_DURATION.observe(start.elapsed().as_secs_f64());
                        res.map(|ts| {
                            PD_TSO.inc_by(u64::from(r.count));
                            pdpb::TsoResponse {
                                header: core.header(),
                                count: r.count,
                                timestamp: Some(pdpb::Timestamp {
                                    physical: ts.physical,
                                    logical: ts.logical,
                                    suffix_bits: 0,
                                }),
                            }
                        })
                    }
                };
                if tx.send(resp).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn bootstrap(
        &self,
        req: Request<pdpb::BootstrapRequest>,
    ) -> Result<Response<pdpb::BootstrapResponse>, Status> {
        PD_REQUESTS.with_label_values(&["bootstrap"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        let (Some(store), Some(region)) = (req.store, req.region) else {
            return Err(Status::invalid_argument("bootstrap needs a store and a region"));
        };
        if region.peers.is_empty() || region.region_epoch.is_none() {
            return Err(Status::invalid_argument("bootstrap region needs peers and an epoch"));
        }
        let Some(api_version) =
            u8::try_from(req.api_version).ok().and_then(ApiVersion::from_config)
        else {
            return Err(Status::invalid_argument(format!(
                "bootstrap needs the store's api version (1 or 2), got {}",
                req.api_version
            )));
        };
        let mut meta = self.core.meta.lock();
        if meta.bootstrapped {
            return Ok(Response::new(pdpb::BootstrapResponse {
                header: self.core.error_header(
                    ErrorType::AlreadyBootstrapped,
                    "cluster is already bootstrapped",
                ),
            }));
        }
        self.core.storage.save_store(&store).map_err(internal)?;
        self.core.storage.save_region(&region).map_err(internal)?;
        let mut next = meta.clone();
        next.bootstrapped = true;
        next.api_version = api_version.config_value();
        self.core.storage.save_meta(&next).map_err(internal)?;
        *meta = next;
        drop(meta);
        let mut c = self.core.cluster.write();
        c.api_version = Some(api_version);
        c.put_store(store);
        c.put_region(RegionInfo::new(region, None));
        tracing::info!("cluster {} bootstrapped with API {api_version}", self.core.cluster_id());
        Ok(Response::new(pdpb::BootstrapResponse { header: self.core.header() }))
    }

    async fn is_bootstrapped(
        &self,
        req: Request<pdpb::IsBootstrappedRequest>,
    ) -> Result<Response<pdpb::IsBootstrappedResponse>, Status> {
        self.core.check_header(req.get_ref().header.as_ref())?;
        Ok(Response::new(pdpb::IsBootstrappedResponse {
            header: self.core.header(),
            bootstrapped: self.core.meta.lock().bootstrapped,
        }))
    }

    async fn alloc_id(
        &self,
        req: Request<pdpb::AllocIdRequest>,
    ) -> Result<Response<pdpb::AllocIdResponse>, Status> {
        PD_REQUESTS.with_label_values(&["alloc_id"]).inc();
        self.core.check_header(req.get_ref().header.as_ref())?;
        let id = self.core.ids.alloc().map_err(internal)?;
        Ok(Response::new(pdpb::AllocIdResponse { header: self.core.header(), id }))
    }

    async fn get_store(
        &self,
        req: Request<pdpb::GetStoreRequest>,
    ) -> Result<Response<pdpb::GetStoreResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_store"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        let c = self.core.cluster.read();
        match c.stores.get(&req.store_id) {
            Some(s) => Ok(Response::new(pdpb::GetStoreResponse {
                header: self.core.header(),
                store: Some(s.store.clone()),
                stats: s.stats.clone(),
            })),
            None => Ok(Response::new(pdpb::GetStoreResponse {
                header: self.core.error_header(
                    ErrorType::Unknown,
                    format!("invalid store ID {}, not found", req.store_id),
                ),
                ..Default::default()
            })),
        }
    }

    async fn put_store(
        &self,
        req: Request<pdpb::PutStoreRequest>,
    ) -> Result<Response<pdpb::PutStoreResponse>, Status> {
        PD_REQUESTS.with_label_values(&["put_store"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        let Some(mut store) = req.store else {
            return Err(Status::invalid_argument("put_store without a store"));
        };
        if store.id == 0 || store.address.is_empty() {
            return Err(Status::invalid_argument("store needs an id and an address"));
        }
        let mut c = self.core.cluster.write();
        if let Some(other) =
            c.stores.values().find(|s| s.store.address == store.address && s.store.id != store.id)
        {
            if other.store.state != metapb::StoreState::Tombstone as i32 {
                return Ok(Response::new(pdpb::PutStoreResponse {
                    header: self.core.error_header(
                        ErrorType::Unknown,
                        format!(
                            "address {} is already used by store {}",
                            store.address, other.store.id
                        ),
                    ),
                }));
            }
        }
        store.last_heartbeat = atoll_util::time::unix_millis() as i64 * 1_000_000;
        self.core.storage.save_store(&store).map_err(internal)?;
        c.put_store(store);
        PD_STORES.set(c.stores.len() as i64);
        Ok(Response::new(pdpb::PutStoreResponse { header: self.core.header() }))
    }

    async fn get_all_stores(
        &self,
        req: Request<pdpb::GetAllStoresRequest>,
    ) -> Result<Response<pdpb::GetAllStoresResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_all_stores"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        let c = self.core.cluster.read();
        let mut stores: Vec<metapb::Store> = c
            .stores
            .values()
            .filter(|s| {
                !req.exclude_tombstone_stores
                    || s.store.state != metapb::StoreState::Tombstone as i32
            })
            .map(|s| s.store.clone())
            .collect();
        stores.sort_by_key(|s| s.id);
        Ok(Response::new(pdpb::GetAllStoresResponse { header: self.core.header(), stores }))
    }

    async fn store_heartbeat(
        &self,
        req: Request<pdpb::StoreHeartbeatRequest>,
    ) -> Result<Response<pdpb::StoreHeartbeatResponse>, Status> {
        PD_HEARTBEATS.with_label_values(&["store"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        let Some(stats) = req.stats else {
            return Err(Status::invalid_argument("store heartbeat without stats"));
        };
        let mut c = self.core.cluster.write();
        match c.stores.get_mut(&stats.store_id) {
            Some(s) => {
                s.store.last_heartbeat = atoll_util::time::unix_millis() as i64 * 1_000_000;
                s.stats = Some(stats);
                s.last_heartbeat = Some(Instant::now());
                Ok(Response::new(pdpb::StoreHeartbeatResponse {
                    header: self.core.header(),
                    ..Default::default()
                }))
            }
            None => Ok(Response::new(pdpb::StoreHeartbeatResponse {
                header: self.core.error_header(
                    ErrorType::Unknown,
                    format!("store {} not found", stats.store_id),
                ),
                ..Default::default()
            })),
        }
    }

    type RegionHeartbeatStream = BoxStream<pdpb::RegionHeartbeatResponse>;

    async fn region_heartbeat(
        &self,
        req: Request<Streaming<pdpb::RegionHeartbeatRequest>>,
    ) -> Result<Response<Self::RegionHeartbeatStream>, Status> {
        let mut inbound = req.into_inner();
        let core = self.core.clone();
        let (tx, rx) = mpsc::channel(HEARTBEAT_STREAM_QUEUE_MAX);
        tokio::spawn(async move {
            let mut registered = false;
            while let Some(item) = inbound.next().await {
                let Ok(hb) = item else { break };
                if let Err(e) = core.check_header(hb.header.as_ref()) {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
                if !registered {
                    if let Some(store) = hb.leader.as_ref().map(|l| l.store_id) {
                        core.hb_streams.lock().insert(store, tx.clone());
                        registered = true;
                    }
                }
                if let Some(resp) = core.handle_region_heartbeat(&hb) {
                    if tx.try_send(Ok(resp)).is_err() {
                        tracing::warn!(
                            "region heartbeat stream is not draining; dropping an operator"
                        );
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_region(
        &self,
        req: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_region"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        let r = self.core.cluster.read().region_by_key(&req.region_key).cloned();
        Ok(Response::new(self.core.region_response(r)))
    }

    async fn get_prev_region(
        &self,
        req: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_prev_region"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        let r = self.core.cluster.read().prev_region(&req.region_key).cloned();
        Ok(Response::new(self.core.region_response(r)))
    }

    async fn get_region_by_id(
        &self,
        req: Request<pdpb::GetRegionByIdRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_region_by_id"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        let r = self.core.cluster.read().region_by_id(req.region_id).cloned();
        Ok(Response::new(self.core.region_response(r)))
    }

    async fn scan_regions(
        &self,
        req: Request<pdpb::ScanRegionsRequest>,
    ) -> Result<Response<pdpb::ScanRegionsResponse>, Status> {
        PD_REQUESTS.with_label_values(&["scan_regions"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        let c = self.core.cluster.read();
        let found = c.scan_regions(&req.start_key, &req.end_key, req.limit.max(0) as usize);
        let mut resp =
            pdpb::ScanRegionsResponse { header: self.core.header(), ..Default::default() };
        for r in found {
            let leader = r.leader.clone().unwrap_or_default();
            resp.region_metas.push(r.region.clone());
            resp.leaders.push(leader.clone());
            resp.regions.push(pdpb::Region {
                region: Some(r.region.clone()),
                leader: Some(leader),
                down_peers: vec![],
                pending_peers: r.pending_peers.clone(),
            });
        }
        Ok(Response::new(resp))
    }

    async fn ask_batch_split(
        &self,
        req: Request<pdpb::AskBatchSplitRequest>,
    ) -> Result<Response<pdpb::AskBatchSplitResponse>, Status> {
        PD_REQUESTS.with_label_values(&["ask_batch_split"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        if let Some(h) = self.core.not_bootstrapped() {
            return Ok(Response::new(pdpb::AskBatchSplitResponse { header: h, ids: vec![] }));
        }
        let Some(region) = req.region else {
            return Err(Status::invalid_argument("ask_batch_split without region"));
        };
        if req.split_count == 0 || req.split_count > 1024 {
            return Err(Status::invalid_argument(format!(
                "split_count {} not in 1..=1024",
                req.split_count
            )));
        }
        let mut ids = Vec::with_capacity(req.split_count as usize);
        for _ in 0..req.split_count {
            let new_region_id = self.core.ids.alloc().map_err(internal)?;
            let new_peer_ids = region
                .peers
                .iter()
                .map(|_| self.core.ids.alloc())
                .collect::<Result<_, _>>()
                .map_err(internal)?;
            ids.push(pdpb::SplitId { new_region_id, new_peer_ids });
        }
        Ok(Response::new(pdpb::AskBatchSplitResponse { header: self.core.header(), ids }))
    }

    async fn report_batch_split(
        &self,
        req: Request<pdpb::ReportBatchSplitRequest>,
    ) -> Result<Response<pdpb::ReportBatchSplitResponse>, Status> {
        PD_REQUESTS.with_label_values(&["report_batch_split"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        tracing::info!("split reported: {} regions", req.regions.len());
        self.core.on_split_report(req.regions);
        Ok(Response::new(pdpb::ReportBatchSplitResponse { header: self.core.header() }))
    }

    async fn get_cluster_config(
        &self,
        req: Request<pdpb::GetClusterConfigRequest>,
    ) -> Result<Response<pdpb::GetClusterConfigResponse>, Status> {
        self.core.check_header(req.get_ref().header.as_ref())?;
        let m = self.core.meta.lock().clone();
        Ok(Response::new(pdpb::GetClusterConfigResponse {
            header: self.core.header(),
            cluster: Some(metapb::Cluster { id: m.cluster_id, max_peer_count: m.max_peer_count }),
            api_version: m.api_version().map_or(0, |v| u32::from(v.config_value())),
        }))
    }

    async fn put_cluster_config(
        &self,
        req: Request<pdpb::PutClusterConfigRequest>,
    ) -> Result<Response<pdpb::PutClusterConfigResponse>, Status> {
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        let Some(cluster) = req.cluster else {
            return Err(Status::invalid_argument("missing cluster"));
        };
        if cluster.max_peer_count == 0 {
            return Err(Status::invalid_argument("max_peer_count must be positive"));
        }
        let mut meta = self.core.meta.lock();
        let mut next = meta.clone();
        next.max_peer_count = cluster.max_peer_count;
        self.core.storage.save_meta(&next).map_err(internal)?;
        *meta = next;
        Ok(Response::new(pdpb::PutClusterConfigResponse { header: self.core.header() }))
    }

    async fn get_gc_safe_point(
        &self,
        req: Request<pdpb::GetGcSafePointRequest>,
    ) -> Result<Response<pdpb::GetGcSafePointResponse>, Status> {
        self.core.check_header(req.get_ref().header.as_ref())?;
        Ok(Response::new(pdpb::GetGcSafePointResponse {
            header: self.core.header(),
            safe_point: *self.core.safe_point.lock(),
        }))
    }

    async fn update_gc_safe_point(
        &self,
        req: Request<pdpb::UpdateGcSafePointRequest>,
    ) -> Result<Response<pdpb::UpdateGcSafePointResponse>, Status> {
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        let mut sp = self.core.safe_point.lock();
        // The safe point only moves forward.
        if req.safe_point > *sp {
            self.core.storage.save_safe_point(req.safe_point).map_err(internal)?;
            *sp = req.safe_point;
        }
        Ok(Response::new(pdpb::UpdateGcSafePointResponse {
            header: self.core.header(),
            new_safe_point: *sp,
        }))
    }
}

pub struct KeyspaceService {
    pub core: Arc<PdCore>,
}

#[tonic::async_trait]
impl Keyspace for KeyspaceService {
    async fn load_keyspace(
        &self,
        req: Request<keyspacepb::LoadKeyspaceRequest>,
    ) -> Result<Response<keyspacepb::LoadKeyspaceResponse>, Status> {
        PD_REQUESTS.with_label_values(&["load_keyspace"]).inc();
        let req = req.into_inner();
        self.core.check_header(req.header.as_ref())?;
        if let Some(v @ ApiVersion::V1) = self.core.cluster.read().api_version {
            return Ok(Response::new(keyspacepb::LoadKeyspaceResponse {
                header: self.core.error_header(
                    ErrorType::EntryNotFound,
                    format!("keyspaces need API V2, but this cluster runs API {v}: use a client without a keyspace"),
                ),
                keyspace: None,
            }));
        }
        Ok(Response::new(match keyspace::load(&req.name, self.core.started_at) {
            Some(k) => {
                keyspacepb::LoadKeyspaceResponse { header: self.core.header(), keyspace: Some(k) }
            }
            None => keyspacepb::LoadKeyspaceResponse {
                header: self.core.error_header(
                    ErrorType::EntryNotFound,
                    format!("keyspace {:?} not found", req.name),
                ),
                keyspace: None,
            },
        }))
    }
}
