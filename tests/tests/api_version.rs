//! One key space per cluster: an API V1 cluster served to the unmodified
//! Rust `tikv-client` and `tikv-python` in their default modes, across
//! splits at chosen keys; requests of the other API version refused with
//! nothing written; stores configured with another version refuse to start.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use atoll_proto::kvrpcpb::{Context, RawGetRequest, RawPutRequest};
use atoll_proto::tikvpb::tikv_client::TikvClient;
use atoll_tests::proc::{split_at, ProcCluster, TEST_PD_CONFIG, TEST_STORE_CONFIG};
use tikv_client::{KvPair, RawClient};

fn v1_store_config() -> String {
    format!("{TEST_STORE_CONFIG}\n[storage]\napi-version = 1\n")
}

fn v2_store_config() -> String {
    format!("{TEST_STORE_CONFIG}\n[storage]\napi-version = 2\n")
}

/// Split keys: an ordinary key, one sharing its first 8 bytes with other
/// keys, and the bytes of the API V2 keyspace boundaries (plain keys in V1).
const SPLITS: &[&[u8]] =
    &[b"B", b"split-m", b"shared-prefix-m", b"r\0\0\0", b"r\0\0\0\0", b"r\0\0\x01", b"x\0\0\0"];

/// Keys at, just below and just above the split keys, with trailing zero
/// bytes, sharing their first 8 bytes, and at both ends of the key space.
fn keys() -> Vec<Vec<u8>> {
    let extra: &[&[u8]] = &[
        b"\0",
        b"A",
        b"A\xff",
        b"B\0",
        b"Az",
        b"split-l",
        b"split-l\xff",
        b"split-m\0",
        b"split-m\0\0",
        b"split-m1",
        b"split-n",
        b"shared-prefix-a",
        b"shared-prefix-m\0",
        b"shared-prefix-z",
        b"shared-p",
        b"r\0\0",
        b"r\0\0\0\0\0",
        b"r\0\0\0a",
        b"x\0\0\0\0",
        b"\xff",
        b"\xff\xff\xff",
    ];
    let mut v: Vec<Vec<u8>> = SPLITS.iter().chain(extra).map(|k| k.to_vec()).collect();
    v.sort();
    v.dedup();
    v
}

fn value(k: &[u8], generation: u32) -> Vec<u8> {
    let mut v = format!("v{generation}-").into_bytes();
    v.extend_from_slice(k);
    v
}

fn pairs(v: Vec<KvPair>) -> Vec<(Vec<u8>, Vec<u8>)> {
    v.into_iter().map(|p| (Vec::<u8>::from(p.key().clone()), p.value().clone())).collect()
}

/// The unmodified tikv-client in its default mode (`RawClient::new`: API V1).
async fn v1_client(c: &ProcCluster) -> RawClient {
    common::writable_tikv_client(c, tikv_client::Config::default()).await
}

/// Writes every test key's first value and checks the client reads them
/// back (one region, before any split); returns what is live.
async fn write_initial(client: &RawClient) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut live: BTreeMap<Vec<u8>, Vec<u8>> =
        keys().into_iter().map(|k| (k.clone(), value(&k, 0))).collect();
    client
        .batch_put(live.iter().map(|(k, v)| KvPair::new(k.clone(), v.clone())).collect::<Vec<_>>())
        .await
        .unwrap();
    check_rust_client(client, "before splits", 1, &mut live).await;
    live
}

