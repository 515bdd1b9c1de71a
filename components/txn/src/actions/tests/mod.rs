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

mod prewrite;
mod reads;
mod resolve;
