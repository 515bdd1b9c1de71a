//! PD's domain core: every state transition of the cluster (bootstrap,
//! stores, the routing table, ids, timestamps, operators, GC safe point),
//! each returning a domain result or a [`CoreError`].
//!
//! Knows nothing of gRPC or HTTP: the adapters (`service.rs`, `http.rs`)
//! check headers, convert, count requests and map [`CoreError`] to their
//! own error shapes. The protobuf types here are the cluster's data model
//! (regions, stores, peers), not transport.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_codec::api::ApiVersion;
use atoll_proto::keyspacepb::KeyspaceMeta;
use atoll_proto::metapb;
use atoll_proto::pdpb;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, RegionInfo, StoreInfo};
use crate::config::Config;
use crate::id::IdAllocator;
use crate::keyspace;
use crate::metrics::*;
use crate::schedule::{OpKind, OpStatus, OpStep, Operator, Operators, StoreView};
use crate::storage::{ClusterMeta, Storage, StorageError};
use crate::tso::{Ts, Tso, TsoError};

/// Most regions one `ask_batch_split` may ask ids for.
pub const SPLIT_COUNT_MAX: u32 = 1024;

/// Why PD refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The request itself is malformed (the caller must change it).
    #[error("{0}")]
    Invalid(String),
    #[error("mismatched cluster id: request {request}, this cluster {cluster}")]
    ClusterMismatch { request: u64, cluster: u64 },
    #[error("cluster is not bootstrapped")]
    NotBootstrapped,
    #[error("cluster is already bootstrapped")]
    AlreadyBootstrapped,
    /// The store was deleted; its id is never used again.
    #[error("store {0} is a tombstone (it was deleted); start a store with an empty data directory instead")]
    Tombstone(u64),
    /// The named store, region or keyspace does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the cluster's state (e.g. an address
    /// another live store uses).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<TsoError> for CoreError {
    fn from(e: TsoError) -> CoreError {
        match e {
            TsoError::Storage(e) => CoreError::Storage(e),
            e @ TsoError::InvalidCount(_) => CoreError::Invalid(e.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, CoreError>;

/// Where PD pushes operator commands to a store: its region-heartbeat
/// response stream.
pub type HeartbeatSender =
    mpsc::Sender<std::result::Result<pdpb::RegionHeartbeatResponse, tonic::Status>>;

/// A store as the HTTP API shows it.
pub struct StoreStatus {
    pub info: StoreInfo,
    /// `None` for a tombstone.
    pub view: Option<StoreView>,
}

/// The cluster state behind every adapter.
pub struct PdCore {
    cfg: Config,
    /// Fixed when the cluster is created; kept outside `meta` so headers
    /// never need its lock.
    cluster_id: u64,
    storage: Storage,
    meta: Mutex<ClusterMeta>,
    cluster: RwLock<Cluster>,
    ids: IdAllocator,
    tso: Tso,
    safe_point: Mutex<u64>,
    started_at: i64,
    started: Instant,
    operators: Mutex<Operators>,
    /// The region-heartbeat response stream of each store (for pushing
    /// operator commands as soon as they are made).
    hb_streams: Mutex<HashMap<u64, HeartbeatSender>>,
    /// Woken whenever the routing table changes (bootstrap, heartbeats,
    /// split reports), for region lookups waiting on it.
    routing_changed: Notify,
    /// Cancelled when this core stops serving (its member lost the
    /// leadership, or PD stops): streams it feeds end, so their clients
    /// go looking for the new leader.
    closed: CancellationToken,
}

/// How long a region lookup waits for the cluster to be bootstrapped, or
/// for a region to cover its key, before answering without one. Some
/// clients treat "no region" as "nothing to do": tikv-client 0.4's
/// prewrite and commit then return Ok having written nothing.
pub const ROUTING_WAIT: Duration = Duration::from_secs(1);

impl PdCore {
    /// A core over an embedded RocksDB in `cfg.data_dir`.
    pub fn open(cfg: Config) -> std::result::Result<Arc<Self>, StorageError> {
        let storage = Storage::open(&cfg.data_dir)?;
        Self::open_with(cfg, storage)
    }

    /// Loads the cluster from `storage` (creating it if empty). The TSO
    /// starts above the saved upper bound and a new id window is reserved,
    /// so nothing a previous leader handed out is handed out again.
    pub fn open_with(
        cfg: Config,
        storage: Storage,
    ) -> std::result::Result<Arc<Self>, StorageError> {
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
        let operators = Operators::restore(storage.load_operators()?.as_deref(), Instant::now());
        Ok(Arc::new(PdCore {
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
            operators: Mutex::new(operators),
            hb_streams: Mutex::new(HashMap::new()),
            routing_changed: Notify::new(),
            closed: CancellationToken::new(),
        }))
    }

    pub fn cfg(&self) -> &Config {
        &self.cfg
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Flushes storage (on stop).
    pub fn sync(&self) -> std::result::Result<(), StorageError> {
        self.storage.sync()
    }

    /// Refuses requests addressed to another cluster (0 = "any", as TiKV
    /// clients start).
    pub fn check_cluster(&self, request: u64) -> Result<()> {
        if request != 0 && request != self.cluster_id {
            return Err(CoreError::ClusterMismatch { request, cluster: self.cluster_id });
        }
        Ok(())
    }

    /// Stops serving: streams fed by this core end (their clients find
    /// the new leader), and pushes to stores stop.
    pub fn close(&self) {
        self.closed.cancel();
        self.hb_streams.lock().clear();
    }

    /// Resolves once [`PdCore::close`] was called.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// The `/status` document.
    pub fn status_json(&self) -> serde_json::Value {
        let c = self.cluster.read();
        serde_json::json!({
            "role": "pd",
            "cluster_id": self.cluster_id,
            "bootstrapped": self.is_bootstrapped(),
            "stores": c.stores.len(),
            "regions": c.region_count(),
        })
    }

    // ---- cluster life ----

    /// Creates the cluster from its first store and region; the store's API
    /// version (config numbering: 1 or 2) becomes the cluster's.
    pub fn bootstrap(
        &self,
        store: metapb::Store,
        region: metapb::Region,
        api_version: u32,
    ) -> Result<ApiVersion> {
        if region.peers.is_empty() || region.region_epoch.is_none() {
            return Err(CoreError::Invalid("bootstrap region needs peers and an epoch".into()));
        }
        let Some(api_version) = u8::try_from(api_version).ok().and_then(ApiVersion::from_config)
        else {
            return Err(CoreError::Invalid(format!(
                "bootstrap needs the store's api version (1 or 2), got {api_version}"
            )));
        };
        let mut meta = self.meta.lock();
        if meta.bootstrapped {
            return Err(CoreError::AlreadyBootstrapped);
        }
        self.storage.save_store(&store)?;
        self.storage.save_region(&region)?;
        let mut next = meta.clone();
        next.bootstrapped = true;
        next.api_version = api_version.config_value();
        self.storage.save_meta(&next)?;
        *meta = next;
        drop(meta);
        let mut c = self.cluster.write();
        c.api_version = Some(api_version);
        c.put_store(store);
        c.put_region(RegionInfo::new(region, None));
        drop(c);
        self.routing_changed.notify_waiters();
        tracing::info!("cluster {} bootstrapped with API {api_version}", self.cluster_id);
        Ok(api_version)
    }

    pub fn is_bootstrapped(&self) -> bool {
        self.meta.lock().bootstrapped
    }

    pub fn cluster_meta(&self) -> ClusterMeta {
        self.meta.lock().clone()
    }

    pub fn set_max_peer_count(&self, max_peer_count: u32) -> Result<()> {
        if max_peer_count == 0 {
            return Err(CoreError::Invalid("max_peer_count must be positive".into()));
        }
        let mut meta = self.meta.lock();
        let mut next = meta.clone();
        next.max_peer_count = max_peer_count;
        self.storage.save_meta(&next)?;
        *meta = next;
        Ok(())
    }

    // ---- ids and time ----

    pub fn alloc_id(&self) -> Result<u64> {
        Ok(self.ids.alloc()?)
    }

    pub fn tso(&self, count: u32) -> Result<Ts> {
        Ok(self.tso.alloc(count)?)
    }

    pub fn gc_safe_point(&self) -> u64 {
        *self.safe_point.lock()
    }

    /// Moves the safe point forward (never back); returns the current one.
    pub fn update_gc_safe_point(&self, safe_point: u64) -> Result<u64> {
        let mut sp = self.safe_point.lock();
        if safe_point > *sp {
            self.storage.save_safe_point(safe_point)?;
            *sp = safe_point;
        }
        Ok(*sp)
    }

    // ---- stores ----

    pub fn store(&self, id: u64) -> Result<StoreInfo> {
        self.cluster
            .read()
            .stores
            .get(&id)
            .cloned()
            .ok_or_else(|| CoreError::NotFound(format!("invalid store ID {id}, not found")))
    }

    /// Registers or updates a store. Its address must not be another live
    /// store's.
    pub fn put_store(&self, mut store: metapb::Store) -> Result<()> {
        if store.id == 0 || store.address.is_empty() {
            return Err(CoreError::Invalid("store needs an id and an address".into()));
        }
        let mut c = self.cluster.write();
        if let Some(other) = c.stores.values().find(|s| {
            s.store.address == store.address
                && s.store.id != store.id
                && s.store.state != metapb::StoreState::Tombstone as i32
        }) {
            return Err(CoreError::Conflict(format!(
                "address {} is already used by store {}",
                store.address, other.store.id
            )));
        }
        match c.stores.get(&store.id).map(|s| s.store.state) {
            Some(state) if state == metapb::StoreState::Tombstone as i32 => {
                return Err(CoreError::Tombstone(store.id));
            }
            // A store restarted while being deleted stays that way.
            Some(state) => store.state = state,
            None => store.state = metapb::StoreState::Up as i32,
        }
        store.last_heartbeat = atoll_util::time::unix_millis() as i64 * 1_000_000;
        self.storage.save_store(&store)?;
        c.put_store(store);
        PD_STORES.set(c.stores.len() as i64);
        Ok(())
    }

    /// Starts deleting a store (`Offline`): the schedulers move every
    /// replica off it, then [`PdCore::run_schedulers`] marks it
    /// `Tombstone`, after which it may never register again. Refused when
    /// the stores left could not hold `max_peer_count` replicas.
    pub fn delete_store(&self, id: u64) -> Result<()> {
        let max_replicas = self.meta.lock().max_peer_count as usize;
        let mut c = self.cluster.write();
        let Some(info) = c.stores.get(&id) else {
            return Err(CoreError::NotFound(format!("store {id} not found")));
        };
        let state = info.store.state;
        if state == metapb::StoreState::Tombstone as i32 {
            return Err(CoreError::Tombstone(id));
        }
        if state == metapb::StoreState::Offline as i32 {
            return Ok(());
        }
        let staying = c
            .stores
            .values()
            .filter(|s| s.store.id != id && s.store.state == metapb::StoreState::Up as i32)
            .count();
        if staying < max_replicas {
            return Err(CoreError::Conflict(format!(
                "deleting store {id} would leave {staying} stores for {max_replicas} replicas \
                 per region; add a store first"
            )));
        }
        let mut store = info.store.clone();
        store.state = metapb::StoreState::Offline as i32;
        self.storage.save_store(&store)?;
        c.put_store(store);
        tracing::info!(store = id, "store is being deleted: moving its replicas away");
        Ok(())
    }

    /// Marks deleted (`Offline`) stores that hold no replica any more as
    /// `Tombstone`.
    fn bury_empty_stores(&self, views: &HashMap<u64, StoreView>) {
        let empty: Vec<u64> =
            views.values().filter(|v| v.offline && v.region_count == 0).map(|v| v.id).collect();
        if empty.is_empty() {
            return;
        }
        let mut c = self.cluster.write();
        for id in empty {
            let Some(info) = c.stores.get(&id) else { continue };
            let mut store = info.store.clone();
            store.state = metapb::StoreState::Tombstone as i32;
            if let Err(e) = self.storage.save_store(&store) {
                tracing::warn!(store = id, "mark tombstone: {e}");
                continue;
            }
            c.put_store(store);
            self.hb_streams.lock().remove(&id);
            tracing::info!(store = id, "store deleted: no replicas left, now a tombstone");
        }
    }

    /// Every store (by id), optionally without tombstones.
    pub fn stores(&self, exclude_tombstones: bool) -> Vec<metapb::Store> {
        let c = self.cluster.read();
        let mut stores: Vec<metapb::Store> = c
            .stores
            .values()
            .filter(|s| {
                !exclude_tombstones || s.store.state != metapb::StoreState::Tombstone as i32
            })
            .map(|s| s.store.clone())
            .collect();
        stores.sort_by_key(|s| s.id);
        stores
    }

    /// Every store with the schedulers' view of it (up/down, counts), by id.
    pub fn store_statuses(&self, now: Instant) -> Vec<StoreStatus> {
        let c = self.cluster.read();
        let mut views =
            crate::schedule::store_views(&c, now, self.started, &self.cfg.schedule_config());
        let mut out: Vec<StoreStatus> = c
            .stores
            .values()
            .map(|s| StoreStatus { info: s.clone(), view: views.remove(&s.store.id) })
            .collect();
        out.sort_by_key(|s| s.info.store.id);
        out
    }

    pub fn store_heartbeat(&self, stats: pdpb::StoreStats) -> Result<()> {
        let mut c = self.cluster.write();
        let Some(s) = c.stores.get_mut(&stats.store_id) else {
            return Err(CoreError::NotFound(format!("store {} not found", stats.store_id)));
        };
        if s.store.state == metapb::StoreState::Tombstone as i32 {
            return Err(CoreError::Tombstone(stats.store_id));
        }
        s.store.last_heartbeat = atoll_util::time::unix_millis() as i64 * 1_000_000;
        s.stats = Some(stats);
        s.last_heartbeat = Some(Instant::now());
        Ok(())
    }

    /// Remembers `store`'s region-heartbeat response stream, for pushing
    /// operator commands.
    pub fn register_heartbeat_stream(&self, store: u64, tx: HeartbeatSender) {
        self.hb_streams.lock().insert(store, tx);
    }

    // ---- the routing table ----

    /// Evaluates `lookup` until it finds something or [`ROUTING_WAIT`]
    /// passed, re-evaluating whenever the routing table changes; then
    /// `Err(NotBootstrapped)` if the cluster still is not.
    pub async fn wait_for_routing<T>(
        &self,
        mut lookup: impl FnMut(&Self) -> Option<T>,
    ) -> Result<Option<T>> {
        let deadline = tokio::time::Instant::now() + ROUTING_WAIT;
        loop {
            let changed = self.routing_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.is_bootstrapped() {
                if let Some(found) = lookup(self) {
                    return Ok(Some(found));
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                if !self.is_bootstrapped() {
                    return Err(CoreError::NotBootstrapped);
                }
                return Ok(lookup(self));
            }
        }
    }

    pub fn region_by_key(&self, key: &[u8]) -> Option<RegionInfo> {
        self.cluster.read().region_by_key(key).cloned()
    }

    pub fn prev_region(&self, key: &[u8]) -> Option<RegionInfo> {
        self.cluster.read().prev_region(key).cloned()
    }

    pub fn region_by_id(&self, id: u64) -> Option<RegionInfo> {
        self.cluster.read().region_by_id(id).cloned()
    }

    pub fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<RegionInfo> {
        self.cluster.read().scan_regions(start, end, limit).into_iter().cloned().collect()
    }

    /// Every region, in key order.
    pub fn regions(&self) -> Vec<RegionInfo> {
        self.cluster.read().all_regions().cloned().collect()
    }

    /// Applies a region heartbeat, persisting what changed; returns the
    /// command for the leader, if any (a keyspace split, an operator step).
    pub fn region_heartbeat(
        &self,
        req: &pdpb::RegionHeartbeatRequest,
    ) -> Option<pdpb::RegionHeartbeatResponse> {
        PD_HEARTBEATS.with_label_values(&["region"]).inc();
        let out = self.cluster.write().on_region_heartbeat(req);
        if out.stale {
            return None;
        }
        self.routing_changed.notify_waiters();
        self.persist_region_change(out.save.as_ref(), &out.removed);
        PD_REGIONS.set(self.cluster.read().region_count() as i64);
        if let Some(resp) = out.response {
            PD_OPERATORS.with_label_values(&["keyspace-split"]).inc();
            return Some(resp);
        }
        let info = self.cluster.read().region_by_id(req.region.as_ref()?.id).cloned()?;
        let (cmd, ended) = {
            let mut ops = self.operators.lock();
            let (cmd, ended) = ops.on_heartbeat(&info, Instant::now());
            if ended.is_some() {
                self.save_operators(&ops);
            }
            (cmd, ended)
        };
        if let Some((desc, status)) = ended {
            let event = if status == OpStatus::Finished { "finished" } else { "timeout" };
            PD_OPERATOR_EVENTS.with_label_values(&[desc, event]).inc();
            tracing::info!(region = info.region.id, "operator {desc} {event}");
        }
        cmd
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

    /// Ids for `count` new regions split from `region`: a region id and a
    /// peer id per existing peer, for each.
    pub fn ask_batch_split(
        &self,
        region: &metapb::Region,
        count: u32,
    ) -> Result<Vec<pdpb::SplitId>> {
        if !self.is_bootstrapped() {
            return Err(CoreError::NotBootstrapped);
        }
        if count == 0 || count > SPLIT_COUNT_MAX {
            return Err(CoreError::Invalid(format!(
                "split_count {count} not in 1..={SPLIT_COUNT_MAX}"
            )));
        }
        let mut ids = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let new_region_id = self.ids.alloc()?;
            let new_peer_ids = region
                .peers
                .iter()
                .map(|_| self.ids.alloc())
                .collect::<std::result::Result<_, _>>()?;
            ids.push(pdpb::SplitId { new_region_id, new_peer_ids });
        }
        Ok(ids)
    }

    /// A leader reports the regions a split produced: record them all at
    /// once, so the routing table never has a gap where the parent was
    /// (the children's own heartbeats fill in their leaders).
    pub fn report_split(&self, regions: Vec<metapb::Region>) {
        tracing::info!("split reported: {} regions", regions.len());
        let mut c = self.cluster.write();
        for region in regions {
            let leader = c.region_by_id(region.id).and_then(|r| r.leader.clone());
            let Some(removed) = c.put_region(RegionInfo::new(region.clone(), leader)) else {
                continue;
            };
            self.persist_region_change(Some(&region), &removed);
        }
        PD_REGIONS.set(c.region_count() as i64);
        drop(c);
        self.routing_changed.notify_waiters();
    }

    /// A keyspace's metadata; keyspaces exist in API V2 clusters only.
    pub fn load_keyspace(&self, name: &str) -> Result<KeyspaceMeta> {
        if let Some(v @ ApiVersion::V1) = self.cluster.read().api_version {
            return Err(CoreError::NotFound(format!(
                "keyspaces need API V2, but this cluster runs API {v}: use a client without a keyspace"
            )));
        }
        keyspace::load(name, self.started_at)
            .ok_or_else(|| CoreError::NotFound(format!("keyspace {name:?} not found")))
    }

    // ---- operators ----

    /// One scheduling round: new operators from the schedulers, each with
    /// its first command pushed to the region's leader right away.
    pub fn run_schedulers(&self) {
        if !self.is_bootstrapped() {
            return;
        }
        let cfg = self.cfg.schedule_config();
        let now = Instant::now();
        let mut bury = None;
        let new_ops = {
            let c = self.cluster.read();
            let mut ops = self.operators.lock();
            let views = crate::schedule::store_views(&c, now, self.started, &cfg);
            let doomed = ops.doomed(&views);
            if views.values().any(|v| v.offline && v.region_count == 0) {
                // After the routing lock: burying takes it for writing.
                bury = Some(views.clone());
            }
            for &region_id in &doomed {
                if let Some(op) = ops.remove(region_id) {
                    PD_OPERATOR_EVENTS.with_label_values(&[op.desc, "cancelled"]).inc();
                    tracing::info!(
                        region = region_id,
                        "operator {} cancelled: its target store is down",
                        op.desc
                    );
                }
            }
            if !doomed.is_empty() {
                self.save_operators(&ops);
            }
            let mut alloc = || self.ids.alloc().ok();
            crate::schedule::schedule(&c, &ops, now, self.started, &cfg, &mut alloc)
        };
        if let Some(views) = bury {
            self.bury_empty_stores(&views);
        }
        for op in new_ops {
            self.start_operator(op, false);
        }
    }

    /// Registers an operator and sends its first command. `admin` operators
    /// (from the HTTP API) replace a running one.
    pub fn start_operator(&self, op: Operator, admin: bool) -> bool {
        let region_id = op.region_id;
        let desc = op.desc;
        let Some(info) = self.region_by_id(region_id) else { return false };
        let cmd = op.command(&info);
        {
            let mut ops = self.operators.lock();
            if !ops.add(op, admin) {
                return false;
            }
            self.save_operators(&ops);
        }
        PD_OPERATORS.with_label_values(&[desc]).inc();
        tracing::info!(region = region_id, "operator {desc} created");
        if let Some(cmd) = cmd {
            self.push_to_leader(&info, cmd);
        }
        true
    }

    /// Saves the running operators (called with their lock held, so saves
    /// happen in the order of changes).
    fn save_operators(&self, ops: &Operators) {
        if let Err(e) = self.storage.save_operators(&ops.to_json()) {
            tracing::warn!("save operators: {e}");
        }
    }

    /// The running operators, by region.
    pub fn operators(&self) -> Vec<Operator> {
        let mut ops: Vec<Operator> = self.operators.lock().all().cloned().collect();
        ops.sort_by_key(|o| o.region_id);
        ops
    }

    /// Sends a command on the leader store's heartbeat stream, if it has one.
    fn push_to_leader(&self, info: &RegionInfo, cmd: pdpb::RegionHeartbeatResponse) {
        let Some(store) = info.leader.as_ref().map(|l| l.store_id) else { return };
        if let Some(tx) = self.hb_streams.lock().get(&store) {
            let cmd = pdpb::RegionHeartbeatResponse {
                header: Some(pdpb::ResponseHeader { cluster_id: self.cluster_id, error: None }),
                ..cmd
            };
            let _ = tx.try_send(Ok(cmd));
        }
    }

    /// Admin: move the region's leader to `to_store`.
    pub fn admin_transfer_leader(&self, region_id: u64, to_store: u64) -> Result<()> {
        let info = self
            .region_by_id(region_id)
            .ok_or_else(|| CoreError::NotFound(format!("region {region_id} not found")))?;
        if !info
            .region
            .peers
            .iter()
            .any(|p| p.store_id == to_store && p.role != metapb::PeerRole::Learner as i32)
        {
            return Err(CoreError::Invalid(format!(
                "region {region_id} has no voter on store {to_store}"
            )));
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
    pub fn admin_split_region(&self, region_id: u64, keys: Vec<Vec<u8>>) -> Result<()> {
        let (info, api) = {
            let c = self.cluster.read();
            let info = c
                .region_by_id(region_id)
                .cloned()
                .ok_or_else(|| CoreError::NotFound(format!("region {region_id} not found")))?;
            (info, c.api_version)
        };
        let api = api.ok_or(CoreError::NotBootstrapped)?;
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| api.raw_region_key(k)).collect();
        let r = &info.region;
        if !keys.is_empty() {
            atoll_codec::api::check_split_keys(
                &r.start_key,
                &r.end_key,
                keys.iter().map(|k| k.as_slice()),
            )
            .map_err(|e| CoreError::Invalid(format!("region {region_id}: {e}")))?;
        }
        let cmd = info.split_command(keys);
        PD_OPERATORS.with_label_values(&["admin-split-region"]).inc();
        self.push_to_leader(&info, cmd);
        Ok(())
    }
}
