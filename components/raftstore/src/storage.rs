//! `PeerStorage`: raft-rs's `Storage` over the engine's `raft` column family,
//! with a bounded in-memory cache of recent entries.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use atoll_engine_traits::{KvEngine, Peekable, WriteBatch, CF_RAFT};
use atoll_proto::atollpb::{
    PeerState, RaftApplyState, RaftLocalState, RaftTruncatedState, RegionLocalState,
};
use atoll_proto::metapb;
use prost::Message as _;
use prost011::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::error::{Error, Result};
use crate::keys;

/// Every region's log starts here (as in TiKV): a new region has an empty
/// log whose "truncated" entry is `(index 5, term 5)`.
pub const RAFT_INIT_LOG_INDEX: u64 = 5;
pub const RAFT_INIT_LOG_TERM: u64 = 5;

pub fn initial_raft_state() -> RaftLocalState {
    RaftLocalState {
        term: RAFT_INIT_LOG_TERM,
        vote: 0,
        commit: RAFT_INIT_LOG_INDEX,
        last_index: RAFT_INIT_LOG_INDEX,
    }
}

pub fn initial_apply_state() -> RaftApplyState {
    RaftApplyState {
        applied_index: RAFT_INIT_LOG_INDEX,
        applied_term: RAFT_INIT_LOG_TERM,
        truncated_state: Some(RaftTruncatedState {
            index: RAFT_INIT_LOG_INDEX,
            term: RAFT_INIT_LOG_TERM,
        }),
    }
}

/// Writes the local state of a brand-new region (bootstrap or split).
pub fn write_initial_region_states<W: WriteBatch>(
    wb: &mut W,
    region: &metapb::Region,
) -> Result<()> {
    let state = RegionLocalState { state: PeerState::Normal as i32, region: Some(region.clone()) };
    wb.put_cf(CF_RAFT, &keys::region_state_key(region.id), &state.encode_to_vec())?;
    wb.put_cf(CF_RAFT, &keys::raft_state_key(region.id), &initial_raft_state().encode_to_vec())?;
    wb.put_cf(CF_RAFT, &keys::apply_state_key(region.id), &initial_apply_state().encode_to_vec())?;
    Ok(())
}

pub fn write_region_state<W: WriteBatch>(
    wb: &mut W,
    region: &metapb::Region,
    state: PeerState,
) -> Result<()> {
    let s = RegionLocalState { state: state as i32, region: Some(region.clone()) };
    wb.put_cf(CF_RAFT, &keys::region_state_key(region.id), &s.encode_to_vec())?;
    Ok(())
}

/// Reads and decodes a protobuf record, treating undecodable bytes as corruption.
pub fn load_pb<M: prost::Message + Default>(
    engine: &impl Peekable,
    key: &[u8],
) -> Result<Option<M>> {
    match engine.get_value_cf(CF_RAFT, key)? {
        None => Ok(None),
        Some(v) => M::decode(v.as_slice()).map(Some).map_err(|e| {
            Error::Engine(atoll_engine_traits::Error::Corruption(format!("{key:?}: {e}")))
        }),
    }
}

/// A region's membership as raft can take it: peers with distinct, nonzero
/// ids on distinct stores, each a voter or a learner, and some voter.
pub fn check_membership(region: &metapb::Region) -> Result<()> {
    let bad = |why: String| Err(Error::Corruption(format!("region {}: {why}", region.id)));
    let mut ids = std::collections::HashSet::new();
    let mut stores = std::collections::HashSet::new();
    for p in &region.peers {
        if p.id == 0 || !ids.insert(p.id) || !stores.insert(p.store_id) {
            return bad(format!("peer {p:?} is zero or repeated"));
        }
        let role = metapb::PeerRole::try_from(p.role);
        if !matches!(role, Ok(metapb::PeerRole::Voter | metapb::PeerRole::Learner)) {
            return bad(format!("peer {p:?} has a role Atoll never writes"));
        }
    }
    let voters = region.peers.iter().filter(|p| p.role == metapb::PeerRole::Voter as i32);
    if !region.peers.is_empty() && voters.count() == 0 {
        return bad("no voter".into());
    }
    Ok(())
}

