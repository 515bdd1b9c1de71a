//! A transaction: its buffer, reads of its own writes, pessimistic
//! locks and rollback.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use atoll_proto::kvrpcpb::{self, BatchRollbackRequest, Op, PessimisticLockRequest};

use super::heartbeat::Heartbeat;
use super::{classify, describe, KeyOutcome, TxnClient, TxnOptions, LOCK_TTL_MS};
use crate::raw::{outcome, Error, Result};

/// What a transaction does to a key at commit.
#[derive(Clone, Debug)]
pub(super) enum Mutation {
    Put(Vec<u8>),
    Delete,
    /// Only checked (and locked): a conflicting commit aborts the transaction.
    Lock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Active,
    Committed,
    RolledBack,
    /// The primary's commit was sent and never answered.
    Undetermined,
}

/// One transaction. Drop without `commit` = nothing written (pessimistic
/// locks expire after [`LOCK_TTL_MS`]; `rollback` releases them now).
pub struct Transaction {
    pub(super) client: TxnClient,
    pub(super) start_ts: u64,
    pub(super) options: TxnOptions,
    /// Wire key -> what commit writes.
    pub(super) buffer: BTreeMap<Vec<u8>, Mutation>,
    /// Keys holding this transaction's pessimistic locks.
    pub(super) locked: BTreeSet<Vec<u8>>,
    pub(super) primary: Option<Vec<u8>>,
    pub(super) for_update_ts: u64,
    /// Did any lock or prewrite request leave (so there may be locks)?
    pub(super) sent: bool,
    pub(super) state: State,
    /// Keeps the primary's lock alive from the first lock sent until the
    /// transaction ends (dropping it stops the beats).
    pub(super) heartbeat: Option<Heartbeat>,
    /// When it began: a lock's TTL counts from the start ts, so a lock
    /// taken late must ask for the time already passed too.
    started: Instant,
}

impl Transaction {
    pub(super) fn new(client: TxnClient, start_ts: u64, options: TxnOptions) -> Self {
        Transaction {
            client,
            start_ts,
            options,
            buffer: BTreeMap::new(),
            locked: BTreeSet::new(),
            primary: None,
            for_update_ts: start_ts,
            sent: false,
            state: State::Active,
            heartbeat: None,
            started: Instant::now(),
        }
    }

    /// The TTL of a lock taken now: the transaction's age plus
    /// [`LOCK_TTL_MS`] (client-go's `txnLockTTL` / pessimistic lock TTL),
    /// so a transaction slowed down (PD unreachable for a while) does not
    /// take locks that are expired already: the heartbeat only extends
    /// the primary's.
    pub(super) fn lock_ttl(&self) -> u64 {
        self.started.elapsed().as_millis() as u64 + LOCK_TTL_MS
    }

    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    /// How this transaction locks and commits.
    pub fn options(&self) -> TxnOptions {
        self.options
    }

    pub(super) fn active(&self) -> Result<()> {
        match self.state {
            State::Active => Ok(()),
            s => Err(Error::Invalid(format!("the transaction is already {s:?}"))),
        }
    }

    fn wire(&self, key: &[u8]) -> Vec<u8> {
        self.client.inner.keys.wire(key)
    }

