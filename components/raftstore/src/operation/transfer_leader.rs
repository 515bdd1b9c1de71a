//! Leader transfer with TiKV's handshake (tikv `components/raftstore/src/
//! store/peer.rs`: `pre_transfer_leader`, `execute_transfer_leader`,
//! `ready_to_transfer_leader`).
//!
//! While raft-rs transfers leadership it drops every proposal, for up to an
//! election timeout; a target that is paused or cut off would make the
//! region refuse writes for that long on every attempt PD makes. So the
//! leader first asks the target (a `MsgTransferLeader` sent to it); the
//! target answers only if it follows this leader in this term and has no
//! snapshot to install, with its applied index; only on that answer, and
//! only if the target's log is close and no membership change or snapshot
//! is in flight, does the leader start the raft transfer. A target that
//! cannot answer costs nothing.

use atoll_engine_traits::KvEngine;
use atoll_proto::metapb;
use raft::eraftpb::{Message, MessageType};
use raft::ProgressState;

use crate::peer::Peer;

/// How far (in entries) the target's applied index may trail the leader's
/// last index for the transfer to start (TiKV's
/// `leader-transfer-max-log-lag`, default 128).
pub const LEADER_TRANSFER_MAX_LOG_LAG: u64 = 128;

impl<E: KvEngine> Peer<E> {
    /// PD's (or an operator's) request to move leadership to `to`: asks
    /// `to` whether it can take over.
    pub fn transfer_leader(&mut self, to: metapb::Peer) {
        if !self.is_leader() || to.id == self.meta().id {
            return;
        }
        let member = self.region().peers.iter().find(|p| p.id == to.id);
        if member.is_none_or(|p| p.role == metapb::PeerRole::Learner as i32) {
            tracing::warn!("{} cannot transfer leadership to {} (not a voter)", self.tag(), to.id);
            return;
        }
        if let Some(why) = self.not_ready_to_transfer(to.id, None) {
            tracing::info!("{} not transferring leadership to {}: {why}", self.tag(), to.id);
            return;
        }
        self.wake();
        tracing::info!("{} asking {} to take leadership", self.tag(), to.id);
        self.peer_cache.entry(to.id).or_insert(to.clone());
        // A heartbeat first, as TiKV's pre_transfer_leader does: a target
        // that has not heard from this leader in this term (its leader id
        // still 0) learns it before the question, which it answers only
        // from its leader.
        self.raft.ping();
        let ask = self.transfer_message(to.id, 0);
        self.raft.raft.msgs.push(ask);
    }

    /// A `MsgTransferLeader` from another peer: as leader, the target's
    /// answer; as follower, the leader's question.
    pub(crate) fn on_transfer_leader_message(&mut self, m: &Message) {
        if m.term != self.term() || m.from == self.meta().id {
            return;
        }
        if self.is_leader() {
            match self.not_ready_to_transfer(m.from, Some(m.index)) {
                Some(why) => {
                    tracing::info!(
                        "{} not transferring leadership to {}: {why}",
                        self.tag(),
                        m.from
                    )
                }
                None => {
                    tracing::info!("{} transferring leadership to {}", self.tag(), m.from);
                    self.raft.transfer_leader(m.from);
                }
            }
            return;
        }
        if m.from != self.raft.raft.leader_id
            || !self.is_initialized()
            || self.raft.raft.raft_log.unstable.snapshot.is_some()
        {
            return;
        }
        let applied = self.raft.store().applied_index();
        let answer = self.transfer_message(m.from, applied);
        self.raft.raft.msgs.push(answer);
    }

    fn transfer_message(&self, to: u64, index: u64) -> Message {
        Message {
            msg_type: MessageType::MsgTransferLeader as i32,
            to,
            from: self.meta().id,
            term: self.term(),
            index,
            ..Default::default()
        }
    }

    /// Why leadership cannot move to `to` now; `applied` is the index the
    /// target reported (before it answered, its matched index stands in).
    fn not_ready_to_transfer(&self, to: u64, applied: Option<u64>) -> Option<&'static str> {
        let r = &self.raft.raft;
        if !r.prs().conf().voters().contains(to) {
            return Some("not a voter");
        }
        if r.prs().iter().any(|(_, pr)| pr.state == ProgressState::Snapshot) {
            return Some("a snapshot is in flight");
        }
        let index = match applied {
            Some(i) => i,
            None => r.prs().get(to).map(|pr| pr.matched).unwrap_or(0),
        };
        if r.has_pending_conf() || r.pending_conf_index > index {
            return Some("a membership change is pending");
        }
        // `index` came over the wire: saturate rather than wrap.
        if r.raft_log.last_index() >= index.saturating_add(LEADER_TRANSFER_MAX_LOG_LAG) {
            return Some("its log is too far behind");
        }
        None
    }
}
