//! The region cache: start key (region key space) -> region, filled from PD
//! on a miss, corrected by region errors.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use atoll_proto::metapb;
use parking_lot::RwLock;

#[derive(Clone, Debug)]
pub struct CachedRegion {
    pub region: metapb::Region,
    pub leader: Option<metapb::Peer>,
}

impl CachedRegion {
    /// The peer to send to: the known leader, else the first peer.
    pub fn target(&self) -> Option<metapb::Peer> {
        self.leader.clone().or_else(|| self.region.peers.first().cloned())
    }

    /// Does the region hold `key` (a region key)?
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.region.start_key.as_slice()
            && (self.region.end_key.is_empty() || key < self.region.end_key.as_slice())
    }
}

/// Regions cached at most; the oldest start keys are evicted first beyond it.
pub const REGION_CACHE_MAX: usize = 100_000;

#[derive(Default)]
pub struct RegionCache {
    by_start: RwLock<BTreeMap<Vec<u8>, CachedRegion>>,
    stores: RwLock<HashMap<u64, String>>,
}

impl RegionCache {
    pub fn lookup(&self, region_key: &[u8]) -> Option<CachedRegion> {
        let m = self.by_start.read();
        let (_, r) =
            m.range::<[u8], _>((Bound::Unbounded, Bound::Included(region_key))).next_back()?;
        r.contains(region_key).then(|| r.clone())
    }

    pub fn insert(&self, r: CachedRegion) {
        let mut m = self.by_start.write();
        // Drop anything overlapping the new range.
        let overlapping: Vec<Vec<u8>> = m
            .iter()
            .filter(|(_, o)| {
                (r.region.end_key.is_empty() || o.region.start_key < r.region.end_key)
                    && (o.region.end_key.is_empty() || o.region.end_key > r.region.start_key)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in overlapping {
            m.remove(&k);
        }
        while m.len() >= REGION_CACHE_MAX {
            let first = m.keys().next().cloned().expect("non-empty");
            m.remove(&first);
        }
        m.insert(r.region.start_key.clone(), r);
    }

    pub fn invalidate(&self, region_id: u64) {
        self.by_start.write().retain(|_, r| r.region.id != region_id);
    }

    pub fn update_leader(&self, region_id: u64, leader: metapb::Peer) {
        let mut m = self.by_start.write();
        if let Some(r) = m.values_mut().find(|r| r.region.id == region_id) {
            if r.region.peers.iter().any(|p| p.id == leader.id) {
                r.leader = Some(leader);
                return;
            }
        }
        m.retain(|_, r| r.region.id != region_id);
    }

    /// Moves on to another peer after the current target failed to answer.
    pub fn rotate_leader(&self, region_id: u64) {
        let mut m = self.by_start.write();
        if let Some(r) = m.values_mut().find(|r| r.region.id == region_id) {
            let cur = r.target().map(|p| p.id);
            let peers = &r.region.peers;
            let idx = peers
                .iter()
                .position(|p| Some(p.id) == cur)
                .map(|i| (i + 1) % peers.len())
                .unwrap_or(0);
            r.leader = peers.get(idx).cloned();
        }
    }

    pub fn store_addr(&self, id: u64) -> Option<String> {
        self.stores.read().get(&id).cloned()
    }

    pub fn put_store(&self, id: u64, addr: String) {
        self.stores.write().insert(id, addr);
    }

    pub fn forget_store(&self, id: u64) {
        self.stores.write().remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: u64, start: &[u8], end: &[u8]) -> CachedRegion {
        CachedRegion {
            region: metapb::Region {
                id,
                start_key: start.to_vec(),
                end_key: end.to_vec(),
                peers: vec![
                    metapb::Peer { id: id * 10, store_id: 1, ..Default::default() },
                    metapb::Peer { id: id * 10 + 1, store_id: 2, ..Default::default() },
                ],
                ..Default::default()
            },
            leader: None,
        }
    }

    #[test]
    fn lookup_respects_bounds() {
        let c = RegionCache::default();
        c.insert(region(1, b"", b"m"));
        c.insert(region(2, b"m", b""));
        assert_eq!(c.lookup(b"a").unwrap().region.id, 1);
        assert_eq!(c.lookup(b"m").unwrap().region.id, 2);
        assert_eq!(c.lookup(b"zzz").unwrap().region.id, 2);
        c.invalidate(1);
        assert!(c.lookup(b"a").is_none());
    }

    #[test]
    fn insert_replaces_overlapping_regions() {
        let c = RegionCache::default();
        c.insert(region(1, b"", b""));
        c.insert(region(2, b"", b"m"));
        assert!(c.lookup(b"z").is_none(), "the stale parent was dropped");
        assert_eq!(c.lookup(b"a").unwrap().region.id, 2);
    }

    #[test]
    fn leader_updates_and_rotation() {
        let c = RegionCache::default();
        c.insert(region(1, b"", b""));
        assert_eq!(c.lookup(b"a").unwrap().target().unwrap().id, 10, "first peer by default");
        c.rotate_leader(1);
        assert_eq!(c.lookup(b"a").unwrap().target().unwrap().id, 11);
        c.rotate_leader(1);
        assert_eq!(c.lookup(b"a").unwrap().target().unwrap().id, 10, "wraps around");
        c.update_leader(1, metapb::Peer { id: 11, store_id: 2, ..Default::default() });
        assert_eq!(c.lookup(b"a").unwrap().leader.unwrap().id, 11);
        // A leader that is not a member means the cached region is stale.
        c.update_leader(1, metapb::Peer { id: 99, store_id: 9, ..Default::default() });
        assert!(c.lookup(b"a").is_none());
    }
}
