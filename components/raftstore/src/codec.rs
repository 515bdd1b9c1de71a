//! Byte encodings shared by the store and its clients.
//!
//! - Memcomparable bytes (MyRocks format): region boundaries are kept in
//!   this form (API V2), so PD and TiKV clients in keyspace mode see the
//!   bounds they expect. Order-preserving: `a < b <=> enc(a) < enc(b)`.
//! - Raw values with an optional TTL: `value | [expire_secs BE] | flag`.

const GROUP: usize = 8;
const MARKER: u8 = 0xff;

/// Encodes `key` in memcomparable format.
pub fn encode_bytes(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((key.len() / GROUP + 1) * (GROUP + 1));
    let mut chunks = key.chunks_exact(GROUP);
    for c in &mut chunks {
        out.extend_from_slice(c);
        out.push(MARKER);
    }
    let rem = chunks.remainder();
    out.extend_from_slice(rem);
    let pad = GROUP - rem.len();
    out.extend(std::iter::repeat_n(0u8, pad));
    out.push(MARKER - pad as u8);
    out
}

/// Decodes a memcomparable-encoded key; errors on malformed input.
pub fn decode_bytes(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len());
    let mut off = 0;
    loop {
        let group = data.get(off..off + GROUP + 1).ok_or("truncated memcomparable key")?;
        let marker = group[GROUP];
        let pad = (MARKER - marker) as usize;
        if pad > GROUP {
            return Err(format!("invalid memcomparable marker {marker:#x}"));
        }
        let real = GROUP - pad;
        if group[real..GROUP].iter().any(|b| *b != 0) {
            return Err("invalid memcomparable padding".into());
        }
        out.extend_from_slice(&group[..real]);
        off += GROUP + 1;
        if pad > 0 {
            if off != data.len() {
                return Err("trailing bytes after memcomparable key".into());
            }
            return Ok(out);
        }
    }
}

/// Encodes a region boundary: empty stays empty (unbounded).
pub fn encode_bound(key: &[u8]) -> Vec<u8> {
    if key.is_empty() {
        vec![]
    } else {
        encode_bytes(key)
    }
}

/// Decodes a region boundary: empty stays empty (unbounded).
pub fn decode_bound(key: &[u8]) -> Result<Vec<u8>, String> {
    if key.is_empty() {
        Ok(vec![])
    } else {
        decode_bytes(key)
    }
}

const FLAG_NONE: u8 = 0;
const FLAG_TTL: u8 = 1;

/// A stored raw value: the user's bytes plus an optional expiry (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawValue {
    pub value: Vec<u8>,
    pub expire_at: Option<u64>,
}

impl RawValue {
    /// `ttl == 0` means "never expires".
    pub fn new(value: Vec<u8>, ttl_secs: u64, now_secs: u64) -> Self {
        let expire_at = (ttl_secs > 0).then(|| now_secs.saturating_add(ttl_secs));
        RawValue { value, expire_at }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.value.len() + 9);
        out.extend_from_slice(&self.value);
        match self.expire_at {
            Some(t) => {
                out.extend_from_slice(&t.to_be_bytes());
                out.push(FLAG_TTL);
            }
            None => out.push(FLAG_NONE),
        }
        out
    }

    pub fn decode(mut data: &[u8]) -> Result<Self, String> {
        let (&flag, rest) = data.split_last().ok_or("empty stored value")?;
        data = rest;
        match flag {
            FLAG_NONE => Ok(RawValue { value: data.to_vec(), expire_at: None }),
            FLAG_TTL => {
                if data.len() < 8 {
                    return Err("stored value too short for its ttl".into());
                }
                let (v, t) = data.split_at(data.len() - 8);
                let t = u64::from_be_bytes(t.try_into().expect("8 bytes"));
                Ok(RawValue { value: v.to_vec(), expire_at: Some(t) })
            }
            f => Err(format!("unknown value flag {f:#x}")),
        }
    }

    pub fn is_expired(&self, now_secs: u64) -> bool {
        matches!(self.expire_at, Some(t) if t <= now_secs)
    }

    /// Seconds left to live; `None` without a TTL.
    pub fn ttl_left(&self, now_secs: u64) -> Option<u64> {
        self.expire_at.map(|t| t.saturating_sub(now_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcomparable_round_trip_and_order() {
        let keys: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            b"a".to_vec(),
            b"abcdefg".to_vec(),
            b"abcdefgh".to_vec(),
            b"abcdefgh\0".to_vec(),
            b"abcdefghi".to_vec(),
            vec![0xff; 17],
        ];
        for k in &keys {
            assert_eq!(&decode_bytes(&encode_bytes(k)).unwrap(), k);
            assert_eq!(encode_bytes(k).len() % 9, 0);
        }
        for a in &keys {
            for b in &keys {
                assert_eq!(a.cmp(b), encode_bytes(a).cmp(&encode_bytes(b)), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn memcomparable_known_vector() {
        // Same bytes the TiKV client expects for keyspace 0's raw prefix.
        assert_eq!(encode_bytes(b"r\0\0\0"), vec![b'r', 0, 0, 0, 0, 0, 0, 0, 0xfb]);
    }

    #[test]
    fn memcomparable_rejects_garbage() {
        assert!(decode_bytes(b"abc").is_err());
        assert!(decode_bytes(&[0, 0, 0, 0, 0, 0, 0, 0, 0x00]).is_err());
        assert!(decode_bytes(&[1, 0, 0, 0, 0, 0, 0, 1, 0xf8]).is_err(), "non-zero padding");
        let mut ok = encode_bytes(b"x");
        ok.push(1);
        assert!(decode_bytes(&ok).is_err(), "trailing bytes");
        assert_eq!(decode_bound(b"").unwrap(), b"");
        assert_eq!(encode_bound(b""), b"");
    }

    #[test]
    fn raw_values_with_and_without_ttl() {
        let v = RawValue::new(b"hello".to_vec(), 0, 100);
        assert_eq!(RawValue::decode(&v.encode()).unwrap(), v);
        assert!(!v.is_expired(u64::MAX));
        assert_eq!(v.ttl_left(100), None);

        let t = RawValue::new(b"bye".to_vec(), 10, 100);
        assert_eq!(RawValue::decode(&t.encode()).unwrap(), t);
        assert_eq!(t.ttl_left(104), Some(6));
        assert!(!t.is_expired(109));
        assert!(t.is_expired(110));

        let empty = RawValue::new(vec![], 0, 0);
        assert_eq!(RawValue::decode(&empty.encode()).unwrap().value, b"");
        assert!(RawValue::decode(&[]).is_err());
        assert!(RawValue::decode(&[1, 2, 3, FLAG_TTL]).is_err());
        assert!(RawValue::decode(&[7]).is_err());
    }
}
