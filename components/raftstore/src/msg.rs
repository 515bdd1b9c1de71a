//! Messages between the server, the raft pollers and the apply pollers.

use std::sync::Arc;

use atoll_engine_traits::KvEngine;
use atoll_proto::atollpb::{RaftCmdRequest, RaftMessage, RaftRequestHeader};
use atoll_proto::metapb;

use crate::error::Result;

/// Outcome of a compare-and-swap, decided at apply time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CasResult {
    pub succeed: bool,
    /// The stored (encoded) previous value, if any.
    pub previous: Option<Vec<u8>>,
}

/// What a write returns once applied.
#[derive(Clone, Debug, Default)]
pub struct WriteResponse {
    pub cas: Option<CasResult>,
}

pub type WriteCallback = Box<dyn FnOnce(Result<WriteResponse>) + Send>;

/// A linearizable read view: the engine snapshot taken after the read index
/// was applied, the region it is valid for, and the leader's term then. A
/// write computed from the snapshot carries that term in its header, so it
/// is refused if leadership changed in between (see `Peer::propose_write`).
pub struct ReadResponse<S> {
    pub snapshot: Arc<S>,
    pub region: metapb::Region,
    pub term: u64,
}

pub type ReadCallback<S> = Box<dyn FnOnce(Result<ReadResponse<S>>) + Send>;

/// Region ids and peer ids PD allocated for one split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitIds {
    pub new_region_id: u64,
    pub new_peer_ids: Vec<u64>,
}

/// The periodic work of a peer. The store's ticker sends `Raft` to
/// regions that are awake and `PdHeartbeat` to all; the others are due
/// every so many raft ticks ([`PeerTick::due_after_raft_tick`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerTick {
    /// Advance raft's clock (elections, heartbeats) and retry stale reads.
    Raft,
    /// Leader: compact the raft log that every replica has.
    RaftLogGc,
    /// Leader: measure the region if enough was written since last time.
    SplitCheck,
    /// Leader: report the region to PD (also while hibernating).
    PdHeartbeat,
}

impl PeerTick {
    /// The ticks due after raft tick number `ticks` (counted from 1): GC and
    /// split checks every `gc_ticks` / `split_check_ticks`, leaders only.
    pub fn due_after_raft_tick(
        ticks: u64,
        leader: bool,
        gc_ticks: u64,
        split_check_ticks: u64,
    ) -> impl Iterator<Item = PeerTick> {
        let gc = leader && ticks.is_multiple_of(gc_ticks.max(1));
        let split = leader && ticks.is_multiple_of(split_check_ticks.max(1));
        [(gc, PeerTick::RaftLogGc), (split, PeerTick::SplitCheck)]
            .into_iter()
            .filter_map(|(due, t)| due.then_some(t))
    }
}

/// What a split asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitRequest {
    /// At these region keys (checked with `check_split_keys`).
    AtKeys(Vec<Vec<u8>>),
    /// In half by size: the split checker scans the region for its middle
    /// key. Atoll answers PD's `Scan` and `Approximate` policies this way.
    Half,
}

impl SplitRequest {
    /// PD's split command (`pdpb.SplitRegion`): `Usekey` names the keys;
    /// the other policies split in half and name none.
    pub fn from_pd(policy: i32, keys: Vec<Vec<u8>>) -> std::result::Result<Self, String> {
        use atoll_proto::pdpb::CheckPolicy;
        match CheckPolicy::try_from(policy) {
            Ok(CheckPolicy::Usekey) if keys.is_empty() => {
                Err("split with policy Usekey names no keys".into())
            }
            Ok(CheckPolicy::Usekey) => Ok(SplitRequest::AtKeys(keys)),
            Ok(p @ (CheckPolicy::Scan | CheckPolicy::Approximate)) if !keys.is_empty() => {
                Err(format!("split with policy {p:?} names {} keys", keys.len()))
            }
            Ok(CheckPolicy::Scan | CheckPolicy::Approximate) => Ok(SplitRequest::Half),
            Err(_) => Err(format!("unknown split policy {policy}")),
        }
    }
}

/// Messages for a peer FSM.
pub enum PeerMsg<E: KvEngine> {
    /// A raft message from another store.
    Raft(Box<RaftMessage>),
    /// Propose a write; `cb` fires when it is applied (or fails).
    Write { req: RaftCmdRequest, cb: WriteCallback },
    /// Linearizable read via read index.
    Read { header: RaftRequestHeader, cb: ReadCallback<E::Snapshot> },
    /// Periodic work.
    Tick(PeerTick),
    /// Results of the apply pool.
    ApplyRes(Box<crate::apply::ApplyRes>),
    /// The apply FSM stopped for good (after `ApplyMsg::Destroy`): the
    /// peer may now delete the region from this store.
    ApplyDestroyed,
    /// Split (keys: ask PD for ids first; half: measure first). `cb`
    /// fires once a split at keys is applied, or when it is refused.
    SplitRegion { epoch: metapb::RegionEpoch, request: SplitRequest, cb: Option<WriteCallback> },
    /// PD answered with ids for a split; propose it.
    ProposeSplit {
        epoch: metapb::RegionEpoch,
        split_keys: Vec<Vec<u8>>,
        ids: Vec<SplitIds>,
        cb: Option<WriteCallback>,
    },
    /// Hand leadership to another peer of the region.
    TransferLeader { peer: metapb::Peer },
    /// Become a candidate now (a region just created by a split on the leader's store).
    Campaign,
    /// A raft message of a newer region overlapping this one found no peer
    /// here: this peer may be stale (removed, or split away, while it could
    /// not hear); it asks PD (TiKV's `CasualMessage::RegionOverlapped`).
    RegionOverlapped,
    /// Add, promote or remove a peer (`change_type` is an eraftpb
    /// `ConfChangeType`); ignored unless `epoch` is current.
    ChangePeer {
        epoch: metapb::RegionEpoch,
        change_type: i32,
        peer: metapb::Peer,
        cb: Option<WriteCallback>,
    },
    /// The split checker measured the region (split keys are encoded).
    SplitCheckResult { epoch: metapb::RegionEpoch, size: u64, keys: u64, split_keys: Vec<Vec<u8>> },
    /// The transport finished (or failed) sending a snapshot to `to_peer_id`.
    SnapshotReport { to_peer_id: u64, ok: bool },
    /// Resume ticking (a hibernated follower's leader store went silent).
    Wake,
}

/// Messages for the store FSM.
pub enum StoreMsg {
    /// A raft message for a region this store does not have.
    Raft(Box<RaftMessage>),
    /// Periodic: send the store heartbeat.
    Tick,
    /// Periodic (every raft heartbeat interval): wake hibernated followers
    /// whose leader's store has gone silent.
    CheckLiveness,
}
