//! Operators: a short plan of steps for one region (transfer leader, add a
//! learner, promote it, remove a peer). PD sends the current step to the
//! region's leader and advances when heartbeats show it done.

use std::time::{Duration, Instant};

use atoll_proto::metapb;
use atoll_proto::pdpb;
use serde::{Deserialize, Serialize};

use crate::cluster::RegionInfo;

/// eraftpb.ConfChangeType values.
const ADD_NODE: i32 = 0;
const REMOVE_NODE: i32 = 1;
const ADD_LEARNER_NODE: i32 = 2;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpStep {
    TransferLeader { to_store: u64 },
    AddLearner { store_id: u64, peer_id: u64 },
    PromoteLearner { store_id: u64, peer_id: u64 },
    RemovePeer { store_id: u64 },
}

/// What made the operator (also its limit class).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Leader balance or an admin leader transfer.
    Leader,
    /// Replica moves for balance.
    Region,
    /// Replica repair: missing or down replicas.
    Replica,
}

#[derive(Clone, Debug)]
pub struct Operator {
    pub region_id: u64,
    pub kind: OpKind,
    /// A short name for humans and metrics, e.g. `balance-leader`.
    pub desc: &'static str,
    pub steps: Vec<OpStep>,
    pub current: usize,
    pub created_at: Instant,
    pub timeout: Duration,
}

/// Every operator name PD makes; a saved operator gets its name back from
/// this list.
const DESCS: &[&str] = &[
    "add-replica",
    "admin-transfer-leader",
    "balance-leader",
    "balance-region",
    "promote-learner",
    "remove-down-learner",
    "remove-down-replica",
    "remove-extra-learner",
    "remove-extra-replica",
    "remove-offline-learner",
    "remove-offline-replica",
    "replace-down-replica",
    "replace-offline-replica",
    "transfer-leader",
];

/// An operator as saved in PD's storage.
#[derive(Debug, Serialize, Deserialize)]
pub struct SavedOperator {
    pub region_id: u64,
    kind: OpKind,
    desc: String,
    steps: Vec<OpStep>,
    current: usize,
    /// How long it had run when saved.
    age_ms: u64,
    timeout_ms: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum OpStatus {
    Running,
    Finished,
    TimedOut,
}

fn peer_on(region: &metapb::Region, store_id: u64) -> Option<&metapb::Peer> {
    region.peers.iter().find(|p| p.store_id == store_id)
}

impl OpStep {
    /// Does the region (as last heard) show this step as done?
    pub fn is_done(&self, r: &RegionInfo) -> bool {
        match self {
            OpStep::TransferLeader { to_store } => {
                r.leader.as_ref().is_some_and(|l| l.store_id == *to_store)
            }
            OpStep::AddLearner { store_id, peer_id } => {
                peer_on(&r.region, *store_id).is_some_and(|p| p.id == *peer_id)
            }
            OpStep::PromoteLearner { store_id, peer_id } => peer_on(&r.region, *store_id)
                .is_some_and(|p| p.id == *peer_id && p.role != metapb::PeerRole::Learner as i32),
            OpStep::RemovePeer { store_id } => peer_on(&r.region, *store_id).is_none(),
        }
    }

    /// The peer id an add/promote step is about (0 for the others).
    pub fn peer_id(&self) -> u64 {
        match self {
            OpStep::AddLearner { peer_id, .. } | OpStep::PromoteLearner { peer_id, .. } => *peer_id,
            _ => 0,
        }
    }

    /// The stores whose region count this step changes (+1 / -1).
    pub fn region_delta(&self) -> Option<(u64, i64)> {
        match self {
            OpStep::AddLearner { store_id, .. } => Some((*store_id, 1)),
            OpStep::RemovePeer { store_id } => Some((*store_id, -1)),
            _ => None,
        }
    }
}

impl Operator {
    pub fn new(
        region_id: u64,
        kind: OpKind,
        desc: &'static str,
        steps: Vec<OpStep>,
        now: Instant,
        timeout: Duration,
    ) -> Self {
        Operator { region_id, kind, desc, steps, current: 0, created_at: now, timeout }
    }

