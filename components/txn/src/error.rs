//! What a transactional command can meet, one variant per outcome the
//! client tells apart (TiKV's `KeyError` fields), plus storage failures.

use crate::{Key, LockInfo, TimeStamp};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// Another transaction's lock is in the way: the client resolves it
    /// and retries.
    #[error("key {:?} is locked by transaction {}", .0.key, .0.lock.ts)]
    KeyIsLocked(Box<LockInfo>),
    /// A newer version (or the transaction's own rollback) conflicts.
    #[error("write conflict on {key:?}: start_ts {start_ts}, conflicting commit_ts {conflict_commit_ts} (transaction {conflict_start_ts}), {reason:?}")]
    WriteConflict {
        key: Key,
        primary: Vec<u8>,
        start_ts: TimeStamp,
        conflict_start_ts: TimeStamp,
        conflict_commit_ts: TimeStamp,
        reason: ConflictReason,
    },
    #[error("key {key:?} already exists")]
    AlreadyExist { key: Key },
    /// Commit or heartbeat found no lock of the transaction and no commit.
    #[error("transaction {start_ts} has no lock on {key:?} (rolled back or never prewritten)")]
    TxnLockNotFound { key: Key, start_ts: TimeStamp, commit_ts: TimeStamp },
    /// CheckTxnStatus found neither a lock nor a record of the primary.
    #[error("transaction {start_ts} not found on its primary {primary:?}")]
    TxnNotFound { start_ts: TimeStamp, primary: Key },
    #[error("commit_ts {attempted} of transaction {start_ts} on {key:?} is below its min_commit_ts {min_commit_ts}")]
    CommitTsExpired {
        key: Key,
        start_ts: TimeStamp,
        attempted: TimeStamp,
        min_commit_ts: TimeStamp,
    },
    /// A pessimistic prewrite whose pessimistic lock is gone.
    #[error("pessimistic lock of transaction {start_ts} on {key:?} not found")]
    PessimisticLockNotFound { key: Key, start_ts: TimeStamp },
    /// Locking a key of a transaction that was already rolled back.
    #[error("transaction {start_ts} was rolled back on {key:?}")]
    PessimisticLockRolledBack { key: Key, start_ts: TimeStamp },
    /// The transaction's own lock on the key is of another kind.
    #[error("lock of transaction {start_ts} on {key:?} is not pessimistic")]
    LockTypeNotMatch { key: Key, start_ts: TimeStamp },
    /// Rollback of a transaction that is committed, or a resent prewrite
    /// of one.
    #[error("transaction {start_ts} is already committed at {commit_ts} on {key:?}")]
    Committed { key: Key, start_ts: TimeStamp, commit_ts: TimeStamp },
    /// CheckTxnStatus sent to a key whose lock is not its primary.
    #[error("{:?} is not the primary of transaction {}", .0.key, .0.lock.ts)]
    PrimaryMismatch(Box<LockInfo>),
    #[error("invalid timestamps: {0}")]
    InvalidTxnTso(String),
    /// A timestamp further ahead of PD's clock than the store allows
    /// (TiKV's `InvalidMaxTsUpdate`): raising `max_ts` to it would push
    /// every later async-commit and 1PC commit ts up with it.
    #[error("invalid max_ts update: {attempted} exceeds the limit {limit} (PD's latest timestamp plus server.max-ts-drift)")]
    InvalidMaxTsUpdate { attempted: TimeStamp, limit: TimeStamp },
    /// Waiting for the lock on `key` would close a cycle of waits (TiKV's
    /// `Deadlock`): this request is refused instead, so the others go on.
    #[error("deadlock: transaction {start_ts} waiting for transaction {lock_ts} on {key:?} would close a cycle of {} waits", .wait_chain.len())]
    Deadlock {
        key: Key,
        start_ts: TimeStamp,
        lock_ts: TimeStamp,
        key_hash: u64,
        /// The cycle, starting with the wait refused.
        wait_chain: Vec<WaitFor>,
    },
    /// A request no transaction may send (answered `abort`).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("corruption: {0}")]
    Corruption(String),
    #[error("engine: {0}")]
    Engine(String),
}

/// One edge of the wait-for graph: `txn` waits for `wait_for_txn`'s lock on
/// `key` (the user's key; `key_hash` identifies it in the detector).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitFor {
    pub txn: TimeStamp,
    pub wait_for_txn: TimeStamp,
    pub key_hash: u64,
    pub key: Vec<u8>,
}

/// Why a write conflict happened (`kvrpcpb.WriteConflict.Reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictReason {
    Optimistic = 1,
    PessimisticRetry = 2,
    SelfRolledBack = 3,
    /// A key whose constraint check a pessimistic transaction deferred to
    /// prewrite (`DoConstraintCheck`) was written after its start.
    LazyUniquenessCheck = 5,
}

impl From<atoll_engine_traits::Error> for Error {
    fn from(e: atoll_engine_traits::Error) -> Self {
        Error::Engine(e.to_string())
    }
}
