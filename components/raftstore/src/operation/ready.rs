//! Raft messages in, readies out: stepping, persisting, sending and
//! handing committed entries to apply.

use atoll_engine_traits::KvEngine;
use atoll_proto::atollpb::RaftMessage;
use prost011::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::StateRole;

use crate::apply::{ApplyRes, ExecResult};
use crate::fsm::{ApplyMsg, PollContext};
use crate::metrics::{
    COMMIT_LOG_DURATION, RAFT_MESSAGES_DROPPED, RAFT_MESSAGES_SENT, READY_HANDLED, SNAPSHOTS,
};
use crate::peer::Peer;
use crate::transport::{PdSink, Transport};

/// Raft takes messages of term 0 as its own (ticks, proposals, reports)
/// and does not check them against its term: a heartbeat of term 0 from the
/// wire would move the commit index past the log, which raft-rs treats as
/// fatal. Peers never send local types (proposals and read indexes are
/// only made on the leader; raft would forward them from a follower, and
/// aborts forwarding one that came with a term) and give every other
/// message their term. `MsgTransferLeader` comes over the wire only as the
/// transfer handshake (`operation::transfer_leader`), which raft never
/// steps.
pub fn acceptable_from_wire(m: &Message) -> bool {
    use MessageType::*;
    match m.msg_type() {
        MsgHup | MsgBeat | MsgPropose | MsgUnreachable | MsgSnapStatus | MsgCheckQuorum
        | MsgReadIndex => false,
        _ => m.term != 0,
    }
}

impl<E: KvEngine> Peer<E> {
    pub fn on_raft_message<T: Transport, P: PdSink>(
        &mut self,
        msg: RaftMessage,
        ctx: &mut PollContext<E, T, P>,
    ) {
        if msg.is_tombstone {
            return self.on_tombstone(&msg, ctx);
        }
        let to = msg.to_peer.as_ref().map(|p| p.id).unwrap_or_default();
        if to != self.meta().id {
            RAFT_MESSAGES_DROPPED.with_label_values(&["wrong_peer"]).inc();
            return;
        }
        let m = match Message::decode(msg.message.as_slice()) {
            Ok(m) => m,
            Err(e) => {
                RAFT_MESSAGES_DROPPED.with_label_values(&["undecodable"]).inc();
                tracing::warn!("{} undecodable raft message: {e}", self.tag());
                return;
            }
        };
        if !acceptable_from_wire(&m) {
            RAFT_MESSAGES_DROPPED.with_label_values(&["local_type"]).inc();
            return;
        }
        let Some(from) = msg.from_peer.clone() else {
            RAFT_MESSAGES_DROPPED.with_label_values(&["no_sender"]).inc();
            return;
        };
        // A peer removed by a membership change it never saw keeps talking:
        // tell it it is gone.
        let sent_conf = msg.region_epoch.as_ref().map(|e| e.conf_ver).unwrap_or(0);
        if self.is_initialized()
            && sent_conf < self.epoch().conf_ver
            && !self.region().peers.iter().any(|p| p.id == from.id)
        {
            RAFT_MESSAGES_DROPPED.with_label_values(&["stale_peer"]).inc();
            self.reply_tombstone(from, ctx);
            return;
        }
        if m.msg_type() == MessageType::MsgSnapshot {
            if let Err(e) = self.accept_snapshot(&m, ctx) {
                SNAPSHOTS.with_label_values(&["rejected"]).inc();
                tracing::warn!("{} snapshot rejected: {e}", self.tag());
                return;
            }
            SNAPSHOTS.with_label_values(&["received"]).inc();
        }
        let is_heartbeat =
            matches!(m.msg_type(), MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse);
        if !is_heartbeat
            || (self.book.is_hibernated()
                && !msg.hibernate
                && m.msg_type() == MessageType::MsgHeartbeat)
        {
            self.wake();
        }
        let (m_from, m_commit) = (m.from, m.commit);
        self.peer_cache.entry(from.id).or_insert(from.clone());
        if m.msg_type() == MessageType::MsgTransferLeader {
            // The handshake before a transfer; raft never sees it.
            return self.on_transfer_leader_message(&m);
        }
        if let Err(e) = self.raft.step(m) {
            tracing::debug!("{} step failed: {e}", self.tag());
        }
        if msg.hibernate {
            self.on_hibernate_request(m_from, from.store_id, m_commit, ctx);
        }
    }

