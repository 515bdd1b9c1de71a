//! RawChecksum's fingerprint, as TiKV computes it: for every live pair,
//! CRC-64/XZ (the ECMA-182 polynomial, reflected, as the `crc64fast` crate)
//! of `user key ‖ user value`, XORed together; plus the pair count and the
//! key and value bytes.

/// ECMA-182 polynomial, bit-reflected.
const POLY: u64 = 0xC96C_5795_D787_0F42;

const TABLE: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLY } else { crc >> 1 };
            bit += 1;
        }
        t[i] = crc;
        i += 1;
    }
    t
};

/// CRC-64/XZ of the concatenation of `parts`.
pub fn crc64(parts: &[&[u8]]) -> u64 {
    let mut crc = !0u64;
    for part in parts {
        for &b in *part {
            crc = TABLE[((crc ^ u64::from(b)) & 0xff) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

/// The running result of a checksum over pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksum {
    pub crc64_xor: u64,
    pub total_kvs: u64,
    pub total_bytes: u64,
}

impl Checksum {
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        self.crc64_xor ^= crc64(&[key, value]);
        self.total_kvs += 1;
        self.total_bytes += (key.len() + value.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_xz_check_values() {
        // The catalogue's check value for CRC-64/XZ, and the empty input.
        assert_eq!(crc64(&[b"123456789"]), 0x995D_C9BB_DF19_39FA);
        assert_eq!(crc64(&[b"1234", b"56789"]), 0x995D_C9BB_DF19_39FA, "parts are concatenated");
        assert_eq!(crc64(&[]), 0);
    }

    #[test]
    fn xor_is_order_independent() {
        let (mut a, mut b) = (Checksum::default(), Checksum::default());
        a.add(b"k1", b"v1");
        a.add(b"k2", b"value2");
        b.add(b"k2", b"value2");
        b.add(b"k1", b"v1");
        assert_eq!(a, b);
        assert_eq!((a.total_kvs, a.total_bytes), (2, 12));
        a.add(b"k1", b"v1");
        assert_ne!(a.crc64_xor, b.crc64_xor);
    }
}
