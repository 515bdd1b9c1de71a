//! The small HTTP API served on the PD client port next to gRPC, under
//! `/pd/api/v1/` (tonic routes a path prefix to a named service).

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{http, Body as _, BoxFuture, Service};
use tonic::server::NamedService;
use tonic::transport::Body;

use crate::core::PdCore;
use crate::member::Member;
use crate::schedule::OpStep;

#[derive(Clone)]
pub struct HttpApi {
    pub member: Arc<Member>,
}

impl NamedService for HttpApi {
    const NAME: &'static str = "pd/api/v1";
}

fn json(status: http::StatusCode, v: serde_json::Value) -> http::Response<tonic::body::BoxBody> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Body::from(v.to_string())
                .map_err(|e| tonic::Status::internal(e.to_string()))
                .boxed_unsync(),
        )
        .expect("static response")
}

/// Largest request body accepted.
const BODY_MAX: usize = 64 << 10;

fn peer_json(p: &atoll_proto::metapb::Peer) -> serde_json::Value {
    let role =
        if p.role == atoll_proto::metapb::PeerRole::Learner as i32 { "learner" } else { "voter" };
    serde_json::json!({"id": p.id, "store_id": p.store_id, "role": role})
}

fn step_json(s: &OpStep) -> serde_json::Value {
    match s {
        OpStep::TransferLeader { to_store } => {
            serde_json::json!({"transfer_leader": {"to_store": to_store}})
        }
        OpStep::AddLearner { store_id, peer_id } => {
            serde_json::json!({"add_learner": {"store_id": store_id, "peer_id": peer_id}})
        }
        OpStep::PromoteLearner { store_id, peer_id } => {
            serde_json::json!({"promote_learner": {"store_id": store_id, "peer_id": peer_id}})
        }
        OpStep::RemovePeer { store_id } => {
            serde_json::json!({"remove_peer": {"store_id": store_id}})
        }
    }
}