    /// Collects this peer's ready: sends what may go out before the log is
    /// durable, stages the log and hard state into the round's write batch.
    pub fn handle_ready<T: Transport, P: PdSink>(&mut self, ctx: &mut PollContext<E, T, P>) {
        if self.stopped || self.destroying {
            return;
        }
        self.maybe_start_gen_snapshot(ctx);
        if self.pending_ready.is_some() || !self.raft.has_ready() {
            return;
        }
        // A snapshot replaces the data: entries already handed to apply
        // must land first (the apply result reschedules this peer).
        if self.raft.raft.raft_log.unstable_snapshot().is_some()
            && self.apply_sent_index > self.raft.store().applied_index()
        {
            return;
        }
        READY_HANDLED.inc();
        let mut rd = self.raft.ready();
        if rd.ss().is_some() {
            self.on_role_changed(ctx);
        }
        if !rd.snapshot().is_empty() {
            let snap = rd.snapshot().clone();
            if let Err(e) = self.apply_snapshot(&snap, ctx) {
                // The file was checked when the message arrived; failing now
                // is a disk problem, and raft cannot take the ready back.
                panic!("{} apply snapshot: {e}", self.tag());
            }
        }
        let msgs = rd.take_messages();
        self.send_messages(msgs, ctx);
        let committed = rd.take_committed_entries();
        self.send_to_apply(committed, ctx);
        for rs in rd.take_read_states() {
            self.on_read_state(rs.request_ctx, rs.index);
        }
        let entries = rd.take_entries();
        let mut changed = !entries.is_empty();
        if let Err(e) = self.raft.mut_store().append(entries, &mut ctx.raft_wb) {
            panic!("{} stage log append: {e}", self.tag());
        }
        if let Some(hs) = rd.hs() {
            self.raft.mut_store().set_hard_state(hs);
            changed = true;
        }
        if changed {
            if let Err(e) = self.raft.store().save_raft_state(&mut ctx.raft_wb) {
                panic!("{} stage raft state: {e}", self.tag());
            }
        }
        let persisted = rd.take_persisted_messages();
        self.pending_ready = Some((rd, persisted));
    }

    /// After the round's write is durable: send messages that had to wait
    /// for it and hand newly committed entries to apply.
    pub fn post_ready<T: Transport, P: PdSink>(&mut self, ctx: &mut PollContext<E, T, P>) {
        let Some((rd, persisted)) = self.pending_ready.take() else { return };
        self.send_messages(persisted, ctx);
        let mut light = self.raft.advance_append(rd);
        if let Some(index) = self.snapshot_applied.take() {
            self.raft.advance_apply_to(index);
        }
        if let Some(commit) = light.commit_index() {
            self.raft.mut_store().raft_state.commit = commit;
        }
        let msgs = light.take_messages();
        self.send_messages(msgs, ctx);
        let committed = light.take_committed_entries();
        self.send_to_apply(committed, ctx);
    }

    fn on_role_changed<T: Transport, P: PdSink>(&mut self, ctx: &mut PollContext<E, T, P>) {
        let leader = self.raft.raft.state == StateRole::Leader;
        if !self.book.set_leader(leader) {
            return;
        }
        if leader {
            tracing::info!("{} became leader at term {}", self.tag(), self.term());
            self.heartbeat_pd(ctx);
        } else {
            let err = self.not_leader();
            self.reads.fail_all(|| err.clone());
        }
    }

