//! Replica checker: every region should have `max_replicas` voters on live
//! stores. Replicas on down stores, and then on stores being deleted
//! (`Offline`), are rebuilt elsewhere (add a learner, promote it, hand
//! leadership away if needed, then remove the old peer); missing ones are
//! added, extra ones and stray learners removed.

use std::collections::HashMap;
use std::time::Instant;

use atoll_proto::metapb;

use super::{candidate_stores, OpKind, OpStep, Operator, Operators, ScheduleConfig, StoreView};
use crate::cluster::Cluster;

fn is_learner(p: &metapb::Peer) -> bool {
    p.role == metapb::PeerRole::Learner as i32
}

pub fn check_replicas(
    c: &Cluster,
    ops: &Operators,
    views: &HashMap<u64, StoreView>,
    now: Instant,
    cfg: &ScheduleConfig,
    alloc_id: &mut dyn FnMut() -> Option<u64>,
) -> Vec<Operator> {
    let mut out = vec![];
    let mut budget = cfg.replica_schedule_limit.saturating_sub(ops.count(OpKind::Replica));
    let mut counts = ops.projected_region_counts(views);
    let up = |store: u64| views.get(&store).is_some_and(|v| v.up);
    let offline = |store: u64| views.get(&store).is_some_and(|v| v.offline);
    for r in c.all_regions() {
        if budget == 0 {
            break;
        }
        if ops.get(r.region.id).is_some() {
            continue;
        }
        // Only regions with a live leader can change membership.
        let Some(leader) = r.leader.as_ref().filter(|l| up(l.store_id)) else { continue };
        let peers = &r.region.peers;
        let voters: Vec<&metapb::Peer> = peers.iter().filter(|p| !is_learner(p)).collect();
        // Replicas to replace: on down stores, then on stores being deleted.
        let mut leaving: Vec<&metapb::Peer> = peers.iter().filter(|p| !up(p.store_id)).collect();
        leaving.extend(peers.iter().filter(|p| up(p.store_id) && offline(p.store_id)));
        let add = |counts: &mut HashMap<u64, i64>,
                   alloc_id: &mut dyn FnMut() -> Option<u64>,
                   leaving: Option<u64>|
         -> Option<Vec<OpStep>> {
            let target = *candidate_stores(&r.region, leaving, counts, views).first()?;
            let peer_id = alloc_id()?;
            *counts.entry(target).or_default() += 1;
            Some(vec![
                OpStep::AddLearner { store_id: target, peer_id },
                OpStep::PromoteLearner { store_id: target, peer_id },
            ])
        };
        // Removing the leader's own replica: hand leadership to another
        // voter first (`new_voter`: one the operator adds before).
        let remove = |store: u64, new_voter: Option<u64>| -> Option<Vec<OpStep>> {
            let mut steps = vec![];
            if leader.store_id == store {
                let to = voters
                    .iter()
                    .map(|p| p.store_id)
                    .find(|s| *s != store && up(*s) && !offline(*s))
                    .or(new_voter)?;
                steps.push(OpStep::TransferLeader { to_store: to });
            }
            steps.push(OpStep::RemovePeer { store_id: store });
            Some(steps)
        };
        let plan: Option<(&'static str, Vec<OpStep>)> = if let Some(dead) = leaving.first() {
            let gone = !up(dead.store_id);
            let name =
                |down: &'static str, deleted: &'static str| if gone { down } else { deleted };
            if is_learner(dead) {
                remove(dead.store_id, None)
                    .map(|s| (name("remove-down-learner", "remove-offline-learner"), s))
            } else if voters.len() > cfg.max_replicas {
                // Enough voters without it (e.g. a move was cut short).
                remove(dead.store_id, None)
                    .map(|s| (name("remove-down-replica", "remove-offline-replica"), s))
            } else if let Some(l) =
                peers.iter().find(|p| is_learner(p) && up(p.store_id) && !offline(p.store_id))
            {
                // A live learner (e.g. inherited from a split mid-move) takes its place.
                let mut steps =
                    vec![OpStep::PromoteLearner { store_id: l.store_id, peer_id: l.id }];
                remove(dead.store_id, Some(l.store_id)).map(|rest| {
                    steps.extend(rest);
                    (name("replace-down-replica", "replace-offline-replica"), steps)
                })
            } else {
                // Rebuild first, then drop the old voter (never shrink below the quorum we have).
                add(&mut counts, alloc_id, Some(dead.store_id)).and_then(|mut steps| {
                    let new_voter = steps.first().and_then(|s| s.region_delta()).map(|(s, _)| s);
                    steps.extend(remove(dead.store_id, new_voter)?);
                    Some((name("replace-down-replica", "replace-offline-replica"), steps))
                })
            }
        } else if let Some(l) = peers.iter().find(|p| is_learner(p)) {
            // A learner no operator owns (e.g. one that timed out half-way).
            if voters.len() < cfg.max_replicas {
                Some((
                    "promote-learner",
                    vec![OpStep::PromoteLearner { store_id: l.store_id, peer_id: l.id }],
                ))
            } else {
                Some(("remove-extra-learner", vec![OpStep::RemovePeer { store_id: l.store_id }]))
            }
        } else if voters.len() < cfg.max_replicas {
            add(&mut counts, alloc_id, None).map(|steps| ("add-replica", steps))
        } else if voters.len() > cfg.max_replicas {
            // Drop a follower on the busiest store.
            voters
                .iter()
                .filter(|p| p.id != leader.id)
                .max_by_key(|p| (counts.get(&p.store_id).copied().unwrap_or(0), p.store_id))
                .map(|p| {
                    ("remove-extra-replica", vec![OpStep::RemovePeer { store_id: p.store_id }])
                })
        } else {
            None
        };
        if let Some((desc, steps)) = plan {
            out.push(Operator::new(
                r.region.id,
                OpKind::Replica,
                desc,
                steps,
                now,
                cfg.operator_timeout,
            ));
            budget -= 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::test_util::{cfg, cluster, counter};
    use super::super::{schedule, store_views, OpStep, Operators};
    use super::*;

    #[test]
    fn healthy_cluster_needs_nothing() {
        let now = Instant::now();
        let c = cluster(&[1, 2, 3], &[(1, &[1, 2, 3]), (2, &[1, 2, 3])], now);
        let views = store_views(&c, now, now, &cfg());
        assert!(check_replicas(&c, &Operators::default(), &views, now, &cfg(), &mut counter())
            .is_empty());
    }

    #[test]
    fn replicas_leave_a_store_being_deleted_leader_last() {
        let now = Instant::now();
        let mut c = cluster(&[1, 2, 3, 4], &[(1, &[1, 2, 3]), (2, &[1, 2, 3])], now);
        c.stores.get_mut(&1).unwrap().store.state = metapb::StoreState::Offline as i32;
        let views = store_views(&c, now, now, &cfg());
        let ops = check_replicas(&c, &Operators::default(), &views, now, &cfg(), &mut counter());
        assert_eq!(ops.len(), 2);
        // Region led from the leaving store: rebuilt on 4, leadership handed
        // to another old voter, then the replica removed.
        assert_eq!(ops[0].desc, "replace-offline-replica");
        assert!(matches!(ops[0].steps[0], OpStep::AddLearner { store_id: 4, .. }));
        assert!(matches!(ops[0].steps[1], OpStep::PromoteLearner { store_id: 4, .. }));
        assert_eq!(ops[0].steps[2], OpStep::TransferLeader { to_store: 2 });
        assert_eq!(ops[0].steps[3], OpStep::RemovePeer { store_id: 1 });
        // Led elsewhere: no transfer.
        assert_eq!(ops[1].steps.len(), 3);
        assert_eq!(ops[1].steps[2], OpStep::RemovePeer { store_id: 1 });
        // Nothing is ever placed on the leaving store.
        let c = cluster(&[1, 2, 3], &[(2, &[2, 3])], now);
        let mut c = c;
        c.stores.get_mut(&1).unwrap().store.state = metapb::StoreState::Offline as i32;
        let views = store_views(&c, now, now, &cfg());
        let ops = check_replicas(&c, &Operators::default(), &views, now, &cfg(), &mut counter());
        assert!(ops.is_empty(), "no third store to add a replica on: {ops:?}");
    }

    #[test]
    fn replicas_on_a_down_store_are_rebuilt_on_a_live_one() {
        let start = Instant::now();
        let mut c =
            cluster(&[1, 2, 3, 4], &[(1, &[1, 2, 3]), (2, &[1, 2, 3]), (1, &[1, 2, 4])], start);
        let now = start + Duration::from_secs(60);
        for s in [1, 2, 4] {
            c.stores.get_mut(&s).unwrap().last_heartbeat = Some(now);
        }
        // Store 3 last heartbeat 60s ago > 30s: down.
        let ops = schedule(&c, &Operators::default(), now, start, &cfg(), &mut counter());
        let repairs: Vec<_> = ops.iter().filter(|o| o.kind == OpKind::Replica).collect();
        assert_eq!(repairs.len(), 2, "{ops:?}");
        for op in repairs {
            assert_eq!(
                op.steps[0],
                OpStep::AddLearner { store_id: 4, peer_id: op.steps[1].peer_id() }
            );
            assert_eq!(op.steps[2], OpStep::RemovePeer { store_id: 3 });
        }
    }

    #[test]
    fn a_store_not_heard_since_pd_start_is_not_down_yet() {
        let start = Instant::now();
        let mut c = cluster(&[1, 2, 3, 4], &[(1, &[1, 2, 3])], start);
        c.stores.get_mut(&3).unwrap().last_heartbeat = None;
        let views = store_views(&c, start + Duration::from_secs(5), start, &cfg());
        assert!(views[&3].up);
        let views = store_views(&c, start + Duration::from_secs(31), start, &cfg());
        assert!(!views[&3].up);
    }

    #[test]
    fn a_down_extra_voter_is_just_removed() {
        let start = Instant::now();
        // A move to store 4 got as far as promoting, then store 4 died.
        let mut c = cluster(&[1, 2, 3, 4], &[(1, &[1, 2, 3, 4])], start);
        let now = start + Duration::from_secs(60);
        for s in [1, 2, 3] {
            c.stores.get_mut(&s).unwrap().last_heartbeat = Some(now);
        }
        let views = store_views(&c, now, start, &cfg());
        let ops = check_replicas(&c, &Operators::default(), &views, now, &cfg(), &mut counter());
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].steps, vec![OpStep::RemovePeer { store_id: 4 }]);
    }

    #[test]
    fn a_live_learner_replaces_a_down_voter() {
        let start = Instant::now();
        let mut c = cluster(&[1, 2, 3, 4], &[(1, &[1, 2, 3, 4])], start);
        let r = c.region_by_id(1).unwrap().clone();
        let mut region = r.region.clone();
        region.peers[3].role = metapb::PeerRole::Learner as i32;
        let mut info = r;
        info.region = region;
        c.put_region(info);
        let now = start + Duration::from_secs(60);
        for s in [1, 3, 4] {
            c.stores.get_mut(&s).unwrap().last_heartbeat = Some(now);
        }
        let views = store_views(&c, now, start, &cfg());
        let ops = check_replicas(&c, &Operators::default(), &views, now, &cfg(), &mut counter());
        assert_eq!(ops.len(), 1);
        assert_eq!(
            ops[0].steps,
            vec![
                OpStep::PromoteLearner { store_id: 4, peer_id: 104 },
                OpStep::RemovePeer { store_id: 2 }
            ]
        );
    }

    #[test]
    fn missing_and_extra_replicas() {
        let now = Instant::now();
        let c = cluster(&[1, 2, 3, 4], &[(1, &[1, 2]), (1, &[1, 2, 3, 4])], now);
        let views = store_views(&c, now, now, &cfg());
        let ops = check_replicas(&c, &Operators::default(), &views, now, &cfg(), &mut counter());
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].desc, "add-replica");
        assert!(matches!(ops[0].steps[0], OpStep::AddLearner { store_id: 3 | 4, .. }));
        assert_eq!(ops[1].desc, "remove-extra-replica");
        assert!(!matches!(ops[1].steps[0], OpStep::RemovePeer { store_id: 1 }), "never the leader");
    }

    #[test]
    fn respects_the_replica_limit_and_running_operators() {
        let start = Instant::now();
        let regions: Vec<(u64, &[u64])> = (0..20).map(|_| (1u64, &[1u64, 2, 3][..])).collect();
        let mut c = cluster(&[1, 2, 3, 4], &regions, start);
        let now = start + Duration::from_secs(60);
        for s in [1, 2, 4] {
            c.stores.get_mut(&s).unwrap().last_heartbeat = Some(now);
        }
        let views = store_views(&c, now, start, &cfg());
        let mut ops = Operators::default();
        let first = check_replicas(&c, &ops, &views, now, &cfg(), &mut counter());
        assert_eq!(first.len(), cfg().replica_schedule_limit);
        for op in first {
            assert!(ops.add(op, false));
        }
        assert!(
            check_replicas(&c, &ops, &views, now, &cfg(), &mut counter()).is_empty(),
            "limit reached"
        );
    }
}
