//! The GC worker: follows PD's GC safe point and removes, from every
//! region this store leads, the versions no read at or after it can see
//! (`atoll_txn::actions::gc_key`, through raft, in bounded batches).
//! Followers get the deletions by replication. Progress is kept per region
//! (`Progress`), so a region that changes leader between two safe points
//! is still collected. TiKV today collects in a compaction filter on every
//! store instead (`src/server/gc_worker/compaction_filter.rs`); Atoll keeps
//! the older leader-driven scheme.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_engine_traits::KvEngine;
use atoll_pd_client::PdClient;
use atoll_proto::metapb::Region;
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
    let mut progress = Progress::default();
    loop {
        tokio::time::sleep(interval).await;
        let safe_point = match pd.get_gc_safe_point().await {
            Ok(sp) => sp,
            Err(e) => {
                tracing::debug!("gc: no safe point from PD: {e}");
                continue;
            }
        };
        let started = Instant::now();
        let txn = &txn;
        let gc = |region: Region| async move {
            match txn.gc_region(&region, safe_point).await {
                Ok((scanned, removed)) => {
                    GC_KEYS.with_label_values(&["scanned"]).inc_by(scanned);
                    GC_KEYS.with_label_values(&["removed"]).inc_by(removed);
                    Outcome::Collected
                }
                // Not the leader here: that store collects it.
                Err(crate::txn::Error::Store(e)) if e.to_region_error().is_some() => {
                    Outcome::NotLeader
                }
                Err(e) => {
                    tracing::warn!(region = region.id, "gc up to {safe_point}: {e}");
                    Outcome::Failed
                }
            }
        };
        if progress.round(store.regions(), safe_point, gc).await {
            GC_SAFE_POINT.set(safe_point as i64);
        }
        GC_ROUND_DURATION.observe(started.elapsed().as_secs_f64());
    }
}

/// How one region's GC went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Collected,
    NotLeader,
    Failed,
}

/// What this store has collected: per region, the last safe point it
/// collected that region up to. A region is tried again every round until
/// it is collected here, so one skipped while another store led it is
/// collected once this store leads it (leadership may move after the
/// other leader's round and before the next safe point).
#[derive(Default)]
struct Progress {
    collected: HashMap<u64, u64>,
}

impl Progress {
    /// Collects, up to `safe_point`, the regions not yet collected up to
    /// it. True when none failed (regions led elsewhere do not count).
    async fn round<F, Fut>(&mut self, regions: Vec<Region>, safe_point: u64, gc: F) -> bool
    where
        F: Fn(Region) -> Fut,
        Fut: Future<Output = Outcome>,
    {
        let live: HashSet<u64> = regions.iter().map(|r| r.id).collect();
        self.collected.retain(|id, _| live.contains(id));
        let mut complete = true;
        for region in regions {
            let id = region.id;
            if self.collected.get(&id).is_some_and(|sp| *sp >= safe_point) {
                continue;
            }
            match gc(region).await {
                Outcome::Collected => {
                    self.collected.insert(id, safe_point);
                }
                Outcome::NotLeader => {}
                Outcome::Failed => complete = false,
            }
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn region(id: u64) -> Region {
        Region { id, ..Default::default() }
    }

    /// Runs a round where the regions in `led` are led here; the ids
    /// collected, in order.
    fn round(p: &mut Progress, regions: &[u64], led: &[u64], sp: u64) -> (Vec<u64>, bool) {
        let collected = RefCell::new(vec![]);
        let led: HashSet<u64> = led.iter().copied().collect();
        let gc = |r: Region| {
            let out = if led.contains(&r.id) {
                collected.borrow_mut().push(r.id);
                Outcome::Collected
            } else {
                Outcome::NotLeader
            };
            async move { out }
        };
        let regions = regions.iter().map(|id| region(*id)).collect();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let all = rt.block_on(p.round(regions, sp, gc));
        (collected.into_inner(), all)
    }

    /// A region skipped because another store led it is collected here
    /// once this store leads it, at the same safe point: the other store
    /// may have run its round before it led the region, and nobody would
    /// collect it up to that point otherwise. Removed regions are
    /// forgotten.
    #[test]
    fn a_region_led_later_is_collected_at_the_same_safe_point() {
        let mut p = Progress::default();
        assert_eq!(round(&mut p, &[1, 2], &[1], 10).0, vec![1]);
        assert_eq!(round(&mut p, &[1, 2], &[1, 2], 10).0, vec![2], "region 2 now led here");
        assert_eq!(round(&mut p, &[1, 2], &[1, 2], 10), (vec![], true), "nothing left at 10");
        assert_eq!(round(&mut p, &[1, 2], &[2], 20).0, vec![2]);
        assert_eq!(round(&mut p, &[2], &[2], 20), (vec![], true));
        assert_eq!(p.collected.keys().collect::<Vec<_>>(), vec![&2], "region 1 is gone");
    }
}
