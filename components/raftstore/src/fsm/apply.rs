//! The apply pool: one `ApplyFsm` per region; every poll round applies the
//! committed entries of all scheduled regions into one (unsynced) write
//! batch, then fires callbacks and reports progress to the raft peers.

use std::time::Instant;

use atoll_batch_system::{Fsm, FsmCell, HandlerBuilder, PollHandler, Router};
use atoll_engine_traits::{KvEngine, WriteBatch, WriteOptions};
use raft::eraftpb::Entry;

use atoll_proto::atollpb::RaftApplyState;
use atoll_proto::metapb;

use crate::apply::{ApplyDelegate, ApplyRes, DoneCallbacks, Proposal};
use crate::error::{Error, Result};
use crate::fsm::RaftRouter;
use crate::metrics::{APPLY_DURATION, ENGINE_WRITE_BYTES, ENGINE_WRITE_DURATION, PROPOSE_DURATION};
use crate::msg::PeerMsg;
use crate::storage::SnapSlot;
use crate::worker::{SnapGenTask, SnapGenerator};

pub enum ApplyMsg {
    Apply {
        entries: Vec<Entry>,
        proposals: Vec<Proposal>,
    },
    /// Raft needs a snapshot: capture the data as of what is applied now.
    GenSnapshot {
        slot: SnapSlot,
    },
    /// The peer applied a snapshot: continue from its state.
    Restore {
        region: metapb::Region,
        apply_state: RaftApplyState,
    },
    /// The region leaves this store: after every entry queued before this
    /// message, fail what is pending, stop, and tell the peer
    /// (`PeerMsg::ApplyDestroyed`), which then deletes the region's state
    /// and data. Nothing is written for the region after that answer.
    Destroy,
}

pub struct ApplyFsm {
    pub delegate: ApplyDelegate,
    stopped: bool,
}

impl ApplyFsm {
    pub fn new(delegate: ApplyDelegate) -> Box<Self> {
        Box::new(ApplyFsm { delegate, stopped: false })
    }
}

impl Fsm for ApplyFsm {
    type Message = ApplyMsg;
    fn is_stopped(&self) -> bool {
        self.stopped
    }
}

/// The apply pool has no control work; this FSM only satisfies the batch system.
pub struct ApplyControlFsm;

impl Fsm for ApplyControlFsm {
    type Message = ();
    fn is_stopped(&self) -> bool {
        false
    }
}

pub type ApplyRouter = Router<ApplyFsm, ApplyControlFsm>;

/// Messages taken from one mailbox per round before yielding to other regions.
const APPLY_MSGS_PER_ROUND: usize = 256;

pub struct ApplyPoller<E: KvEngine> {
    engine: E,
    wb: E::WriteBatch,
    done: DoneCallbacks,
    results: Vec<ApplyRes>,
    /// Regions whose apply FSM stopped this round.
    destroyed: Vec<u64>,
    raft_router: RaftRouter<E>,
    snap_gen: SnapGenerator<E::Snapshot>,
}

impl<E: KvEngine> ApplyPoller<E> {
    fn write(&mut self) -> Result<()> {
        if self.wb.is_empty() {
            return Ok(());
        }
        let start = Instant::now();
        ENGINE_WRITE_BYTES.with_label_values(&["apply"]).inc_by(self.wb.data_size() as u64);
        self.engine.write(&mut self.wb, WriteOptions::default())?;
        let d = start.elapsed().as_secs_f64();
        APPLY_DURATION.observe(d);
        ENGINE_WRITE_DURATION.with_label_values(&["apply"]).observe(d);
        Ok(())
    }
}

impl<E: KvEngine> PollHandler<ApplyFsm, ApplyControlFsm> for ApplyPoller<E> {
    fn begin(&mut self, _batch_size: usize) {}

    fn handle_control(&mut self, control: &mut FsmCell<ApplyControlFsm>) {
        while control.try_recv().is_some() {}
    }

