//! Wiring: the raft and apply batch systems, the ticker, loading peers from
//! disk at start, and [`StoreHandle`], the API the server uses.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use atoll_batch_system::{BatchSystem, SendError};
use atoll_engine_traits::{KvEngine, WriteBatch, WriteOptions, CF_RAFT};
use atoll_proto::atollpb::{
    PeerState, RaftCmdRequest, RaftMessage, RaftRequestHeader, RegionLocalState, StoreIdent,
};
use atoll_proto::metapb;
use prost::Message as _;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::fsm::apply::{ApplyControlFsm, ApplyFsm, ApplyPollerBuilder};
use crate::fsm::{
    register_region, ApplyRouter, PeerFsm, PollContext, RaftPollerBuilder, RaftRouter, StoreFsm,
    RAFT_WB_CAPACITY,
};
use crate::msg::{PeerMsg, PeerTick, ReadCallback, StoreMsg, WriteCallback};
use crate::peer::Peer;
use crate::snap::SnapManager;
use crate::storage::{load_pb, write_initial_region_states};
use crate::store_meta::StoreShared;
use crate::transport::{PdSink, Transport};
use crate::worker::{SnapGenerator, SplitChecker};
use crate::{keys, Error as StoreError};

/// Reads the store's identity, if it was ever bootstrapped.
pub fn load_store_ident(engine: &impl KvEngine) -> Result<Option<StoreIdent>> {
    load_pb(engine, keys::STORE_IDENT_KEY)
}

/// Records the store's identity; refuses to overwrite a different one.
pub fn write_store_ident(engine: &impl KvEngine, ident: &StoreIdent) -> Result<()> {
    if let Some(old) = load_store_ident(engine)? {
        if &old != ident {
            return Err(Error::InvalidRequest(format!(
                "engine belongs to store {} of cluster {}, not store {} of cluster {}",
                old.store_id, old.cluster_id, ident.store_id, ident.cluster_id
            )));
        }
        return Ok(());
    }
    let mut wb = engine.write_batch();
    wb.put_cf(CF_RAFT, keys::STORE_IDENT_KEY, &ident.encode_to_vec())?;
    engine.write(&mut wb, WriteOptions::sync())?;
    Ok(())
}

/// Writes the initial state of a region this store holds a peer of
/// (bootstrap). A region that already exists is left alone.
pub fn write_initial_region(engine: &impl KvEngine, region: &metapb::Region) -> Result<bool> {
    if load_pb::<RegionLocalState>(engine, &keys::region_state_key(region.id))?.is_some() {
        return Ok(false);
    }
    let mut wb = engine.write_batch();
    write_initial_region_states(&mut wb, region)?;
    engine.write(&mut wb, WriteOptions::sync())?;
    Ok(true)
}

/// Marks a region prepared by [`write_initial_region`] as never used (e.g.
/// another store won the bootstrap race), so it is not loaded at start.
pub fn abandon_initial_region(engine: &impl KvEngine, region: &metapb::Region) -> Result<()> {
    let mut wb = engine.write_batch();
    crate::storage::write_region_state(&mut wb, region, PeerState::Tombstone)?;
    engine.write(&mut wb, WriteOptions::sync())?;
    Ok(())
}

/// Every live region recorded on this store.
pub fn load_regions(engine: &impl KvEngine) -> Result<Vec<metapb::Region>> {
    let states = load_region_states(engine)?;
    Ok(states
        .into_iter()
        .filter(|s| s.state == PeerState::Normal as i32)
        .filter_map(|s| s.region)
        .collect())
}

fn load_region_states(engine: &impl KvEngine) -> Result<Vec<RegionLocalState>> {
    let (start, end) = keys::region_meta_range();
    let mut out = vec![];
    engine.scan_cf(CF_RAFT, &start, &end, false, &mut |k, v| {
        let s = RegionLocalState::decode(v).map_err(|e| {
            atoll_engine_traits::Error::Corruption(format!("region state {k:?}: {e}"))
        })?;
        out.push(s);
        Ok(true)
    })?;
    Ok(out)
}

