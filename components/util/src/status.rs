//! The status HTTP server every process runs: `GET /metrics` (Prometheus
//! text format from the default registry) and `GET /status` (JSON).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::{make_service_fn, service_fn};
use hyper::{Body, Method, Request, Response, StatusCode};
use prometheus::{Encoder, TextEncoder};

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

/// Binds `addr` and serves until the returned task is aborted or the runtime stops.
/// Returns the bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, status: StatusFn) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
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
    let server = hyper::Server::from_tcp(listener).map_err(std::io::Error::other)?.serve(make);
    let handle = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!("status server: {e}");
        }
    });
    Ok((local, handle))
}
