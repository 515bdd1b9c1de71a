//! FSMs driven by the batch system and the raft poller that hosts them.
//! These are thin dispatchers: the work is in `operation/`.

pub mod apply;
pub mod peer;
pub mod store;

use std::sync::Arc;
use std::time::Instant;

use atoll_batch_system::{FsmCell, HandlerBuilder, PollHandler, Router};
use atoll_engine_traits::{KvEngine, WriteBatch, WriteOptions};

use crate::config::Config;
use crate::metrics::{
    APPEND_LOG_DURATION, ENGINE_FSYNCS, ENGINE_WRITE_BYTES, ENGINE_WRITE_DURATION,
};
use crate::snap::SnapManager;
use crate::store_meta::StoreShared;
use crate::transport::{PdSink, Transport};
use crate::worker::SplitChecker;
pub use apply::{ApplyMsg, ApplyRouter};
pub use peer::PeerFsm;
pub use store::StoreFsm;

pub type RaftRouter<E> = Router<PeerFsm<E>, StoreFsm>;

/// Registers a peer and its apply FSM (apply first, so the peer's first
/// committed entries have somewhere to go). The caller records an
/// initialized peer's range in the store meta, holding the meta lock across
/// both so no other thread sees a range without its peer (or the reverse).
pub fn register_region<E: KvEngine>(
    router: &RaftRouter<E>,
    apply_router: &ApplyRouter,
    peer: crate::peer::Peer<E>,
) {
    let region = peer.region().clone();
    let apply_state = peer.raft.store().apply_state.clone();
    let delegate = crate::apply::ApplyDelegate::new(peer.meta().id, region.clone(), apply_state);
    apply_router.register(region.id, apply::ApplyFsm::new(delegate));
    router.register(region.id, PeerFsm::new(peer));
}

/// Everything a raft poller thread shares with the peers it polls.
pub struct PollContext<E: KvEngine, T, P> {
    pub(crate) cfg: Arc<Config>,
    pub(crate) store_id: u64,
    pub(crate) engine: E,
    /// Raft log and state writes of every peer in this round.
    pub(crate) raft_wb: E::WriteBatch,
    pub(crate) trans: T,
    pub(crate) pd: P,
    pub(crate) router: RaftRouter<E>,
    pub(crate) apply_router: ApplyRouter,
    pub(crate) logger: slog::Logger,
    pub(crate) shared: Arc<StoreShared>,
    pub(crate) snap_mgr: SnapManager,
    pub(crate) split_checker: SplitChecker,
    /// Derived tick counts.
    pub(crate) gc_ticks: u64,
    pub(crate) split_check_ticks: u64,
}

/// Messages taken from one peer's mailbox per round before yielding.
const PEER_MSGS_PER_ROUND: usize = 1024;

pub struct RaftPoller<E: KvEngine, T, P> {
    pub ctx: PollContext<E, T, P>,
}

impl<E: KvEngine, T: Transport, P: PdSink> PollHandler<PeerFsm<E>, StoreFsm>
    for RaftPoller<E, T, P>
{
    fn begin(&mut self, _batch_size: usize) {}

    fn handle_control(&mut self, control: &mut FsmCell<StoreFsm>) {
        while let Some(msg) = control.try_recv() {
            control.fsm.handle(msg, &mut self.ctx);
        }
    }

    fn handle_normal(&mut self, cell: &mut FsmCell<PeerFsm<E>>) {
        for _ in 0..PEER_MSGS_PER_ROUND {
            let Some(msg) = cell.try_recv() else { break };
            cell.fsm.handle(msg, &mut self.ctx);
        }
        cell.fsm.peer.propose_pending_reads();
        cell.fsm.peer.handle_ready(&mut self.ctx);
        // After the ready's messages, so the followers see "hibernate" last.
        cell.fsm.peer.maybe_hibernate(&mut self.ctx);
    }

    /// The one fsync of the round: every peer's raft writes go to disk
    /// together, then each peer sends its persisted messages and applies.
    fn end(&mut self, normals: &mut [FsmCell<PeerFsm<E>>]) {
        if !self.ctx.raft_wb.is_empty() {
            let start = Instant::now();
            ENGINE_WRITE_BYTES
                .with_label_values(&["raft"])
                .inc_by(self.ctx.raft_wb.data_size() as u64);
            if let Err(e) = self.ctx.engine.write(&mut self.ctx.raft_wb, WriteOptions::sync()) {
                // Losing the raft log write would break raft's promises.
                panic!("store {}: raft log write failed: {e}", self.ctx.store_id);
            }
            ENGINE_FSYNCS.inc();
            let d = start.elapsed().as_secs_f64();
            APPEND_LOG_DURATION.observe(d);
            ENGINE_WRITE_DURATION.with_label_values(&["raft"]).observe(d);
        }
        for cell in normals.iter_mut() {
            cell.fsm.peer.post_ready(&mut self.ctx);
            if cell.fsm.peer.raft.has_ready() {
                cell.schedule_again();
            }
        }
        self.ctx.trans.flush();
    }
}

impl<E: KvEngine, T: Transport, P: PdSink> PollContext<E, T, P> {
    /// A context for another poller thread: same shared parts, own write batch.
    fn fork(&self) -> Self {
        PollContext {
            cfg: self.cfg.clone(),
            store_id: self.store_id,
            engine: self.engine.clone(),
            raft_wb: self.engine.write_batch_with_cap(RAFT_WB_CAPACITY),
            trans: self.trans.clone(),
            pd: self.pd.clone(),
            router: self.router.clone(),
            apply_router: self.apply_router.clone(),
            logger: self.logger.clone(),
            shared: self.shared.clone(),
            snap_mgr: self.snap_mgr.clone(),
            split_checker: self.split_checker.clone(),
            gc_ticks: self.gc_ticks,
            split_check_ticks: self.split_check_ticks,
        }
    }
}

/// Initial capacity of a poller's raft write batch.
pub const RAFT_WB_CAPACITY: usize = 4 << 20;

/// Hands every poller thread a fork of one template context.
pub struct RaftPollerBuilder<E: KvEngine, T, P> {
    pub template: PollContext<E, T, P>,
}

impl<E: KvEngine, T: Transport, P: PdSink> HandlerBuilder<PeerFsm<E>, StoreFsm>
    for RaftPollerBuilder<E, T, P>
{
    type Handler = RaftPoller<E, T, P>;
    fn build(&mut self) -> Self::Handler {
        RaftPoller { ctx: self.template.fork() }
    }
}