/// Finishes removals a restart interrupted. A membership change that
/// removes this store's peer writes the tombstone when it is applied; the
/// peer then deletes the region's raft log, states and data
/// (`Peer::finish_destroy`). A tombstone whose raft state is still here
/// never got that far: delete its log and states, and its data wherever no
/// live region owns the range now. Returns the regions cleared.
pub fn clear_stale_regions(engine: &impl KvEngine) -> Result<Vec<u64>> {
    let states = load_region_states(engine)?;
    let live: Vec<&metapb::Region> = states
        .iter()
        .filter(|s| s.state == PeerState::Normal as i32)
        .filter_map(|s| s.region.as_ref())
        .collect();
    let mut wb = engine.write_batch();
    let mut cleared = vec![];
    for s in states.iter().filter(|s| s.state == PeerState::Tombstone as i32) {
        let Some(region) = &s.region else { continue };
        let has_state = engine.get_value_cf(CF_RAFT, &keys::raft_state_key(region.id))?.is_some()
            || engine.get_value_cf(CF_RAFT, &keys::apply_state_key(region.id))?.is_some();
        if !has_state {
            continue;
        }
        crate::operation::life::clear_region_meta(&mut wb, region.id)?;
        if region.peers.is_empty() {
            // Never initialized: it has no data.
            cleared.push(region.id);
            continue;
        }
        for (start, end) in uncovered(&region.start_key, &region.end_key, &live) {
            let r = metapb::Region { start_key: start, end_key: end, ..Default::default() };
            let (ds, de) = crate::snap::region_data_range(&r);
            for cf in atoll_engine_traits::DATA_CFS {
                wb.delete_range_cf(cf, &ds, &de)?;
            }
        }
        cleared.push(region.id);
    }
    if !cleared.is_empty() {
        engine.write(&mut wb, WriteOptions::sync())?;
        tracing::info!(regions = ?cleared, "finished removing regions a restart interrupted");
    }
    Ok(cleared)
}

/// The parts of the region key range `[start, end)` (empty end: no upper
/// bound) that none of `live` covers, in order.
fn uncovered(start: &[u8], end: &[u8], live: &[&metapb::Region]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let before_end = |k: &[u8]| end.is_empty() || k < end;
    let mut covering: Vec<&&metapb::Region> = live
        .iter()
        .filter(|r| {
            before_end(&r.start_key) && (r.end_key.is_empty() || r.end_key.as_slice() > start)
        })
        .collect();
    covering.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    let mut out = vec![];
    let mut at = start.to_vec();
    for r in covering {
        if r.start_key > at {
            out.push((at.clone(), r.start_key.clone()));
        }
        if r.end_key.is_empty() {
            return out;
        }
        if r.end_key > at {
            at = r.end_key.clone();
        }
    }
    if before_end(&at) {
        out.push((at, end.to_vec()));
    }
    out
}

/// A cheap, cloneable handle for sending work to the store's regions.
pub struct StoreHandle<E: KvEngine> {
    pub store_id: u64,
    router: RaftRouter<E>,
    shared: Arc<StoreShared>,
    snap_mgr: SnapManager,
}

impl<E: KvEngine> Clone for StoreHandle<E> {
    fn clone(&self) -> Self {
        StoreHandle {
            store_id: self.store_id,
            router: self.router.clone(),
            shared: self.shared.clone(),
            snap_mgr: self.snap_mgr.clone(),
        }
    }
}

fn send_error<M>(region_id: u64, e: SendError<M>) -> (StoreError, M) {
    match e {
        SendError::Full(m) => (Error::Busy(format!("region {region_id} mailbox is full")), m),
        SendError::NotFound(m) | SendError::Disconnected(m) => {
            (Error::RegionNotFound(region_id), m)
        }
    }
}

