//! `max_ts` and its bound (TiKV's `ConcurrencyManager::update_max_ts`,
//! `set_max_ts_limit` and the max-ts updater of `components/server/src/
//! server.rs`). Every transactional read or lock at ts raises `max_ts` to
//! it, and async-commit and 1PC writes commit above `max_ts`; so a ts far
//! ahead of PD's clock is refused, never taken: the limit is the latest
//! PD timestamp seen plus `server.max-ts-drift`, refreshed in the
//! background, and fetched afresh once before a ts above it is refused.
//!
//! TiKV checks requests of some kinds (CheckTxnStatus, ScanLock, ...)
//! against PD's exact time and reads against the drifted one; Atoll checks
//! every request against the drifted limit.

use std::sync::Arc;
use std::time::Duration;

use atoll_engine_traits::KvEngine;
use atoll_txn::TimeStamp;

use super::concurrency::AboveLimit;
use super::{Result, TxnStorage};

/// How long the double check waits for PD (TiKV's TSO_TIMEOUT).
const TSO_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the limit follows PD's clock (TiKV's
/// `storage.max-ts.cache-sync-interval`).
pub const LIMIT_REFRESH_INTERVAL: Duration = Duration::from_secs(15);

impl<E: KvEngine> TxnStorage<E> {
    /// Raises `max_ts` to a request's `ts`; refused (InvalidMaxTsUpdate)
    /// when `ts` is still above the limit after a fresh PD timestamp.
    pub(in crate::txn) async fn update_max_ts(&self, ts: TimeStamp) -> Result<()> {
        if self.cm.update_max_ts(ts).is_ok() {
            return Ok(());
        }
        self.refresh_max_ts_limit().await?;
        self.cm.update_max_ts(ts).map_err(|AboveLimit(limit)| {
            tracing::warn!("refused to raise max_ts to {ts}: above the limit {limit}");
            atoll_txn::Error::InvalidMaxTsUpdate { attempted: ts, limit }.into()
        })
    }

    /// Moves the limit up to PD's current time plus the drift allowance.
    pub async fn refresh_max_ts_limit(&self) -> Result<()> {
        let ts = self.pd_ts("max_ts limit").await?;
        self.cm.set_max_ts_limit(ts);
        Ok(())
    }

    /// A region's first async-commit or 1PC write under a new leader
    /// waits for a PD timestamp: reads served by the previous leader
    /// raised another store's `max_ts`, and every one of them used a
    /// timestamp older than this one.
    pub(in crate::txn) async fn sync_max_ts(&self, region_id: u64, term: u64) -> Result<()> {
        if self.synced.get(&region_id).is_some_and(|t| *t == term) {
            return Ok(());
        }
        let ts = self.pd_ts(&format!("max_ts sync for region {region_id}")).await?;
        self.cm.set_max_ts_limit(ts);
        // Within the limit just set (PD's ts plus a drift), so accepted.
        self.cm.update_max_ts(ts).map_err(|AboveLimit(limit)| {
            atoll_txn::Error::InvalidMaxTsUpdate { attempted: ts, limit }
        })?;
        self.synced.insert(region_id, term);
        Ok(())
    }

    async fn pd_ts(&self, what: &str) -> Result<TimeStamp> {
        let ts = match tokio::time::timeout(TSO_TIMEOUT, (self.tso)()).await {
            Ok(Ok(ts)) => ts,
            Ok(Err(e)) => return Err(atoll_raftstore::Error::Pd(format!("{what}: {e}")).into()),
            Err(_) => {
                let e = format!("{what}: no timestamp from PD in {TSO_TIMEOUT:?}");
                return Err(atoll_raftstore::Error::Pd(e).into());
            }
        };
        Ok(ts)
    }
}

/// Keeps the limit near PD's clock until the task is dropped (aborted at
/// store stop). A failed refresh keeps the old limit: requests above it
/// then fetch a timestamp themselves.
pub async fn run_limit_updater<E: KvEngine>(txn: Arc<TxnStorage<E>>) {
    loop {
        if let Err(e) = txn.refresh_max_ts_limit().await {
            tracing::debug!("{e}");
        }
        tokio::time::sleep(LIMIT_REFRESH_INTERVAL).await;
    }
}