    pub fn send_messages<T: Transport, P: PdSink>(
        &mut self,
        msgs: Vec<Message>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        for m in msgs {
            let Some(to) = self.peer_cache.get(&m.to).cloned() else {
                RAFT_MESSAGES_DROPPED.with_label_values(&["unknown_peer"]).inc();
                continue;
            };
            let is_snapshot = m.msg_type == MessageType::MsgSnapshot as i32;
            let msg = self.raft_message(to.clone(), &m);
            if is_snapshot {
                self.send_snapshot(&m, msg, ctx);
                continue;
            }
            match ctx.trans.send(msg) {
                Ok(()) => RAFT_MESSAGES_SENT.inc(),
                Err(e) => {
                    RAFT_MESSAGES_DROPPED.with_label_values(&[e.label()]).inc();
                    tracing::debug!("{} send to {} failed: {e}", self.tag(), to.id);
                    self.raft.report_unreachable(to.id);
                }
            }
        }
    }

    /// Wraps a raft-rs message for the transport, with this region's id,
    /// epoch and range (the target uses them to create or refuse a peer).
    pub fn raft_message(&self, to: atoll_proto::metapb::Peer, m: &Message) -> RaftMessage {
        let region = self.region();
        RaftMessage {
            region_id: region.id,
            from_peer: Some(self.meta().clone()),
            to_peer: Some(to),
            region_epoch: region.region_epoch.clone(),
            message: m.encode_to_vec(),
            is_tombstone: false,
            start_key: region.start_key.clone(),
            end_key: region.end_key.clone(),
            hibernate: false,
        }
    }

    /// Ships committed entries, with the proposals they resolve, to apply.
    fn send_to_apply<T: Transport, P: PdSink>(
        &mut self,
        entries: Vec<Entry>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let Some(last) = entries.last().map(|e| e.index) else { return };
        self.apply_sent_index = self.apply_sent_index.max(last);
        let mut proposals = vec![];
        while self.proposals.front().is_some_and(|p| p.index <= last) {
            let p = self.proposals.pop_front().expect("front exists");
            COMMIT_LOG_DURATION.observe(p.proposed_at.elapsed().as_secs_f64());
            proposals.push(p);
        }
        // force_send: bounded by raft's own in-flight limits, and dropping
        // committed entries is never an option.
        if ctx
            .apply_router
            .force_send(self.region_id(), ApplyMsg::Apply { entries, proposals })
            .is_err()
        {
            tracing::error!("{} apply fsm is gone", self.tag());
        }
    }

    pub fn on_apply_res<T: Transport, P: PdSink>(
        &mut self,
        res: ApplyRes,
        ctx: &mut PollContext<E, T, P>,
    ) {
        assert_eq!(res.region_id, self.region_id());
        {
            let store = self.raft.mut_store();
            assert!(
                res.applied_index >= store.apply_state.applied_index,
                "applied index went back"
            );
            store.apply_state.applied_index = res.applied_index;
            store.apply_state.applied_term = res.applied_term;
        }
        self.raft.advance_apply_to(res.applied_index);
        self.written_bytes += res.written_bytes;
        self.written_keys += res.written_keys;
        self.split_check_diff = self.split_check_diff.saturating_add(res.written_bytes);
        for r in res.exec_results {
            if self.stopped {
                break;
            }
            match r {
                // Applied before our removal: the new regions are real and
                // this store holds peers of them.
                ExecResult::Split { derived, regions } => {
                    self.on_split_applied(derived, regions, ctx)
                }
                // A peer being destroyed keeps no log and no membership.
                _ if self.destroying => {}
                ExecResult::CompactLog { truncated, first_index } => {
                    self.on_log_compacted(truncated, first_index, ctx)
                }
                ExecResult::ChangePeer { cc, region } => {
                    self.on_change_peer_applied(cc, region, ctx)
                }
            }
        }
        self.serve_ready_reads();
    }
}
