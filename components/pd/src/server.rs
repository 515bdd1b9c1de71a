//! Starting and stopping a PD server.

use std::net::SocketAddr;
use std::sync::Arc;

use atoll_proto::keyspacepb::keyspace_server::KeyspaceServer;
use atoll_proto::pdpb::pd_server::PdServer as PdGrpc;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::core::PdCore;
use crate::http::HttpApi;
use crate::service::{KeyspaceService, PdService};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid config: {0}")]
    Config(String),
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    #[error("bind {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// A running PD; dropping it does not stop it, call [`PdServer::stop`].
pub struct PdServer {
    pub core: Arc<PdCore>,
    pub addr: SocketAddr,
    pub status_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    conns: atoll_util::conn::Connections,
    task: Option<tokio::task::JoinHandle<()>>,
    status: atoll_util::status::StatusServer,
    schedule_task: tokio::task::JoinHandle<()>,
}

impl PdServer {
    /// Opens storage, binds both ports and serves in the background.
    pub async fn start(cfg: Config) -> Result<PdServer, ServerError> {
        cfg.validate().map_err(ServerError::Config)?;
        let addr: SocketAddr =
            cfg.client_addr.parse().map_err(|e| ServerError::Config(format!("{e}")))?;
        let status: SocketAddr =
            cfg.status_addr.parse().map_err(|e| ServerError::Config(format!("{e}")))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr: cfg.client_addr.clone(), source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr: cfg.client_addr.clone(), source })?;
        let mut cfg = cfg;
        if cfg.advertise_client_addr.is_empty() {
            cfg.advertise_client_addr = addr.to_string();
        }
        let core = PdCore::open(cfg)?;
        let status_core = core.clone();
        let status_server =
            atoll_util::status::serve(status, Arc::new(move || status_core.status_json()))
                .await
                .map_err(|source| ServerError::Bind { addr: status.to_string(), source })?;
        let status_addr = status_server.addr;
        let (tx, rx) = oneshot::channel();
        let router = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_service(PdGrpc::new(PdService { core: core.clone() }))
            .add_service(KeyspaceServer::new(KeyspaceService { core: core.clone() }))
            .add_service(HttpApi { core: core.clone() });
        let conns = atoll_util::conn::Connections::new();
        let incoming = conns.incoming(listener);
        let task = tokio::spawn(async move {
            if let Err(e) =
                router.serve_with_incoming_shutdown(incoming, async { drop(rx.await) }).await
            {
                tracing::error!("pd server: {e}");
            }
        });
        let sched_core = core.clone();
        let schedule_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(sched_core.cfg().schedule_interval.0);
            loop {
                tick.tick().await;
                let c = sched_core.clone();
                // Scheduling takes locks and allocates ids (disk): keep it off the reactor.
                let _ = tokio::task::spawn_blocking(move || c.run_schedulers()).await;
            }
        });
        tracing::info!(%addr, %status_addr, cluster_id = core.cluster_id(), "pd serving");
        Ok(PdServer {
            core,
            addr,
            status_addr,
            stop: Some(tx),
            conns,
            task: Some(task),
            status: status_server,
            schedule_task,
        })
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(mut t) = self.task.take() {
            // Graceful shutdown waits for clients to hang up; don't wait
            // forever, and close connections still open after that.
            if tokio::time::timeout(std::time::Duration::from_secs(2), &mut t).await.is_err() {
                self.conns.close();
                let _ = t.await;
            }
        }
        self.status.stop().await;
        self.schedule_task.abort();
        let _ = self.schedule_task.await;
        if let Err(e) = self.core.sync() {
            tracing::warn!("pd sync on stop: {e}");
        }
        // Connection tasks and a scheduling round on the blocking pool hold
        // the core (and so the storage lock) a little longer: a PD started on
        // the same directory right after `stop` returns must find it free.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&self.core) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&self.core) > 1 {
            tracing::warn!(
                "pd stopped with its storage still in use by {} tasks",
                Arc::strong_count(&self.core) - 1
            );
        }
    }
}

/// Runs PD until Ctrl-C / SIGTERM.
pub async fn run(cfg: Config) -> Result<(), ServerError> {
    let server = PdServer::start(cfg).await?;
    println!("atoll-pd listening on {} (status {})", server.addr, server.status_addr);
    shutdown_signal().await;
    tracing::info!("pd stopping");
    server.stop().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