    pub fn saved(&self, now: Instant) -> SavedOperator {
        SavedOperator {
            region_id: self.region_id,
            kind: self.kind,
            desc: self.desc.to_owned(),
            steps: self.steps.clone(),
            current: self.current,
            age_ms: now.saturating_duration_since(self.created_at).as_millis() as u64,
            timeout_ms: self.timeout.as_millis() as u64,
        }
    }

    /// An operator from storage; its age counts towards its timeout.
    pub fn restore(s: SavedOperator, now: Instant) -> Operator {
        let age = Duration::from_millis(s.age_ms);
        Operator {
            region_id: s.region_id,
            kind: s.kind,
            desc: DESCS.iter().find(|d| **d == s.desc).copied().unwrap_or("restored"),
            current: s.current.min(s.steps.len()),
            steps: s.steps,
            created_at: now.checked_sub(age).unwrap_or(now),
            timeout: Duration::from_millis(s.timeout_ms),
        }
    }

    /// Skips the steps the region shows done.
    pub fn check(&mut self, r: &RegionInfo, now: Instant) -> OpStatus {
        while self.current < self.steps.len() && self.steps[self.current].is_done(r) {
            self.current += 1;
        }
        if self.current == self.steps.len() {
            OpStatus::Finished
        } else if now.saturating_duration_since(self.created_at) > self.timeout {
            OpStatus::TimedOut
        } else {
            OpStatus::Running
        }
    }

    pub fn remaining(&self) -> &[OpStep] {
        &self.steps[self.current.min(self.steps.len())..]
    }

