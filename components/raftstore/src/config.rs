use std::time::Duration;

use atoll_util::{ReadableDuration, ReadableSize};
use serde::{Deserialize, Serialize};

/// Raftstore settings (`[raftstore]` in the server config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    /// One raft tick.
    pub raft_base_tick_interval: ReadableDuration,
    /// Election timeout in ticks (randomized in `[n, 2n)`).
    pub raft_election_timeout_ticks: usize,
    pub raft_heartbeat_ticks: usize,
    /// In-flight append messages per follower (`max_inflight`).
    pub raft_max_inflight_msgs: usize,
    pub raft_max_size_per_msg: ReadableSize,
    /// A proposal larger than this is rejected with `raft_entry_too_large`.
    pub raft_entry_max_size: ReadableSize,
    /// How often the leader considers compacting its log.
    pub raft_log_gc_tick_interval: ReadableDuration,
    /// Compact only when at least this many applied entries are in the log.
    pub raft_log_gc_threshold: u64,
    /// Compact past a lagging follower once the log is this long.
    pub raft_log_gc_count_limit: u64,
    /// Recent log entries kept in memory per region.
    pub raft_entry_cache_limit: usize,
    /// Region heartbeat to PD (also sent on leadership and region changes).
    pub pd_heartbeat_tick_interval: ReadableDuration,
    pub pd_store_heartbeat_tick_interval: ReadableDuration,
    /// Raft poller threads.
    pub store_pool_size: usize,
    /// Apply poller threads.
    pub apply_pool_size: usize,
    /// FSMs handled per poll round.
    pub store_max_batch_size: usize,
    pub apply_max_batch_size: usize,
    /// Messages queued per region before senders see "busy".
    pub mailbox_capacity: usize,
    /// Proposals waiting for apply per region before new ones are rejected.
    pub max_pending_proposals: usize,
    /// Reads waiting for a read index per region before new ones are rejected.
    pub max_pending_reads: usize,
    /// How often a leader considers measuring its region for a split.
    pub split_region_check_tick_interval: ReadableDuration,
    /// Measure again only after this many bytes were written since the last check.
    pub region_split_check_diff: ReadableSize,
    /// A region larger than `region-max-size` (or with more keys than
    /// `region-max-keys`) is split into pieces of about `region-split-size`
    /// (`region-split-keys`).
    pub region_max_size: ReadableSize,
    pub region_split_size: ReadableSize,
    pub region_max_keys: u64,
    pub region_split_keys: u64,
    /// Stop ticking regions with nothing to do (leader and followers agree).
    pub hibernate_regions: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            raft_base_tick_interval: ReadableDuration::secs(1),
            raft_election_timeout_ticks: 10,
            raft_heartbeat_ticks: 2,
            raft_max_inflight_msgs: 256,
            raft_max_size_per_msg: ReadableSize::mib(1),
            raft_entry_max_size: ReadableSize::mib(8),
            raft_log_gc_tick_interval: ReadableDuration::secs(3),
            raft_log_gc_threshold: 50,
            raft_log_gc_count_limit: 20_000,
            raft_entry_cache_limit: 4096,
            pd_heartbeat_tick_interval: ReadableDuration::secs(60),
            pd_store_heartbeat_tick_interval: ReadableDuration::secs(10),
            store_pool_size: 2,
            apply_pool_size: 2,
            store_max_batch_size: 256,
            apply_max_batch_size: 256,
            mailbox_capacity: 4096,
            max_pending_proposals: 16_384,
            max_pending_reads: 16_384,
            split_region_check_tick_interval: ReadableDuration::secs(10),
            region_split_check_diff: ReadableSize::mib(6),
            region_max_size: ReadableSize::mib(144),
            region_split_size: ReadableSize::mib(96),
            region_max_keys: 1_440_000,
            region_split_keys: 960_000,
            hibernate_regions: true,
        }
    }
}

