//! State shared by every poller of one store: the key ranges of the local
//! regions (to refuse peers and snapshots that would overlap), which regions
//! are awake (ticked), and when each other store was last heard from (to wake
//! hibernated followers whose leader's store went silent).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use atoll_proto::atollpb::RaftMessage;
use atoll_proto::metapb;
use dashmap::{DashMap, DashSet};
use parking_lot::Mutex;

/// First votes kept for split children not yet created here (the oldest
/// goes first when full).
pub const PENDING_VOTES_MAX: usize = 256;

/// Initialized local regions by start key; their ranges never overlap.
#[derive(Default)]
pub struct StoreMeta {
    regions: HashMap<u64, metapb::Region>,
    by_start: BTreeMap<Vec<u8>, u64>,
    /// A split child's first (pre-)vote that arrived before this store
    /// applied the split: dropping it would leave the child leaderless
    /// for an election timeout. Replayed when the split creates the peer.
    pending_votes: VecDeque<RaftMessage>,
}

impl StoreMeta {
    /// Records (or updates) an initialized region's range.
    pub fn set_region(&mut self, r: &metapb::Region) {
        if let Some(old) = self.regions.insert(r.id, r.clone()) {
            if self.by_start.get(&old.start_key) == Some(&r.id) {
                self.by_start.remove(&old.start_key);
            }
        }
        self.by_start.insert(r.start_key.clone(), r.id);
    }

    pub fn remove(&mut self, id: u64) {
        if let Some(old) = self.regions.remove(&id) {
            if self.by_start.get(&old.start_key) == Some(&id) {
                self.by_start.remove(&old.start_key);
            }
        }
    }

    pub fn region(&self, id: u64) -> Option<&metapb::Region> {
        self.regions.get(&id)
    }

    /// Every initialized local region.
    pub fn regions(&self) -> impl Iterator<Item = &metapb::Region> {
        self.regions.values()
    }

    /// Local regions other than `except` that intersect the encoded range
    /// `[start, end)` (an empty end is unbounded).
    pub fn overlapping(&self, start: &[u8], end: &[u8], except: u64) -> Vec<metapb::Region> {
        let mut out = vec![];
        let candidates: Box<dyn DoubleEndedIterator<Item = (&Vec<u8>, &u64)>> = if end.is_empty() {
            Box::new(self.by_start.iter())
        } else {
            Box::new(
                self.by_start
                    .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(end))),
            )
        };
        for (_, id) in candidates.rev() {
            let r = &self.regions[id];
            if !r.end_key.is_empty() && r.end_key.as_slice() <= start {
                break;
            }
            if r.id != except {
                out.push(r.clone());
            }
        }
        out
    }

    /// Keeps a first vote for a peer a split not yet applied here will create.
    pub fn push_pending_vote(&mut self, msg: RaftMessage) {
        if self.pending_votes.len() >= PENDING_VOTES_MAX {
            self.pending_votes.pop_front();
        }
        self.pending_votes.push_back(msg);
    }

    /// The kept votes addressed to `peer_id` of `region_id`.
    pub fn take_pending_votes(&mut self, region_id: u64, peer_id: u64) -> Vec<RaftMessage> {
        let mut mine = vec![];
        self.pending_votes.retain(|m| {
            let to_it =
                m.region_id == region_id && m.to_peer.as_ref().is_some_and(|p| p.id == peer_id);
            if to_it {
                mine.push(m.clone());
            }
            !to_it
        });
        mine
    }

    pub fn len(&self) -> usize {
        self.regions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }
}

#[derive(Default)]
pub struct StoreShared {
    pub meta: Mutex<StoreMeta>,
    /// Regions that want raft ticks (not hibernated).
    pub ticking: DashSet<u64>,
    /// Hibernated followers and the store of the leader they wait for.
    pub sleeping_followers: DashMap<u64, u64>,
    /// When each other store last sent us anything (including keep-alives).
    pub last_seen: DashMap<u64, Instant>,
}

impl StoreShared {
    pub fn store_seen(&self, store_id: u64) {
        self.last_seen.insert(store_id, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(region_id: u64, to: u64) -> RaftMessage {
        RaftMessage {
            region_id,
            to_peer: Some(metapb::Peer { id: to, ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn pending_votes_are_bounded_and_taken_per_peer() {
        let mut m = StoreMeta::default();
        m.push_pending_vote(vote(7, 70));
        m.push_pending_vote(vote(8, 80));
        m.push_pending_vote(vote(7, 70));
        assert_eq!(m.take_pending_votes(7, 70).len(), 2);
        assert!(m.take_pending_votes(7, 70).is_empty());
        assert_eq!(m.take_pending_votes(8, 80).len(), 1);
        for i in 0..PENDING_VOTES_MAX as u64 + 10 {
            m.push_pending_vote(vote(i, i));
        }
        assert_eq!(m.pending_votes.len(), PENDING_VOTES_MAX);
        assert!(m.take_pending_votes(0, 0).is_empty(), "the oldest went first");
        assert_eq!(m.take_pending_votes(20, 20).len(), 1);
    }

    fn r(id: u64, s: &[u8], e: &[u8]) -> metapb::Region {
        metapb::Region { id, start_key: s.to_vec(), end_key: e.to_vec(), ..Default::default() }
    }

    #[test]
    fn overlap_queries_follow_splits() {
        let mut m = StoreMeta::default();
        m.set_region(&r(1, b"", b""));
        assert_eq!(m.overlapping(b"a", b"b", 0).len(), 1);
        assert!(m.overlapping(b"a", b"b", 1).is_empty());
        // Right-derived split: 2 takes [, m), 1 keeps [m, +inf).
        m.set_region(&r(2, b"", b"m"));
        m.set_region(&r(1, b"m", b""));
        let ids = |v: Vec<metapb::Region>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(m.overlapping(b"a", b"b", 0)), vec![2]);
        assert_eq!(ids(m.overlapping(b"x", b"", 0)), vec![1]);
        assert_eq!(ids(m.overlapping(b"c", b"n", 0)), vec![1, 2]);
        assert!(m.overlapping(b"m", b"m\0", 1).is_empty());
        m.remove(2);
        assert!(m.overlapping(b"a", b"b", 0).is_empty());
        assert_eq!(m.len(), 1);
    }
}
