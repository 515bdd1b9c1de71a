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

mod commands;
mod concurrency;
pub mod convert;
mod latches;
mod max_ts;
mod scheduler;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use atoll_codec::api::{ApiVersion, KEYSPACE_PREFIX_LEN, TXN_KEY_PREFIX};
use atoll_engine_traits::KvEngine;
use atoll_proto::kvrpcpb::Context;
use atoll_raftstore::{check_key_in_region, clip_to_region, ReadResponse, StoreHandle};
use atoll_txn::actions::{self, PessimisticAction};
use atoll_txn::{Key, Op, TimeStamp};
use dashmap::DashMap;

pub use actions::{SecondaryLocks, TxnStatus};
use concurrency::ConcurrencyManager;
use latches::Latches;
pub use max_ts::run_limit_updater;

use crate::config::ServerConfig;
use crate::lock_manager::LockManager;
use crate::request::check_api;

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
    /// kvrpcpb's `wait_timeout` (ms): 0 the store's default, negative none.
    pub wait_timeout: i64,
    /// (key, should not exist)
    pub keys: Vec<(Vec<u8>, bool)>,
}

/// A key's result in a read: its value, or the lock in its way.
pub type KeyResult = (Vec<u8>, std::result::Result<Vec<u8>, atoll_txn::Error>);

/// The transactional commands of one store.
pub struct TxnStorage<E: KvEngine> {
    store: StoreHandle<E>,
    engine: E,
    api: ApiVersion,
    latches: Arc<Latches>,
    cm: Arc<ConcurrencyManager>,
    tso: TsoSource,
    locks: Arc<LockManager>,
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
        locks: Arc<LockManager>,
    ) -> Self {
        TxnStorage {
            store,
            engine,
            api,
            latches: Arc::new(Latches::default()),
            cm: Arc::new(ConcurrencyManager::new(cfg.max_ts_drift.0)),
            tso,
            locks,
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
}
