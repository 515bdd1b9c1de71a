//! The multi-raft store: every region on this store is a raft group (a
//! `Peer`) driven as an FSM by the batch system.
//!
//! - Raft pollers (`fsm::peer`, `fsm::store`) step messages, propose, and
//!   write every peer's raft log and state of one poll round in ONE write
//!   batch with ONE fsync (`fsm::RaftPoller::end`).
//! - Apply pollers (`fsm::apply`) execute committed entries into the data
//!   column families and report back.
//! - Talking to other stores and to PD goes through the `Transport` and
//!   `PdSink` traits, so this crate depends on neither gRPC nor PD.
//!
//! Depends on `engine_traits` (never on a concrete engine), `batch_system`
//! and `proto`.

pub mod apply;
pub mod codec;
pub mod config;
pub mod error;
pub mod fsm;
pub mod keys;
pub mod metrics;
pub mod msg;
pub mod operation;
pub mod peer;
pub mod snap;
pub mod storage;
pub mod store_meta;
pub mod system;
pub mod transport;
pub mod worker;

pub use config::Config;
pub use error::{Error, Result};
pub use msg::{CasResult, PeerMsg, ReadResponse, SplitIds, StoreMsg, WriteResponse};
pub use system::{RaftSystem, StoreHandle};
pub use transport::{PdSink, PdTask, RegionStats, Transport};

use atoll_proto::metapb;

/// Does the region (whose bounds are memcomparable-encoded) contain the raw `key`?
pub fn region_contains(region: &metapb::Region, key: &[u8]) -> bool {
    let enc = codec::encode_bytes(key);
    enc.as_slice() >= region.start_key.as_slice() && (region.end_key.is_empty() || enc < region.end_key)
}

/// The raw (decoded) `[start, end)` of a region; an empty end is unbounded.
pub fn region_raw_range(region: &metapb::Region) -> Result<(Vec<u8>, Vec<u8>)> {
    let s = codec::decode_bound(&region.start_key).map_err(Error::Raft)?;
    let e = codec::decode_bound(&region.end_key).map_err(Error::Raft)?;
    Ok((s, e))
}

/// Checks a request's epoch against the region's current one: the version
/// (splits) always, the membership version only with `check_conf`.
pub fn check_epoch(region: &metapb::Region, sent: Option<&metapb::RegionEpoch>, check_conf: bool) -> Result<()> {
    let current = region.region_epoch.clone().unwrap_or_default();
    let sent = sent.cloned().unwrap_or_default();
    if sent.version != current.version || (check_conf && sent.conf_ver != current.conf_ver) {
        return Err(Error::EpochNotMatch {
            msg: format!("region {} epoch is {current:?}, request has {sent:?}", region.id),
            current_regions: vec![region.clone()],
        });
    }
    Ok(())
}

/// Intersects the raw range `[start, end)` (empty end = unbounded) with the
/// region's raw range. The result may be empty (`start >= end`, end non-empty).
pub fn clip_to_region(region: &metapb::Region, start: &[u8], end: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let (rs, re) = region_raw_range(region)?;
    let lo = std::cmp::max(start, rs.as_slice()).to_vec();
    let hi = match (end.is_empty(), re.is_empty()) {
        (true, _) => re,
        (false, true) => end.to_vec(),
        (false, false) => std::cmp::min(end, re.as_slice()).to_vec(),
    };
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping() {
        let r = metapb::Region {
            start_key: codec::encode_bytes(b"c"),
            end_key: codec::encode_bytes(b"m"),
            ..Default::default()
        };
        assert_eq!(clip_to_region(&r, b"a", b"").unwrap(), (b"c".to_vec(), b"m".to_vec()));
        assert_eq!(clip_to_region(&r, b"d", b"e").unwrap(), (b"d".to_vec(), b"e".to_vec()));
        assert_eq!(clip_to_region(&r, b"d", b"z").unwrap(), (b"d".to_vec(), b"m".to_vec()));
        let unbounded = metapb::Region::default();
        assert_eq!(clip_to_region(&unbounded, b"", b"").unwrap(), (vec![], vec![]));
        assert_eq!(clip_to_region(&unbounded, b"x", b"").unwrap(), (b"x".to_vec(), vec![]));
    }
}
