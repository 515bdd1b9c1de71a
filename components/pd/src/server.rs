//! Starting and stopping a PD server.

use std::net::SocketAddr;
use std::sync::Arc;

use atoll_proto::keyspacepb::keyspace_server::KeyspaceServer;
use atoll_proto::pdpb::pd_server::PdServer as PdGrpc;
use tokio::sync::{oneshot, watch};

use crate::config::Config;
use crate::core::PdCore;
use crate::http::HttpApi;
use crate::member::Member;
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

/// A running PD member; dropping it does not stop it, call [`PdServer::stop`].
pub struct PdServer {
    pub member: Arc<Member>,
    pub addr: SocketAddr,
    pub status_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    conns: atoll_util::conn::Connections,
    task: Option<tokio::task::JoinHandle<()>>,
    status: atoll_util::status::StatusServer,
    schedule_task: tokio::task::JoinHandle<()>,
    /// The campaign over etcd (a PD group member only).
    campaign: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl PdServer {
    /// Opens storage (or joins the PD group over etcd), binds both ports
    /// and serves in the background.
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
        let (member, campaign) = if cfg.etcd.is_empty() {
            let core = PdCore::open(cfg.clone())?;
            crate::metrics::PD_IS_LEADER.set(1);
            (Member::single(&cfg, core), None)
        } else {
            let endpoints = cfg.etcd.clone();
            let root = cfg.etcd_root.clone();
            let etcd =
                tokio::task::spawn_blocking(move || crate::etcd::Etcd::connect(&endpoints, &root))
                    .await
                    .map_err(|e| ServerError::Config(e.to_string()))??;
            let member = Member::in_group(&cfg);
            let (stop_tx, stop_rx) = watch::channel(false);
            let task = tokio::spawn(crate::member::campaign(
                member.clone(),
                cfg.clone(),
                Arc::new(etcd),
                stop_rx,
            ));
            (member, Some((stop_tx, task)))
        };
        let tls = cfg.security.acceptor().map_err(|e| ServerError::Config(e.to_string()))?;
        let status_member = member.clone();
        let status_server = atoll_util::status::serve(
            status,
            Arc::new(move || status_member.status_json()),
            tls.clone(),
        )
        .await
        .map_err(|source| ServerError::Bind { addr: status.to_string(), source })?;
        let status_addr = status_server.addr;
        let (tx, rx) = oneshot::channel();
        let router = tonic::transport::Server::builder()
            .accept_http1(true)
            .add_service(PdGrpc::new(PdService { member: member.clone() }))
            .add_service(KeyspaceServer::new(KeyspaceService { member: member.clone() }))
            .add_service(HttpApi { member: member.clone() });
        let conns = atoll_util::conn::Connections::new();
        let incoming = conns.incoming_tls(listener, tls);
        let task = tokio::spawn(async move {
            if let Err(e) =
                router.serve_with_incoming_shutdown(incoming, async { drop(rx.await) }).await
            {
                tracing::error!("pd server: {e}");
            }
        });
        let sched_member = member.clone();
        let interval = cfg.schedule_interval.0;
        let schedule_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                let Ok(core) = sched_member.leader_core() else { continue };
                // Scheduling takes locks and allocates ids (disk): keep it off the reactor.
                let _ = tokio::task::spawn_blocking(move || core.run_schedulers()).await;
            }
        });
        tracing::info!(%addr, %status_addr, member = member.name(), "pd serving");
        Ok(PdServer {
            member,
            addr,
            status_addr,
            stop: Some(tx),
            conns,
            task: Some(task),
            status: status_server,
            schedule_task,
            campaign,
        })
    }

    /// The core while this member leads.
    pub fn core(&self) -> Option<Arc<PdCore>> {
        self.member.leader_core().ok()
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
        // A group member hands the leadership over (revoking its lease).
        if let Some((stop, task)) = self.campaign.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let Some(core) = self.member.resign() else { return };
        if let Err(e) = core.sync() {
            tracing::warn!("pd sync on stop: {e}");
        }
        // Connection tasks and a scheduling round on the blocking pool hold
        // the core (and so the storage lock) a little longer: a PD started on
        // the same directory right after `stop` returns must find it free.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while Arc::strong_count(&core) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if Arc::strong_count(&core) > 1 {
            tracing::warn!(
                "pd stopped with its storage still in use by {} tasks",
                Arc::strong_count(&core) - 1
            );
        }
    }
}

/// Runs PD until Ctrl-C / SIGTERM.
pub async fn run(cfg: Config) -> Result<(), ServerError> {
    let server = PdServer::start(cfg).await?;
    println!(
        "atoll-pd {} listening on {} (status {})",
        server.member.name(),
        server.addr,
        server.status_addr
    );
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
