//! Background workers, each a thread with a bounded queue:
//! - snapshot generation: writes a region's data, as of an apply point, to a file;
//! - split check: measures a region and picks split keys when it is too big.
//!
//! Both read engine snapshots only; results go back to the peer by message
//! (or, for snapshots, into the slot raft polls).

use std::thread::JoinHandle;

use atoll_engine_traits::{Iterable, KvEngine, DATA_CFS};
use atoll_proto::metapb;
use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use prost::Message as _;
use raft::eraftpb::{Snapshot, SnapshotMetadata};

use crate::fsm::RaftRouter;
use crate::msg::PeerMsg;
use crate::snap::{self, SnapKey, SnapManager};
use crate::storage::{conf_state_of, SnapSlot};

/// Snapshot generations queued before new requests fail (raft retries).
pub const SNAP_GEN_QUEUE_MAX: usize = 256;
/// Split checks queued before new ones are skipped (the next tick retries).
pub const SPLIT_CHECK_QUEUE_MAX: usize = 1024;
/// Split keys proposed from one check (the rest come from the next check).
pub const SPLIT_KEYS_MAX: usize = 16;

pub struct SnapGenTask<S> {
    pub snap: S,
    pub region: metapb::Region,
    pub index: u64,
    pub term: u64,
    pub slot: SnapSlot,
}

pub struct SnapGenerator<S> {
    tx: Sender<SnapGenTask<S>>,
}

impl<S> Clone for SnapGenerator<S> {
    fn clone(&self) -> Self {
        SnapGenerator { tx: self.tx.clone() }
    }
}

impl<S: atoll_engine_traits::Snapshot> SnapGenerator<S> {
    pub fn spawn(name: &str, mgr: SnapManager) -> (Self, JoinHandle<()>) {
        let (tx, rx) = channel::bounded(SNAP_GEN_QUEUE_MAX);
        let h = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run_snap_gen(rx, mgr))
            .expect("spawn snapshot generator");
        (SnapGenerator { tx }, h)
    }

    pub fn schedule(&self, task: SnapGenTask<S>) {
        if let Err(TrySendError::Full(t) | TrySendError::Disconnected(t)) = self.tx.try_send(task) {
            *t.slot.lock() = Some(Err("snapshot generator is busy".into()));
        }
    }
}

fn run_snap_gen<S: atoll_engine_traits::Snapshot>(rx: Receiver<SnapGenTask<S>>, mgr: SnapManager) {
    for t in rx {
        let key = SnapKey { region_id: t.region.id, term: t.term, index: t.index };
        let path = mgr.gen_path(&key);
        let res = snap::build(&t.snap, &t.region, &path).map(|data| {
            mgr.remove_gen_older_than(&key);
            crate::metrics::SNAPSHOTS.with_label_values(&["generated"]).inc();
            tracing::info!(
                region = key.region_id,
                index = key.index,
                keys = data.key_count,
                "snapshot generated"
            );
            Snapshot {
                data: data.encode_to_vec(),
                metadata: Some(SnapshotMetadata {
                    conf_state: Some(conf_state_of(&t.region)),
                    index: t.index,
                    term: t.term,
                }),
            }
        });
        *t.slot.lock() = Some(res.map_err(|e| e.to_string()));
    }
}

/// What the region's leader asks the split checker to measure.
pub struct SplitCheckTask {
    pub region: metapb::Region,
    /// Split in two at the middle (by size) whatever the thresholds (an
    /// admin request) instead of by size/keys thresholds.
    pub half: bool,
}

/// Thresholds of the split checker (from the raftstore config).
#[derive(Clone, Copy, Debug)]
pub struct SplitThresholds {
    pub max_size: u64,
    pub split_size: u64,
    pub max_keys: u64,
    pub split_keys: u64,
}

/// Result of measuring one region.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SplitCheckOutcome {
    pub size: u64,
    pub keys: u64,
    /// Raw (unencoded) keys where new regions should start.
    pub split_keys: Vec<Vec<u8>>,
}

/// Walks a region's data in key order and picks a split key every
/// `split_size` bytes / `split_keys` keys, but only if the whole region
/// exceeds its maximum. Memory is bounded by `SPLIT_KEYS_MAX` keys.
pub struct SplitPicker {
    t: SplitThresholds,
    run_size: u64,
    run_keys: u64,
    candidates: Vec<Vec<u8>>,
    out: SplitCheckOutcome,
}

impl SplitPicker {
    pub fn new(t: SplitThresholds) -> Self {
        SplitPicker {
            t,
            run_size: 0,
            run_keys: 0,
            candidates: vec![],
            out: SplitCheckOutcome::default(),
        }
    }

    /// One key (raw) of the primary column family, in order.
    pub fn add(&mut self, key: &[u8], size: u64) {
        let t = &self.t;
        if (self.run_size >= t.split_size || self.run_keys >= t.split_keys)
            && self.candidates.len() < SPLIT_KEYS_MAX
        {
            self.candidates.push(key.to_vec());
            self.run_size = 0;
            self.run_keys = 0;
        }
        self.run_size += size;
        self.run_keys += 1;
        self.out.size += size;
        self.out.keys += 1;
    }

