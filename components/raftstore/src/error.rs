//! Errors of region operations, in three classes a caller must keep apart:
//!
//! - **region errors** (`to_region_error` is `Some`): the request was not
//!   executed here; the client refreshes its routing and retries;
//! - **undetermined** ([`Error::Undetermined`]): the request may or may not
//!   have been applied (it was proposed, then its answer was lost). Never a
//!   region error: a retry could apply it twice or report a stale result;
//! - **fatal for the request**: bad input, corrupt local state, internal
//!   failures; retrying the same request here will not help.

use std::sync::Arc;

use atoll_proto::{errorpb, metapb};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("region {region_id} is not led by this peer (leader {leader:?})")]
    NotLeader { region_id: u64, leader: Option<metapb::Peer> },
    #[error("region {0} not found on this store")]
    RegionNotFound(u64),
    #[error("epoch not match: {msg}")]
    EpochNotMatch { msg: String, current_regions: Vec<metapb::Region> },
    #[error("key {key:?} is not in region {}", region.id)]
    KeyNotInRegion { key: Vec<u8>, region: Box<metapb::Region> },
    /// The proposal was definitely not applied (a newer leader replaced its
    /// log entry, or it was never proposed).
    #[error("stale command: its log entry was replaced by a newer leader")]
    StaleCommand,
    #[error("raft entry of {size} bytes exceeds the limit for region {region_id}")]
    EntryTooLarge { region_id: u64, size: u64 },
    #[error("request for store {requested} reached store {actual}")]
    StoreNotMatch { requested: u64, actual: u64 },
    /// Queues are full: real overload, not a transient state.
    #[error("server is busy: {0}")]
    Busy(String),
    /// The store is stopping; nothing was proposed for this request.
    #[error("store is shutting down")]
    Shutdown,

    /// The request was proposed and its outcome is unknown. Its message
    /// starts with `undetermined: ` (the wire contract Atoll's client reads).
    #[error("undetermined: {0}; the request may or may not have been applied")]
    Undetermined(String),

    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("engine: {0}")]
    Engine(#[from] atoll_engine_traits::Error),
    /// Local state on disk is missing or inconsistent.
    #[error("corruption: {0}")]
    Corruption(String),
    /// Bytes that should be a protobuf message (a log entry, a raft message,
    /// snapshot metadata) are not one.
    #[error("decode {what}: {reason}")]
    Codec { what: String, reason: String },
    /// raft-rs refused an operation.
    #[error("raft: {0}")]
    Raft(Arc<raft::Error>),
    /// PD refused or failed a request made on the region's behalf.
    #[error("pd: {0}")]
    Pd(String),
    /// An internal invariant did not hold.
    #[error("internal: {0}")]
    Internal(String),
    #[error("snapshot: {0}")]
    Snapshot(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<raft::Error> for Error {
    fn from(e: raft::Error) -> Error {
        Error::Raft(Arc::new(e))
    }
}

impl Error {
    /// A decode failure (of prost 0.11's raft types or 0.12's Atoll types).
    pub fn codec(what: impl Into<String>, reason: impl std::fmt::Display) -> Error {
        Error::Codec { what: what.into(), reason: reason.to_string() }
    }

    /// Is the outcome of the request unknown?
    pub fn is_undetermined(&self) -> bool {
        matches!(self, Error::Undetermined(_))
    }

    /// The `errorpb.Error` a TiKV client understands, if this is a region
    /// error (retryable after refreshing routing).
    pub fn to_region_error(&self) -> Option<errorpb::Error> {
        let mut e = errorpb::Error { message: self.to_string(), ..Default::default() };
        match self {
            Error::NotLeader { region_id, leader } => {
                e.not_leader =
                    Some(errorpb::NotLeader { region_id: *region_id, leader: leader.clone() })
            }
            Error::RegionNotFound(id) => {
                e.region_not_found = Some(errorpb::RegionNotFound { region_id: *id })
            }
            Error::EpochNotMatch { current_regions, .. } => {
                e.epoch_not_match =
                    Some(errorpb::EpochNotMatch { current_regions: current_regions.clone() })
            }
            Error::KeyNotInRegion { key, region } => {
                e.key_not_in_region = Some(errorpb::KeyNotInRegion {
                    key: key.clone(),
                    region_id: region.id,
                    start_key: region.start_key.clone(),
                    end_key: region.end_key.clone(),
                })
            }
            // A store going down: the client refreshes routing and retries elsewhere.
            Error::StaleCommand | Error::Shutdown => {
                e.stale_command = Some(errorpb::StaleCommand {})
            }
            Error::EntryTooLarge { region_id, size } => {
                e.raft_entry_too_large =
                    Some(errorpb::RaftEntryTooLarge { region_id: *region_id, entry_size: *size })
            }
            Error::StoreNotMatch { requested, actual } => {
                e.store_not_match = Some(errorpb::StoreNotMatch {
                    request_store_id: *requested,
                    actual_store_id: *actual,
                })
            }
            Error::Busy(reason) => {
                e.server_is_busy =
                    Some(errorpb::ServerIsBusy { reason: reason.clone(), ..Default::default() })
            }
            Error::Undetermined(_)
            | Error::InvalidRequest(_)
            | Error::Engine(_)
            | Error::Corruption(_)
            | Error::Codec { .. }
            | Error::Raft(_)
            | Error::Pd(_)
            | Error::Internal(_)
            | Error::Snapshot(_) => return None,
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undetermined_is_never_a_region_error() {
        let e = Error::Undetermined("write timed out after proposal".into());
        assert!(e.is_undetermined());
        assert!(e.to_region_error().is_none());
        assert!(e.to_string().starts_with("undetermined: "), "{e}");
        assert!(e.to_string().contains("may or may not have been applied"), "{e}");
    }

    #[test]
    fn retryable_and_fatal_are_apart() {
        let region = metapb::Region { id: 7, ..Default::default() };
        let retryable = [
            Error::NotLeader { region_id: 7, leader: None },
            Error::RegionNotFound(7),
            Error::EpochNotMatch { msg: "x".into(), current_regions: vec![region.clone()] },
            Error::KeyNotInRegion { key: b"k".to_vec(), region: Box::new(region) },
            Error::StaleCommand,
            Error::Shutdown,
            Error::EntryTooLarge { region_id: 7, size: 1 },
            Error::StoreNotMatch { requested: 1, actual: 2 },
            Error::Busy("full".into()),
        ];
        for e in retryable {
            assert!(e.to_region_error().is_some(), "{e}");
        }
        let fatal = [
            Error::InvalidRequest("bad".into()),
            Error::Corruption("raft state missing".into()),
            Error::Pd("down".into()),
            Error::Internal("oops".into()),
            Error::Snapshot("bad".into()),
            Error::from(raft::Error::ProposalDropped),
            Error::codec("entry 5", "truncated"),
        ];
        for e in fatal {
            assert!(e.to_region_error().is_none(), "{e}");
            assert!(!e.is_undetermined());
        }
    }
}
