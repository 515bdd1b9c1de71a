//! `TxnStorage` over three simulated stores: the memory lock table (a
//! prewrite whose raft write never commits, because the leader's log
//! appends are dropped, keeps its memory locks, and every read that could
//! miss its commit must see them), the bound on `max_ts`, and the locks a
//! read may pass by.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_codec::api::ApiVersion;
use atoll_engine_memory::MemoryEngine;
use atoll_proto::kvrpcpb;
use atoll_raftstore::Config;
use atoll_server::config::PessimisticTxnConfig;
use atoll_server::lock_manager::LockManager;
use atoll_server::txn::PessimisticLockArgs;
use atoll_server::txn::{Error, PrewriteArgs, RawMutation, TsoSource, TxnStorage};
use atoll_tests::sim::{wait_until, Cluster};
use atoll_txn::actions::{PessimisticAction, PessimisticLockProps, PrewriteProps};
use atoll_txn::Op;

const WAIT: Duration = Duration::from_secs(15);
/// The simulated PD's clock starts here.
const PD_TS: u64 = 1 << 40;

/// An API V2 transactional key (keyspace 0).
fn k(s: &[u8]) -> Vec<u8> {
    [&b"x\0\0\0"[..], s].concat()
}

/// Its region key.
fn enc(s: &[u8]) -> Vec<u8> {
    atoll_codec::encode_bytes(&k(s))
}

fn counter_tso() -> TsoSource {
    let ts = Arc::new(AtomicU64::new(PD_TS));
    Arc::new(move || {
        let t = ts.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move { Ok(t) })
    })
}

/// The context of a request to the leader (on `store`) of `key`'s region.
fn ctx(c: &Cluster<MemoryEngine>, store: u64, key: &[u8]) -> kvrpcpb::Context {
    let region = c.region_for_key(&enc(key));
    kvrpcpb::Context {
        region_id: region.id,
        region_epoch: region.region_epoch.clone(),
        peer: region.peers.iter().find(|p| p.store_id == store).cloned(),
        api_version: kvrpcpb::ApiVersion::V2 as i32,
        ..Default::default()
    }
}

fn async_commit_put(key: &[u8], start_ts: u64) -> PrewriteArgs {
    PrewriteArgs {
        props: PrewriteProps {
            start_ts,
            primary: k(key),
            lock_ttl: 60_000,
            use_async_commit: true,
            ..Default::default()
        },
        mutations: vec![RawMutation {
            op: Op::Put,
            key: k(key),
            value: b"v".to_vec(),
            action: PessimisticAction::SkipPessimisticCheck,
        }],
        secondaries: vec![],
        try_one_pc: false,
    }
}

fn is_locked<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Mvcc(atoll_txn::Error::KeyIsLocked(_))))
}

/// Three stores, regions A = [.., m) and B = [m, ..) led by one store,
/// and a `TxnStorage` on it with a runtime to drive it.
struct Env {
    c: Cluster<MemoryEngine>,
    leader: u64,
    txn: Arc<TxnStorage<MemoryEngine>>,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new() -> Env {
        Env::with_locks(atoll_server::Config::default().pessimistic_txn)
    }

    fn with_locks(locks: PessimisticTxnConfig) -> Env {
        let mut c =
            Cluster::new(Config::for_tests(), (0..3).map(|_| MemoryEngine::new()).collect());
        c.start_all();
        let leader = c.leader_store(&enc(b"a"));
        c.split(&enc(b"a"), &enc(b"m")).unwrap();
        // Both halves: the split-off region [.., m) (holding "a") elects its
        // own leader after the split, and a request before that fails.
        let both_led = || [b"a", b"p"].iter().all(|key| c.leader_store(&enc(*key)) == leader);
        assert!(wait_until(WAIT, both_led), "one leader store for both regions");
        let txn = Arc::new(TxnStorage::new(
            c.handle(leader).unwrap(),
            c.engines[&leader].clone(),
            &atoll_server::Config::default().server,
            ApiVersion::V2,
            counter_tso(),
            LockManager::local(&locks),
        ));
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
        Env { c, leader, txn, rt: rt.unwrap() }
    }

    fn ctx(&self, key: &[u8]) -> kvrpcpb::Context {
        ctx(&self.c, self.leader, key)
    }

