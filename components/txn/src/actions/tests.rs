//! Each Percolator rule on an in-memory engine: a command reads one
//! snapshot and its writes are applied at once, as the store does.

use atoll_codec::data::data_key;
use atoll_engine_memory::MemoryEngine;
use atoll_engine_traits::{KvEngine, WriteBatch, WriteOptions, CF_DEFAULT, CF_LOCK, CF_WRITE};

use super::*;
use crate::error::ConflictReason;
use crate::{Error, Key, Lock, LockType, Modify, MvccReader, MvccTxn, Op, TimeStamp, WriteType};

struct Store {
    engine: MemoryEngine,
}

fn k(s: &str) -> Key {
    Key::from_raw(s.as_bytes())
}

/// A TSO-like timestamp: `ms` physical milliseconds.
fn ts_ms(ms: u64) -> TimeStamp {
    ms << 18
}

impl Store {
    fn new() -> Self {
        Store { engine: MemoryEngine::new() }
    }

    /// Runs one command: `f` reads a snapshot and fills a txn, which is
    /// then written atomically, even when `f` fails partway (callers
    /// decide, as the server does, to write nothing on error).
    fn run<T>(
        &self,
        f: impl FnOnce(
            &mut MvccTxn,
            &MvccReader<'_, <MemoryEngine as KvEngine>::Snapshot>,
        ) -> crate::Result<T>,
    ) -> crate::Result<T> {
        self.run_txn(MvccTxn::new(), f)
    }

    fn run_txn<T>(
        &self,
        mut txn: MvccTxn,
        f: impl FnOnce(
            &mut MvccTxn,
            &MvccReader<'_, <MemoryEngine as KvEngine>::Snapshot>,
        ) -> crate::Result<T>,
    ) -> crate::Result<T> {
        let snap = self.engine.snapshot();
        let reader = MvccReader::new(&snap);
        let out = f(&mut txn, &reader)?;
        let mut wb = self.engine.write_batch();
        for m in txn.modifies {
            match m {
                Modify::Put { cf, key, value } => wb.put_cf(cf, &data_key(&key), &value).unwrap(),
                Modify::Delete { cf, key } => wb.delete_cf(cf, &data_key(&key)).unwrap(),
            }
        }
        self.engine.write(&mut wb, WriteOptions::default()).unwrap();
        Ok(out)
    }

    fn get(&self, key: &str, ts: TimeStamp) -> crate::Result<Option<Vec<u8>>> {
        let snap = self.engine.snapshot();
        MvccReader::new(&snap).get(&k(key), ts)
    }

    fn must_get(&self, key: &str, ts: TimeStamp, want: Option<&str>) {
        assert_eq!(
            self.get(key, ts).unwrap(),
            want.map(|v| v.as_bytes().to_vec()),
            "{key} at {ts}"
        );
    }

    fn lock(&self, key: &str) -> Option<Lock> {
        let snap = self.engine.snapshot();
        MvccReader::new(&snap).load_lock(&k(key)).unwrap()
    }

    fn props(primary: &str, start_ts: TimeStamp) -> PrewriteProps {
        PrewriteProps {
            start_ts,
            primary: primary.as_bytes().to_vec(),
            lock_ttl: 3000,
            txn_size: 1,
            ..Default::default()
        }
    }

    fn prewrite_op(
        &self,
        op: Op,
        key: &str,
        value: &str,
        props: &PrewriteProps,
        action: PessimisticAction,
    ) -> crate::Result<TimeStamp> {
        let m = Mutation { op, key: k(key), value: value.as_bytes().to_vec() };
        let secondaries: Option<Vec<Vec<u8>>> =
            (props.use_async_commit && key.as_bytes() == props.primary).then(Vec::new);
        self.run(|txn, r| prewrite(txn, r, props, m, secondaries.as_deref(), action))
    }

