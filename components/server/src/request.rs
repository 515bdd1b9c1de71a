//! What raw and transactional requests share at the store's boundary: the
//! API version and peer checks, the raft header, the linearizable
//! snapshot, and the rule that a write whose answer is lost is
//! [`Error::Undetermined`].

use std::time::Duration;

use atoll_codec::api::ApiVersion;
use atoll_engine_traits::KvEngine;
use atoll_proto::atollpb::{RaftCmdRequest, RaftRequestHeader, Request};
use atoll_proto::kvrpcpb::Context;
use atoll_raftstore::{Error, ReadResponse, StoreHandle, WriteResponse};
use tokio::sync::oneshot;

pub type Result<T> = std::result::Result<T, Error>;

/// How long a request may wait for raft before failing (the client retries).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The request must speak the cluster's API version (TiKV answers
/// `ApiVersionNotMatched` the same way); checked before anything else, so a
/// mismatched request reads and writes nothing.
pub(crate) fn check_api(api: ApiVersion, cmd: &str, ctx: &Context) -> Result<()> {
    if ApiVersion::from_proto(ctx.api_version) == Some(api) {
        return Ok(());
    }
    Err(Error::InvalidRequest(format!(
        "api version not matched: {cmd} sent with {}, but this cluster runs API {} (storage.api-version = {}); \
         use a client in {} mode",
        api_name(ctx.api_version),
        api,
        api.config_value(),
        match api {
            ApiVersion::V1 => "its default (API V1, no keyspace)",
            ApiVersion::V2 => "keyspace (API V2)",
        }
    )))
}

/// The name of a request's API version, for errors.
fn api_name(v: i32) -> String {
    match (v, ApiVersion::from_proto(v)) {
        (_, Some(v)) => format!("API {v}"),
        (1, None) => "API V1TTL".into(),
        (v, None) => format!("an unknown API version ({v})"),
    }
}

/// A request naming another store's peer is refused before anything else.
pub(crate) fn check_ctx(store_id: u64, ctx: &Context) -> Result<()> {
    if let Some(p) = &ctx.peer {
        if p.store_id != 0 && p.store_id != store_id {
            return Err(Error::StoreNotMatch { requested: p.store_id, actual: store_id });
        }
    }
    Ok(())
}

fn header(ctx: &Context, term: u64) -> RaftRequestHeader {
    RaftRequestHeader {
        region_id: ctx.region_id,
        peer: ctx.peer.clone(),
        region_epoch: ctx.region_epoch.clone(),
        term,
    }
}

/// A linearizable snapshot of the request's region (read index on its
/// leader). A read changes nothing, so a lost answer (store shutting down,
/// or no answer in time) is safe to retry.
pub(crate) async fn snapshot<E: KvEngine>(
    store: &StoreHandle<E>,
    ctx: &Context,
) -> Result<ReadResponse<E::Snapshot>> {
    check_ctx(store.store_id, ctx)?;
    let (tx, rx) = oneshot::channel();
    store.read(header(ctx, 0), Box::new(move |r| drop(tx.send(r))));
    match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(Error::Shutdown),
        Err(_) => Err(Error::StaleCommand),
    }
}

/// Proposes `requests` to the request's region as one raft command (of
/// leader `term`, 0: any) and waits for the answer. Once handed to
/// raftstore the write may have been proposed, so a lost answer is
/// [`Error::Undetermined`], never a retryable region error (a CAS retried
/// after it applied would report the value it wrote itself as someone
/// else's). `guards` (latches, memory locks) live until raftstore answers,
/// even when the wait gives up first.
pub(crate) async fn write<E: KvEngine>(
    store: &StoreHandle<E>,
    ctx: &Context,
    term: u64,
    requests: Vec<Request>,
    guards: impl Send + 'static,
) -> Result<WriteResponse> {
    check_ctx(store.store_id, ctx)?;
    let req = RaftCmdRequest { header: Some(header(ctx, term)), requests, admin_request: None };
    let (tx, mut rx) = oneshot::channel();
    store.write(req, Box::new(move |r| drop(tx.send(r))));
    match tokio::time::timeout(REQUEST_TIMEOUT, &mut rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => {
            Err(Error::Undetermined("the store dropped the write (shutting down?)".into()))
        }
        Err(_) => {
            // Still pending in raft: keep the keys guarded until it ends.
            tokio::spawn(async move {
                let _ = rx.await;
                drop(guards);
            });
            Err(Error::Undetermined(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())))
        }
    }
}
