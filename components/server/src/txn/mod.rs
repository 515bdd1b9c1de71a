//! Transactional KV (TiKV's Percolator API) over raftstore: the request
//! boundary of transactional keys, latches, `max_ts`, and the commands.
//!
//! A write command takes its keys' latches, reads a linearizable snapshot
//! of the region, runs `atoll_txn::actions` for every key, and proposes
//! everything they wrote as ONE raft command carrying the snapshot's term
//! (refused if leadership changed since). Latches, and the memory locks of
//! an async-commit prewrite, are held until raftstore answers the write —
//! applied, or certainly dropped — even if the client was already told
//! its outcome is undetermined. A command that fails for any key writes
//! nothing.
//!
//! Keys arrive as the user's keys (API V2: `x` + keyspace id + key) and are
//! memcomparable-encoded ([`atoll_txn::Key`]) here; answers carry user keys.

mod concurrency;
pub mod convert;
mod latches;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use atoll_codec::api::{ApiVersion, KEYSPACE_PREFIX_LEN, TXN_KEY_PREFIX};
use atoll_codec::data::{data_end_key, data_key};
use atoll_engine_traits::{KvEngine, WriteBatch, WriteOptions, CF_DEFAULT, CF_LOCK, CF_WRITE};
use atoll_proto::atollpb::{
    CmdType, DeleteRangeRequest, DeleteRequest, PutRequest, RaftCmdRequest, Request,
};
use atoll_proto::kvrpcpb::Context;
use atoll_proto::metapb;
use atoll_raftstore::{check_key_in_region, clip_to_region, ReadResponse, StoreHandle};
use atoll_txn::actions::{self, CheckTxnStatusArgs, Mutation, PessimisticAction};
use atoll_txn::{Key, Lock, LockInfo, LockType, Modify, MvccReader, MvccTxn, Op, TimeStamp};
use dashmap::DashMap;
use tokio::sync::oneshot;

pub use actions::{SecondaryLocks, TxnStatus};
use concurrency::{ConcurrencyManager, MemoryLocks};
use latches::{LatchGuard, Latches};

use crate::config::ServerConfig;
use crate::storage::{check_api, header, snapshot, REQUEST_TIMEOUT};