    fn prewrite_put(
        &self,
        key: &str,
        value: &str,
        primary: &str,
        start_ts: TimeStamp,
    ) -> crate::Result<TimeStamp> {
        self.prewrite_op(
            Op::Put,
            key,
            value,
            &Self::props(primary, start_ts),
            PessimisticAction::SkipPessimisticCheck,
        )
    }

    fn commit(&self, key: &str, start_ts: TimeStamp, commit_ts: TimeStamp) -> crate::Result<()> {
        self.run(|txn, r| commit(txn, r, &k(key), start_ts, commit_ts))
    }

    fn rollback(&self, key: &str, start_ts: TimeStamp) -> crate::Result<RollbackOutcome> {
        self.run(|txn, r| rollback(txn, r, &k(key), start_ts))
    }

    fn put(&self, key: &str, value: &str, start_ts: TimeStamp, commit_ts: TimeStamp) {
        self.prewrite_put(key, value, key, start_ts).unwrap();
        self.commit(key, start_ts, commit_ts).unwrap();
    }

    fn check_status(&self, key: &str, a: CheckTxnStatusArgs) -> crate::Result<TxnStatus> {
        self.run(|txn, r| check_txn_status(txn, r, &k(key), &a))
    }

    fn pessimistic_lock(
        &self,
        key: &str,
        primary: &str,
        start_ts: TimeStamp,
        for_update_ts: TimeStamp,
    ) -> crate::Result<Option<Vec<u8>>> {
        let props = PessimisticLockProps {
            start_ts,
            primary: primary.as_bytes().to_vec(),
            lock_ttl: 3000,
            for_update_ts,
            min_commit_ts: 0,
            need_value: true,
        };
        self.run(|txn, r| pessimistic_lock(txn, r, &props, &k(key), false))
    }

    fn write_count(&self, cf: &str) -> usize {
        let mut n = 0;
        atoll_engine_traits::Iterable::scan_cf(&self.engine, cf, b"", b"", false, &mut |_, _| {
            n += 1;
            Ok(true)
        })
        .unwrap();
        n
    }
}

fn status_args(lock_ts: TimeStamp, current_ts: TimeStamp) -> CheckTxnStatusArgs {
    CheckTxnStatusArgs {
        lock_ts,
        caller_start_ts: 0,
        current_ts,
        rollback_if_not_exist: false,
        force_sync_commit: false,
        resolving_pessimistic_lock: false,
        verify_is_primary: true,
    }
}

#[test]
fn snapshot_reads_see_what_was_committed_at_their_ts() {
    let s = Store::new();
    s.put("a", "v1", 10, 20);
    s.put("a", "v2", 30, 40);
    s.must_get("a", 19, None);
    s.must_get("a", 20, Some("v1"));
    s.must_get("a", 39, Some("v1"));
    s.must_get("a", 40, Some("v2"));
    // A delete, then a Lock record and a rollback on top: neither hides the delete.
    s.prewrite_op(
        Op::Del,
        "a",
        "",
        &Store::props("a", 50),
        PessimisticAction::SkipPessimisticCheck,
    )
    .unwrap();
    s.commit("a", 50, 60).unwrap();
    s.prewrite_op(
        Op::Lock,
        "a",
        "",
        &Store::props("a", 70),
        PessimisticAction::SkipPessimisticCheck,
    )
    .unwrap();
    s.commit("a", 70, 80).unwrap();
    s.rollback("a", 90).unwrap();
    s.must_get("a", 100, None);
    s.must_get("a", 59, Some("v2"));
}

#[test]
fn long_values_go_to_the_default_cf_short_ones_inline() {
    let s = Store::new();
    let long = "x".repeat(crate::SHORT_VALUE_MAX_LEN + 1);
    let short = "y".repeat(crate::SHORT_VALUE_MAX_LEN);
    s.put("long", &long, 10, 11);
    s.put("short", &short, 10, 11);
    assert_eq!(s.write_count(CF_DEFAULT), 1);
    s.must_get("long", 11, Some(&long));
    s.must_get("short", 11, Some(&short));
    // Rolling back a long value's lock removes the value too.
    s.prewrite_put("long", &long, "long", 20).unwrap();
    assert_eq!(s.write_count(CF_DEFAULT), 2);
    s.rollback("long", 20).unwrap();
    assert_eq!(s.write_count(CF_DEFAULT), 1);
    s.must_get("long", 30, Some(&long));
}

