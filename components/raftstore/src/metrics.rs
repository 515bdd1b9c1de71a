use lazy_static::lazy_static;
use prometheus::*;

lazy_static! {
    pub static ref PROPOSE_DURATION: Histogram = register_histogram!(
        "atoll_raftstore_propose_wait_duration_seconds",
        "From proposal to apply, per write",
        exponential_buckets(0.0001, 2.0, 20).unwrap()
    )
    .unwrap();
    pub static ref APPEND_LOG_DURATION: Histogram = register_histogram!(
        "atoll_raftstore_append_log_duration_seconds",
        "Write + fsync of one poll round's raft batch",
        exponential_buckets(0.00005, 2.0, 20).unwrap()
    )
    .unwrap();
    pub static ref COMMIT_LOG_DURATION: Histogram = register_histogram!(
        "atoll_raftstore_commit_log_duration_seconds",
        "From proposal to commit, per write",
        exponential_buckets(0.0001, 2.0, 20).unwrap()
    )
    .unwrap();
    pub static ref APPLY_DURATION: Histogram = register_histogram!(
        "atoll_raftstore_apply_duration_seconds",
        "Write of one apply round's batch",
        exponential_buckets(0.00005, 2.0, 20).unwrap()
    )
    .unwrap();
    pub static ref READY_HANDLED: IntCounter =
        register_int_counter!("atoll_raftstore_ready_handled_total", "Raft readies handled")
            .unwrap();
    pub static ref RAFT_MESSAGES_SENT: IntCounter = register_int_counter!(
        "atoll_raftstore_raft_messages_sent_total",
        "Raft messages handed to the transport"
    )
    .unwrap();
    pub static ref RAFT_MESSAGES_DROPPED: IntCounterVec = register_int_counter_vec!(
        "atoll_raftstore_raft_messages_dropped_total",
        "Raft messages dropped, by reason",
        &["reason"]
    )
    .unwrap();
    pub static ref PROPOSALS: IntCounterVec = register_int_counter_vec!(
        "atoll_raftstore_proposals_total",
        "Proposals by kind",
        &["kind"]
    )
    .unwrap();
    pub static ref REGION_COUNT: IntGauge =
        register_int_gauge!("atoll_raftstore_region_count", "Regions on this store").unwrap();
    pub static ref LEADER_COUNT: IntGauge =
        register_int_gauge!("atoll_raftstore_leader_count", "Regions led by this store").unwrap();
    pub static ref ENGINE_WRITE_DURATION: HistogramVec = register_histogram_vec!(
        "atoll_engine_write_duration_seconds",
        "Engine write batch duration, by kind (raft = synced, apply = unsynced)",
        &["kind"],
        exponential_buckets(0.00005, 2.0, 20).unwrap()
    )
    .unwrap();
    pub static ref ENGINE_SIZE: IntGauge = register_int_gauge!(
        "atoll_engine_size_bytes",
        "Approximate engine size (measured each store heartbeat)"
    )
    .unwrap();
    pub static ref ENGINE_FSYNCS: IntCounter =
        register_int_counter!("atoll_engine_fsyncs_total", "Synced engine writes").unwrap();
    pub static ref ENGINE_WRITE_BYTES: IntCounterVec = register_int_counter_vec!(
        "atoll_engine_write_bytes_total",
        "Bytes written to the engine, by kind",
        &["kind"]
    )
    .unwrap();
    pub static ref SNAPSHOTS: IntCounterVec = register_int_counter_vec!(
        "atoll_raftstore_snapshots_total",
        "Snapshot events: generated, sending, sent, send_failed, received, applied, rejected",
        &["event"]
    )
    .unwrap();
    pub static ref CONF_CHANGES: IntCounterVec = register_int_counter_vec!(
        "atoll_raftstore_conf_changes_total",
        "Membership changes, by stage (proposed, applied)",
        &["stage"]
    )
    .unwrap();
    pub static ref SPLIT_CHECKS: IntCounterVec = register_int_counter_vec!(
        "atoll_raftstore_split_checks_total",
        "Split checks scheduled, and those that led to a split",
        &["result"]
    )
    .unwrap();
    pub static ref HIBERNATED_REGIONS: IntGauge = register_int_gauge!(
        "atoll_raftstore_hibernated_regions",
        "Regions on this store that stopped ticking"
    )
    .unwrap();
}
