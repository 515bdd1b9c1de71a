//! The commit modes real clients use, through Atoll's own client against
//! PD and 3 store processes: 1PC (one request commits), async commit
//! (committed once every prewrite succeeded), their fallbacks to two
//! phases, an abandoned async-commit transaction settled by a reader from
//! its keys (CheckSecondaryLocks), and lock heartbeats that keep a slow
//! transaction alive past its lock TTL. Each mode is confirmed from the
//! stores' `atoll_txn_prewrites_total`, so a client that quietly fell
//! back to two phases fails here.

use std::time::{Duration, Instant};

use atoll_client::{TxnClient, TxnOptions, LOCK_TTL_MS};
use atoll_proto::kvrpcpb;
use atoll_tests::proc::{binary, http_get, split_txn_keys, txn_wire_key, ProcCluster};
use atoll_tests::txn_client::{connect, prewrite_on_leader, prewrite_req};

fn v(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

/// Prewrite requests the stores wrote, by kind, summed over the stores.
fn prewrites(c: &ProcCluster) -> [u64; 3] {
    let mut n = [0; 3];
    for i in 0..c.store_count() {
        let metrics = http_get(c.status_addr(i), "/metrics").expect("store metrics");
        for line in metrics.lines() {
            let Some(rest) = line.strip_prefix("atoll_txn_prewrites_total{kind=\"") else {
                continue;
            };
            let (kind, value) = rest.split_once("\"} ").expect("a sample line");
            let slot = match kind {
                "two_phase" => 0,
                "async_commit" => 1,
                "one_pc" => 2,
                other => panic!("unknown prewrite kind {other}"),
            };
            n[slot] += value.trim().parse::<u64>().expect("a count");
        }
    }
    n
}

/// Commits `pairs` in one transaction of `options`; its commit ts and the
/// prewrites the stores wrote for it by kind (two phase, async, 1PC).
async fn commit(
    c: &ProcCluster,
    client: &TxnClient,
    options: TxnOptions,
    pairs: &[(&str, &str)],
) -> (u64, [u64; 3]) {
    let before = prewrites(c);
    let mut t = client.begin_with(options).await.unwrap();
    for (k, val) in pairs {
        t.put(k.as_bytes(), val.as_bytes()).unwrap();
    }
    let ts = t.commit().await.unwrap().expect("a commit ts");
    assert!(ts > t.start_ts(), "commit ts {ts} after start ts {}", t.start_ts());
    let after = prewrites(c);
    (ts, [0, 1, 2].map(|i| after[i] - before[i]))
}

/// Every key reads back its value in a transaction that begins after the
/// commit returned, and is missing just below the commit ts.
async fn assert_committed(client: &TxnClient, ts: u64, pairs: &[(&str, &str)]) {
    let r = client.begin().await.unwrap();
    for (k, val) in pairs {
        assert_eq!(r.get(k.as_bytes()).await.unwrap(), v(val), "{k} after the commit");
        assert_eq!(client.get_at(k.as_bytes(), ts).await.unwrap(), v(val), "{k} at {ts}");
        let below = client.get_at(k.as_bytes(), ts - 1).await.unwrap();
        assert_ne!(below, v(val), "{k} is not visible below its commit ts");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_pc_and_async_commit_commit_in_the_mode_asked() {
    let c = ProcCluster::start(3);
    let client = connect(&c).await;
    split_txn_keys(&c, &["m"]).await;

    // 1PC: both keys in one region, so one request commits them.
    let pairs = [("a1", "1pc"), ("a2", "1pc")];
    let (ts, kinds) = commit(&c, &client, TxnOptions::optimistic().try_one_pc(), &pairs).await;
    assert_eq!(kinds, [0, 0, 1], "one 1PC prewrite");
    assert_committed(&client, ts, &pairs).await;

    // 1PC asked, but the keys span two regions: two phases.
    let pairs = [("b", "2pc"), ("y", "2pc")];
    let (ts, kinds) = commit(&c, &client, TxnOptions::optimistic().try_one_pc(), &pairs).await;
    assert_eq!(kinds, [2, 0, 0], "two two-phase prewrites");
    assert_committed(&client, ts, &pairs).await;

    // Async commit over two regions.
    let pairs = [("c", "async"), ("z", "async")];
    let options = TxnOptions::optimistic().use_async_commit();
    let (ts, kinds) = commit(&c, &client, options, &pairs).await;
    assert_eq!(kinds, [0, 2, 0], "two async-commit prewrites");
    assert_committed(&client, ts, &pairs).await;

    // Async commit overwriting what it read, pessimistically locked first.
    let mut t = client.begin_with(TxnOptions::pessimistic().use_async_commit()).await.unwrap();
    assert_eq!(t.get_for_update(b"c").await.unwrap(), v("async"));
    t.put(b"c", b"pessimistic").unwrap();
    t.put(b"x", b"pessimistic").unwrap();
    let ts = t.commit().await.unwrap().expect("a commit ts");
    assert_committed(&client, ts, &[("c", "pessimistic"), ("x", "pessimistic")]).await;

    // 1PC and async commit both asked, one region: 1PC wins.
    let options = TxnOptions::optimistic().use_async_commit().try_one_pc();
    let (ts, kinds) = commit(&c, &client, options, &[("d", "both")]).await;
    assert_eq!(kinds, [0, 0, 1], "one 1PC prewrite");
    assert_committed(&client, ts, &[("d", "both")]).await;

    // atoll-ctl txn put/delete --1pc / --async-commit.
    let ctl = |args: &[&str]| {
        let before = prewrites(&c);
        let out = std::process::Command::new(binary("atoll-ctl"))
            .args(["--pd", &c.pd_addr, "txn"])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success(),
            "{args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ts: u64 = stdout.strip_prefix("committed at ").unwrap().parse().unwrap();
        let after = prewrites(&c);
        (ts, [0, 1, 2].map(|i| after[i] - before[i]))
    };
    let (ts, kinds) = ctl(&["put", "--1pc", "e1", "ctl", "e2", "ctl"]);
    assert_eq!(kinds, [0, 0, 1], "atoll-ctl --1pc");
    assert_committed(&client, ts, &[("e1", "ctl"), ("e2", "ctl")]).await;
    let (ts, kinds) = ctl(&["put", "--async-commit", "e3", "ctl", "x3", "ctl"]);
    assert_eq!(kinds, [0, 2, 0], "atoll-ctl --async-commit");
    assert_committed(&client, ts, &[("e3", "ctl"), ("x3", "ctl")]).await;
    let (_, kinds) = ctl(&["delete", "--async-commit", "--1pc", "e1", "e2"]);
    assert_eq!(kinds, [0, 0, 1], "atoll-ctl delete --1pc");
    assert_eq!(client.begin().await.unwrap().get(b"e1").await.unwrap(), None);
}

/// Prewrites `key` for the async-commit transaction `start_ts` whose
/// primary is `primary` (listing `secondaries`), straight on the leader,
/// with a short TTL, and never commits: a client that crashed.
async fn leave_async_lock(
    client: &TxnClient,
    key: &str,
    primary: &str,
    secondaries: &[&str],
    start_ts: u64,
) -> kvrpcpb::PrewriteResponse {
    let mut req = prewrite_req(key, kvrpcpb::Op::Put, start_ts, 300);
    req.primary_lock = txn_wire_key(primary.as_bytes());
    req.use_async_commit = true;
    if key == primary {
        req.secondaries = secondaries.iter().map(|s| txn_wire_key(s.as_bytes())).collect();
    }
    prewrite_on_leader(client, key, req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_settle_abandoned_async_commit_transactions_from_their_keys() {
    let c = ProcCluster::start(3);
    let client = connect(&c).await;
    split_txn_keys(&c, &["m"]).await;

    // Every key prewritten: the transaction is committed (at the largest
    // min_commit_ts), though its client never said so.
    let start = client.current_ts().await.unwrap();
    for key in ["ap", "zs"] {
        let resp = leave_async_lock(&client, key, "ap", &["zs"], start).await;
        assert!(resp.errors.is_empty(), "{:?}", resp.errors);
        assert!(resp.min_commit_ts > start, "an async-commit answer: {resp:?}");
    }
    let r = client.begin().await.unwrap();
    assert_eq!(r.get(b"zs").await.unwrap(), v("v"), "a reader of a secondary commits it all");
    assert_eq!(r.get(b"ap").await.unwrap(), v("v"));

    // The secondary's prewrite never arrived: rolled back, and the late
    // prewrite is refused (the check left a rollback record), so the
    // transaction can never become committed.
    let start = client.current_ts().await.unwrap();
    let resp = leave_async_lock(&client, "bp", "bp", &["ys"], start).await;
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    let r = client.begin().await.unwrap();
    assert_eq!(r.get(b"bp").await.unwrap(), None, "a missing secondary rolls it back");
    let late = leave_async_lock(&client, "ys", "bp", &[], start).await;
    assert!(!late.errors.is_empty(), "a prewrite after the rollback must fail: {late:?}");
    let r = client.begin().await.unwrap();
    assert_eq!((r.get(b"bp").await.unwrap(), r.get(b"ys").await.unwrap()), (None, None));
}

/// A pessimistic transaction that runs twice its lock TTL keeps its lock
/// (the heartbeat) and commits; another transaction waiting for the key
/// gets it only after. Without heartbeats the waiter rolls the lock back
/// once the TTL passes, and the slow transaction's commit fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_keep_a_slow_transaction_alive() {
    let c = ProcCluster::start(3);
    let client = connect(&c).await;
    let mut slow = client.begin_pessimistic().await.unwrap();
    slow.lock_keys(&[b"hb".to_vec()]).await.unwrap();

    let other = client.clone();
    let waiter = tokio::spawn(async move {
        let mut t = other.begin_pessimistic().await.unwrap();
        t.lock_keys(&[b"hb".to_vec()]).await.unwrap();
        let locked_at = Instant::now();
        t.put(b"hb", b"waiter").unwrap();
        t.commit().await.unwrap();
        locked_at
    });
    tokio::time::sleep(Duration::from_millis(2 * LOCK_TTL_MS)).await;
    assert!(!waiter.is_finished(), "the waiter got the key while its owner ran");
    slow.put(b"hb", b"slow").unwrap();
    let committing = Instant::now();
    slow.commit().await.expect("the slow transaction kept its lock");
    let locked_at = waiter.await.unwrap();
    assert!(locked_at >= committing, "the waiter locked the key only after the commit");
    assert_eq!(client.begin().await.unwrap().get(b"hb").await.unwrap(), v("waiter"));
}
