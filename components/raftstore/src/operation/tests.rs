//! Peer operations tested without a cluster: one peer on the memory engine,
//! driven by hand, with assertions on its decisions.

use std::sync::Arc;

use atoll_engine_memory::MemoryEngine;
use atoll_engine_traits::{KvEngine, WriteOptions};
use atoll_proto::atollpb::RaftRequestHeader;
use atoll_proto::metapb;
use raft::eraftpb::{Message, MessageType};

use crate::config::Config;
use crate::error::Error;
use crate::msg::{PeerTick, SplitRequest};
use crate::peer::Peer;
use crate::store_meta::StoreShared;

const STORE: u64 = 1;

/// Region 1, `[b, m)`, epoch (conf_ver 1, version 1), with peer 2 on this
/// store and one more voter per extra store id.
fn region(other_stores: &[u64]) -> metapb::Region {
    let mut peers = vec![metapb::Peer { id: 2, store_id: STORE, ..Default::default() }];
    for (i, s) in other_stores.iter().enumerate() {
        peers.push(metapb::Peer { id: 3 + i as u64, store_id: *s, ..Default::default() });
    }
    metapb::Region {
        id: 1,
        start_key: b"b".to_vec(),
        end_key: b"m".to_vec(),
        region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
        peers,
        ..Default::default()
    }
}

fn peer(other_stores: &[u64]) -> (Peer<MemoryEngine>, Arc<StoreShared>) {
    let engine = MemoryEngine::new();
    let r = region(other_stores);
    crate::system::write_initial_region(&engine, &r).unwrap();
    let shared = Arc::new(StoreShared::default());
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let p = Peer::create(STORE, &Config::default(), engine, r, &shared, &logger).unwrap();
    (p, shared)
}

/// A single-voter peer that has won its election.
fn leader() -> Peer<MemoryEngine> {
    let (mut p, _) = peer(&[]);
    p.raft.campaign().unwrap();
    assert!(p.is_leader());
    p
}

/// Persists and "applies" everything raft has handed out, as the store's
/// ready loop and apply pool would.
fn settle(p: &mut Peer<MemoryEngine>) {
    while p.raft.has_ready() {
        let mut rd = p.raft.ready();
        let engine = p.raft.store().engine().clone();
        let mut wb = engine.write_batch();
        p.raft.mut_store().append(rd.take_entries(), &mut wb).unwrap();
        if let Some(hs) = rd.hs() {
            p.raft.mut_store().set_hard_state(hs);
        }
        engine.write(&mut wb, WriteOptions::default()).unwrap();
        let mut light = p.raft.advance(rd);
        let last = light.take_committed_entries().last().map(|e| (e.index, e.term));
        p.raft.advance_apply();
        if let Some((index, term)) = last {
            let s = p.raft.mut_store();
            s.apply_state.applied_index = index;
            s.apply_state.applied_term = term;
            p.apply_sent_index = index;
        }
    }
}

fn header(region_id: u64, conf_ver: u64, version: u64) -> RaftRequestHeader {
    RaftRequestHeader {
        region_id,
        region_epoch: Some(metapb::RegionEpoch { conf_ver, version }),
        ..Default::default()
    }
}

#[test]
fn header_checks() {
    let (follower, _) = peer(&[]);
    let h = header(1, 1, 1);
    assert!(matches!(follower.check_header(Some(&h), false), Err(Error::NotLeader { .. })));

    let mut p = leader();
    p.check_header(Some(&h), false).unwrap();
    p.check_header(Some(&h), true).unwrap();
    assert!(matches!(p.check_header(None, false), Err(Error::InvalidRequest(_))));
    assert!(matches!(p.check_header(Some(&header(9, 1, 1)), false), Err(Error::RegionNotFound(9))));
    assert!(matches!(
        p.check_header(Some(&header(1, 1, 0)), false),
        Err(Error::EpochNotMatch { .. })
    ));
    // Membership version: only admin commands compare it.
    p.check_header(Some(&header(1, 7, 1)), false).unwrap();
    assert!(matches!(
        p.check_header(Some(&header(1, 7, 1)), true),
        Err(Error::EpochNotMatch { .. })
    ));
    p.stopped = true;
    assert!(matches!(p.check_header(Some(&h), false), Err(Error::RegionNotFound(1))));
}

#[test]
fn keys_and_split_keys_follow_the_region() {
    let p = leader();
    p.check_key(b"b").unwrap();
    p.check_key(b"lzzz").unwrap();
    assert!(matches!(p.check_key(b"a"), Err(Error::KeyNotInRegion { .. })));
    assert!(matches!(p.check_key(b"m"), Err(Error::KeyNotInRegion { .. })));

    let keys = |k: &[&[u8]]| k.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
    p.validate_split_keys(&keys(&[b"c", b"k"])).unwrap();
    for bad in [
        keys(&[]),
        keys(&[b"b"]),
        keys(&[b"m"]),
        keys(&[b"z"]),
        keys(&[b"d", b"c"]),
        keys(&[b"d", b"d"]),
        keys(&[b""]),
    ] {
        let e = p.validate_split_keys(&bad).expect_err("bad split keys");
        assert!(matches!(e, Error::InvalidRequest(_)), "{bad:?}: {e}");
    }
}

