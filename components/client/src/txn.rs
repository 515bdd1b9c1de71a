//! Transactions over TiKV's Percolator protocol, as TiKV's own clients run
//! them: reads at the start timestamp (resolving the locks of finished or
//! abandoned transactions on the way), writes buffered until `commit`,
//! then two-phase commit: prewrite every key (one request per region),
//! commit the primary key (the commit point), then the secondaries.
//!
//! Outcomes are exact: `Ok` means committed; [`Error::Aborted`] and every
//! error before the primary's commit was sent mean nothing was committed
//! (the locks left behind are rolled back by whoever meets them); only a
//! primary commit whose answer never came is [`Error::Undetermined`],
//! after retrying it (committing again is idempotent) as long as allowed.
//!
//! API V2 clusters only (the keyspace's `x` keys). Not supported here: async
//! commit and 1PC (locks of other clients' async-commit transactions are
//! waited out, not resolved), lock heartbeats (a transaction slower than
//! [`LOCK_TTL_MS`] between prewrite and commit may be rolled back by a
//! reader; its commit then fails with `Aborted`). A reader rolls back a
//! transaction whose primary holds no lock only once the lock it met has
//! expired, so a secondary prewritten before its primary never kills a
//! live transaction. Pessimistic locks wait on the store for other
//! transactions' locks (its `pessimistic-txn.wait-for-lock-timeout`); a
//! lock whose wait would close a cycle fails with [`Error::Deadlock`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use atoll_codec::api::ApiVersion;
use atoll_pd_client::PdClient;
use atoll_proto::kvrpcpb::{self, *};
use atoll_proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

use crate::keys::KeyMap;
use crate::raw::{outcome, Attempt, Call, Config, Error, RawClient, Result, KEYSPACE};

/// Lock TTL of prewrites and pessimistic locks (TiKV's default).
pub const LOCK_TTL_MS: u64 = 3000;
/// Keys per prewrite or commit request (the rest go in further requests).
const KEYS_PER_REQUEST: usize = 256;
/// Sends of a primary commit whose answers were lost before the outcome
/// is reported undetermined.
const COMMIT_ATTEMPTS: usize = 10;

/// A transactional client; cheap to clone (one region cache and
/// connection pool behind it).
#[derive(Clone)]
pub struct TxnClient {
    inner: Arc<RawClient>,
}

/// How a key error ends a command.
enum KeyOutcome {
    /// Another transaction's lock is in the way: resolve it and retry.
    Locked(Box<LockInfo>),
    /// The store could not tell whether it applied (raftstore's
    /// `undetermined: ...`).
    Undetermined(String),
    /// A rule said no (conflict, lock not found, ...): final.
    Refused(String),
}

fn classify(e: KeyError) -> KeyOutcome {
    if let Some(l) = e.locked {
        return KeyOutcome::Locked(Box::new(l));
    }
    if e.abort.starts_with("undetermined: ") {
        return KeyOutcome::Undetermined(e.abort);
    }
    KeyOutcome::Refused(describe(&e))
}

fn describe(e: &KeyError) -> String {
    if let Some(c) = &e.conflict {
        return format!(
            "write conflict on {:?}: start_ts {} met a commit at {} (txn {})",
            String::from_utf8_lossy(&c.key),
            c.start_ts,
            c.conflict_commit_ts,
            c.conflict_ts
        );
    }
    if let Some(a) = &e.already_exist {
        return format!("key {:?} already exists", String::from_utf8_lossy(&a.key));
    }
    if !e.retryable.is_empty() {
        return e.retryable.clone();
    }
    if !e.abort.is_empty() {
        return e.abort.clone();
    }
    format!("{e:?}")
}

impl TxnClient {
    pub async fn connect(cfg: Config) -> Result<TxnClient> {
        let (pd, api) = RawClient::connect_pd(&cfg).await?;
        if api != ApiVersion::V2 {
            return Err(Error::Invalid(format!(
                "transactions need an API V2 cluster (keyspace `x` keys); this one runs {api}"
            )));
        }
        let keys = KeyMap::v2_txn(pd.load_keyspace(KEYSPACE).await?.id);
        Ok(TxnClient { inner: Arc::new(RawClient::with_keys(pd, keys, cfg)) })
    }