/// Every read path of the Rust client over `live`, then writes at the bounds.
async fn check_rust_client(
    client: &RawClient,
    phase: &str,
    generation: u32,
    live: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) {
    for k in keys() {
        assert_eq!(
            client.get(k.clone()).await.unwrap().as_ref(),
            live.get(&k),
            "{phase}: get {k:?}"
        );
    }
    let want: Vec<(Vec<u8>, Vec<u8>)> = live.clone().into_iter().collect();
    let mut got = pairs(client.batch_get(keys()).await.unwrap());
    got.sort();
    assert_eq!(got, want, "{phase}: batch_get");
    // tikv-client 0.4.0's scan loop (raw/client.rs `scan_inner`), not the
    // server, limits what a V1 multi-region scan can be asked here: it walks
    // regions forward and stops once the range's end is at or below the end
    // key of the region just scanned, comparing bytes. An unbounded end is
    // sent as "" and so stops after the first region; a bounded end never
    // compares below the last region's "" end, so a scan reaching the last
    // region without filling its limit starts over from the first; a reverse
    // scan also walks forward and takes each region's top keys. TiKV sees
    // the same requests. So: whole-space scans while there is one region,
    // and after the splits bounded scans over many regions that end before
    // the last one, or that fill their limit.
    let in_range = |lo: &[u8], hi: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
        want.iter()
            .filter(|(k, _)| k.as_slice() >= lo && (hi.is_empty() || k.as_slice() < hi))
            .cloned()
            .collect()
    };
    if phase.starts_with("before") {
        assert_eq!(pairs(client.scan(.., 1000).await.unwrap()), want, "{phase}: scan all");
        let rev = pairs(client.scan_reverse(.., 1000).await.unwrap());
        assert_eq!(
            rev,
            want.iter().rev().cloned().collect::<Vec<_>>(),
            "{phase}: reverse scan all"
        );
    } else {
        let all_but_last = pairs(client.scan(..b"x\0\0\0".to_vec(), 1000).await.unwrap());
        assert_eq!(
            all_but_last,
            in_range(b"", b"x\0\0\0"),
            "{phase}: scan [\"\", x\\0\\0\\0) over 7 regions"
        );
        let inside = pairs(client.scan(b"B".to_vec()..b"split-m\0".to_vec(), 1000).await.unwrap());
        assert_eq!(
            inside,
            in_range(b"B", b"split-m\0"),
            "{phase}: scan [B, split-m\\0) over 6 regions"
        );
        let keys_only =
            client.scan_keys(b"r\0\0".to_vec()..b"shared-prefix-m\0".to_vec(), 1000).await.unwrap();
        let keys_only: Vec<Vec<u8>> = keys_only.into_iter().map(Vec::<u8>::from).collect();
        let want_keys: Vec<Vec<u8>> =
            in_range(b"r\0\0", b"shared-prefix-m\0").into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys_only, want_keys, "{phase}: key-only scan over the keyspace-boundary keys");
    }
    let top3 = pairs(
        client.scan_reverse(b"shared-prefix-m".to_vec()..b"split-m".to_vec(), 3).await.unwrap(),
    );
    let want3: Vec<_> =
        in_range(b"shared-prefix-m", b"split-m").into_iter().rev().take(3).collect();
    assert_eq!(top3, want3, "{phase}: reverse scan below split-m");
    let first3 = pairs(client.scan(b"B".to_vec()..b"x\0\0\0\0".to_vec(), 3).await.unwrap());
    assert_eq!(first3, in_range(b"B", b"x\0\0\0\0")[..3].to_vec(), "{phase}: scan from B, limit 3");
    let ranges = vec![
        b"r\0\0".to_vec()..b"r\0\0\0\0\0".to_vec(),
        b"x\0\0\0".to_vec()..b"x\0\0\0\x01".to_vec(),
    ];
    let mut multi = pairs(client.batch_scan(ranges, 100).await.unwrap());
    multi.sort();
    let want_multi: Vec<_> = want
        .iter()
        .filter(|(k, _)| {
            (b"r\0\0".as_slice()..b"r\0\0\0\0\0".as_slice()).contains(&k.as_slice())
                || (b"x\0\0\0".as_slice()..b"x\0\0\0\x01".as_slice()).contains(&k.as_slice())
        })
        .cloned()
        .collect();
    assert_eq!(multi, want_multi, "{phase}: batch_scan");

    // Overwrite every key equal to a split key.
    let fresh: Vec<KvPair> =
        SPLITS.iter().map(|k| KvPair::new(k.to_vec(), value(k, generation))).collect();
    client.batch_put(fresh).await.unwrap();
    for k in SPLITS {
        live.insert(k.to_vec(), value(k, generation));
        assert_eq!(
            client.get(k.to_vec()).await.unwrap(),
            Some(value(k, generation)),
            "{phase}: overwritten {k:?}"
        );
    }

    // TTL on a bound key.
    client.put_with_ttl(b"split-m".to_vec(), b"ttl".to_vec(), 600).await.unwrap();
    live.insert(b"split-m".to_vec(), b"ttl".to_vec());
    let ttl = client.get_key_ttl_secs(b"split-m".to_vec()).await.unwrap().unwrap();
    assert!((590..=600).contains(&ttl), "{phase}: ttl {ttl}");

    // Compare-and-swap on a bound key.
    let atomic = client.clone().with_atomic_for_cas();
    let old = live[&b"x\0\0\0".to_vec()].clone();
    let new = format!("cas-{generation}").into_bytes();
    let (prev, ok) =
        atomic.compare_and_swap(b"x\0\0\0".to_vec(), Some(old.clone()), new.clone()).await.unwrap();
    assert!(ok, "{phase}: cas");
    assert_eq!(prev, Some(old));
    let (prev, ok) = atomic
        .compare_and_swap(b"x\0\0\0".to_vec(), Some(b"stale".to_vec()), b"never".to_vec())
        .await
        .unwrap();
    assert!(!ok);
    assert_eq!(prev, Some(new.clone()));
    live.insert(b"x\0\0\0".to_vec(), new);
}

