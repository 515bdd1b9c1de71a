//! Hibernation: a region with nothing to do stops ticking, so a store can
//! hold many thousands of idle regions.
//!
//! - The leader goes to sleep after `hibernate_ticks` idle ticks once every
//!   replica has the whole log, and tells each follower with a heartbeat
//!   flagged `hibernate`.
//! - A follower whose log matches the leader's commit sleeps too. Any other
//!   raft message (an append, a vote, a plain heartbeat) wakes it.
//! - A sleeping follower cannot notice a dead leader by timeout, so the store
//!   wakes it when the leader's store has been silent (no raft traffic and no
//!   transport keep-alive) for an election timeout (`StoreMsg::CheckLiveness`).

use atoll_engine_traits::KvEngine;
use atoll_proto::atollpb::RaftMessage;
use raft::eraftpb::{Message, MessageType};

use crate::config::Config;
use crate::fsm::PollContext;
use crate::peer::Peer;
use crate::transport::{PdSink, Transport};

impl<E: KvEngine> Peer<E> {
    /// Something happened: reset the idle count and resume ticking.
    pub fn wake(&mut self) {
        self.idle_ticks = 0;
        if !self.book.wake() {
            return;
        }
        tracing::debug!("{} wakes up", self.tag());
        if self.is_leader() {
            // Raft's quorum check looks at activity since its last check, and
            // nobody talked while we slept: every follower had the whole log
            // when we went to sleep, so start a fresh check period with them
            // counted as active (a dead one is caught one period later).
            let r = &mut self.raft.raft;
            r.election_elapsed = 0;
            for (_, pr) in r.mut_prs().iter_mut() {
                pr.recent_active = true;
            }
        }
    }

    fn sleep(&mut self, leader_store: Option<u64>) {
        if self.book.hibernate(leader_store) {
            tracing::debug!("{} hibernates (leader store {leader_store:?})", self.tag());
        }
    }

    /// The leader has nothing in flight and every replica has everything.
    fn leader_can_sleep(&self) -> bool {
        let r = &self.raft.raft;
        let last = r.raft_log.last_index();
        r.raft_log.committed == last
            && self.raft.store().applied_index() == last
            && self.apply_sent_index == last
            && self.proposals.is_empty()
            && self.reads.is_empty()
            && r.lead_transferee.is_none()
            && !r.has_pending_conf()
            && !self.raft.store().is_generating_snapshot()
            && r.prs().iter().all(|(_, p)| p.matched == last)
    }

    /// The leader's decision, taken after every poll: awake, hibernation on,
    /// idle long enough, and nothing in flight anywhere.
    pub fn leader_should_sleep(&self, cfg: &Config) -> bool {
        !self.book.is_hibernated()
            && !self.stopped
            && cfg.hibernate_regions
            && self.is_leader()
            && self.idle_ticks >= cfg.hibernate_ticks()
            && self.leader_can_sleep()
    }

    /// A follower's decision on the leader's hibernate heartbeat (already
    /// stepped): it came from our leader and we have its whole log.
    pub fn follower_should_sleep(&self, cfg: &Config, from: u64, commit: u64) -> bool {
        let r = &self.raft.raft;
        cfg.hibernate_regions
            && !self.is_leader()
            && r.leader_id == from
            && r.raft_log.last_index() == commit
            && r.raft_log.committed == commit
    }

    /// Called after every poll of the peer (after its ready was sent).
    pub fn maybe_hibernate<T: Transport, P: PdSink>(&mut self, ctx: &mut PollContext<E, T, P>) {
        if !self.leader_should_sleep(&ctx.cfg) {
            return;
        }
        let committed = self.raft.raft.raft_log.committed;
        let followers: Vec<u64> = self
            .raft
            .raft
            .prs()
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id != self.meta().id)
            .collect();
        for id in followers {
            let Some(to) = self.peer_cache.get(&id).cloned() else { continue };
            let m = Message {
                msg_type: MessageType::MsgHeartbeat as i32,
                to: id,
                from: self.meta().id,
                term: self.term(),
                commit: committed,
                ..Default::default()
            };
            let msg = RaftMessage { hibernate: true, ..self.raft_message(to, &m) };
            let _ = ctx.trans.send(msg);
        }
        self.sleep(None);
    }

    /// A follower got (and stepped) the leader's hibernate heartbeat.
    pub fn on_hibernate_request<T: Transport, P: PdSink>(
        &mut self,
        from: u64,
        leader_store: u64,
        commit: u64,
        ctx: &mut PollContext<E, T, P>,
    ) {
        if self.follower_should_sleep(&ctx.cfg, from, commit) {
            self.sleep(Some(leader_store));
        }
    }
}
