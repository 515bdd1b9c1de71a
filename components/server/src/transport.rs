//! Store-to-store raft transport: one gRPC client stream per target store.
//! `send` pushes into that store's bounded queue; `flush` (once per poll
//! round) wakes its sender task, which drains the queue into batches.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_pd_client::PdClient;
use atoll_proto::atollpb::{
    raft_transport_client::RaftTransportClient, BatchRaftMessage, RaftMessage, SnapshotChunk,
};
use atoll_raftstore::snap::SNAP_CHUNK_SIZE;
use atoll_raftstore::TransportError;
use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use dashmap::DashMap;
use prost::Message as _;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, Notify};

use crate::metrics::{
    TRANSPORT_BATCH_SIZE, TRANSPORT_CONNECT_FAILURES, TRANSPORT_FLUSHES, TRANSPORT_RECONNECTS,
};

/// Batches in flight on one stream before the sender waits.
const STREAM_BATCHES_MAX: usize = 8;

/// Snapshots being sent at once by one store; more wait their turn.
pub const SNAP_SEND_CONCURRENCY_MAX: usize = 4;
/// A snapshot stream that takes longer than this is abandoned (raft retries).
const SNAP_SEND_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub queue_max: usize,
    pub batch_max: usize,
    pub batch_bytes_max: usize,
    pub grpc_max_message_size: usize,
    /// An idle stream sends an empty batch this often, so the target knows
    /// this store is alive (hibernated followers rely on it).
    pub keepalive_interval: Duration,
}

struct Conn {
    tx: Sender<RaftMessage>,
    notify: Arc<Notify>,
    /// Set while the last connection attempt failed: sends fail fast so raft
    /// learns the peer is unreachable instead of filling the queue.
    down: Arc<AtomicBool>,
}

struct Inner {
    store_id: u64,
    conns: DashMap<u64, Conn>,
    pd: Arc<PdClient>,
    rt: tokio::runtime::Handle,
    limits: Limits,
    closed: AtomicBool,
    snap_slots: Arc<tokio::sync::Semaphore>,
}

/// Cloned into every raft poller; each clone tracks the stores it touched
/// this round so `flush` wakes only those.
#[derive(Clone)]
pub struct ServerTransport {
    inner: Arc<Inner>,
    touched: HashSet<u64>,
}

impl ServerTransport {
    pub fn new(
        store_id: u64,
        pd: Arc<PdClient>,
        rt: tokio::runtime::Handle,
        limits: Limits,
    ) -> Self {
        ServerTransport {
            inner: Arc::new(Inner {
                store_id,
                conns: DashMap::new(),
                pd,
                rt,
                limits,
                closed: AtomicBool::new(false),
                snap_slots: Arc::new(tokio::sync::Semaphore::new(SNAP_SEND_CONCURRENCY_MAX)),
            }),
            touched: HashSet::new(),
        }
    }

    /// Stops every sender task.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for c in self.inner.conns.iter() {
            c.notify.notify_one();
        }
    }

    fn queue(&self, store_id: u64) -> dashmap::mapref::one::Ref<'_, u64, Conn> {
        if let Some(c) = self.inner.conns.get(&store_id) {
            return c;
        }
        self.inner.conns.entry(store_id).or_insert_with(|| {
            let (tx, rx) = channel::bounded(self.inner.limits.queue_max);
            let notify = Arc::new(Notify::new());
            let down = Arc::new(AtomicBool::new(false));
            let inner = self.inner.clone();
            let (n, d) = (notify.clone(), down.clone());
            self.inner.rt.spawn(async move { run_sender(inner, store_id, rx, n, d).await });
            Conn { tx, notify, down }
        });
        self.inner.conns.get(&store_id).expect("just inserted")
    }
}

