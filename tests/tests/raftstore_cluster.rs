//! In-process cluster tests: three stores over a simulated network.

use std::time::Duration;

use atoll_engine_memory::MemoryEngine;
use atoll_engine_rocks::{RocksConfig, RocksEngine};
use atoll_engine_traits::{Peekable, CF_RAFT};
use atoll_raftstore::{keys, Config, PeerMsg};
use atoll_tests::sim::{wait_until, Cluster, FIRST_REGION_ID};

fn memory_cluster(n: usize) -> Cluster<MemoryEngine> {
    let mut c = Cluster::new(Config::for_tests(), (0..n).map(|_| MemoryEngine::new()).collect());
    c.start_all();
    c
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i:06}").into_bytes()
}

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn elects_a_leader_and_replicates() {
    let c = memory_cluster(3);
    for i in 0..100 {
        c.must_put(&key(i), b"v");
    }
    for i in 0..100 {
        assert_eq!(c.must_get(&key(i)).as_deref(), Some(&b"v"[..]));
    }
    // Every replica applies every write.
    for store in 1..=3 {
        assert!(
            wait_until(WAIT, || (0..100).all(|i| c.engine_get(store, &key(i)).is_some())),
            "store {store} lags"
        );
    }
}

#[test]
fn overwrite_and_read_your_writes() {
    let c = memory_cluster(3);
    for round in 0..5u8 {
        c.must_put(b"k", &[round]);
        assert_eq!(c.must_get(b"k"), Some(vec![round]));
    }
    assert_eq!(c.must_get(b"missing"), None);
}

#[test]
fn leader_kill_elects_new_leader_and_keeps_data() {
    let mut c = memory_cluster(3);
    for i in 0..50 {
        c.must_put(&key(i), b"before");
    }
    let old = c.leader_store(b"k");
    c.stop_store(old);
    for i in 50..100 {
        c.must_put(&key(i), b"after");
    }
    let new = c.leader_store(b"k");
    assert_ne!(new, old);
    for i in 0..100 {
        assert!(c.must_get(&key(i)).is_some(), "key {i} lost");
    }
}

#[test]
fn follower_restart_catches_up() {
    let mut c = memory_cluster(3);
    c.must_put(b"a", b"1");
    let leader = c.leader_store(b"a");
    let follower = (1..=3).find(|s| *s != leader).unwrap();
    c.stop_store(follower);
    for i in 0..200 {
        c.must_put(&key(i), b"while-down");
    }
    c.start_store(follower);
    assert!(
        wait_until(WAIT, || (0..200).all(|i| c.engine_get(follower, &key(i)).is_some())),
        "restarted follower did not catch up"
    );
}

#[test]
fn partitioned_leader_is_replaced_and_catches_up_after_heal() {
    let c = memory_cluster(3);
    c.must_put(b"x", b"1");
    let old = c.leader_store(b"x");
    c.isolate(old);
    // The majority side elects a new leader and accepts writes.
    c.must_put(b"x", b"2");
    assert_ne!(c.leader_store(b"x"), old);
    c.heal();
    assert!(wait_until(WAIT, || c.engine_get(old, b"x").as_deref() == Some(&b"2"[..])));
    assert_eq!(c.must_get(b"x").as_deref(), Some(&b"2"[..]));
}

#[test]
fn one_way_drop_does_not_lose_acknowledged_writes() {
    let c = memory_cluster(3);
    c.must_put(b"a", b"0");
    let leader = c.leader_store(b"a");
    let f = (1..=3).find(|s| *s != leader).unwrap();
    c.block(leader, f);
    for i in 0..30 {
        c.must_put(&key(i), b"v");
    }
    c.heal();
    for i in 0..30 {
        assert!(c.must_get(&key(i)).is_some());
    }
    assert!(
        c.net.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the filter dropped traffic"
    );
}

#[test]
fn all_nodes_restart_and_data_survives_on_rocksdb() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let open =
        |d: &tempfile::TempDir| RocksEngine::open(d.path(), &RocksConfig::default()).unwrap();
    {
        let mut c = Cluster::new(Config::for_tests(), dirs.iter().map(open).collect());
        c.start_all();
        for i in 0..300 {
            c.must_put(&key(i), format!("v{i}").as_bytes());
        }
        c.shutdown();
    }
    // Reopen the databases from disk: a full cluster restart.
    let engines: Vec<RocksEngine> = dirs.iter().map(open).collect();
    let mut c = Cluster::new(Config::for_tests(), engines);
    c.start_all();
    for i in 0..300 {
        assert_eq!(c.must_get(&key(i)), Some(format!("v{i}").into_bytes()), "key {i}");
    }
    c.must_put(b"after-restart", b"ok");
}

#[test]
fn log_gc_truncates_the_raft_log_on_every_replica() {
    let c = memory_cluster(3);
    for i in 0..300 {
        c.must_put(&key(i), b"v");
    }
    // Entry 10 is long applied everywhere; GC must delete it on each store.
    let gone = |s: u64| {
        c.engines[&s]
            .get_value_cf(CF_RAFT, &keys::raft_log_key(FIRST_REGION_ID, 10))
            .unwrap()
            .is_none()
    };
    assert!(wait_until(WAIT, || (1..=3).all(gone)), "raft log was not compacted");
    // And the cluster still works.
    c.must_put(b"post-gc", b"v");
    assert_eq!(c.must_get(b"post-gc").as_deref(), Some(&b"v"[..]));
}

