//! Atoll's Rust client: raw KV operations and transactions (`TxnClient`:
//! Percolator two-phase commit, async commit, 1PC, pessimistic locks) over
//! TiKV's protocol, with a
//! region cache filled from PD and retries on region errors (NotLeader,
//! EpochNotMatch, RegionNotFound, KeyNotInRegion, stale commands). It
//! speaks the cluster's API version (asked from PD): raw keys as they are in
//! API V1, the `DEFAULT` keyspace in API V2.
//!
//! Depends only on `proto`, `codec` and `pd_client`.

mod cache;
mod keys;
mod raw;
mod txn;

pub use atoll_codec::api::ApiVersion;
pub use raw::{Config, Error, RawClient, Result};
pub use txn::{Transaction, TxnClient, TxnOptions, LOCK_TTL_MS};
