//! Membership changes: the leader proposes one raft `ConfChange` at a time
//! (add learner, promote learner, remove peer); every replica applies it to
//! the region (conf_ver + 1) and to raft.

use atoll_engine_traits::KvEngine;
use atoll_proto::atollpb::{AdminCmdType, AdminRequest, ChangePeerRequest};
use atoll_proto::metapb;
use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType};

use crate::error::{Error, Result};
use crate::fsm::PollContext;
use crate::metrics::CONF_CHANGES;
use crate::msg::WriteCallback;
use crate::peer::Peer;
use crate::transport::{PdSink, Transport};

impl<E: KvEngine> Peer<E> {
    /// Checks a requested change against the current region and raft state.
    fn check_change_peer(
        &self,
        epoch: &metapb::RegionEpoch,
        change_type: i32,
        peer: &metapb::Peer,
    ) -> Result<()> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        if epoch.conf_ver != self.epoch().conf_ver {
            return Err(Error::EpochNotMatch {
                msg: format!(
                    "change peer for conf_ver {}, region has {}",
                    epoch.conf_ver,
                    self.epoch().conf_ver
                ),
                current_regions: vec![self.region().clone()],
            });
        }
        if self.raft.raft.has_pending_conf() {
            return Err(Error::Busy(format!("{} has a membership change in progress", self.tag())));
        }
        // Validates against the region (membership, one peer per store).
        crate::apply::change_peer(self.region(), change_type, peer)?;
        match ConfChangeType::from_i32(change_type) {
            Some(ConfChangeType::RemoveNode) if peer.id == self.meta().id => {
                Err(Error::InvalidRequest(
                    "the leader cannot remove itself; transfer leadership first".into(),
                ))
            }
            Some(ConfChangeType::RemoveNode) => {
                // Never drop below a quorum of voters that are caught up.
                let voters: Vec<&metapb::Peer> = self
                    .region()
                    .peers
                    .iter()
                    .filter(|p| p.role != metapb::PeerRole::Learner as i32 && p.id != peer.id)
                    .collect();
                let healthy = voters.iter().filter(|p| self.is_caught_up(p.id)).count();
                if !voters.is_empty() && healthy * 2 <= voters.len() {
                    return Err(Error::InvalidRequest(format!(
                        "removing {} would leave {healthy} of {} voters caught up",
                        peer.id,
                        voters.len()
                    )));
                }
                Ok(())
            }
            Some(ConfChangeType::AddNode)
                if self.region().peers.iter().any(|p| p.id == peer.id) =>
            {
                // Promote a learner only once it has the data.
                if self.is_caught_up(peer.id) {
                    Ok(())
                } else {
                    Err(Error::Busy(format!("learner {} is still catching up", peer.id)))
                }
            }
            _ => Ok(()),
        }
    }

    /// Has `peer_id` got the log up to (at least) the truncated index, i.e.
    /// it needs no snapshot? The leader itself always has.
    fn is_caught_up(&self, peer_id: u64) -> bool {
        if peer_id == self.meta().id {
            return true;
        }
        let truncated = self.raft.store().truncated().index;
        self.raft.raft.prs().get(peer_id).is_some_and(|p| p.matched >= truncated && p.matched > 0)
    }

    pub fn propose_change_peer<T: Transport, P: PdSink>(
        &mut self,
        epoch: metapb::RegionEpoch,
        change_type: i32,
        peer: metapb::Peer,
        cb: Option<WriteCallback>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        if let Err(e) = self.check_change_peer(&epoch, change_type, &peer) {
            tracing::info!("{} change peer {change_type} {peer:?} rejected: {e}", self.tag());
            if let Some(cb) = cb {
                cb(Err(e));
            }
            return;
        }
        let req = self.admin_cmd(AdminRequest {
            cmd_type: AdminCmdType::ChangePeer as i32,
            change_peer: Some(ChangePeerRequest { change_type, peer: Some(peer.clone()) }),
            ..Default::default()
        });
        let cc = ConfChange { change_type, node_id: peer.id, context: req.encode_to_vec(), id: 0 };
        tracing::info!("{} proposing conf change {:?} {peer:?}", self.tag(), cc.get_change_type());
        CONF_CHANGES.with_label_values(&["proposed"]).inc();
        self.propose_with(cb, ctx, |raft| raft.propose_conf_change(vec![], cc));
    }

    /// Raft side of an applied membership change.
    pub fn on_change_peer_applied<T: Transport, P: PdSink>(
        &mut self,
        cc: ConfChange,
        region: metapb::Region,
        ctx: &mut PollContext<E, T, P>,
    ) {
        if let Err(e) = self.raft.apply_conf_change(&cc) {
            // The region already validated the change; raft disagreeing means
            // the two views diverged, which must never happen.
            panic!("{} raft rejected an applied conf change {cc:?}: {e}", self.tag());
        }
        CONF_CHANGES.with_label_values(&["applied"]).inc();
        let removed: Vec<u64> = self
            .region()
            .peers
            .iter()
            .filter(|p| !region.peers.iter().any(|q| q.id == p.id))
            .map(|p| p.id)
            .collect();
        self.set_region(region.clone());
        for id in &removed {
            self.peer_cache.remove(id);
        }
        ctx.shared.meta.lock().set_region(&region);
        if removed.contains(&self.meta().id) {
            self.destroy(ctx, "removed from the region");
            return;
        }
        if self.is_leader() {
            self.heartbeat_pd(ctx);
        }
    }
}