#[test]
fn a_lock_blocks_reads_at_or_after_its_start_only() {
    let s = Store::new();
    s.put("a", "old", 5, 6);
    s.prewrite_put("a", "new", "a", 10).unwrap();
    s.must_get("a", 9, Some("old"));
    match s.get("a", 10) {
        Err(Error::KeyIsLocked(info)) => {
            assert_eq!(info.key, k("a"));
            assert_eq!(info.lock.ts, 10);
            assert_eq!(info.lock.primary, b"a");
        }
        other => panic!("expected locked, got {other:?}"),
    }
    // Lock-only and pessimistic locks change nothing: reads go past them.
    s.prewrite_op(
        Op::Lock,
        "b",
        "",
        &Store::props("b", 10),
        PessimisticAction::SkipPessimisticCheck,
    )
    .unwrap();
    s.must_get("b", 20, None);
    s.pessimistic_lock("c", "c", 10, 10).unwrap();
    s.must_get("c", 20, None);
}

#[test]
fn prewrite_conflicts_with_newer_commits_other_locks_and_its_own_rollback() {
    let s = Store::new();
    s.put("a", "v", 10, 20);
    match s.prewrite_put("a", "x", "a", 15) {
        Err(Error::WriteConflict {
            conflict_commit_ts: 20,
            conflict_start_ts: 10,
            reason: ConflictReason::Optimistic,
            ..
        }) => {}
        other => panic!("expected a write conflict, got {other:?}"),
    }
    // A commit exactly at start_ts is no conflict (the reader at start_ts saw it).
    s.prewrite_put("a", "x", "a", 20).unwrap();
    // Another transaction's lock.
    assert!(matches!(s.prewrite_put("a", "y", "a", 30), Err(Error::KeyIsLocked(_))));
    // Its own lock again: a resent prewrite, nothing changes.
    s.prewrite_put("a", "x", "a", 20).unwrap();
    s.commit("a", 20, 25).unwrap();
    // A resent prewrite after its commit is fine too and writes nothing.
    s.prewrite_put("a", "x", "a", 20).unwrap();
    assert!(s.lock("a").is_none());
    // Rolled back before its prewrite arrived: the late prewrite fails.
    s.rollback("b", 40).unwrap();
    match s.prewrite_put("b", "late", "b", 40) {
        Err(Error::WriteConflict { reason: ConflictReason::SelfRolledBack, .. }) => {}
        other => panic!("expected self rolled back, got {other:?}"),
    }
    assert!(s.lock("b").is_none());
    // A rollback record of ANOTHER transaction newer than start_ts conflicts (TiKV).
    s.rollback("c", 50).unwrap();
    assert!(matches!(s.prewrite_put("c", "v", "c", 45), Err(Error::WriteConflict { .. })));
}

#[test]
fn insert_and_check_not_exists_need_a_missing_key() {
    let s = Store::new();
    s.put("a", "v", 10, 11);
    let p = Store::props("a", 20);
    for op in [Op::Insert, Op::CheckNotExists] {
        match s.prewrite_op(op, "a", "w", &p, PessimisticAction::SkipPessimisticCheck) {
            Err(Error::AlreadyExist { key }) => assert_eq!(key, k("a")),
            other => panic!("{op:?}: expected already exist, got {other:?}"),
        }
    }
    // A deleted key (under a Lock record and a rollback) may be inserted.
    s.prewrite_op(
        Op::Del,
        "a",
        "",
        &Store::props("a", 30),
        PessimisticAction::SkipPessimisticCheck,
    )
    .unwrap();
    s.commit("a", 30, 31).unwrap();
    s.prewrite_op(
        Op::Lock,
        "a",
        "",
        &Store::props("a", 32),
        PessimisticAction::SkipPessimisticCheck,
    )
    .unwrap();
    s.commit("a", 32, 33).unwrap();
    s.rollback("a", 34).unwrap();
    let p = Store::props("a", 40);
    s.prewrite_op(Op::CheckNotExists, "a", "", &p, PessimisticAction::SkipPessimisticCheck)
        .unwrap();
    assert!(s.lock("a").is_none(), "CheckNotExists writes no lock");
    s.prewrite_op(Op::Insert, "a", "new", &p, PessimisticAction::SkipPessimisticCheck).unwrap();
    s.commit("a", 40, 41).unwrap();
    s.must_get("a", 41, Some("new"));
}

