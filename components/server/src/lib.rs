//! The store server: gRPC services (TiKV's raw and transactional KV API for
//! clients, our raft
//! transport for peers), the batched raft transport, the PD worker, store
//! bootstrap, and `run()` for the `atoll-server` binary.
//!
//! This is the only crate that puts RocksDB, raftstore, gRPC and PD together.

pub mod checksum;
pub mod config;
pub mod gc_worker;
pub mod kv;
pub mod lock_manager;
pub mod metrics;
pub mod node;
pub mod pd_worker;
pub mod raft_service;
mod request;
pub mod server;
pub mod storage;
pub mod transport;
pub mod txn;

pub use config::Config;
pub use server::{run, Server};
