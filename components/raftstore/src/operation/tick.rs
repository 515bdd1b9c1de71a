//! The raft tick: raft's clock, idle counting for hibernation, and retries
//! of reads that waited too long. The ticks due after it (log GC, split
//! check) are dispatched by `fsm/peer.rs` from [`PeerTick`].
//!
//! [`PeerTick`]: crate::msg::PeerTick

use atoll_engine_traits::KvEngine;

use crate::fsm::PollContext;
use crate::peer::Peer;
use crate::transport::{PdSink, Transport};

impl<E: KvEngine> Peer<E> {
    /// One raft tick; `false` if the region is asleep (a tick queued before
    /// it hibernated), and then nothing else is due either.
    pub fn on_raft_tick<T: Transport, P: PdSink>(
        &mut self,
        ctx: &mut PollContext<E, T, P>,
    ) -> bool {
        if self.book.is_hibernated() {
            return false;
        }
        self.raft.tick();
        self.ticks += 1;
        self.idle_ticks += 1;
        if self.is_leader() {
            self.report_pending_peers_change(ctx);
        }
        self.retry_stale_reads(ctx.cfg.raft_election_timeout_ticks as u64 / 2);
        true
    }
}
