//! TiKV's Percolator rules, one function per rule and key: each reads
//! through an [`MvccReader`] and writes through an [`MvccTxn`]; the
//! command around it (the server's) holds the keys' latches, calls the
//! rule for every key, and proposes the txn as one raft command.

mod check_txn_status;
mod cleanup;
mod commit;
mod gc;
mod pessimistic;
mod prewrite;
#[cfg(test)]
mod tests;

pub use check_txn_status::{
    check_secondary_locks, check_txn_status, txn_heart_beat, CheckTxnStatusArgs, SecondaryLocks,
    TxnStatus,
};
pub use cleanup::{rollback, RollbackOutcome};
pub use commit::{commit, commit_one_pc};
pub use gc::gc_key;
pub use pessimistic::{pessimistic_lock, pessimistic_rollback, PessimisticLockProps};
pub use prewrite::{prewrite, Mutation, PessimisticAction, PrewriteProps};

use atoll_engine_traits::{Iterable, Peekable};

use crate::{CommitRecord, Key, MvccReader, MvccTxn, Result, TimeStamp, Write, WriteType};

/// Writes the rollback record of `start_ts` on `key`. Another
/// transaction's commit record may already sit at `start_ts` (its commit
/// ts, computed by async commit or 1PC, can equal our start ts): it is
/// never overwritten; it gets the overlapped-rollback flag instead, which
/// readers of the commit record take as our rollback. Rollbacks are never
/// collapsed, so protected and unprotected ones last alike; the flag is
/// kept for the record format.
pub(crate) fn make_rollback<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &Key,
    start_ts: TimeStamp,
    protected: bool,
) -> Result<()> {
    match reader.write_at(key, start_ts)? {
        Some(w) if w.write_type == WriteType::Rollback => {}
        Some(mut w) => {
            if !w.has_overlapped_rollback {
                w.has_overlapped_rollback = true;
                txn.put_write(key, start_ts, &w);
            }
        }
        None => txn.put_write(key, start_ts, &Write::rollback(start_ts, protected)),
    }
    Ok(())
}

/// Is transaction `start_ts` already rolled back on `key` (a rollback
/// record at `start_ts`, or a commit record flagged as overlapping it)?
pub(crate) fn is_rolled_back<S: Peekable + Iterable>(
    reader: &MvccReader<'_, S>,
    key: &Key,
    start_ts: TimeStamp,
) -> Result<bool> {
    Ok(match reader.write_at(key, start_ts)? {
        Some(w) => w.write_type == WriteType::Rollback || w.has_overlapped_rollback,
        None => false,
    })
}

/// `commit_record` for callers that only tell committed from not.
pub(crate) fn committed_at<S: Peekable + Iterable>(
    reader: &MvccReader<'_, S>,
    key: &Key,
    start_ts: TimeStamp,
) -> Result<Option<TimeStamp>> {
    Ok(match reader.commit_record(key, start_ts)? {
        CommitRecord::Committed(ts, _) => Some(ts),
        _ => None,
    })
}
