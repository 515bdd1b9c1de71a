//! Black-box tests over real processes: PD + 3 stores on loopback.

use std::time::Duration;

use atoll_client::{Config, RawClient};
use atoll_tests::proc::{eventually, http_get, put_resending, ProcCluster};

async fn client(c: &ProcCluster) -> RawClient {
    let client = RawClient::connect(Config::new(vec![c.pd_addr.clone()])).await.expect("connect");
    // Wait for bootstrap and the first leader.
    assert!(
        eventually(Duration::from_secs(60), || async {
            client.put(b"__ready", b"1").await.is_ok()
        })
        .await,
        "cluster never became writable; pd log:\n{}\nstore0 log:\n{}",
        c.log("pd.log"),
        c.log("store0.log")
    );
    client
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}").into_bytes()
}

async fn leader_store_addr(client: &RawClient, k: &[u8]) -> String {
    let r = client.pd().get_region(&client.region_key(k)).await.unwrap().expect("region");
    let leader = r.leader.expect("leader reported");
    client.pd().get_store(leader.store_id).await.unwrap().address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_leader_store_keeps_acknowledged_writes_and_restart_catches_up() {
    let mut c = ProcCluster::start(3);
    let client = client(&c).await;
    const N: usize = 10_000;
    for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
        let pairs = chunk.iter().map(|i| (key(*i), value(*i))).collect();
        client.batch_put(pairs).await.expect("batch put");
    }
    // PD learns the leader from heartbeats.
    assert!(
        eventually(Duration::from_secs(10), || async {
            client
                .pd()
                .get_region(&client.region_key(&key(0)))
                .await
                .ok()
                .flatten()
                .and_then(|r| r.leader)
                .is_some()
        })
        .await
    );
    let leader_addr = leader_store_addr(&client, &key(0)).await;
    let victim = c.store_index_by_addr(&leader_addr).expect("leader is one of ours");
    c.kill_store(victim).unwrap();

    // Every acknowledged write is readable from the survivors.
    let keys: Vec<Vec<u8>> = (0..N).map(key).collect();
    let mut got = vec![];
    for chunk in keys.chunks(500) {
        got.extend(client.batch_get(chunk.to_vec()).await.expect("batch get after kill"));
    }
    assert_eq!(got.len(), N, "acknowledged keys lost after kill -9 of the leader");
    got.sort();
    for (i, (k, v)) in got.iter().enumerate() {
        assert_eq!((k, v), (&key(i), &value(i)));
    }
    // Writes continue on two stores.
    for i in N..N + 200 {
        put_resending(&client, &key(i), &value(i)).await.expect("put with one store down");
    }

    // Restart it, then take down another store: the cluster can only make
    // progress if the restarted store caught up with the log.
    c.start_store(victim);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let other = (0..3).find(|i| *i != victim).unwrap();
    c.kill_store(other).unwrap();
    for i in N + 200..N + 300 {
        put_resending(&client, &key(i), &value(i)).await.expect("put needs the restarted store");
    }
    let all: Vec<Vec<u8>> = (0..N + 300).map(key).collect();
    let mut n = 0;
    for chunk in all.chunks(500) {
        n += client.batch_get(chunk.to_vec()).await.expect("read after restart").len();
    }
    assert_eq!(n, N + 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_operations_and_bad_input() {
    let c = ProcCluster::start(3);
    let client = client(&c).await;

    client.put(b"a", b"1").await.unwrap();
    client.put(b"b", b"2").await.unwrap();
    client.put(b"c", b"3").await.unwrap();
    assert_eq!(client.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(client.get(b"zz").await.unwrap(), None);
    let scanned = client.scan(b"a", b"c", 10).await.unwrap();
    assert_eq!(scanned, vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), b"2".to_vec())]);
    client.delete(b"b").await.unwrap();
    assert_eq!(client.get(b"b").await.unwrap(), None);

    // CAS.
    let (ok, prev) = client.compare_and_swap(b"cas", None, b"v1").await.unwrap();
    assert!(ok && prev.is_none());
    let (ok, prev) = client.compare_and_swap(b"cas", Some(b"wrong"), b"v2").await.unwrap();
    assert!(!ok);
    assert_eq!(prev.as_deref(), Some(&b"v1"[..]));
    let (ok, _) = client.compare_and_swap(b"cas", Some(b"v1"), b"v2").await.unwrap();
    assert!(ok);
    assert_eq!(client.get(b"cas").await.unwrap().as_deref(), Some(&b"v2"[..]));

    // TTL.
    client.put_with_ttl(b"ttl", b"x", 100).await.unwrap();
    let ttl = client.get_key_ttl(b"ttl").await.unwrap().unwrap();
    assert!((95..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(client.get_key_ttl(b"a").await.unwrap(), Some(0));
    client.put_with_ttl(b"short", b"x", 1).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            client.get(b"short").await.unwrap().is_none()
        })
        .await
    );

    // Delete range.
    for i in 0..50 {
        client.put(format!("dr{i:03}").as_bytes(), b"v").await.unwrap();
    }
    client.delete_range(b"dr010", b"dr040").await.unwrap();
    assert_eq!(client.scan(b"dr", b"ds", 100).await.unwrap().len(), 20);

    // Bad input: clear errors, and nothing written before is lost.
    let err = client.put(b"", b"v").await.unwrap_err().to_string();
    assert!(err.contains("key is empty"), "{err}");
    let big = vec![0u8; 7 << 20];
    let err = client.put(b"big", &big).await.unwrap_err().to_string();
    assert!(err.contains("max-value-size"), "{err}");
    assert_eq!(client.get(b"big").await.unwrap(), None);
    assert_eq!(client.get(b"a").await.unwrap().as_deref(), Some(&b"1"[..]));

    // Unknown region and stale epoch, straight over gRPC.
    use atoll_proto::kvrpcpb::{Context, RawGetRequest};
    use atoll_proto::tikvpb::tikv_client::TikvClient;
    let region = client.pd().get_region(&client.region_key(b"a")).await.unwrap().unwrap();
    let a = client.wire_key(b"a");
    let leader = region.leader.clone().unwrap();
    let addr = client.pd().get_store(leader.store_id).await.unwrap().address;
    let mut raw = TikvClient::connect(format!("http://{addr}")).await.unwrap();
    let mut ctx = Context {
        region_id: 987_654_321,
        region_epoch: region.region.region_epoch.clone(),
        peer: Some(leader.clone()),
        api_version: client.api_version().to_proto(),
        ..Default::default()
    };
    let resp = raw
        .raw_get(RawGetRequest { context: Some(ctx.clone()), key: a.clone(), cf: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.region_error.unwrap().region_not_found.is_some());
    ctx.region_id = region.region.id;
    let mut stale = region.region.region_epoch.clone().unwrap();
    stale.version -= 1;
    ctx.region_epoch = Some(stale);
    let resp = raw
        .raw_get(RawGetRequest { context: Some(ctx.clone()), key: a.clone(), cf: String::new() })
        .await
        .unwrap()
        .into_inner();
    let en = resp.region_error.unwrap().epoch_not_match.expect("epoch_not_match");
    assert_eq!(en.current_regions[0].id, region.region.id);
    // Clients may not write raft metadata.
    let ctx = Context { region_epoch: region.region.region_epoch.clone(), ..ctx };
    let put = atoll_proto::kvrpcpb::RawPutRequest {
        context: Some(ctx),
        key: a.clone(),
        value: b"x".to_vec(),
        cf: "raft".into(),
        ..Default::default()
    };
    let resp = raw.raw_put(put).await.unwrap().into_inner();
    assert!(resp.error.contains("column family"), "{}", resp.error);
    assert_eq!(
        client.get(b"a").await.unwrap().as_deref(),
        Some(&b"1"[..]),
        "data intact after bad requests"
    );

    // PD's HTTP API and the status servers.
    let body = http_get(&c.pd_addr, "/pd/api/v1/regions").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["count"].as_u64(), Some(5), "keyspace split into 5 regions: {body}");
    let metrics = http_get(c.status_addr(0), "/metrics").unwrap();
    assert!(metrics.contains("atoll_raftstore_region_count"), "metrics exported");
}

