//! Logging: `tracing` everywhere; raft-rs logs through `slog`, which we
//! forward into `tracing` so there is one log stream.

use std::fmt::Write as _;

use slog::{Drain, Key, OwnedKVList, Record, KV};
use tracing_subscriber::EnvFilter;

/// Installs a global `tracing` subscriber writing to stderr. `level` is an
/// `EnvFilter` directive (e.g. `info`, `atoll_raftstore=debug`); `RUST_LOG`
/// overrides it. Calling it twice is harmless.
pub fn init(level: &str) {
    // raft-rs is chatty at info (every vote); keep it at warn unless asked.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},raft=warn")));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_target(true).try_init();
}

/// A `slog` drain that re-emits every record as a `tracing` event.
pub struct TracingDrain;

struct KvToString(String);

impl slog::Serializer for KvToString {
    fn emit_arguments(&mut self, key: Key, val: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut kv = KvToString(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        let msg = record.msg();
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{msg}{}", kv.0)
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Info => tracing::info!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Debug => tracing::debug!(target: "raft", "{msg}{}", kv.0),
            slog::Level::Trace => tracing::trace!(target: "raft", "{msg}{}", kv.0),
        }
        Ok(())
    }
}

/// The root `slog` logger for raft-rs.
pub fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}