    pub fn pd(&self) -> &PdClient {
        self.inner.pd()
    }

    /// A fresh timestamp from PD's TSO.
    pub async fn current_ts(&self) -> Result<u64> {
        Ok(self.inner.pd().get_ts().await?)
    }

    /// An optimistic transaction: conflicts are found at commit.
    pub async fn begin(&self) -> Result<Transaction> {
        Ok(Transaction::new(self.clone(), self.current_ts().await?, false))
    }

    /// A pessimistic transaction: `lock_keys` / `get_for_update` lock keys
    /// when called; other writes are checked at commit as optimistic ones.
    pub async fn begin_pessimistic(&self) -> Result<Transaction> {
        Ok(Transaction::new(self.clone(), self.current_ts().await?, true))
    }

    /// The value of `key` as of timestamp `ts` (a read-only snapshot).
    pub async fn get_at(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
        self.get_wire(&self.inner.keys.wire(key), ts).await
    }

    /// Pairs in `[start, end)` (empty end = unbounded) as of `ts`, at most `limit`.
    pub async fn scan_at(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
        ts: u64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let k = &self.inner.keys;
        let pairs = self.scan_wire(k.wire(start), k.wire_end(end), limit, ts).await?;
        Ok(pairs.into_iter().map(|(w, v)| (k.user(w), v)).collect())
    }

    async fn get_wire(&self, key: &[u8], ts: u64) -> Result<Option<Vec<u8>>> {
        for attempt in 0..self.inner.cfg.max_attempts {
            let (_, r) = self
                .inner
                .on_region(key, Call::Read, |mut c, _, ctx| async move {
                    let req = GetRequest { context: Some(ctx), key: key.to_vec(), version: ts };
                    let r = c.kv_get(req).await?.into_inner();
                    outcome(r.region_error, String::new(), (r.error, r.not_found, r.value))
                })
                .await?;
            match r {
                (None, true, _) => return Ok(None),
                (None, false, v) => return Ok(Some(v)),
                (Some(e), ..) => self.on_read_error(e, ts, attempt).await?,
            }
        }
        Err(self.exhausted("locks kept blocking the read"))
    }

    /// A read met a key error: resolve the lock in the way (or wait for
    /// it), anything else is final.
    async fn on_read_error(&self, e: KeyError, ts: u64, attempt: usize) -> Result<()> {
        match classify(e) {
            KeyOutcome::Locked(lock) => {
                if !self.resolve(&lock, ts).await? {
                    self.inner.backoff(attempt).await;
                }
                Ok(())
            }
            KeyOutcome::Undetermined(m) | KeyOutcome::Refused(m) => Err(Error::Server(m)),
        }
    }

    fn exhausted(&self, last: &str) -> Error {
        Error::Exhausted { attempts: self.inner.cfg.max_attempts, last: last.into() }
    }

    /// Wire keys' values at `ts` (absent keys left out).
    async fn batch_get_wire(&self, keys: Vec<Vec<u8>>, ts: u64) -> Result<Vec<KvPair>> {
        let mut out = vec![];
        let mut pending: Vec<(Vec<u8>, ())> = keys.into_iter().map(|k| (k, ())).collect();
        for attempt in 0..self.inner.cfg.max_attempts {
            if pending.is_empty() {
                return Ok(out);
            }
            let mut retry = vec![];
            for (first, group) in self.inner.group(std::mem::take(&mut pending)).await? {
                let keys: Vec<Vec<u8>> = group.iter().map(|(k, _)| k.clone()).collect();
                let (_, got) = self
                    .inner
                    .on_region(&first, Call::Read, |mut c, r, ctx| {
                        let keys = keys.clone();
                        async move {
                            if !keys.iter().all(|k| self.inner.holds(&r, k)) {
                                return Ok(Attempt::Done(None));
                            }
                            let req = BatchGetRequest { context: Some(ctx), keys, version: ts };
                            let r = c.kv_batch_get(req).await?.into_inner();
                            outcome(r.region_error, String::new(), Some((r.error, r.pairs)))
                        }
                    })
                    .await?;
                let Some((error, pairs)) = got else {
                    retry.extend(group);
                    continue;
                };
                if let Some(e) = error {
                    self.on_read_error(e, ts, attempt).await?;
                    retry.extend(group);
                    continue;
                }
                for p in pairs {
                    match p.error {
                        Some(e) => {
                            self.on_read_error(e, ts, attempt).await?;
                            retry.push((p.key, ()));
                        }
                        None => out.push(p),
                    }
                }
            }
            pending = retry;
        }
        Err(self.exhausted("locks or region changes kept the batch get from finishing"))
    }

