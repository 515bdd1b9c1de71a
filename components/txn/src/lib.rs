//! Percolator transactions over the data column families, as TiKV keeps
//! them: pure MVCC logic, no raft, no gRPC.
//!
//! - [`Key`]: a transactional key is the memcomparable encoding of the
//!   user's key (with its `x` + keyspace prefix in API V2), the cluster's
//!   region key; versions append the inverted timestamp, so the versions of
//!   a key sort newest first and a range of encoded keys covers every
//!   version of the keys in it.
//! - `lock` CF: [`Lock`] at the key; `write` CF: [`Write`] (commit and
//!   rollback records) at key + commit ts; `default` CF: values longer than
//!   [`SHORT_VALUE_MAX_LEN`] at key + start ts (shorter ones ride inline).
//! - [`MvccReader`] reads a snapshot; [`MvccTxn`] collects the writes of
//!   one command; [`actions`] are TiKV's per-key rules (prewrite, commit,
//!   rollback, check_txn_status, ...). A command reads through the reader,
//!   writes through the txn, and its caller proposes the txn's modifies
//!   as ONE raft command, holding the keys' latches from snapshot to apply.
//!
//! Depends on `engine_traits` (read-only snapshots) and `codec`, never on
//! raftstore, the server or an engine.

pub mod actions;
mod error;
mod key;
mod lock;
mod read_locks;
mod reader;
mod txn;
mod write;

pub use error::{ConflictReason, Error, Result, WaitFor};
pub use key::{physical_ms, Key, TimeStamp};
pub use lock::{Lock, LockInfo, LockType, Op};
pub use read_locks::{LockRead, ReadLocks};
pub use reader::{CommitRecord, MvccReader};
pub use txn::{Modify, MvccTxn};
pub use write::{Write, WriteType};

/// Values up to this length are kept inline in the lock and the write
/// record; longer ones go to the `default` CF.
pub const SHORT_VALUE_MAX_LEN: usize = 255;
