//! The in-memory cluster view: stores and the region routing table. Pure
//! logic, no IO: callers persist what the methods say changed.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::Instant;

use atoll_codec::api::ApiVersion;
use atoll_proto::metapb;
use atoll_proto::pdpb;

use crate::keyspace;

#[derive(Clone, Debug)]
pub struct StoreInfo {
    pub store: metapb::Store,
    pub stats: Option<pdpb::StoreStats>,
    pub last_heartbeat: Option<Instant>,
}

#[derive(Clone, Debug)]
pub struct RegionInfo {
    pub region: metapb::Region,
    pub leader: Option<metapb::Peer>,
    pub term: u64,
    pub approximate_size: u64,
    pub approximate_keys: u64,
    pub pending_peers: Vec<metapb::Peer>,
}

impl RegionInfo {
    /// A region known only by its shape (from storage, bootstrap or a split
    /// report); heartbeats fill in the rest.
    pub fn new(region: metapb::Region, leader: Option<metapb::Peer>) -> Self {
        RegionInfo {
            region,
            leader,
            term: 0,
            approximate_size: 0,
            approximate_keys: 0,
            pending_peers: vec![],
        }
    }

    /// A heartbeat response addressed to this region's leader, with no command yet.
    pub fn response(&self) -> pdpb::RegionHeartbeatResponse {
        pdpb::RegionHeartbeatResponse {
            region_id: self.region.id,
            region_epoch: self.region.region_epoch.clone(),
            target_peer: self.leader.clone(),
            ..Default::default()
        }
    }

    /// A split command: at `keys` (encoded) with `Usekey`, or in half with
    /// `Approximate` when there are none.
    pub fn split_command(&self, keys: Vec<Vec<u8>>) -> pdpb::RegionHeartbeatResponse {
        let policy = if keys.is_empty() {
            pdpb::CheckPolicy::Approximate
        } else {
            pdpb::CheckPolicy::Usekey
        };
        pdpb::RegionHeartbeatResponse {
            split_region: Some(pdpb::SplitRegion { policy: policy as i32, keys }),
            ..self.response()
        }
    }
}

/// What a region heartbeat changed.
#[derive(Debug, Default)]
pub struct HeartbeatOutcome {
    /// The region to persist (new or changed shape).
    pub save: Option<metapb::Region>,
    /// Regions replaced by this one (persisted copies must be deleted).
    pub removed: Vec<u64>,
    /// An operator for the leader, if any.
    pub response: Option<pdpb::RegionHeartbeatResponse>,
    /// The heartbeat was older than what PD knows and was ignored.
    pub stale: bool,
}

#[derive(Default)]
pub struct Cluster {
    /// Fixed at bootstrap; `None` before. Region bounds are in its region
    /// key space (`atoll_codec::api`), and only V2 has keyspaces to split at.
    pub api_version: Option<ApiVersion>,
    pub stores: HashMap<u64, StoreInfo>,
    regions: HashMap<u64, RegionInfo>,
    /// start_key -> region id; ranges never overlap.
    by_start: BTreeMap<Vec<u8>, u64>,
}

fn epoch(r: &metapb::Region) -> metapb::RegionEpoch {
    r.region_epoch.clone().unwrap_or_default()
}

/// Is `a` strictly older than `b` in either dimension?
fn is_stale(a: &metapb::RegionEpoch, b: &metapb::RegionEpoch) -> bool {
    a.version < b.version || a.conf_ver < b.conf_ver
}

fn overlaps(a: &metapb::Region, start: &[u8], end: &[u8]) -> bool {
    (end.is_empty() || a.start_key.as_slice() < end)
        && (a.end_key.is_empty() || a.end_key.as_slice() > start)
}

impl Cluster {
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    pub fn put_store(&mut self, store: metapb::Store) {
        let e = self.stores.entry(store.id).or_insert(StoreInfo {
            store: store.clone(),
            stats: None,
            last_heartbeat: None,
        });
        e.store = store;
    }