impl<E: KvEngine> StoreHandle<E> {
    /// Delivers a raft message from another store.
    pub fn on_raft_message(&self, msg: RaftMessage) {
        let id = msg.region_id;
        match self.router.send(id, PeerMsg::Raft(Box::new(msg))) {
            Ok(()) => {}
            Err(SendError::NotFound(PeerMsg::Raft(m))) => {
                let _ = self.router.send_control(StoreMsg::Raft(m));
            }
            Err(_) => {
                crate::metrics::RAFT_MESSAGES_DROPPED.with_label_values(&["mailbox_full"]).inc()
            }
        }
    }

    pub fn write(&self, req: RaftCmdRequest, cb: WriteCallback) {
        let id = req.header.as_ref().map(|h| h.region_id).unwrap_or_default();
        if let Err(e) = self.router.send(id, PeerMsg::Write { req, cb }) {
            let (err, msg) = send_error(id, e);
            if let PeerMsg::Write { cb, .. } = msg {
                cb(Err(err));
            }
        }
    }

    pub fn read(&self, header: RaftRequestHeader, cb: ReadCallback<E::Snapshot>) {
        let id = header.region_id;
        if let Err(e) = self.router.send(id, PeerMsg::Read { header, cb }) {
            let (err, msg) = send_error(id, e);
            if let PeerMsg::Read { cb, .. } = msg {
                cb(Err(err));
            }
        }
    }

    /// Sends any peer message; fails if the region is unknown or busy.
    pub fn send(&self, region_id: u64, msg: PeerMsg<E>) -> Result<()> {
        self.router.send(region_id, msg).map_err(|e| send_error(region_id, e).0)
    }

    pub fn region_count(&self) -> usize {
        self.router.len()
    }

    /// Every region this store leads reports to PD now (e.g. to a new PD
    /// leader, which knows regions but not their leaders).
    pub fn heartbeat_regions(&self) {
        self.router.broadcast_normal(|| PeerMsg::Tick(PeerTick::PdHeartbeat));
    }

    /// Copies of this store's initialized regions, for background work that
    /// then addresses each region through `read` / `write` (which refuse
    /// where this store's peer is not the leader).
    pub fn regions(&self) -> Vec<metapb::Region> {
        self.shared.meta.lock().regions().cloned().collect()
    }

    /// Another store proved it is alive (any batch, even an empty keep-alive).
    pub fn store_seen(&self, store_id: u64) {
        self.shared.store_seen(store_id);
    }

    /// Where received snapshot files go (see [`crate::snap`]).
    pub fn snap_mgr(&self) -> &SnapManager {
        &self.snap_mgr
    }

    /// Regions currently ticking (not hibernated).
    pub fn ticking_count(&self) -> usize {
        self.shared.ticking.len()
    }
}

