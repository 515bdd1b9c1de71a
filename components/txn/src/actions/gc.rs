//! Garbage collection of old versions below a safe point.

use atoll_engine_traits::{Iterable, Peekable};

use crate::{Key, MvccReader, MvccTxn, Result, TimeStamp, WriteType};

/// Removes `key`'s versions that no read at or after `safe_point` can
/// see: every record committed at or before it except the newest Put
/// (a newest Delete goes too), with the long values they point to.
/// Returns how many records it removes.
pub fn gc_key<S: Peekable + Iterable>(
    txn: &mut MvccTxn,
    reader: &MvccReader<'_, S>,
    key: &Key,
    safe_point: TimeStamp,
) -> Result<usize> {
    let mut removed = 0;
    let mut kept_latest = false;
    reader.walk_writes(key, safe_point, &mut |commit_ts, w| {
        if !kept_latest && w.write_type == WriteType::Put {
            kept_latest = true; // the value reads at the safe point see
            return Ok(true);
        }
        if w.write_type == WriteType::Delete {
            kept_latest = true; // nothing older is visible either
        }
        if w.write_type == WriteType::Put && w.short_value.is_none() {
            txn.delete_value(key, w.start_ts);
        }
        txn.delete_write(key, commit_ts);
        removed += 1;
        Ok(true)
    })?;
    Ok(removed)
}
