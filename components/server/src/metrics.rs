use lazy_static::lazy_static;
use prometheus::*;

lazy_static! {
    pub static ref GC_SAFE_POINT: IntGauge = register_int_gauge!(
        "atoll_gc_safe_point",
        "The PD GC safe point this store collected every region it leads up to (TSO)"
    )
    .unwrap();
    pub static ref GC_KEYS: IntCounterVec = register_int_counter_vec!(
        "atoll_gc_keys_total",
        "Transactional keys GC looked at, and versions it removed",
        &["kind"]
    )
    .unwrap();
    pub static ref GC_ROUND_DURATION: Histogram = register_histogram!(
        "atoll_gc_round_duration_seconds",
        "Time to collect every region this store leads, per safe point",
        exponential_buckets(0.001, 2.0, 20).unwrap()
    )
    .unwrap();
    pub static ref TXN_PREWRITES: IntCounterVec = register_int_counter_vec!(
        "atoll_txn_prewrites_total",
        "Prewrites written, by how their transaction commits (two_phase, async_commit, one_pc)",
        &["kind"]
    )
    .unwrap();
    pub static ref GRPC_REQUESTS: IntCounterVec =
        register_int_counter_vec!("atoll_grpc_requests_total", "gRPC requests by type", &["type"])
            .unwrap();
    pub static ref GRPC_DURATION: HistogramVec = register_histogram_vec!(
        "atoll_grpc_request_duration_seconds",
        "gRPC request duration by type",
        &["type"],
        exponential_buckets(0.0001, 2.0, 20).unwrap()
    )
    .unwrap();
    pub static ref GRPC_ERRORS: IntCounterVec = register_int_counter_vec!(
        "atoll_grpc_request_errors_total",
        "gRPC requests that failed, by type and kind",
        &["type", "kind"]
    )
    .unwrap();
    pub static ref TRANSPORT_BATCH_SIZE: Histogram = register_histogram!(
        "atoll_transport_batch_size",
        "Raft messages per transport batch",
        exponential_buckets(1.0, 2.0, 10).unwrap()
    )
    .unwrap();
    pub static ref TRANSPORT_FLUSHES: IntCounter = register_int_counter!(
        "atoll_transport_flushes_total",
        "Transport flushes (one per poll round with messages)"
    )
    .unwrap();
    pub static ref TRANSPORT_RECONNECTS: IntCounter = register_int_counter!(
        "atoll_transport_reconnects_total",
        "Store-to-store stream (re)connections"
    )
    .unwrap();
    pub static ref TRANSPORT_CONNECT_FAILURES: IntCounterVec = register_int_counter_vec!(
        "atoll_transport_connect_failures_total",
        "Failed attempts to open a store-to-store stream, by class",
        &["class"]
    )
    .unwrap();
    pub static ref TRANSPORT_RECEIVED: IntCounter = register_int_counter!(
        "atoll_transport_messages_received_total",
        "Raft messages received from other stores"
    )
    .unwrap();
    pub static ref PD_HEARTBEAT_STREAM_EVENTS: IntCounterVec = register_int_counter_vec!(
        "atoll_pd_heartbeat_stream_events_total",
        "Region heartbeat stream to PD: opened, and why it closed or could not open",
        &["event"]
    )
    .unwrap();
    pub static ref PD_WORKER_DROPPED: IntCounterVec = register_int_counter_vec!(
        "atoll_pd_worker_dropped_total",
        "PD tasks the store's PD worker dropped or refused, by reason",
        &["reason"]
    )
    .unwrap();
    pub static ref LOCK_WAITS: IntCounterVec = register_int_counter_vec!(
        "atoll_lock_waits_total",
        "Pessimistic lock requests that met another transaction's lock, by how the wait ended: woken (the lock went), timeout, deadlock (refused), full (too many waiters: not waited), not_waiting (the request asked not to wait)",
        &["result"]
    )
    .unwrap();
    pub static ref LOCK_WAIT_DURATION: Histogram = register_histogram!(
        "atoll_lock_wait_duration_seconds",
        "Time pessimistic lock requests waited for a lock to go",
        exponential_buckets(0.0005, 2.0, 16).unwrap()
    )
    .unwrap();
    pub static ref LOCK_WAITERS: IntGauge = register_int_gauge!(
        "atoll_lock_waiters",
        "Pessimistic lock requests waiting now"
    )
    .unwrap();
    pub static ref DEADLOCK_DETECT: IntCounterVec = register_int_counter_vec!(
        "atoll_deadlock_detect_total",
        "Waits checked by the deadlock detector, by where (local: this store leads the first region; remote) and result (ok, deadlock, error: not checked, the wait ends by its timeout)",
        &["where", "result"]
    )
    .unwrap();
}
