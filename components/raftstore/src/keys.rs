//! Key layout in the engine.
//!
//! Local (per-store metadata) keys start with `0x01`:
//! - `0x01 0x01`                             store ident
//! - `0x01 0x02 | region_id BE | 0x01 | index BE`  raft log entry
//! - `0x01 0x02 | region_id BE | 0x02`       raft local state
//! - `0x01 0x02 | region_id BE | 0x03`       apply state
//! - `0x01 0x03 | region_id BE | 0x01`       region local state
//!
//! User data keys are the region key (see `atoll_codec::api`) prefixed with
//! `z`: raw keys as they are in an API V1 cluster, memcomparable-encoded in
//! API V2. This layout is [`DATA_FORMAT`], recorded in the store ident.

pub const LOCAL_PREFIX: u8 = 0x01;
pub const STORE_IDENT_KEY: &[u8] = &[LOCAL_PREFIX, 0x01];
const REGION_RAFT_PREFIX: u8 = 0x02;
const REGION_META_PREFIX: u8 = 0x03;
const RAFT_LOG_SUFFIX: u8 = 0x01;
const RAFT_STATE_SUFFIX: u8 = 0x02;
const APPLY_STATE_SUFFIX: u8 = 0x03;
const REGION_STATE_SUFFIX: u8 = 0x01;

/// The data key layout this build writes and reads: 1 = `z` + region key.
pub const DATA_FORMAT: u32 = 1;

pub use atoll_codec::data::{
    data_end_key, data_key, origin_key, DATA_MAX_KEY, DATA_MIN_KEY, DATA_PREFIX,
};

/// Raft log and state keys all sort under this prefix for one region.
fn region_raft_key(region_id: u64, suffix: u8, extra: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + extra);
    k.extend_from_slice(&[LOCAL_PREFIX, REGION_RAFT_PREFIX]);
    k.extend_from_slice(&region_id.to_be_bytes());
    k.push(suffix);
    k
}

pub fn raft_log_key(region_id: u64, index: u64) -> Vec<u8> {
    let mut k = region_raft_key(region_id, RAFT_LOG_SUFFIX, 8);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// `[start, end)` covering every log entry of the region.
pub fn raft_log_range(region_id: u64) -> (Vec<u8>, Vec<u8>) {
    (
        region_raft_key(region_id, RAFT_LOG_SUFFIX, 0),
        region_raft_key(region_id, RAFT_LOG_SUFFIX + 1, 0),
    )
}

/// Extracts the index from a raft log key.
pub fn raft_log_index(key: &[u8]) -> Option<u64> {
    if key.len() != 19 {
        return None;
    }
    Some(u64::from_be_bytes(key[11..19].try_into().ok()?))
}

pub fn raft_state_key(region_id: u64) -> Vec<u8> {
    region_raft_key(region_id, RAFT_STATE_SUFFIX, 0)
}

pub fn apply_state_key(region_id: u64) -> Vec<u8> {
    region_raft_key(region_id, APPLY_STATE_SUFFIX, 0)
}

pub fn region_state_key(region_id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(11);
    k.extend_from_slice(&[LOCAL_PREFIX, REGION_META_PREFIX]);
    k.extend_from_slice(&region_id.to_be_bytes());
    k.push(REGION_STATE_SUFFIX);
    k
}

/// `[start, end)` covering the region state of every region.
pub fn region_meta_range() -> (Vec<u8>, Vec<u8>) {
    (vec![LOCAL_PREFIX, REGION_META_PREFIX], vec![LOCAL_PREFIX, REGION_META_PREFIX + 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_region_then_index() {
        let a = raft_log_key(1, 255);
        let b = raft_log_key(1, 256);
        let c = raft_log_key(2, 0);
        assert!(a < b && b < c);
        let (s, e) = raft_log_range(1);
        assert!(s <= a && b < e && c > e);
        assert!(raft_state_key(1) >= e, "states sort after the log");
        assert_eq!(raft_log_index(&b), Some(256));
        assert_eq!(raft_log_index(b"short"), None);
    }

    #[test]
    fn region_state_keys_are_in_meta_range() {
        let (s, e) = region_meta_range();
        for id in [0, 1, u64::MAX] {
            let k = region_state_key(id);
            assert!(s <= k && k < e);
        }
        assert!(raft_log_key(u64::MAX, u64::MAX) < s);
    }

    #[test]
    fn local_keys_sort_before_data() {
        assert!(STORE_IDENT_KEY < DATA_MIN_KEY);
        assert!(region_state_key(u64::MAX) < DATA_MIN_KEY.to_vec());
    }
}
