//! Consistency checking for Atoll's fault-injection harness: histories of
//! client operations, a linearizability checker for registers with
//! compare-and-swap (`linear`), the set checker (`set`) and the bank
//! checker of transactions (`bank`).
//!
//! Pure code: no IO, no clock, no knowledge of Atoll's protocols. The
//! harness records what clients did and when; this crate decides whether
//! any single-copy order could explain it.

pub mod bank;
pub mod history;
pub mod linear;
pub mod set;

pub use history::{Event, History, Op, Outcome};
pub use linear::{check_history, check_key, Anomaly, Verdict};