    /// The region containing `key` (encoded).
    pub fn region_by_key(&self, key: &[u8]) -> Option<&RegionInfo> {
        let (_, id) =
            self.by_start.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back()?;
        let r = self.regions.get(id)?;
        (r.region.end_key.is_empty() || key < r.region.end_key.as_slice()).then_some(r)
    }

    /// The region just before the one containing `key`.
    pub fn prev_region(&self, key: &[u8]) -> Option<&RegionInfo> {
        let cur = self.region_by_key(key)?;
        let (_, id) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(cur.region.start_key.as_slice())))
            .next_back()?;
        self.regions.get(id)
    }

    pub fn region_by_id(&self, id: u64) -> Option<&RegionInfo> {
        self.regions.get(&id)
    }

    /// Regions intersecting `[start, end)` in key order, at most `limit` (0 = all).
    pub fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<&RegionInfo> {
        let first = self
            .region_by_key(start)
            .map(|r| r.region.start_key.clone())
            .unwrap_or_else(|| start.to_vec());
        let mut out = vec![];
        for (_, id) in
            self.by_start.range::<[u8], _>((Bound::Included(first.as_slice()), Bound::Unbounded))
        {
            let r = &self.regions[id];
            if !end.is_empty() && r.region.start_key.as_slice() >= end {
                break;
            }
            out.push(r);
            if limit > 0 && out.len() >= limit {
                break;
            }
        }
        out
    }

    pub fn all_regions(&self) -> impl Iterator<Item = &RegionInfo> {
        self.by_start.values().map(|id| &self.regions[id])
    }

    /// Inserts `region` unless PD already knows a newer shape of it or of an
    /// overlapping region. Returns the ids it replaced, or `None` if stale.
    pub fn put_region(&mut self, info: RegionInfo) -> Option<Vec<u64>> {
        let r = &info.region;
        if let Some(old) = self.regions.get(&r.id) {
            if is_stale(&epoch(r), &epoch(&old.region)) {
                return None;
            }
        }
        let overlapping: Vec<u64> = self
            .scan_regions(&r.start_key, &r.end_key, 0)
            .into_iter()
            .filter(|o| o.region.id != r.id && overlaps(&o.region, &r.start_key, &r.end_key))
            .map(|o| o.region.id)
            .collect();
        for id in &overlapping {
            if epoch(&self.regions[id].region).version > epoch(r).version {
                return None;
            }
        }
        for id in &overlapping {
            let old = self.regions.remove(id).expect("indexed region exists");
            self.by_start.remove(&old.region.start_key);
        }
        if let Some(old) = self.regions.remove(&r.id) {
            self.by_start.remove(&old.region.start_key);
        }
        self.by_start.insert(r.start_key.clone(), r.id);
        self.regions.insert(r.id, info);
        Some(overlapping)
    }

    /// Handles a region heartbeat and decides on an operator.
    pub fn on_region_heartbeat(&mut self, req: &pdpb::RegionHeartbeatRequest) -> HeartbeatOutcome {
        let Some(region) = req.region.clone() else {
            return HeartbeatOutcome { stale: true, ..Default::default() };
        };
        let changed = self.regions.get(&region.id).map(|o| o.region != region).unwrap_or(true);
        let info = RegionInfo {
            region: region.clone(),
            leader: req.leader.clone(),
            term: req.term,
            approximate_size: req.approximate_size,
            approximate_keys: req.approximate_keys,
            pending_peers: req.pending_peers.clone(),
        };
        let Some(removed) = self.put_region(info) else {
            return HeartbeatOutcome { stale: true, ..Default::default() };
        };
        let response = match self.api_version {
            Some(ApiVersion::V2) => split_for_keyspaces(&self.regions[&region.id]),
            _ => None,
        };
        HeartbeatOutcome { save: changed.then_some(region), removed, response, stale: false }
    }
}

