//! Memcomparable encoding: PD and stores keep region bounds in this form.

pub fn encode_bytes(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity((key.len() / 8 + 1) * 9);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        out.extend_from_slice(c);
        out.push(0xff);
    }
    let rem = chunks.remainder();
    out.extend_from_slice(rem);
    out.extend(std::iter::repeat_n(0u8, 8 - rem.len()));
    out.push(0xff - (8 - rem.len()) as u8);
    out
}

pub fn decode_bytes(data: &[u8]) -> Option<Vec<u8>> {
    if data.is_empty() {
        return Some(vec![]);
    }
    let mut out = vec![];
    let mut off = 0;
    loop {
        let g = data.get(off..off + 9)?;
        let pad = (0xff - g[8]) as usize;
        if pad > 8 {
            return None;
        }
        out.extend_from_slice(&g[..8 - pad]);
        off += 9;
        if pad > 0 {
            return (off == data.len()).then_some(out);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        for k in [&b""[..], b"a", b"12345678", b"123456789"] {
            assert_eq!(super::decode_bytes(&super::encode_bytes(k)).unwrap(), k);
        }
    }
}
