//! Small shared utilities: human-readable config units, logging setup (with
//! the bridge that routes raft-rs's `slog` output into `tracing`), and the
//! per-process status HTTP server (`/metrics`, `/status`), the accepted
//! connections of a gRPC server that `stop` can close, and mutual TLS.
//!
//! Depends on no other Atoll crate.

pub mod config;
pub mod conn;
pub mod logger;
pub mod status;
pub mod time;
pub mod tls;

pub use config::{ReadableDuration, ReadableSize};
