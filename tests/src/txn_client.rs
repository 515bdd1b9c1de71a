//! Helpers for the tests that drive Atoll's transactional client against
//! a `ProcCluster`, and that write raw Percolator requests beside it (a
//! transaction's locks left as a crashed client would leave them).

use std::future::Future;
use std::time::{Duration, Instant};

use atoll_client::{Config, TxnClient};
use atoll_proto::kvrpcpb;
use atoll_proto::tikvpb::tikv_client::TikvClient;
use tonic::transport::Channel;

use crate::proc::{txn_wire_key, ProcCluster};

/// A transactional client of `c`, once PD answers (up to 60 s).
pub async fn connect(c: &ProcCluster) -> TxnClient {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match TxnClient::connect(Config::new(vec![c.pd_addr.clone()])).await {
            Ok(cl) => return cl,
            Err(e) => assert!(Instant::now() < deadline, "no client: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `call` on the leader of `key`'s region with that region's
/// context, again while it answers a region error (`call` returns `None`).
pub async fn on_leader<T, F, Fut>(client: &TxnClient, key: &str, call: F) -> T
where
    F: Fn(TikvClient<Channel>, kvrpcpb::Context) -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let w = txn_wire_key(key.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no answer from the leader of {key}");
        let routed = client.pd().get_region(&atoll_codec::encode_bytes(&w)).await;
        let Some((region, leader)) =
            routed.ok().flatten().and_then(|r| Some((r.region, r.leader.filter(|l| l.id != 0)?)))
        else {
            // PD unreachable, the key unrouted or its leader unknown yet.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let store = client.pd().get_store(leader.store_id).await.unwrap();
        let kv = TikvClient::connect(format!("http://{}", store.address)).await.unwrap();
        let ctx = kvrpcpb::Context {
            region_id: region.id,
            region_epoch: region.region_epoch.clone(),
            peer: Some(leader),
            api_version: kvrpcpb::ApiVersion::V2 as i32,
            ..Default::default()
        };
        if let Some(answer) = call(kv, ctx).await {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `req` (its context filled in here) to the leader of `key`'s
/// region, again while the answer is a region error.
pub async fn prewrite_on_leader(
    client: &TxnClient,
    key: &str,
    req: kvrpcpb::PrewriteRequest,
) -> kvrpcpb::PrewriteResponse {
    on_leader(client, key, |mut kv, ctx| {
        let req = kvrpcpb::PrewriteRequest { context: Some(ctx), ..req.clone() };
        async move {
            let resp = kv.kv_prewrite(req).await.unwrap().into_inner();
            resp.region_error.is_none().then_some(resp)
        }
    })
    .await
}

/// A prewrite of one mutation of `op` on `key` as primary of `start_ts`.
pub fn prewrite_req(
    key: &str,
    op: kvrpcpb::Op,
    start_ts: u64,
    ttl_ms: u64,
) -> kvrpcpb::PrewriteRequest {
    let w = txn_wire_key(key.as_bytes());
    kvrpcpb::PrewriteRequest {
        mutations: vec![kvrpcpb::Mutation {
            op: op as i32,
            key: w.clone(),
            value: if op == kvrpcpb::Op::CheckNotExists { vec![] } else { b"v".to_vec() },
            ..Default::default()
        }],
        primary_lock: w,
        start_version: start_ts,
        lock_ttl: ttl_ms,
        ..Default::default()
    }
}
