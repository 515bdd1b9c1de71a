//! Replays every saved fuzz input (`fuzz/regressions/<target>/`, in name
//! order, as the fuzzer ran them) and a fixed batch of generated ones: no
//! target may panic, in this thread or a store thread.
//! `ATOLL_FUZZ_TARGETS=txn,kv` replays only those targets (make test's run
//! in the `fuzz-checked` profile, with overflow checks and debug
//! assertions).

use rand::SeedableRng;

#[test]
fn saved_and_generated_inputs_do_not_panic() {
    atoll_fuzz::watch_panics();
    // The running test's manifest dir (cargo test sets it), not the
    // compile-time one: that may name another checkout of a shared target.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    let root = std::path::Path::new(&dir).join("regressions");
    let only = std::env::var("ATOLL_FUZZ_TARGETS").ok();
    let targets: Vec<&str> = match &only {
        Some(list) => list.split(',').collect(),
        None => atoll_fuzz::TARGETS.to_vec(),
    };
    if let Some(bad) = targets.iter().find(|t| !atoll_fuzz::TARGETS.contains(t)) {
        panic!("ATOLL_FUZZ_TARGETS names {bad:?}, not one of {:?}", atoll_fuzz::TARGETS);
    }
    println!("replaying {targets:?} (debug assertions: {})", cfg!(debug_assertions));
    for target in targets {
        let mut files: Vec<_> = std::fs::read_dir(root.join(target))
            .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
            .unwrap_or_default();
        files.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("crash-")));
        files.sort();
        for f in &files {
            let input = std::fs::read(f).unwrap();
            atoll_fuzz::run(target, &input);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut input = atoll_fuzz::generate(target, &mut rng);
            atoll_fuzz::run(target, &input);
            atoll_fuzz::mutate(&mut input, &mut rng);
            atoll_fuzz::run(target, &input);
        }
        // Let store threads finish what they were handed.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(atoll_fuzz::take_panic(), None, "{target}: {} saved inputs", files.len());
    }
}

/// Findings of the `records` target, kept by hand: a store must refuse
/// these states with an error at start, not abort in raft.
#[test]
fn corrupt_states_are_refused_not_fatal() {
    use atoll_proto::atollpb::{RaftLocalState, RegionLocalState};
    use atoll_proto::metapb;
    use prost::Message as _;

    atoll_fuzz::watch_panics();
    // [which = 1: raft state] commit beyond the last index.
    let raft = RaftLocalState { term: 5, vote: 0, commit: 10, last_index: 5 };
    let mut input = vec![1];
    input.extend(raft.encode_to_vec());
    atoll_fuzz::run("records", &input);
    // [which = 0: region state] peers raft cannot restore (a peer id 0 made
    // raft abort: "invalid restore"), or Atoll never writes: a repeated id,
    // a joint-consensus role, no voter.
    let peer = |id, store_id, role: metapb::PeerRole| metapb::Peer {
        id,
        store_id,
        role: role as i32,
        ..Default::default()
    };
    for peers in [
        vec![peer(2, 1, metapb::PeerRole::Voter), peer(0, 2, metapb::PeerRole::Voter)],
        vec![peer(2, 1, metapb::PeerRole::Voter), peer(2, 2, metapb::PeerRole::Voter)],
        vec![peer(2, 1, metapb::PeerRole::Voter), peer(3, 2, metapb::PeerRole::IncomingVoter)],
        vec![peer(2, 1, metapb::PeerRole::Learner)],
    ] {
        let state = RegionLocalState {
            state: 0,
            region: Some(metapb::Region {
                id: 1,
                region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
                peers,
                ..Default::default()
            }),
        };
        let mut input = vec![0];
        input.extend(state.encode_to_vec());
        atoll_fuzz::run("records", &input);
    }
    assert_eq!(atoll_fuzz::take_panic(), None);
}
