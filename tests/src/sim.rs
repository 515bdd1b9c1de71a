//! An in-process multi-store cluster over a simulated network that can drop
//! and partition messages. Stores use the in-memory engine (or RocksDB); a
//! stopped store keeps its engine, so restarting it is a real recovery from
//! "disk".

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use atoll_engine_traits::{KvEngine, Peekable};
use atoll_proto::atollpb::{
    CmdType, PutRequest, RaftCmdRequest, RaftMessage, RaftRequestHeader, Request,
};
use atoll_proto::metapb;
use atoll_raftstore::msg::SplitIds;
use atoll_raftstore::system::write_initial_region;
use atoll_raftstore::{
    keys, Config, Error, PdSink, PdTask, PeerMsg, RaftSystem, SplitRequest, StoreHandle, Transport,
};
use parking_lot::{Mutex, RwLock};

/// Who may talk to whom.
#[derive(Default)]
struct Filters {
    /// Stores whose traffic (in and out) is dropped.
    isolated: HashSet<u64>,
    /// Directed pairs (from, to) whose traffic is dropped.
    blocked: HashSet<(u64, u64)>,
    /// Stores whose log appends (MsgAppend) are dropped, and only those:
    /// their proposals never commit while heartbeats, and so read index,
    /// still work.
    no_append: HashSet<u64>,
}

/// The shared network: live stores and the filters.
pub struct SimNetwork<E: KvEngine> {
    stores: RwLock<HashMap<u64, StoreHandle<E>>>,
    filters: RwLock<Filters>,
    pub delivered: AtomicU64,
    pub dropped: AtomicU64,
}

impl<E: KvEngine> SimNetwork<E> {
    fn allows(&self, from: u64, to: u64) -> bool {
        let f = self.filters.read();
        !f.isolated.contains(&from) && !f.isolated.contains(&to) && !f.blocked.contains(&(from, to))
    }

    fn drops_appends_from(&self, from: u64, msg: &RaftMessage) -> bool {
        if !self.filters.read().no_append.contains(&from) {
            return false;
        }
        let m = <raft::eraftpb::Message as prost011::Message>::decode(msg.message.as_slice());
        m.is_ok_and(|m| m.msg_type == raft::eraftpb::MessageType::MsgAppend as i32)
    }
}

/// Per-poller transport: buffers messages, delivers them on flush.
pub struct SimTransport<E: KvEngine> {
    store_id: u64,
    net: Arc<SimNetwork<E>>,
    buf: Vec<RaftMessage>,
}

impl<E: KvEngine> Clone for SimTransport<E> {
    fn clone(&self) -> Self {
        SimTransport { store_id: self.store_id, net: self.net.clone(), buf: vec![] }
    }
}

/// Messages buffered per poll round before flush is forced.
const SIM_BUFFER_MAX: usize = 4096;

impl<E: KvEngine> Transport for SimTransport<E> {
    fn send(&mut self, msg: RaftMessage) -> Result<(), atoll_raftstore::TransportError> {
        if self.buf.len() >= SIM_BUFFER_MAX {
            self.flush();
        }
        self.buf.push(msg);
        Ok(())
    }

    fn send_snapshot(
        &mut self,
        msg: RaftMessage,
        path: std::path::PathBuf,
        done: Box<dyn FnOnce(bool) + Send>,
    ) {
        // Like the real transport: the file lands on the target first, then
        // the message is delivered.
        let to = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or_default();
        let ok = (|| {
            let stores = self.net.stores.read();
            let h = stores.get(&to).filter(|_| self.net.allows(self.store_id, to))?;
            let m = <raft::eraftpb::Message as prost011::Message>::decode(msg.message.as_slice())
                .ok()?;
            let meta = m.snapshot?.metadata?;
            let key = atoll_raftstore::snap::SnapKey {
                region_id: msg.region_id,
                term: meta.term,
                index: meta.index,
            };
            std::fs::copy(&path, h.snap_mgr().recv_path(&key)).ok()?;
            h.on_raft_message(msg);
            Some(())
        })()
        .is_some();
        done(ok);
    }

