//! Background workers, each a thread with a bounded queue:
//! - snapshot generation: writes a region's data, as of an apply point, to a file;
//! - split check: measures a region and picks split keys when it is too big.
//!
//! Both read engine snapshots only; results go back to the peer by message
//! (or, for snapshots, into the slot raft polls).

use std::thread::JoinHandle;

use atoll_engine_traits::{
    EngineIterator, Iterable, KvEngine, CF_DEFAULT, CF_LOCK, CF_WRITE, DATA_CFS,
};
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

    /// Another version of the key last added: its bytes belong to that
    /// key's run, and the key is not counted again.
    pub fn add_version(&mut self, size: u64) {
        self.run_size += size;
        self.out.size += size;
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

/// Visits a region's keys in order as (split candidate, bytes of the
/// entry): in a transactional region the `write` and `default` entries
/// merged, each without its version (so the versions of a key come
/// together, under one candidate); in a raw region the `default` entries.
fn walk_keys<S: Iterable>(
    snap: &S,
    start: &[u8],
    end: &[u8],
    txn: bool,
    f: &mut dyn FnMut(&[u8], u64) -> bool,
) -> atoll_engine_traits::Result<()> {
    if !txn {
        return snap.scan_cf(CF_DEFAULT, start, end, false, &mut |k, v| {
            Ok(f(crate::keys::origin_key(k), (k.len() + v.len()) as u64))
        });
    }
    let mut w = snap.iterator_cf(CF_WRITE, start, end)?;
    let mut d = snap.iterator_cf(CF_DEFAULT, start, end)?;
    let (mut w_ok, mut d_ok) = (w.seek_to_first()?, d.seek_to_first()?);
    while w_ok || d_ok {
        let take_write = match (w_ok, d_ok) {
            (true, true) => versioned_candidate(w.key()) <= default_candidate(d.key()),
            (w_ok, _) => w_ok,
        };
        let candidate =
            if take_write { versioned_candidate(w.key()) } else { default_candidate(d.key()) };
        let it = if take_write { &mut w } else { &mut d };
        if !f(&candidate, (it.key().len() + it.value().len()) as u64) {
            return Ok(());
        }
        let ok = it.next()?;
        if take_write {
            w_ok = ok;
        } else {
            d_ok = ok;
        }
    }
    Ok(())
}

/// A `write` entry's candidate: its key without the version.
fn versioned_candidate(data_key: &[u8]) -> Vec<u8> {
    atoll_codec::data::strip_ts(crate::keys::origin_key(data_key)).to_vec()
}

/// A `default` entry's candidate. In API V1 raw keys (whole, no version)
/// and transactional values (a memcomparable key + 8-byte version) share
/// the column family: the version is cut off only where the key is a
/// valid encoding followed by exactly 8 bytes; other keys are raw and
/// whole. A raw key of that shape yields a prefix of itself, which still
/// splits where a raw key may. Stricter than TiKV's
/// `split_observer.rs` strip_timestamp_if_exists, which cuts a valid
/// encoding's tail whatever its length.
fn default_candidate(data_key: &[u8]) -> Vec<u8> {
    let key = crate::keys::origin_key(data_key);
    match atoll_codec::encoded_len(key) {
        Some(n) if n + atoll_codec::data::TS_LEN == key.len() => key[..n].to_vec(),
        _ => key.to_vec(),
    }
}

/// What a region may split at (TiKV's SplitObserver is_valid_split_key):
/// inside the region, past its start, each above the one before. Mixed
/// V1 data can yield candidates out of order (a raw key sorts between a
/// transactional key and its versions' prefix), and those are dropped.
fn valid_split_keys(region: &metapb::Region, keys: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
    for k in keys {
        let inside = k > region.start_key && (region.end_key.is_empty() || k < region.end_key);
        if inside && out.last().is_none_or(|last| k > *last) {
            out.push(k);
        }
    }
    out
}

/// The first key at which half of the region's bytes (as [`walk_keys`]
/// sees them) lie before it; never the region's first key, never a
/// version of the key before.
fn middle_key<S: Iterable>(
    snap: &S,
    txn: bool,
    start: &[u8],
    end: &[u8],
) -> atoll_engine_traits::Result<Option<Vec<u8>>> {
    let mut total = 0u64;
    walk_keys(snap, start, end, txn, &mut |_, size| {
        total += size;
        true
    })?;
    let (mut acc, mut found, mut last) = (0u64, None, None::<Vec<u8>>);
    walk_keys(snap, start, end, txn, &mut |key, size| {
        if last.as_deref() != Some(key) {
            if acc > 0 && acc >= total / 2 {
                found = Some(key.to_vec());
                return false;
            }
            last = Some(key.to_vec());
        }
        acc += size;
        true
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
    let out = match measure(&engine.snapshot(), &region, t, task.half) {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(region = region.id, "split check scan: {e}");
            return;
        }
    };
    let msg = PeerMsg::SplitCheckResult {
        epoch: region.region_epoch.clone().unwrap_or_default(),
        size: out.size,
        keys: out.keys,
        split_keys: out.split_keys,
    };
    let _ = router.send(region.id, msg);
}

/// A region's size and keys, and where to split it (`half`: in the middle).
/// Raw regions report their key count but split by size alone.
///
/// Split points come from where a region's keys live: `write` and
/// `default` for transactional data (each key once, its versions
/// stripped), `default` for raw KV. In API V2 a region holds one or the
/// other (keyspaces of the two modes never share a region); in API V1 raw
/// and transactional keys can share one, and `default_candidate` tells
/// them apart. Locks only add to the size.
fn measure<S: Iterable>(
    snap: &S,
    region: &metapb::Region,
    t: &SplitThresholds,
    half: bool,
) -> atoll_engine_traits::Result<SplitCheckOutcome> {
    let (start, end) = snap::region_data_range(region);
    let mut txn = false;
    snap.scan_cf(CF_WRITE, &start, &end, false, &mut |_, _| {
        txn = true;
        Ok(false)
    })?;
    // Key counts split transactional regions only, as in TiKV (which counts
    // the `write` column family): raw regions split by size.
    let t =
        if txn { *t } else { SplitThresholds { max_keys: u64::MAX, split_keys: u64::MAX, ..*t } };
    let mut picker = SplitPicker::new(t);
    let mut last: Option<Vec<u8>> = None;
    walk_keys(snap, &start, &end, txn, &mut |key, size| {
        if last.as_deref() == Some(key) {
            picker.add_version(size);
        } else {
            picker.add(key, size);
            last = Some(key.to_vec());
        }
        true
    })?;
    // What `walk_keys` does not visit only adds to the size.
    for cf in DATA_CFS {
        if *cf == CF_LOCK || (!txn && *cf == CF_WRITE) {
            snap.scan_cf(cf, &start, &end, false, &mut |k, v| {
                picker.add_size((k.len() + v.len()) as u64);
                Ok(true)
            })?;
        }
    }
    let mut out = picker.finish();
    if half {
        out.split_keys = middle_key(snap, txn, &start, &end)?.into_iter().collect();
    }
    out.split_keys = valid_split_keys(region, out.split_keys);
    Ok(out)
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

    /// Transactional data: every key has several versions in `write`
    /// (key + 8-byte ts) and a long value in `default`; splits fall on
    /// keys, never between two versions of one.
    #[test]
    fn transactional_regions_split_between_keys_not_versions() {
        use atoll_engine_memory::MemoryEngine;
        use atoll_engine_traits::KvEngine as _;
        let engine = MemoryEngine::new();
        let key = |i: u8| atoll_codec::encode_bytes(&[b'x', 0, 0, 0, i]);
        for i in 0..20u8 {
            for ts in [10u64, 20, 30] {
                let mut k = key(i);
                k.extend_from_slice(&(!ts).to_be_bytes());
                engine.put_cf(CF_WRITE, &crate::keys::data_key(&k), b"P\x0a").unwrap();
                engine.put_cf(CF_DEFAULT, &crate::keys::data_key(&k), &[0; 40]).unwrap();
            }
        }
        let region = metapb::Region::default();
        let t =
            SplitThresholds { max_size: 1000, split_size: 500, max_keys: 1000, split_keys: 1000 };
        let out = measure(&engine.snapshot(), &region, &t, false).unwrap();
        assert_eq!(out.keys, 20, "each key once");
        assert!(!out.split_keys.is_empty());
        for k in &out.split_keys {
            assert!((0..20).any(|i| key(i) == *k), "{k:?} is not a key without version");
        }
        let half = measure(&engine.snapshot(), &region, &t, true).unwrap();
        assert_eq!(half.split_keys, vec![key(10)]);
        // Raw data (no write CF) keeps splitting at default's keys.
        let raw = MemoryEngine::new();
        for i in 0..20u8 {
            raw.put_cf(CF_DEFAULT, &crate::keys::data_key(&[b'r', i]), &[0; 60]).unwrap();
        }
        let out = measure(&raw.snapshot(), &region, &t, false).unwrap();
        assert_eq!(out.keys, 20);
        assert!(out.split_keys.iter().all(|k| k.len() == 2));
    }

    /// API V1: raw keys (in `default`, no version) and transactional keys
    /// (memcomparable + ts) share a region. Raw keys are candidates whole
    /// (a short one used to become the empty key, and the whole split was
    /// refused at every check), and every split key passes the rule.
    #[test]
    fn mixed_v1_regions_split_at_whole_raw_keys() {
        use atoll_engine_memory::MemoryEngine;
        use atoll_engine_traits::KvEngine as _;
        let engine = MemoryEngine::new();
        // One transactional key with a long value, sorting first.
        let mut tk = atoll_codec::encode_bytes(b"0");
        tk.extend_from_slice(&(!7u64).to_be_bytes());
        engine.put_cf(CF_WRITE, &crate::keys::data_key(&tk), b"P\x07").unwrap();
        engine.put_cf(CF_DEFAULT, &crate::keys::data_key(&tk), &[0; 600]).unwrap();
        // Short raw keys after it, and long ones that share a prefix.
        for i in 0..20u8 {
            engine.put_cf(CF_DEFAULT, &crate::keys::data_key(&[b'a', i]), &[0; 60]).unwrap();
            let long = format!("user-{i:010}");
            engine.put_cf(CF_DEFAULT, &crate::keys::data_key(long.as_bytes()), &[0; 60]).unwrap();
        }
        let region = metapb::Region::default();
        let t =
            SplitThresholds { max_size: 1000, split_size: 500, max_keys: 1000, split_keys: 1000 };
        let whole = |k: &Vec<u8>| {
            (k.len() == 2 && k[0] == b'a') || (k.len() == 15 && k.starts_with(b"user-"))
        };
        for half in [false, true] {
            let out = measure(&engine.snapshot(), &region, &t, half).unwrap();
            assert!(!out.split_keys.is_empty(), "half={half}");
            let keys = out.split_keys.iter().map(Vec::as_slice);
            atoll_codec::api::check_split_keys(&region.start_key, &region.end_key, keys).unwrap();
            assert!(out.split_keys.iter().all(whole), "half={half}: {:?}", out.split_keys);
        }
        let out = measure(&engine.snapshot(), &region, &t, false).unwrap();
        assert_eq!(out.keys, 41, "each key once");
        assert!(out.split_keys.len() > 2, "long raw keys are told apart: {:?}", out.split_keys);
    }

    /// Key counts split transactional regions only (as in TiKV, which
    /// counts the `write` column family); raw regions split by size.
    #[test]
    fn raw_regions_split_by_size_not_key_count() {
        use atoll_engine_memory::MemoryEngine;
        use atoll_engine_traits::KvEngine as _;
        let by_keys = SplitThresholds {
            max_size: u64::MAX,
            split_size: u64::MAX,
            max_keys: 10,
            split_keys: 5,
        };
        let region = metapb::Region::default();
        let raw = MemoryEngine::new();
        for i in 0..50u8 {
            raw.put_cf(CF_DEFAULT, &crate::keys::data_key(&[b'r', i]), b"v").unwrap();
        }
        let out = measure(&raw.snapshot(), &region, &by_keys, false).unwrap();
        assert_eq!(out.keys, 50, "still counted and reported");
        assert!(out.split_keys.is_empty(), "{:?}", out.split_keys);
        let txn = MemoryEngine::new();
        for i in 0..50u8 {
            let mut k = atoll_codec::encode_bytes(&[b'x', i]);
            k.extend_from_slice(&(!7u64).to_be_bytes());
            txn.put_cf(CF_WRITE, &crate::keys::data_key(&k), b"P\x07").unwrap();
        }
        let out = measure(&txn.snapshot(), &region, &by_keys, false).unwrap();
        assert_eq!(out.split_keys.len(), 9, "a split every 5 of 50 keys");
    }
}
