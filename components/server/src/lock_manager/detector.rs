//! The wait-for graph of the deadlock detector (TiKV's `DetectTable`,
//! src/server/lock_manager/deadlock.rs).
//!
//! An edge `txn → wait_for_txn` exists while `txn` waits for a lock of
//! `wait_for_txn`; a new wait that would close a cycle is refused (the
//! requester gets `Deadlock`) and not recorded. Edges are removed when the
//! wait ends, and expire after `ttl` in case that message never arrives
//! (a store that died while waiting), so a stale edge can never make a
//! deadlock out of waits that ended.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use atoll_txn::{TimeStamp, WaitFor};

struct Edge {
    /// The keys waited on (hash, user key), one per wait.
    keys: Vec<(u64, Vec<u8>)>,
    expires: Instant,
}

pub struct DetectTable {
    edges: HashMap<TimeStamp, HashMap<TimeStamp, Edge>>,
    len: usize,
    max: usize,
    ttl: Duration,
    last_purge: Instant,
}

impl DetectTable {
    /// At most `max` waits recorded (more are not checked: they end by
    /// their timeout); each forgotten `ttl` after it was recorded.
    pub fn new(max: usize, ttl: Duration) -> DetectTable {
        DetectTable { edges: HashMap::new(), len: 0, max, ttl, last_purge: Instant::now() }
    }

    /// Records `w` unless it closes a cycle; then answers the cycle,
    /// starting with `w`.
    pub fn detect(&mut self, w: &WaitFor, now: Instant) -> Option<Vec<WaitFor>> {
        self.purge(now);
        if let Some(chain) = self.path(w.wait_for_txn, w.txn, now) {
            return Some(std::iter::once(w.clone()).chain(chain).collect());
        }
        if self.len >= self.max {
            return None;
        }
        let edge = self
            .edges
            .entry(w.txn)
            .or_default()
            .entry(w.wait_for_txn)
            .or_insert_with(|| Edge { keys: vec![], expires: now });
        edge.keys.push((w.key_hash, w.key.clone()));
        edge.expires = now + self.ttl;
        self.len += 1;
        None
    }

    /// `w`'s wait ended.
    pub fn clean_up_wait_for(&mut self, w: &WaitFor) {
        let Some(out) = self.edges.get_mut(&w.txn) else { return };
        let Some(edge) = out.get_mut(&w.wait_for_txn) else { return };
        if let Some(i) = edge.keys.iter().position(|(h, _)| *h == w.key_hash) {
            edge.keys.swap_remove(i);
            self.len -= 1;
        }
        if edge.keys.is_empty() {
            out.remove(&w.wait_for_txn);
        }
        if out.is_empty() {
            self.edges.remove(&w.txn);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A path of live edges `from →* to`, depth first.
    fn path(&self, from: TimeStamp, to: TimeStamp, now: Instant) -> Option<Vec<WaitFor>> {
        let mut seen = HashSet::new();
        let mut stack: Vec<(TimeStamp, Vec<WaitFor>)> = vec![(from, vec![])];
        while let Some((txn, path)) = stack.pop() {
            if !seen.insert(txn) {
                continue;
            }
            let Some(out) = self.edges.get(&txn) else { continue };
            for (&next, edge) in out {
                if edge.expires <= now {
                    continue;
                }
                let (key_hash, key) = edge.keys[0].clone();
                let mut p = path.clone();
                p.push(WaitFor { txn, wait_for_txn: next, key_hash, key });
                if next == to {
                    return Some(p);
                }
                stack.push((next, p));
            }
        }
        None
    }

    /// Drops expired edges, at most once a `ttl`.
    fn purge(&mut self, now: Instant) {
        if now < self.last_purge + self.ttl {
            return;
        }
        self.last_purge = now;
        let mut dropped = 0;
        self.edges.retain(|_, out| {
            out.retain(|_, e| {
                let live = e.expires > now;
                if !live {
                    dropped += e.keys.len();
                }
                live
            });
            !out.is_empty()
        });
        self.len -= dropped;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(txn: u64, wait_for_txn: u64) -> WaitFor {
        WaitFor { txn, wait_for_txn, key_hash: txn * 100 + wait_for_txn, key: vec![txn as u8] }
    }

    #[test]
    fn a_wait_closing_a_cycle_is_refused_with_the_cycle() {
        let mut t = DetectTable::new(100, Duration::from_secs(3));
        let now = Instant::now();
        assert_eq!(t.detect(&w(1, 2), now), None);
        assert_eq!(t.detect(&w(2, 3), now), None);
        let chain = t.detect(&w(3, 1), now).expect("3 → 1 → 2 → 3 is a cycle");
        assert_eq!(chain, vec![w(3, 1), w(1, 2), w(2, 3)]);
        assert_eq!(t.len(), 2, "the refused wait is not recorded");
        // Another waiter of 1 that closes no cycle waits.
        assert_eq!(t.detect(&w(4, 1), now), None);
    }

    #[test]
    fn an_ended_wait_no_longer_counts() {
        let mut t = DetectTable::new(100, Duration::from_secs(3));
        let now = Instant::now();
        t.detect(&w(1, 2), now);
        t.clean_up_wait_for(&w(1, 2));
        assert_eq!(t.len(), 0);
        assert_eq!(t.detect(&w(2, 1), now), None, "1 no longer waits for 2");
    }

    #[test]
    fn an_expired_wait_no_longer_counts() {
        let mut t = DetectTable::new(100, Duration::from_secs(3));
        let now = Instant::now();
        t.detect(&w(1, 2), now);
        let later = now + Duration::from_secs(4);
        assert_eq!(t.detect(&w(2, 1), later), None);
        assert_eq!(t.len(), 1, "the expired edge was purged, the new one kept");
    }

    #[test]
    fn a_full_table_records_nothing_more_but_still_detects() {
        let mut t = DetectTable::new(1, Duration::from_secs(3));
        let now = Instant::now();
        t.detect(&w(1, 2), now);
        assert_eq!(t.detect(&w(3, 4), now), None);
        assert_eq!(t.len(), 1);
        assert!(t.detect(&w(2, 1), now).is_some());
    }
}
