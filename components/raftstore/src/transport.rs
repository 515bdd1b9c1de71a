//! What raftstore needs from the outside, as traits: a transport to other
//! stores and a sink for work that talks to PD. The server crate provides
//! gRPC/PD-backed implementations; tests provide simulated ones.

use atoll_proto::atollpb::RaftMessage;
use atoll_proto::metapb;

use crate::msg::WriteCallback;

/// Why a raft message was not queued. Raft treats a lost message like a
/// dropped packet; the variant is the `reason` label of the drop metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("message without a target store")]
    NoTarget,
    #[error("store {0} is unreachable")]
    Unreachable(u64),
    #[error("queue to store {0} is full")]
    Full(u64),
    #[error("sender to store {0} stopped")]
    Stopped(u64),
}

impl TransportError {
    /// The drop metric's `reason` label.
    pub fn label(&self) -> &'static str {
        match self {
            TransportError::NoTarget => "no_target",
            TransportError::Unreachable(_) => "unreachable",
            TransportError::Full(_) => "queue_full",
            TransportError::Stopped(_) => "transport_stopped",
        }
    }
}

/// Sends raft messages to other stores.
pub trait Transport: Send + Clone + 'static {
    /// Queues `msg`, or says why not.
    fn send(&mut self, msg: RaftMessage) -> Result<(), TransportError>;
    /// Pushes out everything queued (called once per poll round).
    fn flush(&mut self);
    /// Streams the snapshot file at `path` followed by `msg` (a MsgSnapshot)
    /// to the target store, off the raft thread; `done(ok)` reports the outcome.
    fn send_snapshot(
        &mut self,
        msg: RaftMessage,
        path: std::path::PathBuf,
        done: Box<dyn FnOnce(bool) + Send>,
    );
}

/// Per-region statistics reported in a region heartbeat.
#[derive(Clone, Debug, Default)]
pub struct RegionStats {
    pub approximate_size: u64,
    pub approximate_keys: u64,
    pub written_bytes: u64,
    pub written_keys: u64,
    pub pending_peers: Vec<metapb::Peer>,
    pub down_peers: Vec<(metapb::Peer, u64)>,
}

/// Work for the PD worker.
pub enum PdTask {
    RegionHeartbeat {
        term: u64,
        region: metapb::Region,
        leader: metapb::Peer,
        stats: RegionStats,
    },
    /// Ask PD for ids, then send `PeerMsg::ProposeSplit` back to the region.
    AskBatchSplit {
        region: metapb::Region,
        split_keys: Vec<Vec<u8>>,
        peer: metapb::Peer,
        cb: Option<WriteCallback>,
    },
    ReportBatchSplit {
        regions: Vec<metapb::Region>,
    },
    StoreHeartbeat {
        store_id: u64,
        region_count: u32,
        used_size: u64,
    },
    /// Ask PD whether `peer` is still a member of `region`; if PD's newer
    /// region has no such peer, destroy it with
    /// [`crate::operation::stale_peer_tombstone`] (TiKV's `ValidatePeer`).
    ValidatePeer {
        region: metapb::Region,
        peer: metapb::Peer,
    },
}

/// Accepts PD tasks without blocking the caller.
pub trait PdSink: Send + Clone + 'static {
    fn schedule(&self, task: PdTask);
}
