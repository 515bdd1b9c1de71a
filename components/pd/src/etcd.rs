//! PD's state in etcd, for several PD members (`atoll-pd --etcd`).
//!
//! [`Etcd`] is one etcd client whose connection lives on a runtime thread
//! of its own, so PD's synchronous code (the core's storage calls) can
//! wait for an answer from any thread, inside an async task or not,
//! without starving the runtime that serves gRPC.
//!
//! [`EtcdKv`] is the [`MetaKv`] of a leader: every write is an etcd
//! transaction that only succeeds while the leader key still holds this
//! member's campaign value, so a deposed leader can never overwrite what
//! its successor wrote.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};

use crate::storage::{MetaKv, Result, StorageError};

/// How long one etcd request may take on one endpoint.
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one etcd call (with its tries on other endpoints) may take.
pub const ETCD_CALL_TIMEOUT: Duration = Duration::from_secs(6);

/// An etcd client that fails over between the cluster's endpoints, usable
/// from synchronous code too.
///
/// One client per endpoint: etcd-client's own balancing keeps sending a
/// share of the requests to a dead member, which would fail PD's calls
/// while two of three etcd members are fine. Calls go to the current
/// endpoint and move on to the next one when it cannot be reached.
pub struct Etcd {
    clients: Vec<Client>,
    endpoints: Vec<String>,
    current: AtomicUsize,
    rt: tokio::runtime::Handle,
    /// Ends the runtime thread when dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
    /// Every key PD writes starts with this (e.g. `/atoll/`).
    root: Vec<u8>,
}

fn etcd_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Etcd(e.to_string())
}

/// An error of the endpoint (unreachable, timed out, no leader), not of
/// the request: worth trying another member.
fn endpoint_failed(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) | E::LeaseKeepAliveError(_) => true,
        E::GRpcStatus(s) => matches!(
            s.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown
        ),
        _ => false,
    }
}

impl Etcd {
    /// Connects to `endpoints` (`host:port` or URLs); keys live under `root`.
    pub fn connect(endpoints: &[String], root: &str) -> Result<Etcd> {
        if endpoints.is_empty() {
            return Err(StorageError::Etcd("no etcd endpoints".into()));
        }
        let (handle_tx, handle_rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("pd-etcd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })
            .map_err(etcd_err)?;
        let rt = handle_rx.recv().map_err(etcd_err)?.map_err(StorageError::Etcd)?;
        let mut clients = vec![];
        for ep in endpoints {
            let eps = vec![ep.clone()];
            let opts = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(1))
                .with_timeout(ETCD_REQUEST_TIMEOUT)
                .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
            // Connecting is lazy: an endpoint that is down now is tried later.
            clients.push(wait_on(&rt, async move { Client::connect(eps, Some(opts)).await })?);
        }
        let mut root = root.trim_end_matches('/').as_bytes().to_vec();
        root.push(b'/');
        Ok(Etcd {
            clients,
            endpoints: endpoints.to_vec(),
            current: AtomicUsize::new(0),
            rt,
            _stop: stop_tx,
            root,
        })
    }

    /// The client of the endpoint in use (cheap to clone; its connection
    /// lives on this `Etcd`'s runtime).
    pub fn client(&self) -> Client {
        self.clients[self.current.load(Ordering::Relaxed) % self.clients.len()].clone()
    }

    /// Moves on to the next endpoint (the current one failed).
    pub fn fail_over(&self, failed: &etcd_client::Error) {
        let n = self.clients.len();
        let i = self.current.fetch_add(1, Ordering::Relaxed) % n;
        tracing::info!(
            "etcd {} failed ({failed}); trying {}",
            self.endpoints[i],
            self.endpoints[(i + 1) % n]
        );
    }

    /// `key` under this PD's root.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.root.clone();
        k.extend_from_slice(key);
        k
    }

    /// Runs `f` against the current endpoint, moving on to the next ones
    /// while endpoints fail (each endpoint twice at most).
    pub async fn run<T, F, Fut>(&self, f: F) -> std::result::Result<T, etcd_client::Error>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut tries = 2 * self.clients.len();
        loop {
            match f(self.client()).await {
                Err(e) if endpoint_failed(&e) && tries > 1 => {
                    tries -= 1;
                    self.fail_over(&e);
                }
                r => return r,
            }
        }
    }

    /// [`Etcd::run`] on the etcd runtime, waited for here (sync callers).
    pub fn call<T, F, Fut>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
    {
        let this = self.clone();
        wait_on(&self.rt, async move { this.run(f).await })
    }
}

/// Runs `fut` on `rt` and blocks this thread until it ends or
/// [`ETCD_CALL_TIMEOUT`] passes.
fn wait_on<T, F>(rt: &tokio::runtime::Handle, fut: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
{
    let (tx, rx) = std_mpsc::sync_channel(1);
    rt.spawn(async move {
        let r = tokio::time::timeout(ETCD_CALL_TIMEOUT, fut).await;
        let _ = tx.send(r);
    });
    match rx.recv_timeout(ETCD_CALL_TIMEOUT + Duration::from_secs(1)) {
        Ok(Ok(r)) => r.map_err(etcd_err),
        Ok(Err(_)) | Err(std_mpsc::RecvTimeoutError::Timeout) => {
            Err(StorageError::Etcd(format!("no answer within {ETCD_CALL_TIMEOUT:?}")))
        }
        Err(std_mpsc::RecvTimeoutError::Disconnected) => {
            Err(StorageError::Etcd("etcd client runtime stopped".into()))
        }
    }
}

/// The state of a PD leader in etcd; writes succeed only while `leader_key`
/// holds `campaign` (this member's value for its term).
pub struct EtcdKv {
    etcd: Arc<Etcd>,
    leader_key: Vec<u8>,
    campaign: Vec<u8>,
}

impl EtcdKv {
    pub fn new(etcd: Arc<Etcd>, leader_key: Vec<u8>, campaign: Vec<u8>) -> Self {
        EtcdKv { etcd, leader_key, campaign }
    }

    fn guarded(&self, op: TxnOp) -> Result<()> {
        let txn = Txn::new()
            .when([Compare::value(
                self.leader_key.clone(),
                CompareOp::Equal,
                self.campaign.clone(),
            )])
            .and_then([op]);
        let ok = self
            .etcd
            .call(move |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })?
            .succeeded();
        if ok {
            Ok(())
        } else {
            Err(StorageError::NotLeader)
        }
    }
}

impl MetaKv for EtcdKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let key = self.etcd.key(key);
        let resp = self.etcd.call(move |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    fn put(&self, key: &[u8], value: &[u8], _sync: bool) -> Result<()> {
        self.guarded(TxnOp::put(self.etcd.key(key), value.to_vec(), None))
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.guarded(TxnOp::delete(self.etcd.key(key), None))
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let full = self.etcd.key(prefix);
        let root_len = self.etcd.root.len();
        let resp = self.etcd.call(move |mut c| {
            let full = full.clone();
            async move { c.get(full, Some(GetOptions::new().with_prefix())).await }
        })?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| (kv.key()[root_len..].to_vec(), kv.value().to_vec()))
            .collect())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
