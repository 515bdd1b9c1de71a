use std::sync::atomic::Ordering;

use atoll_batch_system::Fsm;
use atoll_engine_traits::KvEngine;

use crate::fsm::PollContext;
use crate::metrics::RAFT_MESSAGES_DROPPED;
use crate::msg::StoreMsg;
use crate::transport::{PdSink, PdTask, Transport};

/// The store's control FSM: store-wide work and messages for unknown regions.
pub struct StoreFsm {
    pub store_id: u64,
}

impl Fsm for StoreFsm {
    type Message = StoreMsg;
    fn is_stopped(&self) -> bool {
        false
    }
}

impl StoreFsm {
    pub fn handle<E: KvEngine, T: Transport, P: PdSink>(&mut self, msg: StoreMsg, ctx: &mut PollContext<E, T, P>) {
        match msg {
            StoreMsg::Raft(m) => {
                // Peers are created by bootstrap and by splits on this store;
                // a message can arrive before the split is applied here, and
                // raft retries, so dropping it is safe.
                RAFT_MESSAGES_DROPPED.with_label_values(&["region_not_found"]).inc();
                tracing::debug!(store = self.store_id, region = m.region_id, "raft message for unknown region");
            }
            StoreMsg::Tick => ctx.pd.schedule(PdTask::StoreHeartbeat {
                store_id: self.store_id,
                region_count: ctx.router.len() as u32,
                leader_count: ctx.leader_count.load(Ordering::Relaxed) as u32,
            }),
        }
    }
}
