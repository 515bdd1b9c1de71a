//! Reads of MVCC records from one snapshot.

use atoll_codec::data::{data_key, origin_key};
use atoll_engine_traits::{EngineIterator, Iterable, Peekable, CF_DEFAULT, CF_LOCK, CF_WRITE};

use crate::read_locks::lock_value;
use crate::{Error, Key, Lock, LockInfo, LockRead, ReadLocks, Result, TimeStamp, Write, WriteType};

/// What the write CF says about transaction `start_ts` on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitRecord {
    /// Committed at this ts with this record (never a rollback).
    Committed(TimeStamp, Write),
    /// A rollback record of the transaction, or another transaction's
    /// commit record at `start_ts` that stands for that rollback.
    RolledBack,
    None,
}

/// Reads locks, commit records and values of a snapshot.
pub struct MvccReader<'a, S> {
    snap: &'a S,
}

impl<'a, S: Peekable + Iterable> MvccReader<'a, S> {
    pub fn new(snap: &'a S) -> Self {
        MvccReader { snap }
    }

    pub fn load_lock(&self, key: &Key) -> Result<Option<Lock>> {
        match self.snap.get_value_cf(CF_LOCK, &key.lock_key())? {
            Some(v) => Ok(Some(Lock::parse(&v)?)),
            None => Ok(None),
        }
    }

    /// The record of `key` at exactly commit ts `ts`.
    pub fn write_at(&self, key: &Key, ts: TimeStamp) -> Result<Option<Write>> {
        match self.snap.get_value_cf(CF_WRITE, &key.data_key_at(ts))? {
            Some(v) => Ok(Some(Write::parse(&v)?)),
            None => Ok(None),
        }
    }

    /// The newest record of `key` committed at or before `ts`, with its
    /// commit ts.
    pub fn seek_write(&self, key: &Key, ts: TimeStamp) -> Result<Option<(TimeStamp, Write)>> {
        let (lower, upper) = key.versions_upto(ts);
        let mut it = self.snap.iterator_cf(CF_WRITE, &lower, &upper)?;
        if !it.seek_to_first()? {
            return Ok(None);
        }
        let (_, commit_ts) = Key::split_ts(origin_key(it.key()))?;
        Ok(Some((commit_ts, Write::parse(it.value())?)))
    }

    /// Walks `key`'s records from the newest committed at or before `ts`
    /// to the oldest, until `f` returns false.
    pub(crate) fn walk_writes(
        &self,
        key: &Key,
        ts: TimeStamp,
        f: &mut dyn FnMut(TimeStamp, Write) -> Result<bool>,
    ) -> Result<()> {
        let (lower, upper) = key.versions_upto(ts);
        let mut it = self.snap.iterator_cf(CF_WRITE, &lower, &upper)?;
        let mut valid = it.seek_to_first()?;
        while valid {
            let (_, commit_ts) = Key::split_ts(origin_key(it.key()))?;
            if !f(commit_ts, Write::parse(it.value())?)? {
                break;
            }
            valid = it.next()?;
        }
        Ok(())
    }

    /// The newest record at or before `ts` that is a value change (Put or
    /// Delete), skipping Lock and Rollback records.
    pub fn seek_data_write(&self, key: &Key, ts: TimeStamp) -> Result<Option<(TimeStamp, Write)>> {
        let mut found = None;
        self.walk_writes(key, ts, &mut |commit_ts, w| match w.write_type {
            WriteType::Put | WriteType::Delete => {
                found = Some((commit_ts, w));
                Ok(false)
            }
            WriteType::Lock | WriteType::Rollback => Ok(true),
        })?;
        Ok(found)
    }

