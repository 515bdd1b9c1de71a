//! Atoll's own transactional client (`atoll_client::TxnClient`) against PD
//! and 3 store processes: snapshot reads, own writes, conflicts, scans
//! over several regions, pessimistic locks, and the resolution of locks
//! that other transactions left behind (committed, abandoned, expired).

use std::time::{Duration, Instant};

use atoll_client::{Error, TxnClient};
use atoll_proto::kvrpcpb;
use atoll_tests::proc::{
    binary, split_txn_keys, txn_wire_key, ProcCluster, TEST_PD_CONFIG, TEST_STORE_CONFIG,
};
use atoll_tests::txn_client::{connect, on_leader, prewrite_on_leader, prewrite_req};

fn v(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

fn keys(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    pairs.iter().map(|(k, _)| String::from_utf8(k.clone()).unwrap()).collect()
}

/// Prewrites `key` as primary of transaction `start_ts` straight on the
/// region's leader and never commits it: an abandoned transaction.
async fn leave_lock(client: &TxnClient, key: &str, start_ts: u64, ttl_ms: u64) {
    let mut req = prewrite_req(key, kvrpcpb::Op::Put, start_ts, ttl_ms);
    req.mutations[0].value = b"abandoned".to_vec();
    let resp = prewrite_on_leader(client, key, req).await;
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_through_atoll_client() {
    let c = ProcCluster::start(3);
    let client = connect(&c).await;
    split_txn_keys(&c, &["g", "n", "t"]).await;

    // Own writes, snapshot isolation, commit visibility.
    let mut t1 = client.begin().await.unwrap();
    t1.put(b"a", b"1").unwrap();
    t1.put(b"h", b"2").unwrap();
    t1.put(b"u", b"3").unwrap();
    assert_eq!(t1.get(b"a").await.unwrap(), v("1"));
    let before = client.begin().await.unwrap();
    let commit_ts = t1.commit().await.unwrap().expect("a commit ts");
    assert!(commit_ts > t1.start_ts());
    assert_eq!(before.get(b"h").await.unwrap(), None, "a snapshot from before the commit");
    let t2 = client.begin().await.unwrap();
    let got = t2.batch_get(&[b"a".to_vec(), b"h".to_vec(), b"zz".to_vec()]).await.unwrap();
    assert_eq!(keys(&got), ["a", "h"]);
    assert_eq!(client.get_at(b"u", commit_ts).await.unwrap(), v("3"));
    assert_eq!(client.get_at(b"u", commit_ts - 1).await.unwrap(), None);

    // Write conflict: the later committer aborts, and wrote nothing.
    let mut x = client.begin().await.unwrap();
    let mut y = client.begin().await.unwrap();
    x.put(b"k", b"x").unwrap();
    y.put(b"k", b"y").unwrap();
    y.put(b"o", b"y").unwrap();
    x.commit().await.unwrap();
    assert!(matches!(y.commit().await, Err(Error::Aborted(_))));
    let r = client.begin().await.unwrap();
    assert_eq!(r.get(b"k").await.unwrap(), v("x"));
    assert_eq!(r.get(b"o").await.unwrap(), None, "an aborted transaction's write is invisible");

    // lock_keys: a read-only key still conflicts.
    let mut reader = client.begin().await.unwrap();
    reader.lock_keys(&[b"a".to_vec()]).await.unwrap();
    reader.put(b"m", b"derived").unwrap();
    let mut w = client.begin().await.unwrap();
    w.put(b"a", b"changed").unwrap();
    w.commit().await.unwrap();
    assert!(matches!(reader.commit().await, Err(Error::Aborted(_))));

    // Deletes and scans across regions, with the transaction's own writes.
    let mut t = client.begin().await.unwrap();
    t.delete(b"h").unwrap();
    for k in ["b", "m", "v"] {
        t.put(k.as_bytes(), k.as_bytes()).unwrap();
    }
    assert_eq!(keys(&t.scan(b"a", b"zz", 100).await.unwrap()), ["a", "b", "k", "m", "u", "v"]);
    t.commit().await.unwrap();
    let r = client.begin().await.unwrap();
    assert_eq!(keys(&r.scan(b"", b"", 100).await.unwrap()), ["a", "b", "k", "m", "u", "v"]);
    assert_eq!(keys(&r.scan(b"b", b"v", 2).await.unwrap()), ["b", "k"]);

    // Rollback writes nothing.
    let mut t = client.begin().await.unwrap();
    t.put(b"gone", b"1").unwrap();
    t.rollback().await.unwrap();
    assert!(t.commit().await.is_err(), "finished");
    assert_eq!(client.begin().await.unwrap().get(b"gone").await.unwrap(), None);

    // Pessimistic: a held lock makes the other transaction wait, then it
    // reads the holder's committed value.
    let mut p1 = client.begin_pessimistic().await.unwrap();
    assert_eq!(p1.get_for_update(b"k").await.unwrap(), v("x"));
    let c2 = client.clone();
    let waiter = tokio::spawn(async move {
        let mut p2 = c2.begin_pessimistic().await.unwrap();
        let seen = p2.get_for_update(b"k").await.unwrap();
        p2.put(b"k", b"p2").unwrap();
        p2.commit().await.unwrap();
        seen
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    p1.put(b"k", b"p1").unwrap();
    p1.commit().await.unwrap();
    assert_eq!(waiter.await.unwrap(), v("p1"));
    assert_eq!(client.begin().await.unwrap().get(b"k").await.unwrap(), v("p2"));

    // atoll-ctl txn: one-shot transactions and reads at a timestamp.
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(binary("atoll-ctl"))
            .args(["--pd", &c.pd_addr, "txn"])
            .args(args)
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let (ok, out) = ctl(&["put", "ctl1", "v1", "ctl2", "v2"]);
    assert!(ok, "{out}");
    let committed: u64 = out.strip_prefix("committed at ").unwrap().parse().unwrap();
    assert_eq!(ctl(&["get", "ctl1"]), (true, "v1".to_owned()));
    assert!(!ctl(&["get", "ctl1", "--ts", &(committed - 1).to_string()]).0, "before the commit");
    assert_eq!(ctl(&["scan", "ctl", "ctm"]), (true, "ctl1\tv1\nctl2\tv2".to_owned()));
    assert!(ctl(&["delete", "ctl1"]).0);
    assert!(!ctl(&["get", "ctl1"]).0);
    assert_eq!(ctl(&["get", "ctl1", "--ts", &committed.to_string()]), (true, "v1".to_owned()));
    assert!(ctl(&["ts"]).1.parse::<u64>().unwrap() > committed);
}

/// Locks of transactions that ended without finishing are resolved by
/// whoever meets them: expired ones rolled back, those whose primary
/// committed are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_and_writers_resolve_left_locks() {
    let c = ProcCluster::start(3);
    let client = connect(&c).await;

    // An abandoned prewrite with a short TTL: a reader waits it out, then
    // rolls it back and sees the previous value.
    let mut t = client.begin().await.unwrap();
    t.put(b"abandoned", b"old").unwrap();
    t.commit().await.unwrap();
    let ts = client.current_ts().await.unwrap();
    leave_lock(&client, "abandoned", ts, 500).await;
    let r = client.begin().await.unwrap();
    assert_eq!(r.get(b"abandoned").await.unwrap(), v("old"));
    // A writer goes through too (the rollback record stays).
    let mut w = client.begin().await.unwrap();
    w.put(b"abandoned", b"new").unwrap();
    w.commit().await.unwrap();
    assert_eq!(client.begin().await.unwrap().get(b"abandoned").await.unwrap(), v("new"));

    // An abandoned pessimistic lock holds off another pessimistic
    // transaction until its TTL passes.
    let mut p = client.begin_pessimistic().await.unwrap();
    p.lock_keys(&[b"plock".to_vec()]).await.unwrap();
    drop(p);
    let started = Instant::now();
    let mut q = client.begin_pessimistic().await.unwrap();
    q.lock_keys(&[b"plock".to_vec()]).await.unwrap();
    q.put(b"plock", b"q").unwrap();
    q.commit().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1000), "waited for the lock's TTL");
    assert_eq!(client.begin().await.unwrap().get(b"plock").await.unwrap(), v("q"));

    // A reader meets a secondary lock whose primary is not prewritten yet
    // (a transaction prewrites its regions in parallel). While that lock
    // lives the reader leaves the primary alone; it used to roll it back
    // (rollback_if_not_exist), and the owner's prewrite of it then failed.
    let start = client.current_ts().await.unwrap();
    let mut sec = prewrite_req("sec", kvrpcpb::Op::Put, start, 2500);
    sec.primary_lock = txn_wire_key(b"prim");
    let resp = prewrite_on_leader(&client, "sec", sec).await;
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    let reader = client.begin().await.unwrap();
    let read = tokio::spawn(async move { reader.get(b"sec").await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!read.is_finished(), "the reader waits for the live lock");
    let resp =
        prewrite_on_leader(&client, "prim", prewrite_req("prim", kvrpcpb::Op::Put, start, 2500));
    let resp = resp.await;
    assert!(resp.errors.is_empty(), "a reader rolled the primary back: {:?}", resp.errors);
    // Never committed: once the TTL passes, the reader rolls it back.
    assert_eq!(read.await.unwrap().unwrap(), None);
    assert_eq!(client.begin().await.unwrap().get(b"prim").await.unwrap(), None);
}

/// A prewrite's CheckNotExists or Insert is a read at its start_ts (TiKV's
/// actions/prewrite.rs: "checkNotExists is equivalent to a get"): it
/// raises the store's max_ts, so a later async-commit or 1PC writer
/// commits above it. Before, neither raised it, and such a writer could
/// commit below the timestamp at which the key was seen missing. And a
/// resent prewrite of a committed 1PC transaction answers its commit ts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prewrite_answers_respect_missing_key_reads_and_earlier_commits() {
    use kvrpcpb::Op;
    // Leader balance off: max_ts is the leader store's, and a new leader
    // syncs it from PD's clock, below the test's timestamps from ahead.
    let pd_toml = format!("{TEST_PD_CONFIG}leader-schedule-limit = 0\n");
    let c = ProcCluster::start_with(3, &pd_toml, TEST_STORE_CONFIG);
    let client = connect(&c).await;
    let mut regions = vec![];
    for k in ["mx-a", "mx-b", "mx-c", "mx-e"] {
        let key = atoll_codec::encode_bytes(&txn_wire_key(k.as_bytes()));
        regions.push(client.pd().get_region(&key).await.unwrap().expect("a region").region.id);
    }
    assert!(
        regions.iter().all(|r| *r == regions[0]),
        "keys in one region (one max_ts): {regions:?}"
    );
    // 10 s ahead of PD's clock: no other read raised max_ts that far.
    let ahead = |ts: u64| ts + (10_000 << 18);

    // CheckNotExists, then an async-commit writer of the same key.
    let seen_missing = ahead(client.current_ts().await.unwrap());
    let r = prewrite_on_leader(
        &client,
        "mx-a",
        prewrite_req("mx-a", Op::CheckNotExists, seen_missing, 3000),
    )
    .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let mut req = prewrite_req("mx-a", Op::Put, client.current_ts().await.unwrap(), 3000);
    req.use_async_commit = true;
    let r = prewrite_on_leader(&client, "mx-a", req).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(
        r.min_commit_ts > seen_missing,
        "async commit at {} <= {seen_missing}",
        r.min_commit_ts
    );

    // Insert (it leaves its lock on mx-b), then a 1PC writer of mx-c.
    let inserted = ahead(client.current_ts().await.unwrap());
    let r =
        prewrite_on_leader(&client, "mx-b", prewrite_req("mx-b", Op::Insert, inserted, 3000)).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let mut one_pc = prewrite_req("mx-c", Op::Put, client.current_ts().await.unwrap(), 3000);
    one_pc.try_one_pc = true;
    let r = prewrite_on_leader(&client, "mx-c", one_pc.clone()).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let committed_at = r.one_pc_commit_ts;
    assert!(committed_at > inserted, "1PC at {committed_at} <= {inserted}");

    // The 1PC request resent after max_ts moved on: it answers the commit
    // ts it wrote, not a fresh one (TiKV's check_committed_record_on_err).
    let later = ahead(client.current_ts().await.unwrap());
    let r =
        prewrite_on_leader(&client, "mx-e", prewrite_req("mx-e", Op::CheckNotExists, later, 3000))
            .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let r = prewrite_on_leader(&client, "mx-c", one_pc).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.one_pc_commit_ts, committed_at, "a resent 1PC prewrite");

    // An async-commit prewrite of only a CheckNotExists answers a commit
    // ts above its start (TiKV: max(min_commit_ts, start_ts + 1)), not 0.
    let start = client.current_ts().await.unwrap();
    let mut req = prewrite_req("mx-d", Op::CheckNotExists, start, 3000);
    req.use_async_commit = true;
    let r = prewrite_on_leader(&client, "mx-d", req).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r.min_commit_ts > start, "min_commit_ts {} for start {start}", r.min_commit_ts);
}