impl Config {
    /// Settings for fast in-process tests: short ticks, small thresholds.
    pub fn for_tests() -> Self {
        Config {
            raft_base_tick_interval: ReadableDuration::millis(20),
            raft_log_gc_tick_interval: ReadableDuration::millis(100),
            raft_log_gc_threshold: 10,
            pd_heartbeat_tick_interval: ReadableDuration::millis(200),
            pd_store_heartbeat_tick_interval: ReadableDuration::millis(500),
            split_region_check_tick_interval: ReadableDuration::millis(100),
            ..Config::default()
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.raft_base_tick_interval.0.is_zero() {
            return Err("raftstore.raft-base-tick-interval must be positive".into());
        }
        if self.raft_heartbeat_ticks == 0
            || self.raft_election_timeout_ticks <= self.raft_heartbeat_ticks
        {
            return Err(format!(
                "raftstore: election timeout ({} ticks) must exceed heartbeat ({} ticks) > 0",
                self.raft_election_timeout_ticks, self.raft_heartbeat_ticks
            ));
        }
        for (name, v) in [
            ("raft-max-inflight-msgs", self.raft_max_inflight_msgs),
            ("store-pool-size", self.store_pool_size),
            ("apply-pool-size", self.apply_pool_size),
            ("store-max-batch-size", self.store_max_batch_size),
            ("apply-max-batch-size", self.apply_max_batch_size),
            ("mailbox-capacity", self.mailbox_capacity),
            ("max-pending-proposals", self.max_pending_proposals),
            ("max-pending-reads", self.max_pending_reads),
            ("raft-entry-cache-limit", self.raft_entry_cache_limit),
        ] {
            if v == 0 {
                return Err(format!("raftstore.{name} must be positive"));
            }
        }
        if self.raft_entry_max_size.0 == 0 || self.raft_max_size_per_msg.0 == 0 {
            return Err("raftstore: entry and message size limits must be positive".into());
        }
        if self.region_split_size.0 == 0 || self.region_split_size.0 > self.region_max_size.0 {
            return Err(
                "raftstore: region-split-size must be positive and <= region-max-size".into()
            );
        }
        if self.region_split_keys == 0 || self.region_split_keys > self.region_max_keys {
            return Err(
                "raftstore: region-split-keys must be positive and <= region-max-keys".into()
            );
        }
        if self.raft_log_gc_count_limit < self.raft_log_gc_threshold {
            return Err("raftstore.raft-log-gc-count-limit must be >= raft-log-gc-threshold".into());
        }
        Ok(())
    }

    /// Converts an interval to a whole number of base ticks (at least one).
    pub fn ticks(&self, d: ReadableDuration) -> u64 {
        let base = self.raft_base_tick_interval.0.as_millis().max(1);
        (d.0.as_millis() / base).max(1) as u64
    }

    /// Idle ticks before a leader hibernates its region.
    pub fn hibernate_ticks(&self) -> u64 {
        2 * self.raft_election_timeout_ticks as u64
    }

    pub fn split_thresholds(&self) -> crate::worker::SplitThresholds {
        crate::worker::SplitThresholds {
            max_size: self.region_max_size.0,
            split_size: self.region_split_size.0,
            max_keys: self.region_max_keys,
            split_keys: self.region_split_keys,
        }
    }

    pub fn base_tick(&self) -> Duration {
        self.raft_base_tick_interval.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_test_config_are_valid() {
        Config::default().validate().unwrap();
        Config::for_tests().validate().unwrap();
        let c = Config::default();
        assert_eq!(c.ticks(c.raft_log_gc_tick_interval), 3);
        assert_eq!(c.ticks(ReadableDuration::millis(1)), 1);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let c = Config { raft_election_timeout_ticks: 2, ..Config::default() };
        assert!(c.validate().is_err());
        let c = Config { store_pool_size: 0, ..Config::default() };
        assert!(c.validate().unwrap_err().contains("store-pool-size"));
    }
}
