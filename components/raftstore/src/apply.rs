//! Executing committed entries against the data column families.
//!
//! Pure state-machine logic with no threads: [`ApplyDelegate`] turns
//! entries into write-batch mutations and results. The apply pool
//! (`fsm::apply`) drives it, one write batch per poll round.

use std::collections::VecDeque;
use std::time::Instant;

use atoll_engine_traits::{data_cf, KvEngine, WriteBatch};
use atoll_proto::atollpb::{
    AdminCmdType, AdminRequest, BatchSplitRequest, CmdType, PeerState, RaftApplyState,
    RaftCmdRequest, RaftTruncatedState, Request,
};
use atoll_proto::metapb;
use prost::Message as _;
use prost011::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType};

use crate::codec::RawValue;
use crate::error::{Error, Result};
use crate::keys;
use crate::msg::{CasResult, WriteCallback, WriteResponse};
use crate::storage::{write_initial_region_states, write_region_state};

/// A proposal waiting for its entry to be applied.
pub struct Proposal {
    pub index: u64,
    pub term: u64,
    pub cb: WriteCallback,
    pub proposed_at: Instant,
}

/// Side effects the raft peer must act on after apply.
#[derive(Debug, Clone)]
pub enum ExecResult {
    /// The region split; `derived` is this region's new shape.
    Split { derived: metapb::Region, regions: Vec<metapb::Region> },
    /// Entries up to `truncated.index` may be deleted from the log.
    CompactLog { truncated: RaftTruncatedState, first_index: u64 },
    /// A membership change was applied; raft must apply `cc` too.
    ChangePeer { cc: ConfChange, region: metapb::Region },
}

/// One apply round's progress for one region, sent back to its peer.
#[derive(Debug)]
pub struct ApplyRes {
    pub region_id: u64,
    pub applied_index: u64,
    pub applied_term: u64,
    pub exec_results: Vec<ExecResult>,
    pub written_bytes: u64,
    pub written_keys: u64,
}

/// Per-region apply state.
pub struct ApplyDelegate {
    pub region: metapb::Region,
    pub apply_state: RaftApplyState,
    /// This store's peer of the region.
    peer_id: u64,
    /// A membership change removed `peer_id`: the region's state on this
    /// store is a tombstone and later entries are not ours to apply.
    removed: bool,
    pending: VecDeque<Proposal>,
    results: Vec<ExecResult>,
    written_bytes: u64,
    written_keys: u64,
}

/// Where one round's callbacks go until the batch is written.
pub type DoneCallbacks = Vec<(WriteCallback, Result<WriteResponse>, Instant)>;

impl ApplyDelegate {
    pub fn new(peer_id: u64, region: metapb::Region, apply_state: RaftApplyState) -> Self {
        ApplyDelegate {
            region,
            apply_state,
            peer_id,
            removed: false,
            pending: VecDeque::new(),
            results: vec![],
            written_bytes: 0,
            written_keys: 0,
        }
    }

    pub fn region_id(&self) -> u64 {
        self.region.id
    }

    /// Fails every waiting proposal (the region is going away).
    pub fn clear_pending(&mut self, done: &mut DoneCallbacks, err: impl Fn() -> Error) {
        for p in self.pending.drain(..) {
            done.push((p.cb, Err(err()), p.proposed_at));
        }
    }

    /// Applies `entries` in order. `flush` writes what `wb` holds so far; it
    /// is called before any read-modify-write so reads see earlier entries.
    pub fn apply_entries<E: KvEngine>(
        &mut self,
        engine: &E,
        wb: &mut E::WriteBatch,
        flush: &mut dyn FnMut(&mut E::WriteBatch) -> Result<()>,
        entries: Vec<Entry>,
        proposals: Vec<Proposal>,
        done: &mut DoneCallbacks,
    ) -> Result<()> {
        self.pending.extend(proposals);
        for entry in entries {
            if self.removed {
                // Committed entries after our own removal belong to the
                // peers that stay; their proposers wait on those.
                break;
            }
            let expected = self.apply_state.applied_index + 1;
            if entry.index < expected {
                // Already applied before a restart; raft hands it out again.
                continue;
            }
            assert_eq!(entry.index, expected, "region {}: apply gap", self.region.id);
            let cb = self.take_callback(entry.index, entry.term, done);
            let res = self.apply_entry(engine, wb, flush, &entry);
            self.apply_state.applied_index = entry.index;
            self.apply_state.applied_term = entry.term;
            match (cb, res) {
                (Some((cb, at)), res) => done.push((cb, res, at)),
                (None, Err(e)) if !matches!(e, Error::EpochNotMatch { .. }) => {
                    tracing::warn!(
                        region = self.region.id,
                        index = entry.index,
                        "apply failed: {e}"
                    );
                }
                _ => {}
            }
        }
        wb.put_cf(
            atoll_engine_traits::CF_RAFT,
            &keys::apply_state_key(self.region.id),
            &self.apply_state.encode_to_vec(),
        )?;
        Ok(())
    }