/// Runs `tests/python/tikv_python_v1.py` with the virtualenv `make test`
/// installs tikv-python into.
fn run_tikv_python(pd_addr: &str) -> String {
    let python = std::env::var("ATOLL_TEST_PYTHON").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| format!("{}/.cache/atoll-target", std::env::var("HOME").unwrap()));
        format!("{target}/pyenv/bin/python")
    });
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} not found: `make test` installs tikv-python into a virtualenv first (make pyenv)"
    );
    let script = atoll_tests::repo_file("tests/python/tikv_python_v1.py");
    let out =
        std::process::Command::new(&python).arg(script).arg(pd_addr).output().expect("run python");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tikv-python checks failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_v1_cluster_serves_default_mode_clients_across_splits() {
    let mut c = ProcCluster::start_with(3, TEST_PD_CONFIG, &v1_store_config());
    let client = v1_client(&c).await;
    let ours = atoll_client::RawClient::connect(atoll_client::Config::new(vec![c.pd_addr.clone()]))
        .await
        .unwrap();
    assert_eq!(ours.api_version(), atoll_client::ApiVersion::V1);
    let pd = ours.pd();
    let regions = atoll_tests::proc::http_get(&c.pd_addr, "/pd/api/v1/regions").unwrap();
    assert!(regions.contains(r#""count":1"#), "no keyspace split in API V1: {regions}");

    let mut live = write_initial(&client).await;

    for k in SPLITS {
        split_at(pd, &c.pd_addr, k, k).await;
        let r = pd.get_region(k).await.unwrap().unwrap();
        assert_eq!(r.region.start_key, *k, "a region starts at the raw split key");
    }
    // Routing: every key goes to the region whose raw bounds hold it.
    for k in keys() {
        let r = pd.get_region(&k).await.unwrap().unwrap().region;
        assert!(
            r.start_key <= k && (r.end_key.is_empty() || k < r.end_key),
            "{k:?} routed to {r:?}"
        );
    }
    check_rust_client(&client, "after splits", 2, &mut live).await;

    // Deletes across a bound.
    client.delete_range(b"split-l".to_vec()..b"split-n".to_vec()).await.unwrap();
    live.retain(|k, _| !(b"split-l".as_slice()..b"split-n".as_slice()).contains(&k.as_slice()));
    client.batch_delete(vec![b"B".to_vec(), b"r\0\0\0".to_vec()]).await.unwrap();
    live.remove(b"B".as_slice());
    live.remove(b"r\0\0\0".as_slice());
    let want: Vec<_> = live.clone().into_iter().collect();
    let mut got = pairs(client.scan(..b"x\0\0\0".to_vec(), 1000).await.unwrap());
    got.extend(pairs(
        client
            .batch_get(
                keys()
                    .into_iter()
                    .filter(|k| k.as_slice() >= b"x\0\0\0".as_slice())
                    .collect::<Vec<_>>(),
            )
            .await
            .unwrap(),
    ));
    got.sort();
    assert_eq!(got, want, "after deletes");
    // Our client sees the same keys and computes the same checksum as tikv-python would.
    let (_, kvs, bytes) = ours.checksum(b"", b"").await.unwrap();
    assert_eq!(kvs, want.len() as u64);
    assert_eq!(bytes, want.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum::<u64>());
    assert_eq!(ours.scan(b"", b"", 1000).await.unwrap(), want);
    client.delete_range(..).await.unwrap();

    // tikv-python, unmodified, in its default mode (API V1).
    let out = run_tikv_python(&c.pd_addr);
    let summary = out.lines().last().unwrap_or_default();
    println!("{summary}");
    assert!(
        summary.starts_with("tikv-python: ") && summary.ends_with(" passed, 0 failed"),
        "{out}"
    );

    // API V2 requests to this V1 cluster are refused and write nothing.
    let r = pd.get_region(b"r\0\0\0zz").await.unwrap().unwrap();
    let leader = r.leader.clone().unwrap();
    let addr = pd.get_store(leader.store_id).await.unwrap().address;
    let mut raw = TikvClient::connect(format!("http://{addr}")).await.unwrap();
    let ctx = Context {
        region_id: r.region.id,
        region_epoch: r.region.region_epoch.clone(),
        peer: Some(leader),
        api_version: 2,
        ..Default::default()
    };
    let put = RawPutRequest {
        context: Some(ctx.clone()),
        key: b"r\0\0\0zz".to_vec(),
        value: b"v2".to_vec(),
        ..Default::default()
    };
    let resp = raw.raw_put(put).await.unwrap().into_inner();
    assert!(resp.error.contains("api version not matched"), "{resp:?}");
    assert!(resp.error.contains("runs API V1"), "{}", resp.error);
    let get = RawGetRequest { context: Some(ctx), key: b"r\0\0\0zz".to_vec(), cf: String::new() };
    assert!(raw.raw_get(get).await.unwrap().into_inner().error.contains("api version not matched"));
    assert_eq!(
        client.get(b"r\0\0\0zz".to_vec()).await.unwrap(),
        None,
        "the refused write left nothing"
    );
    let keyspace_mode =
        tikv_client::Config::default().with_default_keyspace().with_timeout(Duration::from_secs(2));
    let err = RawClient::new_with_config(vec![c.pd_addr.clone()], keyspace_mode)
        .await
        .err()
        .expect("no keyspaces in API V1");
    assert!(format!("{err:?}").contains("API V1"), "{err:?}");

    // A store configured for API V2 refuses to join.
    let odd = c.add_store_with(&v2_store_config());
    assert_eq!(
        c.wait_store_exit(odd, Duration::from_secs(30)),
        Some(false),
        "a V2 store joined a V1 cluster"
    );
    let log = c.log(&format!("store{odd}.log"));
    assert!(log.contains("the cluster runs API V1"), "{log}");
    // So does an existing V1 store restarted with api-version = 2.
    c.kill_store(0).unwrap();
    let earlier = c.log("store0.log").len();
    c.set_store_config(0, &v2_store_config());
    c.start_store(0);
    assert_eq!(
        c.wait_store_exit(0, Duration::from_secs(30)),
        Some(false),
        "store 0 started with the wrong api version"
    );
    let log = c.log("store0.log");
    let log = &log[earlier..];
    assert!(log.contains("storage.api-version"), "{log}");
}

/// The unmodified tikv-client in keyspace mode (API V2) over the same
/// split-boundary cases; then API V1 requests, which this cluster refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_v2_cluster_serves_keyspace_clients_across_splits_and_refuses_api_v1() {
    let c = ProcCluster::start(3);
    let ours = atoll_client::RawClient::connect(atoll_client::Config::new(vec![c.pd_addr.clone()]))
        .await
        .unwrap();
    assert_eq!(ours.api_version(), atoll_client::ApiVersion::V2);
    let cfg =
        tikv_client::Config::default().with_default_keyspace().with_timeout(Duration::from_secs(5));
    let client = common::writable_tikv_client(&c, cfg).await;

    let mut live = write_initial(&client).await;
    for k in SPLITS {
        split_at(ours.pd(), &c.pd_addr, &ours.region_key(k), &ours.wire_key(k)).await;
    }
    check_rust_client(&client, "after splits", 2, &mut live).await;
    // The same data through our own client (it speaks the cluster's version).
    let (_, kvs, _) = ours.checksum(b"", b"").await.unwrap();
    assert_eq!(kvs, live.len() as u64);
    assert_eq!(
        ours.scan(b"", b"", 1000).await.unwrap(),
        live.clone().into_iter().collect::<Vec<_>>()
    );

    // tikv-client in its default mode (API V1) gets the documented error.
    let v1 = RawClient::new_with_config(
        vec![c.pd_addr.clone()],
        tikv_client::Config::default().with_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    for key in [b"split-m".to_vec(), b"r\0\0\0split-m".to_vec()] {
        let err = v1.put(key.clone(), b"v1".to_vec()).await.expect_err("V1 write to a V2 cluster");
        assert!(format!("{err:?}").contains("api version not matched"), "{err:?}");
        let err = v1.get(key).await.expect_err("V1 read from a V2 cluster");
        assert!(format!("{err:?}").contains("api version not matched"), "{err:?}");
    }
    // Nothing was written: every value is intact, none is the V1 one.
    let now = ours.scan(b"", b"", 1000).await.unwrap();
    assert_eq!(now, live.clone().into_iter().collect::<Vec<_>>());

    // A V2 request with a non-raw key (key mode) is refused too.
    let r = ours.pd().get_region(&ours.region_key(b"B")).await.unwrap().unwrap();
    let leader = r.leader.clone().unwrap();
    let addr = ours.pd().get_store(leader.store_id).await.unwrap().address;
    let mut raw = TikvClient::connect(format!("http://{addr}")).await.unwrap();
    let ctx = Context {
        region_id: r.region.id,
        region_epoch: r.region.region_epoch,
        peer: Some(leader),
        api_version: 2,
        ..Default::default()
    };
    let put = RawPutRequest {
        context: Some(ctx),
        key: b"x\0\0\0B".to_vec(),
        value: b"txn".to_vec(),
        ..Default::default()
    };
    let resp = raw.raw_put(put).await.unwrap().into_inner();
    assert!(resp.error.contains("key mode not matched"), "{resp:?}");
}
