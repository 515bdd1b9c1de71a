//! Peer life cycle beyond bootstrap and splits: creating a peer when the
//! first raft message for a region added to this store arrives, and
//! destroying a peer that was removed from its region.

use atoll_engine_traits::{KvEngine, WriteBatch, WriteOptions, CF_RAFT, DATA_CFS};
use atoll_proto::atollpb::{PeerState, RaftMessage, RegionLocalState};
use atoll_proto::metapb;
use prost011::Message as _;
use raft::eraftpb::{Message, MessageType};

use crate::fsm::{register_region, ApplyMsg, PollContext};
use crate::metrics::RAFT_MESSAGES_DROPPED;
use crate::msg::PeerMsg;
use crate::peer::Peer;
use crate::storage::{load_pb, write_region_state, RAFT_INIT_LOG_TERM};
use crate::transport::{PdSink, PdTask, Transport};
use crate::{keys, Error};

/// Deletes a region's raft log, raft state and apply state.
pub fn clear_region_meta<W: WriteBatch>(wb: &mut W, region_id: u64) -> crate::Result<()> {
    let (s, e) = keys::raft_log_range(region_id);
    wb.delete_range_cf(CF_RAFT, &s, &e)?;
    wb.delete_cf(CF_RAFT, &keys::raft_state_key(region_id))?;
    wb.delete_cf(CF_RAFT, &keys::apply_state_key(region_id))?;
    Ok(())
}

/// Handles a raft message for a region this store has no peer of: creates
/// an uninitialized peer if the message is for a live peer of a region that
/// does not overlap any local one. Returns the message if a peer was created.
pub fn maybe_create_peer<E: KvEngine, T: Transport, P: PdSink>(
    msg: RaftMessage,
    ctx: &mut PollContext<E, T, P>,
) -> Option<RaftMessage> {
    let reject = |reason: &str| {
        RAFT_MESSAGES_DROPPED.with_label_values(&[reason]).inc();
        None
    };
    let region_id = msg.region_id;
    let Some(to) = msg.to_peer.clone() else { return reject("no_target") };
    if msg.is_tombstone {
        return reject("tombstone_for_missing_peer");
    }
    let Ok(m) = Message::decode(msg.message.as_slice()) else { return reject("undecodable") };
    // Only a leader or a candidate brings a new member to life; a late
    // response from an old incarnation must not.
    let creates = matches!(
        m.msg_type(),
        MessageType::MsgAppend
            | MessageType::MsgHeartbeat
            | MessageType::MsgSnapshot
            | MessageType::MsgRequestVote
            | MessageType::MsgRequestPreVote
    );
    if !creates {
        return reject("region_not_found");
    }
    match load_pb::<RegionLocalState>(&ctx.engine, &keys::region_state_key(region_id)) {
        Ok(Some(state)) if state.state == PeerState::Tombstone as i32 => {
            // A removed peer: only a newer membership (a re-add, with a new
            // peer id) may recreate it.
            let old = state.region.unwrap_or_default();
            let old_conf = old.region_epoch.map(|e| e.conf_ver).unwrap_or(0);
            let sent_conf = msg.region_epoch.as_ref().map(|e| e.conf_ver).unwrap_or(0);
            let old_peer =
                old.peers.iter().find(|p| p.store_id == ctx.store_id).map(|p| p.id).unwrap_or(0);
            if sent_conf <= old_conf || to.id <= old_peer {
                return reject("tombstone");
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(region = region_id, "read region state: {e}");
            return reject("engine_error");
        }
    }
    // Held until the peer is registered: a split applying concurrently on
    // another poller updates ranges and registers peers under this lock.
    let shared = ctx.shared.clone();
    let mut meta = shared.meta.lock();
    if ctx.router.mailbox(region_id).is_some() {
        // Created (by a split, or an earlier message) meanwhile.
        return Some(msg);
    }
    let overlaps = meta.overlapping(&msg.start_key, &msg.end_key, region_id);
    if !overlaps.is_empty() {
        // A split not yet applied here (it will create the peer), or a stale
        // local region that a snapshot or GC will replace.
        tracing::debug!(
            region = region_id,
            overlaps = overlaps[0].id,
            "not creating an overlapping peer"
        );
        let first_vote =
            matches!(m.msg_type(), MessageType::MsgRequestVote | MessageType::MsgRequestPreVote)
                && m.term == RAFT_INIT_LOG_TERM + 1;
        if first_vote {
            // A freshly split child campaigning: the split will create the
            // peer here soon, and should find the vote waiting.
            meta.push_pending_vote(msg);
            return reject("overlap_pending_split");
        }
        // A local region older than the sender's may be a stale peer that
        // nobody will talk to again (a learner removed while it could not
        // hear): it asks PD, and goes if PD says so (TiKV
        // `maybe_create_peer_internal`, fsm/store.rs).
        let sent_version = msg.region_epoch.as_ref().map_or(0, |e| e.version);
        for local in &overlaps {
            if local.region_epoch.as_ref().map_or(0, |e| e.version) < sent_version {
                let _ = ctx.router.send(local.id, PeerMsg::RegionOverlapped);
            }
        }
        return reject("overlap");
    }
    let peer = match Peer::create_uninitialized(
        to,
        region_id,
        &ctx.cfg,
        ctx.engine.clone(),
        &ctx.shared,
        &ctx.logger,
    ) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(region = region_id, "create peer: {e}");
            return reject("create_failed");
        }
    };
    tracing::info!(
        store = ctx.store_id,
        region = region_id,
        peer = peer.meta().id,
        "created peer from a raft message"
    );
    register_region(&ctx.router, &ctx.apply_router, peer);
    drop(meta);
    Some(msg)
}

