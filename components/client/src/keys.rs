//! How the client's keys map to the cluster's key space
//! (`atoll_codec::api`): in an API V1 cluster keys go on the wire as they
//! are and route as they are; in API V2 they get the keyspace's raw prefix
//! on the wire (`r` + 3-byte id) and route by its memcomparable encoding,
//! as tikv-client does with a keyspace.
//!
//! Three spaces: *user* keys (the API), *wire* keys (in requests and
//! responses), *region* keys (PD routing, region bounds).

use atoll_codec::api::{keyspace_end, keyspace_prefix, ApiVersion, RAW_KEY_PREFIX, TXN_KEY_PREFIX};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyMap {
    api: ApiVersion,
    /// Prepended to user keys on the wire (V2: the keyspace's raw prefix).
    prefix: Vec<u8>,
    /// The wire form of an unbounded end (V2: the next keyspace's prefix).
    end: Vec<u8>,
}

impl KeyMap {
    pub fn v1() -> Self {
        KeyMap { api: ApiVersion::V1, prefix: vec![], end: vec![] }
    }

    pub fn v2(keyspace_id: u32) -> Self {
        KeyMap {
            api: ApiVersion::V2,
            prefix: keyspace_prefix(RAW_KEY_PREFIX, keyspace_id).to_vec(),
            end: keyspace_end(RAW_KEY_PREFIX, keyspace_id),
        }
    }

    /// The keyspace's transactional keys (API V2: `x` + 3-byte id); they
    /// route by their memcomparable encoding as raw keys do in V2.
    pub fn v2_txn(keyspace_id: u32) -> Self {
        KeyMap {
            api: ApiVersion::V2,
            prefix: keyspace_prefix(TXN_KEY_PREFIX, keyspace_id).to_vec(),
            end: keyspace_end(TXN_KEY_PREFIX, keyspace_id),
        }
    }

    pub fn api_version(&self) -> ApiVersion {
        self.api
    }

    /// The wire form of a user key (or of a range start: empty is the
    /// lowest key of the key space).
    pub fn wire(&self, user: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + user.len());
        k.extend_from_slice(&self.prefix);
        k.extend_from_slice(user);
        k
    }

    /// The wire form of a range end; empty means unbounded.
    pub fn wire_end(&self, user: &[u8]) -> Vec<u8> {
        if user.is_empty() {
            self.end.clone()
        } else {
            self.wire(user)
        }
    }

    /// The user key of a wire key from a response.
    pub fn user(&self, mut wire: Vec<u8>) -> Vec<u8> {
        debug_assert!(wire.starts_with(&self.prefix), "{wire:?} outside the keyspace");
        wire.drain(..self.prefix.len().min(wire.len()));
        wire
    }

    /// The region key a wire key routes by.
    pub fn region_key(&self, wire: &[u8]) -> Vec<u8> {
        self.api.raw_region_key(wire)
    }

    /// The wire form of a region's end bound, clamped to the key space:
    /// `None` if no key of this key space lies at or after it.
    pub fn wire_of_region_end(&self, region_end: &[u8]) -> Option<Vec<u8>> {
        if region_end.is_empty() {
            return None;
        }
        let wire = match self.api {
            ApiVersion::V1 => region_end.to_vec(),
            // A region bound from PD is an encoded key; anything else is not
            // ours to interpret, so treat the key space as ending there.
            ApiVersion::V2 => self.api.raw_user_key(region_end).ok()?,
        };
        (self.end.is_empty() || wire < self.end).then_some(wire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_is_the_identity() {
        let m = KeyMap::v1();
        assert_eq!(m.wire(b"k"), b"k");
        assert_eq!(m.wire_end(b""), b"");
        assert_eq!(m.region_key(b"k\0"), b"k\0");
        assert_eq!(m.user(b"k".to_vec()), b"k");
        assert_eq!(m.wire_of_region_end(b"m"), Some(b"m".to_vec()));
        assert_eq!(m.wire_of_region_end(b""), None);
    }

    #[test]
    fn v2_uses_the_keyspace_prefix_and_encoding() {
        let m = KeyMap::v2(0);
        assert_eq!(m.wire(b"k"), b"r\0\0\0k");
        assert_eq!(m.wire(b""), b"r\0\0\0");
        assert_eq!(m.wire_end(b""), b"r\0\0\x01");
        assert_eq!(m.region_key(b"r\0\0\0k"), atoll_codec::encode_bytes(b"r\0\0\0k"));
        assert_eq!(m.user(b"r\0\0\0k".to_vec()), b"k");
        let split = atoll_codec::encode_bytes(b"r\0\0\0m");
        assert_eq!(m.wire_of_region_end(&split), Some(b"r\0\0\0m".to_vec()));
        // The keyspace boundary ends the key space.
        assert_eq!(m.wire_of_region_end(&atoll_codec::encode_bytes(b"r\0\0\x01")), None);
    }

    #[test]
    fn v2_transactional_keys_use_the_x_prefix() {
        let m = KeyMap::v2_txn(0);
        assert_eq!(m.wire(b"k"), b"x\0\0\0k");
        assert_eq!(m.wire_end(b""), b"x\0\0\x01");
        assert_eq!(m.region_key(b"x\0\0\0k"), atoll_codec::encode_bytes(b"x\0\0\0k"));
        let split = atoll_codec::encode_bytes(b"x\0\0\0m");
        assert_eq!(m.wire_of_region_end(&split), Some(b"x\0\0\0m".to_vec()));
    }
}