/// Writers keep going while stores are killed (-9) and restarted one at a
/// time; no acknowledged write may be lost. Each writer's values for a key
/// only grow, so the stored value must be at least the last acknowledged one
/// (a later put that timed out may still have been applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_rolling_crashes() {
    let mut c = ProcCluster::start(3);
    let client = std::sync::Arc::new(client(&c).await);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = vec![];
    for w in 0..4u32 {
        let client = client.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            // Bounded: at most 100k attempts, and stops when told.
            let mut acked = std::collections::BTreeMap::new();
            for i in 0..100_000u32 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let k = format!("w{w}-{:03}", i % 200).into_bytes();
                let v = format!("{i}").into_bytes();
                if client.put(&k, &v).await.is_ok() {
                    acked.insert(k, v);
                }
            }
            acked
        }));
    }
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let victim = round % 3;
        c.kill_store(victim).unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        c.start_store(victim);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in writers {
        let acked = w.await.unwrap();
        assert!(!acked.is_empty(), "a writer made no progress at all");
        for (k, v) in &acked {
            let num = |b: &[u8]| String::from_utf8_lossy(b).parse::<u32>().unwrap();
            let stored = client
                .get(k)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("lost {}", String::from_utf8_lossy(k)));
            assert!(
                num(&stored) >= num(v),
                "stale value for {}: {} < acked {}",
                String::from_utf8_lossy(k),
                num(&stored),
                num(v)
            );
        }
        total += acked.len();
    }
    assert!(total > 0);
}