    /// The command for the current step, for the region's leader. `None`
    /// while waiting (a learner still receiving its snapshot).
    pub fn command(&self, r: &RegionInfo) -> Option<pdpb::RegionHeartbeatResponse> {
        let step = self.steps.get(self.current)?;
        let mut resp = r.response();
        let change = |peer: metapb::Peer, change_type: i32| {
            Some(pdpb::ChangePeer { peer: Some(peer), change_type })
        };
        match step {
            OpStep::TransferLeader { to_store } => {
                let to = peer_on(&r.region, *to_store)?.clone();
                resp.transfer_leader = Some(pdpb::TransferLeader { peer: Some(to), peers: vec![] });
            }
            OpStep::AddLearner { store_id, peer_id } => {
                let p = metapb::Peer {
                    id: *peer_id,
                    store_id: *store_id,
                    role: metapb::PeerRole::Learner as i32,
                    ..Default::default()
                };
                resp.change_peer = change(p, ADD_LEARNER_NODE);
            }
            OpStep::PromoteLearner { store_id, peer_id } => {
                if r.pending_peers.iter().any(|p| p.id == *peer_id) {
                    return None;
                }
                let p = metapb::Peer { id: *peer_id, store_id: *store_id, ..Default::default() };
                resp.change_peer = change(p, ADD_NODE);
            }
            OpStep::RemovePeer { store_id } => {
                let p = peer_on(&r.region, *store_id)?.clone();
                if r.leader.as_ref().is_some_and(|l| l.id == p.id) {
                    // A leader cannot remove itself: hand leadership to another voter first.
                    let to = r
                        .region
                        .peers
                        .iter()
                        .find(|q| q.id != p.id && q.role != metapb::PeerRole::Learner as i32)?;
                    resp.transfer_leader =
                        Some(pdpb::TransferLeader { peer: Some(to.clone()), peers: vec![] });
                } else {
                    resp.change_peer = change(p, REMOVE_NODE);
                }
            }
        }
        Some(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(peers: &[(u64, u64, bool)], leader_store: u64) -> RegionInfo {
        let peers: Vec<metapb::Peer> = peers
            .iter()
            .map(|(id, s, learner)| metapb::Peer {
                id: *id,
                store_id: *s,
                role: if *learner { metapb::PeerRole::Learner as i32 } else { 0 },
                ..Default::default()
            })
            .collect();
        let leader = peers.iter().find(|p| p.store_id == leader_store).cloned();
        RegionInfo {
            region: metapb::Region { id: 1, peers, ..Default::default() },
            leader,
            term: 1,
            approximate_size: 0,
            approximate_keys: 0,
            pending_peers: vec![],
        }
    }

    #[test]
    fn move_replica_advances_with_heartbeats() {
        let now = Instant::now();
        let steps = vec![
            OpStep::AddLearner { store_id: 4, peer_id: 40 },
            OpStep::PromoteLearner { store_id: 4, peer_id: 40 },
            OpStep::RemovePeer { store_id: 1 },
        ];
        let mut op =
            Operator::new(1, OpKind::Region, "balance-region", steps, now, Duration::from_secs(60));
        let r = info(&[(10, 1, false), (20, 2, false), (30, 3, false)], 1);
        assert_eq!(op.check(&r, now), OpStatus::Running);
        let cmd = op.command(&r).unwrap().change_peer.unwrap();
        assert_eq!((cmd.change_type, cmd.peer.as_ref().unwrap().id), (ADD_LEARNER_NODE, 40));

        let mut r = info(&[(10, 1, false), (20, 2, false), (30, 3, false), (40, 4, true)], 1);
        r.pending_peers = vec![r.region.peers[3].clone()];
        assert_eq!(op.check(&r, now), OpStatus::Running);
        assert!(op.command(&r).is_none(), "wait for the learner's snapshot");
        r.pending_peers.clear();
        assert_eq!(op.command(&r).unwrap().change_peer.unwrap().change_type, ADD_NODE);

        // Promoted; the leader is on the store to leave: transfer first.
        let r = info(&[(10, 1, false), (20, 2, false), (30, 3, false), (40, 4, false)], 1);
        assert_eq!(op.check(&r, now), OpStatus::Running);
        let cmd = op.command(&r).unwrap();
        assert!(cmd.change_peer.is_none());
        assert_ne!(cmd.transfer_leader.unwrap().peer.unwrap().store_id, 1);
        let r = info(&[(10, 1, false), (20, 2, false), (30, 3, false), (40, 4, false)], 2);
        assert_eq!(op.command(&r).unwrap().change_peer.unwrap().change_type, REMOVE_NODE);

        let r = info(&[(20, 2, false), (30, 3, false), (40, 4, false)], 2);
        assert_eq!(op.check(&r, now), OpStatus::Finished);
    }

    #[test]
    fn operators_time_out() {
        let now = Instant::now();
        let mut op = Operator::new(
            1,
            OpKind::Leader,
            "t",
            vec![OpStep::TransferLeader { to_store: 2 }],
            now,
            Duration::from_secs(1),
        );
        let r = info(&[(10, 1, false), (20, 2, false)], 1);
        assert_eq!(op.check(&r, now + Duration::from_secs(2)), OpStatus::TimedOut);
    }

    #[test]
    fn operators_survive_save_and_restore() {
        let now = Instant::now();
        let started = now.checked_sub(Duration::from_secs(10)).expect("machine up for 10s");
        let mut ops = crate::schedule::Operators::default();
        let steps = vec![
            OpStep::AddLearner { store_id: 4, peer_id: 40 },
            OpStep::PromoteLearner { store_id: 4, peer_id: 40 },
            OpStep::RemovePeer { store_id: 1 },
        ];
        let mut op = Operator::new(
            7,
            OpKind::Region,
            "balance-region",
            steps.clone(),
            started,
            Duration::from_secs(60),
        );
        op.current = 1;
        assert!(ops.add(op, false));
        let json = ops.to_json();
        let later = Instant::now();
        let back = crate::schedule::Operators::restore(Some(&json), later);
        let op = back.get(7).expect("restored");
        assert_eq!((op.kind, op.desc, op.current), (OpKind::Region, "balance-region", 1));
        assert_eq!(op.steps, steps);
        assert_eq!(op.timeout, Duration::from_secs(60));
        // Its age carries over: it has run 10 s of its 60.
        assert!(later.duration_since(op.created_at) >= Duration::from_secs(10));
        assert!(later.duration_since(op.created_at) < Duration::from_secs(60));
        assert!(crate::schedule::Operators::restore(Some(b"not json"), now).is_empty());
        assert!(crate::schedule::Operators::restore(None, now).is_empty());
    }
}