#[test]
fn commit_is_idempotent_and_refuses_rolled_back_or_missing_locks() {
    let s = Store::new();
    s.prewrite_put("a", "v", "a", 10).unwrap();
    assert!(matches!(s.commit("a", 10, 10), Err(Error::InvalidTxnTso(_))));
    s.commit("a", 10, 20).unwrap();
    s.commit("a", 10, 20).unwrap();
    s.must_get("a", 20, Some("v"));
    assert!(matches!(s.commit("b", 10, 20), Err(Error::TxnLockNotFound { .. })));
    s.prewrite_put("c", "v", "c", 10).unwrap();
    s.rollback("c", 10).unwrap();
    assert!(matches!(s.commit("c", 10, 20), Err(Error::TxnLockNotFound { .. })));
    s.must_get("c", 30, None);
    // A pessimistic lock that was never prewritten cannot be committed.
    s.pessimistic_lock("d", "d", 40, 40).unwrap();
    assert!(matches!(s.commit("d", 40, 50), Err(Error::TxnLockNotFound { .. })));
}

#[test]
fn rollback_of_a_committed_transaction_is_refused() {
    let s = Store::new();
    s.put("a", "v", 10, 20);
    assert!(matches!(s.rollback("a", 10), Err(Error::Committed { commit_ts: 20, .. })));
    assert_eq!(s.rollback("a", 30).unwrap(), RollbackOutcome::Recorded);
    assert_eq!(s.rollback("a", 30).unwrap(), RollbackOutcome::Recorded, "twice is fine");
    s.must_get("a", 40, Some("v"));
}

#[test]
fn overlapped_rollback_never_overwrites_a_commit_record() {
    // Transaction 10 commits at 30 (as async commit may compute), then
    // transaction 30 is rolled back on the same key: the commit record
    // stays and carries the rollback.
    let s = Store::new();
    s.prewrite_put("a", "v", "a", 10).unwrap();
    s.commit("a", 10, 30).unwrap();
    assert_eq!(s.rollback("a", 30).unwrap(), RollbackOutcome::Recorded);
    s.must_get("a", 30, Some("v"));
    let snap = s.engine.snapshot();
    let r = MvccReader::new(&snap);
    let w = r.write_at(&k("a"), 30).unwrap().unwrap();
    assert_eq!((w.write_type, w.start_ts, w.has_overlapped_rollback), (WriteType::Put, 10, true));
    assert_eq!(r.commit_record(&k("a"), 30).unwrap(), crate::CommitRecord::RolledBack);
    assert!(matches!(r.commit_record(&k("a"), 10).unwrap(), crate::CommitRecord::Committed(30, _)));
    // And the other way round: while transaction 40 holds the key, 50 is
    // rolled back on it; 40 then commits at 50 and keeps that rollback.
    s.prewrite_put("b", "v", "b", 40).unwrap();
    s.rollback("b", 50).unwrap();
    s.commit("b", 40, 50).unwrap();
    let snap = s.engine.snapshot();
    let r = MvccReader::new(&snap);
    let w = r.write_at(&k("b"), 50).unwrap().unwrap();
    assert!(w.has_overlapped_rollback && w.write_type == WriteType::Put);
    assert!(matches!(s.prewrite_put("b", "late", "b", 50), Err(Error::WriteConflict { .. })));
}