    /// The callback proposed for `(index, term)`; older proposals that can no
    /// longer commit get `StaleCommand`.
    fn take_callback(
        &mut self,
        index: u64,
        term: u64,
        done: &mut DoneCallbacks,
    ) -> Option<(WriteCallback, Instant)> {
        while let Some(p) = self.pending.front() {
            if p.index > index {
                return None;
            }
            let p = self.pending.pop_front().expect("front exists");
            if p.index == index && p.term == term {
                return Some((p.cb, p.proposed_at));
            }
            done.push((p.cb, Err(Error::StaleCommand), p.proposed_at));
        }
        None
    }

    /// Takes the round's results for the peer.
    pub fn take_res(&mut self) -> ApplyRes {
        ApplyRes {
            region_id: self.region.id,
            applied_index: self.apply_state.applied_index,
            applied_term: self.apply_state.applied_term,
            exec_results: std::mem::take(&mut self.results),
            written_bytes: std::mem::take(&mut self.written_bytes),
            written_keys: std::mem::take(&mut self.written_keys),
        }
    }

    fn apply_entry<E: KvEngine>(
        &mut self,
        engine: &E,
        wb: &mut E::WriteBatch,
        flush: &mut dyn FnMut(&mut E::WriteBatch) -> Result<()>,
        entry: &Entry,
    ) -> Result<WriteResponse> {
        if entry.entry_type == EntryType::EntryConfChange as i32 {
            return self.exec_conf_change(wb, entry);
        }
        if entry.data.is_empty() || entry.entry_type != EntryType::EntryNormal as i32 {
            // A new leader's empty entry (v2 conf changes are never proposed).
            return Ok(WriteResponse::default());
        }
        let req = RaftCmdRequest::decode(entry.data.as_slice())
            .map_err(|e| Error::codec(format!("log entry {}", entry.index), e))?;
        if let Some(admin) = &req.admin_request {
            return self.exec_admin(engine, wb, &req, admin);
        }
        self.check_epoch(&req)?;
        let mut resp = WriteResponse::default();
        for r in &req.requests {
            if let Some(cas) = self.exec_request(engine, wb, flush, r)? {
                resp.cas = Some(cas);
            }
        }
        Ok(resp)
    }

    /// A membership change: the raft `ConfChange` carries the proposing
    /// `RaftCmdRequest` (with its epoch) as context.
    fn exec_conf_change<W: WriteBatch>(
        &mut self,
        wb: &mut W,
        entry: &Entry,
    ) -> Result<WriteResponse> {
        let cc = ConfChange::decode(entry.data.as_slice())
            .map_err(|e| Error::codec(format!("conf change {}", entry.index), e))?;
        let req = RaftCmdRequest::decode(cc.context.as_slice())
            .map_err(|e| Error::codec(format!("conf change context {}", entry.index), e))?;
        let cp =
            req.admin_request.as_ref().and_then(|a| a.change_peer.as_ref()).ok_or_else(|| {
                Error::InvalidRequest("conf change without a change-peer request".into())
            })?;
        // Membership changes only conflict with other membership changes.
        let sent = req.header.as_ref().and_then(|h| h.region_epoch.clone()).unwrap_or_default();
        let current = self.region.region_epoch.clone().unwrap_or_default();
        if sent.conf_ver != current.conf_ver {
            return Err(Error::EpochNotMatch {
                msg: format!(
                    "region {} conf_ver is {}, change has {}",
                    self.region.id, current.conf_ver, sent.conf_ver
                ),
                current_regions: vec![self.region.clone()],
            });
        }
        let peer = cp
            .peer
            .clone()
            .ok_or_else(|| Error::InvalidRequest("change peer without a peer".into()))?;
        if peer.id != cc.node_id {
            return Err(Error::InvalidRequest(format!(
                "conf change for {} carries peer {}",
                cc.node_id, peer.id
            )));
        }
        let region = change_peer(&self.region, cc.change_type, &peer)?;
        // Our own removal is durable with the change itself: a restart must
        // not load a region this store no longer holds a peer of. The peer
        // then destroys itself (`Peer::destroy`), and a restart before that
        // finishes it (`system::clear_stale_regions`).
        self.removed = !region.peers.iter().any(|p| p.id == self.peer_id);
        let state = if self.removed { PeerState::Tombstone } else { PeerState::Normal };
        write_region_state(wb, &region, state)?;
        tracing::info!(
            region = region.id,
            index = entry.index,
            "applied conf change {:?} {:?}",
            cc.get_change_type(),
            peer
        );
        self.region = region.clone();
        self.results.push(ExecResult::ChangePeer { cc, region });
        Ok(WriteResponse::default())
    }

