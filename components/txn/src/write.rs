//! Commit and rollback records (`write` CF, at key + commit ts), in TiKV's
//! byte format: type byte, varint start ts, then optional tagged fields.

use crate::lock::{put_var_u64, Reader};
use crate::{Error, LockType, Result, TimeStamp};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteType {
    Put,
    Delete,
    /// A committed `Lock` (or pessimistic) lock: no new value.
    Lock,
    /// The transaction starting at this record's commit ts was rolled back.
    Rollback,
}

impl WriteType {
    fn byte(self) -> u8 {
        match self {
            WriteType::Put => b'P',
            WriteType::Delete => b'D',
            WriteType::Lock => b'L',
            WriteType::Rollback => b'R',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'P' => WriteType::Put,
            b'D' => WriteType::Delete,
            b'L' => WriteType::Lock,
            b'R' => WriteType::Rollback,
            _ => return None,
        })
    }

    /// The record a committed lock of this type leaves.
    pub fn of_lock(t: LockType) -> WriteType {
        match t {
            LockType::Put => WriteType::Put,
            LockType::Delete => WriteType::Delete,
            LockType::Lock | LockType::Pessimistic => WriteType::Lock,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub write_type: WriteType,
    pub start_ts: TimeStamp,
    pub short_value: Option<Vec<u8>>,
    /// A commit record that also stands for the rollback of the
    /// transaction that started at its commit ts.
    pub has_overlapped_rollback: bool,
}

const TAG_SHORT_VALUE: u8 = b'v';
const TAG_OVERLAPPED_ROLLBACK: u8 = b'R';
/// The short value of a protected rollback (kept by garbage collection).
const PROTECTED_ROLLBACK: &[u8] = b"p";

impl Write {
    pub fn new(write_type: WriteType, start_ts: TimeStamp, short_value: Option<Vec<u8>>) -> Write {
        Write { write_type, start_ts, short_value, has_overlapped_rollback: false }
    }

    /// The rollback record of `start_ts` (written at commit ts = start ts).
    pub fn rollback(start_ts: TimeStamp, protected: bool) -> Write {
        Write::new(WriteType::Rollback, start_ts, protected.then(|| PROTECTED_ROLLBACK.to_vec()))
    }

    pub fn is_protected_rollback(&self) -> bool {
        self.write_type == WriteType::Rollback
            && self.short_value.as_deref() == Some(PROTECTED_ROLLBACK)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16);
        b.push(self.write_type.byte());
        put_var_u64(&mut b, self.start_ts);
        if let Some(v) = &self.short_value {
            assert!(v.len() <= crate::SHORT_VALUE_MAX_LEN, "short value of {} bytes", v.len());
            b.push(TAG_SHORT_VALUE);
            b.push(v.len() as u8);
            b.extend_from_slice(v);
        }
        if self.has_overlapped_rollback {
            b.push(TAG_OVERLAPPED_ROLLBACK);
        }
        b
    }

    pub fn parse(b: &[u8]) -> Result<Write> {
        let bad = |what: &str| Error::Corruption(format!("write record {b:?}: {what}"));
        let mut r = Reader(b);
        let write_type = WriteType::from_byte(r.u8().ok_or_else(|| bad("empty"))?)
            .ok_or_else(|| bad("unknown write type"))?;
        let start_ts = r.var_u64().ok_or_else(|| bad("start ts"))?;
        let mut w = Write::new(write_type, start_ts, None);
        while let Some(tag) = r.u8() {
            match tag {
                TAG_SHORT_VALUE => {
                    let len = r.u8().ok_or_else(|| bad("short value length"))? as usize;
                    w.short_value = Some(r.take(len).ok_or_else(|| bad("short value"))?.to_vec());
                }
                TAG_OVERLAPPED_ROLLBACK => w.has_overlapped_rollback = true,
                // A field written by a newer version (e.g. a GC fence).
                _ => break,
            }
        }
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tikv_layout() {
        let w = Write::new(WriteType::Put, 300, Some(b"v".to_vec()));
        assert_eq!(w.to_bytes(), b"P\xac\x02v\x01v");
        assert_eq!(Write::parse(&w.to_bytes()).unwrap(), w);
        let mut r = Write::rollback(9, true);
        assert!(r.is_protected_rollback());
        assert!(!Write::rollback(9, false).is_protected_rollback());
        r.has_overlapped_rollback = true;
        assert_eq!(Write::parse(&r.to_bytes()).unwrap(), r);
        for t in [WriteType::Delete, WriteType::Lock, WriteType::Rollback] {
            assert_eq!(Write::parse(&Write::new(t, 1, None).to_bytes()).unwrap().write_type, t);
        }
        assert!(Write::parse(b"").is_err());
        assert!(Write::parse(b"X\x01").is_err());
        assert!(Write::parse(b"P").is_err());
        assert!(Write::parse(b"P\x01v\x09a").is_err());
    }
}
