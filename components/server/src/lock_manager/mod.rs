//! Pessimistic lock waiting and deadlock detection (TiKV's lock manager,
//! src/server/lock_manager): a PessimisticLock request that meets another
//! transaction's lock waits for it to go, up to its `wait_timeout`, woken
//! by the write that releases it ([`waiter`]); before it waits, the
//! cluster's deadlock detector checks the wait closes no cycle
//! ([`detector`]), else the request is answered `Deadlock`.
//!
//! The detector runs on the store that leads the first region, as in
//! TiKV; the other stores send it their waits ([`route`]). A detector that
//! cannot be reached checks nothing: the wait then ends by its timeout, as
//! a deadlock does in TiKV while its detector changes leader.

mod detector;
mod route;
pub mod service;
mod waiter;

use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_pd_client::PdClient;
use atoll_proto::kvrpcpb;
use atoll_txn::WaitFor;
use parking_lot::Mutex;

pub use detector::DetectTable;
use route::Route;
pub use waiter::{Wait, WaiterManager};

use crate::config::PessimisticTxnConfig;
use crate::metrics::DEADLOCK_DETECT;

pub struct LockManager {
    pub waiters: WaiterManager,
    table: Mutex<DetectTable>,
    route: Option<Route>,
    wait_max: Duration,
}

impl LockManager {
    /// The lock manager of a store (`store_id`) of the cluster `pd` serves.
    pub fn new(cfg: &PessimisticTxnConfig, pd: Arc<PdClient>, store_id: u64) -> Arc<LockManager> {
        Arc::new(Self::build(cfg, Some(Route::new(pd, store_id))))
    }

    /// A lock manager whose detector sees only this process's waits (tests
    /// of one store).
    pub fn local(cfg: &PessimisticTxnConfig) -> Arc<LockManager> {
        Arc::new(Self::build(cfg, None))
    }

    fn build(cfg: &PessimisticTxnConfig, route: Option<Route>) -> LockManager {
        let wait_max = cfg.wait_for_lock_timeout.0;
        // A recorded wait outlives the longest wait, so only a wait whose
        // end was never reported expires.
        let ttl = wait_max + Duration::from_secs(2);
        LockManager {
            waiters: WaiterManager::new(cfg.max_waiters),
            table: Mutex::new(DetectTable::new(cfg.max_waiters * 4, ttl)),
            route,
            wait_max,
        }
    }

    /// How long a request with kvrpcpb's `wait_timeout` (ms) may wait: 0 is
    /// the store's `wait-for-lock-timeout`, negative is not at all, and no
    /// request waits longer than that setting (TiKV's
    /// `WaitTimeout::from_encoded` and `into_duration_with_ceiling`).
    pub fn wait_for(&self, wait_timeout: i64) -> Option<Duration> {
        match wait_timeout {
            t if t < 0 => None,
            0 => Some(self.wait_max),
            t => Some(Duration::from_millis(t as u64).min(self.wait_max)),
        }
    }

    /// Asks the detector whether `w` closes a cycle of waits; `Some(cycle)`
    /// when it does (then `w` is not recorded). A detector that cannot be
    /// reached answers `None`.
    pub async fn detect(&self, w: &WaitFor) -> Option<Vec<WaitFor>> {
        let (place, res) = match self.remote().await {
            Ok(None) => ("local", Ok(self.detect_here(w))),
            Ok(Some(r)) => ("remote", r.detect(w).await),
            Err(e) => ("remote", Err(e)),
        };
        let result = match &res {
            Ok(None) => "ok",
            Ok(Some(_)) => "deadlock",
            Err(e) => {
                tracing::debug!("deadlock detector: {e}");
                "error"
            }
        };
        DEADLOCK_DETECT.with_label_values(&[place, result]).inc();
        res.ok().flatten()
    }

    /// `w`'s wait ended: the detector forgets it.
    pub async fn wait_ended(&self, w: &WaitFor) {
        match self.remote().await {
            Ok(None) => self.clean_up_here(w),
            Ok(Some(r)) => {
                if let Err(e) = r.clean_up_wait_for(w).await {
                    tracing::debug!("deadlock detector: {e}");
                }
            }
            // Where it went, the wait expires.
            Err(_) => {}
        }
    }

    /// The detector's answer to a wait, on this store's table.
    pub fn detect_here(&self, w: &WaitFor) -> Option<Vec<WaitFor>> {
        self.table.lock().detect(w, Instant::now())
    }

    pub fn clean_up_here(&self, w: &WaitFor) {
        self.table.lock().clean_up_wait_for(w)
    }

    /// `None` when the detector is this store's table, else the route to it.
    async fn remote(&self) -> Result<Option<&Route>, String> {
        let Some(r) = &self.route else { return Ok(None) };
        Ok(if r.detector_is_here().await? { None } else { Some(r) })
    }
}

/// The detector's hash of a key (TiKV hashes with farmhash; any stable
/// hash does, it only tells keys apart).
pub fn key_hash(key: &[u8]) -> u64 {
    // FNV-1a.
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// A wait as the detector's messages carry it.
pub fn wait_for_entry(w: &atoll_txn::WaitFor) -> kvrpcpb::WaitForEntry {
    kvrpcpb::WaitForEntry {
        txn: w.txn,
        wait_for_txn: w.wait_for_txn,
        key_hash: w.key_hash,
        key: w.key.clone(),
        ..Default::default()
    }
}

pub fn wait_for(e: &kvrpcpb::WaitForEntry) -> atoll_txn::WaitFor {
    atoll_txn::WaitFor {
        txn: e.txn,
        wait_for_txn: e.wait_for_txn,
        key_hash: e.key_hash,
        key: e.key.clone(),
    }
}
