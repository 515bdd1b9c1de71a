use atoll_proto::{errorpb, metapb};

/// Errors of region operations. Region errors (`to_region_error`) tell the
/// client to refresh its routing and retry; the rest are fatal for the request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("region {region_id} is not led by this peer (leader {leader:?})")]
    NotLeader { region_id: u64, leader: Option<metapb::Peer> },
    #[error("region {0} not found on this store")]
    RegionNotFound(u64),
    #[error("epoch not match: {msg}")]
    EpochNotMatch { msg: String, current_regions: Vec<metapb::Region> },
    #[error("key {key:?} is not in region {}", region.id)]
    KeyNotInRegion { key: Vec<u8>, region: metapb::Region },
    #[error("stale command: its log entry was replaced by a newer leader")]
    StaleCommand,
    #[error("raft entry of {size} bytes exceeds the limit for region {region_id}")]
    EntryTooLarge { region_id: u64, size: u64 },
    #[error("request for store {requested} reached store {actual}")]
    StoreNotMatch { requested: u64, actual: u64 },
    /// Queues are full: real overload, not a transient state.
    #[error("server is busy: {0}")]
    Busy(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("engine: {0}")]
    Engine(#[from] atoll_engine_traits::Error),
    #[error("raft: {0}")]
    Raft(String),
    #[error("store is shutting down")]
    Shutdown,
    #[error("snapshot: {0}")]
    Snapshot(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The `errorpb.Error` a TiKV client understands, if this is a region error.
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
            Error::InvalidRequest(_) | Error::Engine(_) | Error::Raft(_) | Error::Snapshot(_) => {
                return None
            }
        }
        Some(e)
    }
}