/// The raftstore of one store process.
pub struct RaftSystem<E: KvEngine> {
    store_id: u64,
    cfg: Arc<Config>,
    engine: E,
    raft: BatchSystem<PeerFsm<E>, StoreFsm>,
    apply: BatchSystem<ApplyFsm, ApplyControlFsm>,
    router: RaftRouter<E>,
    apply_router: ApplyRouter,
    shared: Arc<StoreShared>,
    snap_mgr: SnapManager,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl<E: KvEngine> RaftSystem<E> {
    pub fn new(store_id: u64, cfg: Config, engine: E, snap_mgr: SnapManager) -> Result<Self> {
        cfg.validate().map_err(Error::InvalidRequest)?;
        let raft = BatchSystem::new(
            &format!("raftstore-{store_id}"),
            atoll_batch_system::Config {
                pool_size: cfg.store_pool_size,
                max_batch_size: cfg.store_max_batch_size,
                mailbox_capacity: cfg.mailbox_capacity,
            },
            Box::new(StoreFsm { store_id, started_at: std::time::Instant::now() }),
        );
        let apply = BatchSystem::new(
            &format!("apply-{store_id}"),
            atoll_batch_system::Config {
                pool_size: cfg.apply_pool_size,
                max_batch_size: cfg.apply_max_batch_size,
                mailbox_capacity: cfg.mailbox_capacity,
            },
            Box::new(ApplyControlFsm),
        );
        Ok(RaftSystem {
            store_id,
            router: raft.router(),
            apply_router: apply.router(),
            raft,
            apply,
            cfg: Arc::new(cfg),
            engine,
            shared: Arc::new(StoreShared::default()),
            snap_mgr,
            stop: Arc::new(AtomicBool::new(false)),
            ticker: None,
        })
    }

    pub fn handle(&self) -> StoreHandle<E> {
        StoreHandle {
            store_id: self.store_id,
            router: self.router.clone(),
            shared: self.shared.clone(),
            snap_mgr: self.snap_mgr.clone(),
        }
    }

    /// Loads every region from disk, starts the pollers and the ticker.
    pub fn start<T: Transport, P: PdSink>(&mut self, trans: T, pd: P) -> Result<()> {
        let logger = atoll_util::logger::raft_logger();
        clear_stale_regions(&self.engine)?;
        let regions = load_regions(&self.engine)?;
        for region in regions {
            let peer = Peer::create(
                self.store_id,
                &self.cfg,
                self.engine.clone(),
                region.clone(),
                &self.shared,
                &logger,
            )?;
            let mut meta = self.shared.meta.lock();
            meta.set_region(&region);
            register_region(&self.router, &self.apply_router, peer);
        }
        tracing::info!(store = self.store_id, regions = self.router.len(), "raftstore starting");
        // Workers stop on their own once every sender (held by pollers) is gone.
        let (snap_gen, _) =
            SnapGenerator::spawn(&format!("snap-gen-{}", self.store_id), self.snap_mgr.clone());
        let (split_checker, _) = SplitChecker::spawn(
            &format!("split-check-{}", self.store_id),
            self.engine.clone(),
            self.cfg.split_thresholds(),
            self.router.clone(),
        );
        self.apply.spawn(ApplyPollerBuilder {
            engine: self.engine.clone(),
            raft_router: self.router.clone(),
            snap_gen,
        });
        let cfg = &self.cfg;
        self.raft.spawn(RaftPollerBuilder {
            template: PollContext {
                cfg: cfg.clone(),
                store_id: self.store_id,
                engine: self.engine.clone(),
                raft_wb: self.engine.write_batch_with_cap(RAFT_WB_CAPACITY),
                trans,
                pd,
                router: self.router.clone(),
                apply_router: self.apply_router.clone(),
                logger,
                shared: self.shared.clone(),
                snap_mgr: self.snap_mgr.clone(),
                split_checker,
                gc_ticks: cfg.ticks(cfg.raft_log_gc_tick_interval),
                split_check_ticks: cfg.ticks(cfg.split_region_check_tick_interval),
            },
        });
        self.start_ticker();
        Ok(())
    }

    /// Drives raft time: a tick to every peer each base interval, and the
    /// store heartbeat tick.
    /// Drives time: a raft tick to every awake region each base interval,
    /// PD ticks to every region (hibernated or not), and the store's ticks.
    fn start_ticker(&mut self) {
        let router = self.router.clone();
        let shared = self.shared.clone();
        let stop = self.stop.clone();
        let base = self.cfg.base_tick();
        let store_ticks = self.cfg.ticks(self.cfg.pd_store_heartbeat_tick_interval);
        let pd_ticks = self.cfg.ticks(self.cfg.pd_heartbeat_tick_interval);
        let liveness_ticks = self.cfg.raft_heartbeat_ticks as u64;
        let h = std::thread::Builder::new()
            .name(format!("raft-ticker-{}", self.store_id))
            .spawn(move || {
                let mut n = 0u64;
                let mut awake: Vec<u64> = vec![];
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(base);
                    n += 1;
                    awake.clear();
                    awake.extend(shared.ticking.iter().map(|id| *id));
                    for id in &awake {
                        // A full mailbox has work queued anyway; skip its tick.
                        let _ = router.send(*id, PeerMsg::Tick(PeerTick::Raft));
                    }
                    if n.is_multiple_of(pd_ticks) {
                        router.broadcast_normal(|| PeerMsg::Tick(PeerTick::PdHeartbeat));
                    }
                    if n.is_multiple_of(store_ticks) {
                        let _ = router.send_control(StoreMsg::Tick);
                    }
                    if n.is_multiple_of(liveness_ticks) {
                        let _ = router.send_control(StoreMsg::CheckLiveness);
                    }
                }
            })
            .expect("spawn ticker");
        self.ticker = Some(h);
    }

    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.ticker.take() {
            let _ = h.join();
        }
        // Dropping the peer FSMs takes their regions out of the gauges.
        self.raft.shutdown();
        self.apply.shutdown();
    }
}