/// How often a peer asks PD whether it is stale, at most.
pub const STALE_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The rule for a peer PD may prove stale: given PD's view of the region,
/// the tombstone message that makes `peer` (of the local `region`) destroy
/// itself, or `None` if PD's view is older than the local one or still
/// lists the peer (TiKV `handle_validate_peer`, worker/pd.rs). PD only
/// knows memberships its leaders applied, so a removal it shows is
/// committed.
pub fn stale_peer_tombstone(
    region: &metapb::Region,
    peer: &metapb::Peer,
    pd_region: &metapb::Region,
) -> Option<RaftMessage> {
    let (local, pd) = (region.region_epoch.clone()?, pd_region.region_epoch.clone()?);
    if pd.version < local.version || pd.conf_ver < local.conf_ver {
        return None;
    }
    if pd_region.peers.iter().any(|p| p.id == peer.id) {
        return None;
    }
    Some(RaftMessage {
        region_id: region.id,
        from_peer: Some(peer.clone()),
        to_peer: Some(peer.clone()),
        region_epoch: Some(pd),
        is_tombstone: true,
        ..Default::default()
    })
}

impl<E: KvEngine> Peer<E> {
    /// See [`PeerMsg::RegionOverlapped`]: a follower or learner wakes (a
    /// hibernated stale peer would hear nothing) and asks PD, at most every
    /// [`STALE_CHECK_INTERVAL`].
    pub fn on_region_overlapped<T: Transport, P: PdSink>(
        &mut self,
        ctx: &mut PollContext<E, T, P>,
    ) {
        if self.is_leader() || !self.is_initialized() {
            return;
        }
        self.wake();
        let now = std::time::Instant::now();
        if self.stale_check_at.is_some_and(|t| now.duration_since(t) < STALE_CHECK_INTERVAL) {
            return;
        }
        self.stale_check_at = Some(now);
        tracing::info!("{} overlaps a newer region; asking PD whether it is stale", self.tag());
        ctx.pd.schedule(PdTask::ValidatePeer {
            region: self.region().clone(),
            peer: self.meta().clone(),
        });
    }

    /// Starts removing this peer from the store. Proposals still waiting
    /// here are undetermined (they are in the log and may commit on the
    /// other peers); the peer stops taking part in raft; its apply FSM is
    /// told to stop after everything queued for it. Its answer
    /// (`PeerMsg::ApplyDestroyed`) finishes the job in
    /// [`Peer::finish_destroy`]: until then the apply FSM may still write
    /// the region's state, which must not land after the tombstone.
    pub fn destroy<T: Transport, P: PdSink>(
        &mut self,
        ctx: &mut PollContext<E, T, P>,
        reason: &str,
    ) {
        if self.stopped || self.destroying {
            return;
        }
        tracing::info!("{} destroying peer: {reason}", self.tag());
        let id = self.region_id();
        self.destroying = true;
        // Whatever this round staged for the peer must not resurrect it.
        self.pending_ready = None;
        for p in self.proposals.drain(..) {
            (p.cb)(Err(Error::Undetermined(format!("region {id}: peer destroyed ({reason})"))));
        }
        self.reads.fail_all(|| Error::RegionNotFound(id));
        if ctx.apply_router.force_send(id, ApplyMsg::Destroy).is_err() {
            // No apply FSM (never registered, or already stopped): nothing
            // can write for the region any more.
            self.finish_destroy(ctx);
        }
    }

