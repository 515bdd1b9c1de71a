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
//! Where things go: a peer's state is a field of `Peer` (`pub(crate)`, or
//! private with an accessor in `peer.rs` when other modules only read it);
//! what a peer does with it is an `impl Peer` block in the `operation/`
//! module of that concern, called from one arm of `fsm::peer`. Store-level
//! counts and sets a region is in belong in its `book::RegionBook`. Errors
//! say what went wrong (`error::Error`) and keep retryable, undetermined and
//! fatal apart.
//!
//! Depends on `engine_traits` (never on a concrete engine), `batch_system`,
//! `codec` and `proto`.

pub mod apply;
pub mod book;
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
pub use msg::{
    CasResult, PeerMsg, PeerTick, ReadResponse, SplitIds, SplitRequest, StoreMsg, WriteCallback,
    WriteResponse,
};
pub use operation::life::stale_peer_tombstone;
pub use system::{RaftSystem, StoreHandle};
pub use transport::{PdSink, PdTask, RegionStats, Transport, TransportError};

use atoll_proto::metapb;

/// Does the region contain `key`? Region bounds and `key` are both in the
/// cluster's region key space (see `atoll_codec::api`); this crate never
/// converts between key spaces.
pub fn region_contains(region: &metapb::Region, key: &[u8]) -> bool {
    key >= region.start_key.as_slice()
        && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// The key-in-region rule, for every side that checks a request's key:
/// `region_key` must be inside `region`; `key` (what the request carried)
/// is reported back in `KeyNotInRegion`.
pub fn check_key_in_region(region: &metapb::Region, region_key: &[u8], key: &[u8]) -> Result<()> {
    if region_contains(region, region_key) {
        return Ok(());
    }
    Err(Error::KeyNotInRegion { key: key.to_vec(), region: Box::new(region.clone()) })
}

/// Checks a request's epoch against the region's current one: the version
/// (splits) always, the membership version only with `check_conf`.
pub fn check_epoch(
    region: &metapb::Region,
    sent: Option<&metapb::RegionEpoch>,
    check_conf: bool,
) -> Result<()> {
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

/// Intersects `[start, end)` (region keys; empty end = unbounded) with the
/// region's range. The result may be empty (`start >= end`, end non-empty).
pub fn clip_to_region(region: &metapb::Region, start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (rs, re) = (region.start_key.as_slice(), region.end_key.as_slice());
    let lo = std::cmp::max(start, rs).to_vec();
    let hi = match (end.is_empty(), re.is_empty()) {
        (true, _) => re.to_vec(),
        (false, true) => end.to_vec(),
        (false, false) => std::cmp::min(end, re).to_vec(),
    };
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping() {
        let r = metapb::Region {
            start_key: b"c".to_vec(),
            end_key: b"m".to_vec(),
            ..Default::default()
        };
        assert_eq!(clip_to_region(&r, b"a", b""), (b"c".to_vec(), b"m".to_vec()));
        assert_eq!(clip_to_region(&r, b"d", b"e"), (b"d".to_vec(), b"e".to_vec()));
        assert_eq!(clip_to_region(&r, b"d", b"z"), (b"d".to_vec(), b"m".to_vec()));
        let unbounded = metapb::Region::default();
        assert_eq!(clip_to_region(&unbounded, b"", b""), (vec![], vec![]));
        assert_eq!(clip_to_region(&unbounded, b"x", b""), (b"x".to_vec(), vec![]));
    }

    #[test]
    fn containment_at_the_bounds() {
        // Keys equal to a bound, sharing its first bytes, or with trailing zeros.
        let r = metapb::Region {
            start_key: b"B".to_vec(),
            end_key: b"split-m".to_vec(),
            ..Default::default()
        };
        for k in [&b"B"[..], b"B\0", b"split-l\xff", b"split-\0"] {
            assert!(region_contains(&r, k), "{k:?}");
        }
        for k in [&b""[..], b"A\xff", b"split-m", b"split-m\0", b"split-n"] {
            assert!(!region_contains(&r, k), "{k:?}");
        }
        let tail = metapb::Region { start_key: b"split-m".to_vec(), ..Default::default() };
        assert!(region_contains(&tail, b"split-m") && region_contains(&tail, &[0xff; 9]));
        assert!(region_contains(&metapb::Region::default(), b""));
    }
}