impl HttpApi {
    fn route(
        &self,
        method: &http::Method,
        path: &str,
        body: &[u8],
    ) -> http::Response<tonic::body::BoxBody> {
        let path = path.trim_end_matches('/');
        // Any member answers these; the rest is the leader's.
        match path {
            "/pd/api/v1/health" => {
                return json(http::StatusCode::OK, serde_json::json!({"health": true}))
            }
            "/pd/api/v1/members" => return self.members(),
            _ => {}
        }
        let core = match self.member.leader_core() {
            Ok(core) => core,
            Err(e) => {
                return json(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"error": e.to_string(), "leader": e.leader}),
                )
            }
        };
        if method == http::Method::POST && path == "/pd/api/v1/operators" {
            return Self::add_operator(&core, body);
        }
        if method == http::Method::DELETE {
            if let Some(id) = path.strip_prefix("/pd/api/v1/store/") {
                return Self::delete_store(&core, id);
            }
        }
        if method != http::Method::GET {
            return json(
                http::StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": format!("{method} {path} is not supported")}),
            );
        }
        match path {
            "/pd/api/v1/regions" => {
                let regions: Vec<_> = core
                    .regions()
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "id": r.region.id,
                            "start_key": hex(&r.region.start_key),
                            "end_key": hex(&r.region.end_key),
                            "epoch": r.region.region_epoch.as_ref().map(|e| serde_json::json!({"conf_ver": e.conf_ver, "version": e.version})),
                            "peers": r.region.peers.iter().map(peer_json).collect::<Vec<_>>(),
                            "leader": r.leader.as_ref().map(peer_json),
                            "pending_peers": r.pending_peers.iter().map(peer_json).collect::<Vec<_>>(),
                            "approximate_size": r.approximate_size,
                            "approximate_keys": r.approximate_keys,
                        })
                    })
                    .collect();
                json(
                    http::StatusCode::OK,
                    serde_json::json!({"count": regions.len(), "regions": regions}),
                )
            }
            "/pd/api/v1/stores" => {
                let now = std::time::Instant::now();
                let stores: Vec<_> = core
                    .store_statuses(now)
                    .into_iter()
                    .map(|status| {
                        let (s, v) = (&status.info, status.view.as_ref());
                        let state = match v {
                            None => "Tombstone",
                            Some(v) if v.offline => "Offline",
                            Some(v) if v.up => "Up",
                            Some(_) => "Down",
                        };
                        serde_json::json!({
                            "id": s.store.id,
                            "address": s.store.address,
                            "status_address": s.store.status_address,
                            "state_name": state,
                            "region_count": v.map_or(0, |v| v.region_count),
                            "leader_count": v.map_or(0, |v| v.leader_count),
                            "used_size": s.stats.as_ref().map_or(0, |st| st.used_size),
                            "last_heartbeat_secs_ago": s.last_heartbeat.map(|t| now.saturating_duration_since(t).as_secs_f64()),
                        })
                    })
                    .collect();
                json(
                    http::StatusCode::OK,
                    serde_json::json!({"count": stores.len(), "stores": stores}),
                )
            }
            "/pd/api/v1/operators" => {
                let now = std::time::Instant::now();
                let list: Vec<_> = core
                    .operators()
                    .iter()
                    .map(|o| {
                        serde_json::json!({
                            "region_id": o.region_id,
                            "desc": o.desc,
                            "kind": format!("{:?}", o.kind).to_lowercase(),
                            "steps": o.steps.iter().map(step_json).collect::<Vec<_>>(),
                            "current_step": o.current,
                            "age_secs": now.saturating_duration_since(o.created_at).as_secs_f64(),
                        })
                    })
                    .collect();
                json(
                    http::StatusCode::OK,
                    serde_json::json!({"count": list.len(), "operators": list}),
                )
            }
            _ => json(
                http::StatusCode::NOT_FOUND,
                serde_json::json!({"error": format!("no route {path}")}),
            ),
        }
    }

    /// `DELETE /pd/api/v1/store/<id>`: start deleting a store (PD moves its
    /// replicas away, then marks it Tombstone).
    fn delete_store(core: &PdCore, id: &str) -> http::Response<tonic::body::BoxBody> {
        use crate::core::CoreError;
        let Ok(id) = id.parse::<u64>() else {
            return json(
                http::StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("store id {id:?} is not a number")}),
            );
        };
        let (code, body) = match core.delete_store(id) {
            Ok(()) => (http::StatusCode::OK, serde_json::json!({"ok": true, "state": "Offline"})),
            Err(e @ CoreError::NotFound(_)) => {
                (http::StatusCode::NOT_FOUND, serde_json::json!({"error": e.to_string()}))
            }
            Err(e @ (CoreError::Tombstone(_) | CoreError::Conflict(_))) => {
                (http::StatusCode::CONFLICT, serde_json::json!({"error": e.to_string()}))
            }
            Err(e) => (
                http::StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": e.to_string()}),
            ),
        };
        json(code, body)
    }

    /// `GET /pd/api/v1/members`: every member and the leader, by name and URL.
    fn members(&self) -> http::Response<tonic::body::BoxBody> {
        let (members, leader) = self.member.members();
        let one = |m: &atoll_proto::pdpb::Member| serde_json::json!({"name": m.name, "member_id": m.member_id, "client_urls": m.client_urls});
        json(
            http::StatusCode::OK,
            serde_json::json!({
                "members": members.iter().map(one).collect::<Vec<_>>(),
                "leader": leader.as_ref().map(one),
            }),
        )
    }

    /// `POST /pd/api/v1/operators` with `{"name": "transfer-leader",
    /// "region_id": N, "to_store_id": M}` or `{"name": "split-region",
    /// "region_id": N, "keys": ["<hex key>", ...]}` (no keys: split in half); keys as
    /// a raw request carries them (API V2: with the keyspace prefix).
    fn add_operator(core: &PdCore, body: &[u8]) -> http::Response<tonic::body::BoxBody> {
        let bad =
            |msg: String| json(http::StatusCode::BAD_REQUEST, serde_json::json!({"error": msg}));
        let v: serde_json::Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return bad(format!("body is not JSON: {e}")),
        };
        let Some(region_id) = v["region_id"].as_u64() else {
            return bad("region_id (number) is required".into());
        };
        let res = match v["name"].as_str() {
            Some("transfer-leader") => match v["to_store_id"].as_u64() {
                Some(to) => core.admin_transfer_leader(region_id, to),
                None => return bad("to_store_id (number) is required".into()),
            },
            Some("split-region") => {
                let mut keys = vec![];
                for k in v["keys"].as_array().cloned().unwrap_or_default() {
                    match k.as_str().and_then(unhex) {
                        Some(k) if !k.is_empty() => keys.push(k),
                        _ => return bad(format!("split key {k} is not a non-empty hex string")),
                    }
                }
                core.admin_split_region(region_id, keys)
            }
            other => {
                return bad(format!(
                    "unknown operator {other:?}; use transfer-leader or split-region"
                ))
            }
        };
        match res {
            Ok(()) => json(http::StatusCode::OK, serde_json::json!({"ok": true})),
            Err(e) => bad(e.to_string()),
        }
    }
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

pub use atoll_codec::hex;

/// Reads a request body, refusing more than `BODY_MAX` bytes.
async fn read_body<B>(body: B) -> Result<Vec<u8>, String>
where
    B: tonic::codegen::Body,
    B::Error: std::fmt::Display,
{
    use bytes::Buf as _;
    let mut body = std::pin::pin!(body);
    let mut out = vec![];
    while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_data(cx)).await {
        let mut chunk = chunk.map_err(|e| e.to_string())?;
        let bytes = chunk.copy_to_bytes(chunk.remaining());
        if out.len() + bytes.len() > BODY_MAX {
            return Err(format!("request body over {BODY_MAX} bytes"));
        }
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

impl<B> Service<http::Request<B>> for HttpApi
where
    B: tonic::codegen::Body + Send + 'static,
    B::Data: Send,
    B::Error: std::fmt::Display,
{
    type Response = http::Response<tonic::body::BoxBody>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let resp = match read_body(body).await {
                Ok(body) => this.route(&parts.method, parts.uri.path(), &body),
                Err(e) => json(http::StatusCode::BAD_REQUEST, serde_json::json!({"error": e})),
            };
            Ok(resp)
        })
    }
}