    /// The value of `key`: this transaction's own write, else the snapshot's.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.active()?;
        let w = self.wire(key);
        match self.buffer.get(&w) {
            Some(Mutation::Put(v)) => Ok(Some(v.clone())),
            Some(Mutation::Delete) => Ok(None),
            Some(Mutation::Lock) | None => self.client.get_wire(&w, self.start_ts).await,
        }
    }

    /// Values of the keys that exist, in key order.
    pub async fn batch_get(&self, keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.active()?;
        let mut out = BTreeMap::new();
        let mut read = vec![];
        for k in keys {
            let w = self.wire(k);
            match self.buffer.get(&w) {
                Some(Mutation::Put(v)) => {
                    out.insert(w, v.clone());
                }
                Some(Mutation::Delete) => {}
                Some(Mutation::Lock) | None => read.push(w),
            }
        }
        for p in self.client.batch_get_wire(read, self.start_ts).await? {
            out.insert(p.key, p.value);
        }
        let keys = &self.client.inner.keys;
        Ok(out.into_iter().map(|(w, v)| (keys.user(w), v)).collect())
    }

    /// Pairs in `[start, end)` (empty end = unbounded), at most `limit`,
    /// with this transaction's own writes applied.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.active()?;
        let keys = &self.client.inner.keys;
        let (lo, hi) = (keys.wire(start), keys.wire_end(end));
        let mine: Vec<(&Vec<u8>, &Mutation)> = self
            .buffer
            .range(lo.clone()..)
            .take_while(|(k, _)| hi.is_empty() || **k < hi)
            .collect();
        // Deleted keys may hide as many snapshot pairs as there are of them.
        let want = limit.saturating_add(mine.len() as u32);
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> =
            self.client.scan_wire(lo, hi, want, self.start_ts).await?.into_iter().collect();
        for (k, m) in mine {
            match m {
                Mutation::Put(v) => {
                    merged.insert(k.clone(), v.clone());
                }
                Mutation::Delete => {
                    merged.remove(k);
                }
                Mutation::Lock => {}
            }
        }
        Ok(merged.into_iter().take(limit as usize).map(|(w, v)| (keys.user(w), v)).collect())
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.active()?;
        self.buffer.insert(self.wire(key), Mutation::Put(value.to_vec()));
        Ok(())
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.active()?;
        self.buffer.insert(self.wire(key), Mutation::Delete);
        Ok(())
    }

    /// Makes the transaction conflict with any other that commits these
    /// keys after it started (optimistic: checked at commit; pessimistic:
    /// locked now, waiting out other holders).
    pub async fn lock_keys(&mut self, keys: &[Vec<u8>]) -> Result<()> {
        self.active()?;
        let wires: Vec<Vec<u8>> = keys.iter().map(|k| self.wire(k)).collect();
        if self.options.pessimistic {
            self.acquire(wires.iter().filter(|w| !self.locked.contains(*w)).cloned().collect())
                .await?;
        }
        for w in wires {
            self.buffer.entry(w).or_insert(Mutation::Lock);
        }
        Ok(())
    }

    /// Pessimistic: locks `key` and reads its latest committed value.
    pub async fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.options.pessimistic {
            return Err(Error::Invalid("get_for_update needs a pessimistic transaction".into()));
        }
        self.lock_keys(&[key.to_vec()]).await?;
        let w = self.wire(key);
        match self.buffer.get(&w) {
            Some(Mutation::Put(v)) => Ok(Some(v.clone())),
            Some(Mutation::Delete) => Ok(None),
            _ => self.client.get_wire(&w, self.for_update_ts).await,
        }
    }

    /// Takes pessimistic locks on `wires` at a fresh `for_update_ts`; the
    /// primary first, alone (client-go's 2pc.go does the same): a
    /// secondary locked while its primary holds no lock yet could be
    /// rolled back by a reader that finds the primary empty.
    async fn acquire(&mut self, wires: Vec<Vec<u8>>) -> Result<()> {
        if wires.is_empty() {
            return Ok(());
        }
        let primary = self.primary.get_or_insert_with(|| wires[0].clone()).clone();
        self.sent = true;
        self.keep_alive(&primary);
        let (first, rest): (Vec<_>, Vec<_>) =
            wires.into_iter().partition(|w| *w == primary && !self.locked.contains(w));
        if !first.is_empty() {
            self.acquire_batch(first, &primary).await?;
        }
        if rest.is_empty() {
            return Ok(());
        }
        self.acquire_batch(rest, &primary).await
    }

    async fn acquire_batch(&mut self, wires: Vec<Vec<u8>>, primary: &[u8]) -> Result<()> {
        let c = self.client.clone();
        for attempt in 0..c.inner.cfg.max_attempts {
            let for_update_ts = c.current_ts().await?;
            let start_ts = self.start_ts;
            let is_first = self.locked.is_empty();
            let lock_ttl = self.lock_ttl();
            let items = wires.iter().map(|w| (w.clone(), ())).collect();
            let errors = c
                .per_region("pessimistic_lock", items, |mut t, ctx, chunk| {
                    let req = PessimisticLockRequest {
                        context: Some(ctx),
                        mutations: chunk
                            .into_iter()
                            .map(|(key, _)| kvrpcpb::Mutation {
                                op: Op::PessimisticLock as i32,
                                key,
                                ..Default::default()
                            })
                            .collect(),
                        primary_lock: primary.to_vec(),
                        start_version: start_ts,
                        lock_ttl,
                        for_update_ts,
                        is_first_lock: is_first,
                        // Wait for other transactions' locks as long as
                        // the store allows (its wait-for-lock-timeout).
                        wait_timeout: 0,
                        ..Default::default()
                    };
                    async move {
                        let r = t
                            .kv_pessimistic_lock(req)
                            .await
                            .map_err(|e| crate::raw::write_rpc_error("pessimistic_lock", e))?
                            .into_inner();
                        outcome(r.region_error, String::new(), r.errors)
                    }
                })
                .await;
            // A lock request whose answer was lost may have locked keys:
            // they are this transaction's, released by commit or rollback.
            self.locked.extend(wires.iter().cloned());
            self.for_update_ts = self.for_update_ts.max(for_update_ts);
            let errors = match errors {
                Ok(e) => e,
                Err(Error::Undetermined(_)) => continue,
                Err(e) => return Err(e),
            };
            if errors.is_empty() {
                return Ok(());
            }
            let mut retry = false;
            for e in errors {
                if let Some(d) = &e.deadlock {
                    return Err(Error::Deadlock(format!(
                        "waiting for transaction {} on {:?} would close a cycle of {} waits",
                        d.lock_ts,
                        String::from_utf8_lossy(&d.lock_key),
                        d.wait_chain.len()
                    )));
                }
                if e.conflict.is_some() {
                    // Committed after our for_update_ts: lock again, later.
                    retry = true;
                    continue;
                }
                match classify(e) {
                    KeyOutcome::Locked(l) => {
                        c.resolve_lock(&l, self.start_ts).await?;
                        retry = true;
                    }
                    KeyOutcome::Undetermined(_) => retry = true,
                    KeyOutcome::Refused(m) => return Err(Error::Aborted(m)),
                }
            }
            if retry {
                c.inner.backoff(attempt).await;
            }
        }
        Err(c.exhausted("could not lock the keys"))
    }

    /// Starts the heartbeat of the primary's lock, once.
    pub(super) fn keep_alive(&mut self, primary: &[u8]) {
        if self.heartbeat.is_none() {
            let c = self.client.clone();
            self.heartbeat = Some(Heartbeat::start(c, primary.to_vec(), self.start_ts));
        }
    }

    /// Rolls back: releases pessimistic locks and removes any prewrite.
    pub async fn rollback(&mut self) -> Result<()> {
        self.active()?;
        self.state = State::RolledBack;
        self.heartbeat = None;
        self.rollback_keys().await
    }

    pub(super) async fn rollback_keys(&self) -> Result<()> {
        if !self.sent {
            // Nothing left this client: nothing to undo.
            return Ok(());
        }
        let start_ts = self.start_ts;
        let keys: Vec<(Vec<u8>, ())> = self
            .buffer
            .keys()
            .chain(self.locked.iter())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|k| (k.clone(), ()))
            .collect();
        let errors = self
            .client
            .per_region("batch_rollback", keys, |mut t, ctx, chunk| {
                let req = BatchRollbackRequest {
                    context: Some(ctx),
                    start_version: start_ts,
                    keys: chunk.into_iter().map(|(k, _)| k).collect(),
                };
                async move {
                    let r = t
                        .kv_batch_rollback(req)
                        .await
                        .map_err(|e| crate::raw::write_rpc_error("batch_rollback", e))?
                        .into_inner();
                    outcome(r.region_error, String::new(), r.error.into_iter().collect())
                }
            })
            .await?;
        match errors.into_iter().next() {
            None => Ok(()),
            Some(e) => Err(Error::Server(describe(&e))),
        }
    }
}
