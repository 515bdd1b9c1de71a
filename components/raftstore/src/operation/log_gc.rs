//! Raft log GC: the leader proposes `CompactLog` once enough applied entries
//! pile up; every replica deletes the compacted prefix when it applies it.

use atoll_engine_traits::KvEngine;
use atoll_proto::atollpb::{AdminCmdType, AdminRequest, CompactLogRequest, RaftTruncatedState};

use crate::fsm::PollContext;
use crate::peer::Peer;
use crate::transport::{PdSink, Transport};

/// Where to compact to, given the log's first index, what is applied, the
/// slowest follower's match index and the configured limits. `None` = not yet.
pub fn compact_index(
    first: u64,
    applied: u64,
    min_match: u64,
    threshold: u64,
    count_limit: u64,
) -> Option<u64> {
    if applied < first || applied - first + 1 < threshold {
        return None;
    }
    // Keep what the slowest follower still needs, unless the log grew past
    // the hard limit (that follower will need a snapshot).
    let target = if applied - first + 1 >= count_limit { applied } else { min_match.min(applied) };
    // Keep the entry at `target` itself: its term anchors the next append.
    let idx = target.checked_sub(1)?;
    (idx >= first).then_some(idx)
}

impl<E: KvEngine> Peer<E> {
    pub fn maybe_compact_log<T: Transport, P: PdSink>(&mut self, ctx: &mut PollContext<E, T, P>) {
        let store = self.raft.store();
        let first = store.truncated().index + 1;
        let applied = store.applied_index();
        let min_match = self.raft.raft.prs().iter().map(|(_, p)| p.matched).min().unwrap_or(0);
        let Some(idx) = compact_index(
            first,
            applied,
            min_match,
            ctx.cfg.raft_log_gc_threshold,
            ctx.cfg.raft_log_gc_count_limit,
        ) else {
            return;
        };
        let Ok(term) = self.raft.raft.raft_log.term(idx) else { return };
        let admin = AdminRequest {
            cmd_type: AdminCmdType::CompactLog as i32,
            compact_log: Some(CompactLogRequest { compact_index: idx, compact_term: term }),
            ..Default::default()
        };
        self.propose_admin(admin, None, ctx);
    }

    pub fn on_log_compacted<T: Transport, P: PdSink>(
        &mut self,
        truncated: RaftTruncatedState,
        first_index: u64,
        ctx: &mut PollContext<E, T, P>,
    ) {
        if let Err(e) = self.raft.mut_store().compact_to(truncated, first_index, &mut ctx.raft_wb) {
            panic!("{} compact log: {e}", self.tag());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::compact_index;

    #[test]
    fn waits_for_threshold() {
        assert_eq!(compact_index(6, 10, 10, 50, 1000), None);
        assert_eq!(compact_index(6, 4, 4, 1, 1000), None, "nothing applied");
    }

    #[test]
    fn keeps_what_slow_followers_need() {
        assert_eq!(compact_index(6, 100, 100, 50, 1000), Some(99));
        assert_eq!(compact_index(6, 100, 40, 50, 1000), Some(39));
        assert_eq!(compact_index(6, 100, 3, 50, 1000), None, "follower needs everything");
    }

    #[test]
    fn hard_limit_overrides_slow_follower() {
        assert_eq!(compact_index(6, 2000, 3, 50, 1000), Some(1999));
    }
}
