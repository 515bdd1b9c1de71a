//! Transactions through the unmodified `tikv-client` 0.4.0
//! `TransactionClient` (API V2 keyspace mode) against PD + 3 store
//! processes: optimistic and pessimistic 2PC, async commit, 1PC,
//! conflicts, scans over several regions, lock cleanup and GC, and
//! UnsafeDestroyRange.

use std::time::{Duration, Instant};

use atoll_tests::proc::{split_txn_keys, ProcCluster};
use tikv_client::{Config, TransactionClient, TransactionOptions};

async fn connect(c: &ProcCluster) -> TransactionClient {
    let cfg = Config::default().with_default_keyspace().with_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match TransactionClient::new_with_config(vec![c.pd_addr.clone()], cfg.clone()).await {
            Ok(cl) => return cl,
            Err(e) => assert!(Instant::now() < deadline, "no client: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client once a committed write reads back (not merely once a commit
/// returned Ok: see `a_commit_right_after_cluster_start_is_durable`).
async fn txn_client(c: &ProcCluster) -> TransactionClient {
    let cl = connect(c).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut t) = cl.begin_optimistic().await {
            if t.put("0-ready".to_owned(), "1".to_owned()).await.is_ok() && t.commit().await.is_ok()
            {
                let mut r = cl.begin_optimistic().await.unwrap();
                let back = r.get("0-ready".to_owned()).await;
                r.rollback().await.unwrap();
                if matches!(back, Ok(Some(_))) {
                    return cl;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no transaction went through; pd log:\n{}",
            c.log("pd.log")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn s(v: Option<Vec<u8>>) -> Option<String> {
    v.map(|v| String::from_utf8(v).unwrap())
}

fn keys_of(pairs: impl IntoIterator<Item = tikv_client::KvPair>) -> Vec<String> {
    pairs.into_iter().map(|p| String::from_utf8(Vec::from(p.0)).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_through_tikv_client() {
    let c = ProcCluster::start(3);
    let client = txn_client(&c).await;
    split_txn_keys(&c, &["g", "n", "t"]).await;

    // Optimistic 2PC: own writes visible, others' only once committed and
    // only to snapshots after the commit.
    let mut t1 = client.begin_optimistic().await.unwrap();
    t1.put("a".to_owned(), "1".to_owned()).await.unwrap();
    t1.put("h".to_owned(), "2".to_owned()).await.unwrap();
    t1.put("u".to_owned(), "x".repeat(1000)).await.unwrap();
    assert_eq!(s(t1.get("a".to_owned()).await.unwrap()).as_deref(), Some("1"));
    let mut before = client.begin_optimistic().await.unwrap();
    assert_eq!(before.get("a".to_owned()).await.unwrap(), None);
    t1.commit().await.unwrap();
    assert_eq!(before.get("h".to_owned()).await.unwrap(), None, "snapshot from before the commit");
    before.rollback().await.unwrap();
    let mut t2 = client.begin_optimistic().await.unwrap();
    assert_eq!(s(t2.get("h".to_owned()).await.unwrap()).as_deref(), Some("2"));
    assert_eq!(s(t2.get("u".to_owned()).await.unwrap()), Some("x".repeat(1000)));
    let got = t2.batch_get(vec!["a".to_owned(), "h".to_owned(), "zz".to_owned()]).await.unwrap();
    let mut got = keys_of(got);
    got.sort(); // regions answer in any order
    assert_eq!(got, ["a", "h"]);
    t2.rollback().await.unwrap();

    // Write conflict: the later committer of two concurrent writers fails.
    let mut x = client.begin_optimistic().await.unwrap();
    let mut y = client.begin_optimistic().await.unwrap();
    x.put("k".to_owned(), "x".to_owned()).await.unwrap();
    y.put("k".to_owned(), "y".to_owned()).await.unwrap();
    x.commit().await.unwrap();
    assert!(y.commit().await.is_err(), "y started before x committed");
    // Insert of an existing key.
    let mut t = client.begin_optimistic().await.unwrap();
    t.insert("a".to_owned(), "again".to_owned()).await.unwrap();
    assert!(t.commit().await.is_err());

    // Deletes and scans across regions, forward and reverse.
    let mut t = client.begin_optimistic().await.unwrap();
    t.delete("h".to_owned()).await.unwrap();
    for k in ["b", "m", "o", "v"] {
        t.put(k.to_owned(), k.to_owned()).await.unwrap();
    }
    t.commit().await.unwrap();
    let mut r = client.begin_optimistic().await.unwrap();
    let all = r.scan("a".to_owned().."zz".to_owned(), 100).await.unwrap();
    assert_eq!(keys_of(all), ["a", "b", "k", "m", "o", "u", "v"]);
    let rev = r.scan_reverse("b".to_owned().."v".to_owned(), 3).await.unwrap();
    assert_eq!(keys_of(rev), ["u", "o", "m"]);
    r.rollback().await.unwrap();

    // Pessimistic: a locked key holds off another transaction until the
    // holder commits.
    let mut p1 = client.begin_pessimistic().await.unwrap();
    assert_eq!(s(p1.get_for_update("k".to_owned()).await.unwrap()).as_deref(), Some("x"));
    let mut p2 = client.begin_pessimistic().await.unwrap();
    assert!(p2.get_for_update("k".to_owned()).await.is_err(), "k is locked by p1");
    p2.rollback().await.unwrap();
    assert!(p1.send_heart_beat().await.unwrap() > 0);
    p1.put("k".to_owned(), "p1".to_owned()).await.unwrap();
    p1.commit().await.unwrap();
    let mut p3 = client.begin_pessimistic().await.unwrap();
    assert_eq!(s(p3.get_for_update("k".to_owned()).await.unwrap()).as_deref(), Some("p1"));
    p3.rollback().await.unwrap();

    // Async commit and 1PC.
    let mut t = client
        .begin_with_options(TransactionOptions::new_optimistic().use_async_commit())
        .await
        .unwrap();
    for k in ["ac1", "hc2", "uc3"] {
        t.put(k.to_owned(), "async".to_owned()).await.unwrap();
    }
    t.commit().await.unwrap();
    let mut t =
        client.begin_with_options(TransactionOptions::new_optimistic().try_one_pc()).await.unwrap();
    t.put("one".to_owned(), "pc".to_owned()).await.unwrap();
    t.commit().await.unwrap();
    let mut r = client.begin_optimistic().await.unwrap();
    let got = r
        .batch_get(vec!["ac1".to_owned(), "hc2".to_owned(), "uc3".to_owned(), "one".to_owned()])
        .await
        .unwrap();
    assert_eq!(got.count(), 4);
    r.rollback().await.unwrap();

    // A large transaction over every region; secondaries commit after the
    // call returns, so readers meet their locks and resolve them.
    let mut t = client.begin_optimistic().await.unwrap();
    for i in 0..400u32 {
        t.put(format!("big{:03}{}", i, ["a", "h", "o", "u"][i as usize % 4]), "v".repeat(300))
            .await
            .unwrap();
    }
    t.commit().await.unwrap();
    let mut r = client.begin_optimistic().await.unwrap();
    assert_eq!(r.scan("big".to_owned().."bih".to_owned(), 1000).await.unwrap().count(), 400);
    r.rollback().await.unwrap();

    // GC: no locks left below now, and PD takes the safe point.
    let now = client.current_timestamp().await.unwrap();
    assert!(client.gc(now.clone()).await.unwrap());
    assert!(client.scan_locks(&now, .., 1000).await.unwrap().is_empty());

    // UnsafeDestroyRange removes versions and locks on every store.
    client.unsafe_destroy_range("big".to_owned().."bih".to_owned()).await.unwrap();
    let mut r = client.begin_optimistic().await.unwrap();
    assert_eq!(r.scan("big".to_owned().."bih".to_owned(), 1000).await.unwrap().count(), 0);
    assert_eq!(s(r.get("a".to_owned()).await.unwrap()).as_deref(), Some("1"), "outside the range");
    r.rollback().await.unwrap();
}

/// A transaction committed by a client that connected before the stores
/// bootstrapped the cluster is durable. tikv-client 0.4's prewrite and
/// commit return Ok having sent nothing when PD knows no region for a key,
/// so PD's region lookups wait for the cluster to be bootstrapped (and
/// for a region to cover the key); before that wait, this commit "succeeded"
/// and the key read back as missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_right_after_cluster_start_is_durable() {
    let c = ProcCluster::start(3);
    let client = connect(&c).await;
    let mut t = client.begin_optimistic().await.unwrap();
    t.put("early".to_owned(), "1".to_owned()).await.unwrap();
    t.commit().await.unwrap();
    split_txn_keys(&c, &["g", "n", "t"]).await;
    let mut r = client.begin_optimistic().await.unwrap();
    assert_eq!(s(r.get("early".to_owned()).await.unwrap()).as_deref(), Some("1"));
    r.rollback().await.unwrap();
}
