//! Atoll's Rust client: raw KV operations over TiKV's protocol, with a
//! region cache filled from PD and retries on region errors (NotLeader,
//! EpochNotMatch, RegionNotFound, KeyNotInRegion, stale commands).
//!
//! Depends only on `proto`, `codec` and `pd_client`.

mod cache;
mod raw;

pub use raw::{Config, Error, RawClient, Result};
