use atoll_batch_system::Fsm;
use atoll_engine_traits::KvEngine;

use crate::fsm::PollContext;
use crate::msg::{PeerMsg, PeerTick};
use crate::peer::Peer;
use crate::transport::{PdSink, Transport};

/// The FSM wrapper of a [`Peer`]: routes each message to its operation.
pub struct PeerFsm<E: KvEngine> {
    pub(crate) peer: Peer<E>,
}

impl<E: KvEngine> Fsm for PeerFsm<E> {
    type Message = PeerMsg<E>;
    fn is_stopped(&self) -> bool {
        self.peer.stopped
    }
}

impl<E: KvEngine> PeerFsm<E> {
    pub fn new(peer: Peer<E>) -> Box<Self> {
        Box::new(PeerFsm { peer })
    }

    pub fn handle<T: Transport, P: PdSink>(
        &mut self,
        msg: PeerMsg<E>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let peer = &mut self.peer;
        if peer.destroying {
            return peer.on_message_while_destroying(msg, ctx);
        }
        match msg {
            PeerMsg::Raft(m) => peer.on_raft_message(*m, ctx),
            PeerMsg::Write { req, cb } => peer.propose_write(req, cb, ctx),
            PeerMsg::Read { header, cb } => peer.on_read(header, cb, ctx),
            PeerMsg::Tick(tick) => Self::on_tick(peer, tick, ctx),
            PeerMsg::ApplyRes(res) => peer.on_apply_res(*res, ctx),
            PeerMsg::ApplyDestroyed => {
                tracing::error!("{} apply stopped, but the peer is not being destroyed", peer.tag())
            }
            PeerMsg::SplitRegion { epoch, request, cb } => {
                peer.on_split_region(epoch, request, cb, ctx)
            }
            PeerMsg::ProposeSplit { epoch, split_keys, ids, cb } => {
                peer.propose_split(epoch, split_keys, ids, cb, ctx)
            }
            PeerMsg::TransferLeader { peer: to } => peer.transfer_leader(to),
            PeerMsg::Campaign => {
                peer.wake();
                if let Err(e) = peer.raft.campaign() {
                    tracing::warn!("{} campaign failed: {e}", peer.tag());
                }
            }
            PeerMsg::ChangePeer { epoch, change_type, peer: target, cb } => {
                peer.propose_change_peer(epoch, change_type, target, cb, ctx)
            }
            PeerMsg::SplitCheckResult { epoch, size, keys, split_keys } => {
                peer.on_split_check_result(epoch, size, keys, split_keys, ctx)
            }
            PeerMsg::SnapshotReport { to_peer_id, ok } => peer.on_snapshot_report(to_peer_id, ok),
            PeerMsg::Wake => peer.wake(),
            PeerMsg::RegionOverlapped => peer.on_region_overlapped(ctx),
        }
    }

    fn on_tick<T: Transport, P: PdSink>(
        peer: &mut Peer<E>,
        tick: PeerTick,
        ctx: &mut PollContext<E, T, P>,
    ) {
        match tick {
            PeerTick::Raft => {
                if peer.on_raft_tick(ctx) {
                    let (ticks, leader) = (peer.ticks, peer.is_leader());
                    let due = PeerTick::due_after_raft_tick(
                        ticks,
                        leader,
                        ctx.gc_ticks,
                        ctx.split_check_ticks,
                    );
                    for t in due {
                        Self::on_tick(peer, t, ctx);
                    }
                }
            }
            PeerTick::RaftLogGc => peer.maybe_compact_log(ctx),
            PeerTick::SplitCheck => peer.on_split_check_tick(ctx),
            PeerTick::PdHeartbeat => peer.on_pd_heartbeat_tick(ctx),
        }
    }
}
