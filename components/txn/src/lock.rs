//! Lock records (`lock` CF), in TiKV's byte format: a type byte, the
//! primary, start ts and TTL, then optional tagged fields. A reader stops
//! at a tag it does not know, so newer fields can be added at the end.

use crate::{Error, Key, Result, TimeStamp};

/// The kind of a lock (TiKV `LockType`), its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockType {
    Put,
    Delete,
    /// Locks the key without changing it (`Op::Lock`).
    Lock,
    /// Taken by a pessimistic transaction before its prewrite.
    Pessimistic,
}

impl LockType {
    fn byte(self) -> u8 {
        match self {
            LockType::Put => b'P',
            LockType::Delete => b'D',
            LockType::Lock => b'L',
            LockType::Pessimistic => b'S',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'P' => LockType::Put,
            b'D' => LockType::Delete,
            b'L' => LockType::Lock,
            b'S' => LockType::Pessimistic,
            _ => return None,
        })
    }

    /// The mutation kind a client sees for this lock (`LockInfo.lock_type`).
    pub fn op(self) -> Op {
        match self {
            LockType::Put => Op::Put,
            LockType::Delete => Op::Del,
            LockType::Lock => Op::Lock,
            LockType::Pessimistic => Op::PessimisticLock,
        }
    }
}

/// A mutation kind, numbered as `kvrpcpb.Op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put = 0,
    Del = 1,
    Lock = 2,
    Rollback = 3,
    Insert = 4,
    PessimisticLock = 5,
    CheckNotExists = 6,
}

