//! The unmodified `tikv-client` crate (0.4.0) against an Atoll cluster, in
//! API V2 keyspace mode.

mod common;

use std::time::Duration;

use atoll_tests::proc::ProcCluster;
use tikv_client::{Config, KvPair, RawClient};

async fn connect(c: &ProcCluster) -> RawClient {
    let cfg = Config::default().with_default_keyspace().with_timeout(Duration::from_secs(5));
    common::writable_tikv_client(c, cfg).await
}

fn s(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn keys_of(pairs: &[KvPair]) -> Vec<String> {
    pairs.iter().map(|p| s(p.key().into())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tikv_client_raw_api_in_keyspace_mode() {
    let c = ProcCluster::start(3);
    let client = connect(&c).await;

    // put / get / delete
    client.put("k1".to_owned(), "v1".to_owned()).await.unwrap();
    assert_eq!(client.get("k1".to_owned()).await.unwrap(), Some(b"v1".to_vec()));
    assert_eq!(client.get("nope".to_owned()).await.unwrap(), None);
    client.delete("k1".to_owned()).await.unwrap();
    assert_eq!(client.get("k1".to_owned()).await.unwrap(), None);

    // batch put / get / delete
    let pairs: Vec<KvPair> =
        (0..100).map(|i| KvPair::new(format!("b{i:03}"), format!("v{i}"))).collect();
    client.batch_put(pairs).await.unwrap();
    let got =
        client.batch_get((0..100).map(|i| format!("b{i:03}")).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(got.len(), 100);
    client.batch_delete((0..10).map(|i| format!("b{i:03}")).collect::<Vec<_>>()).await.unwrap();
    let got =
        client.batch_get((0..100).map(|i| format!("b{i:03}")).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(got.len(), 90);

    // scan, reverse scan, key-only scan, batch scan
    let fwd = client.scan("b010".to_owned().."b020".to_owned(), 100).await.unwrap();
    let keys: Vec<String> = fwd.iter().map(|p| s(p.key().into())).collect();
    assert_eq!(keys, (10..20).map(|i| format!("b{i:03}")).collect::<Vec<_>>());
    assert_eq!(s(fwd[0].value()), "v10");
    let limited = client.scan("b000".to_owned().., 5).await.unwrap();
    assert_eq!(limited.len(), 5);
    let rev = client.scan_reverse("b010".to_owned().."b020".to_owned(), 3).await.unwrap();
    let rkeys: Vec<String> = rev.iter().map(|p| s(p.key().into())).collect();
    assert_eq!(rkeys, vec!["b019", "b018", "b017"]);
    let only_keys = client.scan_keys("b050".to_owned().."b053".to_owned(), 10).await.unwrap();
    assert_eq!(only_keys.len(), 3);
    let multi = client
        .batch_scan(
            vec!["b010".to_owned().."b012".to_owned(), "b090".to_owned().."b092".to_owned()],
            10,
        )
        .await
        .unwrap();
    assert_eq!(multi.len(), 4);
    // The limit is per range (each_limit), not for the whole batch.
    let per_range = client
        .batch_scan(
            vec!["b010".to_owned().."b015".to_owned(), "b030".to_owned().."b035".to_owned()],
            2,
        )
        .await
        .unwrap();
    assert_eq!(keys_of(&per_range), ["b010", "b011", "b030", "b031"]);

    // delete_range
    client.delete_range("b020".to_owned().."b030".to_owned()).await.unwrap();
    let after = client.scan("b000".to_owned().."b100".to_owned(), 200).await.unwrap();
    assert_eq!(after.len(), 80);
    assert!(after.iter().all(|p| {
        let k = s(p.key().into());
        !("b020".."b030").contains(&k.as_str())
    }));

    // TTL
    client.put_with_ttl("ttl".to_owned(), "x".to_owned(), 100).await.unwrap();
    let ttl = client.get_key_ttl_secs("ttl".to_owned()).await.unwrap().unwrap();
    assert!((95..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(client.get_key_ttl_secs("missing".to_owned()).await.unwrap(), None);

    // Compare-and-swap (atomic mode)
    let atomic = client.with_atomic_for_cas();
    let (prev, ok) =
        atomic.compare_and_swap("cas".to_owned(), None::<Vec<u8>>, "a".to_owned()).await.unwrap();
    assert!(ok && prev.is_none());
    let (prev, ok) = atomic
        .compare_and_swap("cas".to_owned(), Some(b"zzz".to_vec()), "b".to_owned())
        .await
        .unwrap();
    assert!(!ok);
    assert_eq!(prev, Some(b"a".to_vec()));
    let (_, ok) = atomic
        .compare_and_swap("cas".to_owned(), Some(b"a".to_vec()), "b".to_owned())
        .await
        .unwrap();
    assert!(ok);
    assert_eq!(atomic.get("cas".to_owned()).await.unwrap(), Some(b"b".to_vec()));

    // Our own client speaks the cluster's API version (V2: the DEFAULT
    // keyspace), so it sees the same data under the same keys.
    let ours = atoll_client::RawClient::connect(atoll_client::Config::new(vec![c.pd_addr.clone()]))
        .await
        .unwrap();
    assert_eq!(ours.api_version(), atoll_client::ApiVersion::V2);
    assert_eq!(ours.get(b"b050").await.unwrap(), Some(b"v50".to_vec()));
    assert_eq!(ours.get(b"r\0\0\0b050").await.unwrap(), None);
}

/// Regions split under tikv-client's feet (tiny split thresholds: entries
/// of ~24 bytes, a split about every 40 keys): its
/// region cache must follow EpochNotMatch / region errors, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tikv_client_keeps_working_across_splits() {
    let store_cfg = format!(
        "{}{}",
        atoll_tests::proc::TEST_STORE_CONFIG,
        r#"
region-max-size = "1440B"
region-split-size = "960B"
region-split-check-diff = "1KiB"
split-region-check-tick-interval = "100ms"
"#
    );
    let c = ProcCluster::start_with(3, atoll_tests::proc::TEST_PD_CONFIG, &store_cfg);
    let client = connect(&c).await;
    const N: usize = 1500;
    for chunk in (0..N).collect::<Vec<_>>().chunks(50) {
        let pairs: Vec<KvPair> =
            chunk.iter().map(|i| KvPair::new(format!("s{i:05}"), format!("v{i}"))).collect();
        client.batch_put(pairs).await.expect("batch put across splits");
    }
    for i in (0..N).step_by(7) {
        client.put(format!("s{i:05}"), format!("w{i}")).await.expect("put across splits");
    }
    let regions = atoll_tests::proc::http_get(&c.pd_addr, "/pd/api/v1/regions").unwrap();
    let count =
        serde_json::from_str::<serde_json::Value>(&regions).unwrap()["count"].as_u64().unwrap();
    assert!(count >= 20, "expected many splits, PD has {count} regions");
    let got =
        client.batch_get((0..N).map(|i| format!("s{i:05}")).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(got.len(), N);
    let all = client.scan("s".to_owned().."t".to_owned(), (N + 1) as u32).await.unwrap();
    assert_eq!(all.len(), N);
    for (i, p) in all.iter().enumerate() {
        let want = if i % 7 == 0 { format!("w{i}") } else { format!("v{i}") };
        assert_eq!((s(p.key().into()), s(p.value())), (format!("s{i:05}"), want));
    }
}
