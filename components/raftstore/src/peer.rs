//! `Peer`: one replica of one region on this store — the raft group, its
//! storage, waiting proposals and reads. Operations live in `operation/`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use atoll_engine_traits::KvEngine;
use atoll_proto::metapb;
use raft::eraftpb::Message;
use raft::{RawNode, Ready, StateRole};

use crate::apply::Proposal;
use crate::book::RegionBook;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::operation::read::ReadQueue;
use crate::storage::PeerStorage;
use crate::store_meta::StoreShared;

pub struct Peer<E: KvEngine> {
    tag: String,
    meta: metapb::Peer,
    pub(crate) raft: RawNode<PeerStorage<E>>,
    /// Writes proposed by this peer as leader, in index order.
    pub(crate) proposals: VecDeque<Proposal>,
    pub(crate) reads: ReadQueue<E::Snapshot>,
    /// Other peers of the region by peer id (for addressing messages).
    pub(crate) peer_cache: HashMap<u64, metapb::Peer>,
    /// A ready whose log writes are in this round's write batch.
    pub(crate) pending_ready: Option<(Ready, Vec<Message>)>,
    pub(crate) ticks: u64,
    /// The region's entries in store-level counts and sets (leader,
    /// hibernated); dropping the peer takes them out.
    pub(crate) book: RegionBook,
    /// Bytes and keys written since the last PD heartbeat.
    pub(crate) written_bytes: u64,
    pub(crate) written_keys: u64,
    /// Removed from the store: state deleted, mailboxes closed.
    pub(crate) stopped: bool,
    /// Removal started: waiting for the apply FSM to stop (see
    /// `Peer::destroy`). The peer no longer takes part in raft.
    pub(crate) destroying: bool,
    /// Highest log index handed to the apply FSM.
    pub(crate) apply_sent_index: u64,
    /// Ticks since anything but heartbeats happened.
    pub(crate) idle_ticks: u64,
    /// Measured by the split checker (leader only; `None` until measured).
    pub(crate) approximate_size: Option<u64>,
    pub(crate) approximate_keys: Option<u64>,
    /// Bytes written since the last split check.
    pub(crate) split_check_diff: u64,
    /// Set when this round's ready installed a snapshot at this index.
    pub(crate) snapshot_applied: Option<u64>,
    /// Lagging peers at the last tick (a change triggers a PD heartbeat).
    pub(crate) last_pending_count: usize,
    /// When this peer last asked PD whether it is stale.
    pub(crate) stale_check_at: Option<std::time::Instant>,
}

impl<E: KvEngine> Peer<E> {
    /// Builds a peer from its persisted state.
    pub fn create(
        store_id: u64,
        cfg: &Config,
        engine: E,
        region: metapb::Region,
        shared: &Arc<StoreShared>,
        logger: &slog::Logger,
    ) -> Result<Self> {
        let meta =
            region.peers.iter().find(|p| p.store_id == store_id).cloned().ok_or_else(|| {
                Error::Internal(format!("region {} has no peer on store {store_id}", region.id))
            })?;
        let storage = PeerStorage::load(engine, region, cfg.raft_entry_cache_limit)?;
        Self::new(meta, storage, cfg, shared, logger)
    }

    /// A peer for a region this store has no data of yet (it was added to
    /// the region elsewhere): it waits for the leader's snapshot.
    pub fn create_uninitialized(
        meta: metapb::Peer,
        region_id: u64,
        cfg: &Config,
        engine: E,
        shared: &Arc<StoreShared>,
        logger: &slog::Logger,
    ) -> Result<Self> {
        let storage = PeerStorage::uninitialized(engine, region_id, cfg.raft_entry_cache_limit)?;
        Self::new(meta, storage, cfg, shared, logger)
    }

    fn new(
        meta: metapb::Peer,
        storage: PeerStorage<E>,
        cfg: &Config,
        shared: &Arc<StoreShared>,
        logger: &slog::Logger,
    ) -> Result<Self> {
        let region = storage.region.clone();
        let applied = storage.applied_index();
        let raft_cfg = raft::Config {
            id: meta.id,
            election_tick: cfg.raft_election_timeout_ticks,
            heartbeat_tick: cfg.raft_heartbeat_ticks,
            applied,
            max_size_per_msg: cfg.raft_max_size_per_msg.0,
            max_inflight_msgs: cfg.raft_max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            skip_bcast_commit: false,
            ..Default::default()
        };
        raft_cfg.validate()?;
        let tag = format!("[region {}] {}", region.id, meta.id);
        let logger = logger.new(slog::o!("region_id" => region.id, "peer_id" => meta.id));
        let raft = RawNode::new(&raft_cfg, storage, &logger)?;
        let peer_cache = region.peers.iter().map(|p| (p.id, p.clone())).collect();
        Ok(Peer {
            tag,
            meta,
            raft,
            proposals: VecDeque::new(),
            reads: ReadQueue::default(),
            peer_cache,
            pending_ready: None,
            ticks: 0,
            book: RegionBook::open(region.id, shared.clone()),
            written_bytes: 0,
            written_keys: 0,
            stopped: false,
            destroying: false,
            apply_sent_index: applied,
            idle_ticks: 0,
            approximate_size: None,
            approximate_keys: None,
            // Unknown size: measure at the first chance.
            split_check_diff: u64::MAX / 2,
            snapshot_applied: None,
            last_pending_count: 0,
            stale_check_at: None,
        })
    }

    /// `[region N] peer-id`, for logs.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// This peer.
    pub fn meta(&self) -> &metapb::Peer {
        &self.meta
    }

    pub fn is_initialized(&self) -> bool {
        self.raft.store().is_initialized()
    }

    pub fn region(&self) -> &metapb::Region {
        &self.raft.store().region
    }

    pub fn region_id(&self) -> u64 {
        self.raft.store().region.id
    }

    pub fn epoch(&self) -> metapb::RegionEpoch {
        self.region().region_epoch.clone().unwrap_or_default()
    }

    pub fn is_leader(&self) -> bool {
        self.raft.raft.state == StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.raft.raft.term
    }

    /// The leader as far as this peer knows.
    pub fn leader(&self) -> Option<metapb::Peer> {
        let id = self.raft.raft.leader_id;
        (id != raft::INVALID_ID).then(|| self.peer_cache.get(&id).cloned()).flatten()
    }

    pub fn not_leader(&self) -> Error {
        Error::NotLeader { region_id: self.region_id(), leader: self.leader() }
    }

    /// Replaces the region (after a split, conf change or snapshot) in
    /// storage and the peer cache, and this peer's own role.
    pub fn set_region(&mut self, region: metapb::Region) {
        for p in &region.peers {
            self.peer_cache.insert(p.id, p.clone());
            if p.id == self.meta.id {
                self.meta = p.clone();
            }
        }
        self.raft.mut_store().region = region;
    }

    /// Checks that a request's epoch is current; `check_conf` also compares
    /// membership version (admin commands).
    pub fn check_epoch(&self, sent: Option<&metapb::RegionEpoch>, check_conf: bool) -> Result<()> {
        crate::check_epoch(self.region(), sent, check_conf)
    }

    /// Is `key` (a raw, unencoded key) inside this region?
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        crate::check_key_in_region(self.region(), key, key)
    }
}
