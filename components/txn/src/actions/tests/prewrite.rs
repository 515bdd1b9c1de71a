//! Prewrite (optimistic, pessimistic, 1PC) and pessimistic locks.

use super::*;

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
    // A resent prewrite after its commit writes nothing and tells when it
    // committed.
    assert!(matches!(
        s.prewrite_put("a", "x", "a", 20),
        Err(Error::Committed { commit_ts: 25, .. })
    ));
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

/// TiKV refuses CheckNotExists in a pessimistic prewrite whatever the key
/// holds (actions/prewrite.rs, PrewriteMutation::from_mutation); over the
/// transaction's own pessimistic lock it used to leave that lock behind,
/// which its commit then refused (TxnLockNotFound).
#[test]
fn a_pessimistic_prewrite_refuses_check_not_exists() {
    let s = Store::new();
    s.pessimistic_lock("a", "a", 10, 10).unwrap();
    let mut p = Store::props("a", 10);
    p.for_update_ts = 10;
    for (key, action) in [
        ("a", PessimisticAction::DoPessimisticCheck),
        ("b", PessimisticAction::SkipPessimisticCheck),
        ("c", PessimisticAction::DoConstraintCheck),
    ] {
        match s.prewrite_op(Op::CheckNotExists, key, "", &p, action) {
            Err(Error::InvalidRequest(_)) => {}
            other => panic!("{key} {action:?}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(s.lock("a").unwrap().lock_type, LockType::Pessimistic, "nothing written");
    assert!(s.lock("b").is_none() && s.lock("c").is_none());
}

/// A pessimistic transaction's `DoConstraintCheck` key was not locked, so
/// its check is the optimistic one, against start_ts (TiKV's
/// check_for_newer_version, reason LazyUniquenessCheck): a commit between
/// start_ts and for_update_ts used to pass, and the prewrite overwrote it.
#[test]
fn a_deferred_constraint_check_conflicts_with_commits_after_start_ts() {
    let s = Store::new();
    s.put("a", "other", 15, 20);
    let mut p = Store::props("a", 10);
    p.for_update_ts = 30;
    for op in [Op::Put, Op::Insert] {
        match s.prewrite_op(op, "a", "v", &p, PessimisticAction::DoConstraintCheck) {
            Err(Error::WriteConflict {
                conflict_start_ts: 15,
                conflict_commit_ts: 20,
                reason: ConflictReason::LazyUniquenessCheck,
                ..
            }) => {}
            other => panic!("{op:?}: expected a write conflict, got {other:?}"),
        }
    }
    assert!(s.lock("a").is_none());
    // A key it did lock is checked against for_update_ts only.
    s.pessimistic_lock("b", "a", 10, 30).unwrap();
    s.prewrite_op(Op::Put, "b", "v", &p, PessimisticAction::DoPessimisticCheck).unwrap();
    // Nothing after start_ts: the deferred check passes, an Insert of a
    // missing key included.
    s.prewrite_op(Op::Insert, "c", "v", &p, PessimisticAction::DoConstraintCheck).unwrap();
    assert_eq!(s.lock("c").unwrap().lock_type, LockType::Put);
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

/// A resent prewrite of a committed transaction answers its commit ts
/// (`Error::Committed`, which the store turns into success with that ts)
/// on every path TiKV checks (check_committed_record_on_err): no lock
/// left, another transaction's lock on the key now, a pessimistic key
/// whose lock is gone, a 1PC transaction. Before, async commit answered
/// min_commit_ts 0 and the other paths a refusal.
#[test]
fn a_resent_prewrite_of_a_committed_transaction_reports_its_commit_ts() {
    let committed = |r: crate::Result<TimeStamp>| match r {
        Err(Error::Committed { commit_ts, .. }) => commit_ts,
        other => panic!("expected committed, got {other:?}"),
    };
    let s = Store::new();
    let mut p = Store::props("a", 10);
    p.use_async_commit = true;
    p.min_commit_ts = 11;
    let put = |p: &PrewriteProps, key: &str, action| s.prewrite_op(Op::Put, key, "v", p, action);
    put(&p, "a", PessimisticAction::SkipPessimisticCheck).unwrap();
    s.commit("a", 10, 15).unwrap();
    p.min_commit_ts = 40; // what the store would compute for the resend
    let writes = s.write_count(CF_WRITE);
    assert_eq!(committed(put(&p, "a", PessimisticAction::SkipPessimisticCheck)), 15);
    s.prewrite_put("a", "w", "a", 20).unwrap();
    assert_eq!(committed(put(&p, "a", PessimisticAction::SkipPessimisticCheck)), 15);
    assert_eq!(s.lock("a").unwrap().ts, 20, "the other transaction's lock stays");

    // Pessimistic: locked, prewritten, committed; resent with its check.
    s.pessimistic_lock("b", "b", 30, 30).unwrap();
    let mut p = Store::props("b", 30);
    p.for_update_ts = 30;
    put(&p, "b", PessimisticAction::DoPessimisticCheck).unwrap();
    s.commit("b", 30, 35).unwrap();
    assert_eq!(committed(put(&p, "b", PessimisticAction::DoPessimisticCheck)), 35);

    // 1PC: committed at 51 in one step; the resend says 51.
    let mut p = Store::props("c", 50);
    p.min_commit_ts = 51;
    s.run_txn(MvccTxn::one_pc(), |txn, r| {
        let m = Mutation { op: Op::Put, key: k("c"), value: b"v".to_vec() };
        prewrite(txn, r, &p, m, None, PessimisticAction::SkipPessimisticCheck)?;
        commit_one_pc(txn, r, 51)
    })
    .unwrap();
    p.min_commit_ts = 60;
    assert_eq!(committed(put(&p, "c", PessimisticAction::SkipPessimisticCheck)), 51);
    assert_eq!(s.write_count(CF_WRITE), writes + 2, "b's and c's commits only");
}
