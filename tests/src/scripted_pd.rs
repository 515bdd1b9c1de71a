//! A PD group whose leadership a test scripts: each member is the leader,
//! a follower naming whichever leader the test says (a dead one too), or
//! dead (listener and connections closed). It answers `GetMembers` and
//! the region heartbeat stream as a real PD member does in that role,
//! records the heartbeats its leader receives, and refuses every other
//! call. For deterministic tests of how stores and clients follow a PD
//! leader change.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use atoll_proto::pdpb::{self, pd_server::Pd, pd_server::PdServer};
use futures::Stream;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

pub const CLUSTER_ID: u64 = 42;

/// What a member does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    /// A follower naming member `i` as the leader (`None`: no leader yet).
    Follower(Option<usize>),
}

struct MemberState {
    role: Role,
    /// Region ids heartbeated to this member while it led, with when.
    heartbeats: Vec<(u64, Instant)>,
    /// `GetMembers` calls it answered.
    members_asked: usize,
    /// Heartbeat streams it accepted, and streams it refused.
    streams_opened: usize,
    streams_refused: usize,
    /// Ends the open heartbeat streams (a member stepping down closes them).
    stream_closers: Vec<mpsc::Sender<Result<pdpb::RegionHeartbeatResponse, Status>>>,
}

struct Shared {
    urls: Vec<String>,
    members: Vec<Mutex<MemberState>>,
}

impl Shared {
    fn member_pb(&self, i: usize) -> pdpb::Member {
        pdpb::Member {
            name: format!("pd{i}"),
            member_id: i as u64 + 1,
            client_urls: vec![self.urls[i].clone()],
            peer_urls: vec![self.urls[i].clone()],
            ..Default::default()
        }
    }

    fn leader_named_by(&self, i: usize) -> Option<usize> {
        match self.members[i].lock().role {
            Role::Leader => Some(i),
            Role::Follower(l) => l,
        }
    }
}

pub struct ScriptedPd {
    shared: Arc<Shared>,
    servers: Vec<Option<(atoll_util::conn::Connections, tokio::task::JoinHandle<()>)>>,
}

impl ScriptedPd {
    /// `roles.len()` members on loopback, each in its role.
    pub async fn start(roles: &[Role]) -> ScriptedPd {
        let mut listeners = vec![];
        for _ in roles {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let urls =
            listeners.iter().map(|l| format!("http://{}", l.local_addr().unwrap())).collect();
        let members = roles
            .iter()
            .map(|r| {
                Mutex::new(MemberState {
                    role: r.clone(),
                    heartbeats: vec![],
                    members_asked: 0,
                    streams_opened: 0,
                    streams_refused: 0,
                    stream_closers: vec![],
                })
            })
            .collect();
        let shared = Arc::new(Shared { urls, members });
        let mut servers = vec![];
        for (i, listener) in listeners.into_iter().enumerate() {
            let conns = atoll_util::conn::Connections::new();
            let incoming = conns.incoming_tls(listener, None);
            let svc = PdServer::new(Member { i, shared: shared.clone() });
            let task = tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(incoming)
                    .await;
            });
            servers.push(Some((conns, task)));
        }
        ScriptedPd { shared, servers }
    }

    /// Every member's client URL (the endpoints a store is configured with).
    pub fn endpoints(&self) -> Vec<String> {
        self.shared.urls.clone()
    }

    /// Gives member `i` a new role; a leader that stops leading closes its
    /// heartbeat streams, as a real one does.
    pub fn set_role(&self, i: usize, role: Role) {
        let mut m = self.shared.members[i].lock();
        if m.role == Role::Leader && role != Role::Leader {
            m.stream_closers.clear();
        }
        m.role = role;
    }

    /// Kills member `i`: its port refuses connections, open ones are cut.
    pub async fn kill(&mut self, i: usize) {
        if let Some((conns, task)) = self.servers[i].take() {
            task.abort();
            let _ = task.await;
            conns.close();
        }
        self.shared.members[i].lock().stream_closers.clear();
    }

    /// Region ids heartbeated to member `i` while it led, with when.
    pub fn heartbeats(&self, i: usize) -> Vec<(u64, Instant)> {
        self.shared.members[i].lock().heartbeats.clone()
    }

    /// `GetMembers` calls member `i` answered.
    pub fn members_asked(&self, i: usize) -> usize {
        self.shared.members[i].lock().members_asked
    }

    /// (accepted, refused) heartbeat streams of member `i`.
    pub fn streams(&self, i: usize) -> (usize, usize) {
        let m = self.shared.members[i].lock();
        (m.streams_opened, m.streams_refused)
    }
}

struct Member {
    i: usize,
    shared: Arc<Shared>,
}

impl Member {
    fn not_leader(&self) -> Status {
        let leader = self.shared.leader_named_by(self.i).map(|l| self.shared.urls[l].clone());
        Status::unavailable(format!(
            "not leader (leader: {})",
            leader.as_deref().unwrap_or("none yet")
        ))
    }