    /// Replaces the delegate's state with an applied snapshot's.
    pub fn restore(&mut self, region: metapb::Region, apply_state: RaftApplyState) {
        assert!(
            apply_state.applied_index >= self.apply_state.applied_index,
            "restore would go back"
        );
        self.region = region;
        self.apply_state = apply_state;
    }

    /// A split may have applied between proposal and now.
    fn check_epoch(&self, req: &RaftCmdRequest) -> Result<()> {
        crate::check_epoch(
            &self.region,
            req.header.as_ref().and_then(|h| h.region_epoch.as_ref()),
            false,
        )
    }

    fn exec_request<E: KvEngine>(
        &mut self,
        engine: &E,
        wb: &mut E::WriteBatch,
        flush: &mut dyn FnMut(&mut E::WriteBatch) -> Result<()>,
        r: &Request,
    ) -> Result<Option<CasResult>> {
        match CmdType::try_from(r.cmd_type).unwrap_or(CmdType::Invalid) {
            CmdType::Put => {
                let p = r
                    .put
                    .as_ref()
                    .ok_or_else(|| Error::InvalidRequest("put without body".into()))?;
                wb.put_cf(data_cf(&p.cf)?, &keys::data_key(&p.key), &p.value)?;
                self.written_keys += 1;
                self.written_bytes += (p.key.len() + p.value.len()) as u64;
            }
            CmdType::Delete => {
                let d = r
                    .delete
                    .as_ref()
                    .ok_or_else(|| Error::InvalidRequest("delete without body".into()))?;
                wb.delete_cf(data_cf(&d.cf)?, &keys::data_key(&d.key))?;
                self.written_keys += 1;
            }
            CmdType::DeleteRange => {
                let d = r
                    .delete_range
                    .as_ref()
                    .ok_or_else(|| Error::InvalidRequest("delete range without body".into()))?;
                // Clip to the region so a range never touches a neighbour's data.
                let (lo, hi) = crate::clip_to_region(&self.region, &d.start_key, &d.end_key);
                wb.delete_range_cf(
                    data_cf(&d.cf)?,
                    &keys::data_key(&lo),
                    &keys::data_end_key(&hi),
                )?;
            }
            CmdType::CompareAndSwap => {
                let c = r
                    .cas
                    .as_ref()
                    .ok_or_else(|| Error::InvalidRequest("cas without body".into()))?;
                let cf = data_cf(&c.cf)?;
                if !wb.is_empty() {
                    flush(wb)?;
                }
                let key = keys::data_key(&c.key);
                let stored = engine.get_value_cf(cf, &key)?;
                let live = match &stored {
                    Some(v) => {
                        let rv = RawValue::decode(v).map_err(|e| {
                            Error::Corruption(format!("stored value of {key:?}: {e}"))
                        })?;
                        (!rv.is_expired(c.now_secs)).then_some(rv)
                    }
                    None => None,
                };
                let succeed = match &live {
                    None => c.previous_not_exist,
                    Some(rv) => !c.previous_not_exist && rv.value == c.previous_value,
                };
                if succeed {
                    wb.put_cf(cf, &key, &c.value)?;
                    self.written_keys += 1;
                    self.written_bytes += (c.key.len() + c.value.len()) as u64;
                }
                return Ok(Some(CasResult { succeed, previous: live.map(|rv| rv.encode()) }));
            }
            CmdType::Invalid => {
                return Err(Error::InvalidRequest(format!("unknown command type {}", r.cmd_type)))
            }
        }
        Ok(None)
    }