    /// Bytes in other column families: they count toward the size only.
    pub fn add_size(&mut self, size: u64) {
        self.out.size += size;
    }

    pub fn finish(mut self) -> SplitCheckOutcome {
        if self.out.size > self.t.max_size || self.out.keys > self.t.max_keys {
            self.out.split_keys = self.candidates;
        }
        self.out
    }
}

pub fn pick_split_keys(
    items: impl IntoIterator<Item = (Vec<u8>, u64)>,
    t: &SplitThresholds,
) -> SplitCheckOutcome {
    let mut p = SplitPicker::new(*t);
    for (k, size) in items {
        p.add(&k, size);
    }
    p.finish()
}

/// The first `default` key at which half of `total` bytes lie before it
/// (never the region's first key).
fn middle_key<S: Iterable>(
    snap: &S,
    start: &[u8],
    end: &[u8],
    total: u64,
) -> atoll_engine_traits::Result<Option<Vec<u8>>> {
    let mut acc = 0u64;
    let mut found = None;
    snap.scan_cf(atoll_engine_traits::CF_DEFAULT, start, end, false, &mut |k, v| {
        if acc > 0 && acc >= total / 2 {
            found = Some(crate::keys::origin_key(k).to_vec());
            return Ok(false);
        }
        acc += (k.len() + v.len()) as u64;
        Ok(true)
    })?;
    Ok(found)
}

#[derive(Clone)]
pub struct SplitChecker {
    tx: Sender<SplitCheckTask>,
}

impl SplitChecker {
    pub fn spawn<E: KvEngine>(
        name: &str,
        engine: E,
        t: SplitThresholds,
        router: RaftRouter<E>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = channel::bounded(SPLIT_CHECK_QUEUE_MAX);
        let h = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for task in rx {
                    check_region(&engine, &t, &router, task);
                }
            })
            .expect("spawn split checker");
        (SplitChecker { tx }, h)
    }

    /// Queues a check; returns false if the queue is full.
    pub fn schedule(&self, task: SplitCheckTask) -> bool {
        self.tx.try_send(task).is_ok()
    }
}

fn check_region<E: KvEngine>(
    engine: &E,
    t: &SplitThresholds,
    router: &RaftRouter<E>,
    task: SplitCheckTask,
) {
    let region = task.region;
    let (start, end) = snap::region_data_range(&region);
    let snap = engine.snapshot();
    // Split points come from `default` (where raw KV lives); the other data
    // CFs only add to the size.
    let mut picker = SplitPicker::new(*t);
    for cf in DATA_CFS {
        let primary = *cf == atoll_engine_traits::CF_DEFAULT;
        let res = snap.scan_cf(cf, &start, &end, false, &mut |k, v| {
            let size = (k.len() + v.len()) as u64;
            if primary {
                picker.add(crate::keys::origin_key(k), size);
            } else {
                picker.add_size(size);
            }
            Ok(true)
        });
        if let Err(e) = res {
            tracing::warn!(region = region.id, "split check scan: {e}");
            return;
        }
    }
    let mut out = picker.finish();
    if task.half {
        out.split_keys = match middle_key(&snap, &start, &end, out.size) {
            Ok(k) => k.into_iter().collect(),
            Err(e) => {
                tracing::warn!(region = region.id, "half split scan: {e}");
                return;
            }
        };
    }
    let msg = PeerMsg::SplitCheckResult {
        epoch: region.region_epoch.clone().unwrap_or_default(),
        size: out.size,
        keys: out.keys,
        split_keys: out.split_keys,
    };
    let _ = router.send(region.id, msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> SplitThresholds {
        SplitThresholds { max_size: 150, split_size: 100, max_keys: 1000, split_keys: 1000 }
    }

    fn items(n: u8, size: u64) -> Vec<(Vec<u8>, u64)> {
        (0..n).map(|i| (vec![i], size)).collect()
    }

    #[test]
    fn small_regions_are_not_split() {
        let out = pick_split_keys(items(14, 10), &t());
        assert_eq!((out.size, out.keys), (140, 14));
        assert!(out.split_keys.is_empty());
    }

    #[test]
    fn splits_every_split_size() {
        let out = pick_split_keys(items(35, 10), &t());
        assert_eq!(out.split_keys, vec![vec![10], vec![20], vec![30]]);
        let by_keys = SplitThresholds {
            max_size: u64::MAX,
            split_size: u64::MAX,
            max_keys: 5,
            split_keys: 4,
        };
        assert_eq!(pick_split_keys(items(9, 1), &by_keys).split_keys, vec![vec![4], vec![8]]);
    }

    #[test]
    fn caps_split_keys_per_check() {
        let out = pick_split_keys(items(250, 10), &SplitThresholds { split_size: 10, ..t() });
        assert_eq!(out.split_keys.len(), SPLIT_KEYS_MAX);
    }
}