/// Why a transactional command failed: the region (retry elsewhere), the
/// store (bad input, undetermined, ...), or a transaction rule.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] atoll_raftstore::Error),
    #[error(transparent)]
    Mvcc(#[from] atoll_txn::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

fn bad(msg: impl Into<String>) -> Error {
    Error::Store(atoll_raftstore::Error::InvalidRequest(msg.into()))
}

/// Locks resolved per raft command by ResolveLock (TiKV: 256).
pub const RESOLVE_BATCH_MAX: usize = 256;
/// Keys one GC command collects.
pub const GC_BATCH_KEYS: usize = 256;
/// Keys one command may carry.
pub const COMMAND_KEYS_MAX: usize = 10_240;

/// A PD timestamp, for syncing `max_ts` when a region gets a new leader.
pub type TsoFuture = Pin<Box<dyn Future<Output = std::result::Result<u64, String>> + Send>>;
pub type TsoSource = Arc<dyn Fn() -> TsoFuture + Send + Sync>;

/// One key of a prewrite, as the client sent it.
#[derive(Clone, Debug)]
pub struct RawMutation {
    pub op: Op,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub action: PessimisticAction,
}

/// What a prewrite request carries.
#[derive(Clone, Debug, Default)]
pub struct PrewriteArgs {
    /// `min_commit_ts` here is the client's floor (usually 0); the store
    /// computes the real one for async commit and 1PC.
    pub props: actions::PrewriteProps,
    pub mutations: Vec<RawMutation>,
    /// Async commit: the transaction's other keys, on the primary's request.
    pub secondaries: Vec<Vec<u8>>,
    pub try_one_pc: bool,
}

/// A prewrite's answer: per-key errors (nothing written if any), or the
/// async-commit min_commit_ts / the 1PC commit ts.
#[derive(Debug, Default)]
pub struct PrewriteOutcome {
    pub errors: Vec<atoll_txn::Error>,
    pub min_commit_ts: TimeStamp,
    pub one_pc_commit_ts: TimeStamp,
}

/// What a PessimisticLock request carries besides its keys.
#[derive(Clone, Debug, Default)]
pub struct PessimisticLockArgs {
    pub props: actions::PessimisticLockProps,
    /// (key, should not exist)
    pub keys: Vec<(Vec<u8>, bool)>,
}

/// A key's result in a read: its value, or the lock in its way.
pub type KeyResult = (Vec<u8>, std::result::Result<Vec<u8>, atoll_txn::Error>);

/// A command under way: its latches and snapshot.
struct Cmd<S> {
    latches: LatchGuard,
    read: ReadResponse<S>,
}

pub struct TxnStorage<E: KvEngine> {
    store: StoreHandle<E>,
    engine: E,
    api: ApiVersion,
    latches: Arc<Latches>,
    cm: Arc<ConcurrencyManager>,
    tso: TsoSource,
    /// region → the leader term whose `max_ts` was synced from PD.
    synced: DashMap<u64, u64>,
    max_key: usize,
    max_value: usize,
    max_scan: u32,
}

impl<E: KvEngine> TxnStorage<E> {
    pub fn new(
        store: StoreHandle<E>,
        engine: E,
        cfg: &ServerConfig,
        api: ApiVersion,
        tso: TsoSource,
    ) -> Self {
        TxnStorage {
            store,
            engine,
            api,
            latches: Arc::new(Latches::default()),
            cm: Arc::new(ConcurrencyManager::default()),
            tso,
            synced: DashMap::new(),
            max_key: cfg.max_key_size.0 as usize,
            max_value: cfg.max_value_size.0 as usize,
            max_scan: cfg.max_scan_limit,
        }
    }

    // ---- the request boundary ----

    /// API version, key mode (V2: `x` keys) and sizes of a request's keys,
    /// encoded.
    fn keys<'a>(
        &self,
        cmd: &str,
        ctx: &Context,
        keys: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<Key>> {
        check_api(self.api, cmd, ctx)?;
        let keys: Vec<&[u8]> = keys.into_iter().collect();
        if keys.len() > COMMAND_KEYS_MAX {
            return Err(bad(format!(
                "{cmd} with {} keys (at most {COMMAND_KEYS_MAX})",
                keys.len()
            )));
        }
        let prefix = if self.api == ApiVersion::V2 { KEYSPACE_PREFIX_LEN } else { 0 };
        keys.into_iter()
            .map(|k| {
                if self.api == ApiVersion::V2 && k.first() != Some(&TXN_KEY_PREFIX) {
                    return Err(bad(format!(
                        "key mode not matched: {cmd} in API V2 takes transactional keys (prefix 'x'), got {k:?}"
                    )));
                }
                if k.len() <= prefix {
                    return Err(bad(format!("{cmd}: key is empty")));
                }
                if k.len() > self.max_key {
                    return Err(bad(format!(
                        "{cmd}: key of {} bytes exceeds max-key-size {}",
                        k.len(),
                        self.max_key
                    )));
                }
                Ok(Key::from_raw(k))
            })
            .collect()
    }

    /// A range bound of a request, encoded; empty stays empty.
    fn bound(&self, cmd: &str, ctx: &Context, b: &[u8]) -> Result<Key> {
        check_api(self.api, cmd, ctx)?;
        if b.is_empty() {
            return Ok(Key::from_encoded(vec![]));
        }
        // In V2 a bound is a transactional key, or `y`, the end of the last keyspace.
        if self.api == ApiVersion::V2
            && b.first() != Some(&TXN_KEY_PREFIX)
            && b != [TXN_KEY_PREFIX + 1]
        {
            return Err(bad(format!(
                "key mode not matched: {cmd} in API V2 takes transactional ranges (prefix 'x'), got {b:?}"
            )));
        }
        Ok(Key::from_raw(b))
    }

    fn in_region(read: &ReadResponse<E::Snapshot>, key: &Key) -> Result<()> {
        check_key_in_region(&read.region, key.as_encoded(), &key.to_raw()?)?;
        Ok(())
    }

    /// `[start, end)` clipped to the region (encoded; empty end = unbounded).
    fn clip(read: &ReadResponse<E::Snapshot>, start: &Key, end: &Key) -> Option<(Key, Key)> {
        let (lo, hi) = clip_to_region(&read.region, start.as_encoded(), end.as_encoded());
        (hi.is_empty() || lo < hi).then(|| (Key::from_encoded(lo), Key::from_encoded(hi)))
    }

    // ---- reads ----

    /// A read at `ts` first raises `max_ts`, then checks the memory locks
    /// (see `concurrency`), then reads a snapshot taken after both.
    fn memory_lock_blocking(&self, key: &Key, ts: TimeStamp) -> Option<atoll_txn::Error> {
        let lock = self.cm.lock_of(key)?;
        lock.blocks_read_at(ts).then(|| atoll_txn::Error::KeyIsLocked(Box::new(lock.info(key))))
    }

    pub async fn get(&self, ctx: &Context, key: &[u8], ts: TimeStamp) -> Result<Option<Vec<u8>>> {
        let key = self.keys("kv_get", ctx, [key])?.remove(0);
        self.cm.update_max_ts(ts);
        if let Some(e) = self.memory_lock_blocking(&key, ts) {
            return Err(e.into());
        }
        let read = snapshot(&self.store, ctx).await?;
        Self::in_region(&read, &key)?;
        Ok(MvccReader::new(&*read.snapshot).get(&key, ts)?)
    }

    /// The existing keys' values, and the locks in the way of others.
    pub async fn batch_get(
        &self,
        ctx: &Context,
        raw: &[Vec<u8>],
        ts: TimeStamp,
    ) -> Result<Vec<KeyResult>> {
        let keys = self.keys("kv_batch_get", ctx, raw.iter().map(Vec::as_slice))?;
        self.cm.update_max_ts(ts);
        let blocked: Vec<Option<atoll_txn::Error>> =
            keys.iter().map(|k| self.memory_lock_blocking(k, ts)).collect();
        let read = snapshot(&self.store, ctx).await?;
        let reader = MvccReader::new(&*read.snapshot);
        let mut out = vec![];
        for ((key, raw), blocked) in keys.iter().zip(raw).zip(blocked) {
            Self::in_region(&read, key)?;
            if let Some(e) = blocked {
                out.push((raw.clone(), Err(e)));
                continue;
            }
            match reader.get(key, ts) {
                Ok(Some(v)) => out.push((raw.clone(), Ok(v))),
                Ok(None) => {}
                Err(e @ atoll_txn::Error::KeyIsLocked(_)) => out.push((raw.clone(), Err(e))),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// A snapshot scan within the region. Forward: `[start, end)`. Reverse
    /// (TiKV): `start` is the exclusive upper bound and `end` the inclusive
    /// lower one. Locked keys come back as pairs with their error.
    #[allow(clippy::too_many_arguments)]
    pub async fn scan(
        &self,
        ctx: &Context,
        start: &[u8],
        end: &[u8],
        limit: u32,
        key_only: bool,
        reverse: bool,
        ts: TimeStamp,
    ) -> Result<Vec<KeyResult>> {
        if limit > self.max_scan {
            return Err(bad(format!(
                "scan limit {limit} exceeds max-scan-limit {}",
                self.max_scan
            )));
        }
        let (lo, hi) = if reverse { (end, start) } else { (start, end) };
        let (lo, hi) = (self.bound("kv_scan", ctx, lo)?, self.bound("kv_scan", ctx, hi)?);
        self.cm.update_max_ts(ts);
        let mem = self.cm.find_in_range(&lo, &hi, |_, l| l.blocks_read_at(ts));
        let read = snapshot(&self.store, ctx).await?;
        let Some((lo, hi)) = Self::clip(&read, &lo, &hi) else { return Ok(vec![]) };
        let mut out = vec![];
        if let Some((key, lock)) = mem {
            if key >= lo && (hi.as_encoded().is_empty() || key < hi) {
                let raw = key.to_raw()?;
                out.push((raw, Err(atoll_txn::Error::KeyIsLocked(Box::new(lock.info(&key))))));
                return Ok(out);
            }
        }
        let reader = MvccReader::new(&*read.snapshot);
        let mut failed = None;
        reader.scan_keys(&lo, &hi, reverse, &mut |key| {
            if out.len() >= limit as usize {
                return Ok(false);
            }
            match reader.get(&key, ts) {
                Ok(Some(v)) => out.push((key.to_raw()?, Ok(if key_only { vec![] } else { v }))),
                Ok(None) => {}
                Err(e @ atoll_txn::Error::KeyIsLocked(_)) => out.push((key.to_raw()?, Err(e))),
                Err(e) => {
                    failed = Some(e);
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(out),
        }
    }

    /// Locks with ts ≤ `max_ts` in `[start, end)` clipped to the region
    /// (the end may lie past it: ScanLock's end is the caller's global one).
    pub async fn scan_lock(
        &self,
        ctx: &Context,
        max_ts: TimeStamp,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<LockInfo>> {
        let (lo, hi) =
            (self.bound("kv_scan_lock", ctx, start)?, self.bound("kv_scan_lock", ctx, end)?);
        self.cm.update_max_ts(max_ts);
        let read = snapshot(&self.store, ctx).await?;
        let Some((lo, hi)) = Self::clip(&read, &lo, &hi) else { return Ok(vec![]) };
        let limit = if limit == 0 { self.max_scan } else { limit.min(self.max_scan) };
        Ok(MvccReader::new(&*read.snapshot).scan_locks(&lo, &hi, max_ts, limit as usize)?)
    }

    // ---- writes ----

    /// Takes `keys`' latches and a snapshot of the region that holds them.
    async fn begin(&self, ctx: &Context, keys: &[Key]) -> Result<Cmd<E::Snapshot>> {
        let latches = self.latches.acquire(keys.iter().map(Key::as_encoded)).await;
        let read = snapshot(&self.store, ctx).await?;
        for k in keys {
            Self::in_region(&read, k)?;
        }
        Ok(Cmd { latches, read })
    }

    /// Proposes what the command wrote as one raft command, if anything.
    /// The latches (and memory locks) are released when raftstore answers,
    /// which may be after this returns `Undetermined` to the client.
    async fn finish(
        &self,
        ctx: &Context,
        cmd: Cmd<E::Snapshot>,
        txn: MvccTxn,
        memory_locks: Option<MemoryLocks>,
    ) -> Result<()> {
        if txn.is_empty() {
            return Ok(());
        }
        let requests = txn.modifies.into_iter().map(to_request).collect();
        self.propose(ctx, cmd.read.term, requests, (cmd.latches, memory_locks)).await
    }

    /// Proposes `requests` as one raft command of the leader term `term`
    /// (that of the snapshot they were computed from) and waits for the
    /// answer. `guards` live until raftstore answers, even when the wait
    /// gives up first and the outcome is `Undetermined`.
    async fn propose(
        &self,
        ctx: &Context,
        term: u64,
        requests: Vec<Request>,
        guards: impl Send + 'static,
    ) -> Result<()> {
        let mut h = header(ctx);
        h.term = term;
        let req = RaftCmdRequest { header: Some(h), requests, admin_request: None };
        let (tx, mut rx) = oneshot::channel();
        self.store.write(req, Box::new(move |r| drop(tx.send(r))));
        match tokio::time::timeout(REQUEST_TIMEOUT, &mut rx).await {
            Ok(Ok(r)) => r.map(|_| ()).map_err(Error::from),
            Ok(Err(_)) => Err(atoll_raftstore::Error::Undetermined(
                "the store dropped the write (shutting down?)".into(),
            )
            .into()),
            Err(_) => {
                // Still pending in raft: keep the keys guarded until it ends.
                tokio::spawn(async move {
                    let _ = rx.await;
                    drop(guards);
                });
                Err(atoll_raftstore::Error::Undetermined(format!(
                    "no answer within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ))
                .into())
            }
        }
    }

    /// Runs `f` over `keys` as one command: latches, snapshot, one write.
    async fn execute<T>(
        &self,
        ctx: &Context,
        keys: &[Key],
        f: impl FnOnce(&mut MvccTxn, &MvccReader<'_, E::Snapshot>) -> Result<T>,
    ) -> Result<T> {
        let cmd = self.begin(ctx, keys).await?;
        let mut txn = MvccTxn::new();
        let out = f(&mut txn, &MvccReader::new(&*cmd.read.snapshot))?;
        self.finish(ctx, cmd, txn, None).await?;
        Ok(out)
    }

    /// A region's first async-commit or 1PC write under a new leader
    /// waits for a PD timestamp: reads served by the previous leader
    /// raised another store's `max_ts`, and every one of them used a
    /// timestamp older than this one.
    async fn sync_max_ts(&self, region_id: u64, term: u64) -> Result<()> {
        if self.synced.get(&region_id).is_some_and(|t| *t == term) {
            return Ok(());
        }
        let ts = (self.tso)().await.map_err(|e| {
            atoll_raftstore::Error::Pd(format!("max_ts sync for region {region_id}: {e}"))
        })?;
        self.cm.update_max_ts(ts);
        self.synced.insert(region_id, term);
        Ok(())
    }

    /// Prewrite. Async commit and 1PC: the store's `max_ts` (synced for
    /// the region's leader term) decides `min_commit_ts`, with the keys in
    /// the memory lock table from before that until the write is applied.
    pub async fn prewrite(&self, ctx: &Context, a: PrewriteArgs) -> Result<PrewriteOutcome> {
        let keys = self.keys("kv_prewrite", ctx, a.mutations.iter().map(|m| m.key.as_slice()))?;
        if keys.is_empty() {
            return Err(bad("prewrite with no mutations"));
        }
        if let Some(m) = a.mutations.iter().find(|m| m.value.len() > self.max_value) {
            return Err(bad(format!(
                "value of {} bytes exceeds max-value-size {}",
                m.value.len(),
                self.max_value
            )));
        }
        let mut props = a.props;
        let cmd = self.begin(ctx, &keys).await?;
        if a.mutations.iter().any(|m| matches!(m.op, Op::Insert | Op::CheckNotExists)) {
            // Checking that a key is missing reads it at start_ts (TiKV's
            // actions/prewrite.rs: "checkNotExists is equivalent to a
            // get"): a later async-commit or 1PC writer must commit above.
            // Under the latches, before any min_commit_ts is computed.
            self.cm.update_max_ts(props.start_ts);
        }
        let computed_ts = props.use_async_commit || a.try_one_pc;
        let mut memory_locks = None;
        if computed_ts {
            self.sync_max_ts(cmd.read.region.id, cmd.read.term).await?;
            let locks = keys
                .iter()
                .zip(&a.mutations)
                .map(|(k, m)| {
                    let t = match m.op {
                        Op::Del => LockType::Delete,
                        Op::Lock | Op::CheckNotExists => LockType::Lock,
                        _ => LockType::Put,
                    };
                    (k.clone(), Lock::new(t, props.primary.clone(), props.start_ts, props.lock_ttl))
                })
                .collect();
            let floor = props.start_ts.max(props.for_update_ts).max(props.min_commit_ts) + 1;
            let (guard, min_commit_ts) = self.cm.lock_keys(locks, floor);
            memory_locks = Some(guard);
            props.min_commit_ts = min_commit_ts;
        } else {
            props.min_commit_ts = 0;
        }
        let reader = MvccReader::new(&*cmd.read.snapshot);
        let mut txn = if a.try_one_pc { MvccTxn::one_pc() } else { MvccTxn::new() };
        let mut out = PrewriteOutcome::default();
        let primary = Key::from_raw(&props.primary);
        for (key, m) in keys.into_iter().zip(a.mutations) {
            let secondaries =
                (props.use_async_commit && key == primary).then_some(a.secondaries.as_slice());
            let mutation = Mutation { op: m.op, key, value: m.value };
            match actions::prewrite(&mut txn, &reader, &props, mutation, secondaries, m.action) {
                Ok(ts) => out.min_commit_ts = out.min_commit_ts.max(ts),
                Err(atoll_txn::Error::Committed { commit_ts, .. }) => {
                    // A resent prewrite of a committed transaction: write
                    // nothing, answer the commit ts it has (TiKV's
                    // Prewriter::write_result), not a fresh one.
                    return Ok(PrewriteOutcome {
                        errors: vec![],
                        min_commit_ts: if props.use_async_commit { commit_ts } else { 0 },
                        one_pc_commit_ts: if a.try_one_pc { commit_ts } else { 0 },
                    });
                }
                Err(e @ (atoll_txn::Error::Engine(_) | atoll_txn::Error::Corruption(_))) => {
                    return Err(e.into())
                }
                Err(e) => out.errors.push(e),
            }
        }
        if !out.errors.is_empty() {
            out.min_commit_ts = 0;
            return Ok(out);
        }
        if a.try_one_pc {
            let commit_ts = out.min_commit_ts.max(props.min_commit_ts);
            actions::commit_one_pc(&mut txn, &reader, commit_ts)?;
            out.one_pc_commit_ts = commit_ts;
            out.min_commit_ts = 0;
        } else if !props.use_async_commit {
            out.min_commit_ts = 0;
        }
        self.finish(ctx, cmd, txn, memory_locks).await?;
        Ok(out)
    }

    pub async fn commit(
        &self,
        ctx: &Context,
        raw: &[Vec<u8>],
        start_ts: TimeStamp,
        commit_ts: TimeStamp,
    ) -> Result<()> {
        let keys = self.keys("kv_commit", ctx, raw.iter().map(Vec::as_slice))?;
        self.execute(ctx, &keys, |txn, reader| {
            for k in &keys {
                actions::commit(txn, reader, k, start_ts, commit_ts)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn batch_rollback(
        &self,
        ctx: &Context,
        raw: &[Vec<u8>],
        start_ts: TimeStamp,
    ) -> Result<()> {
        let keys = self.keys("kv_batch_rollback", ctx, raw.iter().map(Vec::as_slice))?;
        self.execute(ctx, &keys, |txn, reader| {
            for k in &keys {
                actions::rollback(txn, reader, k, start_ts)?;
            }
            Ok(())
        })
        .await
    }

    /// Cleanup (TiKV): roll back `start_ts` on `key` unless its lock is
    /// still alive at `current_ts` (0: roll back regardless). A committed
    /// transaction is `Committed` with its commit ts.
    pub async fn cleanup(
        &self,
        ctx: &Context,
        raw: &[u8],
        start_ts: TimeStamp,
        current_ts: TimeStamp,
    ) -> Result<()> {
        let keys = self.keys("kv_cleanup", ctx, [raw])?;
        self.cm.update_max_ts(current_ts);
        self.execute(ctx, &keys, |txn, reader| {
            let key = &keys[0];
            if let Some(lock) = reader.load_lock(key)? {
                if lock.ts == start_ts && current_ts != 0 && !lock.is_expired(current_ts) {
                    return Err(atoll_txn::Error::KeyIsLocked(Box::new(lock.info(key))).into());
                }
            }
            actions::rollback(txn, reader, key, start_ts)?;
            Ok(())
        })
        .await
    }

    pub async fn check_txn_status(
        &self,
        ctx: &Context,
        primary: &[u8],
        args: CheckTxnStatusArgs,
    ) -> Result<TxnStatus> {
        let keys = self.keys("kv_check_txn_status", ctx, [primary])?;
        for ts in [args.lock_ts, args.caller_start_ts, args.current_ts] {
            self.cm.update_max_ts(ts);
        }
        self.execute(ctx, &keys, |txn, reader| {
            Ok(actions::check_txn_status(txn, reader, &keys[0], &args)?)
        })
        .await
    }

    pub async fn check_secondary_locks(
        &self,
        ctx: &Context,
        raw: &[Vec<u8>],
        start_ts: TimeStamp,
    ) -> Result<SecondaryLocks> {
        let keys = self.keys("kv_check_secondary_locks", ctx, raw.iter().map(Vec::as_slice))?;
        self.cm.update_max_ts(start_ts);
        self.execute(ctx, &keys, |txn, reader| {
            Ok(actions::check_secondary_locks(txn, reader, &keys, start_ts)?)
        })
        .await
    }

    pub async fn txn_heart_beat(
        &self,
        ctx: &Context,
        primary: &[u8],
        start_ts: TimeStamp,
        advise_ttl: u64,
    ) -> Result<u64> {
        let keys = self.keys("kv_txn_heart_beat", ctx, [primary])?;
        self.execute(ctx, &keys, |txn, reader| {
            Ok(actions::txn_heart_beat(txn, reader, &keys[0], start_ts, advise_ttl)?)
        })
        .await
    }

    /// PessimisticLock: all keys or none. `Ok(Err(errors))`: per-key
    /// errors, nothing written; `Ok(Ok(values))`: one value per key (when
    /// asked for).
    pub async fn pessimistic_lock(
        &self,
        ctx: &Context,
        a: PessimisticLockArgs,
    ) -> Result<std::result::Result<Vec<Option<Vec<u8>>>, Vec<atoll_txn::Error>>> {
        let keys =
            self.keys("kv_pessimistic_lock", ctx, a.keys.iter().map(|(k, _)| k.as_slice()))?;
        if keys.is_empty() {
            return Err(bad("pessimistic lock with no keys"));
        }
        self.cm.update_max_ts(a.props.for_update_ts);
        let cmd = self.begin(ctx, &keys).await?;
        let reader = MvccReader::new(&*cmd.read.snapshot);
        let mut txn = MvccTxn::new();
        let mut values = Vec::with_capacity(keys.len());
        let mut errors = vec![];
        for (key, (_, should_not_exist)) in keys.iter().zip(&a.keys) {
            match actions::pessimistic_lock(&mut txn, &reader, &a.props, key, *should_not_exist) {
                Ok(v) => values.push(v),
                Err(e @ (atoll_txn::Error::Engine(_) | atoll_txn::Error::Corruption(_))) => {
                    return Err(e.into())
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Ok(Err(errors));
        }
        self.finish(ctx, cmd, txn, None).await?;
        Ok(Ok(values))
    }

    pub async fn pessimistic_rollback(
        &self,
        ctx: &Context,
        raw: &[Vec<u8>],
        start_ts: TimeStamp,
        for_update_ts: TimeStamp,
    ) -> Result<()> {
        let keys = self.keys("kv_pessimistic_rollback", ctx, raw.iter().map(Vec::as_slice))?;
        self.execute(ctx, &keys, |txn, reader| {
            for k in &keys {
                actions::pessimistic_rollback(txn, reader, k, start_ts, for_update_ts)?;
            }
            Ok(())
        })
        .await
    }

    /// ResolveLock: commits (commit ts > 0) or rolls back (0) the
    /// transactions of `txns` (start ts → commit ts) on `raw` keys, or on
    /// every lock of theirs in the region when `raw` is empty, at most
    /// [`RESOLVE_BATCH_MAX`] keys per raft command.
    pub async fn resolve_lock(
        &self,
        ctx: &Context,
        txns: HashMap<TimeStamp, TimeStamp>,
        raw: &[Vec<u8>],
    ) -> Result<()> {
        check_api(self.api, "kv_resolve_lock", ctx)?;
        for (&start_ts, &commit_ts) in &txns {
            if commit_ts != 0 && commit_ts <= start_ts {
                return Err(atoll_txn::Error::InvalidTxnTso(format!(
                    "commit_ts {commit_ts} is not after start_ts {start_ts}"
                ))
                .into());
            }
        }
        if !raw.is_empty() {
            let keys = self.keys("kv_resolve_lock", ctx, raw.iter().map(Vec::as_slice))?;
            return self.resolve_keys(ctx, &keys, &txns).await.map(|_| ());
        }
        loop {
            let read = snapshot(&self.store, ctx).await?;
            let (lo, hi) = (
                Key::from_encoded(read.region.start_key.clone()),
                Key::from_encoded(read.region.end_key.clone()),
            );
            let mut keys = vec![];
            MvccReader::new(&*read.snapshot).scan_locks_with(&lo, &hi, &mut |key, lock| {
                if txns.contains_key(&lock.ts) {
                    keys.push(key);
                }
                Ok(keys.len() < RESOLVE_BATCH_MAX)
            })?;
            drop(read);
            if keys.is_empty() || self.resolve_keys(ctx, &keys, &txns).await? == 0 {
                return Ok(());
            }
        }
    }

    /// Resolves the locks of `txns` on `keys` in one command; returns how
    /// many it resolved.
    async fn resolve_keys(
        &self,
        ctx: &Context,
        keys: &[Key],
        txns: &HashMap<TimeStamp, TimeStamp>,
    ) -> Result<usize> {
        self.execute(ctx, keys, |txn, reader| {
            let mut resolved = 0;
            for key in keys {
                let Some(lock) = reader.load_lock(key)? else { continue };
                let Some(&commit_ts) = txns.get(&lock.ts) else { continue };
                resolved += 1;
                if commit_ts == 0 {
                    actions::rollback(txn, reader, key, lock.ts)?;
                } else if lock.lock_type == LockType::Pessimistic {
                    // Locked, never prewritten: no data of a committed transaction.
                    actions::pessimistic_rollback(txn, reader, key, lock.ts, u64::MAX)?;
                } else {
                    actions::commit(txn, reader, key, lock.ts, commit_ts)?;
                }
            }
            Ok(resolved)
        })
        .await
    }

    /// Garbage-collects `region` (if this store leads it) up to
    /// `safe_point`, [`GC_BATCH_KEYS`] keys per raft command. Returns
    /// (keys looked at, versions removed).
    pub async fn gc_region(
        &self,
        region: &metapb::Region,
        safe_point: TimeStamp,
    ) -> Result<(u64, u64)> {
        let peer = region.peers.iter().find(|p| p.store_id == self.store.store_id).cloned();
        let ctx = Context {
            region_id: region.id,
            region_epoch: region.region_epoch.clone(),
            peer,
            api_version: self.api.to_proto(),
            ..Default::default()
        };
        let (mut scanned, mut removed) = (0u64, 0u64);
        let mut from = Key::from_encoded(region.start_key.clone());
        let end = Key::from_encoded(region.end_key.clone());
        loop {
            let read = snapshot(&self.store, &ctx).await?;
            let mut keys = Vec::with_capacity(GC_BATCH_KEYS);
            MvccReader::new(&*read.snapshot).scan_keys(&from, &end, false, &mut |k| {
                keys.push(k);
                Ok(keys.len() < GC_BATCH_KEYS)
            })?;
            drop(read);
            let Some(last) = keys.last() else { return Ok((scanned, removed)) };
            // Past every version of the last key and before the next key.
            from = Key::from_encoded([last.as_encoded(), &[0xff; 9]].concat());
            let full = keys.len() == GC_BATCH_KEYS;
            scanned += keys.len() as u64;
            removed += self
                .execute(&ctx, &keys, |txn, reader| {
                    let mut n = 0;
                    for k in &keys {
                        n += actions::gc_key(txn, reader, k, safe_point)? as u64;
                    }
                    Ok(n)
                })
                .await?;
            if !full {
                return Ok((scanned, removed));
            }
        }
    }

    /// KvDeleteRange: removes every version and lock of `[start, end)`
    /// within the region through raft.
    pub async fn delete_range(&self, ctx: &Context, start: &[u8], end: &[u8]) -> Result<()> {
        let (lo, hi) =
            (self.bound("kv_delete_range", ctx, start)?, self.bound("kv_delete_range", ctx, end)?);
        let read = snapshot(&self.store, ctx).await?;
        let Some((lo, hi)) = Self::clip(&read, &lo, &hi) else { return Ok(()) };
        let requests = [CF_DEFAULT, CF_LOCK, CF_WRITE]
            .into_iter()
            .map(|cf| Request {
                cmd_type: CmdType::DeleteRange as i32,
                delete_range: Some(DeleteRangeRequest {
                    cf: cf.into(),
                    start_key: lo.as_encoded().to_vec(),
                    end_key: hi.as_encoded().to_vec(),
                }),
                ..Default::default()
            })
            .collect();
        self.propose(ctx, read.term, requests, ()).await
    }

    /// UnsafeDestroyRange: deletes `[start, end)` from this store's data
    /// column families directly — no raft, no region — as TiKV does for
    /// dropped tables; the client sends it to every store.
    pub fn unsafe_destroy_range(&self, ctx: &Context, start: &[u8], end: &[u8]) -> Result<()> {
        let (lo, hi) = (
            self.bound("unsafe_destroy_range", ctx, start)?,
            self.bound("unsafe_destroy_range", ctx, end)?,
        );
        let (lo, hi) = (data_key(lo.as_encoded()), data_end_key(hi.as_encoded()));
        if lo >= hi {
            return Ok(());
        }
        let mut wb = self.engine.write_batch();
        for cf in [CF_DEFAULT, CF_LOCK, CF_WRITE] {
            wb.delete_range_cf(cf, &lo, &hi).map_err(atoll_raftstore::Error::from)?;
        }
        self.engine.write(&mut wb, WriteOptions::sync()).map_err(atoll_raftstore::Error::from)?;
        Ok(())
    }
}

/// A modification as a raft command request (keys get `z` at apply).
fn to_request(m: Modify) -> Request {
    match m {
        Modify::Put { cf, key, value } => Request {
            cmd_type: CmdType::Put as i32,
            put: Some(PutRequest { cf: cf.into(), key, value }),
            ..Default::default()
        },
        Modify::Delete { cf, key } => Request {
            cmd_type: CmdType::Delete as i32,
            delete: Some(DeleteRequest { cf: cf.into(), key }),
            ..Default::default()
        },
    }
}
