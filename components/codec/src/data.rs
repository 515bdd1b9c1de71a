//! Where user data sits in a store's engine: every data key is `z` +
//! a region key (see [`crate::api`]), in the `default`, `lock` and `write`
//! column families; local (per-store) keys sort before, under `0x01`.

pub const DATA_PREFIX: u8 = b'z';
pub const DATA_MIN_KEY: &[u8] = b"z";
pub const DATA_MAX_KEY: &[u8] = b"{";

pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA_PREFIX);
    k.extend_from_slice(key);
    k
}

/// The data key for a range end; an empty end means "to the end of the keyspace".
pub fn data_end_key(key: &[u8]) -> Vec<u8> {
    if key.is_empty() {
        DATA_MAX_KEY.to_vec()
    } else {
        data_key(key)
    }
}

/// Bytes of the version suffix of a transactional key (`!ts`, big-endian)
/// in the `write` and `default` column families.
pub const TS_LEN: usize = 8;

/// The key of a versioned transactional key (its suffix cut off): where
/// regions may split, so that no key's versions are ever split apart.
pub fn strip_ts(versioned: &[u8]) -> &[u8] {
    &versioned[..versioned.len().saturating_sub(TS_LEN)]
}

pub fn origin_key(data_key: &[u8]) -> &[u8] {
    assert!(data_key.first() == Some(&DATA_PREFIX), "not a data key: {data_key:?}");
    &data_key[1..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_keys() {
        assert_eq!(data_key(b"k"), b"zk");
        assert_eq!(origin_key(b"zk"), b"k");
        assert_eq!(data_end_key(b""), DATA_MAX_KEY);
        assert!(data_key(&[0xff; 8]) < DATA_MAX_KEY.to_vec());
        assert_eq!(strip_ts(b"key12345678"), b"key");
        assert_eq!(strip_ts(b"short"), b"");
    }
}