    /// The apply FSM has stopped: tombstone state, raft log and states and
    /// (if the peer had any) the region's data go in one synced write, then
    /// the peer leaves the store's routing.
    pub fn finish_destroy<T: Transport, P: PdSink>(&mut self, ctx: &mut PollContext<E, T, P>) {
        if self.stopped {
            return;
        }
        let id = self.region_id();
        let mut wb = ctx.engine.write_batch();
        let res = (|| -> crate::Result<()> {
            write_region_state(&mut wb, self.region(), PeerState::Tombstone)?;
            clear_region_meta(&mut wb, id)?;
            if self.is_initialized() {
                let (start, end) = crate::snap::region_data_range(self.region());
                for cf in DATA_CFS {
                    wb.delete_range_cf(cf, &start, &end)?;
                }
            }
            ctx.engine.write(&mut wb, WriteOptions::sync())?;
            Ok(())
        })();
        if let Err(e) = res {
            panic!("{} write tombstone: {e}", self.tag());
        }
        tracing::info!("{} destroyed", self.tag());
        self.stopped = true;
        ctx.shared.meta.lock().remove(id);
        // Now, not when the FSM is dropped: a new peer of this region may
        // register first.
        self.book.close();
        ctx.apply_router.unregister(id);
        ctx.router.unregister(id);
    }

    /// While the apply FSM winds down: what it applied still counts (a
    /// split creates its regions); requests are refused as for a region
    /// that is not here; raft traffic and ticks are dropped.
    pub fn on_message_while_destroying<T: Transport, P: PdSink>(
        &mut self,
        msg: PeerMsg<E>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let gone = Error::RegionNotFound(self.region_id());
        match msg {
            PeerMsg::ApplyRes(res) => self.on_apply_res(*res, ctx),
            PeerMsg::ApplyDestroyed => self.finish_destroy(ctx),
            PeerMsg::Write { cb, .. } => cb(Err(gone)),
            PeerMsg::Read { cb, .. } => cb(Err(gone)),
            PeerMsg::SplitRegion { cb, .. }
            | PeerMsg::ProposeSplit { cb, .. }
            | PeerMsg::ChangePeer { cb, .. } => {
                if let Some(cb) = cb {
                    cb(Err(gone));
                }
            }
            PeerMsg::Raft(_)
            | PeerMsg::Tick(_)
            | PeerMsg::TransferLeader { .. }
            | PeerMsg::Campaign
            | PeerMsg::RegionOverlapped
            | PeerMsg::SplitCheckResult { .. }
            | PeerMsg::SnapshotReport { .. }
            | PeerMsg::Wake => {}
        }
    }

    /// A peer that is no longer a member (per a newer epoch than ours) must
    /// learn it was removed: answer its message with a tombstone.
    pub fn reply_tombstone<T: Transport, P: PdSink>(
        &self,
        to: metapb::Peer,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let msg = RaftMessage {
            region_id: self.region_id(),
            from_peer: Some(self.meta().clone()),
            to_peer: Some(to),
            region_epoch: Some(self.epoch()),
            is_tombstone: true,
            ..Default::default()
        };
        let _ = ctx.trans.send(msg);
    }

    /// A tombstone message: destroy this peer if its membership is older
    /// than the sender's.
    pub fn on_tombstone<T: Transport, P: PdSink>(
        &mut self,
        msg: &RaftMessage,
        ctx: &mut PollContext<E, T, P>,
    ) {
        if msg.to_peer.as_ref().is_some_and(|p| p.id != self.meta().id) {
            // Meant for an earlier peer of this region on this store.
            RAFT_MESSAGES_DROPPED.with_label_values(&["wrong_peer"]).inc();
            return;
        }
        let sent = msg.region_epoch.as_ref().map(|e| e.conf_ver).unwrap_or(0);
        if sent > self.epoch().conf_ver || !self.is_initialized() {
            self.destroy(ctx, "removed from the region (tombstone message)");
        }
    }
}