    /// What became of transaction `start_ts` on `key`. Records of a
    /// transaction are committed at or after its start, so the walk stops
    /// below `start_ts`.
    pub fn commit_record(&self, key: &Key, start_ts: TimeStamp) -> Result<CommitRecord> {
        let mut found = CommitRecord::None;
        self.walk_writes(key, u64::MAX, &mut |commit_ts, w| {
            if commit_ts < start_ts {
                return Ok(false);
            }
            if w.start_ts == start_ts {
                found = match w.write_type {
                    WriteType::Rollback => CommitRecord::RolledBack,
                    _ => CommitRecord::Committed(commit_ts, w),
                };
                return Ok(false);
            }
            if commit_ts == start_ts && w.has_overlapped_rollback {
                found = CommitRecord::RolledBack;
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    }

    /// The value a Put record stands for: inline, or in the default CF at
    /// the writing transaction's start ts.
    pub fn load_value(&self, key: &Key, write: &Write) -> Result<Vec<u8>> {
        if let Some(v) = &write.short_value {
            return Ok(v.clone());
        }
        self.snap.get_value_cf(CF_DEFAULT, &key.data_key_at(write.start_ts))?.ok_or_else(|| {
            Error::Corruption(format!(
                "{key:?}: commit record of transaction {} has no value",
                write.start_ts
            ))
        })
    }

    /// The newest value committed at or before `ts`.
    pub fn get_committed(&self, key: &Key, ts: TimeStamp) -> Result<Option<Vec<u8>>> {
        match self.seek_data_write(key, ts)? {
            Some((_, w)) if w.write_type == WriteType::Put => Ok(Some(self.load_value(key, &w)?)),
            _ => Ok(None),
        }
    }

    /// A snapshot-isolation read at `ts`: the key's lock, if it blocks the
    /// read, is an error; else the newest value committed at or before `ts`.
    pub fn get(&self, key: &Key, ts: TimeStamp) -> Result<Option<Vec<u8>>> {
        self.get_passing(key, ts, &ReadLocks::default())
    }

    /// `get`, passing the locks the request named (see [`ReadLocks`]).
    pub fn get_passing(
        &self,
        key: &Key,
        ts: TimeStamp,
        locks: &ReadLocks,
    ) -> Result<Option<Vec<u8>>> {
        if let Some(lock) = self.load_lock(key)? {
            match locks.check(key, &lock, ts) {
                LockRead::Pass => {}
                LockRead::Blocked => return Err(Error::KeyIsLocked(Box::new(lock.info(key)))),
                LockRead::UseLockValue => {
                    return lock_value(&lock, || {
                        let v = self.snap.get_value_cf(CF_DEFAULT, &key.data_key_at(lock.ts))?;
                        v.map(Some).ok_or_else(|| {
                            Error::Corruption(format!("{key:?}: lock at {} has no value", lock.ts))
                        })
                    })
                }
            }
        }
        self.get_committed(key, ts)
    }

    /// The keys with a lock or a record in the encoded range `[start,
    /// end)` (empty `end`: unbounded), in order (descending if `reverse`),
    /// each once, until `f` returns false.
    pub fn scan_keys(
        &self,
        start: &Key,
        end: &Key,
        reverse: bool,
        f: &mut dyn FnMut(Key) -> Result<bool>,
    ) -> Result<()> {
        let lower = data_key(start.as_encoded());
        let upper = atoll_codec::data::data_end_key(end.as_encoded());
        let mut locks =
            KeyCursor::new(self.snap.iterator_cf(CF_LOCK, &lower, &upper)?, reverse, false)?;
        let mut writes =
            KeyCursor::new(self.snap.iterator_cf(CF_WRITE, &lower, &upper)?, reverse, true)?;
        loop {
            let next = match (&locks.current, &writes.current) {
                (None, None) => return Ok(()),
                (Some(l), None) => l.clone(),
                (None, Some(w)) => w.clone(),
                (Some(l), Some(w)) if (l < w) != reverse => l.clone(),
                (Some(_), Some(w)) => w.clone(),
            };
            if locks.current.as_ref() == Some(&next) {
                locks.advance()?;
            }
            if writes.current.as_ref() == Some(&next) {
                writes.advance()?;
            }
            if !f(next)? {
                return Ok(());
            }
        }
    }

    /// Visits the locks of the encoded range `[start, end)` (empty `end`:
    /// unbounded) in key order until `f` returns false.
    pub fn scan_locks_with(
        &self,
        start: &Key,
        end: &Key,
        f: &mut dyn FnMut(Key, Lock) -> Result<bool>,
    ) -> Result<()> {
        let lower = data_key(start.as_encoded());
        let upper = atoll_codec::data::data_end_key(end.as_encoded());
        let mut failed = None;
        self.snap.scan_cf(CF_LOCK, &lower, &upper, false, &mut |k, v| {
            let visit =
                Lock::parse(v).and_then(|lock| f(Key::from_encoded(origin_key(k).to_vec()), lock));
            visit.or_else(|e| {
                failed = Some(e);
                Ok(false)
            })
        })?;
        failed.map_or(Ok(()), Err)
    }

    /// Locks of the encoded range `[start, end)` with ts at most
    /// `max_ts`, in key order, at most `limit` (0: no limit).
    pub fn scan_locks(
        &self,
        start: &Key,
        end: &Key,
        max_ts: TimeStamp,
        limit: usize,
    ) -> Result<Vec<LockInfo>> {
        let mut out = vec![];
        self.scan_locks_with(start, end, &mut |key, lock| {
            if lock.ts <= max_ts {
                out.push(LockInfo { key, lock });
            }
            Ok(limit == 0 || out.len() < limit)
        })?;
        Ok(out)
    }
}

/// Walks the distinct keys of one CF's range (versions stripped).
struct KeyCursor<I> {
    it: I,
    reverse: bool,
    versioned: bool,
    current: Option<Key>,
}

impl<I: EngineIterator> KeyCursor<I> {
    fn new(mut it: I, reverse: bool, versioned: bool) -> Result<Self> {
        let valid = if reverse { it.seek_to_last()? } else { it.seek_to_first()? };
        let mut c = KeyCursor { it, reverse, versioned, current: None };
        c.current = if valid { Some(c.key()?) } else { None };
        Ok(c)
    }

    fn key(&self) -> Result<Key> {
        let k = origin_key(self.it.key());
        if self.versioned {
            Ok(Key::split_ts(k)?.0)
        } else {
            Ok(Key::from_encoded(k.to_vec()))
        }
    }

    /// Moves to the next distinct key, past every version of this one.
    fn advance(&mut self) -> Result<()> {
        let Some(cur) = self.current.take() else { return Ok(()) };
        let valid = if !self.versioned {
            if self.reverse {
                self.it.prev()?
            } else {
                self.it.next()?
            }
        } else if self.reverse {
            // Every version of `cur` sorts after its bare encoded key.
            self.it.seek_for_prev(&data_key(cur.as_encoded()))?
        } else {
            self.it.seek(&cur.versions_upto(0).1)?
        };
        self.current = if valid { Some(self.key()?) } else { None };
        Ok(())
    }
}
