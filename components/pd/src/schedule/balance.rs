//! Balance schedulers: spread leaders (transfer leader) and replicas (move a
//! replica: add a learner on the idlest store, promote it, hand leadership
//! away if needed, remove the peer on the busiest store) across live stores.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use atoll_proto::metapb;

use super::{host_clash, OpKind, OpStep, Operator, Operators, ScheduleConfig, StoreView};
use crate::cluster::{Cluster, RegionInfo};

fn voter_on(r: &metapb::Region, store: u64) -> bool {
    r.peers.iter().any(|p| p.store_id == store && p.role != metapb::PeerRole::Learner as i32)
}

/// A region that may be scheduled: no operator, leader known, every peer on
/// a live store that is not being deleted, and caught up.
fn movable(
    r: &RegionInfo,
    ops: &Operators,
    busy: &HashSet<u64>,
    views: &HashMap<u64, StoreView>,
) -> bool {
    ops.get(r.region.id).is_none()
        && !busy.contains(&r.region.id)
        && r.leader.is_some()
        && r.pending_peers.is_empty()
        && r.region.peers.iter().all(|p| views.get(&p.store_id).is_some_and(|v| v.schedulable()))
        && r.region.peers.iter().all(|p| p.role != metapb::PeerRole::Learner as i32)
}

/// Moves leaders from the store with the most to the one with the fewest.
pub fn balance_leaders(
    c: &Cluster,
    ops: &Operators,
    views: &HashMap<u64, StoreView>,
    busy: &HashSet<u64>,
    now: Instant,
    cfg: &ScheduleConfig,
) -> Vec<Operator> {
    let mut out = vec![];
    let mut counts: HashMap<u64, i64> =
        views.values().filter(|v| v.schedulable()).map(|v| (v.id, v.leader_count as i64)).collect();
    // Count leaders where running transfers will put them.
    for op in ops.all() {
        for step in op.remaining() {
            if let OpStep::TransferLeader { to_store } = step {
                if let Some(from) =
                    c.region_by_id(op.region_id).and_then(|r| r.leader.as_ref()).map(|l| l.store_id)
                {
                    *counts.entry(from).or_default() -= 1;
                }
                *counts.entry(*to_store).or_default() += 1;
            }
        }
    }
    let mut picked: HashSet<u64> = HashSet::new();
    let budget = cfg.leader_schedule_limit.saturating_sub(ops.count(OpKind::Leader));
    while out.len() < budget && counts.len() >= 2 {
        let (&src, &max) =
            counts.iter().max_by_key(|(id, n)| (**n, std::cmp::Reverse(**id))).expect("non-empty");
        // The idlest store that holds a voter of one of src's regions.
        let mut targets: Vec<(u64, i64)> =
            counts.iter().map(|(id, n)| (*id, *n)).filter(|(id, _)| *id != src).collect();
        targets.sort_by_key(|(id, n)| (*n, *id));
        let mut chosen = None;
        for (dst, n) in targets {
            if (max - n) as u64 <= cfg.balance_tolerance {
                break;
            }
            let region = c.all_regions().find(|r| {
                r.leader.as_ref().is_some_and(|l| l.store_id == src)
                    && voter_on(&r.region, dst)
                    && !picked.contains(&r.region.id)
                    && movable(r, ops, busy, views)
            });
            if let Some(r) = region {
                chosen = Some((r.region.id, dst));
                break;
            }
        }
        let Some((region_id, dst)) = chosen else { break };
        picked.insert(region_id);
        *counts.get_mut(&src).expect("src counted") -= 1;
        *counts.get_mut(&dst).expect("dst counted") += 1;
        out.push(Operator::new(
            region_id,
            OpKind::Leader,
            "balance-leader",
            vec![OpStep::TransferLeader { to_store: dst }],
            now,
            cfg.operator_timeout,
        ));
    }
    out
}

