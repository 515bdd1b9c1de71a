//! The gRPC adapters of [`PdCore`]: `pdpb.PD` and `keyspacepb.Keyspace`.
//! Each handler checks the request header, converts, counts, calls the
//! core and maps [`CoreError`] to a response header error or a status.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use atoll_proto::keyspacepb::{self, keyspace_server::Keyspace};
use atoll_proto::metapb;
use atoll_proto::pdpb::{self, pd_server::Pd, ErrorType};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::cluster::RegionInfo;
use crate::core::{CoreError, PdCore};
use crate::member::Member;
use crate::metrics::*;
use crate::storage::StorageError;

/// Responses queued per region-heartbeat stream before the stream is closed.
const HEARTBEAT_STREAM_QUEUE_MAX: usize = 1024;
/// Responses queued per TSO stream.
const TSO_STREAM_QUEUE_MAX: usize = 256;

/// Maps a core error to a gRPC status, for errors `pdpb` has no header
/// error type for.
fn status(e: CoreError) -> Status {
    match e {
        CoreError::Invalid(m) => Status::invalid_argument(m),
        e @ CoreError::ClusterMismatch { .. } => Status::failed_precondition(e.to_string()),
        // A deposed leader or etcd out of reach: the client should find the
        // (new) leader and try again, as with a follower.
        e @ CoreError::Storage(StorageError::NotLeader | StorageError::Etcd(_)) => {
            Status::unavailable(e.to_string())
        }
        e @ CoreError::Storage(_) => Status::internal(e.to_string()),
        e => Status::failed_precondition(e.to_string()),
    }
}