    fn handle_normal(&mut self, cell: &mut FsmCell<ApplyFsm>) {
        let mut applied_any = false;
        for _ in 0..APPLY_MSGS_PER_ROUND {
            let Some(msg) = cell.try_recv() else { break };
            match msg {
                ApplyMsg::Apply { entries, proposals } => {
                    let engine = self.engine.clone();
                    let mut flush = |wb: &mut E::WriteBatch| -> Result<()> {
                        engine.write(wb, WriteOptions::default()).map_err(Error::from)
                    };
                    if let Err(e) = cell.fsm.delegate.apply_entries(
                        &self.engine,
                        &mut self.wb,
                        &mut flush,
                        entries,
                        proposals,
                        &mut self.done,
                    ) {
                        // Disk errors here leave the replica unable to make
                        // progress safely; stop rather than diverge.
                        panic!("region {}: apply failed: {e}", cell.fsm.delegate.region_id());
                    }
                    applied_any = true;
                }
                ApplyMsg::GenSnapshot { slot } => {
                    // The snapshot must include every entry applied so far.
                    if let Err(e) = self.write() {
                        panic!("apply write failed: {e}");
                    }
                    let d = &cell.fsm.delegate;
                    self.snap_gen.schedule(SnapGenTask {
                        snap: self.engine.snapshot(),
                        region: d.region.clone(),
                        index: d.apply_state.applied_index,
                        term: d.apply_state.applied_term,
                        slot,
                    });
                }
                ApplyMsg::Restore { region, apply_state } => {
                    cell.fsm.delegate.restore(region, apply_state)
                }
                ApplyMsg::Destroy => {
                    let d = &mut cell.fsm.delegate;
                    let id = d.region_id();
                    // Their entries are committed: the peers that stay apply
                    // them, but this one cannot say with what result.
                    d.clear_pending(&mut self.done, || {
                        Error::Undetermined(format!("region {id} left this store while applying"))
                    });
                    cell.fsm.stopped = true;
                    self.destroyed.push(id);
                    break;
                }
            }
        }
        if applied_any {
            // Sent after the write in `end`: write -> callbacks -> results.
            self.results.push(cell.fsm.delegate.take_res());
        }
    }

    fn end(&mut self, _normals: &mut [FsmCell<ApplyFsm>]) {
        if let Err(e) = self.write() {
            panic!("apply write failed: {e}");
        }
        for (cb, res, at) in self.done.drain(..) {
            PROPOSE_DURATION.observe(at.elapsed().as_secs_f64());
            cb(res);
        }
        for res in self.results.drain(..) {
            let id = res.region_id;
            // Apply results must not be dropped; force_send bypasses the
            // mailbox bound (one result per region per round).
            if self.raft_router.force_send(id, PeerMsg::ApplyRes(Box::new(res))).is_err() {
                tracing::debug!(region = id, "apply result for a region that is gone");
            }
        }
        // After the results: the peer handles what was applied first.
        for id in self.destroyed.drain(..) {
            if self.raft_router.force_send(id, PeerMsg::ApplyDestroyed).is_err() {
                tracing::warn!(region = id, "apply stopped for a region that is gone");
            }
        }
    }
}

pub struct ApplyPollerBuilder<E: KvEngine> {
    pub engine: E,
    pub raft_router: RaftRouter<E>,
    pub snap_gen: SnapGenerator<E::Snapshot>,
}

impl<E: KvEngine> HandlerBuilder<ApplyFsm, ApplyControlFsm> for ApplyPollerBuilder<E> {
    type Handler = ApplyPoller<E>;
    fn build(&mut self) -> ApplyPoller<E> {
        ApplyPoller {
            engine: self.engine.clone(),
            wb: self.engine.write_batch_with_cap(4 << 20),
            done: vec![],
            results: vec![],
            destroyed: vec![],
            raft_router: self.raft_router.clone(),
            snap_gen: self.snap_gen.clone(),
        }
    }
}