#[test]
fn split_requests_from_pd() {
    use atoll_proto::pdpb::CheckPolicy;
    let k = vec![b"c".to_vec()];
    assert_eq!(
        SplitRequest::from_pd(CheckPolicy::Usekey as i32, k.clone()),
        Ok(SplitRequest::AtKeys(k.clone()))
    );
    assert!(SplitRequest::from_pd(CheckPolicy::Usekey as i32, vec![]).is_err());
    for half in [CheckPolicy::Scan, CheckPolicy::Approximate] {
        assert_eq!(SplitRequest::from_pd(half as i32, vec![]), Ok(SplitRequest::Half));
        assert!(SplitRequest::from_pd(half as i32, k.clone()).is_err());
    }
    assert!(SplitRequest::from_pd(99, vec![]).is_err());
}

#[test]
fn ticks_due_after_a_raft_tick() {
    let due =
        |ticks, leader| PeerTick::due_after_raft_tick(ticks, leader, 3, 5).collect::<Vec<_>>();
    assert_eq!(due(1, true), vec![]);
    assert_eq!(due(3, true), vec![PeerTick::RaftLogGc]);
    assert_eq!(due(5, true), vec![PeerTick::SplitCheck]);
    assert_eq!(due(15, true), vec![PeerTick::RaftLogGc, PeerTick::SplitCheck]);
    assert_eq!(due(15, false), vec![], "followers neither compact nor measure");
    // A zero interval (not allowed by config validation) must not divide by zero.
    assert_eq!(PeerTick::due_after_raft_tick(4, true, 0, 0).count(), 2);
}

#[test]
fn leader_sleeps_only_when_idle_and_settled() {
    let cfg = Config::default();
    let mut p = leader();
    p.idle_ticks = cfg.hibernate_ticks();
    assert!(!p.leader_should_sleep(&cfg), "its first entry is not committed yet");
    settle(&mut p);
    assert!(p.leader_should_sleep(&cfg));

    p.idle_ticks = cfg.hibernate_ticks() - 1;
    assert!(!p.leader_should_sleep(&cfg), "not idle long enough");
    p.idle_ticks = cfg.hibernate_ticks();
    let off = Config { hibernate_regions: false, ..Config::default() };
    assert!(!p.leader_should_sleep(&off), "hibernation off");

    p.raft.propose(vec![], b"x".to_vec()).unwrap();
    assert!(!p.leader_should_sleep(&cfg), "an entry in flight");
    settle(&mut p);
    assert!(p.leader_should_sleep(&cfg));

    assert!(p.book.hibernate(None));
    assert!(!p.leader_should_sleep(&cfg), "already asleep");
    p.wake();
    assert_eq!(p.idle_ticks, 0, "waking resets the idle count");
}

#[test]
fn follower_sleeps_when_it_has_the_leaders_whole_log() {
    let cfg = Config::default();
    let (mut p, shared) = peer(&[2]);
    // Peer 3 (store 2) leads term 6 and has committed 5, all we have.
    let hb = Message {
        msg_type: MessageType::MsgHeartbeat as i32,
        from: 3,
        to: 2,
        term: 6,
        commit: 5,
        ..Default::default()
    };
    p.raft.step(hb).unwrap();
    assert_eq!(p.raft.raft.leader_id, 3);
    assert!(p.follower_should_sleep(&cfg, 3, 5));
    assert!(!p.follower_should_sleep(&cfg, 4, 5), "not from our leader");
    assert!(!p.follower_should_sleep(&cfg, 3, 6), "the leader has more");
    let off = Config { hibernate_regions: false, ..Config::default() };
    assert!(!p.follower_should_sleep(&off, 3, 5));

    assert!(p.book.hibernate(Some(2)));
    assert_eq!(shared.sleeping_followers.get(&1).map(|s| *s), Some(2));
    assert!(!shared.ticking.contains(&1));
    drop(p);
    assert!(shared.sleeping_followers.is_empty() && shared.ticking.is_empty());
}

/// A read whose region split while it waited for its read index gets
/// EpochNotMatch, not a snapshot of the narrower region (a scan clipped
/// to it would silently skip the keys that left).
#[test]
fn a_read_is_checked_against_a_split_applied_while_it_waited() {
    let mut p = leader();
    settle(&mut p);
    let answer = |p: &mut Peer<MemoryEngine>, epoch| {
        let (tx, rx) = std::sync::mpsc::channel();
        p.reads.push(epoch, Box::new(move |r| drop(tx.send(r.map(|r| r.region)))));
        p.propose_pending_reads();
        rx
    };
    let before = answer(&mut p, region(&[]).region_epoch);
    // The split applies before raft confirms the read index.
    let mut shrunk = region(&[]);
    shrunk.end_key = b"g".to_vec();
    shrunk.region_epoch = Some(metapb::RegionEpoch { conf_ver: 1, version: 2 });
    p.set_region(shrunk.clone());
    let after = answer(&mut p, shrunk.region_epoch.clone());
    while p.raft.has_ready() {
        let mut rd = p.raft.ready();
        for rs in rd.take_read_states() {
            p.on_read_state(rs.request_ctx, rs.index);
        }
        let _ = p.raft.advance(rd);
    }
    match before.try_recv().expect("answered") {
        Err(Error::EpochNotMatch { .. }) => {}
        other => panic!("expected EpochNotMatch, got {other:?}"),
    }
    assert_eq!(after.try_recv().expect("answered").unwrap(), shrunk, "the new epoch reads");
}
