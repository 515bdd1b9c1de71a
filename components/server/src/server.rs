//! Assembling a store process: engine, PD, bootstrap, raftstore, transport,
//! gRPC services and the status server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use atoll_engine_rocks::{RocksConfig, RocksEngine};
use atoll_pd_client::PdClient;
use atoll_proto::atollpb::raft_transport_server::RaftTransportServer;
use atoll_proto::metapb;
use atoll_proto::tikvpb::tikv_server::TikvServer;
use atoll_raftstore::RaftSystem;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::kv::KvService;
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
    gc_task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub async fn start(cfg: Config) -> Result<Server, ServerError> {
        cfg.validate().map_err(ServerError::Config)?;
        let data_dir = cfg.storage.data_dir.join("db");
        std::fs::create_dir_all(&data_dir)?;
        let engine = RocksEngine::open(&data_dir, &RocksConfig::default())?;

        let listener = tokio::net::TcpListener::bind(&cfg.server.addr).await?;
        let addr = listener.local_addr()?;
        let advertise = if cfg.server.advertise_addr.is_empty() {
            addr.to_string()
        } else {
            cfg.advertise_addr()
        };

        let tls = cfg.security.acceptor().map_err(|e| ServerError::Config(e.to_string()))?;
        let client_tls =
            cfg.security.client_tls().map_err(|e| ServerError::Config(e.to_string()))?;
        let pd = Arc::new(
            PdClient::connect_with_tls(&cfg.pd.endpoints, PD_CONNECT_WAIT, client_tls).await?,
        );
        let api_version = cfg.storage.api_version();
        crate::node::check_cluster_api_version(&pd, api_version).await?;
        let store_id = crate::node::store_id(&pd, &engine, api_version).await?;

        let status_holder: Arc<Mutex<Option<atoll_raftstore::StoreHandle<RocksEngine>>>> =
            Arc::new(Mutex::new(None));
        let sh = status_holder.clone();
        let status_advertise = advertise.clone();
        let status_server = atoll_util::status::serve(
            cfg.server
                .status_addr
                .parse()
                .map_err(|e| ServerError::Config(format!("status-addr: {e}")))?,
            Arc::new(move || {
                let h = sh.lock();
                serde_json::json!({
                    "role": "store",
                    "store_id": store_id,
                    "regions": h.as_ref().map(|h| h.region_count()),
                    "address": status_advertise,
                })
            }),
            tls.clone(),
        )
        .await?;
        let status_addr = status_server.addr;

        let me = metapb::Store {
            id: store_id,
            address: advertise.clone(),
            peer_address: advertise.clone(),
            status_address: cfg.advertise_status_addr(status_addr),
            version: env!("CARGO_PKG_VERSION").into(),
            start_timestamp: atoll_util::time::unix_secs() as i64,
            labels: cfg
                .server
                .labels
                .iter()
                .map(|(k, v)| metapb::StoreLabel { key: k.clone(), value: v.clone() })
                .collect(),
            ..Default::default()
        };
        crate::node::register(&pd, me.clone()).await?;
        crate::node::bootstrap(&pd, &engine, &me, api_version).await?;
        // Another store may have bootstrapped the cluster with its own version meanwhile.
        crate::node::check_cluster_api_version(&pd, api_version).await?;

        let snap_mgr = atoll_raftstore::snap::SnapManager::new(cfg.storage.data_dir.join("snap"))?;
        let mut raft = RaftSystem::new(store_id, cfg.raftstore.clone(), engine.clone(), snap_mgr)?;
        let handle = raft.handle();
        *status_holder.lock() = Some(handle.clone());
        let transport = ServerTransport::new(
            store_id,
            pd.clone(),
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
        let pd_task = tokio::spawn(crate::pd_worker::run(pd.clone(), handle.clone(), pd_rx));
        raft.start(transport.clone(), pd_sender)?;

        let max_msg = cfg.server.grpc_max_message_size.0 as usize;
        let tso_pd = pd.clone();
        let tso: TsoSource = Arc::new(move || {
            let pd = tso_pd.clone();
            Box::pin(async move { pd.get_ts().await.map_err(|e| e.to_string()) })
        });
        let txn = Arc::new(TxnStorage::new(
            handle.clone(),
            engine.clone(),
            &cfg.server,
            api_version,
            tso,
        ));
        let gc_task = tokio::spawn(crate::gc_worker::run(
            pd.clone(),
            handle.clone(),
            txn.clone(),
            cfg.server.gc_interval.0,
        ));
        let kv = TikvServer::new(KvService {
            storage: RawStorage::new(handle.clone(), &cfg.server, api_version),
            txn,
        })
        .max_decoding_message_size(max_msg)
        .max_encoding_message_size(max_msg);
        let raft_svc = RaftTransportServer::new(RaftService { store: handle.clone() })
            .max_decoding_message_size(max_msg)
            .max_encoding_message_size(max_msg);
        let (tx, rx) = oneshot::channel();
        let conns = atoll_util::conn::Connections::new();
        let incoming = conns.incoming_tls(listener, tls);
        let grpc = tokio::spawn(async move {
            let res = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(kv)
                .add_service(raft_svc)
                .serve_with_incoming_shutdown(incoming, async { drop(rx.await) })
                .await;
            if let Err(e) = res {
                tracing::error!("grpc server: {e}");
            }
        });
        tracing::info!(store_id, %addr, %status_addr, "store serving");
        Ok(Server {
            store_id,
            addr,
            status_addr,
            raft: Arc::new(Mutex::new(raft)),
            transport,
            stop: Some(tx),
            grpc: Some(grpc),
            conns,
            status: status_server,
            pd_task,
            gc_task,
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
        self.gc_task.abort();
        let _ = (&mut self.gc_task).await;
        self.pd_task.abort();
        let _ = self.pd_task.await;
        self.status.stop().await;
    }
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