    fn header() -> Option<pdpb::ResponseHeader> {
        Some(pdpb::ResponseHeader { cluster_id: CLUSTER_ID, error: None })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Methods the scripted PD refuses, spelled as `#[tonic::async_trait]`
/// expands an `async fn` (the attribute does not look into macros).
macro_rules! refused {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {$(
        fn $name<'life0, 'async_trait>(
            &'life0 self,
            _: Request<$req>,
        ) -> Pin<Box<dyn Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async {
                Err(Status::unimplemented(concat!("scripted PD: no ", stringify!($name))))
            })
        }
    )*};
}

#[tonic::async_trait]
impl Pd for Member {
    async fn get_members(
        &self,
        _: Request<pdpb::GetMembersRequest>,
    ) -> Result<Response<pdpb::GetMembersResponse>, Status> {
        let s = &self.shared;
        s.members[self.i].lock().members_asked += 1;
        // As a real PD member that knows no leader (pd/src/service.rs).
        let Some(leader) = s.leader_named_by(self.i).map(|l| s.member_pb(l)) else {
            return Err(Status::unavailable("no PD leader yet"));
        };
        let leader = Some(leader);
        Ok(Response::new(pdpb::GetMembersResponse {
            header: Self::header(),
            members: (0..s.urls.len()).map(|i| s.member_pb(i)).collect(),
            etcd_leader: leader.clone(),
            leader,
            ..Default::default()
        }))
    }

    type RegionHeartbeatStream = BoxStream<pdpb::RegionHeartbeatResponse>;

    async fn region_heartbeat(
        &self,
        req: Request<Streaming<pdpb::RegionHeartbeatRequest>>,
    ) -> Result<Response<Self::RegionHeartbeatStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        {
            let mut m = self.shared.members[self.i].lock();
            if m.role != Role::Leader {
                m.streams_refused += 1;
                drop(m);
                return Err(self.not_leader());
            }
            m.streams_opened += 1;
            m.stream_closers.push(tx.clone());
        }
        let (i, shared) = (self.i, self.shared.clone());
        let mut inbound = req.into_inner();
        tokio::spawn(async move {
            while let Some(Ok(hb)) = inbound.next().await {
                let mut m = shared.members[i].lock();
                if m.role != Role::Leader {
                    break;
                }
                if let Some(r) = hb.region {
                    m.heartbeats.push((r.id, Instant::now()));
                }
            }
        });
        // The response stream ends when every sender is gone: the one in
        // `stream_closers` (dropped on step-down or death) and this one.
        drop(tx);
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    type TsoStream = BoxStream<pdpb::TsoResponse>;

    async fn tso(
        &self,
        _: Request<Streaming<pdpb::TsoRequest>>,
    ) -> Result<Response<Self::TsoStream>, Status> {
        Err(Status::unimplemented("scripted PD: no tso"))
    }

    refused! {
        bootstrap(pdpb::BootstrapRequest) -> pdpb::BootstrapResponse;
        is_bootstrapped(pdpb::IsBootstrappedRequest) -> pdpb::IsBootstrappedResponse;
        alloc_id(pdpb::AllocIdRequest) -> pdpb::AllocIdResponse;
        get_store(pdpb::GetStoreRequest) -> pdpb::GetStoreResponse;
        put_store(pdpb::PutStoreRequest) -> pdpb::PutStoreResponse;
        get_all_stores(pdpb::GetAllStoresRequest) -> pdpb::GetAllStoresResponse;
        store_heartbeat(pdpb::StoreHeartbeatRequest) -> pdpb::StoreHeartbeatResponse;
        get_region(pdpb::GetRegionRequest) -> pdpb::GetRegionResponse;
        get_prev_region(pdpb::GetRegionRequest) -> pdpb::GetRegionResponse;
        get_region_by_id(pdpb::GetRegionByIdRequest) -> pdpb::GetRegionResponse;
        scan_regions(pdpb::ScanRegionsRequest) -> pdpb::ScanRegionsResponse;
        ask_batch_split(pdpb::AskBatchSplitRequest) -> pdpb::AskBatchSplitResponse;
        report_batch_split(pdpb::ReportBatchSplitRequest) -> pdpb::ReportBatchSplitResponse;
        get_cluster_config(pdpb::GetClusterConfigRequest) -> pdpb::GetClusterConfigResponse;
        put_cluster_config(pdpb::PutClusterConfigRequest) -> pdpb::PutClusterConfigResponse;
        get_gc_safe_point(pdpb::GetGcSafePointRequest) -> pdpb::GetGcSafePointResponse;
        update_gc_safe_point(pdpb::UpdateGcSafePointRequest) -> pdpb::UpdateGcSafePointResponse;
    }
}