pub fn conf_state_of(region: &metapb::Region) -> ConfState {
    let mut cs = ConfState::default();
    for p in &region.peers {
        if p.role == metapb::PeerRole::Learner as i32 {
            cs.learners.push(p.id);
        } else {
            cs.voters.push(p.id);
        }
    }
    cs
}

/// Where a generated snapshot is delivered (by the snapshot worker).
pub type SnapSlot = Arc<Mutex<Option<std::result::Result<Snapshot, String>>>>;

/// Snapshot generation for a follower that fell behind the log.
#[derive(Default)]
pub enum GenSnapState {
    #[default]
    Idle,
    /// Raft asked for a snapshot; the peer must start generating one.
    Requested,
    Generating(SnapSlot),
}

/// Raft log, raft state and apply state of one peer.
pub struct PeerStorage<E: KvEngine> {
    engine: E,
    pub region: metapb::Region,
    pub raft_state: RaftLocalState,
    pub apply_state: RaftApplyState,
    last_term: u64,
    /// Contiguous recent entries ending at `raft_state.last_index`.
    cache: VecDeque<Entry>,
    cache_limit: usize,
    /// `snapshot()` takes `&self`; generation state needs interior mutability.
    gen_snap: Mutex<GenSnapState>,
}

impl<E: KvEngine> PeerStorage<E> {
    /// Loads the peer's state from the engine. Fails if the region was never
    /// written or the states contradict each other.
    pub fn load(engine: E, region: metapb::Region, cache_limit: usize) -> Result<Self> {
        let id = region.id;
        check_membership(&region)?;
        let raft_state: RaftLocalState = load_pb(&engine, &keys::raft_state_key(id))?
            .ok_or_else(|| Error::Corruption(format!("region {id}: raft state missing")))?;
        let apply_state: RaftApplyState = load_pb(&engine, &keys::apply_state_key(id))?
            .ok_or_else(|| Error::Corruption(format!("region {id}: apply state missing")))?;
        let mut raft_state = raft_state;
        let truncated = apply_state.truncated_state.clone().unwrap_or_default();
        // The commit index is persisted lazily (with the next ready), so after
        // a crash it can trail what was applied; applied entries were committed.
        if raft_state.commit < apply_state.applied_index {
            raft_state.commit = apply_state.applied_index;
        }
        if raft_state.last_index < apply_state.applied_index
            || truncated.index > apply_state.applied_index
            || raft_state.commit > raft_state.last_index
        {
            return Err(Error::Corruption(format!(
                "region {id}: inconsistent states raft {raft_state:?} apply {apply_state:?}"
            )));
        }
        let mut s = PeerStorage {
            engine,
            region,
            raft_state,
            apply_state,
            last_term: 0,
            cache: VecDeque::new(),
            cache_limit,
            gen_snap: Mutex::new(GenSnapState::Idle),
        };
        s.last_term = if s.raft_state.last_index == truncated.index {
            truncated.term
        } else {
            s.load_entry(s.raft_state.last_index)?.term
        };
        Ok(s)
    }

    /// A peer created from a raft message for a region this store has no
    /// data of: an empty log at index 0, waiting for a snapshot. A hard
    /// state persisted by an earlier incarnation (term, vote) is kept.
    pub fn uninitialized(engine: E, region_id: u64, cache_limit: usize) -> Result<Self> {
        let persisted: Option<RaftLocalState> = load_pb(&engine, &keys::raft_state_key(region_id))?;
        let raft_state = RaftLocalState {
            term: persisted.as_ref().map_or(0, |s| s.term),
            vote: persisted.as_ref().map_or(0, |s| s.vote),
            commit: 0,
            last_index: 0,
        };
        Ok(PeerStorage {
            engine,
            region: metapb::Region { id: region_id, ..Default::default() },
            raft_state,
            apply_state: RaftApplyState {
                applied_index: 0,
                applied_term: 0,
                truncated_state: Some(RaftTruncatedState { index: 0, term: 0 }),
            },
            last_term: 0,
            cache: VecDeque::new(),
            cache_limit,
            gen_snap: Mutex::new(GenSnapState::Idle),
        })
    }

