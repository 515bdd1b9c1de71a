//! Placement over real processes: size-based splits, balancing onto a new
//! store, and rebuilding the replicas of a store that died for good.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use atoll_client::{Config, RawClient};
use atoll_tests::proc::{
    batch_put_resending, eventually, http_get, http_post, ProcCluster, TEST_PD_CONFIG,
    TEST_STORE_CONFIG,
};
use serde_json::Value;

async fn client(c: &ProcCluster) -> RawClient {
    let client = RawClient::connect(Config::new(vec![c.pd_addr.clone()])).await.expect("connect");
    assert!(
        eventually(Duration::from_secs(60), || async {
            client.put(b"__ready", b"1").await.is_ok()
        })
        .await,
        "cluster never became writable; pd log:\n{}",
        c.log("pd.log")
    );
    client
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i:06}-{}", "x".repeat(64)).into_bytes()
}

fn pd_json(c: &ProcCluster, path: &str) -> Value {
    let body = http_get(&c.pd_addr, path).unwrap_or_default();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn regions(c: &ProcCluster) -> Vec<Value> {
    pd_json(c, "/pd/api/v1/regions")["regions"].as_array().cloned().unwrap_or_default()
}

/// store id -> (region count, leader count), from PD's routing table.
fn store_counts(c: &ProcCluster) -> HashMap<u64, (u64, u64)> {
    let mut m = HashMap::new();
    for s in pd_json(c, "/pd/api/v1/stores")["stores"].as_array().cloned().unwrap_or_default() {
        let id = s["id"].as_u64().unwrap();
        m.insert(
            id,
            (s["region_count"].as_u64().unwrap_or(0), s["leader_count"].as_u64().unwrap_or(0)),
        );
    }
    m
}

async fn store_id_of(client: &RawClient, c: &ProcCluster, i: usize) -> u64 {
    let stores = client.pd().get_all_stores().await.unwrap();
    stores.iter().find(|s| s.address == c.store_addr(i)).map(|s| s.id).expect("store registered")
}

async fn write_all(client: &RawClient, range: std::ops::Range<usize>) {
    let idx: Vec<usize> = range.collect();
    for chunk in idx.chunks(50) {
        let pairs = chunk.iter().map(|i| (key(*i), value(*i))).collect();
        batch_put_resending(client, pairs).await.expect("batch put");
    }
}

async fn check_all(client: &RawClient, n: usize) {
    // One scan over everything: every key exactly once, in order.
    let got = client.scan(b"key-", b"key.", (n + 10) as u32).await.expect("scan");
    assert_eq!(got.len(), n, "scan returned {} of {n} keys", got.len());
    for (i, (k, v)) in got.iter().enumerate() {
        assert_eq!((k, v), (&key(i), &value(i)), "key {i}");
    }
}

/// PD's regions, sorted, must tile the whole key space: no gap, no overlap.
fn assert_ranges_tile_keyspace(regions: &[Value]) {
    let mut ranges: Vec<(String, String)> = regions
        .iter()
        .map(|r| {
            (r["start_key"].as_str().unwrap().to_owned(), r["end_key"].as_str().unwrap().to_owned())
        })
        .collect();
    ranges.sort();
    assert_eq!(ranges.first().unwrap().0, "", "first region starts at -inf");
    assert_eq!(ranges.last().unwrap().1, "", "last region ends at +inf");
    for w in ranges.windows(2) {
        assert_eq!(w[0].1, w[1].0, "regions must meet exactly: {w:?}");
    }
}

// Raw regions split by size (key counts split transactional regions only):
// an entry here is ~100 bytes, so a split about every 40 keys.
const SPLIT_STORE_CONFIG: &str = r#"
region-max-size = "6KiB"
region-split-size = "4KiB"
region-split-check-diff = "1KiB"
split-region-check-tick-interval = "100ms"
"#;

fn store_config(extra: &str) -> String {
    // Append to the [raftstore] table of the test config.
    format!("{TEST_STORE_CONFIG}{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regions_split_by_size_at_least_50_times_and_keep_every_key() {
    let c = ProcCluster::start_with(3, TEST_PD_CONFIG, &store_config(SPLIT_STORE_CONFIG));
    let client = client(&c).await;
    assert!(
        eventually(Duration::from_secs(20), || async { regions(&c).len() >= 5 }).await,
        "keyspace split"
    );
    let initial = regions(&c).len();
    const N: usize = 3000;
    write_all(&client, 0..N).await;
    // 3000 keys with a split every ~40 keys: well over 50 splits.
    let enough =
        eventually(Duration::from_secs(90), || async { regions(&c).len() >= initial + 50 }).await;
    let now = regions(&c);
    assert!(enough, "only {} regions after the writes (started with {initial})", now.len());
    // Let in-flight splits settle, then check the routing table and the data.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rs = regions(&c);
    assert_ranges_tile_keyspace(&rs);
    for r in &rs {
        assert_eq!(r["peers"].as_array().unwrap().len(), 3, "every region keeps 3 replicas: {r}");
    }
    check_all(&client, N).await;
    let keys: Vec<Vec<u8>> = (0..N).map(key).collect();
    let mut n = 0;
    for chunk in keys.chunks(500) {
        n += client.batch_get(chunk.to_vec()).await.expect("batch get").len();
    }
    assert_eq!(n, N);
    // The ctl path: ask PD to split one region in half.
    let before = regions(&c).len();
    let target = rs
        .iter()
        .find(|r| r["approximate_keys"].as_u64().unwrap_or(0) > 4)
        .expect("a measured region");
    let body = format!(r#"{{"name":"split-region","region_id":{}}}"#, target["id"]);
    let resp = http_post(&c.pd_addr, "/pd/api/v1/operators", &body);
    assert!(resp.contains("\"ok\":true"), "{resp}");
    assert!(
        eventually(Duration::from_secs(20), || async { regions(&c).len() > before }).await,
        "admin half split"
    );
}

// ~100-byte entries: a split about every 100 keys.
const BALANCE_STORE_CONFIG: &str = r#"
region-max-size = "15KiB"
region-split-size = "10KiB"
region-split-check-diff = "1KiB"
split-region-check-tick-interval = "100ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_store_receives_regions_and_leaders() {
    let mut c = ProcCluster::start_with(3, TEST_PD_CONFIG, &store_config(BALANCE_STORE_CONFIG));
    let client = client(&c).await;
    const N: usize = 2000;
    write_all(&client, 0..N).await;
    assert!(
        eventually(Duration::from_secs(60), || async { regions(&c).len() >= 16 }).await,
        "splits"
    );
    let fourth = c.add_store();
    let id4 = {
        let mut id = None;
        for _ in 0..100 {
            if let Ok(stores) = client.pd().get_all_stores().await {
                id = stores.iter().find(|s| s.address == c.store_addr(fourth)).map(|s| s.id);
            }
            if id.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        id.expect("4th store registered")
    };
    // Balanced: the new store holds about a quarter of all replicas and of
    // the leaders (within the scheduler's tolerance).
    let spread = eventually(Duration::from_secs(120), || async {
        let counts = store_counts(&c);
        let total_regions = regions(&c).len() as u64;
        let (r4, l4) = counts.get(&id4).copied().unwrap_or_default();
        r4 + 2 >= total_regions * 3 / 4 && l4 + 2 >= total_regions / 4 && l4 > 0
    })
    .await;
    let counts = store_counts(&c);
    assert!(spread, "4th store did not get its share: {counts:?} of {} regions", regions(&c).len());
    // Once the moves in flight finish, every region is back to 3 voters.
    let settled = eventually(Duration::from_secs(60), || async {
        regions(&c).iter().all(|r| {
            let peers = r["peers"].as_array().unwrap();
            peers.len() == 3 && peers.iter().all(|p| p["role"] == "voter")
        })
    })
    .await;
    assert!(settled, "moves did not settle: {:?}", pd_json(&c, "/pd/api/v1/operators"));
    check_all(&client, N).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_store_is_replaced_and_no_acknowledged_write_is_lost() {
    let mut c = ProcCluster::start_with(4, TEST_PD_CONFIG, &store_config(BALANCE_STORE_CONFIG));
    let client = client(&c).await;
    const N: usize = 1500;
    write_all(&client, 0..N).await;
    assert!(
        eventually(Duration::from_secs(60), || async { regions(&c).len() >= 12 }).await,
        "splits"
    );
    // Balancing puts replicas on all four stores; kill one that holds some.
    let victim_id = store_id_of(&client, &c, 0).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            store_counts(&c).get(&victim_id).is_some_and(|(r, _)| *r > 0)
        })
        .await,
        "store 0 holds replicas"
    );
    c.kill_store(0).unwrap();
    // Writes go on while PD notices (3s) and rebuilds the replicas.
    write_all(&client, N..N + 300).await;
    let repaired = eventually(Duration::from_secs(120), || async {
        let rs = regions(&c);
        !rs.is_empty()
            && rs.iter().all(|r| {
                let peers = r["peers"].as_array().unwrap();
                peers.len() == 3
                    && peers
                        .iter()
                        .all(|p| p["store_id"].as_u64() != Some(victim_id) && p["role"] == "voter")
            })
    })
    .await;
    assert!(repaired, "regions not back to 3 replicas off store {victim_id}: {:?}", regions(&c));
    assert_eq!(store_counts(&c).get(&victim_id).map(|c| c.0), Some(0));
    check_all(&client, N + 300).await;
}

/// Runs atoll-ctl; (succeeded, stdout, stderr).
fn try_ctl(c: &ProcCluster, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(atoll_tests::proc::binary("atoll-ctl"))
        .arg("--pd")
        .arg(&c.pd_addr)
        .args(args)
        .output()
        .expect("run atoll-ctl");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn ctl(c: &ProcCluster, args: &[&str]) -> String {
    let (ok, out, err) = try_ctl(c, args);
    assert!(ok, "atoll-ctl {args:?}: {err}");
    out
}

fn store_state(c: &ProcCluster, id: u64) -> (String, u64) {
    let stores = pd_json(c, "/pd/api/v1/stores");
    let s = stores["stores"].as_array().unwrap().iter().find(|s| s["id"] == id).cloned();
    let s = s.unwrap_or(Value::Null);
    (s["state_name"].as_str().unwrap_or("?").to_owned(), s["region_count"].as_u64().unwrap_or(0))
}

/// `atoll-ctl store delete` under writes: PD moves every replica off the
/// store, which ends Tombstone with no regions; every region keeps three
/// voters elsewhere, nothing acknowledged is lost, the deleted store
/// refuses to start again, and a delete that would leave too few stores
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deleted_store_ends_tombstone_with_its_replicas_moved_away() {
    let mut c = ProcCluster::start_with(4, TEST_PD_CONFIG, &store_config(BALANCE_STORE_CONFIG));
    let client = client(&c).await;
    const N: usize = 1500;
    write_all(&client, 0..N).await;
    let victim = store_id_of(&client, &c, 0).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            regions(&c).len() >= 12 && store_counts(&c).get(&victim).is_some_and(|(r, _)| *r > 3)
        })
        .await,
        "store {victim} never held replicas: {:?}",
        store_counts(&c)
    );
    let out = ctl(&c, &["store", "delete", &victim.to_string()]);
    assert!(out.contains("Offline"), "{out}");
    // Under load: writes go on while the replicas move.
    write_all(&client, N..N + 500).await;
    let buried = eventually(Duration::from_secs(120), || async {
        store_state(&c, victim) == ("Tombstone".to_owned(), 0)
    })
    .await;
    assert!(
        buried,
        "store {victim} is {:?}; operators {:?}",
        store_state(&c, victim),
        pd_json(&c, "/pd/api/v1/operators")
    );
    let rs = regions(&c);
    for r in &rs {
        let peers = r["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 3, "3 replicas: {r}");
        assert!(peers.iter().all(|p| p["store_id"] != victim && p["role"] == "voter"), "{r}");
    }
    assert_ranges_tile_keyspace(&rs);
    check_all(&client, N + 500).await;
    assert!(ctl(&c, &["stores"]).contains("Tombstone"));

    // The deleted store never comes back under its id.
    c.kill_store(0).unwrap();
    c.start_store(0);
    assert_eq!(c.wait_store_exit(0, Duration::from_secs(30)), Some(false), "tombstone restarted");
    assert!(c.log("store0.log").contains("was deleted from the cluster"), "no clear message");

    // Three stores left for three replicas: deleting another is refused.
    let other = store_id_of(&client, &c, 1).await;
    let (ok, _, err) = try_ctl(&c, &["store", "delete", &other.to_string()]);
    assert!(!ok && err.contains("would leave 2 stores"), "{err}");
    assert_eq!(store_state(&c, other).0, "Up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ctl_shows_the_cluster_and_asks_pd_to_split_and_transfer_leaders() {
    // Leader balance off: it would rightly move our hand-placed leader back.
    let c = ProcCluster::start_with(
        3,
        &format!("{TEST_PD_CONFIG}leader-schedule-limit = 0\n"),
        TEST_STORE_CONFIG,
    );
    let client = client(&c).await;
    write_all(&client, 0..200).await;
    assert!(eventually(Duration::from_secs(20), || async { regions(&c).len() >= 5 }).await);

    let stores = ctl(&c, &["stores"]);
    assert_eq!(stores.lines().filter(|l| l.contains("\tUp\t")).count(), 3, "{stores}");
    let listed = ctl(&c, &["regions"]);
    assert_eq!(listed.lines().count() - 1, regions(&c).len(), "{listed}");
    assert!(ctl(&c, &["operators"]).starts_with("REGION\tOPERATOR"));

    // Split the region holding our keys at key-000100.
    let target = client.pd().get_region(&client.region_key(&key(0))).await.unwrap().unwrap();
    let before = regions(&c).len();
    ctl(&c, &["split", "--region", &target.region.id.to_string(), "--key", "key-000100"]);
    assert!(
        eventually(Duration::from_secs(20), || async { regions(&c).len() == before + 1 }).await,
        "split via ctl"
    );
    let right = client.pd().get_region(&client.region_key(&key(100))).await.unwrap().unwrap();
    assert_eq!(right.region.start_key, client.region_key(b"key-000100"));

    // Move that region's leader to another store.
    let leader = right.leader.expect("leader").store_id;
    let to = right.region.peers.iter().map(|p| p.store_id).find(|s| *s != leader).unwrap();
    ctl(
        &c,
        &[
            "transfer-leader",
            "--region",
            &right.region.id.to_string(),
            "--to-store",
            &to.to_string(),
        ],
    );
    let moved = eventually(Duration::from_secs(20), || async {
        let r = client.pd().get_region(&client.region_key(&key(100))).await.ok().flatten();
        r.and_then(|r| r.leader).is_some_and(|l| l.store_id == to)
    })
    .await;
    assert!(moved, "leader did not move to store {to}");
    check_all(&client, 200).await;
}

/// Stores 0 and 1 run on one host (`host` label "a"), stores 2 and 3 on
/// hosts of their own: the first region and every region split from it or
/// moved by balance has at most one replica on host "a", and both stores
/// of that host take a share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_region_has_two_replicas_on_one_host() {
    let labeled = |host: &str| {
        format!(
            "{}\n[server]\nlabels = {{ host = \"{host}\", zone = \"z1\" }}\n",
            store_config(BALANCE_STORE_CONFIG)
        )
    };
    let c = ProcCluster::start_each(
        TEST_PD_CONFIG,
        &[labeled("a"), labeled("a"), labeled("b"), labeled("c")],
    );
    let client = client(&c).await;
    let addr_of_id: HashMap<u64, String> = pd_json(&c, "/pd/api/v1/stores")["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_u64().unwrap(), s["address"].as_str().unwrap().to_owned()))
        .collect();
    let host_a: Vec<u64> = addr_of_id
        .iter()
        .filter(|(_, a)| [c.store_addr(0), c.store_addr(1)].contains(&a.as_str()))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(host_a.len(), 2, "{addr_of_id:?}");
    const N: usize = 2000;
    write_all(&client, 0..N).await;
    let on_a = |r: &Value| {
        r["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| host_a.contains(&p["store_id"].as_u64().unwrap()))
            .count()
    };
    // Splits and balance run; no region holds both, except for the moment
    // a replica moves between the host's two stores (added before the old
    // one is removed: 4 peers).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut shared = false;
    while Instant::now() < deadline {
        let rs = regions(&c);
        for r in rs.iter().filter(|r| r["peers"].as_array().unwrap().len() <= 3) {
            assert!(on_a(r) <= 1, "two replicas on host a: {r}");
        }
        let counts = store_counts(&c);
        shared = rs.len() >= 16 && host_a.iter().all(|id| counts.get(id).is_some_and(|c| c.0 > 0));
        if shared {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(shared, "both stores of host a should hold regions: {:?}", store_counts(&c));
    check_all(&client, N).await;
}