    fn exec_admin<E: KvEngine>(
        &mut self,
        engine: &E,
        wb: &mut E::WriteBatch,
        req: &RaftCmdRequest,
        admin: &AdminRequest,
    ) -> Result<WriteResponse> {
        match AdminCmdType::try_from(admin.cmd_type).unwrap_or(AdminCmdType::InvalidAdmin) {
            AdminCmdType::CompactLog => {
                let c = admin
                    .compact_log
                    .as_ref()
                    .ok_or_else(|| Error::InvalidRequest("empty compact".into()))?;
                let old = self.apply_state.truncated_state.clone().unwrap_or_default();
                if c.compact_index <= old.index {
                    return Ok(WriteResponse::default());
                }
                assert!(
                    c.compact_index <= self.apply_state.applied_index,
                    "compacting unapplied entries"
                );
                let truncated = RaftTruncatedState { index: c.compact_index, term: c.compact_term };
                self.apply_state.truncated_state = Some(truncated.clone());
                self.results.push(ExecResult::CompactLog { truncated, first_index: old.index + 1 });
            }
            AdminCmdType::BatchSplit => {
                self.check_epoch(req)?;
                let splits = admin
                    .splits
                    .as_ref()
                    .ok_or_else(|| Error::InvalidRequest("empty split".into()))?;
                let (derived, regions) = split_region(&self.region, splits)?;
                write_region_state(wb, &derived, PeerState::Normal)?;
                for r in regions.iter().filter(|r| r.id != derived.id) {
                    // On a replay after losing unsynced apply writes, the new
                    // region may already have a (synced) raft state that moved
                    // on: never reset it.
                    if engine
                        .get_value_cf(atoll_engine_traits::CF_RAFT, &keys::raft_state_key(r.id))?
                        .is_some()
                    {
                        tracing::warn!(
                            region = r.id,
                            "split target already has raft state; keeping it"
                        );
                        continue;
                    }
                    write_initial_region_states(wb, r)?;
                }
                self.region = derived.clone();
                self.results.push(ExecResult::Split { derived, regions });
            }
            AdminCmdType::ChangePeer => {
                return Err(Error::InvalidRequest(
                    "membership changes go through raft conf change entries".into(),
                ))
            }
            AdminCmdType::InvalidAdmin => {
                return Err(Error::InvalidRequest(format!(
                    "unknown admin command {}",
                    admin.cmd_type
                )))
            }
        }
        Ok(WriteResponse::default())
    }
}

/// The region after one membership change (conf_ver + 1). Adding a voter
/// promotes an existing learner; a store never holds two peers of a region.
pub fn change_peer(
    region: &metapb::Region,
    change_type: i32,
    peer: &metapb::Peer,
) -> Result<metapb::Region> {
    let mut r = region.clone();
    let existing = r.peers.iter().position(|p| p.id == peer.id);
    let same_store = r.peers.iter().any(|p| p.store_id == peer.store_id && p.id != peer.id);
    let learner = metapb::PeerRole::Learner as i32;
    match ConfChangeType::from_i32(change_type).ok_or(change_type) {
        Ok(ConfChangeType::AddNode) => match existing {
            Some(i) if r.peers[i].role == learner => {
                r.peers[i].role = metapb::PeerRole::Voter as i32
            }
            Some(_) => {
                return Err(Error::InvalidRequest(format!("peer {} is already a voter", peer.id)))
            }
            None if same_store => {
                return Err(Error::InvalidRequest(format!(
                    "store {} already has a peer",
                    peer.store_id
                )))
            }
            None => {
                r.peers.push(metapb::Peer { role: metapb::PeerRole::Voter as i32, ..peer.clone() })
            }
        },
        Ok(ConfChangeType::AddLearnerNode) => {
            if existing.is_some() || same_store {
                return Err(Error::InvalidRequest(format!(
                    "store {} already has a peer",
                    peer.store_id
                )));
            }
            r.peers.push(metapb::Peer { role: learner, ..peer.clone() });
        }
        Ok(ConfChangeType::RemoveNode) => match existing {
            Some(i) => {
                r.peers.remove(i);
            }
            None => return Err(Error::InvalidRequest(format!("peer {} is not a member", peer.id))),
        },
        Err(_) => {
            return Err(Error::InvalidRequest(format!("unknown conf change type {change_type}")))
        }
    }
    let mut epoch = r.region_epoch.clone().unwrap_or_default();
    epoch.conf_ver += 1;
    r.region_epoch = Some(epoch);
    Ok(r)
}

