//! The small HTTP API served on the PD client port next to gRPC, under
//! `/pd/api/v1/` (tonic routes a path prefix to a named service).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{http, Body as _, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::transport::Body;

use crate::service::PdCore;

#[derive(Clone)]
pub struct HttpApi {
    pub core: Arc<PdCore>,
}

impl NamedService for HttpApi {
    const NAME: &'static str = "pd/api/v1";
}

fn json(status: http::StatusCode, v: serde_json::Value) -> http::Response<tonic::body::BoxBody> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string()).map_err(|e| tonic::Status::internal(e.to_string())).boxed_unsync())
        .expect("static response")
}

impl HttpApi {
    fn route(&self, method: &http::Method, path: &str) -> http::Response<tonic::body::BoxBody> {
        if method != http::Method::GET {
            return json(http::StatusCode::METHOD_NOT_ALLOWED, serde_json::json!({"error": "only GET is supported"}));
        }
        match path.trim_end_matches('/') {
            "/pd/api/v1/regions" => {
                let c = self.core.cluster.read();
                let regions: Vec<_> = c
                    .all_regions()
                    .map(|r| {
                        serde_json::json!({
                            "id": r.region.id,
                            "start_key": hex(&r.region.start_key),
                            "end_key": hex(&r.region.end_key),
                            "epoch": r.region.region_epoch.as_ref().map(|e| serde_json::json!({"conf_ver": e.conf_ver, "version": e.version})),
                            "peers": r.region.peers.iter().map(|p| serde_json::json!({"id": p.id, "store_id": p.store_id})).collect::<Vec<_>>(),
                            "leader": r.leader.as_ref().map(|p| serde_json::json!({"id": p.id, "store_id": p.store_id})),
                        })
                    })
                    .collect();
                json(http::StatusCode::OK, serde_json::json!({"count": regions.len(), "regions": regions}))
            }
            "/pd/api/v1/stores" => {
                let c = self.core.cluster.read();
                let mut stores: Vec<_> = c.stores.values().collect();
                stores.sort_by_key(|s| s.store.id);
                let stores: Vec<_> = stores
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "id": s.store.id,
                            "address": s.store.address,
                            "state": s.store.state,
                            "region_count": s.stats.as_ref().map(|st| st.region_count),
                        })
                    })
                    .collect();
                json(http::StatusCode::OK, serde_json::json!({"count": stores.len(), "stores": stores}))
            }
            "/pd/api/v1/health" => json(http::StatusCode::OK, serde_json::json!({"health": true})),
            _ => json(http::StatusCode::NOT_FOUND, serde_json::json!({"error": format!("no route {path}")})),
        }
    }
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

impl<B: Send + 'static> Service<http::Request<B>> for HttpApi {
    type Response = http::Response<tonic::body::BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let resp = self.route(req.method(), req.uri().path());
        Box::pin(async move { Ok(resp) })
    }
}
