//! Membership changes, snapshots and hibernation on the in-process cluster.

use std::time::Duration;

use atoll_engine_memory::MemoryEngine;
use atoll_engine_traits::{Peekable, CF_RAFT};
use atoll_proto::atollpb::{PeerState, RegionLocalState};
use atoll_proto::metapb;
use atoll_raftstore::{keys, Config};
use atoll_tests::sim::{wait_until, Cluster, FIRST_REGION_ID};
use prost::Message as _;
use raft::eraftpb::ConfChangeType;

fn key(i: usize) -> Vec<u8> {
    format!("k{i:06}").into_bytes()
}

const WAIT: Duration = Duration::from_secs(20);

fn region_state(engine: &MemoryEngine, region_id: u64) -> Option<RegionLocalState> {
    engine
        .get_value_cf(CF_RAFT, &keys::region_state_key(region_id))
        .unwrap()
        .map(|v| RegionLocalState::decode(v.as_slice()).unwrap())
}

/// A new store gets a learner whose data arrives by snapshot (the log was
/// compacted), is promoted, and an old voter is removed: its peer becomes a
/// tombstone and its data is deleted; the region keeps serving throughout.
#[test]
fn add_learner_by_snapshot_promote_and_remove_a_voter() {
    let cfg = Config { raft_log_gc_threshold: 5, ..Config::for_tests() };
    let mut c = Cluster::new(cfg, (0..3).map(|_| MemoryEngine::new()).collect());
    c.start_all();
    for i in 0..300 {
        c.must_put(&key(i), b"v1");
    }
    // Wait until the leader compacted its log: a new peer cannot be fed from it.
    assert!(wait_until(WAIT, || {
        (1..=3).all(|s| {
            c.engines[&s]
                .get_value_cf(CF_RAFT, &keys::raft_log_key(FIRST_REGION_ID, 6))
                .unwrap()
                .is_none()
        })
    }));

    let new_store = c.add_engine(MemoryEngine::new());
    c.start_store(new_store);
    let learner = metapb::Peer {
        id: 900,
        store_id: new_store,
        role: metapb::PeerRole::Learner as i32,
        ..Default::default()
    };
    c.change_peer(&key(0), ConfChangeType::AddLearnerNode, learner.clone()).unwrap();
    assert!(
        wait_until(WAIT, || (0..300).all(|i| c.engine_get(new_store, &key(i)).is_some())),
        "learner never received the data"
    );
    c.change_peer(&key(0), ConfChangeType::AddNode, learner.clone()).unwrap();

    // Remove a voter that is not the leader.
    let leader = c.leader_store(&key(0));
    let victim = (1..=3).find(|s| *s != leader).unwrap();
    let victim_peer =
        c.region_for_key(&key(0)).peers.iter().find(|p| p.store_id == victim).cloned().unwrap();
    c.change_peer(&key(0), ConfChangeType::RemoveNode, victim_peer).unwrap();
    assert!(wait_until(WAIT, || {
        region_state(&c.engines[&victim], FIRST_REGION_ID)
            .is_some_and(|s| s.state == PeerState::Tombstone as i32)
    }));
    assert!(
        wait_until(WAIT, || c.engine_get(victim, &key(1)).is_none()),
        "removed peer's data stays"
    );

    let region = c.region_for_key(&key(0));
    assert_eq!(region.peers.len(), 3);
    assert_eq!(region.region_epoch.as_ref().unwrap().conf_ver, 4);
    assert!(region.peers.iter().all(|p| p.role == metapb::PeerRole::Voter as i32));
    // New writes reach the promoted peer; old ones are all readable.
    for i in 0..50 {
        c.must_put(&key(i), b"v2");
    }
    assert!(wait_until(WAIT, || (0..50)
        .all(|i| c.engine_get(new_store, &key(i)).as_deref() == Some(b"v2"))));
    for i in 50..300 {
        assert_eq!(c.must_get(&key(i)).as_deref(), Some(&b"v1"[..]));
    }
}

/// Changes that would break the region are refused: the leader removing
/// itself, two peers on one store, promoting a learner without data.
#[test]
fn membership_changes_are_validated() {
    let mut c = Cluster::new(Config::for_tests(), (0..3).map(|_| MemoryEngine::new()).collect());
    c.start_all();
    c.must_put(b"a", b"1");
    let region = c.region_for_key(b"a");
    let leader = c.leader_store(b"a");
    let leader_peer = region.peers.iter().find(|p| p.store_id == leader).cloned().unwrap();
    // The leader may not remove itself; a store may not hold two peers.
    assert!(c.change_peer(b"a", ConfChangeType::RemoveNode, leader_peer).is_err());
    let dup = metapb::Peer { id: 901, store_id: 2, ..Default::default() };
    assert!(c.change_peer(b"a", ConfChangeType::AddLearnerNode, dup).is_err());
    // A learner that has no data yet cannot be promoted.
    let ghost_store = c.add_engine(MemoryEngine::new()); // never started
    let ghost = metapb::Peer {
        id: 902,
        store_id: ghost_store,
        role: metapb::PeerRole::Learner as i32,
        ..Default::default()
    };
    c.change_peer(b"a", ConfChangeType::AddLearnerNode, ghost.clone()).unwrap();
    assert!(c.change_peer(b"a", ConfChangeType::AddNode, ghost).is_err());
    c.refresh_routing();
    let region = c.region_for_key(b"a");
    assert_eq!(region.peers.len(), 4);
    assert_eq!(region.region_epoch.as_ref().unwrap().conf_ver, 2, "only the learner was added");
    assert!(region.peers.iter().any(|p| p.id == 902 && p.role == metapb::PeerRole::Learner as i32));
    c.must_put(b"b", b"2");
}