/// Computes the regions of a batch split, left to right. The original region
/// keeps its id and takes the right-most range (as TiKV's right-derive).
pub fn split_region(
    region: &metapb::Region,
    req: &BatchSplitRequest,
) -> Result<(metapb::Region, Vec<metapb::Region>)> {
    let keys = req.requests.iter().map(|r| r.split_key.as_slice());
    atoll_codec::api::check_split_keys(&region.start_key, &region.end_key, keys)
        .map_err(|e| Error::InvalidRequest(format!("region {}: {e}", region.id)))?;
    for r in &req.requests {
        if r.new_peer_ids.len() != region.peers.len() {
            return Err(Error::InvalidRequest(format!(
                "split needs {} peer ids, got {}",
                region.peers.len(),
                r.new_peer_ids.len()
            )));
        }
    }
    let mut epoch = region.region_epoch.clone().unwrap_or_default();
    epoch.version += req.requests.len() as u64;
    let mut regions = Vec::with_capacity(req.requests.len() + 1);
    let mut start = region.start_key.clone();
    for r in &req.requests {
        let peers = region
            .peers
            .iter()
            .zip(&r.new_peer_ids)
            .map(|(p, id)| metapb::Peer {
                id: *id,
                store_id: p.store_id,
                role: p.role,
                is_witness: false,
            })
            .collect();
        regions.push(metapb::Region {
            id: r.new_region_id,
            start_key: start,
            end_key: r.split_key.clone(),
            region_epoch: Some(epoch.clone()),
            peers,
            ..Default::default()
        });
        start = r.split_key.clone();
    }
    let mut derived = region.clone();
    derived.start_key = start;
    derived.region_epoch = Some(epoch);
    regions.push(derived.clone());
    Ok((derived, regions))
}

#[cfg(test)]
mod tests {
    use atoll_proto::atollpb::SplitRequest;

    use super::*;

    fn region() -> metapb::Region {
        metapb::Region {
            id: 1,
            start_key: vec![],
            end_key: vec![],
            region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
            peers: vec![
                metapb::Peer { id: 2, store_id: 1, ..Default::default() },
                metapb::Peer { id: 3, store_id: 2, ..Default::default() },
            ],
            ..Default::default()
        }
    }

    fn split(keys: &[&[u8]]) -> BatchSplitRequest {
        BatchSplitRequest {
            requests: keys
                .iter()
                .enumerate()
                .map(|(i, k)| SplitRequest {
                    split_key: k.to_vec(),
                    new_region_id: 10 + i as u64,
                    new_peer_ids: vec![100 + 2 * i as u64, 101 + 2 * i as u64],
                })
                .collect(),
        }
    }

    #[test]
    fn split_right_derives_and_covers_range() {
        let (derived, regions) = split_region(&region(), &split(&[b"b", b"m"])).unwrap();
        assert_eq!(regions.len(), 3);
        assert_eq!(derived.id, 1);
        assert_eq!(derived.start_key, b"m");
        assert_eq!(regions[0].start_key, b"");
        assert_eq!(regions[0].end_key, b"b");
        assert_eq!(regions[1].start_key, b"b");
        assert_eq!(regions[1].end_key, b"m");
        assert_eq!(regions[2], derived);
        for r in &regions {
            assert_eq!(r.region_epoch.as_ref().unwrap().version, 3);
        }
        assert_eq!(
            regions[1].peers[1],
            metapb::Peer { id: 103, store_id: 2, ..Default::default() }
        );
    }

