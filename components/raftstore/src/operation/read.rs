//! Linearizable reads through raft's ReadIndex: reads arriving in one poll
//! round share one read-index request; each batch is served once the peer has
//! applied up to the index raft confirmed with a quorum. A read's epoch is
//! checked again when it is served: a split applied while it waited would
//! otherwise hand back a narrower region than the one the request named,
//! and a scan clipped to it would skip the keys that left.

use std::collections::VecDeque;
use std::sync::Arc;

use atoll_engine_traits::KvEngine;
use atoll_proto::atollpb::RaftRequestHeader;
use atoll_proto::metapb::RegionEpoch;

use crate::error::Error;
use crate::fsm::PollContext;
use crate::msg::{ReadCallback, ReadResponse};
use crate::peer::Peer;
use crate::transport::{PdSink, Transport};

/// A read waiting: the epoch its request carried, and its callback.
type PendingRead<S> = (Option<RegionEpoch>, ReadCallback<S>);

struct ReadBatch<S> {
    id: u64,
    reads: Vec<PendingRead<S>>,
    /// Set once raft confirms the read index.
    index: Option<u64>,
    issued_at_tick: u64,
}

/// Reads waiting for their read index and for apply to catch up.
pub struct ReadQueue<S> {
    next_id: u64,
    new_reads: Vec<PendingRead<S>>,
    batches: VecDeque<ReadBatch<S>>,
    len: usize,
}

impl<S> Default for ReadQueue<S> {
    fn default() -> Self {
        ReadQueue { next_id: 1, new_reads: vec![], batches: VecDeque::new(), len: 0 }
    }
}

impl<S> ReadQueue<S> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a read as `on_read` does after its checks (for tests that
    /// drive a peer without a poll context).
    #[cfg(test)]
    pub(crate) fn push(&mut self, epoch: Option<RegionEpoch>, cb: ReadCallback<S>) {
        self.new_reads.push((epoch, cb));
        self.len += 1;
    }

    pub fn fail_all(&mut self, err: impl Fn() -> Error) {
        for (_, cb) in self.new_reads.drain(..) {
            cb(Err(err()));
        }
        for b in self.batches.drain(..) {
            for (_, cb) in b.reads {
                cb(Err(err()));
            }
        }
        self.len = 0;
    }
}

impl<E: KvEngine> Peer<E> {
    pub fn on_read<T: Transport, P: PdSink>(
        &mut self,
        header: RaftRequestHeader,
        cb: ReadCallback<E::Snapshot>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        if let Err(e) = self.check_header(Some(&header), false) {
            return cb(Err(e));
        }
        if self.reads.len >= ctx.cfg.max_pending_reads {
            return cb(Err(Error::Busy(format!("{} has too many pending reads", self.tag()))));
        }
        self.wake();
        self.reads.new_reads.push((header.region_epoch, cb));
        self.reads.len += 1;
    }

    /// Issues one read-index request for every read that arrived this round.
    pub fn propose_pending_reads(&mut self) {
        if self.reads.new_reads.is_empty() {
            return;
        }
        if !self.is_leader() {
            let err = self.not_leader();
            return self.reads.fail_all(|| err.clone());
        }
        let id = self.reads.next_id;
        self.reads.next_id += 1;
        let reads = std::mem::take(&mut self.reads.new_reads);
        self.raft.read_index(id.to_be_bytes().to_vec());
        self.reads.batches.push_back(ReadBatch {
            id,
            reads,
            index: None,
            issued_at_tick: self.ticks,
        });
    }

    /// Raft confirmed the read index for batch `ctx`.
    pub fn on_read_state(&mut self, ctx: Vec<u8>, index: u64) {
        let Ok(bytes) = <[u8; 8]>::try_from(ctx.as_slice()) else { return };
        let id = u64::from_be_bytes(bytes);
        if let Some(b) = self.reads.batches.iter_mut().find(|b| b.id == id) {
            b.index = Some(index);
        }
        self.serve_ready_reads();
    }

    /// Answers every batch whose read index has been applied, in order.
    pub fn serve_ready_reads(&mut self) {
        let applied = self.raft.store().applied_index();
        let mut snapshot = None;
        while let Some(b) = self.reads.batches.front() {
            match b.index {
                Some(i) if i <= applied => {}
                _ => break,
            }
            let b = self.reads.batches.pop_front().expect("front exists");
            let snap = snapshot
                .get_or_insert_with(|| Arc::new(self.raft.store().engine().snapshot()))
                .clone();
            self.reads.len -= b.reads.len();
            for (epoch, cb) in b.reads {
                if let Err(e) = self.check_epoch(epoch.as_ref(), false) {
                    cb(Err(e));
                    continue;
                }
                cb(Ok(ReadResponse {
                    snapshot: snap.clone(),
                    region: self.region().clone(),
                    term: self.term(),
                }));
            }
        }
    }

    /// Raft drops read-index requests it cannot answer yet (e.g. before the
    /// new leader commits in its term); ask again for batches that waited
    /// `after_ticks` ticks.
    pub fn retry_stale_reads(&mut self, after_ticks: u64) {
        if self.reads.batches.is_empty() {
            return;
        }
        if !self.is_leader() {
            let err = self.not_leader();
            return self.reads.fail_all(|| err.clone());
        }
        let now = self.ticks;
        let stale: Vec<u64> = self
            .reads
            .batches
            .iter_mut()
            .filter(|b| b.index.is_none() && now - b.issued_at_tick >= after_ticks.max(1))
            .map(|b| {
                b.issued_at_tick = now;
                b.id
            })
            .collect();
        for id in stale {
            self.raft.read_index(id.to_be_bytes().to_vec());
        }
    }
}