/// Keyspaces (API V2) must not share regions: ask the leader to split at any
/// keyspace boundary strictly inside the region.
pub fn split_for_keyspaces(r: &RegionInfo) -> Option<pdpb::RegionHeartbeatResponse> {
    let keys = keyspace::split_keys_inside(&r.region.start_key, &r.region.end_key);
    (!keys.is_empty()).then(|| r.split_command(keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &[u8], end: &[u8], version: u64) -> metapb::Region {
        metapb::Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version }),
            peers: vec![metapb::Peer { id: id * 10, store_id: 1, ..Default::default() }],
            ..Default::default()
        }
    }

    fn hb(r: metapb::Region) -> pdpb::RegionHeartbeatRequest {
        let leader = r.peers[0].clone();
        pdpb::RegionHeartbeatRequest { region: Some(r), leader: Some(leader), ..Default::default() }
    }

    #[test]
    fn routing_after_split_heartbeats() {
        let mut c = Cluster::default();
        assert!(!c.on_region_heartbeat(&hb(region(1, b"", b"", 1))).stale);
        assert_eq!(c.region_by_key(b"zzz").unwrap().region.id, 1);
        // Right-derived split: 1 becomes [m, +inf), 2 is [, m).
        let out = c.on_region_heartbeat(&hb(region(1, b"m", b"", 2)));
        assert!(out.save.is_some());
        assert!(c.region_by_key(b"a").is_none(), "left half unknown until it reports");
        c.on_region_heartbeat(&hb(region(2, b"", b"m", 2)));
        assert_eq!(c.region_by_key(b"a").unwrap().region.id, 2);
        assert_eq!(c.region_by_key(b"m").unwrap().region.id, 1);
        assert_eq!(c.prev_region(b"m").unwrap().region.id, 2);
        assert_eq!(c.scan_regions(b"", b"", 0).len(), 2);
        assert_eq!(c.scan_regions(b"b", b"c", 0).len(), 1);
        assert_eq!(c.scan_regions(b"", b"", 1).len(), 1);
    }

    #[test]
    fn stale_heartbeats_are_ignored() {
        let mut c = Cluster::default();
        c.on_region_heartbeat(&hb(region(2, b"", b"m", 2)));
        c.on_region_heartbeat(&hb(region(1, b"m", b"", 2)));
        // The pre-split parent reports late: it must not clobber the children.
        let out = c.on_region_heartbeat(&hb(region(1, b"", b"", 1)));
        assert!(out.stale);
        assert_eq!(c.region_by_key(b"a").unwrap().region.id, 2);
        assert_eq!(c.region_count(), 2);
    }

    #[test]
    fn newer_region_replaces_overlapping_older_ones() {
        let mut c = Cluster::default();
        c.on_region_heartbeat(&hb(region(1, b"", b"", 1)));
        let out = c.on_region_heartbeat(&hb(region(2, b"", b"m", 2)));
        assert_eq!(out.removed, vec![1]);
        assert_eq!(c.region_count(), 1);
    }

    #[test]
    fn asks_to_split_at_keyspace_boundaries() {
        let mut c = Cluster { api_version: Some(ApiVersion::V2), ..Default::default() };
        let out = c.on_region_heartbeat(&hb(region(1, b"", b"", 1)));
        let split = out.response.unwrap().split_region.unwrap();
        assert_eq!(split.keys, keyspace::boundaries(0));
        let b = keyspace::boundaries(0);
        let out = c.on_region_heartbeat(&hb(region(3, &b[0], &b[1], 2)));
        assert!(out.response.is_none(), "a region holding exactly one keyspace stays");
    }

    #[test]
    fn api_v1_clusters_have_no_keyspace_splits() {
        for api_version in [None, Some(ApiVersion::V1)] {
            let mut c = Cluster { api_version, ..Default::default() };
            assert!(c.on_region_heartbeat(&hb(region(1, b"", b"", 1))).response.is_none());
        }
    }
}