    fn get(&self, ctx: &kvrpcpb::Context, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>, Error> {
        self.rt.block_on(self.txn.get(ctx, &k(key), ts))
    }

    fn prewrite(
        &self,
        key: &[u8],
        args: PrewriteArgs,
    ) -> Result<atoll_server::txn::PrewriteOutcome, Error> {
        self.rt.block_on(self.txn.prewrite(&self.ctx(key), args))
    }

    /// Prewrites and commits `key = value` (two-phase, optimistic).
    fn put(&self, key: &[u8], value: &[u8], start_ts: u64, commit_ts: u64) {
        self.prewrite(key, two_pc_put(key, value, start_ts)).unwrap();
        let ctx = self.ctx(key);
        self.rt.block_on(self.txn.commit(&ctx, &[k(key)], start_ts, commit_ts)).unwrap();
    }

    /// `put`, again while the region's leader is still being elected
    /// (a region just split off).
    fn put_when_led(&self, key: &[u8], value: &[u8], start_ts: u64, commit_ts: u64) {
        let deadline = Instant::now() + WAIT;
        while let Err(e) = self.prewrite(key, two_pc_put(key, value, start_ts)) {
            assert!(Instant::now() < deadline, "no leader for {key:?}: {e:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let ctx = self.ctx(key);
        self.rt.block_on(self.txn.commit(&ctx, &[k(key)], start_ts, commit_ts)).unwrap();
    }

    fn stop(self) {
        self.c.heal();
        drop(self.rt);
        let mut c = self.c;
        c.shutdown();
    }
}

fn two_pc_put(key: &[u8], value: &[u8], start_ts: u64) -> PrewriteArgs {
    let mut a = async_commit_put(key, start_ts);
    a.props.use_async_commit = false;
    a.mutations[0].value = value.to_vec();
    a
}

fn one_pc_put(key: &[u8], start_ts: u64) -> PrewriteArgs {
    let mut a = two_pc_put(key, b"v", start_ts);
    a.try_one_pc = true;
    a
}

fn refused_as_too_far_ahead<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(e) if e.to_string().contains("invalid max_ts update"))
}

/// Region A = [.., m), region B = [m, ..), both led by one store whose
/// appends are dropped, and an async-commit prewrite in flight on `a` and
/// on `p`: both keys have memory locks and nothing in the engine.
#[test]
fn scans_see_every_memory_lock_inside_the_region() {
    let env = Env::new();
    let (c, leader, txn, rt) = (&env.c, env.leader, &env.txn, &env.rt);
    let (ctx_a, ctx_p) = (env.ctx(b"a"), env.ctx(b"p"));
    assert_ne!(ctx_a.region_id, ctx_p.region_id);
    // Both leaders commit in their current term first: a read index waits
    // for that, and with appends dropped it could never happen (seen: a
    // probe that timed out when a region's term entry was not committed).
    for key in [b"b", b"q"] {
        env.put_when_led(key, b"settled", 2, 3);
    }
    c.drop_appends_from(leader);
    for (key, ctx) in [(b"a", &ctx_a), (b"p", &ctx_p)] {
        let (txn, ctx) = (txn.clone(), ctx.clone());
        rt.spawn(async move { txn.prewrite(&ctx, async_commit_put(key, 10)).await });
    }
    // Wait for both memory locks. The probe reads at u64::MAX, which
    // leaves max_ts alone: a probe at the read ts below would raise it,
    // and a prewrite after the probe would then commit above that ts.
    let deadline = Instant::now() + WAIT;
    for (key, ctx) in [(b"a", &ctx_a), (b"p", &ctx_p)] {
        loop {
            let r = rt.block_on(txn.get(ctx, &k(key), u64::MAX));
            if is_locked(&r) {
                break;
            }
            assert!(Instant::now() < deadline, "no memory lock on {key:?}: {r:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    assert_eq!(c.engine_get(leader, &enc(b"p")), None, "the prewrite must still be in flight");
    let read_ts = PD_TS + (1 << 30); // above the locks' min_commit_ts, near PD's clock

    // A scan of B from before B's start: A's lock comes first in the
    // table and lies outside B; p's lock must still block the scan.
    let out = rt.block_on(txn.scan(&ctx_p, &k(b""), &[], 10, false, false, read_ts)).unwrap();
    assert!(
        matches!(out.as_slice(), [(key, Err(atoll_txn::Error::KeyIsLocked(_)))] if *key == k(b"p")),
        "the memory lock on p must block the scan: {out:?}"
    );
    // A reverse scan of A over a range reaching past A.
    let out = rt.block_on(txn.scan(&ctx_a, &[], &k(b""), 10, false, true, read_ts)).unwrap();
    assert!(
        matches!(out.as_slice(), [(key, Err(atoll_txn::Error::KeyIsLocked(_)))] if *key == k(b"a")),
        "the memory lock on a must block the reverse scan: {out:?}"
    );
    // ScanLock checks memory locks too (TiKV's Storage::scan_lock): the
    // lock is not in the engine yet, and GC must not pass it by.
    let r = rt.block_on(txn.scan_lock(&ctx_p, read_ts, &k(b""), &[], 10));
    assert!(is_locked(&r), "scan_lock over a memory lock: {r:?}");
    // A read below the locks' ts is not blocked.
    let out = rt.block_on(txn.scan(&ctx_p, &k(b""), &[], 10, false, false, 5)).unwrap();
    assert_eq!(out, vec![(k(b"q"), Ok(b"settled".to_vec()))]);
    env.stop();
}

/// A read or lock timestamp far ahead of PD's clock is refused (TiKV's
/// ConcurrencyManager::update_max_ts with its max_ts_limit): accepted, it
/// would push every later async-commit and 1PC commit up to it. And a
/// timestamp at the top of the range cannot overflow a prewrite's floor.
#[test]
fn timestamps_far_ahead_of_pd_are_refused() {
    let env = Env::new();
    let ahead = u64::MAX - 1;
    let r = env.get(&env.ctx(b"a"), b"a", ahead);
    assert!(refused_as_too_far_ahead(&r), "a read at {ahead}: {r:?}");
    let r = env.rt.block_on(env.txn.scan_lock(&env.ctx(b"a"), ahead, &k(b""), &[], 10));
    assert!(refused_as_too_far_ahead(&r), "scan_lock at {ahead}: {r:?}");
    let lock = PessimisticLockArgs {
        props: PessimisticLockProps {
            start_ts: 20,
            primary: k(b"c"),
            lock_ttl: 3000,
            for_update_ts: ahead,
            min_commit_ts: 0,
            need_value: false,
        },
        wait_timeout: -1,
        keys: vec![(k(b"c"), false)],
    };
    let r = env.rt.block_on(env.txn.pessimistic_lock(&env.ctx(b"c"), lock));
    assert!(refused_as_too_far_ahead(&r), "a lock at for_update_ts {ahead}: {r:?}");

    // Later commits still take their timestamps near PD's clock.
    let bound = PD_TS + (120_000 << 18);
    let out = env.prewrite(b"a", async_commit_put(b"a", 10)).unwrap();
    assert!(out.min_commit_ts > 10 && out.min_commit_ts < bound, "async commit: {out:?}");
    let out = env.prewrite(b"b", one_pc_put(b"b", 11)).unwrap();
    let commit_ts = out.one_pc_commit_ts;
    assert!(commit_ts > 11 && commit_ts < bound, "1PC: {out:?}");
    assert_eq!(env.get(&env.ctx(b"b"), b"b", commit_ts).unwrap(), Some(b"v".to_vec()));

    // start_ts at the top: refused, not wrapped (the floor is start_ts + 1).
    let r = env.prewrite(b"d", async_commit_put(b"d", u64::MAX));
    assert!(r.is_err(), "an async-commit prewrite at start_ts u64::MAX: {r:?}");
    // u64::MAX is no commit ts (a read at it means "the latest").
    let r = env.prewrite(b"e", one_pc_put(b"e", u64::MAX - 1));
    assert!(r.is_err(), "a 1PC at start_ts u64::MAX - 1 would commit at u64::MAX: {r:?}");
    env.stop();
}

/// TiKV's check_ts_conflict: a read passes a lock its Context names as
/// resolved (rolled back: read below it) or committed (read the lock's
/// value), and a read at u64::MAX passes the lock on a non-async-commit
/// primary (the latest committed value).
#[test]
fn reads_pass_the_locks_the_client_resolved() {
    let env = Env::new();
    env.put(b"a", b"v1", 100, 110);
    env.prewrite(b"a", two_pc_put(b"a", b"v2", 200)).unwrap();
    let ctx = env.ctx(b"a");
    assert!(is_locked(&env.get(&ctx, b"a", 300)), "the lock at 200 blocks a read at 300");

    let resolved = kvrpcpb::Context { resolved_locks: vec![200], ..ctx.clone() };
    assert_eq!(env.get(&resolved, b"a", 300).unwrap(), Some(b"v1".to_vec()));
    let committed = kvrpcpb::Context { committed_locks: vec![200], ..ctx.clone() };
    assert_eq!(env.get(&committed, b"a", 300).unwrap(), Some(b"v2".to_vec()));
    let other =
        kvrpcpb::Context { resolved_locks: vec![199], committed_locks: vec![201], ..ctx.clone() };
    assert!(is_locked(&env.get(&other, b"a", 300)), "other transactions' locks are no bypass");

    let rt = &env.rt;
    let got = rt.block_on(env.txn.batch_get(&resolved, &[k(b"a")], 300)).unwrap();
    assert!(matches!(got.as_slice(), [(_, Ok(v))] if v == b"v1"), "batch_get: {got:?}");
    let got = rt.block_on(env.txn.scan(&committed, &k(b"a"), &k(b"b"), 10, false, false, 300));
    let got = got.unwrap();
    assert!(matches!(got.as_slice(), [(_, Ok(v))] if v == b"v2"), "scan: {got:?}");

    // A point read at u64::MAX on the primary of a two-phase lock.
    assert_eq!(env.get(&ctx, b"a", u64::MAX).unwrap(), Some(b"v1".to_vec()));
    env.stop();
}

/// A pessimistic lock of `key` for the transaction `start_ts`.
fn lock_args(key: &[u8], start_ts: u64, wait_timeout: i64) -> PessimisticLockArgs {
    PessimisticLockArgs {
        props: PessimisticLockProps {
            start_ts,
            primary: k(key),
            lock_ttl: 60_000,
            for_update_ts: start_ts,
            min_commit_ts: 0,
            need_value: false,
        },
        wait_timeout,
        keys: vec![(k(key), false)],
    }
}

type LockResult = Result<Result<Vec<Option<Vec<u8>>>, Vec<atoll_txn::Error>>, Error>;

impl Env {
    fn lock(&self, key: &[u8], start_ts: u64, wait_timeout: i64) -> LockResult {
        self.rt.block_on(
            self.txn.pessimistic_lock(&self.ctx(key), lock_args(key, start_ts, wait_timeout)),
        )
    }

    /// Starts a lock request; its answer arrives on the receiver.
    fn lock_in_background(
        &self,
        key: &'static [u8],
        start_ts: u64,
    ) -> std::sync::mpsc::Receiver<(LockResult, Duration)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (txn, ctx) = (self.txn.clone(), self.ctx(key));
        self.rt.spawn(async move {
            let t = Instant::now();
            let r = txn.pessimistic_lock(&ctx, lock_args(key, start_ts, 0)).await;
            let _ = tx.send((r, t.elapsed()));
        });
        rx
    }

    fn unlock(&self, key: &[u8], start_ts: u64) {
        let ctx = self.ctx(key);
        let r =
            self.rt.block_on(self.txn.pessimistic_rollback(&ctx, &[k(key)], start_ts, start_ts));
        r.unwrap();
    }
}

fn locked_by(r: &LockResult, owner: u64) -> bool {
    matches!(r, Ok(Err(e)) if matches!(e.as_slice(), [atoll_txn::Error::KeyIsLocked(l)] if l.lock.ts == owner))
}

/// TiKV's lock manager (src/server/lock_manager): a PessimisticLock that
/// meets another transaction's lock waits for it to go and is woken by
/// the release, not by a poll or its timeout; a wait that would close a
/// cycle is answered `Deadlock` at once, and the other side then goes on.
#[test]
fn pessimistic_locks_wait_for_the_owner_and_deadlocks_are_refused() {
    // Waits far longer than the test: an answer before that is a wake-up.
    let wait = Duration::from_secs(20);
    let env = Env::with_locks(PessimisticTxnConfig {
        wait_for_lock_timeout: atoll_util::ReadableDuration(wait),
        ..Default::default()
    });
    let (t1, t2) = (PD_TS + 10, PD_TS + 20);
    assert_eq!(env.lock(b"a", t1, 0).unwrap(), Ok(vec![None]));
    // Asked not to wait: the lock at once.
    let r = env.lock(b"a", t2, -1);
    assert!(locked_by(&r, t1), "no wait asked: {r:?}");

    // Woken when the owner lets go.
    let waiting = env.lock_in_background(b"a", t2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(waiting.try_recv().is_err(), "t2 must wait while t1 holds a");
    env.unlock(b"a", t1);
    let (r, took) = waiting.recv_timeout(WAIT).expect("t2 answered");
    assert_eq!(r.unwrap(), Ok(vec![None]), "t2 gets a once t1 let go");
    assert!(took < wait / 2, "woken by the release, not by its timeout: {took:?}");

    // t2 holds a, t3 holds b; t2 waits for b, then t3 asks for a.
    let t3 = PD_TS + 30;
    assert_eq!(env.lock(b"b", t3, 0).unwrap(), Ok(vec![None]));
    let t2_waits = env.lock_in_background(b"b", t2);
    std::thread::sleep(Duration::from_millis(300));
    assert!(t2_waits.try_recv().is_err(), "t2 must wait for t3's lock on b");
    let started = Instant::now();
    let r = env.lock(b"a", t3, 0);
    let took = started.elapsed();
    match &r {
        Ok(Err(e)) => match e.as_slice() {
            [atoll_txn::Error::Deadlock { start_ts, lock_ts, wait_chain, .. }] => {
                assert_eq!((*start_ts, *lock_ts), (t3, t2));
                let edges: Vec<_> = wait_chain.iter().map(|w| (w.txn, w.wait_for_txn)).collect();
                assert_eq!(edges, vec![(t3, t2), (t2, t3)], "the cycle");
            }
            other => panic!("t3 must be refused with Deadlock: {other:?}"),
        },
        other => panic!("t3 must be refused with Deadlock: {other:?}"),
    }
    assert!(took < Duration::from_secs(1), "refused at once, not after a wait: {took:?}");
    // t3 gives up its lock; t2 goes on.
    env.unlock(b"b", t3);
    let (r, _) = t2_waits.recv_timeout(WAIT).expect("t2 answered");
    assert_eq!(r.unwrap(), Ok(vec![None]), "t2 gets b once t3 let go");
    env.stop();
}

/// The scheduler's orchestration (`txn/scheduler.rs`): a command whose
/// rule fails for one key writes nothing for any; a command holds its
/// keys' latches from its snapshot until raftstore answers its write
/// (past the Undetermined its caller may get), so a later command on the
/// same key waits, then sees what the first wrote, while a command on
/// another key goes on.
#[test]
fn commands_write_all_or_nothing_and_hold_latches_until_answered() {
    let env = Env::new();
    let (c, leader, txn, rt) = (&env.c, env.leader, &env.txn, &env.rt);
    env.put_when_led(b"b", b"settled", 2, 3);
    env.put_when_led(b"q", b"settled", 2, 3);

    // One prewrite of a (free) and b (committed after its start): nothing.
    let mut both = two_pc_put(b"a", b"v", 1);
    let mut second = both.mutations[0].clone();
    second.key = k(b"b");
    both.mutations.push(second);
    let out = env.prewrite(b"a", both).unwrap();
    assert_eq!(out.errors.len(), 1, "b's write conflict: {out:?}");
    assert_eq!(env.get(&env.ctx(b"a"), b"a", 5).unwrap(), None, "a must hold no lock");

    // A prewrite of c whose raft write cannot commit (appends dropped).
    c.drop_appends_from(leader);
    let ctx_c = env.ctx(b"c");
    let (t, ctx) = (txn.clone(), ctx_c.clone());
    let prewrite = rt.spawn(async move { t.prewrite(&ctx, async_commit_put(b"c", 10)).await });
    let deadline = Instant::now() + WAIT;
    while !is_locked(&rt.block_on(txn.get(&ctx_c, &k(b"c"), u64::MAX))) {
        assert!(Instant::now() < deadline, "the prewrite of c never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A commit of c waits for the prewrite's latch...
    let commit_ts = PD_TS + (1 << 30);
    let (t, ctx) = (txn.clone(), ctx_c.clone());
    let waiting = rt.spawn(async move { t.commit(&ctx, &[k(b"c")], 10, commit_ts).await });
    // ...while a command on another key is answered (no lock: refused).
    let other = rt.block_on(txn.commit(&env.ctx(b"d"), &[k(b"d")], 30, 40));
    assert!(other.is_err(), "a commit of d without a lock: {other:?}");
    // The prewrite's caller gives up (Undetermined); the latch stays.
    let r = rt.block_on(prewrite).unwrap();
    let undetermined = matches!(r, Err(Error::Store(atoll_raftstore::Error::Undetermined(_))));
    assert!(undetermined, "the prewrite of c: {r:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "the commit of c must wait for the prewrite's latch");

    // The write goes through once appends flow: the commit then finds the
    // lock it waited for.
    c.heal();
    rt.block_on(waiting).unwrap().expect("c commits after its prewrite applied");
    assert_eq!(env.get(&ctx_c, b"c", commit_ts).unwrap(), Some(b"v".to_vec()));
    env.stop();
}
