//! [`RegionBook`]: one region's entries in store-level bookkeeping (the
//! region and leader gauges, the hibernated gauge, the ticking set and the
//! sleeping-followers map), owned by its peer.
//!
//! Every change goes through the book, and dropping it (the peer destroyed,
//! or dropped with its FSM when the store shuts down) takes the region's
//! entries back out, so the store-wide counts cannot drift from the peers
//! that exist. Depends on nothing but the metrics and [`StoreShared`].

use std::sync::Arc;

use crate::metrics::{HIBERNATED_REGIONS, LEADER_COUNT, REGION_COUNT};
use crate::store_meta::StoreShared;

pub struct RegionBook {
    region_id: u64,
    shared: Arc<StoreShared>,
    leader: bool,
    hibernated: bool,
    closed: bool,
}

impl RegionBook {
    /// Counts a new region in, ticking.
    pub fn open(region_id: u64, shared: Arc<StoreShared>) -> RegionBook {
        REGION_COUNT.inc();
        shared.ticking.insert(region_id);
        RegionBook { region_id, shared, leader: false, hibernated: false, closed: false }
    }

    pub fn is_leader(&self) -> bool {
        self.leader
    }

    pub fn is_hibernated(&self) -> bool {
        self.hibernated
    }

    /// Records the peer's role; returns whether it changed.
    pub fn set_leader(&mut self, leader: bool) -> bool {
        if self.closed || leader == self.leader {
            return false;
        }
        self.leader = leader;
        if leader {
            LEADER_COUNT.inc();
        } else {
            LEADER_COUNT.dec();
        }
        true
    }

    /// Stops ticking; a follower remembers the store of the leader it waits
    /// for (woken if that store goes silent). Returns whether it slept now.
    pub fn hibernate(&mut self, leader_store: Option<u64>) -> bool {
        if self.closed || self.hibernated {
            return false;
        }
        self.hibernated = true;
        self.shared.ticking.remove(&self.region_id);
        if let Some(s) = leader_store {
            self.shared.sleeping_followers.insert(self.region_id, s);
        }
        HIBERNATED_REGIONS.inc();
        true
    }

    /// Resumes ticking; returns whether it was asleep.
    pub fn wake(&mut self) -> bool {
        if self.closed || !self.hibernated {
            return false;
        }
        self.hibernated = false;
        self.shared.ticking.insert(self.region_id);
        self.shared.sleeping_followers.remove(&self.region_id);
        HIBERNATED_REGIONS.dec();
        true
    }

    /// Takes the region out of every count now (the peer is being
    /// destroyed; a new peer of the same region may register before this
    /// one is dropped). Idempotent; `drop` calls it too.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.set_leader(false);
        self.wake();
        self.closed = true;
        self.shared.ticking.remove(&self.region_id);
        REGION_COUNT.dec();
    }
}

impl Drop for RegionBook {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gauges are process-wide and other tests move them, so this test
    /// checks the sets (which are per store) and the book's own state.
    #[test]
    fn drop_undoes_everything() {
        let shared = Arc::new(StoreShared::default());
        let mut a = RegionBook::open(1, shared.clone());
        let b = RegionBook::open(2, shared.clone());
        assert!(shared.ticking.contains(&1) && shared.ticking.contains(&2));
        assert!(a.set_leader(true));
        assert!(!a.set_leader(true), "no change");
        assert!(a.hibernate(Some(7)));
        assert!(!a.hibernate(Some(7)));
        assert!(!shared.ticking.contains(&1));
        assert_eq!(shared.sleeping_followers.get(&1).map(|s| *s), Some(7));
        drop(a);
        assert!(!shared.ticking.contains(&1));
        assert!(shared.sleeping_followers.get(&1).is_none());
        assert!(shared.ticking.contains(&2), "other regions untouched");
        drop(b);
        assert!(shared.ticking.is_empty());
    }

    #[test]
    fn a_closed_book_ignores_changes() {
        let shared = Arc::new(StoreShared::default());
        let mut a = RegionBook::open(1, shared.clone());
        a.close();
        // A new peer of the same region registers before the old one drops.
        let _new = RegionBook::open(1, shared.clone());
        assert!(!a.set_leader(true));
        assert!(!a.hibernate(None));
        drop(a);
        assert!(shared.ticking.contains(&1), "the new peer's entry survives");
    }
}