/// Moves replicas from the store with the most regions to the one with the
/// fewest; small regions first (less data to copy).
pub fn balance_regions(
    c: &Cluster,
    ops: &Operators,
    views: &HashMap<u64, StoreView>,
    busy: &HashSet<u64>,
    now: Instant,
    cfg: &ScheduleConfig,
    alloc_id: &mut dyn FnMut() -> Option<u64>,
) -> Vec<Operator> {
    let mut out = vec![];
    let mut counts: HashMap<u64, i64> = ops.projected_region_counts(views);
    counts.retain(|id, _| views.get(id).is_some_and(|v| v.schedulable()));
    let mut picked: HashSet<u64> = HashSet::new();
    let budget = cfg.region_schedule_limit.saturating_sub(ops.count(OpKind::Region));
    let labeled = views.values().any(|v| v.host.is_some());
    while out.len() < budget && counts.len() >= 2 {
        // Fullest source and emptiest target first; when host labels rule
        // out every region of that pair, the next pair (without labels,
        // only that pair).
        let mut order: Vec<(u64, i64)> = counts.iter().map(|(id, n)| (*id, *n)).collect();
        order.sort_by_key(|(id, n)| (std::cmp::Reverse(*n), *id));
        let pairs = order
            .iter()
            .flat_map(|&(src, max)| order.iter().rev().map(move |&(dst, min)| (src, max, dst, min)))
            .filter(|(src, _, dst, _)| src != dst)
            .take(if labeled { usize::MAX } else { 1 });
        let mut chosen = None;
        for (src, max, dst, min) in pairs {
            if max - min <= cfg.balance_tolerance as i64 {
                continue;
            }
            let region = c
                .all_regions()
                .filter(|r| {
                    voter_on(&r.region, src)
                        && !r.region.peers.iter().any(|p| p.store_id == dst)
                        && !host_clash(&r.region, dst, Some(src), views)
                        && !picked.contains(&r.region.id)
                        && movable(r, ops, busy, views)
                })
                .min_by_key(|r| (r.approximate_size, r.region.id));
            if let Some(r) = region {
                chosen = Some((src, dst, r));
                break;
            }
        }
        let Some((src, dst, r)) = chosen else { break };
        let Some(peer_id) = alloc_id() else { break };
        picked.insert(r.region.id);
        let mut steps = vec![
            OpStep::AddLearner { store_id: dst, peer_id },
            OpStep::PromoteLearner { store_id: dst, peer_id },
        ];
        if r.leader.as_ref().is_some_and(|l| l.store_id == src) {
            steps.push(OpStep::TransferLeader { to_store: dst });
        }
        steps.push(OpStep::RemovePeer { store_id: src });
        *counts.get_mut(&src).expect("src counted") -= 1;
        *counts.get_mut(&dst).expect("dst counted") += 1;
        out.push(Operator::new(
            r.region.id,
            OpKind::Region,
            "balance-region",
            steps,
            now,
            cfg.operator_timeout,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{cfg, cluster, counter};
    use super::super::{store_views, Operators};
    use super::*;

    #[test]
    fn leaders_move_from_the_busiest_store() {
        let now = Instant::now();
        let regions: Vec<(u64, &[u64])> = (0..6).map(|_| (1u64, &[1u64, 2, 3][..])).collect();
        let c = cluster(&[1, 2, 3], &regions, now);
        let views = store_views(&c, now, now, &cfg());
        let ops = balance_leaders(&c, &Operators::default(), &views, &HashSet::new(), now, &cfg());
        // 6/0/0 -> 2/2/2 needs four transfers; the limit is four.
        assert_eq!(ops.len(), 4, "{ops:?}");
        let to = |s: u64| {
            ops.iter().filter(|o| o.steps == vec![OpStep::TransferLeader { to_store: s }]).count()
        };
        assert_eq!((to(2), to(3)), (2, 2));
        let ids: HashSet<u64> = ops.iter().map(|o| o.region_id).collect();
        assert_eq!(ids.len(), 4, "one operator per region");
    }

    #[test]
    fn balanced_leaders_stay() {
        let now = Instant::now();
        let c = cluster(
            &[1, 2, 3],
            &[(1, &[1, 2, 3]), (2, &[1, 2, 3]), (3, &[1, 2, 3]), (1, &[1, 2, 3])],
            now,
        );
        let views = store_views(&c, now, now, &cfg());
        assert!(balance_leaders(&c, &Operators::default(), &views, &HashSet::new(), now, &cfg())
            .is_empty());
    }

    #[test]
    fn replicas_move_to_a_new_store() {
        let now = Instant::now();
        let regions: Vec<(u64, &[u64])> =
            (0..8).map(|i| ((i % 3) as u64 + 1, &[1u64, 2, 3][..])).collect();
        let c = cluster(&[1, 2, 3, 4], &regions, now);
        let views = store_views(&c, now, now, &cfg());
        let ops = balance_regions(
            &c,
            &Operators::default(),
            &views,
            &HashSet::new(),
            now,
            &cfg(),
            &mut counter(),
        );
        assert_eq!(ops.len(), 4, "limited by region-schedule-limit");
        for op in &ops {
            assert!(matches!(op.steps[0], OpStep::AddLearner { store_id: 4, .. }), "{op:?}");
            let OpStep::RemovePeer { store_id: src } = *op.steps.last().unwrap() else {
                panic!("{op:?}")
            };
            let leader = c.region_by_id(op.region_id).unwrap().leader.as_ref().unwrap().store_id;
            // Leaving the leader's store means handing leadership over first.
            assert_eq!(op.steps.contains(&OpStep::TransferLeader { to_store: 4 }), leader == src);
        }
        // Store 4 ends at 4 replicas, the others at 20 total: 7/7/6 or so, never below 4.
        let mut after = ops_counts(&c, &ops, &views);
        after.retain(|_, n| *n > 0);
        assert!(after.values().all(|n| *n >= 4), "{after:?}");
    }

    fn ops_counts(
        c: &Cluster,
        ops: &[Operator],
        views: &HashMap<u64, StoreView>,
    ) -> HashMap<u64, i64> {
        let _ = c;
        let mut o = Operators::default();
        for op in ops {
            o.add(op.clone(), false);
        }
        o.projected_region_counts(views)
    }

    #[test]
    fn down_stores_and_pending_peers_are_left_alone() {
        let start = Instant::now();
        let regions: Vec<(u64, &[u64])> = (0..8).map(|_| (1u64, &[1u64, 2, 3][..])).collect();
        let mut c = cluster(&[1, 2, 3, 4], &regions, start);
        let now = start + std::time::Duration::from_secs(60);
        for s in [1, 2, 3] {
            c.stores.get_mut(&s).unwrap().last_heartbeat = Some(now);
        }
        let views = store_views(&c, now, start, &cfg());
        assert!(!views[&4].up);
        let ops = balance_regions(
            &c,
            &Operators::default(),
            &views,
            &HashSet::new(),
            now,
            &cfg(),
            &mut counter(),
        );
        assert!(ops.is_empty(), "never move data to a down store: {ops:?}");
    }
}
