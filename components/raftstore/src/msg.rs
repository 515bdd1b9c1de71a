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
/// was applied, and the region it is valid for.
pub struct ReadResponse<S> {
    pub snapshot: Arc<S>,
    pub region: metapb::Region,
}

pub type ReadCallback<S> = Box<dyn FnOnce(Result<ReadResponse<S>>) + Send>;

/// Region ids and peer ids PD allocated for one split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitIds {
    pub new_region_id: u64,
    pub new_peer_ids: Vec<u64>,
}

/// Messages for a peer FSM.
pub enum PeerMsg<E: KvEngine> {
    /// A raft message from another store.
    Raft(Box<RaftMessage>),
    /// Propose a write; `cb` fires when it is applied (or fails).
    Write { req: RaftCmdRequest, cb: WriteCallback },
    /// Linearizable read via read index.
    Read { header: RaftRequestHeader, cb: ReadCallback<E::Snapshot> },
    /// One raft tick.
    Tick,
    /// Results of the apply pool.
    ApplyRes(Box<crate::apply::ApplyRes>),
    /// Split at these (encoded) keys: ask PD for ids first.
    SplitRegion { epoch: metapb::RegionEpoch, split_keys: Vec<Vec<u8>>, cb: Option<WriteCallback> },
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
    /// Periodic, also while hibernating: leaders report to PD.
    PdTick,
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
