//! Key encodings shared by stores, PD and clients. Depends on nothing.
//!
//! - Memcomparable byte encoding (MyRocks format): order-preserving,
//!   `a < b <=> encode_bytes(a) < encode_bytes(b)`; encodings are
//!   prefix-free, so a versioned key (encoding + timestamp) sorts inside
//!   any range of encoded bounds that holds its key.
//! - [`api`]: the cluster's API version and the key space it implies (which
//!   bytes region bounds, PD routing and data keys use for a client's key).
//! - [`data`]: data keys, `z` + region key, as stores keep them.
pub mod api;
pub mod data;

/// Uppercase hex, as PD's HTTP API shows and takes keys.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

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
    let len = decode_prefix(data, &mut out)?;
    if len != data.len() {
        return Err("trailing bytes after memcomparable key".into());
    }
    Ok(out)
}

/// The length of the memcomparable encoding `data` starts with, if it
/// starts with a valid one (what follows it is not looked at).
pub fn encoded_len(data: &[u8]) -> Option<usize> {
    decode_prefix(data, &mut Vec::new()).ok()
}

/// Decodes the encoding at the start of `data` into `out`; its length.
fn decode_prefix(data: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
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
            return Ok(off);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_len_finds_the_encoding_a_key_starts_with() {
        let enc = encode_bytes(b"abcdefghij");
        assert_eq!(encoded_len(&enc), Some(18));
        let versioned = [&enc[..], &[1u8; 8][..]].concat();
        assert_eq!(encoded_len(&versioned), Some(18));
        assert_eq!(encoded_len(b"a\x01"), None, "a short raw key");
        assert_eq!(encoded_len(b"user-0000000001"), None, "no marker after 8 bytes");
        assert_eq!(encoded_len(&enc[..17]), None, "truncated");
    }

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
    }
}
