//! Raw values as stored: the user's bytes with an optional TTL,
//! `value | [expire_secs BE] | flag`.

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
