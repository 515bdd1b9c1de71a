//! Assembling a store process: engine, PD, bootstrap, raftstore, transport,
//! gRPC services and the status server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use atoll_engine_rocks::{RocksConfig, RocksEngine};
use atoll_pd_client::PdClient;
use atoll_proto::atollpb::deadlock_detector_server::DeadlockDetectorServer;
use atoll_proto::atollpb::raft_transport_server::RaftTransportServer;
use atoll_proto::metapb;
use atoll_proto::tikvpb::tikv_server::TikvServer;
use atoll_raftstore::RaftSystem;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::kv::KvService;
use crate::lock_manager::service::DetectorService;
use crate::lock_manager::LockManager;
use crate::pd_worker::PdWorker;
use crate::raft_service::RaftService;
use crate::storage::RawStorage;
use crate::transport::{Limits, ServerTransport};
use crate::txn::{TsoSource, TxnStorage};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("engine: {0}")]
    Engine(#[from] atoll_engine_traits::Error),
    #[error("raftstore: {0}")]
    Store(#[from] atoll_raftstore::Error),
    #[error("pd: {0}")]
    Pd(#[from] atoll_pd_client::PdError),
    #[error("{0}")]
    Node(#[from] crate::node::NodeError),
}

/// How long a starting store waits for PD.
const PD_CONNECT_WAIT: Duration = Duration::from_secs(60);

pub struct Server {
    pub store_id: u64,
    pub addr: SocketAddr,
    pub status_addr: SocketAddr,
    raft: Arc<Mutex<RaftSystem<RocksEngine>>>,
    transport: ServerTransport,
    stop: Option<oneshot::Sender<()>>,
    grpc: Option<tokio::task::JoinHandle<()>>,
    conns: atoll_util::conn::Connections,
    status: atoll_util::status::StatusServer,
    pd_task: tokio::task::JoinHandle<()>,
    /// The GC worker and the max_ts limit updater.
    txn_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What [`Server::start`] has after joining the cluster.
struct Joined {
    pd: Arc<PdClient>,
    store_id: u64,
    api_version: atoll_codec::api::ApiVersion,
}

type StatusHandle = Arc<Mutex<Option<atoll_raftstore::StoreHandle<RocksEngine>>>>;

impl Server {
    /// Starts a store in named steps: engine, cluster membership, status
    /// server, raftstore (with its transport and PD worker), gRPC.
    pub async fn start(cfg: Config) -> Result<Server, ServerError> {
        cfg.validate().map_err(ServerError::Config)?;
        let started_at = atoll_util::time::unix_secs();
        let engine = open_engine(&cfg)?;
        let listener = tokio::net::TcpListener::bind(&cfg.server.addr).await?;
        let addr = listener.local_addr()?;
        let advertise = if cfg.server.advertise_addr.is_empty() {
            addr.to_string()
        } else {
            cfg.advertise_addr()
        };
        let tls = cfg.security.acceptor().map_err(|e| ServerError::Config(e.to_string()))?;
        let joined = connect_pd(&cfg, &engine).await?;
        let store_handle: StatusHandle = Arc::new(Mutex::new(None));
        let status =
            start_status(&cfg, &joined, &advertise, store_handle.clone(), tls.clone()).await?;
        let status_addr = status.addr;
        join_cluster(&cfg, &joined, &engine, &advertise, status_addr, started_at).await?;
        let raft = start_raft(&cfg, &joined, engine.clone(), started_at)?;
        *store_handle.lock() = Some(raft.system.handle());
        let grpc = start_grpc(&cfg, &joined, &raft, engine, listener, tls);
        let store_id = joined.store_id;
        tracing::info!(store_id, %addr, %status_addr, "store serving");
        Ok(Server {
            store_id,
            addr,
            status_addr,
            raft: Arc::new(Mutex::new(raft.system)),
            transport: raft.transport,
            stop: Some(grpc.stop),
            grpc: Some(grpc.task),
            conns: grpc.conns,
            status,
            pd_task: raft.pd_task,
            txn_tasks: grpc.txn_tasks,
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(mut g) = self.grpc.take() {
            // Graceful shutdown waits for clients to hang up: close the
            // connections still open after a while.
            if tokio::time::timeout(Duration::from_secs(2), &mut g).await.is_err() {
                self.conns.close();
                let _ = g.await;
            }
        }
        self.transport.close();
        let raft = self.raft.clone();
        let _ = tokio::task::spawn_blocking(move || raft.lock().shutdown()).await;
        for t in self.txn_tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
        self.pd_task.abort();
        let _ = self.pd_task.await;
        self.status.stop().await;
    }
}

fn open_engine(cfg: &Config) -> Result<RocksEngine, ServerError> {
    let data_dir = cfg.storage.data_dir.join("db");
    std::fs::create_dir_all(&data_dir)?;
    Ok(RocksEngine::open(&data_dir, &RocksConfig::default())?)
}

/// Connects to the PD leader and learns (or gets) this store's id, after
/// checking the cluster's API version against ours.
async fn connect_pd(cfg: &Config, engine: &RocksEngine) -> Result<Joined, ServerError> {
    let client_tls = cfg.security.client_tls().map_err(|e| ServerError::Config(e.to_string()))?;
    let pd =
        Arc::new(PdClient::connect_with_tls(&cfg.pd.endpoints, PD_CONNECT_WAIT, client_tls).await?);
    let api_version = cfg.storage.api_version();
    crate::node::check_cluster_api_version(&pd, api_version).await?;
    let store_id = crate::node::store_id(&pd, engine, api_version).await?;
    Ok(Joined { pd, store_id, api_version })
}

async fn start_status(
    cfg: &Config,
    joined: &Joined,
    advertise: &str,
    store: StatusHandle,
    tls: Option<atoll_util::tls::TlsAcceptor>,
) -> Result<atoll_util::status::StatusServer, ServerError> {
    let addr = cfg
        .server
        .status_addr
        .parse()
        .map_err(|e| ServerError::Config(format!("status-addr: {e}")))?;
    let (store_id, advertise) = (joined.store_id, advertise.to_owned());
    let doc = Arc::new(move || {
        let h = store.lock();
        serde_json::json!({
            "role": "store",
            "store_id": store_id,
            "regions": h.as_ref().map(|h| h.region_count()),
            "address": advertise,
        })
    });
    Ok(atoll_util::status::serve(addr, doc, tls).await?)
}

/// Registers this store with PD (address, labels, start time) and
/// bootstraps the cluster if nobody has.
async fn join_cluster(
    cfg: &Config,
    joined: &Joined,
    engine: &RocksEngine,
    advertise: &str,
    status_addr: SocketAddr,
    started_at: u64,
) -> Result<(), ServerError> {
    let me = metapb::Store {
        id: joined.store_id,
        address: advertise.to_owned(),
        peer_address: advertise.to_owned(),
        status_address: cfg.advertise_status_addr(status_addr),
        version: env!("CARGO_PKG_VERSION").into(),
        start_timestamp: started_at as i64,
        labels: cfg
            .server
            .labels
            .iter()
            .map(|(k, v)| metapb::StoreLabel { key: k.clone(), value: v.clone() })
            .collect(),
        ..Default::default()
    };
    let (pd, api_version) = (&joined.pd, joined.api_version);
    crate::node::register(pd, me.clone()).await?;
    crate::node::bootstrap(pd, engine, &me, api_version).await?;
    // Another store may have bootstrapped the cluster with its own version meanwhile.
    crate::node::check_cluster_api_version(pd, api_version).await?;
    Ok(())
}

struct Raft {
    system: RaftSystem<RocksEngine>,
    transport: ServerTransport,
    pd_task: tokio::task::JoinHandle<()>,
}

/// Raftstore, its transport to the other stores and its PD worker.
fn start_raft(
    cfg: &Config,
    joined: &Joined,
    engine: RocksEngine,
    started_at: u64,
) -> Result<Raft, ServerError> {
    let snap_mgr = atoll_raftstore::snap::SnapManager::new(cfg.storage.data_dir.join("snap"))?;
    let mut system = RaftSystem::new(joined.store_id, cfg.raftstore.clone(), engine, snap_mgr)?;
    let transport = ServerTransport::new(
        joined.store_id,
        joined.pd.clone(),
        tokio::runtime::Handle::current(),
        Limits {
            queue_max: cfg.server.raft_msg_queue_max,
            batch_max: cfg.server.raft_msg_batch_max,
            batch_bytes_max: cfg.server.raft_msg_batch_bytes_max.0 as usize,
            grpc_max_message_size: cfg.server.grpc_max_message_size.0 as usize,
            keepalive_interval: cfg.raftstore.base_tick()
                * cfg.raftstore.raft_heartbeat_ticks as u32,
        },
    );
    let (pd_sender, pd_rx) = crate::pd_worker::channel();
    let worker = PdWorker::new(joined.pd.clone(), system.handle(), started_at as u32);
    let pd_task = tokio::spawn(worker.run(pd_rx));
    system.start(transport.clone(), pd_sender)?;
    Ok(Raft { system, transport, pd_task })
}

struct Grpc {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    conns: atoll_util::conn::Connections,
    txn_tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The client-facing KV service (raw and transactional, with its GC
/// worker and max_ts limit updater), the raft service for other stores and
/// the deadlock detector, on `listener`.
fn start_grpc(
    cfg: &Config,
    joined: &Joined,
    raft: &Raft,
    engine: RocksEngine,
    listener: tokio::net::TcpListener,
    tls: Option<atoll_util::tls::TlsAcceptor>,
) -> Grpc {
    let handle = raft.system.handle();
    let max_msg = cfg.server.grpc_max_message_size.0 as usize;
    let tso_pd = joined.pd.clone();
    let tso: TsoSource = Arc::new(move || {
        let pd = tso_pd.clone();
        Box::pin(async move { pd.get_ts().await.map_err(|e| e.to_string()) })
    });
    let locks = LockManager::new(&cfg.pessimistic_txn, joined.pd.clone(), joined.store_id);
    let txn = Arc::new(TxnStorage::new(
        handle.clone(),
        engine,
        &cfg.server,
        joined.api_version,
        tso,
        locks.clone(),
    ));
    let gc_task = tokio::spawn(crate::gc_worker::run(
        joined.pd.clone(),
        handle.clone(),
        txn.clone(),
        cfg.server.gc_interval.0,
    ));
    let txn_tasks = vec![gc_task, tokio::spawn(crate::txn::run_limit_updater(txn.clone()))];
    let kv = TikvServer::new(KvService {
        storage: RawStorage::new(handle.clone(), &cfg.server, joined.api_version),
        txn,
    })
    .max_decoding_message_size(max_msg)
    .max_encoding_message_size(max_msg);
    let raft_svc = RaftTransportServer::new(RaftService { store: handle })
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
    let detector = DeadlockDetectorServer::new(DetectorService { locks });
    let (stop, rx) = oneshot::channel();
    let conns = atoll_util::conn::Connections::new();
    let incoming = conns.incoming_tls(listener, tls);
    let task = tokio::spawn(async move {
        let res = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(kv)
            .add_service(raft_svc)
            .add_service(detector)
            .serve_with_incoming_shutdown(incoming, async { drop(rx.await) })
            .await;
        if let Err(e) = res {
            tracing::error!("grpc server: {e}");
        }
    });
    Grpc { stop, task, conns, txn_tasks }
}

/// Runs a store until Ctrl-C / SIGTERM.
pub async fn run(cfg: Config) -> Result<(), ServerError> {
    let server = Server::start(cfg).await?;
    println!(
        "atoll-server store {} listening on {} (status {})",
        server.store_id, server.addr, server.status_addr
    );
    shutdown_signal().await;
    tracing::info!("store stopping");
    server.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
