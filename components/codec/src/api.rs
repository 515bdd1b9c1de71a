//! The API version of a cluster and its key space.
//!
//! Every cluster has ONE key space, the *region key space*: region bounds,
//! PD routing, split keys and data keys (`z` + region key) all use it, and
//! nothing inside a store ever converts between spaces. Only the request
//! boundary maps a client's key into it, the way TiKV does
//! (`storage.api-version`):
//!
//! | cluster | raw request key `k`     | clients                                   |
//! | ------- | ----------------------- | ----------------------------------------- |
//! | V1      | `k` as it is            | tikv-client `RawClient::new`, tikv-python  |
//! | V2      | `encode_bytes(k)`, where `k` = `r` + keyspace id (3 bytes) + user key | tikv-client with a keyspace |
//!
//! Transactional keys (not served yet) are memcomparable-encoded in both.
//! The version is chosen when the cluster is bootstrapped and never changes.

use std::fmt;

/// First byte of an API V2 raw key.
pub const RAW_KEY_PREFIX: u8 = b'r';
/// First byte of an API V2 transactional key.
pub const TXN_KEY_PREFIX: u8 = b'x';
/// Mode byte plus the 3-byte keyspace id.
pub const KEYSPACE_PREFIX_LEN: usize = 4;
/// The largest keyspace id (3 bytes).
pub const KEYSPACE_ID_MAX: u32 = 0xff_ffff;

/// The key prefix of keyspace `id` in `mode` (`r` or `x`): `mode | id (3 bytes BE)`.
pub fn keyspace_prefix(mode: u8, id: u32) -> [u8; KEYSPACE_PREFIX_LEN] {
    assert!(id <= KEYSPACE_ID_MAX, "keyspace id {id} does not fit in 3 bytes");
    let b = id.to_be_bytes();
    [mode, b[1], b[2], b[3]]
}

/// The smallest key after every key of keyspace `id` in `mode`: the next
/// keyspace's prefix, or the next mode byte after the last keyspace.
pub fn keyspace_end(mode: u8, id: u32) -> Vec<u8> {
    if id == KEYSPACE_ID_MAX {
        vec![mode + 1]
    } else {
        keyspace_prefix(mode, id + 1).to_vec()
    }
}

/// A cluster's API version (TiKV `storage.api-version`; numbered as
/// `kvrpcpb.APIVersion` on the wire: V1 = 0, V2 = 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// Raw keys as they are (TiKV V1 with `enable-ttl`: TTLs work).
    V1,
    /// Keyspaces: raw keys start with `r` + keyspace id, memcomparable-encoded.
    V2,
}

impl ApiVersion {
    /// `kvrpcpb.APIVersion` value of this version.
    pub fn to_proto(self) -> i32 {
        match self {
            ApiVersion::V1 => 0,
            ApiVersion::V2 => 2,
        }
    }

    /// The version a request or record names; `None` for V1TTL (clients of
    /// a V1 cluster always send V1) and unknown values.
    pub fn from_proto(v: i32) -> Option<Self> {
        match v {
            0 => Some(ApiVersion::V1),
            2 => Some(ApiVersion::V2),
            _ => None,
        }
    }

    /// From the configuration value (`storage.api-version = 1 | 2`).
    pub fn from_config(v: u8) -> Option<Self> {
        match v {
            1 => Some(ApiVersion::V1),
            2 => Some(ApiVersion::V2),
            _ => None,
        }
    }

    /// The configuration value of this version.
    pub fn config_value(self) -> u8 {
        match self {
            ApiVersion::V1 => 1,
            ApiVersion::V2 => 2,
        }
    }

    /// The region key of a raw request's key.
    pub fn raw_region_key(self, key: &[u8]) -> Vec<u8> {
        match self {
            ApiVersion::V1 => key.to_vec(),
            ApiVersion::V2 => crate::encode_bytes(key),
        }
    }

    /// The region key of a raw range bound; empty stays empty (the lowest
    /// key as a start, unbounded as an end) in both versions.
    pub fn raw_region_bound(self, key: &[u8]) -> Vec<u8> {
        if key.is_empty() {
            vec![]
        } else {
            self.raw_region_key(key)
        }
    }

    /// The raw key a client sees for a region key read from the store.
    pub fn raw_user_key(self, region_key: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            ApiVersion::V1 => Ok(region_key.to_vec()),
            ApiVersion::V2 => crate::decode_bytes(region_key),
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiVersion::V1 => "V1",
            ApiVersion::V2 => "V2",
        })
    }
}

/// Why split keys do not fit a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitKeyError {
    NoKeys,
    /// The key at `index` is empty, not after the previous key (or the
    /// region start), or not before the region end.
    Misplaced {
        index: usize,
        key: Vec<u8>,
    },
}

