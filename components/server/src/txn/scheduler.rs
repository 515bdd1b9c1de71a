//! How a write command runs: latches, a snapshot, the actions, one raft
//! command of the snapshot's leader term.

use std::sync::Arc;

use atoll_engine_traits::{KvEngine, CF_LOCK};
use atoll_proto::atollpb::{CmdType, DeleteRequest, PutRequest, Request};
use atoll_proto::kvrpcpb::Context;
use atoll_raftstore::ReadResponse;
use atoll_txn::{Key, Modify, MvccReader, MvccTxn};

use super::concurrency::MemoryLocks;
use super::latches::LatchGuard;
use super::{Result, TxnStorage};
use crate::lock_manager::LockManager;
use crate::request::{self, snapshot};

/// A command under way: its latches and snapshot.
pub(in crate::txn) struct Cmd<S> {
    latches: LatchGuard,
    pub(in crate::txn) read: ReadResponse<S>,
}

impl<E: KvEngine> TxnStorage<E> {
    /// Takes `keys`' latches and a snapshot of the region that holds them.
    pub(in crate::txn) async fn begin(
        &self,
        ctx: &Context,
        keys: &[Key],
    ) -> Result<Cmd<E::Snapshot>> {
        let latches = self.latches.acquire(keys.iter().map(Key::as_encoded)).await;
        let read = snapshot(&self.store, ctx).await?;
        for k in keys {
            Self::in_region(&read, k)?;
        }
        Ok(Cmd { latches, read })
    }

    /// Proposes what the command wrote as one raft command, if anything.
    /// The latches (and memory locks) are released when raftstore answers,
    /// which may be after this returns `Undetermined` to the client.
    pub(in crate::txn) async fn finish(
        &self,
        ctx: &Context,
        cmd: Cmd<E::Snapshot>,
        txn: MvccTxn,
        memory_locks: Option<MemoryLocks>,
    ) -> Result<()> {
        if txn.is_empty() {
            return Ok(());
        }
        let requests = txn.modifies.into_iter().map(to_request).collect();
        self.propose(ctx, cmd.read.term, requests, (cmd.latches, memory_locks)).await
    }

    /// Proposes `requests` as one raft command of the leader term `term`
    /// (that of the snapshot they were computed from) and waits for the
    /// answer; `guards` live until raftstore answers (`request::write`).
    /// Then the pessimistic lock requests waiting for the locks it deletes
    /// are woken (after the latches go: see `lock_manager::waiter`).
    pub(in crate::txn) async fn propose(
        &self,
        ctx: &Context,
        term: u64,
        requests: Vec<Request>,
        guards: impl Send + 'static,
    ) -> Result<()> {
        let wake = WakeOnAnswer::new(&self.locks, &requests);
        request::write(&self.store, ctx, term, requests, (guards, wake)).await?;
        Ok(())
    }

    /// Runs `f` over `keys` as one command: latches, snapshot, one write.
    pub(in crate::txn) async fn execute<T>(
        &self,
        ctx: &Context,
        keys: &[Key],
        f: impl FnOnce(&mut MvccTxn, &MvccReader<'_, E::Snapshot>) -> Result<T>,
    ) -> Result<T> {
        let cmd = self.begin(ctx, keys).await?;
        let mut txn = MvccTxn::new();
        let out = f(&mut txn, &MvccReader::new(&*cmd.read.snapshot))?;
        self.finish(ctx, cmd, txn, None).await?;
        Ok(out)
    }

    /// Runs `f` on each of the keys `raw` names as one command (Commit,
    /// BatchRollback, PessimisticRollback: one rule per key, one write).
    pub(in crate::txn) async fn execute_each(
        &self,
        cmd: &str,
        ctx: &Context,
        raw: &[Vec<u8>],
        f: impl Fn(&mut MvccTxn, &MvccReader<'_, E::Snapshot>, &Key) -> atoll_txn::Result<()>,
    ) -> Result<()> {
        let keys = self.keys(cmd, ctx, raw.iter().map(Vec::as_slice))?;
        self.execute(ctx, &keys, |txn, reader| {
            for k in &keys {
                f(txn, reader, k)?;
            }
            Ok(())
        })
        .await
    }
}

/// Wakes the waiters of the locks a write deletes when dropped, i.e. when
/// raftstore answered the write (applied or certainly dropped: a spurious
/// wake only makes the waiter look again). Collects nothing when nobody
/// waits: a request that waits registers under the latch of its key, which
/// the releasing write holds from its snapshot to its answer, so it cannot
/// start waiting on a key of this write meanwhile.
struct WakeOnAnswer {
    locks: Arc<LockManager>,
    keys: Vec<Vec<u8>>,
}

impl WakeOnAnswer {
    fn new(locks: &Arc<LockManager>, requests: &[Request]) -> Option<WakeOnAnswer> {
        if locks.waiters.is_empty() {
            return None;
        }
        let keys = requests
            .iter()
            .filter_map(|r| r.delete.as_ref())
            .filter(|d| d.cf == CF_LOCK)
            .map(|d| d.key.clone())
            .collect();
        Some(WakeOnAnswer { locks: locks.clone(), keys })
    }
}

impl Drop for WakeOnAnswer {
    fn drop(&mut self) {
        self.locks.waiters.wake(self.keys.iter().map(Vec::as_slice));
    }
}

/// A modification as a raft command request (keys get `z` at apply).
fn to_request(m: Modify) -> Request {
    match m {
        Modify::Put { cf, key, value } => Request {
            cmd_type: CmdType::Put as i32,
            put: Some(PutRequest { cf: cf.into(), key, value }),
            ..Default::default()
        },
        Modify::Delete { cf, key } => Request {
            cmd_type: CmdType::Delete as i32,
            delete: Some(DeleteRequest { cf: cf.into(), key }),
            ..Default::default()
        },
    }
}
