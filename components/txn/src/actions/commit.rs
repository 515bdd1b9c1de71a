//! Commit: the second phase, per key; and the 1PC commit of a prewrite.

use atoll_engine_traits::{Iterable, Peekable};

use super::committed_at;
use crate::{Error, Key, Lock, LockType, MvccReader, MvccTxn, Result, TimeStamp, Write, WriteType};

/// Commits transaction `start_ts` on `key` at `commit_ts`: the lock
/// becomes a commit record. Committing again is fine; committing a key
/// whose lock is gone without a commit record (rolled back, or never
/// prewritten) is `TxnLockNotFound`.
pub fn commit<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &Key,
    start_ts: TimeStamp,
    commit_ts: TimeStamp,
) -> Result<()> {
    if commit_ts <= start_ts {
        return Err(Error::InvalidTxnTso(format!(
            "commit_ts {commit_ts} is not after start_ts {start_ts}"
        )));
    }
    match reader.load_lock(key)? {
        Some(lock) if lock.ts == start_ts && lock.lock_type != LockType::Pessimistic => {
            if commit_ts < lock.min_commit_ts {
                return Err(Error::CommitTsExpired {
                    key: key.clone(),
                    start_ts,
                    attempted: commit_ts,
                    min_commit_ts: lock.min_commit_ts,
                });
            }
            write_commit_record(txn, reader, key, lock, commit_ts)?;
            txn.unlock_key(key);
            Ok(())
        }
        _ => match committed_at(reader, key, start_ts)? {
            Some(_) => Ok(()),
            None => Err(Error::TxnLockNotFound { key: key.clone(), start_ts, commit_ts }),
        },
    }
}

/// The commit record of `lock` at `commit_ts`. A rollback of the
/// transaction that started at `commit_ts` (in the lock, or as a record
/// already in that place) lives on as the record's overlapped-rollback
/// flag.
fn write_commit_record<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &Key,
    lock: Lock,
    commit_ts: TimeStamp,
) -> Result<()> {
    let mut write = Write::new(WriteType::of_lock(lock.lock_type), lock.ts, lock.short_value);
    write.has_overlapped_rollback = lock.rollback_ts.contains(&commit_ts)
        || matches!(reader.write_at(key, commit_ts)?, Some(w) if w.write_type == WriteType::Rollback);
    txn.put_write(key, commit_ts, &write);
    Ok(())
}

/// Turns the locks a 1PC prewrite kept (`MvccTxn::one_pc`) into commit
/// records at `commit_ts`, removing the pessimistic locks they replace.
pub fn commit_one_pc<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    commit_ts: TimeStamp,
) -> Result<()> {
    for (key, lock, had_pessimistic_lock) in txn.take_one_pc_locks() {
        if commit_ts <= lock.ts {
            return Err(Error::InvalidTxnTso(format!(
                "1PC commit_ts {commit_ts} is not after start_ts {}",
                lock.ts
            )));
        }
        write_commit_record(txn, reader, &key, lock, commit_ts)?;
        if had_pessimistic_lock {
            txn.unlock_key(&key);
        }
    }
    Ok(())
}
