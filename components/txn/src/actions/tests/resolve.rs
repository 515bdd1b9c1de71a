//! Commit, rollback and what resolving locks asks: CheckTxnStatus,
//! CheckSecondaryLocks, heartbeats.

use super::*;

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
    // Resolving a pessimistic lock without rollback_if_not_exist: not
    // found, as TiKV answers (tikv-client 0.4 reads "nothing done" as
    // rolled back and resolves a live transaction's pessimistic locks).
    let mut a = status_args(t2, ts_ms(9000));
    a.resolving_pessimistic_lock = true;
    assert!(matches!(s.check_status("r", a.clone()), Err(Error::TxnNotFound { .. })));
    a.rollback_if_not_exist = true;
    assert_eq!(s.check_status("r", a.clone()).unwrap(), TxnStatus::LockNotExistDoNothing);
    assert_eq!(s.write_count(CF_WRITE), 2, "p's rollback and q's commit; nothing for r");
    a.resolving_pessimistic_lock = false;
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

/// TiKV's `check_txn_status_lock_exists`: `MinCommitTsPushed` whenever
/// the lock's min_commit_ts is already past the caller, whoever pushed
/// it, and for an autocommit point get (caller_start_ts = MAX), which
/// pushes nothing. The client then reads around the lock.
#[test]
fn check_txn_status_reports_a_lock_already_past_the_caller() {
    let s = Store::new();
    let t1 = ts_ms(2000);
    let mut p = Store::props("q", t1);
    p.min_commit_ts = t1 + 1;
    s.prewrite_op(Op::Put, "q", "v", &p, PessimisticAction::SkipPessimisticCheck).unwrap();
    let mut a = status_args(t1, t1 + 10);
    a.caller_start_ts = t1 + 5;
    let pushed = |st| matches!(st, TxnStatus::Uncommitted { pushed: true, .. });
    assert!(pushed(s.check_status("q", a.clone()).unwrap()));
    // A second reader at the same ts: nothing left to push, still past it.
    match s.check_status("q", a).unwrap() {
        TxnStatus::Uncommitted { lock, pushed: true } => assert_eq!(lock.min_commit_ts, t1 + 10),
        other => panic!("{other:?}"),
    }
    let mut a = status_args(t1, t1 + 10);
    a.caller_start_ts = u64::MAX;
    assert!(pushed(s.check_status("q", a).unwrap()), "a MAX caller");
    assert_eq!(s.lock("q").unwrap().min_commit_ts, t1 + 10, "MAX pushes nothing");
    // A reader above the lock's min_commit_ts pushes it again.
    let mut a = status_args(t1, t1 + 10);
    a.caller_start_ts = t1 + 20;
    match s.check_status("q", a).unwrap() {
        TxnStatus::Uncommitted { lock, pushed: true } => assert_eq!(lock.min_commit_ts, t1 + 21),
        other => panic!("{other:?}"),
    }
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
