//! The placement driver: cluster metadata, id allocation, timestamps (TSO),
//! the region routing table learned from heartbeats, and (as operators in
//! heartbeat responses) the decisions that reshape the cluster.
//!
//! gRPC-compatible with TiKV's PD (`pdpb`, `keyspacepb`). State is persisted
//! in an embedded RocksDB under `data-dir` (one PD), or in etcd for a group
//! of PD members that elect a leader (`member.rs`), so restarts and
//! failovers keep it. Depends on `proto`, `util` and the engine crates;
//! never on raftstore.

pub mod cluster;
pub mod config;
pub mod core;
pub mod etcd;
pub mod http;
pub mod id;
pub mod keyspace;
pub mod member;
pub mod metrics;
pub mod schedule;
pub mod server;
pub mod service;
pub mod storage;
pub mod tso;

pub use config::Config;
pub use server::{run, PdServer};