/// The response header of a core result: header errors for what `pdpb`
/// names (not bootstrapped, already bootstrapped, store tombstone, not
/// found, conflict), a
/// gRPC status for the rest.
fn header_of<T>(
    cluster_id: u64,
    res: Result<T, CoreError>,
) -> Result<(Option<pdpb::ResponseHeader>, Option<T>), Status> {
    let (kind, e) = match res {
        Ok(v) => return Ok((ok_header(cluster_id), Some(v))),
        Err(e @ CoreError::NotBootstrapped) => (ErrorType::NotBootstrapped, e),
        Err(e @ CoreError::AlreadyBootstrapped) => (ErrorType::AlreadyBootstrapped, e),
        Err(e @ CoreError::Tombstone(_)) => (ErrorType::StoreTombstone, e),
        Err(e @ (CoreError::NotFound(_) | CoreError::Conflict(_))) => (ErrorType::Unknown, e),
        Err(e) => return Err(status(e)),
    };
    let error = Some(pdpb::Error { r#type: kind as i32, message: e.to_string() });
    Ok((Some(pdpb::ResponseHeader { cluster_id, error }), None))
}

fn ok_header(cluster_id: u64) -> Option<pdpb::ResponseHeader> {
    Some(pdpb::ResponseHeader { cluster_id, error: None })
}

/// Checks a request's header against this cluster.
fn check(core: &PdCore, h: Option<&pdpb::RequestHeader>) -> Result<(), Status> {
    core.check_cluster(h.map_or(0, |h| h.cluster_id)).map_err(status)
}

/// The core of the leader, or `Unavailable` ("not leader") on a follower:
/// TiKV's clients then ask `GetMembers` for the leader and go there.
fn leader_core(member: &Member) -> Result<Arc<PdCore>, Status> {
    member.leader_core().map_err(|e| Status::unavailable(e.to_string()))
}

pub struct PdService {
    pub member: Arc<Member>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl PdService {
    fn core(&self) -> Result<Arc<PdCore>, Status> {
        leader_core(&self.member)
    }

    /// A region lookup's answer; before bootstrap a `NotBootstrapped` header.
    fn region_response(
        core: &PdCore,
        r: Result<Option<RegionInfo>, CoreError>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let (header, r) = header_of(core.cluster_id(), r)?;
        let mut resp = pdpb::GetRegionResponse { header, ..Default::default() };
        if let Some(r) = r.flatten() {
            resp.region = Some(r.region);
            resp.leader = r.leader;
            resp.pending_peers = r.pending_peers;
        }
        Ok(Response::new(resp))
    }
}

#[tonic::async_trait]
impl Pd for PdService {
    async fn get_members(
        &self,
        req: Request<pdpb::GetMembersRequest>,
    ) -> Result<Response<pdpb::GetMembersResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_members"]).inc();
        // Any member answers, leader or not.
        let cluster_id = self.member.cluster_id();
        let asked = req.get_ref().header.as_ref().map_or(0, |h| h.cluster_id);
        if asked != 0 && cluster_id != 0 && asked != cluster_id {
            return Err(status(CoreError::ClusterMismatch { request: asked, cluster: cluster_id }));
        }
        let (members, leader) = self.member.members();
        // PD answers a member list without a leader while none is known;
        // tikv-client 0.4 then panics (`try_connect_leader` unwraps
        // `leader`, src/pd/cluster.rs), so such a member refuses instead
        // and clients ask the next one or try again.
        if leader.is_none() {
            return Err(Status::unavailable("no PD leader yet"));
        }
        Ok(Response::new(pdpb::GetMembersResponse {
            header: ok_header(cluster_id),
            members,
            etcd_leader: leader.clone(),
            leader,
            ..Default::default()
        }))
    }

    type TsoStream = BoxStream<pdpb::TsoResponse>;

    async fn tso(
        &self,
        req: Request<Streaming<pdpb::TsoRequest>>,
    ) -> Result<Response<Self::TsoStream>, Status> {
        let mut inbound = req.into_inner();
        let member = self.member.clone();
        let core = self.core()?;
        let (tx, rx) = mpsc::channel(TSO_STREAM_QUEUE_MAX);
        tokio::spawn(async move {
            loop {
                let item = tokio::select! {
                    item = inbound.next() => item,
                    // The stream ends with the leadership that opened it.
                    _ = core.closed() => break,
                };
                let Some(item) = item else { break };
                let r = match item {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("tso stream ended: {e}");
                        break;
                    }
                };
                let start = Instant::now();
                // Each request checks the lease: a timestamp is handed out
                // only while no other member can be the leader.
                let res = leader_core(&member)
                    .and_then(|core| check(&core, r.header.as_ref()).map(|()| core))
                    .and_then(|core| core.tso(r.count).map_err(status));
                let failed = res.is_err();
                PD_TSO_DURATION.observe(start.elapsed().as_secs_f64());
                let resp = res.map(|ts| {
                    PD_TSO.inc_by(u64::from(r.count));
                    pdpb::TsoResponse {
                        header: ok_header(core.cluster_id()),
                        count: r.count,
                        timestamp: Some(pdpb::Timestamp {
                            physical: ts.physical,
                            logical: ts.logical,
                            suffix_bits: 0,
                        }),
                    }
                });
                if tx.send(resp).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn bootstrap(
        &self,
        req: Request<pdpb::BootstrapRequest>,
    ) -> Result<Response<pdpb::BootstrapResponse>, Status> {
        PD_REQUESTS.with_label_values(&["bootstrap"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let (Some(store), Some(region)) = (req.store, req.region) else {
            return Err(Status::invalid_argument("bootstrap needs a store and a region"));
        };
        let (header, _) =
            header_of(core.cluster_id(), core.bootstrap(store, region, req.api_version))?;
        Ok(Response::new(pdpb::BootstrapResponse { header }))
    }

    async fn is_bootstrapped(
        &self,
        req: Request<pdpb::IsBootstrappedRequest>,
    ) -> Result<Response<pdpb::IsBootstrappedResponse>, Status> {
        let core = self.core()?;
        check(&core, req.get_ref().header.as_ref())?;
        Ok(Response::new(pdpb::IsBootstrappedResponse {
            header: ok_header(core.cluster_id()),
            bootstrapped: core.is_bootstrapped(),
        }))
    }

    async fn alloc_id(
        &self,
        req: Request<pdpb::AllocIdRequest>,
    ) -> Result<Response<pdpb::AllocIdResponse>, Status> {
        PD_REQUESTS.with_label_values(&["alloc_id"]).inc();
        let core = self.core()?;
        check(&core, req.get_ref().header.as_ref())?;
        let id = core.alloc_id().map_err(status)?;
        Ok(Response::new(pdpb::AllocIdResponse { header: ok_header(core.cluster_id()), id }))
    }

    async fn get_store(
        &self,
        req: Request<pdpb::GetStoreRequest>,
    ) -> Result<Response<pdpb::GetStoreResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_store"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let (header, info) = header_of(core.cluster_id(), core.store(req.store_id))?;
        let (store, stats) = info.map_or((None, None), |s| (Some(s.store), s.stats));
        Ok(Response::new(pdpb::GetStoreResponse { header, store, stats }))
    }

    async fn put_store(
        &self,
        req: Request<pdpb::PutStoreRequest>,
    ) -> Result<Response<pdpb::PutStoreResponse>, Status> {
        PD_REQUESTS.with_label_values(&["put_store"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let Some(store) = req.store else {
            return Err(Status::invalid_argument("put_store without a store"));
        };
        let (header, _) = header_of(core.cluster_id(), core.put_store(store))?;
        Ok(Response::new(pdpb::PutStoreResponse { header }))
    }

    async fn get_all_stores(
        &self,
        req: Request<pdpb::GetAllStoresRequest>,
    ) -> Result<Response<pdpb::GetAllStoresResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_all_stores"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let stores = core.stores(req.exclude_tombstone_stores);
        Ok(Response::new(pdpb::GetAllStoresResponse {
            header: ok_header(core.cluster_id()),
            stores,
        }))
    }

    async fn store_heartbeat(
        &self,
        req: Request<pdpb::StoreHeartbeatRequest>,
    ) -> Result<Response<pdpb::StoreHeartbeatResponse>, Status> {
        PD_HEARTBEATS.with_label_values(&["store"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let Some(stats) = req.stats else {
            return Err(Status::invalid_argument("store heartbeat without stats"));
        };
        let (header, _) = header_of(core.cluster_id(), core.store_heartbeat(stats))?;
        Ok(Response::new(pdpb::StoreHeartbeatResponse { header, ..Default::default() }))
    }

    type RegionHeartbeatStream = BoxStream<pdpb::RegionHeartbeatResponse>;

    async fn region_heartbeat(
        &self,
        req: Request<Streaming<pdpb::RegionHeartbeatRequest>>,
    ) -> Result<Response<Self::RegionHeartbeatStream>, Status> {
        let mut inbound = req.into_inner();
        let core = self.core()?;
        let (tx, rx) = mpsc::channel(HEARTBEAT_STREAM_QUEUE_MAX);
        tokio::spawn(async move {
            let mut registered = false;
            loop {
                let item = tokio::select! {
                    item = inbound.next() => item,
                    // Closing the stream sends the store to the new leader.
                    _ = core.closed() => break,
                };
                let Some(Ok(hb)) = item else { break };
                if let Err(e) = check(&core, hb.header.as_ref()) {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
                if !registered {
                    if let Some(store) = hb.leader.as_ref().map(|l| l.store_id) {
                        core.register_heartbeat_stream(store, tx.clone());
                        registered = true;
                    }
                }
                if let Some(resp) = core.region_heartbeat(&hb) {
                    let resp = pdpb::RegionHeartbeatResponse {
                        header: ok_header(core.cluster_id()),
                        ..resp
                    };
                    if tx.try_send(Ok(resp)).is_err() {
                        tracing::warn!(
                            "region heartbeat stream is not draining; dropping an operator"
                        );
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_region(
        &self,
        req: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_region"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let key = req.region_key;
        let r = core.wait_for_routing(|c| c.region_by_key(&key)).await;
        Self::region_response(&core, r)
    }

    async fn get_prev_region(
        &self,
        req: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_prev_region"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let key = req.region_key;
        let r = core.wait_for_routing(|c| Some(c.prev_region(&key))).await;
        Self::region_response(&core, r.map(Option::flatten))
    }

    async fn get_region_by_id(
        &self,
        req: Request<pdpb::GetRegionByIdRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_region_by_id"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let r = core.wait_for_routing(|c| Some(c.region_by_id(req.region_id))).await;
        Self::region_response(&core, r.map(Option::flatten))
    }

    async fn scan_regions(
        &self,
        req: Request<pdpb::ScanRegionsRequest>,
    ) -> Result<Response<pdpb::ScanRegionsResponse>, Status> {
        PD_REQUESTS.with_label_values(&["scan_regions"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let limit = req.limit.max(0) as usize;
        let found = core
            .wait_for_routing(|c| Some(c.scan_regions(&req.start_key, &req.end_key, limit)))
            .await;
        let (header, found) = header_of(core.cluster_id(), found)?;
        let found = found.flatten().unwrap_or_default();
        let mut resp = pdpb::ScanRegionsResponse { header, ..Default::default() };
        for r in found {
            let leader = r.leader.unwrap_or_default();
            resp.region_metas.push(r.region.clone());
            resp.leaders.push(leader.clone());
            resp.regions.push(pdpb::Region {
                region: Some(r.region),
                leader: Some(leader),
                down_peers: vec![],
                pending_peers: r.pending_peers,
            });
        }
        Ok(Response::new(resp))
    }

    async fn ask_batch_split(
        &self,
        req: Request<pdpb::AskBatchSplitRequest>,
    ) -> Result<Response<pdpb::AskBatchSplitResponse>, Status> {
        PD_REQUESTS.with_label_values(&["ask_batch_split"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let Some(region) = req.region else {
            return Err(Status::invalid_argument("ask_batch_split without region"));
        };
        let (header, ids) =
            header_of(core.cluster_id(), core.ask_batch_split(&region, req.split_count))?;
        Ok(Response::new(pdpb::AskBatchSplitResponse { header, ids: ids.unwrap_or_default() }))
    }

    async fn report_batch_split(
        &self,
        req: Request<pdpb::ReportBatchSplitRequest>,
    ) -> Result<Response<pdpb::ReportBatchSplitResponse>, Status> {
        PD_REQUESTS.with_label_values(&["report_batch_split"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        core.report_split(req.regions);
        Ok(Response::new(pdpb::ReportBatchSplitResponse { header: ok_header(core.cluster_id()) }))
    }

    async fn get_cluster_config(
        &self,
        req: Request<pdpb::GetClusterConfigRequest>,
    ) -> Result<Response<pdpb::GetClusterConfigResponse>, Status> {
        let core = self.core()?;
        check(&core, req.get_ref().header.as_ref())?;
        let m = core.cluster_meta();
        Ok(Response::new(pdpb::GetClusterConfigResponse {
            header: ok_header(core.cluster_id()),
            cluster: Some(metapb::Cluster { id: m.cluster_id, max_peer_count: m.max_peer_count }),
            api_version: m.api_version().map_or(0, |v| u32::from(v.config_value())),
        }))
    }

    async fn put_cluster_config(
        &self,
        req: Request<pdpb::PutClusterConfigRequest>,
    ) -> Result<Response<pdpb::PutClusterConfigResponse>, Status> {
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let Some(cluster) = req.cluster else {
            return Err(Status::invalid_argument("missing cluster"));
        };
        core.set_max_peer_count(cluster.max_peer_count).map_err(status)?;
        Ok(Response::new(pdpb::PutClusterConfigResponse { header: ok_header(core.cluster_id()) }))
    }

    async fn get_gc_safe_point(
        &self,
        req: Request<pdpb::GetGcSafePointRequest>,
    ) -> Result<Response<pdpb::GetGcSafePointResponse>, Status> {
        let core = self.core()?;
        check(&core, req.get_ref().header.as_ref())?;
        Ok(Response::new(pdpb::GetGcSafePointResponse {
            header: ok_header(core.cluster_id()),
            safe_point: core.gc_safe_point(),
        }))
    }

    async fn update_gc_safe_point(
        &self,
        req: Request<pdpb::UpdateGcSafePointRequest>,
    ) -> Result<Response<pdpb::UpdateGcSafePointResponse>, Status> {
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let new_safe_point = core.update_gc_safe_point(req.safe_point).map_err(status)?;
        Ok(Response::new(pdpb::UpdateGcSafePointResponse {
            header: ok_header(core.cluster_id()),
            new_safe_point,
        }))
    }
}

pub struct KeyspaceService {
    pub member: Arc<Member>,
}

impl KeyspaceService {
    fn core(&self) -> Result<Arc<PdCore>, Status> {
        leader_core(&self.member)
    }
}

#[tonic::async_trait]
impl Keyspace for KeyspaceService {
    async fn load_keyspace(
        &self,
        req: Request<keyspacepb::LoadKeyspaceRequest>,
    ) -> Result<Response<keyspacepb::LoadKeyspaceResponse>, Status> {
        PD_REQUESTS.with_label_values(&["load_keyspace"]).inc();
        let req = req.into_inner();
        let core = self.core()?;
        check(&core, req.header.as_ref())?;
        let cluster_id = core.cluster_id();
        Ok(Response::new(match core.load_keyspace(&req.name) {
            Ok(k) => keyspacepb::LoadKeyspaceResponse {
                header: ok_header(cluster_id),
                keyspace: Some(k),
            },
            Err(e @ CoreError::NotFound(_)) => keyspacepb::LoadKeyspaceResponse {
                header: Some(pdpb::ResponseHeader {
                    cluster_id,
                    error: Some(pdpb::Error {
                        r#type: ErrorType::EntryNotFound as i32,
                        message: e.to_string(),
                    }),
                }),
                keyspace: None,
            },
            Err(e) => return Err(status(e)),
        }))
    }
}
