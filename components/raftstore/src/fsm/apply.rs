//! The apply pool: one `ApplyFsm` per region; every poll round applies the
//! committed entries of all scheduled regions into one (unsynced) write
//! batch, then fires callbacks and reports progress to the raft peers.

use std::time::Instant;

use atoll_batch_system::{Fsm, FsmCell, HandlerBuilder, PollHandler, Router};
use atoll_engine_traits::{KvEngine, WriteBatch, WriteOptions};
use raft::eraftpb::Entry;

use atoll_engine_traits::DATA_CFS;
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
    /// The region left this store: fail what is pending, delete its data
    /// (after every entry queued before this message) and stop.
    Destroy {
        clear_data: bool,
    },
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
                ApplyMsg::Destroy { clear_data } => {
                    let d = &mut cell.fsm.delegate;
                    let id = d.region_id();
                    d.clear_pending(&mut self.done, || Error::RegionNotFound(id));
                    if clear_data {
                        let (start, end) = crate::snap::region_data_range(&d.region);
                        for cf in DATA_CFS {
                            if let Err(e) = self.wb.delete_range_cf(cf, &start, &end) {
                                panic!("region {id}: stage data deletion: {e}");
                            }
                        }
                    }
                    cell.fsm.stopped = true;
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
            raft_router: self.raft_router.clone(),
            snap_gen: self.snap_gen.clone(),
        }
    }
}
