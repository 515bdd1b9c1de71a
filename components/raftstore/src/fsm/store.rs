use std::time::{Duration, Instant};

use atoll_batch_system::Fsm;
use atoll_engine_traits::KvEngine;

use crate::fsm::PollContext;
use crate::metrics::RAFT_MESSAGES_DROPPED;
use crate::msg::{PeerMsg, StoreMsg};
use crate::operation::life::maybe_create_peer;
use crate::transport::{PdSink, PdTask, Transport};

/// The store's control FSM: store-wide work and messages for unknown regions.
pub struct StoreFsm {
    pub store_id: u64,
    pub started_at: Instant,
}

impl Fsm for StoreFsm {
    type Message = StoreMsg;
    fn is_stopped(&self) -> bool {
        false
    }
}

impl StoreFsm {
    pub fn handle<E: KvEngine, T: Transport, P: PdSink>(
        &mut self,
        msg: StoreMsg,
        ctx: &mut PollContext<E, T, P>,
    ) {
        match msg {
            StoreMsg::Raft(m) => {
                let region_id = m.region_id;
                if let Some(m) = maybe_create_peer(*m, ctx) {
                    if ctx.router.send(region_id, PeerMsg::Raft(Box::new(m))).is_err() {
                        RAFT_MESSAGES_DROPPED.with_label_values(&["mailbox_full"]).inc();
                    }
                }
            }
            StoreMsg::Tick => {
                let used_size = ctx
                    .engine
                    .approximate_size_cf(atoll_engine_traits::CF_DEFAULT, b"", b"")
                    .unwrap_or_default();
                crate::metrics::ENGINE_SIZE.set(used_size as i64);
                ctx.pd.schedule(PdTask::StoreHeartbeat {
                    store_id: self.store_id,
                    region_count: ctx.router.len() as u32,
                    used_size,
                })
            }
            StoreMsg::CheckLiveness => self.wake_orphaned_followers(ctx),
        }
    }

    /// Wakes hibernated followers whose leader's store has not been heard
    /// from for an election timeout, so they can elect a new leader.
    fn wake_orphaned_followers<E: KvEngine, T: Transport, P: PdSink>(
        &mut self,
        ctx: &mut PollContext<E, T, P>,
    ) {
        let timeout = ctx.cfg.base_tick() * ctx.cfg.raft_election_timeout_ticks as u32;
        let now = Instant::now();
        let silent = |store: u64| {
            let seen = ctx.shared.last_seen.get(&store).map(|t| *t).unwrap_or(self.started_at);
            now.saturating_duration_since(seen) > timeout.max(Duration::from_millis(1))
        };
        let orphans: Vec<u64> = ctx
            .shared
            .sleeping_followers
            .iter()
            .filter(|e| silent(*e.value()))
            .map(|e| *e.key())
            .collect();
        for region_id in orphans {
            ctx.shared.sleeping_followers.remove(&region_id);
            let _ = ctx.router.force_send(region_id, PeerMsg::Wake);
        }
    }
}