    /// Wire pairs in `[start, end)` at `ts`, region by region.
    async fn scan_wire(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
        ts: u64,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        let mut cur = Some(start);
        let mut attempt = 0;
        while let Some(from) = cur.take().filter(|_| (out.len() as u32) < limit) {
            let want = limit - out.len() as u32;
            let (r, (error, pairs)) = self
                .inner
                .on_region(&from, Call::Read, |mut c, _, ctx| {
                    let req = ScanRequest {
                        context: Some(ctx),
                        start_key: from.clone(),
                        end_key: end.clone(),
                        limit: want,
                        version: ts,
                        ..Default::default()
                    };
                    async move {
                        let r = c.kv_scan(req).await?.into_inner();
                        outcome(r.region_error, String::new(), (r.error, r.pairs))
                    }
                })
                .await?;
            let mut locked = error.into_iter().collect::<Vec<_>>();
            locked.extend(pairs.iter().filter_map(|p| p.error.clone()));
            if !locked.is_empty() {
                // Resolve what is in the way, then read this region again.
                attempt += 1;
                if attempt >= self.inner.cfg.max_attempts {
                    return Err(self.exhausted("locks kept blocking the scan"));
                }
                for e in locked {
                    self.on_read_error(e, ts, attempt).await?;
                }
                cur = Some(from);
                continue;
            }
            out.extend(pairs.into_iter().map(|p| (p.key, p.value)));
            cur = self.inner.next_region_start(&r, &end);
        }
        Ok(out)
    }