    fn flush(&mut self) {
        let stores = self.net.stores.read();
        for msg in self.buf.drain(..) {
            let to = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or_default();
            match stores.get(&to) {
                Some(h)
                    if self.net.allows(self.store_id, to)
                        && !self.net.drops_appends_from(self.store_id, &msg) =>
                {
                    h.on_raft_message(msg);
                    self.net.delivered.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    self.net.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// A PD stand-in: allocates ids and answers split requests.
pub struct SimPd<E: KvEngine> {
    next_id: Arc<AtomicU64>,
    net: Arc<SimNetwork<E>>,
    pub heartbeats: Arc<Mutex<HashMap<u64, (metapb::Region, u64)>>>,
}

impl<E: KvEngine> Clone for SimPd<E> {
    fn clone(&self) -> Self {
        SimPd {
            next_id: self.next_id.clone(),
            net: self.net.clone(),
            heartbeats: self.heartbeats.clone(),
        }
    }
}

impl<E: KvEngine> PdSink for SimPd<E> {
    fn schedule(&self, task: PdTask) {
        match task {
            PdTask::RegionHeartbeat { region, leader, .. } => {
                self.heartbeats.lock().insert(region.id, (region, leader.store_id));
            }
            PdTask::AskBatchSplit { region, split_keys, peer, cb } => {
                let ids = split_keys
                    .iter()
                    .map(|_| SplitIds {
                        new_region_id: self.next_id.fetch_add(1, Ordering::Relaxed),
                        new_peer_ids: region
                            .peers
                            .iter()
                            .map(|_| self.next_id.fetch_add(1, Ordering::Relaxed))
                            .collect(),
                    })
                    .collect();
                let stores = self.net.stores.read();
                if let Some(h) = stores.get(&peer.store_id) {
                    let epoch = region.region_epoch.clone().unwrap_or_default();
                    let _ = h.send(region.id, PeerMsg::ProposeSplit { epoch, split_keys, ids, cb });
                }
            }
            PdTask::ValidatePeer { region, peer } => {
                // The rule PD's worker applies, over the heartbeats seen.
                let pd_region = self.heartbeats.lock().get(&region.id).map(|(r, _)| r.clone());
                let tombstone = pd_region
                    .and_then(|r| atoll_raftstore::stale_peer_tombstone(&region, &peer, &r));
                if let (Some(msg), Some(h)) =
                    (tombstone, self.net.stores.read().get(&peer.store_id))
                {
                    let _ = h.send(region.id, PeerMsg::Raft(Box::new(msg)));
                }
            }
            PdTask::ReportBatchSplit { .. } | PdTask::StoreHeartbeat { .. } => {}
        }
    }
}

pub struct Cluster<E: KvEngine> {
    pub cfg: Config,
    /// Snapshot directories of the stores.
    pub snap_root: tempfile::TempDir,
    keepalive_stop: Arc<std::sync::atomic::AtomicBool>,
    pub engines: HashMap<u64, E>,
    pub systems: HashMap<u64, RaftSystem<E>>,
    pub net: Arc<SimNetwork<E>>,
    pub pd: SimPd<E>,
    /// The harness's routing cache: region id -> region.
    regions: Mutex<HashMap<u64, metapb::Region>>,
}

pub const FIRST_REGION_ID: u64 = 1;

impl<E: KvEngine> Cluster<E> {
    /// Creates `engines.len()` stores (ids 1..=n) holding one region that
    /// covers the whole key space, with a peer on every store.
    pub fn new(cfg: Config, engines: Vec<E>) -> Self {
        let n = engines.len() as u64;
        let region = metapb::Region {
            id: FIRST_REGION_ID,
            start_key: vec![],
            end_key: vec![],
            region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
            peers: (1..=n)
                .map(|s| metapb::Peer { id: 100 + s, store_id: s, ..Default::default() })
                .collect(),
            ..Default::default()
        };
        Self::with_regions(cfg, engines, vec![region])
    }

    /// Stores 1..=n holding `regions` (which must tile the key space; each
    /// region's peers name the stores that get it).
    pub fn with_regions(cfg: Config, engines: Vec<E>, regions_in: Vec<metapb::Region>) -> Self {
        if let Ok(level) = std::env::var("ATOLL_TEST_LOG") {
            atoll_util::logger::init(&level);
        }
        let engines: HashMap<u64, E> =
            engines.into_iter().enumerate().map(|(i, e)| (i as u64 + 1, e)).collect();
        for r in &regions_in {
            for p in &r.peers {
                write_initial_region(&engines[&p.store_id], r).unwrap();
            }
        }
        let net = Arc::new(SimNetwork {
            stores: RwLock::new(HashMap::new()),
            filters: RwLock::new(Filters::default()),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let pd = SimPd {
            next_id: Arc::new(AtomicU64::new(1000)),
            net: net.clone(),
            heartbeats: Default::default(),
        };
        let regions: HashMap<u64, metapb::Region> =
            regions_in.into_iter().map(|r| (r.id, r)).collect();
        let keepalive_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        spawn_keepalives(net.clone(), keepalive_stop.clone(), cfg.base_tick());
        Cluster {
            cfg,
            snap_root: tempfile::tempdir().unwrap(),
            keepalive_stop,
            engines,
            systems: HashMap::new(),
            net,
            pd,
            regions: Mutex::new(regions),
        }
    }

    /// Adds an empty store (no regions); returns its id. Start it with `start_store`.
    pub fn add_engine(&mut self, engine: E) -> u64 {
        let id = self.engines.keys().max().copied().unwrap_or(0) + 1;
        self.engines.insert(id, engine);
        id
    }

    pub fn start_all(&mut self) {
        let ids: Vec<u64> = self.engines.keys().copied().collect();
        for id in ids {
            self.start_store(id);
        }
    }

    pub fn start_store(&mut self, id: u64) {
        assert!(!self.systems.contains_key(&id), "store {id} already running");
        let engine = self.engines[&id].clone();
        let snap = atoll_raftstore::snap::SnapManager::new(
            self.snap_root.path().join(format!("store{id}")),
        )
        .unwrap();
        let mut sys = RaftSystem::new(id, self.cfg.clone(), engine, snap).unwrap();
        self.net.stores.write().insert(id, sys.handle());
        let trans = SimTransport { store_id: id, net: self.net.clone(), buf: vec![] };
        sys.start(trans, self.pd.clone()).unwrap();
        self.systems.insert(id, sys);
    }

    /// Stops a store as a crash would (its engine, the "disk", stays).
    pub fn stop_store(&mut self, id: u64) {
        self.net.stores.write().remove(&id);
        if let Some(mut s) = self.systems.remove(&id) {
            s.shutdown();
        }
    }

    pub fn isolate(&self, id: u64) {
        self.net.filters.write().isolated.insert(id);
    }

    pub fn block(&self, from: u64, to: u64) {
        self.net.filters.write().blocked.insert((from, to));
    }

    /// Drops `store`'s log appends (see `Filters::no_append`) until `heal`.
    pub fn drop_appends_from(&self, store: u64) {
        self.net.filters.write().no_append.insert(store);
    }

    pub fn heal(&self) {
        let mut f = self.net.filters.write();
        f.isolated.clear();
        f.blocked.clear();
        f.no_append.clear();
    }

    pub fn handle(&self, store: u64) -> Option<StoreHandle<E>> {
        self.systems.get(&store).map(|s| s.handle())
    }

    pub fn region_for_key(&self, key: &[u8]) -> metapb::Region {
        let regions = self.regions.lock();
        regions
            .values()
            .find(|r| atoll_raftstore::region_contains(r, key))
            .cloned()
            .expect("harness routing covers every key")
    }

    /// Learns new region shapes from an epoch error.
    fn learn(&self, current: &[metapb::Region]) {
        let mut regions = self.regions.lock();
        for r in current {
            let newer = regions.get(&r.id).is_none_or(|old| {
                let (o, n) = (
                    old.region_epoch.clone().unwrap_or_default(),
                    r.region_epoch.clone().unwrap_or_default(),
                );
                n.version > o.version || n.conf_ver > o.conf_ver
            });
            if newer {
                regions.insert(r.id, r.clone());
            }
        }
    }

    /// Refreshes routing from every running store's engine (after splits).
    pub fn refresh_routing(&self) {
        let mut all = vec![];
        for id in self.systems.keys() {
            all.extend(atoll_raftstore::system::load_regions(&self.engines[id]).unwrap());
        }
        // Keep, per region id, the newest epoch; drop regions overlapped by newer ones.
        self.learn(&all);
        let mut regions = self.regions.lock();
        let snapshot: Vec<metapb::Region> = regions.values().cloned().collect();
        regions.retain(|_, r| {
            !snapshot.iter().any(|o| {
                o.id != r.id
                    && overlaps(o, r)
                    && o.region_epoch.clone().unwrap_or_default().version
                        > r.region_epoch.clone().unwrap_or_default().version
            })
        });
    }

    /// Runs `f` against stores until one accepts, following NotLeader hints
    /// and epoch errors, for at most `timeout`.
    fn retry<T>(
        &self,
        key: &[u8],
        timeout: Duration,
        f: impl Fn(&StoreHandle<E>, &metapb::Region) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + timeout;
        let mut hint: Option<u64> = None;
        let mut last_err = Error::Internal("no store tried".into());
        while Instant::now() < deadline {
            let region = self.region_for_key(key);
            let mut order: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
            if let Some(h) = hint.take() {
                order.retain(|s| *s != h);
                order.insert(0, h);
            }
            for store in order {
                let Some(handle) = self.handle(store) else { continue };
                match f(&handle, &region) {
                    Ok(v) => return Ok(v),
                    Err(Error::NotLeader { leader: Some(l), .. }) if l.store_id != store => {
                        hint = Some(l.store_id);
                        last_err = Error::NotLeader { region_id: region.id, leader: Some(l) };
                        break;
                    }
                    Err(Error::EpochNotMatch { current_regions, msg }) => {
                        self.learn(&current_regions);
                        self.refresh_routing();
                        last_err = Error::EpochNotMatch { current_regions, msg };
                        break;
                    }
                    Err(Error::KeyNotInRegion { region, key }) => {
                        self.refresh_routing();
                        last_err = Error::KeyNotInRegion { region, key };
                        break;
                    }
                    Err(e) => last_err = e,
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(last_err)
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.retry(key, Duration::from_secs(10), |h, region| put_once(h, region, key, value))
    }

    /// One put through `store` only, no retry: its own answer.
    pub fn put_at(&self, store: u64, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let h = self.handle(store).ok_or_else(|| Error::Internal(format!("no store {store}")))?;
        put_once(&h, &self.region_for_key(key), key, value)
    }

    pub fn must_put(&self, key: &[u8], value: &[u8]) {
        self.put(key, value).unwrap_or_else(|e| panic!("put {key:?}: {e}"));
    }

    /// A linearizable read through the leader.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.retry(key, Duration::from_secs(10), |h, region| {
            let (tx, rx) = mpsc::channel();
            h.read(header(region), Box::new(move |r| drop(tx.send(r))));
            let resp =
                rx.recv_timeout(Duration::from_secs(3)).unwrap_or(Err(Error::StaleCommand))?;
            Ok(resp.snapshot.get_value(&keys::data_key(key))?)
        })
    }

    pub fn must_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key).unwrap_or_else(|e| panic!("get {key:?}: {e}"))
    }

    /// The store currently leading the region of `key` (found by writing).
    pub fn leader_store(&self, key: &[u8]) -> u64 {
        let region = self.region_for_key(key);
        self.retry(key, Duration::from_secs(10), |h, r| {
            let (tx, rx) = mpsc::channel();
            h.read(header(r), Box::new(move |res| drop(tx.send(res.map(|_| ())))));
            rx.recv_timeout(Duration::from_secs(3)).unwrap_or(Err(Error::StaleCommand))?;
            Ok(h.store_id)
        })
        .unwrap_or_else(|e| panic!("no leader for region {}: {e}", region.id))
    }

    /// The value of `key` straight from a store's engine (no raft).
    pub fn engine_get(&self, store: u64, key: &[u8]) -> Option<Vec<u8>> {
        self.engines[&store].get_value(&keys::data_key(key)).unwrap()
    }

    /// Asks the leader of `key`'s region to split at `split_key` (keys here
    /// are region keys: the simulated stores have no request boundary).
    pub fn split(&self, key: &[u8], split_key: &[u8]) -> Result<(), Error> {
        self.retry(key, Duration::from_secs(10), |h, region| {
            let (tx, rx) = mpsc::channel();
            let msg = PeerMsg::SplitRegion {
                epoch: region.region_epoch.clone().unwrap_or_default(),
                request: SplitRequest::AtKeys(vec![split_key.to_vec()]),
                cb: Some(Box::new(move |r| drop(tx.send(r.map(|_| ()))))),
            };
            h.send(region.id, msg)?;
            rx.recv_timeout(Duration::from_secs(3))
                .unwrap_or(Err(Error::Undetermined("split timed out".into())))
        })?;
        self.refresh_routing();
        Ok(())
    }

    /// Asks the leader of `key`'s region for one membership change and
    /// waits until it is applied there.
    pub fn change_peer(
        &self,
        key: &[u8],
        change_type: raft::eraftpb::ConfChangeType,
        peer: metapb::Peer,
    ) -> Result<(), Error> {
        self.retry(key, Duration::from_secs(4), |h, region| {
            let (tx, rx) = mpsc::channel();
            let msg = PeerMsg::ChangePeer {
                epoch: region.region_epoch.clone().unwrap_or_default(),
                change_type: change_type as i32,
                peer: peer.clone(),
                cb: Some(Box::new(move |r| drop(tx.send(r.map(|_| ()))))),
            };
            h.send(region.id, msg)?;
            let res = rx
                .recv_timeout(Duration::from_secs(3))
                .unwrap_or(Err(Error::Undetermined("change peer timed out".into())));
            if res.is_err() {
                // Learn the newest membership (a retry must carry its conf_ver).
                self.refresh_routing();
            }
            res
        })?;
        self.refresh_routing();
        Ok(())
    }

    pub fn shutdown(&mut self) {
        let ids: Vec<u64> = self.systems.keys().copied().collect();
        for id in ids {
            self.stop_store(id);
        }
    }
}

impl<E: KvEngine> Drop for Cluster<E> {
    fn drop(&mut self) {
        self.keepalive_stop.store(true, Ordering::Relaxed);
        self.shutdown();
    }
}

/// Every store proves it is alive to every store it can reach, as the real
/// transport's keep-alives do (hibernated followers depend on it).
fn spawn_keepalives<E: KvEngine>(
    net: Arc<SimNetwork<E>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    every: Duration,
) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(every);
            let stores = net.stores.read();
            for (from, _) in stores.iter() {
                for (to, h) in stores.iter() {
                    if from != to && net.allows(*from, *to) {
                        h.store_seen(*from);
                    }
                }
            }
        }
    });
}

fn overlaps(a: &metapb::Region, b: &metapb::Region) -> bool {
    let a_before_b = !a.end_key.is_empty() && a.end_key <= b.start_key;
    let b_before_a = !b.end_key.is_empty() && b.end_key <= a.start_key;
    !a_before_b && !b_before_a
}

fn put_once<E: KvEngine>(
    h: &StoreHandle<E>,
    region: &metapb::Region,
    key: &[u8],
    value: &[u8],
) -> Result<(), Error> {
    let req = RaftCmdRequest {
        header: Some(header(region)),
        requests: vec![Request {
            cmd_type: CmdType::Put as i32,
            put: Some(PutRequest { cf: String::new(), key: key.to_vec(), value: value.to_vec() }),
            ..Default::default()
        }],
        admin_request: None,
    };
    let (tx, rx) = mpsc::channel();
    h.write(req, Box::new(move |r| drop(tx.send(r.map(|_| ())))));
    rx.recv_timeout(Duration::from_secs(3))
        .unwrap_or(Err(Error::Undetermined("write timed out".into())))
}

pub fn header(region: &metapb::Region) -> RaftRequestHeader {
    RaftRequestHeader {
        region_id: region.id,
        peer: None,
        region_epoch: region.region_epoch.clone(),
        term: 0,
    }
}

/// Polls `f` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}
