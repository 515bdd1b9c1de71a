//! A peer's PD traffic, all through the store's PD worker ([`PdSink`]):
//! region heartbeats (every PD tick, on becoming leader, after a split, and
//! as soon as the set of lagging peers changes), asking for split ids, and
//! reporting applied splits.

use atoll_engine_traits::KvEngine;
use atoll_proto::metapb;

use crate::fsm::PollContext;
use crate::msg::WriteCallback;
use crate::peer::Peer;
use crate::transport::{PdSink, PdTask, RegionStats, Transport};

impl<E: KvEngine> Peer<E> {
    /// Periodic, also while hibernating: the leader reports to PD.
    pub fn on_pd_heartbeat_tick<T: Transport, P: PdSink>(
        &mut self,
        ctx: &mut PollContext<E, T, P>,
    ) {
        if self.is_leader() {
            self.heartbeat_pd(ctx);
        }
    }

    pub fn heartbeat_pd<T: Transport, P: PdSink>(&mut self, ctx: &mut PollContext<E, T, P>) {
        let stats = RegionStats {
            written_bytes: std::mem::take(&mut self.written_bytes),
            written_keys: std::mem::take(&mut self.written_keys),
            pending_peers: self.pending_peers(),
            approximate_size: self.approximate_size.unwrap_or(0),
            approximate_keys: self.approximate_keys.unwrap_or(0),
            ..Default::default()
        };
        ctx.pd.schedule(PdTask::RegionHeartbeat {
            term: self.term(),
            region: self.region().clone(),
            leader: self.meta().clone(),
            stats,
        });
    }

    /// PD waits for new peers to catch up before the next step of an
    /// operator: report as soon as the set of lagging peers changes.
    pub fn report_pending_peers_change<T: Transport, P: PdSink>(
        &mut self,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let pending = self.pending_peer_ids().count();
        if pending != self.last_pending_count {
            self.last_pending_count = pending;
            self.heartbeat_pd(ctx);
        }
    }

    /// Asks PD for the ids of a split at `split_keys` (already checked); the
    /// answer comes back as `PeerMsg::ProposeSplit`.
    pub fn ask_split_ids<T: Transport, P: PdSink>(
        &self,
        split_keys: Vec<Vec<u8>>,
        cb: Option<WriteCallback>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        ctx.pd.schedule(PdTask::AskBatchSplit {
            region: self.region().clone(),
            split_keys,
            peer: self.meta().clone(),
            cb,
        });
    }

    /// A split applied here while leading: report all the regions (PD
    /// swaps the parent for them at once), then the parent's new shape.
    pub fn report_split<T: Transport, P: PdSink>(
        &mut self,
        regions: Vec<metapb::Region>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        ctx.pd.schedule(PdTask::ReportBatchSplit { regions });
        self.heartbeat_pd(ctx);
    }

    /// Followers whose log is behind the truncated index (they need a snapshot).
    fn pending_peer_ids(&self) -> impl Iterator<Item = u64> + '_ {
        let truncated = self.raft.store().truncated().index;
        self.raft
            .raft
            .prs()
            .iter()
            .filter(move |(id, p)| {
                **id != self.meta().id && (p.matched < truncated || p.matched == 0)
            })
            .map(|(id, _)| *id)
    }

    fn pending_peers(&self) -> Vec<metapb::Peer> {
        self.pending_peer_ids().filter_map(|id| self.peer_cache.get(&id).cloned()).collect()
    }
}
