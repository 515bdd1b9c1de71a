//! The GC worker: follows PD's GC safe point and, each time it moves,
//! removes from every region this store leads the versions no read at or
//! after it can see (`atoll_txn::actions::gc_key`, through raft, in bounded
//! batches). Followers get the deletions by replication.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_engine_traits::KvEngine;
use atoll_pd_client::PdClient;
use atoll_raftstore::StoreHandle;

use crate::metrics::{GC_KEYS, GC_ROUND_DURATION, GC_SAFE_POINT};
use crate::txn::TxnStorage;

/// Runs until the task is dropped (aborted at store stop).
pub async fn run<E: KvEngine>(
    pd: Arc<PdClient>,
    store: StoreHandle<E>,
    txn: Arc<TxnStorage<E>>,
    interval: Duration,
) {
    let mut done = 0u64;
    loop {
        tokio::time::sleep(interval).await;
        let safe_point = match pd.get_gc_safe_point().await {
            Ok(sp) => sp,
            Err(e) => {
                tracing::debug!("gc: no safe point from PD: {e}");
                continue;
            }
        };
        if safe_point <= done {
            continue;
        }
        let started = Instant::now();
        let mut complete = true;
        for region in store.regions() {
            match txn.gc_region(&region, safe_point).await {
                Ok((scanned, removed)) => {
                    GC_KEYS.with_label_values(&["scanned"]).inc_by(scanned);
                    GC_KEYS.with_label_values(&["removed"]).inc_by(removed);
                }
                // Not the leader here: that store collects it.
                Err(crate::txn::Error::Store(e)) if e.to_region_error().is_some() => {}
                Err(e) => {
                    tracing::warn!(region = region.id, "gc up to {safe_point}: {e}");
                    complete = false;
                }
            }
        }
        GC_ROUND_DURATION.observe(started.elapsed().as_secs_f64());
        if complete {
            done = safe_point;
            GC_SAFE_POINT.set(safe_point as i64);
        }
    }
}
