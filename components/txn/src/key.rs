//! Transactional keys and their versions.

use std::fmt;

use atoll_codec::data::{data_key, TS_LEN};

use crate::{Error, Result};

/// A PD timestamp: physical milliseconds `<< 18 |` a logical counter.
pub type TimeStamp = u64;

const LOGICAL_BITS: u32 = 18;

/// The physical part of `ts`, in milliseconds since the Unix epoch.
pub fn physical_ms(ts: TimeStamp) -> u64 {
    ts >> LOGICAL_BITS
}

/// A transactional key in its encoded form: `encode_bytes(user key)`, the
/// key as regions, PD and the engine (after `z`) order it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<u8>);

impl Key {
    /// The key of a user's key (as the client sends it, keyspace prefix
    /// included).
    pub fn from_raw(user_key: &[u8]) -> Key {
        Key(atoll_codec::encode_bytes(user_key))
    }

    /// A key already encoded (e.g. a region bound or a stored key).
    pub fn from_encoded(encoded: Vec<u8>) -> Key {
        Key(encoded)
    }

    pub fn as_encoded(&self) -> &[u8] {
        &self.0
    }

    pub fn into_encoded(self) -> Vec<u8> {
        self.0
    }

    /// The user's key back, for answers (lock infos, scans).
    pub fn to_raw(&self) -> Result<Vec<u8>> {
        atoll_codec::decode_bytes(&self.0)
            .map_err(|e| Error::Corruption(format!("transactional key {:?}: {e}", self.0)))
    }

    /// The encoded key of version `ts` (commit ts in `write`, start ts in
    /// `default`): newer versions sort first.
    pub fn append_ts(&self, ts: TimeStamp) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.0.len() + TS_LEN);
        k.extend_from_slice(&self.0);
        k.extend_from_slice(&(!ts).to_be_bytes());
        k
    }

    /// Splits an encoded versioned key into its key and timestamp.
    pub fn split_ts(versioned: &[u8]) -> Result<(Key, TimeStamp)> {
        if versioned.len() < TS_LEN {
            return Err(Error::Corruption(format!("versioned key too short: {versioned:?}")));
        }
        let (k, ts) = versioned.split_at(versioned.len() - TS_LEN);
        let ts = !u64::from_be_bytes(ts.try_into().expect("8 bytes"));
        Ok((Key(k.to_vec()), ts))
    }

    /// The engine key of this key's lock.
    pub(crate) fn lock_key(&self) -> Vec<u8> {
        data_key(&self.0)
    }

    /// The engine key of version `ts`.
    pub(crate) fn data_key_at(&self, ts: TimeStamp) -> Vec<u8> {
        data_key(&self.append_ts(ts))
    }

    /// The engine range `[lower, upper)` holding exactly this key's
    /// versions with a timestamp at most `ts`. The upper bound is past the
    /// version of ts 0 (eight 0xff) and before any other key: encoded keys
    /// are prefix-free, so no other key starts with this one.
    pub(crate) fn versions_upto(&self, ts: TimeStamp) -> (Vec<u8>, Vec<u8>) {
        let mut upper = data_key(&self.0);
        upper.extend_from_slice(&[0xff; TS_LEN + 1]);
        (self.data_key_at(ts), upper)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match atoll_codec::decode_bytes(&self.0) {
            Ok(raw) => write!(f, "Key({})", String::from_utf8_lossy(&raw).escape_debug()),
            Err(_) => write!(f, "Key(encoded {:?})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_newest_first_and_stay_inside_their_key() {
        let a = Key::from_raw(b"a");
        let b = Key::from_raw(b"a\0");
        assert!(a.append_ts(10) < a.append_ts(9));
        assert!(a.append_ts(0) < b.append_ts(u64::MAX), "every version of a before b");
        let (lo, hi) = a.versions_upto(10);
        assert!(lo <= data_key(&a.append_ts(10)) && data_key(&a.append_ts(0)) < hi);
        assert!(data_key(&a.append_ts(11)) < lo);
        assert!(hi < data_key(&b.append_ts(u64::MAX)));
        let (k, ts) = Key::split_ts(&a.append_ts(42)).unwrap();
        assert_eq!((k, ts), (a.clone(), 42));
        assert_eq!(a.to_raw().unwrap(), b"a");
        assert!(Key::split_ts(b"short").is_err());
    }

    #[test]
    fn physical_part() {
        assert_eq!(physical_ms((1234 << 18) | 7), 1234);
    }
}
