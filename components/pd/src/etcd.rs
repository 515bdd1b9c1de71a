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
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};

use crate::storage::{MetaKv, Result, StorageError};

/// How long one etcd call may take before PD gives up on it.
pub const ETCD_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// An etcd client usable from synchronous code.
pub struct Etcd {
    client: Client,
    rt: tokio::runtime::Handle,
    /// Ends the runtime thread when dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
    /// Every key PD writes starts with this (e.g. `/atoll/`).
    root: Vec<u8>,
}

fn etcd_err(e: impl std::fmt::Display) -> StorageError {
    StorageError::Etcd(e.to_string())
}

impl Etcd {
    /// Connects to `endpoints` (`host:port` or URLs); keys live under `root`.
    pub fn connect(endpoints: &[String], root: &str) -> Result<Etcd> {
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
        let eps = endpoints.to_vec();
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(ETCD_CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let client = wait_on(&rt, async move { Client::connect(eps, Some(opts)).await })?;
        let mut root = root.trim_end_matches('/').as_bytes().to_vec();
        root.push(b'/');
        Ok(Etcd { client, rt, _stop: stop_tx, root })
    }

    /// A client for async callers (cheap to clone; its connection lives on
    /// this `Etcd`'s runtime).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// `key` under this PD's root.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = self.root.clone();
        k.extend_from_slice(key);
        k
    }

    /// Runs `f` on the etcd runtime and waits for it here.
    pub fn call<T, F>(&self, f: impl FnOnce(Client) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = std::result::Result<T, etcd_client::Error>> + Send + 'static,
    {
        wait_on(&self.rt, f(self.client.clone()))
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
    etcd: std::sync::Arc<Etcd>,
    leader_key: Vec<u8>,
    campaign: Vec<u8>,
}

impl EtcdKv {
    pub fn new(etcd: std::sync::Arc<Etcd>, leader_key: Vec<u8>, campaign: Vec<u8>) -> Self {
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
        let ok = self.etcd.call(|mut c| async move { c.txn(txn).await })?.succeeded();
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
        let resp = self.etcd.call(|mut c| async move { c.get(key, None).await })?;
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
        let resp = self.etcd.call(|mut c| async move {
            c.get(full, Some(GetOptions::new().with_prefix())).await
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
