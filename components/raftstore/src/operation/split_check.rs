//! Size-based split: on its split-check tick the leader hands the region to
//! the split checker (once enough was written since the last check); the
//! result updates the approximate size and, if the region is too big,
//! starts a split (ids from PD, then `BatchSplit` through raft).

use atoll_engine_traits::KvEngine;
use atoll_proto::metapb;

use crate::fsm::PollContext;
use crate::metrics::SPLIT_CHECKS;
use crate::msg::SplitRequest;
use crate::peer::Peer;
use crate::transport::{PdSink, Transport};
use crate::worker::SplitCheckTask;

impl<E: KvEngine> Peer<E> {
    pub fn on_split_check_tick<T: Transport, P: PdSink>(&mut self, ctx: &mut PollContext<E, T, P>) {
        if !self.is_leader()
            || !self.is_initialized()
            || self.split_check_diff < ctx.cfg.region_split_check_diff.0
        {
            return;
        }
        if ctx.split_checker.schedule(SplitCheckTask { region: self.region().clone(), half: false })
        {
            SPLIT_CHECKS.with_label_values(&["scheduled"]).inc();
            self.split_check_diff = 0;
        }
    }

    /// An admin asked to split without keys: split in half by size.
    pub fn schedule_half_split<T: Transport, P: PdSink>(
        &mut self,
        ctx: &mut PollContext<E, T, P>,
    ) -> bool {
        self.is_leader()
            && ctx
                .split_checker
                .schedule(SplitCheckTask { region: self.region().clone(), half: true })
    }

    pub fn on_split_check_result<T: Transport, P: PdSink>(
        &mut self,
        epoch: metapb::RegionEpoch,
        size: u64,
        keys: u64,
        split_keys: Vec<Vec<u8>>,
        ctx: &mut PollContext<E, T, P>,
    ) {
        if epoch.version != self.epoch().version {
            return; // measured a shape this region no longer has
        }
        self.approximate_size = Some(size);
        self.approximate_keys = Some(keys);
        if split_keys.is_empty() || !self.is_leader() {
            return;
        }
        SPLIT_CHECKS.with_label_values(&["split"]).inc();
        tracing::info!(
            "{} is {size} bytes / {keys} keys: splitting at {} keys",
            self.tag(),
            split_keys.len()
        );
        self.on_split_region(epoch, SplitRequest::AtKeys(split_keys), None, ctx);
    }
}