impl atoll_raftstore::Transport for ServerTransport {
    fn send(&mut self, msg: RaftMessage) -> Result<(), TransportError> {
        let store_id = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or_default();
        if store_id == 0 {
            return Err(TransportError::NoTarget);
        }
        let conn = self.queue(store_id);
        if conn.down.load(Ordering::Relaxed) {
            return Err(TransportError::Unreachable(store_id));
        }
        let res = conn.tx.try_send(msg);
        drop(conn);
        match res {
            Ok(()) => {
                self.touched.insert(store_id);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(TransportError::Full(store_id)),
            Err(TrySendError::Disconnected(_)) => Err(TransportError::Stopped(store_id)),
        }
    }

    fn send_snapshot(
        &mut self,
        msg: RaftMessage,
        path: PathBuf,
        done: Box<dyn FnOnce(bool) + Send>,
    ) {
        let inner = self.inner.clone();
        self.inner.rt.spawn(async move {
            let store_id = msg.to_peer.as_ref().map(|p| p.store_id).unwrap_or_default();
            let res = match inner.snap_slots.clone().acquire_owned().await {
                Ok(_permit) => match tokio::time::timeout(
                    SNAP_SEND_TIMEOUT,
                    send_snapshot(&inner, store_id, msg, &path),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err("timed out".into()),
                },
                Err(_) => Err("transport closed".into()),
            };
            if let Err(e) = &res {
                tracing::warn!(store_id, "send snapshot {}: {e}", path.display());
            }
            done(res.is_ok());
        });
    }

    fn flush(&mut self) {
        if self.touched.is_empty() {
            return;
        }
        TRANSPORT_FLUSHES.inc();
        for id in self.touched.drain() {
            if let Some(c) = self.inner.conns.get(&id) {
                c.notify.notify_one();
            }
        }
    }
}

/// Takes queued messages up to the batch limits.
fn drain(rx: &Receiver<RaftMessage>, limits: &Limits) -> Vec<RaftMessage> {
    let mut out = vec![];
    let mut bytes = 0;
    while out.len() < limits.batch_max && bytes < limits.batch_bytes_max {
        match rx.try_recv() {
            Ok(m) => {
                bytes += m.encoded_len();
                out.push(m);
            }
            Err(_) => break,
        }
    }
    out
}

async fn resolve(inner: &Inner, store_id: u64) -> Result<String, String> {
    let s = inner.pd.get_store(store_id).await.map_err(|e| e.to_string())?;
    if s.address.is_empty() {
        return Err(format!("store {store_id} has no address"));
    }
    Ok(s.address)
}

/// Streams one snapshot file on its own gRPC stream: chunks of
/// `SNAP_CHUNK_SIZE`, the raft message in the first; the target delivers the
/// message only after the whole file arrived.
async fn send_snapshot(
    inner: &Inner,
    store_id: u64,
    msg: RaftMessage,
    path: &std::path::Path,
) -> Result<(), String> {
    let addr = resolve(inner, store_id).await?;
    // Stores speak to each other as they speak to PD: over TLS if configured.
    let ch = atoll_util::tls::endpoint(&addr, inner.pd.tls())?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut client = RaftTransportClient::new(ch)
        .max_encoding_message_size(inner.limits.grpc_max_message_size)
        .max_decoding_message_size(inner.limits.grpc_max_message_size);
    let mut file =
        tokio::fs::File::open(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
    let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
    let reader = async move {
        let mut first = Some(msg);
        loop {
            let mut buf = vec![0u8; SNAP_CHUNK_SIZE];
            let mut n = 0;
            while n < buf.len() {
                let r = file.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
                if r == 0 {
                    break;
                }
                n += r;
            }
            buf.truncate(n);
            let last = n < SNAP_CHUNK_SIZE;
            if tx.send(SnapshotChunk { message: first.take(), data: buf }).await.is_err() {
                return Err("snapshot stream closed".to_string());
            }
            if last {
                return Ok(());
            }
        }
    };
    let call = client.snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
    let (read, sent) = tokio::join!(reader, call);
    read?;
    sent.map_err(|e| e.to_string())?;
    Ok(())
}

/// Failed attempts to reach a store, counted by class; a new class is
/// logged as a warning, a repeat only at debug level (a dead store fails
/// every ~2 s for as long as it is dead).
struct FailureLog {
    store_id: u64,
    last: Option<&'static str>,
}

impl FailureLog {
    fn record(&mut self, class: &'static str, attempt: u32, detail: String) {
        TRANSPORT_CONNECT_FAILURES.with_label_values(&[class]).inc();
        let store_id = self.store_id;
        if self.last != Some(class) {
            tracing::warn!(
                store_id,
                attempt,
                "raft stream {class}: {detail}; retrying with backoff"
            );
        } else {
            tracing::debug!(store_id, attempt, "raft stream {class}: {detail}");
        }
        self.last = Some(class);
    }
}

async fn run_sender(
    inner: Arc<Inner>,
    store_id: u64,
    rx: Receiver<RaftMessage>,
    notify: Arc<Notify>,
    down: Arc<AtomicBool>,
) {
    let mut attempt: u32 = 0;
    let mut failures = FailureLog { store_id, last: None };
    while !inner.closed.load(Ordering::SeqCst) {
        if attempt > 0 {
            down.store(true, Ordering::Relaxed);
            let pause = Duration::from_millis((100u64 << attempt.min(4)).min(2000));
            tokio::time::sleep(pause).await;
            // Messages queued while disconnected are stale by now; raft resends.
            while rx.try_recv().is_ok() {}
        }
        attempt += 1;
        let addr = match resolve(&inner, store_id).await {
            Ok(a) => a,
            Err(e) => {
                failures.record("resolve_failed", attempt, e.to_string());
                continue;
            }
        };
        let ch = match atoll_util::tls::endpoint(&addr, inner.pd.tls()) {
            Ok(ep) => ep.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true).connect().await,
            Err(e) => {
                failures.record("bad_address", attempt, format!("{addr}: {e}"));
                continue;
            }
        };
        let ch = match ch {
            Ok(c) => c,
            Err(e) => {
                failures.record("connect_failed", attempt, format!("{addr}: {e}"));
                continue;
            }
        };
        TRANSPORT_RECONNECTS.inc();
        failures.last = None;
        down.store(false, Ordering::Relaxed);
        let mut client = RaftTransportClient::new(ch)
            .max_encoding_message_size(inner.limits.grpc_max_message_size)
            .max_decoding_message_size(inner.limits.grpc_max_message_size);
        let (stx, srx) = mpsc::channel::<BatchRaftMessage>(STREAM_BATCHES_MAX);
        let mut call =
            Box::pin(client.batch_raft(tokio_stream::wrappers::ReceiverStream::new(srx)));
        tracing::info!(store_id, %addr, "raft stream connected");
        let keepalive = inner.limits.keepalive_interval;
        let mut last_sent = Instant::now() - keepalive;
        loop {
            if inner.closed.load(Ordering::SeqCst) {
                return;
            }
            tokio::select! {
                r = &mut call => {
                    tracing::info!(store_id, "raft stream ended: {:?}", r.err());
                    attempt = 1;
                    break;
                }
                _ = notify.notified() => {}
                _ = tokio::time::sleep(keepalive.min(Duration::from_millis(100))) => {}
            }
            loop {
                let batch = drain(&rx, &inner.limits);
                if batch.is_empty() {
                    break;
                }
                TRANSPORT_BATCH_SIZE.observe(batch.len() as f64);
                if stx
                    .send(BatchRaftMessage { msgs: batch, from_store_id: inner.store_id })
                    .await
                    .is_err()
                {
                    break;
                }
                last_sent = Instant::now();
            }
            if last_sent.elapsed() >= keepalive {
                // Proof of life for hibernated followers on the target.
                if stx
                    .send(BatchRaftMessage { msgs: vec![], from_store_id: inner.store_id })
                    .await
                    .is_err()
                {
                    continue;
                }
                last_sent = Instant::now();
            }
        }
    }
}