/// Moves the leader of `key`'s region to `store` (PD's admin operator)
/// and waits until PD reports it there.
async fn lead_on(c: &ProcCluster, client: &TxnClient, key: &str, store: u64) {
    let region_key = atoll_codec::encode_bytes(&txn_wire_key(key.as_bytes()));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.pd().get_region(&region_key).await.unwrap().expect("a region");
        if r.leader.as_ref().map(|l| l.store_id) == Some(store) {
            return;
        }
        assert!(Instant::now() < deadline, "{key}'s region never led by store {store}: {r:?}");
        let body = format!(
            r#"{{"name": "transfer-leader", "region_id": {}, "to_store_id": {store}}}"#,
            r.region.id
        );
        let _ = atoll_tests::proc::try_http_post(&c.pd_addr, "/pd/api/v1/operators", &body);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Two pessimistic transactions lock two keys in opposite order: one is
/// refused with `Deadlock` within a second, the other commits. The keys'
/// regions and the first region (where the deadlock detector runs, as in
/// TiKV) are led by three different stores, so both waits travel to the
/// detector. Before, neither wait was detected: both requests waited out
/// their lock and kept retrying until one transaction's TTL ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opposite_lock_orders_end_in_one_deadlock_and_one_commit() {
    // Leader balance off: the leaders stay where the test puts them.
    let pd_toml = format!("{TEST_PD_CONFIG}leader-schedule-limit = 0\n");
    let c = ProcCluster::start_with(3, &pd_toml, TEST_STORE_CONFIG);
    let client = connect(&c).await;
    split_txn_keys(&c, &["g", "n"]).await;
    let stores: Vec<u64> =
        client.pd().get_all_stores().await.unwrap().iter().map(|s| s.id).collect();
    assert_eq!(stores.len(), 3);
    for (key, store) in [("a", stores[0]), ("h", stores[1]), ("p", stores[2])] {
        lead_on(&c, &client, key, store).await;
    }

    let mut t1 = client.begin_pessimistic().await.unwrap();
    let mut t2 = client.begin_pessimistic().await.unwrap();
    t1.lock_keys(&[b"h".to_vec()]).await.unwrap();
    t2.lock_keys(&[b"p".to_vec()]).await.unwrap();
    // t1 waits for t2's lock on p...
    let first = tokio::spawn(async move {
        let r = t1.lock_keys(&[b"p".to_vec()]).await;
        (t1, r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_finished(), "t1 must wait for t2's lock on p");
    // ...and t2 for t1's on h: a cycle.
    let asked = Instant::now();
    let second = t2.lock_keys(&[b"h".to_vec()]).await;
    let answered = asked.elapsed();
    match &second {
        Err(Error::Deadlock(m)) => println!("t2 refused after {answered:?}: {m}"),
        other => panic!("t2 must be refused with Deadlock: {other:?}"),
    }
    assert!(answered < Duration::from_secs(1), "Deadlock within a second: {answered:?}");
    t2.rollback().await.unwrap();
    let (mut t1, r, locked_at) = first.await.unwrap();
    r.unwrap_or_else(|e| panic!("t1 gets p once t2 rolled back: {e}"));
    println!("t1 got p {:?} after t2 was refused", locked_at.duration_since(asked));
    t1.put(b"h", b"t1").unwrap();
    t1.put(b"p", b"t1").unwrap();
    t1.commit().await.unwrap();
    let r = client.begin().await.unwrap();
    assert_eq!((r.get(b"h").await.unwrap(), r.get(b"p").await.unwrap()), (v("t1"), v("t1")));
}

/// A pessimistic lock seen by a reader may be prewritten by the time the
/// reader resolves it; if its primary's pessimistic lock expired
/// meanwhile, CheckTxnStatus releases that without a rollback record, the
/// owner may still prewrite the primary (allowed, as in TiKV) and commit.
/// The reader must then only release a pessimistic lock (PessimisticRollback),
/// never roll back the key: it used to send ResolveLock, which removed the
/// prewrite, and the owner's commit of the key failed while its primary
/// committed — a partial commit, found by the bank-mixed chaos history
/// (seed 703: a transfer's credit lost, the debit and record kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resolved_pessimistic_lock_never_takes_the_prewrite_behind_it() {
    let c = ProcCluster::start(3);
    let client = connect(&c).await;
    let (primary, key) = ("pess-p", "pess-k");
    let (wp, wk) = (txn_wire_key(primary.as_bytes()), txn_wire_key(key.as_bytes()));
    let start = client.current_ts().await.unwrap();
    let for_update_ts = client.current_ts().await.unwrap();
    // The primary's lock lives 300 ms, the other key's a minute.
    for (k, ttl) in [(primary, 300), (key, 60_000)] {
        let req = kvrpcpb::PessimisticLockRequest {
            mutations: vec![kvrpcpb::Mutation {
                op: kvrpcpb::Op::PessimisticLock as i32,
                key: txn_wire_key(k.as_bytes()),
                ..Default::default()
            }],
            primary_lock: wp.clone(),
            start_version: start,
            lock_ttl: ttl,
            for_update_ts,
            ..Default::default()
        };
        let errors = on_leader(&client, k, |mut kv, ctx| {
            let req = kvrpcpb::PessimisticLockRequest { context: Some(ctx), ..req.clone() };
            async move {
                let r = kv.kv_pessimistic_lock(req).await.unwrap().into_inner();
                r.region_error.is_none().then_some(r.errors)
            }
        })
        .await;
        assert!(errors.is_empty(), "lock {k}: {errors:?}");
    }
    // What a reader saw on `key` before its owner prewrote it.
    let seen = kvrpcpb::LockInfo {
        primary_lock: wp.clone(),
        lock_version: start,
        key: wk.clone(),
        lock_ttl: 60_000,
        lock_type: kvrpcpb::Op::PessimisticLock as i32,
        lock_for_update_ts: for_update_ts,
        ..Default::default()
    };
    let prewrite = |k: &str| {
        let mut req = prewrite_req(k, kvrpcpb::Op::Put, start, 60_000);
        req.primary_lock = wp.clone();
        req.for_update_ts = for_update_ts;
        req.pessimistic_actions =
            vec![kvrpcpb::prewrite_request::PessimisticAction::DoPessimisticCheck as i32];
        req
    };
    let resp = prewrite_on_leader(&client, key, prewrite(key)).await;
    assert!(resp.errors.is_empty(), "prewrite {key}: {:?}", resp.errors);
    tokio::time::sleep(Duration::from_millis(700)).await;

    // The primary's lock expired: CheckTxnStatus releases it.
    let caller = client.current_ts().await.unwrap();
    assert!(client.resolve_lock(&seen, caller).await.unwrap(), "the transaction ended");
    // The owner goes on: the primary (no lock, nothing written since its
    // start) is prewritten, then both keys commit.
    let resp = prewrite_on_leader(&client, primary, prewrite(primary)).await;
    assert!(resp.errors.is_empty(), "prewrite {primary}: {:?}", resp.errors);
    let commit_ts = client.current_ts().await.unwrap();
    for (k, w) in [(primary, &wp), (key, &wk)] {
        let error = on_leader(&client, k, |mut kv, ctx| {
            let req = kvrpcpb::CommitRequest {
                context: Some(ctx),
                start_version: start,
                keys: vec![w.clone()],
                commit_version: commit_ts,
            };
            async move {
                let r = kv.kv_commit(req).await.unwrap().into_inner();
                r.region_error.is_none().then_some(r.error)
            }
        })
        .await;
        assert!(error.is_none(), "commit {k}: {error:?} (its prewrite was rolled back)");
    }
    let r = client.begin().await.unwrap();
    assert_eq!(
        (r.get(b"pess-p").await.unwrap(), r.get(b"pess-k").await.unwrap()),
        (v("v"), v("v"))
    );
}