/// Idle regions stop ticking on every store; a write wakes them; when the
/// leader's store dies, sleeping followers notice and elect a new leader.
#[test]
fn idle_regions_hibernate_wake_on_writes_and_on_leader_loss() {
    let mut c = Cluster::new(Config::for_tests(), (0..3).map(|_| MemoryEngine::new()).collect());
    c.start_all();
    c.must_put(b"a", b"1");
    let all_asleep =
        |c: &Cluster<MemoryEngine>| c.systems.values().all(|s| s.handle().ticking_count() == 0);
    assert!(wait_until(WAIT, || all_asleep(&c)), "regions never hibernated");
    c.must_put(b"b", b"2");
    assert!(c.systems.values().any(|s| s.handle().ticking_count() > 0), "a write wakes the region");
    assert!(wait_until(WAIT, || all_asleep(&c)), "regions never went back to sleep");

    let leader = c.leader_store(b"a");
    assert!(wait_until(WAIT, || all_asleep(&c)));
    c.stop_store(leader);
    // The survivors wake up, elect, and serve.
    c.must_put(b"c", b"3");
    assert_eq!(c.must_get(b"a").as_deref(), Some(&b"1"[..]));
    assert_ne!(c.leader_store(b"a"), leader);
}

/// A follower that was down while the leader compacted past it catches up
/// from a snapshot when it returns.
#[test]
fn lagging_follower_catches_up_by_snapshot() {
    let cfg =
        Config { raft_log_gc_threshold: 5, raft_log_gc_count_limit: 50, ..Config::for_tests() };
    let mut c = Cluster::new(cfg, (0..3).map(|_| MemoryEngine::new()).collect());
    c.start_all();
    c.must_put(&key(0), b"v");
    let leader = c.leader_store(&key(0));
    let lagger = (1..=3).find(|s| *s != leader).unwrap();
    c.stop_store(lagger);
    for i in 0..400 {
        c.must_put(&key(i), b"v");
    }
    // The leader compacted entries the stopped follower never received.
    let follower_applied = atoll_raftstore::storage::PeerStorage::load(
        c.engines[&lagger].clone(),
        c.region_for_key(&key(0)),
        16,
    )
    .unwrap()
    .applied_index();
    assert!(wait_until(WAIT, || {
        c.engines[&leader]
            .get_value_cf(CF_RAFT, &keys::raft_log_key(FIRST_REGION_ID, follower_applied + 1))
            .unwrap()
            .is_none()
    }));
    c.start_store(lagger);
    assert!(
        wait_until(WAIT, || (0..400).all(|i| c.engine_get(lagger, &key(i)).is_some())),
        "the returning follower never caught up"
    );
}

/// A learner removed while its store was cut off keeps its region's old,
/// wide range: nobody talks to it again (a learner never campaigns), and
/// every message of a region split from it was dropped as overlapping, so
/// the split child's learner on that store stayed pending for good (the
/// placement test's "learner pending for 120 s"). Now the overlapped peer
/// asks PD, learns it was removed, and goes; the child's replica follows.
#[test]
fn a_learner_removed_while_cut_off_gives_way_to_its_split_child() {
    let mut c = Cluster::new(Config::for_tests(), (0..3).map(|_| MemoryEngine::new()).collect());
    c.start_all();
    for i in 0..200 {
        c.must_put(&key(i), b"v1");
    }
    let cut_off = c.add_engine(MemoryEngine::new());
    c.start_store(cut_off);
    let learner = metapb::Peer {
        id: 900,
        store_id: cut_off,
        role: metapb::PeerRole::Learner as i32,
        ..Default::default()
    };
    c.change_peer(&key(0), ConfChangeType::AddLearnerNode, learner.clone()).unwrap();
    assert!(
        wait_until(WAIT, || (0..200).all(|i| c.engine_get(cut_off, &key(i)).is_some())),
        "learner never received the data"
    );

    // Cut off, the learner misses a split (whose child has a learner on
    // this store too) and its own removal from the parent.
    c.isolate(cut_off);
    c.split(&key(0), &key(100)).unwrap();
    let (low, high) = (c.region_for_key(&key(0)), c.region_for_key(&key(150)));
    let (parent_keys, child, child_keys) =
        if low.id == FIRST_REGION_ID { (0..100, high, 100..200) } else { (100..200, low, 0..100) };
    assert_ne!(child.id, FIRST_REGION_ID, "the split happened");
    assert!(child.peers.iter().any(|p| p.store_id == cut_off), "the child has a learner here");
    c.change_peer(&key(parent_keys.start), ConfChangeType::RemoveNode, learner).unwrap();
    let stale = region_state(&c.engines[&cut_off], FIRST_REGION_ID).unwrap();
    assert_eq!(stale.state, PeerState::Normal as i32);
    c.heal();

    assert!(
        wait_until(WAIT, || {
            region_state(&c.engines[&cut_off], FIRST_REGION_ID)
                .is_some_and(|s| s.state == PeerState::Tombstone as i32)
        }),
        "the stale learner stayed"
    );
    assert!(
        wait_until(WAIT, || {
            region_state(&c.engines[&cut_off], child.id)
                .is_some_and(|s| s.state == PeerState::Normal as i32)
                && child_keys.clone().all(|i| c.engine_get(cut_off, &key(i)).is_some())
        }),
        "the split child's replica never came"
    );
    // The parent's half went with the stale learner.
    assert!(wait_until(WAIT, || parent_keys
        .clone()
        .all(|i| c.engine_get(cut_off, &key(i)).is_none())));
}