    /// Has the peer got the region's data (from bootstrap, a split or a snapshot)?
    pub fn is_initialized(&self) -> bool {
        !self.region.peers.is_empty()
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// Takes a pending generation request, switching to "generating" into
    /// the returned slot.
    pub fn take_gen_request(&self) -> Option<SnapSlot> {
        let mut g = self.gen_snap.lock();
        if !matches!(*g, GenSnapState::Requested) {
            return None;
        }
        let slot: SnapSlot = Arc::default();
        *g = GenSnapState::Generating(slot.clone());
        Some(slot)
    }

    pub fn is_generating_snapshot(&self) -> bool {
        !matches!(*self.gen_snap.lock(), GenSnapState::Idle)
    }

    /// Replaces the log and states with those of an applied snapshot at
    /// `(index, term)` (the caller has written them to the engine).
    pub fn restore(&mut self, region: metapb::Region, index: u64, term: u64) {
        assert!(
            index >= self.apply_state.applied_index,
            "snapshot {index} is older than what is applied"
        );
        self.region = region;
        self.apply_state = RaftApplyState {
            applied_index: index,
            applied_term: term,
            truncated_state: Some(RaftTruncatedState { index, term }),
        };
        self.raft_state.last_index = index;
        self.raft_state.commit = index;
        self.raft_state.term = self.raft_state.term.max(term);
        self.last_term = term;
        self.cache.clear();
    }

    pub fn truncated(&self) -> RaftTruncatedState {
        self.apply_state.truncated_state.clone().unwrap_or_default()
    }

    pub fn applied_index(&self) -> u64 {
        self.apply_state.applied_index
    }

    fn load_entry(&self, index: u64) -> Result<Entry> {
        let key = keys::raft_log_key(self.region.id, index);
        let v = self.engine.get_value_cf(CF_RAFT, &key)?.ok_or_else(|| {
            Error::Corruption(format!("region {}: log entry {index} missing", self.region.id))
        })?;
        let e = Entry::decode(v.as_slice())
            .map_err(|e| Error::codec(format!("log entry {index}"), e))?;
        if e.index != index {
            return Err(Error::Corruption(format!(
                "region {}: entry {} stored under index {index}",
                self.region.id, e.index
            )));
        }
        Ok(e)
    }

    /// Stages `entries` (and deletes any conflicting tail) into `wb`, and
    /// updates the in-memory view at once so raft can read them back.
    pub fn append<W: WriteBatch>(&mut self, entries: Vec<Entry>, wb: &mut W) -> Result<()> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (first_index, last_index, last_term) = (first.index, last.index, last.term);
        assert!(
            first_index > self.truncated().index && first_index <= self.raft_state.last_index + 1,
            "region {}: append at {first_index} leaves a gap (last {})",
            self.region.id,
            self.raft_state.last_index
        );
        for e in &entries {
            wb.put_cf(CF_RAFT, &keys::raft_log_key(self.region.id, e.index), &e.encode_to_vec())?;
        }
        // Entries beyond the new tail belong to a deposed leader.
        for i in last_index + 1..=self.raft_state.last_index {
            wb.delete_cf(CF_RAFT, &keys::raft_log_key(self.region.id, i))?;
        }
        while self.cache.back().is_some_and(|e| e.index >= first_index) {
            self.cache.pop_back();
        }
        if self.cache.back().is_some_and(|e| e.index + 1 != first_index) {
            self.cache.clear();
        }
        self.cache.extend(entries);
        while self.cache.len() > self.cache_limit {
            self.cache.pop_front();
        }
        self.raft_state.last_index = last_index;
        self.last_term = last_term;
        Ok(())
    }