    /// Settles another transaction's lock met at `caller_ts`: asks its
    /// primary how the transaction ended (rolling it back if its lock
    /// expired) and, if it ended, commits or rolls back `lock`'s key to
    /// match. Returns false if the owner is still alive (wait, retry).
    async fn resolve(&self, lock: &LockInfo, caller_ts: u64) -> Result<bool> {
        if lock.use_async_commit {
            // Settled by its owner or a client that resolves async commit.
            return Ok(false);
        }
        let current_ts = self.current_ts().await?;
        // Only a lock whose TTL ran out may have its transaction rolled
        // back when the primary holds no lock: before that, the primary's
        // prewrite may simply not have arrived yet (TiKV's Go client asks
        // with `rollback_if_not_exist` only after the TTL expired:
        // client-go txnkv/txnlock/lock_resolver.go, getTxnStatusFromLock).
        let expired =
            physical_ms(lock.lock_version).saturating_add(lock.lock_ttl) < physical_ms(current_ts);
        let primary = lock.primary_lock.clone();
        let status = self
            .inner
            .on_region(&primary, Call::Write("check_txn_status"), |mut c, _, ctx| {
                let req = CheckTxnStatusRequest {
                    context: Some(ctx),
                    primary_key: primary.clone(),
                    lock_ts: lock.lock_version,
                    caller_start_ts: caller_ts,
                    current_ts,
                    rollback_if_not_exist: expired,
                    resolving_pessimistic_lock: lock.lock_type == Op::PessimisticLock as i32,
                    ..Default::default()
                };
                async move {
                    let r = c.kv_check_txn_status(req).await?.into_inner();
                    outcome(r.region_error, String::new(), (r.error, r.lock_ttl, r.commit_version))
                }
            })
            .await;
        let commit_ts = match status {
            // Checking may write a rollback: an unanswered check is simply
            // asked again later.
            Err(Error::Undetermined(_)) => return Ok(false),
            Err(e) => return Err(e),
            // The primary is not written yet and its owner may still be
            // prewriting: wait until the lock expires.
            Ok((_, (Some(e), ..))) if e.txn_not_found.is_some() => return Ok(false),
            Ok((_, (Some(e), ..))) => {
                return match classify(e) {
                    KeyOutcome::Locked(_) | KeyOutcome::Undetermined(_) => Ok(false),
                    KeyOutcome::Refused(m) => Err(Error::Server(m)),
                }
            }
            Ok((_, (None, ttl, _))) if ttl > 0 => return Ok(false),
            Ok((_, (None, _, commit_ts))) => commit_ts,
        };
        let key = lock.key.clone();
        let resolved = self
            .inner
            .on_region(&key, Call::Write("resolve_lock"), |mut c, _, ctx| {
                let req = ResolveLockRequest {
                    context: Some(ctx),
                    start_version: lock.lock_version,
                    commit_version: commit_ts,
                    keys: vec![key.clone()],
                    ..Default::default()
                };
                async move {
                    let r = c.kv_resolve_lock(req).await?.into_inner();
                    outcome(r.region_error, String::new(), r.error)
                }
            })
            .await;
        match resolved {
            Ok((_, None)) => Ok(true),
            Ok((_, Some(_))) | Err(Error::Undetermined(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Runs one write command per region over `items` (wire key first),
    /// at most [`KEYS_PER_REQUEST`] keys a request, regrouping what a
    /// region change left outside. `send` returns the command's key
    /// errors (empty = done).
    async fn per_region<K, F, Fut>(
        &self,
        what: &'static str,
        items: Vec<(Vec<u8>, K)>,
        send: F,
    ) -> Result<Vec<KeyError>>
    where
        K: Clone + Send + Sync,
        F: Fn(TikvClient<Channel>, Context, Vec<(Vec<u8>, K)>) -> Fut + Sync,
        Fut: std::future::Future<Output = Result<Attempt<Vec<KeyError>>>>,
    {
        let mut errors = vec![];
        let mut pending = items;
        for _ in 0..self.inner.cfg.max_attempts {
            if pending.is_empty() {
                return Ok(errors);
            }
            let mut retry = vec![];
            for (_, group) in self.inner.group(std::mem::take(&mut pending)).await? {
                for chunk in group.chunks(KEYS_PER_REQUEST) {
                    let first = chunk[0].0.clone();
                    let (_, got) = self
                        .inner
                        .on_region(&first, Call::Write(what), |c, r, ctx| {
                            let chunk = chunk.to_vec();
                            let inside = chunk.iter().all(|(k, _)| self.inner.holds(&r, k));
                            let sent = inside.then(|| send(c, ctx, chunk));
                            async move {
                                match sent {
                                    Some(f) => Ok(match f.await? {
                                        Attempt::Done(e) => Attempt::Done(Some(e)),
                                        Attempt::Region(e) => Attempt::Region(e),
                                    }),
                                    None => Ok(Attempt::Done(None)),
                                }
                            }
                        })
                        .await?;
                    match got {
                        Some(e) => errors.extend(e),
                        None => retry.extend(chunk.iter().cloned()),
                    }
                }
            }
            pending = retry;
        }
        Err(self.exhausted("regions kept changing"))
    }
}

/// KvCommit of `keys` (all in the region `ctx` names) of transaction
/// `start_ts` at `commit_ts`; its key error, if any.
async fn send_commit(
    mut t: TikvClient<Channel>,
    ctx: Context,
    start_ts: u64,
    keys: Vec<Vec<u8>>,
    commit_ts: u64,
) -> Result<Attempt<Vec<KeyError>>> {
    let req = CommitRequest {
        context: Some(ctx),
        start_version: start_ts,
        keys,
        commit_version: commit_ts,
    };
    let r =
        t.kv_commit(req).await.map_err(|e| crate::raw::write_rpc_error("commit", e))?.into_inner();
    outcome(r.region_error, String::new(), r.error.into_iter().collect())
}

/// What a transaction does to a key at commit.
#[derive(Clone, Debug)]
enum Mutation {
    Put(Vec<u8>),
    Delete,
    /// Only checked (and locked): a conflicting commit aborts the transaction.
    Lock,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Active,
    Committed,
    RolledBack,
    /// The primary's commit was sent and never answered.
    Undetermined,
}

/// One transaction. Drop without `commit` = nothing written (pessimistic
/// locks expire after [`LOCK_TTL_MS`]; `rollback` releases them now).
pub struct Transaction {
    client: TxnClient,
    start_ts: u64,
    pessimistic: bool,
    /// Wire key -> what commit writes.
    buffer: BTreeMap<Vec<u8>, Mutation>,
    /// Keys holding this transaction's pessimistic locks.
    locked: BTreeSet<Vec<u8>>,
    primary: Option<Vec<u8>>,
    for_update_ts: u64,
    /// Did any lock or prewrite request leave (so there may be locks)?
    sent: bool,
    state: State,
}

impl Transaction {
    fn new(client: TxnClient, start_ts: u64, pessimistic: bool) -> Self {
        Transaction {
            client,
            start_ts,
            pessimistic,
            buffer: BTreeMap::new(),
            locked: BTreeSet::new(),
            primary: None,
            for_update_ts: start_ts,
            sent: false,
            state: State::Active,
        }
    }

    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    fn active(&self) -> Result<()> {
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
        if self.pessimistic {
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
        if !self.pessimistic {
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

    /// Takes pessimistic locks on `wires` at a fresh `for_update_ts`.
    async fn acquire(&mut self, wires: Vec<Vec<u8>>) -> Result<()> {
        if wires.is_empty() {
            return Ok(());
        }
        let primary = self.primary.get_or_insert_with(|| wires[0].clone()).clone();
        let c = self.client.clone();
        self.sent = true;
        for attempt in 0..c.inner.cfg.max_attempts {
            let for_update_ts = c.current_ts().await?;
            let start_ts = self.start_ts;
            let is_first = self.locked.is_empty();
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
                        primary_lock: primary.clone(),
                        start_version: start_ts,
                        lock_ttl: LOCK_TTL_MS,
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
                        c.resolve(&l, self.start_ts).await?;
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

    /// Two-phase commit. `Ok(Some(commit_ts))` once the primary key is
    /// committed (secondaries follow before this returns, and readers
    /// finish any left); `Ok(None)` if there was nothing to write.
    pub async fn commit(&mut self) -> Result<Option<u64>> {
        self.active()?;
        if self.buffer.is_empty() {
            self.state = State::Committed;
            return Ok(None);
        }
        let primary = self
            .primary
            .clone()
            .unwrap_or_else(|| self.buffer.keys().next().expect("not empty").clone());
        self.sent = true;
        if let Err(e) = self.prewrite(&primary).await {
            // The primary's commit was never sent: nothing can commit.
            // Roll back now what we can; readers roll back the rest.
            let _ = self.rollback_keys().await;
            self.state = State::RolledBack;
            return Err(match e {
                Error::Aborted(m) => Error::Aborted(m),
                other => Error::Aborted(format!("prewrite failed: {other}")),
            });
        }
        let commit_ts = self.client.current_ts().await.inspect_err(|_| {
            // Locks stay until they expire; the commit never happened.
            self.state = State::RolledBack;
        })?;
        self.commit_primary(&primary, commit_ts).await?;
        self.state = State::Committed;
        let secondaries: Vec<(Vec<u8>, ())> =
            self.buffer.keys().filter(|k| **k != primary).map(|k| (k.clone(), ())).collect();
        let start_ts = self.start_ts;
        // Committed already: a secondary left locked is finished by the
        // first reader that meets it.
        let _ = self
            .client
            .per_region("commit", secondaries, |t, ctx, chunk| {
                send_commit(
                    t,
                    ctx,
                    start_ts,
                    chunk.into_iter().map(|(k, _)| k).collect(),
                    commit_ts,
                )
            })
            .await;
        Ok(Some(commit_ts))
    }

    /// Prewrites every buffered key; `Err` for any key that did not take.
    async fn prewrite(&self, primary: &[u8]) -> Result<()> {
        let c = &self.client;
        let mut pending: Vec<(Vec<u8>, Mutation)> =
            self.buffer.iter().map(|(k, m)| (k.clone(), m.clone())).collect();
        let txn_size = pending.len() as u64;
        for attempt in 0..c.inner.cfg.max_attempts {
            let errors = c
                .per_region("prewrite", pending.clone(), |mut t, ctx, chunk| {
                    let (mutations, actions) = chunk
                        .into_iter()
                        .map(|(key, m)| {
                            let action = if self.locked.contains(&key) {
                                prewrite_request::PessimisticAction::DoPessimisticCheck
                            } else {
                                prewrite_request::PessimisticAction::SkipPessimisticCheck
                            };
                            let (op, value) = match m {
                                Mutation::Put(v) => (Op::Put, v),
                                Mutation::Delete => (Op::Del, vec![]),
                                Mutation::Lock => (Op::Lock, vec![]),
                            };
                            let m = kvrpcpb::Mutation {
                                op: op as i32,
                                key,
                                value,
                                ..Default::default()
                            };
                            (m, action as i32)
                        })
                        .unzip();
                    let req = PrewriteRequest {
                        context: Some(ctx),
                        mutations,
                        primary_lock: primary.to_vec(),
                        start_version: self.start_ts,
                        lock_ttl: LOCK_TTL_MS,
                        pessimistic_actions: if self.pessimistic { actions } else { vec![] },
                        txn_size,
                        for_update_ts: if self.pessimistic { self.for_update_ts } else { 0 },
                        ..Default::default()
                    };
                    async move {
                        let r = t
                            .kv_prewrite(req)
                            .await
                            .map_err(|e| crate::raw::write_rpc_error("prewrite", e))?
                            .into_inner();
                        outcome(r.region_error, String::new(), r.errors)
                    }
                })
                .await?;
            if errors.is_empty() {
                return Ok(());
            }
            // Only locks of others are worth waiting for; prewriting the
            // whole set again is idempotent.
            for e in errors {
                match classify(e) {
                    KeyOutcome::Locked(l) => {
                        if !c.resolve(&l, self.start_ts).await? {
                            c.inner.backoff(attempt).await;
                        }
                    }
                    KeyOutcome::Undetermined(m) => return Err(Error::Undetermined(m)),
                    KeyOutcome::Refused(m) => return Err(Error::Aborted(m)),
                }
            }
            pending = self.buffer.iter().map(|(k, m)| (k.clone(), m.clone())).collect();
        }
        Err(c.exhausted("locks kept blocking the prewrite"))
    }

    /// Commits the primary key: the transaction's commit point. Sent again
    /// while its answer is lost (committing twice is harmless); a refusal
    /// means the lock is gone (rolled back by a reader): aborted.
    async fn commit_primary(&mut self, primary: &[u8], commit_ts: u64) -> Result<()> {
        let c = self.client.clone();
        let mut last = String::new();
        // Did any send possibly reach the store? If none did, the commit
        // never happened and never will (only this client commits the
        // primary; readers roll it back once its lock expires).
        let mut maybe_applied = false;
        for attempt in 0..COMMIT_ATTEMPTS {
            let res = c
                .inner
                .on_region(primary, Call::Write("commit"), |t, _, ctx| {
                    send_commit(t, ctx, self.start_ts, vec![primary.to_vec()], commit_ts)
                })
                .await
                .map(|(_, errors)| errors.into_iter().next());
            match res {
                Ok(None) => return Ok(()),
                Ok(Some(e)) => match classify(e) {
                    KeyOutcome::Undetermined(m) => {
                        maybe_applied = true;
                        last = m;
                    }
                    KeyOutcome::Locked(l) => last = format!("locked by {}", l.lock_version),
                    // The lock is gone and no commit record of ours is
                    // there: rolled back by a reader.
                    KeyOutcome::Refused(m) => {
                        self.state = State::RolledBack;
                        return Err(Error::Aborted(m));
                    }
                },
                Err(Error::Undetermined(m)) => {
                    maybe_applied = true;
                    last = m;
                }
                Err(e) => last = e.to_string(),
            }
            c.inner.backoff(attempt).await;
        }
        if maybe_applied {
            self.state = State::Undetermined;
            Err(Error::Undetermined(format!("commit of the primary key: {last}")))
        } else {
            self.state = State::RolledBack;
            Err(Error::Aborted(format!("the primary key's commit never reached a store: {last}")))
        }
    }

    /// Rolls back: releases pessimistic locks and removes any prewrite.
    pub async fn rollback(&mut self) -> Result<()> {
        self.active()?;
        self.state = State::RolledBack;
        self.rollback_keys().await
    }

    async fn rollback_keys(&self) -> Result<()> {
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

/// The physical part (ms since the epoch) of a TSO timestamp.
fn physical_ms(ts: u64) -> u64 {
    ts >> 18
}
