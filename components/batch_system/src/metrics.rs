use lazy_static::lazy_static;
use prometheus::{exponential_buckets, register_histogram_vec, HistogramVec};

lazy_static! {
    pub static ref FSMS_PER_POLL: HistogramVec = register_histogram_vec!(
        "atoll_batch_fsms_per_poll",
        "Number of FSMs handled in one poll round",
        &["pool"],
        exponential_buckets(1.0, 2.0, 10).unwrap()
    )
    .unwrap();
    pub static ref POLL_DURATION: HistogramVec = register_histogram_vec!(
        "atoll_batch_poll_duration_seconds",
        "Duration of one poll round, begin to end",
        &["pool"],
        exponential_buckets(0.00005, 2.0, 20).unwrap()
    )
    .unwrap();
}
