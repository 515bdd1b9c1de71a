//! Scheduling, as pure code: the schedulers map a view of the cluster (the
//! routing table, store liveness, running operators) to new operators, and
//! the controller tracks operators against heartbeats. No IO here: PD's
//! service feeds heartbeats in and delivers the commands that come out.

pub mod balance;
pub mod operator;
pub mod replica;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use atoll_proto::metapb;
use atoll_proto::pdpb;

use crate::cluster::{Cluster, RegionInfo};
pub use operator::{OpKind, OpStatus, OpStep, Operator};

/// The knobs of scheduling (from PD's config).
#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    pub max_replicas: usize,
    /// A store without a heartbeat for this long is down: its replicas are
    /// rebuilt elsewhere.
    pub max_store_down_time: Duration,
    /// Concurrent operators per kind.
    pub leader_schedule_limit: usize,
    pub region_schedule_limit: usize,
    pub replica_schedule_limit: usize,
    /// Balance only when the busiest and idlest store differ by more than this.
    pub balance_tolerance: u64,
    pub operator_timeout: Duration,
}

/// A store as the schedulers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreView {
    pub id: u64,
    pub up: bool,
    pub region_count: u64,
    pub leader_count: u64,
    /// The store's `host` label: no two replicas of a region on one host.
    pub host: Option<String>,
    /// Being deleted (`Offline`): its replicas move away, nothing moves to it.
    pub offline: bool,
}

impl StoreView {
    /// May take replicas and leaders: up and not being deleted.
    pub fn schedulable(&self) -> bool {
        self.up && !self.offline
    }
}

/// The `host` label of a store, if it has one.
pub fn host_label(s: &metapb::Store) -> Option<String> {
    s.labels.iter().find(|l| l.key == "host" && !l.value.is_empty()).map(|l| l.value.clone())
}

/// Would a replica of `region` on `target` share a host with one of its
/// other replicas (`leaving` is on its way out and does not count)?
pub fn host_clash(
    region: &metapb::Region,
    target: u64,
    leaving: Option<u64>,
    views: &HashMap<u64, StoreView>,
) -> bool {
    let Some(host) = views.get(&target).and_then(|v| v.host.as_ref()) else { return false };
    region.peers.iter().any(|p| {
        p.store_id != target
            && Some(p.store_id) != leaving
            && views.get(&p.store_id).and_then(|v| v.host.as_ref()) == Some(host)
    })
}

/// Store liveness: heartbeat within `max_store_down_time`. A store PD has
/// not heard from since its own start counts as up until PD has been up
/// that long (PD restarts must not trigger mass repair).
pub fn store_views(
    c: &Cluster,
    now: Instant,
    pd_started: Instant,
    cfg: &ScheduleConfig,
) -> HashMap<u64, StoreView> {
    let mut views: HashMap<u64, StoreView> = c
        .stores
        .values()
        .filter(|s| s.store.state != metapb::StoreState::Tombstone as i32)
        .map(|s| {
            let last = s.last_heartbeat.unwrap_or(pd_started);
            let up = now.saturating_duration_since(last) <= cfg.max_store_down_time;
            let view = StoreView {
                id: s.store.id,
                up,
                region_count: 0,
                leader_count: 0,
                host: host_label(&s.store),
                offline: s.store.state == metapb::StoreState::Offline as i32,
            };
            (s.store.id, view)
        })
        .collect();
    for r in c.all_regions() {
        for p in &r.region.peers {
            if let Some(v) = views.get_mut(&p.store_id) {
                v.region_count += 1;
            }
        }
        if let Some(v) = r.leader.as_ref().and_then(|l| views.get_mut(&l.store_id)) {
            v.leader_count += 1;
        }
    }
    views
}

/// Running operators, at most one per region, with per-kind limits.
#[derive(Default)]
pub struct Operators {
    ops: HashMap<u64, Operator>,
}