    pub fn set_hard_state(&mut self, hs: &HardState) {
        self.raft_state.term = hs.term;
        self.raft_state.vote = hs.vote;
        self.raft_state.commit = hs.commit;
    }

    pub fn save_raft_state<W: WriteBatch>(&self, wb: &mut W) -> Result<()> {
        wb.put_cf(
            CF_RAFT,
            &keys::raft_state_key(self.region.id),
            &self.raft_state.encode_to_vec(),
        )?;
        Ok(())
    }

    /// Deletes log entries up to and including `truncated.index` (already
    /// recorded as truncated by the apply pool).
    pub fn compact_to<W: WriteBatch>(
        &mut self,
        truncated: RaftTruncatedState,
        old_first: u64,
        wb: &mut W,
    ) -> Result<()> {
        if truncated.index < old_first {
            return Ok(());
        }
        wb.delete_range_cf(
            CF_RAFT,
            &keys::raft_log_key(self.region.id, old_first),
            &keys::raft_log_key(self.region.id, truncated.index + 1),
        )?;
        while self.cache.front().is_some_and(|e| e.index <= truncated.index) {
            self.cache.pop_front();
        }
        self.apply_state.truncated_state = Some(truncated);
        Ok(())
    }

    fn cached(&self, index: u64) -> Option<&Entry> {
        let front = self.cache.front()?.index;
        if index < front {
            return None;
        }
        self.cache.get((index - front) as usize)
    }
}

fn storage_err(e: Error) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl<E: KvEngine> raft::Storage for PeerStorage<E> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let hs = HardState {
            term: self.raft_state.term,
            vote: self.raft_state.vote,
            commit: self.raft_state.commit,
        };
        Ok(RaftState::new(hs, conf_state_of(&self.region)))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated().index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.raft_state.last_index + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        for i in low..high {
            let e = match self.cached(i) {
                Some(e) => e.clone(),
                None => self.load_entry(i).map_err(storage_err)?,
            };
            size += e.encoded_len() as u64;
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let t = self.truncated();
        if idx == t.index {
            return Ok(t.term);
        }
        if idx < t.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.raft_state.last_index {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if idx == self.raft_state.last_index {
            return Ok(self.last_term);
        }
        match self.cached(idx) {
            Some(e) => Ok(e.term),
            None => self.load_entry(idx).map(|e| e.term).map_err(storage_err),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated().index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.raft_state.last_index)
    }

    /// Snapshots are generated in the background: the first call requests
    /// one (the peer hands the request to its apply FSM), later calls return
    /// it once ready. Raft retries on "temporarily unavailable".
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let mut g = self.gen_snap.lock();
        if let GenSnapState::Generating(slot) = &*g {
            let Some(res) = slot.lock().take() else {
                return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
            };
            *g = GenSnapState::Idle;
            match res {
                Ok(snap) if snap.metadata.as_ref().map_or(0, |m| m.index) >= request_index => {
                    return Ok(snap)
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(region = self.region.id, "snapshot generation failed: {e}")
                }
            }
        }
        if matches!(*g, GenSnapState::Idle) {
            *g = GenSnapState::Requested;
        }
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}

#[cfg(test)]
mod tests {
    use atoll_engine_memory::MemoryEngine;
    use atoll_engine_traits::WriteOptions;
    use raft::Storage;

    use super::*;