impl Op {
    pub fn from_i32(v: i32) -> Option<Op> {
        Some(match v {
            0 => Op::Put,
            1 => Op::Del,
            2 => Op::Lock,
            3 => Op::Rollback,
            4 => Op::Insert,
            5 => Op::PessimisticLock,
            6 => Op::CheckNotExists,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub lock_type: LockType,
    /// The transaction's primary key, as the user sent it (not encoded).
    pub primary: Vec<u8>,
    /// The transaction's start ts.
    pub ts: TimeStamp,
    /// Milliseconds after `physical_ms(ts)` until the lock may be resolved.
    pub ttl: u64,
    /// The value, when at most `SHORT_VALUE_MAX_LEN` bytes.
    pub short_value: Option<Vec<u8>>,
    /// Pessimistic transactions: the ts the lock was taken (or prewritten) at.
    pub for_update_ts: TimeStamp,
    pub txn_size: u64,
    /// A commit below it is refused (async commit; pushed by readers).
    pub min_commit_ts: TimeStamp,
    pub use_async_commit: bool,
    /// Async commit: the other keys of the transaction (user keys), on the
    /// primary's lock only.
    pub secondaries: Vec<Vec<u8>>,
    /// Rollbacks of other transactions at these ts, written into this lock
    /// because the rollback record's place was taken (overlapped rollbacks).
    pub rollback_ts: Vec<TimeStamp>,
}

const TAG_SHORT_VALUE: u8 = b'v';
const TAG_FOR_UPDATE_TS: u8 = b'f';
const TAG_TXN_SIZE: u8 = b't';
const TAG_MIN_COMMIT_TS: u8 = b'c';
const TAG_ASYNC_COMMIT: u8 = b'a';
const TAG_ROLLBACK_TS: u8 = b'r';

impl Lock {
    pub fn new(lock_type: LockType, primary: Vec<u8>, ts: TimeStamp, ttl: u64) -> Lock {
        Lock {
            lock_type,
            primary,
            ts,
            ttl,
            short_value: None,
            for_update_ts: 0,
            txn_size: 0,
            min_commit_ts: 0,
            use_async_commit: false,
            secondaries: vec![],
            rollback_ts: vec![],
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + self.primary.len());
        b.push(self.lock_type.byte());
        put_compact_bytes(&mut b, &self.primary);
        put_var_u64(&mut b, self.ts);
        put_var_u64(&mut b, self.ttl);
        if let Some(v) = &self.short_value {
            assert!(v.len() <= crate::SHORT_VALUE_MAX_LEN, "short value of {} bytes", v.len());
            b.push(TAG_SHORT_VALUE);
            b.push(v.len() as u8);
            b.extend_from_slice(v);
        }
        for (tag, v) in [
            (TAG_FOR_UPDATE_TS, self.for_update_ts),
            (TAG_TXN_SIZE, self.txn_size),
            (TAG_MIN_COMMIT_TS, self.min_commit_ts),
        ] {
            if v != 0 {
                b.push(tag);
                b.extend_from_slice(&v.to_be_bytes());
            }
        }
        if self.use_async_commit {
            b.push(TAG_ASYNC_COMMIT);
            put_var_u64(&mut b, self.secondaries.len() as u64);
            for s in &self.secondaries {
                put_compact_bytes(&mut b, s);
            }
        }
        if !self.rollback_ts.is_empty() {
            b.push(TAG_ROLLBACK_TS);
            put_var_u64(&mut b, self.rollback_ts.len() as u64);
            for ts in &self.rollback_ts {
                b.extend_from_slice(&ts.to_be_bytes());
            }
        }
        b
    }

    pub fn parse(b: &[u8]) -> Result<Lock> {
        let bad = |what: &str| Error::Corruption(format!("lock record {b:?}: {what}"));
        let mut r = Reader(b);
        let lock_type = LockType::from_byte(r.u8().ok_or_else(|| bad("empty"))?)
            .ok_or_else(|| bad("unknown lock type"))?;
        let primary = r.compact_bytes().ok_or_else(|| bad("primary"))?;
        let ts = r.var_u64().ok_or_else(|| bad("start ts"))?;
        let ttl = r.var_u64().ok_or_else(|| bad("ttl"))?;
        let mut lock = Lock::new(lock_type, primary, ts, ttl);
        while let Some(tag) = r.u8() {
            match tag {
                TAG_SHORT_VALUE => {
                    let len = r.u8().ok_or_else(|| bad("short value length"))? as usize;
                    lock.short_value =
                        Some(r.take(len).ok_or_else(|| bad("short value"))?.to_vec());
                }
                TAG_FOR_UPDATE_TS => {
                    lock.for_update_ts = r.u64().ok_or_else(|| bad("for_update_ts"))?
                }
                TAG_TXN_SIZE => lock.txn_size = r.u64().ok_or_else(|| bad("txn_size"))?,
                TAG_MIN_COMMIT_TS => {
                    lock.min_commit_ts = r.u64().ok_or_else(|| bad("min_commit_ts"))?
                }
                TAG_ASYNC_COMMIT => {
                    lock.use_async_commit = true;
                    let n = r.var_u64().ok_or_else(|| bad("secondaries count"))?;
                    for _ in 0..n {
                        lock.secondaries.push(r.compact_bytes().ok_or_else(|| bad("secondary"))?);
                    }
                }
                TAG_ROLLBACK_TS => {
                    let n = r.var_u64().ok_or_else(|| bad("rollback count"))?;
                    for _ in 0..n {
                        lock.rollback_ts.push(r.u64().ok_or_else(|| bad("rollback ts"))?);
                    }
                }
                // A field written by a newer version: ignore it and the rest.
                _ => break,
            }
        }
        Ok(lock)
    }

    /// Is the lock past its TTL at `current_ts`?
    pub fn is_expired(&self, current_ts: TimeStamp) -> bool {
        crate::physical_ms(self.ts).saturating_add(self.ttl) < crate::physical_ms(current_ts)
    }

    /// Snapshot isolation: does this lock block a read at `ts`? Locks of
    /// later transactions, `Lock`/pessimistic locks (they change nothing)
    /// and locks whose commit will come after `ts` do not.
    pub fn blocks_read_at(&self, ts: TimeStamp) -> bool {
        self.ts <= ts
            && matches!(self.lock_type, LockType::Put | LockType::Delete)
            && self.min_commit_ts <= ts
    }

    pub fn info(&self, key: &Key) -> LockInfo {
        LockInfo { key: key.clone(), lock: self.clone() }
    }
}

/// A lock with its key, as errors and ScanLock report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub key: Key,
    pub lock: Lock,
}

pub(crate) fn put_var_u64(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

/// TiKV's compact bytes: zigzag varint length, then the bytes.
fn put_compact_bytes(b: &mut Vec<u8>, data: &[u8]) {
    put_var_u64(b, (data.len() as u64) << 1);
    b.extend_from_slice(data);
}

/// A cursor over a record; every read is `None` past the end.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    pub(crate) fn var_u64(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }

    fn compact_bytes(&mut self) -> Option<Vec<u8>> {
        let zigzag = self.var_u64()?;
        if zigzag & 1 != 0 {
            return None; // a negative length
        }
        Some(self.take(usize::try_from(zigzag >> 1).ok()?)?.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let mut l = Lock::new(LockType::Put, b"xpk".to_vec(), 400_000_000_000, 3000);
        assert_eq!(Lock::parse(&l.to_bytes()).unwrap(), l);
        l.short_value = Some(vec![7; 255]);
        l.for_update_ts = 5;
        l.txn_size = 9;
        l.min_commit_ts = 11;
        l.use_async_commit = true;
        l.secondaries = vec![b"a".to_vec(), vec![], vec![1; 300]];
        l.rollback_ts = vec![3, u64::MAX];
        assert_eq!(Lock::parse(&l.to_bytes()).unwrap(), l);
        for t in [LockType::Delete, LockType::Lock, LockType::Pessimistic] {
            l.lock_type = t;
            assert_eq!(Lock::parse(&l.to_bytes()).unwrap().lock_type, t);
        }
    }

    #[test]
    fn tikv_byte_layout() {
        // 'P', compact("pk") = zigzag 4, varint ts 1, varint ttl 300 = 0xac 0x02, 'v' 1 'x'.
        let mut l = Lock::new(LockType::Put, b"pk".to_vec(), 1, 300);
        l.short_value = Some(b"x".to_vec());
        assert_eq!(l.to_bytes(), b"P\x04pk\x01\xac\x02v\x01x");
    }

    #[test]
    fn unknown_tags_end_the_record_and_garbage_is_corruption() {
        let l = Lock::new(LockType::Lock, b"p".to_vec(), 7, 1);
        let mut b = l.to_bytes();
        b.extend_from_slice(b"Zwhatever");
        assert_eq!(Lock::parse(&b).unwrap(), l);
        assert!(Lock::parse(b"").is_err());
        assert!(Lock::parse(b"Q\x02p\x07\x01").is_err(), "unknown type");
        assert!(Lock::parse(b"P\x08p").is_err(), "truncated primary");
        assert!(Lock::parse(b"P\x02p\x07\x01v\x05ab").is_err(), "truncated short value");
    }

    #[test]
    fn expiry_and_read_blocking() {
        let ts = 1000 << 18;
        let mut l = Lock::new(LockType::Put, b"p".to_vec(), ts, 100);
        assert!(!l.is_expired(1100 << 18));
        assert!(l.is_expired(1101 << 18));
        assert!(l.blocks_read_at(ts) && l.blocks_read_at(ts + 1));
        assert!(!l.blocks_read_at(ts - 1), "a later transaction's lock");
        l.min_commit_ts = ts + 10;
        assert!(!l.blocks_read_at(ts + 9) && l.blocks_read_at(ts + 10));
        l.lock_type = LockType::Pessimistic;
        assert!(!l.blocks_read_at(u64::MAX));
    }
}