#[test]
fn check_txn_status_outcomes() {
    let s = Store::new();
    let t0 = ts_ms(1000);
    // Alive: Uncommitted with the lock.
    s.prewrite_put("p", "v", "p", t0).unwrap();
    match s.check_status("p", status_args(t0, ts_ms(1001))).unwrap() {
        TxnStatus::Uncommitted { lock, pushed: false } => assert_eq!(lock.ttl, 3000),
        other => panic!("{other:?}"),
    }
    // Not the primary.
    s.prewrite_put("s", "v", "p", t0).unwrap();
    assert!(matches!(
        s.check_status("s", status_args(t0, ts_ms(1001))),
        Err(Error::PrimaryMismatch(_))
    ));
    // Expired: rolled back now.
    assert_eq!(
        s.check_status("p", status_args(t0, ts_ms(5000))).unwrap(),
        TxnStatus::TtlExpireRollback
    );
    assert!(s.lock("p").is_none());
    assert_eq!(s.check_status("p", status_args(t0, ts_ms(5000))).unwrap(), TxnStatus::RolledBack);
    // Committed.
    let t1 = ts_ms(2000);
    s.prewrite_put("q", "v", "q", t1).unwrap();
    s.commit("q", t1, t1 + 1).unwrap();
    assert_eq!(
        s.check_status("q", status_args(t1, ts_ms(9000))).unwrap(),
        TxnStatus::Committed { commit_ts: t1 + 1 }
    );
    // Nothing at all: not found, unless asked to roll back.
    let t2 = ts_ms(3000);
    assert!(matches!(
        s.check_status("r", status_args(t2, ts_ms(9000))),
        Err(Error::TxnNotFound { .. })
    ));
    let mut a = status_args(t2, ts_ms(9000));
    a.resolving_pessimistic_lock = true;
    assert_eq!(s.check_status("r", a.clone()).unwrap(), TxnStatus::LockNotExistDoNothing);
    a.resolving_pessimistic_lock = false;
    a.rollback_if_not_exist = true;
    assert_eq!(s.check_status("r", a).unwrap(), TxnStatus::LockNotExistRollback);
    assert!(matches!(s.prewrite_put("r", "late", "r", t2), Err(Error::WriteConflict { .. })));
    // An expired pessimistic lock, resolving it: removed without a record.
    let t3 = ts_ms(4000);
    s.pessimistic_lock("m", "m", t3, t3).unwrap();
    let mut a = status_args(t3, ts_ms(9000));
    a.resolving_pessimistic_lock = true;
    assert_eq!(s.check_status("m", a).unwrap(), TxnStatus::TtlExpirePessimisticRollback);
    assert!(s.lock("m").is_none());
    assert_eq!(s.write_count(CF_WRITE), 3, "p's rollback, q's commit, r's rollback; nothing for m");
}

#[test]
fn check_txn_status_pushes_min_commit_ts_and_spares_async_commit_locks() {
    let s = Store::new();
    let t0 = ts_ms(1000);
    let mut p = Store::props("p", t0);
    p.min_commit_ts = t0 + 1;
    p.use_async_commit = true;
    assert_eq!(
        s.prewrite_op(Op::Put, "p", "v", &p, PessimisticAction::SkipPessimisticCheck).unwrap(),
        t0 + 1
    );
    // Async commit: never rolled back by TTL, never pushed.
    match s.check_status("p", status_args(t0, ts_ms(100_000))).unwrap() {
        TxnStatus::Uncommitted { pushed: false, .. } => {}
        other => panic!("{other:?}"),
    }
    let mut a = status_args(t0, ts_ms(100_000));
    a.force_sync_commit = true;
    assert_eq!(s.check_status("p", a).unwrap(), TxnStatus::TtlExpireRollback);
    // A lock with a min_commit_ts is pushed past a reader.
    let t1 = ts_ms(2000);
    let mut p = Store::props("q", t1);
    p.min_commit_ts = t1 + 1;
    s.prewrite_op(Op::Put, "q", "v", &p, PessimisticAction::SkipPessimisticCheck).unwrap();
    let mut a = status_args(t1, t1 + 10);
    a.caller_start_ts = t1 + 5;
    match s.check_status("q", a).unwrap() {
        TxnStatus::Uncommitted { lock, pushed: true } => assert_eq!(lock.min_commit_ts, t1 + 10),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.lock("q").unwrap().min_commit_ts, t1 + 10, "persisted");
    // The reader at t1 + 5 now reads around it, and a commit below it is expired.
    s.must_get("q", t1 + 5, None);
    assert!(
        matches!(s.commit("q", t1, t1 + 9), Err(Error::CommitTsExpired { min_commit_ts, .. }) if min_commit_ts == t1 + 10)
    );
    s.commit("q", t1, t1 + 10).unwrap();
}

