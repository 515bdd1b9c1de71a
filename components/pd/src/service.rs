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
use crate::metrics::*;

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
        e @ CoreError::Storage(_) => Status::internal(e.to_string()),
        e => Status::failed_precondition(e.to_string()),
    }
}

/// The response header of a core result: header errors for what `pdpb`
/// names (not bootstrapped, already bootstrapped, not found, conflict), a
/// gRPC status for the rest.
fn header_of<T>(
    cluster_id: u64,
    res: Result<T, CoreError>,
) -> Result<(Option<pdpb::ResponseHeader>, Option<T>), Status> {
    let (kind, e) = match res {
        Ok(v) => return Ok((ok_header(cluster_id), Some(v))),
        Err(e @ CoreError::NotBootstrapped) => (ErrorType::NotBootstrapped, e),
        Err(e @ CoreError::AlreadyBootstrapped) => (ErrorType::AlreadyBootstrapped, e),
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

pub struct PdService {
    pub core: Arc<PdCore>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl PdService {
    fn header(&self) -> Option<pdpb::ResponseHeader> {
        ok_header(self.core.cluster_id())
    }

    fn header_of<T>(
        &self,
        res: Result<T, CoreError>,
    ) -> Result<(Option<pdpb::ResponseHeader>, Option<T>), Status> {
        header_of(self.core.cluster_id(), res)
    }

    /// A region lookup's answer; before bootstrap a `NotBootstrapped` header.
    fn region_response(
        &self,
        r: Result<Option<RegionInfo>, CoreError>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        let (header, r) = self.header_of(r)?;
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
        check(&self.core, req.get_ref().header.as_ref())?;
        let m = self.core.member();
        Ok(Response::new(pdpb::GetMembersResponse {
            header: self.header(),
            members: vec![m.clone()],
            leader: Some(m.clone()),
            etcd_leader: Some(m),
            ..Default::default()
        }))
    }

    type TsoStream = BoxStream<pdpb::TsoResponse>;

    async fn tso(
        &self,
        req: Request<Streaming<pdpb::TsoRequest>>,
    ) -> Result<Response<Self::TsoStream>, Status> {
        let mut inbound = req.into_inner();
        let core = self.core.clone();
        let (tx, rx) = mpsc::channel(TSO_STREAM_QUEUE_MAX);
        tokio::spawn(async move {
            while let Some(item) = inbound.next().await {
                let r = match item {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("tso stream ended: {e}");
                        break;
                    }
                };
                let start = Instant::now();
                let res = check(&core, r.header.as_ref())
                    .and_then(|()| core.tso(r.count).map_err(status));
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
                if tx.send(resp).await.is_err() {
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
        check(&self.core, req.header.as_ref())?;
        let (Some(store), Some(region)) = (req.store, req.region) else {
            return Err(Status::invalid_argument("bootstrap needs a store and a region"));
        };
        let (header, _) = self.header_of(self.core.bootstrap(store, region, req.api_version))?;
        Ok(Response::new(pdpb::BootstrapResponse { header }))
    }

    async fn is_bootstrapped(
        &self,
        req: Request<pdpb::IsBootstrappedRequest>,
    ) -> Result<Response<pdpb::IsBootstrappedResponse>, Status> {
        check(&self.core, req.get_ref().header.as_ref())?;
        Ok(Response::new(pdpb::IsBootstrappedResponse {
            header: self.header(),
            bootstrapped: self.core.is_bootstrapped(),
        }))
    }

    async fn alloc_id(
        &self,
        req: Request<pdpb::AllocIdRequest>,
    ) -> Result<Response<pdpb::AllocIdResponse>, Status> {
        PD_REQUESTS.with_label_values(&["alloc_id"]).inc();
        check(&self.core, req.get_ref().header.as_ref())?;
        let id = self.core.alloc_id().map_err(status)?;
        Ok(Response::new(pdpb::AllocIdResponse { header: self.header(), id }))
    }

    async fn get_store(
        &self,
        req: Request<pdpb::GetStoreRequest>,
    ) -> Result<Response<pdpb::GetStoreResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_store"]).inc();
        let req = req.into_inner();
        check(&self.core, req.header.as_ref())?;
        let (header, info) = self.header_of(self.core.store(req.store_id))?;
        let (store, stats) = info.map_or((None, None), |s| (Some(s.store), s.stats));
        Ok(Response::new(pdpb::GetStoreResponse { header, store, stats }))
    }

    async fn put_store(
        &self,
        req: Request<pdpb::PutStoreRequest>,
    ) -> Result<Response<pdpb::PutStoreResponse>, Status> {
        PD_REQUESTS.with_label_values(&["put_store"]).inc();
        let req = req.into_inner();
        check(&self.core, req.header.as_ref())?;
        let Some(store) = req.store else {
            return Err(Status::invalid_argument("put_store without a store"));
        };
        let (header, _) = self.header_of(self.core.put_store(store))?;
        Ok(Response::new(pdpb::PutStoreResponse { header }))
    }

    async fn get_all_stores(
        &self,
        req: Request<pdpb::GetAllStoresRequest>,
    ) -> Result<Response<pdpb::GetAllStoresResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_all_stores"]).inc();
        let req = req.into_inner();
        check(&self.core, req.header.as_ref())?;
        let stores = self.core.stores(req.exclude_tombstone_stores);
        Ok(Response::new(pdpb::GetAllStoresResponse { header: self.header(), stores }))
    }

    async fn store_heartbeat(
        &self,
        req: Request<pdpb::StoreHeartbeatRequest>,
    ) -> Result<Response<pdpb::StoreHeartbeatResponse>, Status> {
        PD_HEARTBEATS.with_label_values(&["store"]).inc();
        let req = req.into_inner();
        check(&self.core, req.header.as_ref())?;
        let Some(stats) = req.stats else {
            return Err(Status::invalid_argument("store heartbeat without stats"));
        };
        let (header, _) = self.header_of(self.core.store_heartbeat(stats))?;
        Ok(Response::new(pdpb::StoreHeartbeatResponse { header, ..Default::default() }))
    }

    type RegionHeartbeatStream = BoxStream<pdpb::RegionHeartbeatResponse>;

    async fn region_heartbeat(
        &self,
        req: Request<Streaming<pdpb::RegionHeartbeatRequest>>,
    ) -> Result<Response<Self::RegionHeartbeatStream>, Status> {
        let mut inbound = req.into_inner();
        let core = self.core.clone();
        let (tx, rx) = mpsc::channel(HEARTBEAT_STREAM_QUEUE_MAX);
        tokio::spawn(async move {
            let mut registered = false;
            while let Some(item) = inbound.next().await {
                let Ok(hb) = item else { break };
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
        check(&self.core, req.header.as_ref())?;
        let key = req.region_key;
        let r = self.core.wait_for_routing(|c| c.region_by_key(&key)).await;
        self.region_response(r)
    }

    async fn get_prev_region(
        &self,
        req: Request<pdpb::GetRegionRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_prev_region"]).inc();
        let req = req.into_inner();
        check(&self.core, req.header.as_ref())?;
        let key = req.region_key;
        let r = self.core.wait_for_routing(|c| Some(c.prev_region(&key))).await;
        self.region_response(r.map(Option::flatten))
    }

    async fn get_region_by_id(
        &self,
        req: Request<pdpb::GetRegionByIdRequest>,
    ) -> Result<Response<pdpb::GetRegionResponse>, Status> {
        PD_REQUESTS.with_label_values(&["get_region_by_id"]).inc();
        let req = req.into_inner();
        check(&self.core, req.header.as_ref())?;
        let r = self.core.wait_for_routing(|c| Some(c.region_by_id(req.region_id))).await;
        self.region_response(r.map(Option::flatten))
    }

    async fn scan_regions(
        &self,
        req: Request<pdpb::ScanRegionsRequest>,
    ) -> Result<Response<pdpb::ScanRegionsResponse>, Status> {
        PD_REQUESTS.with_label_values(&["scan_regions"]).inc();
        let req = req.into_inner();
        check(&self.core, req.header.as_ref())?;
        let limit = req.limit.max(0) as usize;
        let found = self
            .core
            .wait_for_routing(|c| Some(c.scan_regions(&req.start_key, &req.end_key, limit)))
            .await;
        let (header, found) = self.header_of(found)?;
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
        check(&self.core, req.header.as_ref())?;
        let Some(region) = req.region else {
            return Err(Status::invalid_argument("ask_batch_split without region"));
        };
        let (header, ids) = self.header_of(self.core.ask_batch_split(&region, req.split_count))?;
        Ok(Response::new(pdpb::AskBatchSplitResponse { header, ids: ids.unwrap_or_default() }))
    }

    async fn report_batch_split(
        &self,
        req: Request<pdpb::ReportBatchSplitRequest>,
    ) -> Result<Response<pdpb::ReportBatchSplitResponse>, Status> {
        PD_REQUESTS.with_label_values(&["report_batch_split"]).inc();
        let req = req.into_inner();
        check(&self.core, req.header.as_ref())?;
        self.core.report_split(req.regions);
        Ok(Response::new(pdpb::ReportBatchSplitResponse { header: self.header() }))
    }

    async fn get_cluster_config(
        &self,
        req: Request<pdpb::GetClusterConfigRequest>,
    ) -> Result<Response<pdpb::GetClusterConfigResponse>, Status> {
        check(&self.core, req.get_ref().header.as_ref())?;
        let m = self.core.cluster_meta();
        Ok(Response::new(pdpb::GetClusterConfigResponse {
            header: self.header(),
            cluster: Some(metapb::Cluster { id: m.cluster_id, max_peer_count: m.max_peer_count }),
            api_version: m.api_version().map_or(0, |v| u32::from(v.config_value())),
        }))
    }

    async fn put_cluster_config(
        &self,
        req: Request<pdpb::PutClusterConfigRequest>,
    ) -> Result<Response<pdpb::PutClusterConfigResponse>, Status> {
        let req = req.into_inner();
        check(&self.core, req.header.as_ref())?;
        let Some(cluster) = req.cluster else {
            return Err(Status::invalid_argument("missing cluster"));
        };
        self.core.set_max_peer_count(cluster.max_peer_count).map_err(status)?;
        Ok(Response::new(pdpb::PutClusterConfigResponse { header: self.header() }))
    }

    async fn get_gc_safe_point(
        &self,
        req: Request<pdpb::GetGcSafePointRequest>,
    ) -> Result<Response<pdpb::GetGcSafePointResponse>, Status> {
        check(&self.core, req.get_ref().header.as_ref())?;
        Ok(Response::new(pdpb::GetGcSafePointResponse {
            header: self.header(),
            safe_point: self.core.gc_safe_point(),
        }))
    }

    async fn update_gc_safe_point(
        &self,
        req: Request<pdpb::UpdateGcSafePointRequest>,
    ) -> Result<Response<pdpb::UpdateGcSafePointResponse>, Status> {
        let req = req.into_inner();
        check(&self.core, req.header.as_ref())?;
        let new_safe_point = self.core.update_gc_safe_point(req.safe_point).map_err(status)?;
        Ok(Response::new(pdpb::UpdateGcSafePointResponse { header: self.header(), new_safe_point }))
    }
}

pub struct KeyspaceService {
    pub core: Arc<PdCore>,
}

#[tonic::async_trait]
impl Keyspace for KeyspaceService {
    async fn load_keyspace(
        &self,
        req: Request<keyspacepb::LoadKeyspaceRequest>,
    ) -> Result<Response<keyspacepb::LoadKeyspaceResponse>, Status> {
        PD_REQUESTS.with_label_values(&["load_keyspace"]).inc();
        let req = req.into_inner();
        check(&self.core, req.header.as_ref())?;
        let cluster_id = self.core.cluster_id();
        Ok(Response::new(match self.core.load_keyspace(&req.name) {
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