impl Operators {
    pub fn get(&self, region_id: u64) -> Option<&Operator> {
        self.ops.get(&region_id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Operator> {
        self.ops.values()
    }

    pub fn count(&self, kind: OpKind) -> usize {
        self.ops.values().filter(|o| o.kind == kind).count()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Adds `op` unless the region already has one; an admin operator
    /// (`replace`) supersedes a running one.
    pub fn add(&mut self, op: Operator, replace: bool) -> bool {
        if !replace && self.ops.contains_key(&op.region_id) {
            return false;
        }
        self.ops.insert(op.region_id, op);
        true
    }

    /// Advances the region's operator with a heartbeat; returns the command
    /// to send, and whether the operator ended (finished or timed out).
    pub fn on_heartbeat(
        &mut self,
        r: &RegionInfo,
        now: Instant,
    ) -> (Option<pdpb::RegionHeartbeatResponse>, Option<(&'static str, OpStatus)>) {
        let Some(op) = self.ops.get_mut(&r.region.id) else { return (None, None) };
        match op.check(r, now) {
            OpStatus::Running => (op.command(r), None),
            status => {
                let desc = op.desc;
                self.ops.remove(&r.region.id);
                (None, Some((desc, status)))
            }
        }
    }

    /// Drops an operator (e.g. one that can no longer finish).
    pub fn remove(&mut self, region_id: u64) -> Option<Operator> {
        self.ops.remove(&region_id)
    }

    /// Operators that still have to put a replica or leadership on a store
    /// that is now down: they cannot finish and must make way for repair.
    pub fn doomed(&self, views: &HashMap<u64, StoreView>) -> Vec<u64> {
        let down = |s: &u64| !views.get(s).is_some_and(|v| v.up);
        self.ops
            .values()
            .filter(|op| {
                op.remaining().iter().any(|step| match step {
                    OpStep::TransferLeader { to_store } => down(to_store),
                    OpStep::AddLearner { store_id, .. }
                    | OpStep::PromoteLearner { store_id, .. } => down(store_id),
                    OpStep::RemovePeer { .. } => false,
                })
            })
            .map(|op| op.region_id)
            .collect()
    }

    /// The running operators as JSON, for storage: a new PD leader goes on
    /// with them.
    pub fn to_json(&self) -> Vec<u8> {
        let now = Instant::now();
        let mut saved: Vec<operator::SavedOperator> =
            self.ops.values().map(|op| op.saved(now)).collect();
        saved.sort_by_key(|o| o.region_id);
        serde_json::to_vec(&saved).expect("operators serialize")
    }

    /// Operators saved by [`Operators::to_json`] (none if `json` is absent
    /// or unreadable: operators are re-planned from the regions anyway).
    pub fn restore(json: Option<&[u8]>, now: Instant) -> Operators {
        let Some(json) = json else { return Operators::default() };
        match serde_json::from_slice::<Vec<operator::SavedOperator>>(json) {
            Ok(saved) => Operators {
                ops: saved
                    .into_iter()
                    .map(|s| {
                        let op = Operator::restore(s, now);
                        (op.region_id, op)
                    })
                    .collect(),
            },
            Err(e) => {
                tracing::warn!("saved operators unreadable, dropped: {e}");
                Operators::default()
            }
        }
    }

    /// Region counts per store as they will be once running operators finish.
    pub fn projected_region_counts(&self, views: &HashMap<u64, StoreView>) -> HashMap<u64, i64> {
        let mut counts: HashMap<u64, i64> =
            views.iter().map(|(id, v)| (*id, v.region_count as i64)).collect();
        for op in self.ops.values() {
            for step in op.remaining() {
                if let Some((store, d)) = step.region_delta() {
                    *counts.entry(store).or_default() += d;
                }
            }
        }
        counts
    }
}

/// Runs every scheduler once: replica repair first, then leader and region
/// balance. `alloc_id` hands out peer ids (PD's id allocator; a counter in
/// tests); `None` means "no id now", which skips that operator.
pub fn schedule(
    c: &Cluster,
    ops: &Operators,
    now: Instant,
    pd_started: Instant,
    cfg: &ScheduleConfig,
    alloc_id: &mut dyn FnMut() -> Option<u64>,
) -> Vec<Operator> {
    let views = store_views(c, now, pd_started, cfg);
    let mut out = replica::check_replicas(c, ops, &views, now, cfg, alloc_id);
    let busy: std::collections::HashSet<u64> = out.iter().map(|o| o.region_id).collect();
    out.extend(balance::balance_leaders(c, ops, &views, &busy, now, cfg));
    let busy: std::collections::HashSet<u64> = out.iter().map(|o| o.region_id).collect();
    out.extend(balance::balance_regions(c, ops, &views, &busy, now, cfg, alloc_id));
    out
}

/// Stores that could take a new replica of `region` (replacing `leaving`,
/// if any), best (fewest regions) first: up and not being deleted, without
/// a replica of it, and on no host that holds another of its replicas.
pub(crate) fn candidate_stores(
    region: &metapb::Region,
    leaving: Option<u64>,
    counts: &HashMap<u64, i64>,
    views: &HashMap<u64, StoreView>,
) -> Vec<u64> {
    let mut c: Vec<u64> = views
        .values()
        .filter(|v| v.schedulable() && !region.peers.iter().any(|p| p.store_id == v.id))
        .filter(|v| !host_clash(region, v.id, leaving, views))
        .map(|v| v.id)
        .collect();
    c.sort_by_key(|id| (counts.get(id).copied().unwrap_or(0), *id));
    c
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use crate::cluster::StoreInfo;

    pub fn cfg() -> ScheduleConfig {
        ScheduleConfig {
            max_replicas: 3,
            max_store_down_time: Duration::from_secs(30),
            leader_schedule_limit: 4,
            region_schedule_limit: 4,
            replica_schedule_limit: 8,
            balance_tolerance: 1,
            operator_timeout: Duration::from_secs(600),
        }
    }

    /// A cluster with `stores` (all heartbeating now) and regions given as
    /// (leader store, [stores]) with contiguous ranges.
    pub fn cluster(stores: &[u64], regions: &[(u64, &[u64])], now: Instant) -> Cluster {
        let mut c = Cluster::default();
        for s in stores {
            c.stores.insert(
                *s,
                StoreInfo {
                    store: metapb::Store { id: *s, ..Default::default() },
                    stats: None,
                    last_heartbeat: Some(now),
                },
            );
        }
        for (i, (leader, peers)) in regions.iter().enumerate() {
            let id = i as u64 + 1;
            let start = if i == 0 { vec![] } else { vec![i as u8] };
            let end = if i + 1 == regions.len() { vec![] } else { vec![i as u8 + 1] };
            let peers: Vec<metapb::Peer> = peers
                .iter()
                .map(|s| metapb::Peer { id: id * 100 + s, store_id: *s, ..Default::default() })
                .collect();
            let leader = peers.iter().find(|p| p.store_id == *leader).cloned();
            c.put_region(RegionInfo {
                region: metapb::Region {
                    id,
                    start_key: start,
                    end_key: end,
                    region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
                    peers,
                    ..Default::default()
                },
                leader,
                term: 1,
                approximate_size: 0,
                approximate_keys: 0,
                pending_peers: vec![],
            });
        }
        c
    }

    pub fn counter() -> impl FnMut() -> Option<u64> {
        let mut n = 1000;
        move || {
            n += 1;
            Some(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{cfg, cluster, counter};
    use super::*;

    #[test]
    fn operators_aimed_at_a_down_store_are_doomed() {
        let start = Instant::now();
        let mut c = cluster(&[1, 2, 3, 4], &[(1, &[1, 2, 3]), (1, &[1, 2, 3])], start);
        let now = start + Duration::from_secs(60);
        for s in [1, 2, 3] {
            c.stores.get_mut(&s).unwrap().last_heartbeat = Some(now);
        }
        let mut ops = Operators::default();
        let to4 = vec![
            OpStep::AddLearner { store_id: 4, peer_id: 9 },
            OpStep::RemovePeer { store_id: 1 },
        ];
        ops.add(
            Operator::new(1, OpKind::Region, "balance-region", to4, now, Duration::from_secs(60)),
            false,
        );
        let leader_to2 = vec![OpStep::TransferLeader { to_store: 2 }];
        ops.add(
            Operator::new(
                2,
                OpKind::Leader,
                "balance-leader",
                leader_to2,
                now,
                Duration::from_secs(60),
            ),
            false,
        );
        let views = store_views(&c, now, start, &cfg());
        assert_eq!(ops.doomed(&views), vec![1]);
    }

    /// Stores 1 and 2 share host `a`: no region gets replicas on both, by
    /// repair, by adding a replica, or by balance; a replica on a dead
    /// store of the host no longer counts.
    #[test]
    fn replicas_never_share_a_host() {
        let start = Instant::now();
        let hosts = [(1, "a"), (2, "a"), (3, "b"), (4, "c")];
        let label = |c: &mut Cluster| {
            for (id, h) in hosts {
                let labels = vec![metapb::StoreLabel { key: "host".into(), value: h.into() }];
                c.stores.get_mut(&id).unwrap().store.labels = labels;
            }
        };
        let targets = |ops: &[Operator]| -> Vec<(u64, u64)> {
            ops.iter()
                .flat_map(|o| {
                    o.steps.iter().filter_map(move |s| match s {
                        OpStep::AddLearner { store_id, .. } => Some((o.region_id, *store_id)),
                        _ => None,
                    })
                })
                .collect()
        };
        // A region one replica short, on 1 (host a) and 3: the third goes
        // to 4, not to 2 (host a), though 2 holds fewer regions.
        let mut c = cluster(&[1, 2, 3, 4], &[(1, &[1, 3]), (3, &[3, 4])], start);
        label(&mut c);
        let ops = schedule(&c, &Operators::default(), start, start, &cfg(), &mut counter());
        assert_eq!(targets(&ops), vec![(1, 4), (2, 2)]);
        // Store 1 dead: its replica moves to 2 (same host, but 1 is leaving).
        let mut c = cluster(&[1, 2, 3, 4], &[(3, &[1, 3, 4])], start);
        label(&mut c);
        let later = start + Duration::from_secs(60);
        for s in [2, 3, 4] {
            c.stores.get_mut(&s).unwrap().last_heartbeat = Some(later);
        }
        let ops = schedule(&c, &Operators::default(), later, start, &cfg(), &mut counter());
        assert_eq!(targets(&ops), vec![(1, 2)]);
        // Balance toward the empty store 2: only replicas leaving 1 (the
        // same host) may go there; without labels, others go too.
        let both = |c: &Cluster, ops: &[Operator]| {
            ops.iter().any(|o| {
                let r = c.region_by_id(o.region_id).unwrap();
                let mut on: std::collections::BTreeSet<u64> =
                    r.region.peers.iter().map(|p| p.store_id).collect();
                for s in &o.steps {
                    match s {
                        OpStep::AddLearner { store_id, .. } => on.insert(*store_id),
                        OpStep::RemovePeer { store_id } => on.remove(store_id),
                        _ => false,
                    };
                }
                on.contains(&1) && on.contains(&2)
            })
        };
        let regions: Vec<(u64, &[u64])> = (0..8).map(|_| (3, &[1u64, 3, 4][..])).collect();
        let mut c = cluster(&[1, 2, 3, 4], &regions, start);
        let mut cfg = cfg();
        cfg.region_schedule_limit = 8;
        let unlabeled = schedule(&c, &Operators::default(), start, start, &cfg, &mut counter());
        assert!(both(&c, &unlabeled), "without labels some move ends with 1 and 2");
        label(&mut c);
        let ops = schedule(&c, &Operators::default(), start, start, &cfg, &mut counter());
        assert!(targets(&ops).iter().any(|(_, s)| *s == 2), "replicas leave 1 for 2");
        assert!(!both(&c, &ops), "{:?}", targets(&ops));
    }
}
