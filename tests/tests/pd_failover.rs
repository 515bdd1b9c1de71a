//! Following a PD leader change, deterministically, against a scripted PD
//! group (`atoll_tests::scripted_pd`): the leader dies, a follower keeps
//! naming the dead leader, another member takes over. The PD client must
//! find the new leader, and a store's PD worker must reopen its region
//! heartbeat stream there and have every region it leads report, within a
//! bound, however its first reconnects failed.
//!
//! The regression: a follower that named an unreachable leader became the
//! client's connection (every request then refused "not leader"), and
//! hid a leader listed after it; a store whose reconnects all went there
//! never reached the new leader and PD never learned its regions' leaders.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_engine_memory::MemoryEngine;
use atoll_pd_client::PdClient;
use atoll_proto::metapb;
use atoll_raftstore::{PdSink, PdTask, PeerMsg, RegionStats};
use atoll_server::pd_worker::{self, PdSender, PdWorker, StoreLink};
use atoll_tests::scripted_pd::{Role, ScriptedPd};
use tokio::task::JoinHandle;

/// A store leading region 7: when asked, it reports it to PD.
#[derive(Clone)]
struct OneRegionStore {
    pd: PdSender,
    asked: Arc<AtomicUsize>,
}

impl StoreLink for OneRegionStore {
    type Engine = MemoryEngine;

    fn heartbeat_regions(&self) {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let leader = metapb::Peer { id: 71, store_id: 1, ..Default::default() };
        self.pd.schedule(PdTask::RegionHeartbeat {
            term: 6,
            region: metapb::Region { id: 7, peers: vec![leader.clone()], ..Default::default() },
            leader,
            stats: RegionStats::default(),
        });
    }

    fn send(&self, _: u64, _: PeerMsg<MemoryEngine>) -> atoll_raftstore::Result<()> {
        Ok(())
    }
}

async fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// Member 0 leads, 1 and 2 follow it; 0 dies; 2 takes over while 1 goes
/// on naming 0 (a follower that has not seen the change, as for up to a
/// lease after a leader is killed).
async fn fail_over(pd: &mut ScriptedPd) {
    pd.kill(0).await;
    pd.set_role(2, Role::Leader);
}

/// A scripted PD group (member 0 leads) and a PD worker for a store
/// leading region 7, once the region has reported to member 0.
async fn start_worker() -> (ScriptedPd, Arc<PdClient>, OneRegionStore, JoinHandle<()>) {
    let pd =
        ScriptedPd::start(&[Role::Leader, Role::Follower(Some(0)), Role::Follower(Some(0))]).await;
    let client =
        Arc::new(PdClient::connect(&pd.endpoints(), Duration::from_secs(5)).await.unwrap());
    let (sender, rx) = pd_worker::channel();
    let store = OneRegionStore { pd: sender, asked: Arc::new(AtomicUsize::new(0)) };
    let worker = tokio::spawn(PdWorker::new(client.clone(), store.clone(), 1).run(rx));
    wait_for("region 7 reports to the first leader", Duration::from_secs(5), || {
        !pd.heartbeats(0).is_empty()
    })
    .await;
    (pd, client, store, worker)
}

#[tokio::test]
async fn the_client_finds_a_leader_behind_a_follower_naming_a_dead_one() {
    let mut pd =
        ScriptedPd::start(&[Role::Leader, Role::Follower(Some(0)), Role::Follower(Some(0))]).await;
    let client = PdClient::connect(&pd.endpoints(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(client.leader_url(), pd.endpoints()[0]);
    fail_over(&mut pd).await;
    client.refresh_leader().await.expect("a leader is reachable");
    assert_eq!(client.leader_url(), pd.endpoints()[2], "member 1 named the dead leader");

    // No leader anywhere: an error, not a follower's connection.
    pd.set_role(2, Role::Follower(None));
    assert!(client.refresh_leader().await.is_err());
    // A client starting now waits for one.
    let endpoints = pd.endpoints();
    let connecting =
        tokio::spawn(async move { PdClient::connect(&endpoints, Duration::from_secs(5)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    pd.set_role(2, Role::Leader);
    let c = connecting.await.unwrap().expect("connects once a leader exists");
    assert_eq!(c.leader_url(), pd.endpoints()[2]);
}

#[tokio::test]
async fn the_heartbeat_stream_follows_the_leader_and_every_region_reports_again() {
    let (mut pd, _, store, worker) = start_worker().await;

    // The leader dies; for 1.5 s nobody leads and both followers name the
    // dead one: every reconnect of the store fails.
    pd.kill(0).await;
    let asked = pd.members_asked(1) + pd.members_asked(2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let searches = pd.members_asked(1) + pd.members_asked(2) - asked;
    assert!(searches >= 4, "the store looked for a new leader {searches} times in 1.5 s");
    assert!(searches <= 60, "the store looked for a new leader {searches} times in 1.5 s");
    assert_eq!(pd.streams(1).1 + pd.streams(2).1, 0, "a stream opened at a follower");
    let asked_before = store.asked.load(Ordering::SeqCst);

    let leads_at = Instant::now();
    fail_over(&mut pd).await;
    let took = wait_for("region 7 reports to the new leader", Duration::from_secs(2), || {
        !pd.heartbeats(2).is_empty()
    })
    .await;
    assert!(pd.heartbeats(2)[0].1 > leads_at);
    assert_eq!(pd.streams(2).0, 1, "one stream at the new leader");
    assert_eq!(store.asked.load(Ordering::SeqCst), asked_before + 1, "one report round");
    println!("the store reached the new leader {took:?} after it started leading");

    // A leader stepping down closes the stream; the store follows again.
    pd.set_role(1, Role::Leader);
    pd.set_role(2, Role::Follower(Some(1)));
    wait_for("region 7 reports to member 1", Duration::from_secs(2), || {
        !pd.heartbeats(1).is_empty()
    })
    .await;
    worker.abort();
}

/// A leader search that finds the same leader (another caller's request
/// failed for a moment) is not a leader change: the heartbeat stream stays
/// where it is, and the regions do not report again.
#[tokio::test]
async fn a_search_that_finds_the_same_leader_leaves_the_stream_alone() {
    let (mut pd, client, store, worker) = start_worker().await;
    for _ in 0..5 {
        client.refresh_leader().await.expect("the leader is there");
        // A task through the worker, so its loop looks at the client.
        store.heartbeat_regions();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.leader_changes(), 0);
    assert_eq!(pd.streams(0).0, 1, "the stream was reopened at the same leader");
    assert_eq!(store.asked.load(Ordering::SeqCst), 6, "one report round, plus the test's five");

    // Another leader found by a search beside the stream: it moves there.
    fail_over(&mut pd).await;
    client.refresh_leader().await.expect("member 2 leads");
    assert_eq!(client.leader_changes(), 1);
    store.heartbeat_regions();
    wait_for("region 7 reports to member 2", Duration::from_secs(2), || {
        !pd.heartbeats(2).is_empty()
    })
    .await;
    worker.abort();
}
