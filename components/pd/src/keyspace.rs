//! Keyspaces (API V2 clusters only). Keys of keyspace `id` start with `r`
//! (raw) or `x` (transactional) followed by the 3-byte id; PD keeps every
//! keyspace in regions of its own by splitting at these boundaries.

use atoll_codec::api::{keyspace_end, keyspace_prefix, RAW_KEY_PREFIX, TXN_KEY_PREFIX};
use atoll_codec::encode_bytes;
use atoll_proto::keyspacepb::{KeyspaceMeta, KeyspaceState};

pub const DEFAULT_KEYSPACE_NAME: &str = "DEFAULT";
pub const DEFAULT_KEYSPACE_ID: u32 = 0;

/// Region boundaries (memcomparable-encoded, the API V2 region key space)
/// around keyspace `id`, sorted.
pub fn boundaries(id: u32) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [RAW_KEY_PREFIX, TXN_KEY_PREFIX]
        .iter()
        .flat_map(|&mode| [keyspace_prefix(mode, id).to_vec(), keyspace_end(mode, id)])
        .map(|k| encode_bytes(&k))
        .collect();
    v.sort();
    v
}

/// The keyspaces this PD knows. Only `DEFAULT` for now.
pub fn load(name: &str, created_at: i64) -> Option<KeyspaceMeta> {
    (name == DEFAULT_KEYSPACE_NAME).then(|| KeyspaceMeta {
        id: DEFAULT_KEYSPACE_ID,
        name: name.to_owned(),
        state: KeyspaceState::Enabled as i32,
        created_at,
        state_changed_at: created_at,
        config: Default::default(),
    })
}

/// The boundaries strictly inside `[start, end)` (empty end = unbounded).
pub fn split_keys_inside(start: &[u8], end: &[u8]) -> Vec<Vec<u8>> {
    boundaries(DEFAULT_KEYSPACE_ID)
        .into_iter()
        .filter(|k| k.as_slice() > start && (end.is_empty() || k.as_slice() < end))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keyspace_boundaries() {
        let b = boundaries(0);
        assert_eq!(b[0], encode_bytes(b"r\0\0\0"));
        assert_eq!(b[1], encode_bytes(b"r\0\0\x01"));
        assert_eq!(b[2], encode_bytes(b"x\0\0\0"));
        assert_eq!(b[3], encode_bytes(b"x\0\0\x01"));
        assert_eq!(split_keys_inside(b"", b"").len(), 4);
        assert_eq!(split_keys_inside(&b[0], &b[1]), Vec::<Vec<u8>>::new());
        assert_eq!(split_keys_inside(&b[1], b""), b[2..].to_vec());
    }

    #[test]
    fn only_default_is_known() {
        assert_eq!(load("DEFAULT", 1).unwrap().id, 0);
        assert!(load("other", 1).is_none());
    }
}