#[test]
fn check_secondary_locks_outcomes() {
    let s = Store::new();
    let t0 = 100;
    let mut p = Store::props("a", t0);
    p.use_async_commit = true;
    p.min_commit_ts = t0 + 1;
    for key in ["a", "b", "c"] {
        s.prewrite_op(Op::Put, key, "v", &p, PessimisticAction::SkipPessimisticCheck).unwrap();
    }
    let keys = |ks: &[&str]| ks.iter().map(|x| k(x)).collect::<Vec<_>>();
    match s.run(|txn, r| check_secondary_locks(txn, r, &keys(&["b", "c"]), t0)).unwrap() {
        SecondaryLocks::Locked(locks) => assert_eq!(locks.len(), 2),
        other => panic!("{other:?}"),
    }
    s.commit("b", t0, t0 + 5).unwrap();
    assert_eq!(
        s.run(|txn, r| check_secondary_locks(txn, r, &keys(&["b", "c"]), t0)).unwrap(),
        SecondaryLocks::Committed(t0 + 5)
    );
    // A key that never got its prewrite is rolled back, and stays so.
    assert_eq!(
        s.run(|txn, r| check_secondary_locks(txn, r, &keys(&["z"]), t0)).unwrap(),
        SecondaryLocks::RolledBack
    );
    assert!(matches!(
        s.prewrite_op(Op::Put, "z", "v", &p, PessimisticAction::SkipPessimisticCheck),
        Err(Error::WriteConflict { .. })
    ));
}

