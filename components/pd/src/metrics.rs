use lazy_static::lazy_static;
use prometheus::*;

lazy_static! {
    pub static ref PD_REQUESTS: IntCounterVec = register_int_counter_vec!(
        "atoll_pd_requests_total",
        "PD gRPC requests by method",
        &["method"]
    )
    .unwrap();
    pub static ref PD_HEARTBEATS: IntCounterVec = register_int_counter_vec!(
        "atoll_pd_heartbeats_total",
        "Heartbeats received by kind",
        &["kind"]
    )
    .unwrap();
    pub static ref PD_OPERATORS: IntCounterVec = register_int_counter_vec!(
        "atoll_pd_operators_total",
        "Operators created, by kind",
        &["kind"]
    )
    .unwrap();
    pub static ref PD_OPERATOR_EVENTS: IntCounterVec = register_int_counter_vec!(
        "atoll_pd_operator_events_total",
        "Operators that ended, by kind and outcome (finished, timeout)",
        &["kind", "event"]
    )
    .unwrap();
    pub static ref PD_TSO: IntCounter =
        register_int_counter!("atoll_pd_tso_allocated_total", "Timestamps handed out").unwrap();
    pub static ref PD_TSO_DURATION: Histogram = register_histogram!(
        "atoll_pd_tso_duration_seconds",
        "Time to serve one TSO request",
        exponential_buckets(0.00001, 2.0, 16).unwrap()
    )
    .unwrap();
    pub static ref PD_REGIONS: IntGauge =
        register_int_gauge!("atoll_pd_regions", "Regions PD knows").unwrap();
    pub static ref PD_STORES: IntGauge =
        register_int_gauge!("atoll_pd_stores", "Stores PD knows").unwrap();
    pub static ref PD_IS_LEADER: IntGauge =
        register_int_gauge!("atoll_pd_is_leader", "1 while this PD member leads").unwrap();
}
