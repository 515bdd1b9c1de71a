//! PD high availability: three PD members over a three-member etcd, three
//! stores, clients running. The PD leader is killed (SIGKILL); a new one
//! serves within 5 s, timestamps stay strictly increasing, regions, stores
//! and a running operator survive, and the unmodified tikv-client keeps
//! working. Then the whole PD group is killed and restarted: state intact.
//! And a member that joins a group with a leader is listed by it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_pd_client::PdClient;
use atoll_tests::proc::{
    eventually, http_get, http_post, ProcCluster, TEST_PD_CONFIG, TEST_STORE_CONFIG,
};
use parking_lot::Mutex;

/// The test PD config, but a store paused for the operator check must not
/// count as down (that would cancel the operator).
fn pd_config() -> String {
    TEST_PD_CONFIG.replace("max-store-down-time = \"3s\"", "max-store-down-time = \"120s\"")
}

fn status(c: &ProcCluster, i: usize) -> serde_json::Value {
    http_get(c.pd_member_status(i), "/status")
        .ok()
        .and_then(|b| serde_json::from_str(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// The member that says it leads, if one does.
fn leader(c: &ProcCluster) -> Option<usize> {
    (0..c.pd_member_count()).find(|&i| status(c, i)["is_leader"] == true)
}

async fn wait_leader(c: &ProcCluster, timeout: Duration) -> Option<usize> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(i) = leader(c) {
            return Some(i);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The running operator of `region`, if any.
fn operator_of(c: &ProcCluster, i: usize, region: u64) -> Option<serde_json::Value> {
    let ops = api(c, i, "/pd/api/v1/operators");
    ops["operators"].as_array()?.iter().find(|o| o["region_id"] == region).cloned()
}

fn api(c: &ProcCluster, i: usize, path: &str) -> serde_json::Value {
    let body = http_get(c.pd_member_addr(i), path).unwrap_or_default();
    serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
}

/// Asks for timestamps without pause; fails the test on any timestamp not
/// above the one before. Records when answers came, for the gap check.
struct TsoChecker {
    last: AtomicU64,
    /// (time of the answer) of every timestamp, for the outage measurement.
    answers: Mutex<Vec<Instant>>,
    violations: Mutex<Vec<(u64, u64)>>,
}

impl TsoChecker {
    async fn run(self: Arc<Self>, pd: Arc<PdClient>, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            match pd.get_ts().await {
                Ok(ts) => {
                    let prev = self.last.swap(ts, Ordering::SeqCst);
                    if ts <= prev {
                        self.violations.lock().push((prev, ts));
                    }
                    self.answers.lock().push(Instant::now());
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn answered_after(&self, t: Instant) -> Option<Instant> {
        self.answers.lock().iter().find(|a| **a > t).copied()
    }
}

/// Writes keys `w-<n>` through the upstream tikv-client; remembers the
/// acknowledged ones.
/// A put that takes this long is stuck inside tikv-client 0.4: its region
/// cache marks a region id "lookup on its way" and, when that PD lookup
/// fails (as during a PD failover), never clears the mark, so every later
/// lookup of that region waits forever (`read_through_region_by_id`). The
/// writer then starts a new client, as an application would.
const STUCK_PUT: Duration = Duration::from_secs(10);

async fn writer(
    endpoints: Vec<String>,
    acked: Arc<Mutex<Vec<u64>>>,
    replaced: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut client = tikv_client(&endpoints).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w-{n:08}");
        let put = client.put(key.into_bytes(), n.to_string().into_bytes());
        match tokio::time::timeout(STUCK_PUT, put).await {
            Ok(Ok(())) => {
                acked.lock().push(n);
                n += 1;
            }
            Ok(Err(e)) => {
                note(&format!("writer: put w-{n:08} failed: {e:?}"));
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            // Unknown outcome: write this key again with the new client.
            Err(_) => {
                note(&format!("writer: put w-{n:08} hung {STUCK_PUT:?}; starting a new client"));
                replaced.fetch_add(1, Ordering::SeqCst);
                client = tikv_client(&endpoints).await;
                note("writer: new client ready");
            }
        }
    }
}

/// A line on stderr stamped with the UTC time of day, as the processes' logs
/// are, so a failed run's client story lines up with theirs.
fn note(msg: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let (s, ms) = (now.as_secs() % 86_400, now.subsec_millis());
    eprintln!("{:02}:{:02}:{:02}.{ms:03} {msg}", s / 3600, s / 60 % 60, s % 60);
}

async fn tikv_client(endpoints: &[String]) -> tikv_client::RawClient {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let connect = tikv_client::RawClient::new_with_config(
            endpoints.to_vec(),
            tikv_client::Config::default().with_default_keyspace(),
        );
        let err = match tokio::time::timeout(STUCK_PUT, connect).await.unwrap_or_else(|_| {
            Err(tikv_client::Error::StringError(format!("connecting hung {STUCK_PUT:?}")))
        }) {
            Ok(cl) => {
                match tokio::time::timeout(STUCK_PUT, cl.put(b"ready".to_vec(), b"1".to_vec()))
                    .await
                {
                    Ok(Ok(())) => return cl,
                    Ok(Err(e)) => format!("{e:?}"),
                    Err(_) => format!("its first put hung {STUCK_PUT:?}"),
                }
            }
            Err(e) => format!("{e:?}"),
        };
        note(&format!("tikv_client: {err}"));
        assert!(Instant::now() < deadline, "tikv-client could not use the cluster: {err}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pd_group_fails_over_and_restarts_with_its_state() {
    let mut c = ProcCluster::start_group(3, 3, &pd_config(), TEST_STORE_CONFIG);
    let endpoints = c.pd_endpoints();
    // Writable through the unmodified tikv-client before anything else.
    tikv_client(&endpoints).await;
    let pd = Arc::new(PdClient::connect(&endpoints, Duration::from_secs(30)).await.unwrap());
    let cluster_id = pd.cluster_id();
    assert_ne!(cluster_id, 0);

    let stop = Arc::new(AtomicBool::new(false));
    let tso = Arc::new(TsoChecker {
        last: AtomicU64::new(0),
        answers: Mutex::new(vec![]),
        violations: Mutex::new(vec![]),
    });
    let acked = Arc::new(Mutex::new(vec![]));
    let replaced = Arc::new(AtomicU64::new(0));
    let tasks = vec![
        tokio::spawn(tso.clone().run(pd.clone(), stop.clone())),
        tokio::spawn(writer(endpoints.clone(), acked.clone(), replaced.clone(), stop.clone())),
    ];

    // Every store registered and every region's replicas placed.
    let first = wait_leader(&c, Duration::from_secs(10)).await.expect("a PD leader");
    assert!(
        eventually(Duration::from_secs(60), || async {
            let regions = api(&c, first, "/pd/api/v1/regions");
            api(&c, first, "/pd/api/v1/stores")["count"] == 3
                && regions["regions"]
                    .as_array()
                    .is_some_and(|r| r.iter().all(|r| r["peers"].as_array().unwrap().len() == 3))
        })
        .await,
        "stores and replicas not ready"
    );
    let regions_before = api(&c, first, "/pd/api/v1/regions")["count"].as_u64().unwrap();

    // An operator that cannot finish yet: move region leadership to a
    // store that is paused.
    let region = &api(&c, first, "/pd/api/v1/regions")["regions"][0];
    let region_id = region["id"].as_u64().unwrap();
    let leader_store = region["leader"]["store_id"].as_u64().expect("region leader known");
    let target = region["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["store_id"].as_u64().unwrap())
        .find(|s| *s != leader_store)
        .unwrap();
    let stores = api(&c, first, "/pd/api/v1/stores");
    let target_addr = stores["stores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == target)
        .map(|s| s["address"].as_str().unwrap().to_owned())
        .unwrap();
    let paused = c.store_index_by_addr(&target_addr).unwrap();
    c.signal_store(paused, true).unwrap();
    let body = format!(
        r#"{{"name": "transfer-leader", "region_id": {region_id}, "to_store_id": {target}}}"#
    );
    assert!(http_post(c.pd_member_addr(first), "/pd/api/v1/operators", &body).contains("ok"));
    let op = operator_of(&c, first, region_id).expect("the operator runs");
    assert_eq!(op["desc"], "admin-transfer-leader");

    // Kill the PD leader.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked_before = acked.lock().len();
    c.kill_pd_member(first).unwrap();
    // The process is gone (reaped): any answer from now on is the new leader's.
    let killed_at = Instant::now();
    let second = wait_leader(&c, Duration::from_secs(5)).await;
    let elapsed = killed_at.elapsed();
    let second = second.unwrap_or_else(|| {
        panic!("no new PD leader within 5 s; logs:\n{}\n{}", c.log("pd1.log"), c.log("pd2.log"))
    });
    assert_ne!(second, first);
    println!("new PD leader pd{second} after {elapsed:?}");
    // Every store's heartbeat stream reaches it and every region reports
    // its leader within 2 s of it serving (the store side's bound is
    // about 1 s: `pd_worker`'s capped retry, one leader search, one open).
    let serving_at = Instant::now();
    let all_led = eventually(Duration::from_secs(2), || async {
        let regions = api(&c, second, "/pd/api/v1/regions");
        regions["regions"]
            .as_array()
            .is_some_and(|r| !r.is_empty() && r.iter().all(|r| !r["leader"].is_null()))
    })
    .await;
    assert!(
        all_led,
        "regions without a leader 2 s after pd{second} started serving: {}",
        api(&c, second, "/pd/api/v1/regions")
    );
    println!("every region's leader known {:?} after the new leader served", serving_at.elapsed());
    assert!(elapsed < Duration::from_secs(5), "failover took {elapsed:?}");
    assert!(
        eventually(Duration::from_secs(5), || async { tso.answered_after(killed_at).is_some() })
            .await,
        "no timestamp from the new leader"
    );
    let first_ts_after = tso.answered_after(killed_at).unwrap() - killed_at;
    println!("first timestamp {first_ts_after:?} after the kill");
    assert!(first_ts_after < Duration::from_secs(5));

    // State survived: stores, regions, the running operator.
    assert_eq!(api(&c, second, "/pd/api/v1/stores")["count"], 3);
    assert!(api(&c, second, "/pd/api/v1/regions")["count"].as_u64().unwrap() >= regions_before);
    let op = operator_of(&c, second, region_id)
        .unwrap_or_else(|| panic!("operator lost: {}", api(&c, second, "/pd/api/v1/operators")));
    assert_eq!(op["desc"], "admin-transfer-leader");
    // ... and finishes under the new leader once its store is back.
    c.signal_store(paused, false).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            operator_of(&c, second, region_id).is_none()
        })
        .await,
        "the operator never finished"
    );

    // The tikv-client writer goes on (with a new client if the old one got
    // stuck, see STUCK_PUT).
    if !eventually(Duration::from_secs(60), || async { acked.lock().len() > acked_before + 50 })
        .await
    {
        panic!(
            "tikv-client made no progress after the failover; regions: {}",
            api(&c, second, "/pd/api/v1/regions")
        );
    }
    c.start_pd_member(first);

    // The whole PD group down and back: state intact.
    let ts_before_restart = tso.last.load(Ordering::SeqCst);
    c.kill_pd().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.start_pd();
    let third = wait_leader(&c, Duration::from_secs(20)).await.expect("a leader after restart");
    let members = api(&c, third, "/pd/api/v1/members");
    assert_eq!(members["members"].as_array().unwrap().len(), 3, "{members}");
    assert_eq!(api(&c, third, "/pd/api/v1/stores")["count"], 3);
    assert!(api(&c, third, "/pd/api/v1/regions")["count"].as_u64().unwrap() >= regions_before);
    let pd2 = PdClient::connect(&endpoints, Duration::from_secs(10)).await.unwrap();
    assert_eq!(pd2.cluster_id(), cluster_id, "cluster id changed");
    assert!(pd2.get_ts().await.unwrap() > ts_before_restart);
    assert!(
        eventually(Duration::from_secs(20), || async {
            tso.last.load(Ordering::SeqCst) > ts_before_restart
        })
        .await
    );
    let acked_at_restart = acked.lock().len();
    assert!(
        eventually(Duration::from_secs(60), || async {
            acked.lock().len() > acked_at_restart + 50
        })
        .await,
        "tikv-client made no progress after the PD restart"
    );

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(tso.violations.lock().is_empty(), "timestamps went back: {:?}", tso.violations.lock());
    // Every acknowledged write is there (read with a fresh client: the
    // first may hold a region stuck by the tikv-client bug above).
    let client = tikv_client(&endpoints).await;
    let acked = acked.lock().clone();
    for chunk in acked.chunks(256) {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|n| format!("w-{n:08}").into_bytes()).collect();
        let got = client.batch_get(keys).await.unwrap();
        assert_eq!(got.len(), chunk.len(), "acknowledged writes missing");
    }
    println!(
        "{} timestamps, {} acknowledged writes, failover {elapsed:?}, tikv-client replaced {} times",
        tso.answers.lock().len(),
        acked.len(),
        replaced.load(Ordering::SeqCst)
    );
}

/// A member that starts while another leads shows up in the leader's
/// member list. The leader read the list once, before it took the lead,
/// so a late member stayed unlisted for as long as that leader led (the
/// deploy test saw 2 of its 3 members).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_joins_a_leading_group_is_listed() {
    let mut c = ProcCluster::start_group(1, 1, &pd_config(), TEST_STORE_CONFIG);
    let first = wait_leader(&c, Duration::from_secs(10)).await.expect("a PD leader");
    let listed = |c: &ProcCluster, i: usize| {
        let members = api(c, i, "/pd/api/v1/members");
        members["members"].as_array().map_or(0, Vec::len)
    };
    assert_eq!(listed(&c, first), 1);
    let second = c.add_pd_member();
    assert!(
        eventually(Duration::from_secs(10), || async { listed(&c, first) == 2 }).await,
        "the leader lists {} members: {}",
        listed(&c, first),
        api(&c, first, "/pd/api/v1/members")
    );
    assert!(
        eventually(Duration::from_secs(10), || async { listed(&c, second) == 2 }).await,
        "the new member lists {} members",
        listed(&c, second)
    );
    assert_eq!(leader(&c), Some(first), "the new member took over");
}