#[test]
fn pessimistic_lock_rules() {
    let s = Store::new();
    s.put("a", "v1", 10, 20);
    // Conflict with a commit after for_update_ts.
    match s.pessimistic_lock("a", "a", 15, 15) {
        Err(Error::WriteConflict {
            reason: ConflictReason::PessimisticRetry,
            conflict_commit_ts: 20,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // With a newer for_update_ts it works and returns the latest value.
    assert_eq!(s.pessimistic_lock("a", "a", 15, 25).unwrap(), Some(b"v1".to_vec()));
    let l = s.lock("a").unwrap();
    assert_eq!((l.lock_type, l.ts, l.for_update_ts), (LockType::Pessimistic, 15, 25));
    // Again with a newer for_update_ts: raised.
    s.pessimistic_lock("a", "a", 15, 30).unwrap();
    assert_eq!(s.lock("a").unwrap().for_update_ts, 30);
    // Another transaction.
    assert!(matches!(s.pessimistic_lock("a", "a", 40, 40), Err(Error::KeyIsLocked(_))));
    // Insert assertion on an existing key.
    let props = PessimisticLockProps {
        start_ts: 50,
        primary: b"b".to_vec(),
        lock_ttl: 3000,
        for_update_ts: 50,
        min_commit_ts: 0,
        need_value: false,
    };
    s.put("b", "v", 41, 42);
    assert!(matches!(
        s.run(|txn, r| pessimistic_lock(txn, r, &props, &k("b"), true)),
        Err(Error::AlreadyExist { .. })
    ));
    // Rolled back already: refused.
    s.rollback("c", 60).unwrap();
    assert!(matches!(
        s.pessimistic_lock("c", "c", 60, 70),
        Err(Error::PessimisticLockRolledBack { .. })
    ));
    // PessimisticRollback frees the lock (for_update_ts permitting), writing nothing.
    let writes = s.write_count(CF_WRITE);
    assert!(!s.run(|txn, r| pessimistic_rollback(txn, r, &k("a"), 15, 29)).unwrap());
    assert!(s.run(|txn, r| pessimistic_rollback(txn, r, &k("a"), 15, 30)).unwrap());
    assert!(s.lock("a").is_none());
    assert_eq!(s.write_count(CF_WRITE), writes);
    s.pessimistic_lock("a", "a", 40, 40).unwrap();
}

#[test]
fn pessimistic_prewrite_needs_its_lock_and_skips_the_conflict_check() {
    let s = Store::new();
    s.put("a", "v1", 10, 20);
    s.pessimistic_lock("a", "a", 15, 25).unwrap();
    let mut p = Store::props("a", 15);
    p.for_update_ts = 25;
    // No write-conflict check against start_ts 15 (the commit at 20 is older than the lock).
    s.prewrite_op(Op::Put, "a", "v2", &p, PessimisticAction::DoPessimisticCheck).unwrap();
    let l = s.lock("a").unwrap();
    assert_eq!((l.lock_type, l.for_update_ts), (LockType::Put, 25));
    s.commit("a", 15, 30).unwrap();
    s.must_get("a", 30, Some("v2"));
    // Lock gone and something committed since start: PessimisticLockNotFound.
    let mut p = Store::props("a", 25);
    p.for_update_ts = 35;
    assert!(matches!(
        s.prewrite_op(Op::Put, "a", "x", &p, PessimisticAction::DoPessimisticCheck),
        Err(Error::PessimisticLockNotFound { .. })
    ));
    // Another transaction's lock there: PessimisticLockNotFound too.
    s.prewrite_put("b", "v", "b", 40).unwrap();
    let mut p = Store::props("b", 41);
    p.for_update_ts = 41;
    assert!(matches!(
        s.prewrite_op(Op::Put, "b", "x", &p, PessimisticAction::DoPessimisticCheck),
        Err(Error::PessimisticLockNotFound { .. })
    ));
    // Lock gone, nothing since: amended.
    let mut p = Store::props("c", 50);
    p.for_update_ts = 50;
    s.prewrite_op(Op::Put, "c", "x", &p, PessimisticAction::DoPessimisticCheck).unwrap();
    assert_eq!(s.lock("c").unwrap().lock_type, LockType::Put);
    // An optimistic prewrite over a pessimistic lock of the same ts is refused.
    s.pessimistic_lock("d", "d", 60, 60).unwrap();
    assert!(matches!(s.prewrite_put("d", "v", "d", 60), Err(Error::LockTypeNotMatch { .. })));
}

#[test]
fn one_pc_writes_commit_records_directly() {
    let s = Store::new();
    s.pessimistic_lock("b", "a", 10, 10).unwrap();
    let mut p = Store::props("a", 10);
    p.for_update_ts = 10;
    p.min_commit_ts = 11;
    let out = s.run_txn(MvccTxn::one_pc(), |txn, r| {
        for (key, action) in [
            ("a", PessimisticAction::DoPessimisticCheck),
            ("b", PessimisticAction::DoPessimisticCheck),
        ] {
            let m = Mutation { op: Op::Put, key: k(key), value: b"v".to_vec() };
            prewrite(txn, r, &p, m, None, action)?;
        }
        commit_one_pc(txn, r, 11)
    });
    out.unwrap();
    assert!(s.lock("a").is_none() && s.lock("b").is_none());
    s.must_get("a", 11, Some("v"));
    s.must_get("b", 11, Some("v"));
    s.must_get("b", 10, None);
}

#[test]
fn heartbeat_extends_only_the_own_lock() {
    let s = Store::new();
    s.prewrite_put("p", "v", "p", 10).unwrap();
    assert_eq!(s.run(|txn, r| txn_heart_beat(txn, r, &k("p"), 10, 5000)).unwrap(), 5000);
    assert_eq!(s.run(|txn, r| txn_heart_beat(txn, r, &k("p"), 10, 100)).unwrap(), 5000);
    assert_eq!(s.lock("p").unwrap().ttl, 5000);
    assert!(matches!(
        s.run(|txn, r| txn_heart_beat(txn, r, &k("p"), 11, 5000)),
        Err(Error::TxnNotFound { .. })
    ));
    assert!(matches!(
        s.run(|txn, r| txn_heart_beat(txn, r, &k("q"), 10, 5000)),
        Err(Error::TxnNotFound { .. })
    ));
}

#[test]
fn gc_keeps_what_reads_at_the_safe_point_see() {
    let s = Store::new();
    let long = "l".repeat(300);
    s.put("a", &long, 10, 11);
    s.put("a", "v2", 20, 21);
    s.rollback("a", 25).unwrap();
    s.put("a", "v3", 30, 31);
    s.put("b", "v", 10, 11);
    s.prewrite_op(
        Op::Del,
        "b",
        "",
        &Store::props("b", 20),
        PessimisticAction::SkipPessimisticCheck,
    )
    .unwrap();
    s.commit("b", 20, 21).unwrap();
    assert_eq!(s.run(|txn, r| gc_key(txn, r, &k("a"), 26)).unwrap(), 2, "the rollback and v1");
    assert_eq!(s.write_count(CF_DEFAULT), 0, "v1's long value went with it");
    s.must_get("a", 26, Some("v2"));
    s.must_get("a", 31, Some("v3"));
    assert_eq!(
        s.run(|txn, r| gc_key(txn, r, &k("b"), 30)).unwrap(),
        2,
        "a delete takes everything"
    );
    s.must_get("b", 30, None);
    assert_eq!(s.run(|txn, r| gc_key(txn, r, &k("a"), 26)).unwrap(), 0, "nothing left to remove");
}

#[test]
fn scans_visit_locked_and_committed_keys_once_each_in_order() {
    let s = Store::new();
    s.put("a", "1", 10, 11);
    s.put("a", "2", 12, 13);
    s.prewrite_put("b", "x", "b", 14).unwrap(); // locked, no record yet
    s.put("c", "3", 10, 11);
    s.prewrite_put("c", "y", "c", 20).unwrap(); // locked and committed before
    s.put("d", "4", 10, 11);
    let snap = s.engine.snapshot();
    let r = MvccReader::new(&snap);
    let collect = |start: &str, end: &str, reverse: bool| {
        let mut seen = vec![];
        let (start, end) =
            (k(start), if end.is_empty() { Key::from_encoded(vec![]) } else { k(end) });
        r.scan_keys(&start, &end, reverse, &mut |key| {
            seen.push(String::from_utf8(key.to_raw().unwrap()).unwrap());
            Ok(true)
        })
        .unwrap();
        seen
    };
    assert_eq!(collect("a", "", false), ["a", "b", "c", "d"]);
    assert_eq!(collect("a", "", true), ["d", "c", "b", "a"]);
    assert_eq!(collect("b", "d", false), ["b", "c"]);
    assert_eq!(collect("b", "d", true), ["c", "b"]);
    let locks = r.scan_locks(&k("a"), &Key::from_encoded(vec![]), 15, 0).unwrap();
    assert_eq!(
        locks.iter().map(|l| l.key.clone()).collect::<Vec<_>>(),
        [k("b")],
        "c's lock is at 20"
    );
    assert_eq!(r.scan_locks(&k("a"), &Key::from_encoded(vec![]), 100, 1).unwrap().len(), 1);
    assert_eq!(s.write_count(CF_LOCK), 2);
}