    fn region() -> metapb::Region {
        metapb::Region {
            id: 1,
            region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
            peers: vec![metapb::Peer { id: 2, store_id: 1, ..Default::default() }],
            ..Default::default()
        }
    }

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8], ..Default::default() }
    }

    fn new_storage(engine: &MemoryEngine, cache: usize) -> PeerStorage<MemoryEngine> {
        let mut wb = engine.write_batch();
        write_initial_region_states(&mut wb, &region()).unwrap();
        engine.write(&mut wb, WriteOptions::default()).unwrap();
        PeerStorage::load(engine.clone(), region(), cache).unwrap()
    }

    #[test]
    fn initial_state_matches_tikv_layout() {
        let e = MemoryEngine::new();
        let s = new_storage(&e, 16);
        assert_eq!(s.first_index().unwrap(), 6);
        assert_eq!(s.last_index().unwrap(), 5);
        assert_eq!(s.term(5).unwrap(), 5);
        let st = s.initial_state().unwrap();
        assert_eq!(st.hard_state.commit, 5);
        assert_eq!(st.conf_state.voters, vec![2]);
    }

    #[test]
    fn append_overwrite_and_reload() {
        let e = MemoryEngine::new();
        // A tiny cache forces reads from the engine.
        let mut s = new_storage(&e, 2);
        let mut wb = e.write_batch();
        s.append((6..=10).map(|i| entry(i, 6)).collect(), &mut wb).unwrap();
        s.save_raft_state(&mut wb).unwrap();
        e.write(&mut wb, WriteOptions::sync()).unwrap();
        assert_eq!(s.last_index().unwrap(), 10);
        let got = s.entries(6, 11, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(got.iter().map(|e| e.index).collect::<Vec<_>>(), vec![6, 7, 8, 9, 10]);
        // A new leader overwrites from 8 with a shorter log.
        s.append(vec![entry(8, 7)], &mut wb).unwrap();
        s.save_raft_state(&mut wb).unwrap();
        e.write(&mut wb, WriteOptions::sync()).unwrap();
        assert_eq!(s.last_index().unwrap(), 8);
        assert_eq!(s.term(8).unwrap(), 7);
        assert_eq!(s.term(7).unwrap(), 6);
        assert!(s.entries(6, 10, None, GetEntriesContext::empty(false)).is_err());
        // Size limit returns at least one entry.
        assert_eq!(s.entries(6, 9, Some(0), GetEntriesContext::empty(false)).unwrap().len(), 1);
        // Reload from disk: the overwritten tail is gone.
        let s2 = PeerStorage::load(e.clone(), region(), 2).unwrap();
        assert_eq!(s2.last_index().unwrap(), 8);
        assert_eq!(s2.term(8).unwrap(), 7);
        assert!(e.get_value_cf(CF_RAFT, &keys::raft_log_key(1, 9)).unwrap().is_none());
    }

    #[test]
    fn lagging_persisted_commit_is_raised_to_applied() {
        let e = MemoryEngine::new();
        let mut s = new_storage(&e, 16);
        let mut wb = e.write_batch();
        s.append((6..=8).map(|i| entry(i, 6)).collect(), &mut wb).unwrap();
        s.save_raft_state(&mut wb).unwrap();
        // Apply got to 8 but the commit index on disk is still 5.
        let applied = RaftApplyState { applied_index: 8, applied_term: 6, ..initial_apply_state() };
        wb.put_cf(CF_RAFT, &keys::apply_state_key(1), &applied.encode_to_vec()).unwrap();
        e.write(&mut wb, WriteOptions::sync()).unwrap();
        let s = PeerStorage::load(e.clone(), region(), 16).unwrap();
        assert_eq!(s.initial_state().unwrap().hard_state.commit, 8);
    }

    #[test]
    fn compaction() {
        let e = MemoryEngine::new();
        let mut s = new_storage(&e, 100);
        let mut wb = e.write_batch();
        s.append((6..=20).map(|i| entry(i, 6)).collect(), &mut wb).unwrap();
        s.compact_to(RaftTruncatedState { index: 15, term: 6 }, 6, &mut wb).unwrap();
        e.write(&mut wb, WriteOptions::default()).unwrap();
        assert_eq!(s.first_index().unwrap(), 16);
        assert_eq!(s.term(15).unwrap(), 6);
        assert!(matches!(s.term(14), Err(raft::Error::Store(StorageError::Compacted))));
        assert!(matches!(
            s.entries(10, 20, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(e.get_value_cf(CF_RAFT, &keys::raft_log_key(1, 15)).unwrap().is_none());
        assert!(e.get_value_cf(CF_RAFT, &keys::raft_log_key(1, 16)).unwrap().is_some());
    }
}