#[test]
fn split_creates_regions_on_every_store() {
    let c = memory_cluster(3);
    for i in 0..100 {
        c.must_put(&key(i), b"v");
    }
    c.split(&key(0), &key(50)).unwrap();
    // Each store now has two regions.
    assert!(wait_until(WAIT, || (1..=3)
        .all(|s| { atoll_raftstore::system::load_regions(&c.engines[&s]).unwrap().len() == 2 })));
    let left = c.region_for_key(&key(10));
    let right = c.region_for_key(&key(60));
    assert_ne!(left.id, right.id);
    assert_eq!(left.end_key, right.start_key);
    // Both halves serve reads and writes.
    for i in 0..100 {
        assert!(c.must_get(&key(i)).is_some(), "key {i}");
    }
    c.must_put(&key(10), b"left");
    c.must_put(&key(60), b"right");
    assert_eq!(c.must_get(&key(10)).as_deref(), Some(&b"left"[..]));
    assert_eq!(c.must_get(&key(60)).as_deref(), Some(&b"right"[..]));
}

#[test]
fn stale_epoch_and_wrong_region_are_rejected() {
    let c = memory_cluster(3);
    c.must_put(&key(1), b"v");
    let old = c.region_for_key(&key(1));
    c.split(&key(1), &key(50)).unwrap();
    // The original region id keeps the right half (right-derive): ask its leader.
    assert_eq!(c.region_for_key(&key(60)).id, old.id);
    let leader = c.leader_store(&key(60));
    let h = c.handle(leader).unwrap();
    // A read with the pre-split epoch gets EpochNotMatch with the new region.
    let (tx, rx) = std::sync::mpsc::channel();
    h.read(atoll_tests::sim::header(&old), Box::new(move |r| drop(tx.send(r.map(|_| ())))));
    match rx.recv_timeout(WAIT).unwrap() {
        Err(atoll_raftstore::Error::EpochNotMatch { current_regions, .. }) => {
            assert!(!current_regions.is_empty())
        }
        other => panic!("expected EpochNotMatch, got {:?}", other.err()),
    }
    // Unknown region.
    let mut ghost = old.clone();
    ghost.id = 9_999_999;
    let (tx, rx) = std::sync::mpsc::channel();
    h.read(atoll_tests::sim::header(&ghost), Box::new(move |r| drop(tx.send(r.map(|_| ())))));
    assert!(matches!(
        rx.recv_timeout(WAIT).unwrap(),
        Err(atoll_raftstore::Error::RegionNotFound(9_999_999))
    ));
    // Earlier data is intact.
    assert_eq!(c.must_get(&key(1)).as_deref(), Some(&b"v"[..]));
}

/// Asks the leader of `key`'s region (on `leader`) to hand leadership to
/// the replica on `to_store`.
fn ask_transfer(c: &Cluster<MemoryEngine>, leader: u64, key: &[u8], to_store: u64) {
    let region = c.region_for_key(key);
    let to = region.peers.iter().find(|p| p.store_id == to_store).unwrap().clone();
    let _ = c.handle(leader).unwrap().send(region.id, PeerMsg::TransferLeader { peer: to });
}

#[test]
fn leadership_moves_to_a_replica_that_answers() {
    let c = memory_cluster(3);
    c.must_put(b"k", b"v");
    let leader = c.leader_store(b"k");
    let target = (1..=3).find(|s| *s != leader).unwrap();
    assert!(
        wait_until(WAIT, || {
            ask_transfer(&c, leader, b"k", target);
            std::thread::sleep(Duration::from_millis(100));
            c.leader_store(b"k") == target
        }),
        "leadership never moved to store {target}"
    );
    c.must_put(b"k", b"after");
    assert_eq!(c.must_get(b"k").as_deref(), Some(&b"after"[..]));
}

/// A transfer to a replica that cannot answer (paused, cut off) never
/// starts, so the leader keeps taking writes: raft-rs drops every proposal
/// while a transfer runs (up to an election timeout), and PD asks again on
/// every heartbeat. The stall seen in pd_ha while PD moved a leader to a
/// paused store. Fails on the old direct `transfer_leader`.
#[test]
fn a_transfer_to_a_cut_off_replica_does_not_stop_writes() {
    let c = memory_cluster(3);
    c.must_put(b"k", b"v");
    let leader = c.leader_store(b"k");
    let target = (1..=3).find(|s| *s != leader).unwrap();
    c.isolate(target);
    for i in 0..20 {
        ask_transfer(&c, leader, b"k", target);
        c.put_at(leader, &key(i), b"v").unwrap_or_else(|e| {
            panic!("write {i} refused during a transfer to a cut-off peer: {e}")
        });
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.leader_store(b"k"), leader);
    // Back in touch, it answers and leadership moves.
    c.heal();
    assert!(
        wait_until(WAIT, || {
            ask_transfer(&c, leader, b"k", target);
            std::thread::sleep(Duration::from_millis(100));
            c.leader_store(b"k") == target
        }),
        "leadership never moved to store {target} after the heal"
    );
    assert!((0..20).all(|i| c.must_get(&key(i)).is_some()));
}