impl fmt::Display for SplitKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitKeyError::NoKeys => write!(f, "no split keys"),
            SplitKeyError::Misplaced { index, key } => write!(
                f,
                "split key #{index} {} is not strictly inside the region after the previous one",
                crate::hex(key)
            ),
        }
    }
}

impl std::error::Error for SplitKeyError {}

/// THE rule for split keys (region keys), checked by every side that
/// handles them (the peer asking PD for ids, the peer proposing, apply, PD's
/// admin API): at least one, each strictly inside `[start, end)` (an empty
/// `end` is +inf), strictly increasing (so no duplicates and none at the
/// start).
pub fn check_split_keys<'a>(
    start: &[u8],
    end: &[u8],
    keys: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), SplitKeyError> {
    let mut prev = start;
    let mut n = 0;
    for (index, k) in keys.into_iter().enumerate() {
        if k.is_empty() || k <= prev || (!end.is_empty() && k >= end) {
            return Err(SplitKeyError::Misplaced { index, key: k.to_vec() });
        }
        prev = k;
        n += 1;
    }
    if n == 0 {
        return Err(SplitKeyError::NoKeys);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_matches_kvproto_and_config() {
        for v in [ApiVersion::V1, ApiVersion::V2] {
            assert_eq!(ApiVersion::from_proto(v.to_proto()), Some(v));
            assert_eq!(ApiVersion::from_config(v.config_value()), Some(v));
        }
        assert_eq!(
            ApiVersion::from_proto(1),
            None,
            "V1TTL is a storage mode, never a request version"
        );
        assert_eq!(ApiVersion::from_proto(3), None);
        assert_eq!(ApiVersion::from_config(0), None);
        assert_eq!(ApiVersion::V2.to_string(), "V2");
    }

    #[test]
    fn v1_keys_are_their_own_region_keys() {
        for k in [&b""[..], b"B", b"split-m", b"r\0\0\0", b"r\0\0\0\0", b"\xff\xff"] {
            assert_eq!(ApiVersion::V1.raw_region_key(k), k);
            assert_eq!(ApiVersion::V1.raw_user_key(k).unwrap(), k);
        }
    }

    #[test]
    fn v2_keys_round_trip_and_keep_order() {
        let keys: Vec<&[u8]> = vec![
            b"r\0\0\0",
            b"r\0\0\0\0",
            b"r\0\0\0a",
            b"r\0\0\0abcd",
            b"r\0\0\0abcd\0",
            b"r\0\0\x01",
        ];
        for w in keys.windows(2) {
            let (a, b) = (ApiVersion::V2.raw_region_key(w[0]), ApiVersion::V2.raw_region_key(w[1]));
            assert!(a < b, "{:?} < {:?}", w[0], w[1]);
            assert_eq!(ApiVersion::V2.raw_user_key(&a).unwrap(), w[0]);
        }
        assert_eq!(ApiVersion::V2.raw_region_bound(b""), b"");
        assert!(ApiVersion::V2.raw_user_key(b"r\0\0\0").is_err(), "not an encoded key");
    }

    #[test]
    fn keyspace_prefixes() {
        assert_eq!(keyspace_prefix(RAW_KEY_PREFIX, 0), *b"r\0\0\0");
        assert_eq!(keyspace_prefix(TXN_KEY_PREFIX, 0x010203), *b"x\x01\x02\x03");
        assert_eq!(keyspace_end(RAW_KEY_PREFIX, 0), b"r\0\0\x01");
        assert_eq!(keyspace_end(RAW_KEY_PREFIX, KEYSPACE_ID_MAX), b"s");
    }

    #[test]
    fn split_keys_inside_and_increasing() {
        let ok = |s: &[u8], e: &[u8], k: &[&[u8]]| check_split_keys(s, e, k.iter().copied());
        assert_eq!(ok(b"", b"", &[]), Err(SplitKeyError::NoKeys));
        assert!(ok(b"", b"", &[b"a", b"b"]).is_ok());
        assert!(ok(b"", b"", &[b""]).is_err(), "empty key");
        assert!(ok(b"c", b"f", &[b"c"]).is_err(), "at the start");
        assert!(ok(b"c", b"f", &[b"f"]).is_err(), "at the end");
        assert!(ok(b"c", b"f", &[b"d", b"d"]).is_err(), "duplicate");
        assert!(ok(b"c", b"f", &[b"e", b"d"]).is_err(), "out of order");
        assert!(ok(b"c", b"f", &[b"d", b"e"]).is_ok());
        assert_eq!(
            ok(b"c", b"", &[b"d", b"a"]),
            Err(SplitKeyError::Misplaced { index: 1, key: b"a".to_vec() })
        );
    }
}
