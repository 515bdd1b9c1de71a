//! The status HTTP server every process runs: `GET /metrics` (Prometheus
//! text format from the default registry) and `GET /status` (JSON).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::{make_service_fn, service_fn};
use hyper::{Body, Method, Request, Response, StatusCode};
use prometheus::{Encoder, TextEncoder};

use crate::conn::Connections;

/// Produces the `/status` JSON document.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Renders every metric in the default registry.
pub fn render_metrics() -> String {
    let mut buf = vec![];
    let enc = TextEncoder::new();
    if let Err(e) = enc.encode(&prometheus::gather(), &mut buf) {
        tracing::warn!("encode metrics: {e}");
    }
    String::from_utf8(buf).unwrap_or_default()
}

fn respond(req: &Request<Body>, status: &StatusFn) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(Body::from(render_metrics()))
            .expect("static response"),
        (&Method::GET, "/status") => Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(status().to_string()))
            .expect("static response"),
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("not found; try /metrics or /status\n"))
            .expect("static response"),
    }
}

/// A running status server; [`StatusServer::stop`] closes its connections
/// too, so nothing it serves (the status closure) outlives it.
pub struct StatusServer {
    pub addr: SocketAddr,
    conns: Connections,
    task: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    pub async fn stop(self) {
        self.conns.close();
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Binds `addr` and serves until [`StatusServer::stop`] or the runtime stops.
/// `addr` may use port 0; the bound address is in the result.
pub async fn serve(
    addr: SocketAddr,
    status: StatusFn,
    tls: Option<crate::tls::TlsAcceptor>,
) -> std::io::Result<StatusServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let make = make_service_fn(move |_| {
        let status = status.clone();
        async move {
            Ok::<_, Infallible>(service_fn(move |req| {
                let status = status.clone();
                async move { Ok::<_, Infallible>(respond(&req, &status)) }
            }))
        }
    });
    let conns = Connections::new();
    let mut incoming = conns.incoming_tls(listener, tls);
    let accept = hyper::server::accept::poll_fn(move |cx| incoming.as_mut().poll_next(cx));
    let server = hyper::Server::builder(accept).serve(make);
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!("status server: {e}");
        }
    });
    Ok(StatusServer { addr: local, conns, task })
}