impl<E: KvEngine> Drop for RaftSystem<E> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use atoll_engine_memory::MemoryEngine;
    use atoll_engine_traits::{Peekable, CF_DEFAULT};

    use super::*;

    fn region(id: u64, start: &[u8], end: &[u8], peers: usize) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
            peers: (0..peers as u64)
                .map(|i| metapb::Peer { id: id * 10 + i, store_id: i + 1, ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn uncovered_subtracts_live_ranges() {
        let live = [region(1, b"b", b"d", 1), region(2, b"f", b"", 1)];
        let live: Vec<&metapb::Region> = live.iter().collect();
        let v = |s: &[u8], e: &[u8]| (s.to_vec(), e.to_vec());
        assert_eq!(uncovered(b"a", b"z", &live), vec![v(b"a", b"b"), v(b"d", b"f")]);
        assert_eq!(uncovered(b"", b"", &live), vec![v(b"", b"b"), v(b"d", b"f")]);
        assert_eq!(uncovered(b"b", b"d", &live), vec![]);
        assert_eq!(uncovered(b"c", b"e", &live), vec![v(b"d", b"e")]);
        assert_eq!(uncovered(b"a", b"b", &live), vec![v(b"a", b"b")]);
        assert_eq!(uncovered(b"a", b"", &[]), vec![v(b"a", b"")]);
    }

    /// A restart between the apply of our own removal (tombstone written)
    /// and the peer's cleanup: the log, states and the data nobody owns
    /// now go; a live neighbour's data and state stay.
    #[test]
    fn restart_finishes_an_interrupted_removal() {
        let engine = MemoryEngine::new();
        let removed = region(7, b"a", b"m", 3);
        let neighbour = region(8, b"k", b"z", 3); // took over [k, m) since
        let mut wb = engine.write_batch();
        write_initial_region_states(&mut wb, &removed).unwrap();
        write_initial_region_states(&mut wb, &neighbour).unwrap();
        crate::storage::write_region_state(&mut wb, &removed, PeerState::Tombstone).unwrap();
        for k in [b"b", b"l"] {
            wb.put_cf(CF_DEFAULT, &keys::data_key(k), b"v").unwrap();
        }
        engine.write(&mut wb, WriteOptions::sync()).unwrap();

        assert_eq!(clear_stale_regions(&engine).unwrap(), vec![7]);
        let get = |k: &[u8]| engine.get_value_cf(CF_RAFT, k).unwrap();
        assert!(get(&keys::raft_state_key(7)).is_none());
        assert!(get(&keys::apply_state_key(7)).is_none());
        assert!(get(&keys::region_state_key(7)).is_some(), "the tombstone stays");
        assert!(get(&keys::raft_state_key(8)).is_some());
        assert!(engine.get_value_cf(CF_DEFAULT, &keys::data_key(b"b")).unwrap().is_none());
        assert!(engine.get_value_cf(CF_DEFAULT, &keys::data_key(b"l")).unwrap().is_some());
        assert_eq!(load_regions(&engine).unwrap(), vec![neighbour]);
        // Done once: nothing left to clear.
        assert!(clear_stale_regions(&engine).unwrap().is_empty());
    }
}