    #[test]
    fn membership_changes() {
        let r = region();
        let new = metapb::Peer { id: 9, store_id: 3, ..Default::default() };
        let add =
            |r: &metapb::Region, t: ConfChangeType, p: &metapb::Peer| change_peer(r, t as i32, p);
        let with_learner = add(&r, ConfChangeType::AddLearnerNode, &new).unwrap();
        assert_eq!(with_learner.peers.len(), 3);
        assert_eq!(with_learner.peers[2].role, metapb::PeerRole::Learner as i32);
        assert_eq!(with_learner.region_epoch.as_ref().unwrap().conf_ver, 2);
        assert_eq!(with_learner.region_epoch.as_ref().unwrap().version, 1);
        let promoted = add(&with_learner, ConfChangeType::AddNode, &new).unwrap();
        assert_eq!(promoted.peers[2].role, metapb::PeerRole::Voter as i32);
        assert!(add(&promoted, ConfChangeType::AddNode, &new).is_err(), "already a voter");
        let other_on_store = metapb::Peer { id: 10, store_id: 2, ..Default::default() };
        assert!(
            add(&r, ConfChangeType::AddLearnerNode, &other_on_store).is_err(),
            "one peer per store"
        );
        let removed = add(&promoted, ConfChangeType::RemoveNode, &r.peers[0]).unwrap();
        assert_eq!(removed.peers.iter().map(|p| p.id).collect::<Vec<_>>(), vec![3, 9]);
        assert_eq!(removed.region_epoch.as_ref().unwrap().conf_ver, 4);
        assert!(add(&removed, ConfChangeType::RemoveNode, &r.peers[0]).is_err(), "not a member");
    }

    #[test]
    fn split_rejects_bad_keys() {
        assert!(split_region(&region(), &split(&[])).is_err());
        assert!(split_region(&region(), &split(&[b"m", b"b"])).is_err());
        assert!(split_region(&region(), &split(&[b""])).is_err());
        let mut r = region();
        r.start_key = b"c".to_vec();
        r.end_key = b"f".to_vec();
        assert!(split_region(&r, &split(&[b"c"])).is_err(), "split at start");
        assert!(split_region(&r, &split(&[b"f"])).is_err(), "split at end");
        assert!(split_region(&r, &split(&[b"d"])).is_ok());
        let mut bad = split(&[b"d"]);
        bad.requests[0].new_peer_ids.pop();
        assert!(split_region(&r, &bad).is_err());
    }

    /// Applying our own removal leaves a tombstone in the same write and
    /// applies nothing after it; its proposers wait on the peers that stay.
    #[test]
    fn own_removal_writes_a_tombstone_and_stops_applying() {
        use atoll_engine_memory::MemoryEngine;
        use atoll_engine_traits::{Peekable, WriteOptions, CF_RAFT};
        use atoll_proto::atollpb::{
            ChangePeerRequest, PutRequest, RaftRequestHeader, RegionLocalState,
        };

        let engine = MemoryEngine::new();
        let r = region();
        let header = Some(RaftRequestHeader {
            region_id: 1,
            region_epoch: r.region_epoch.clone(),
            ..Default::default()
        });
        let me = r.peers[1].clone();
        let change = RaftCmdRequest {
            header: header.clone(),
            admin_request: Some(AdminRequest {
                cmd_type: AdminCmdType::ChangePeer as i32,
                change_peer: Some(ChangePeerRequest {
                    change_type: ConfChangeType::RemoveNode as i32,
                    peer: Some(me.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let cc = ConfChange {
            change_type: ConfChangeType::RemoveNode as i32,
            node_id: me.id,
            context: change.encode_to_vec(),
            id: 0,
        };
        let put = RaftCmdRequest {
            header,
            requests: vec![Request {
                cmd_type: CmdType::Put as i32,
                put: Some(PutRequest {
                    cf: String::new(),
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let apply_state = RaftApplyState { applied_index: 5, ..Default::default() };
        let mut d = ApplyDelegate::new(me.id, r, apply_state);
        let entries = vec![
            Entry {
                entry_type: EntryType::EntryConfChange as i32,
                index: 6,
                term: 1,
                data: prost011::Message::encode_to_vec(&cc),
                ..Default::default()
            },
            Entry { index: 7, term: 1, data: put.encode_to_vec(), ..Default::default() },
        ];
        let mut wb = engine.write_batch();
        let mut flush = |_: &mut _| Ok(());
        let mut done = vec![];
        d.apply_entries(&engine, &mut wb, &mut flush, entries, vec![], &mut done).unwrap();
        engine.write(&mut wb, WriteOptions::default()).unwrap();

        assert_eq!(d.apply_state.applied_index, 6);
        let state = engine.get_value_cf(CF_RAFT, &keys::region_state_key(1)).unwrap().unwrap();
        let state = RegionLocalState::decode(state.as_slice()).unwrap();
        assert_eq!(state.state, PeerState::Tombstone as i32);
        assert_eq!(state.region.unwrap().peers.len(), 1);
        assert!(engine.get_value_cf("default", &keys::data_key(b"k")).unwrap().is_none());
    }
}
