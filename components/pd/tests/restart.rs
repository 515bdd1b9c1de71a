//! PD over real gRPC: bootstrap, allocate, heartbeat, restart, and check
//! that everything persisted.

mod common;

use atoll_pd::PdServer;
use atoll_proto::pdpb::{self, pd_client::PdClient};
use common::{cfg, region};

async fn client(s: &PdServer) -> PdClient<tonic::transport::Channel> {
    PdClient::connect(format!("http://{}", s.addr)).await.unwrap()
}

async fn tso(c: &mut PdClient<tonic::transport::Channel>, count: u32) -> u64 {
    let req = pdpb::TsoRequest { header: None, count, dc_location: String::new() };
    let mut s = c.tso(tokio_stream::once(req)).await.unwrap().into_inner();
    let ts = s.message().await.unwrap().unwrap().timestamp.unwrap();
    ((ts.physical as u64) << 18) | ts.logical as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster_id, ids, ts) = {
        let s = PdServer::start(cfg(dir.path())).await.unwrap();
        let mut c = client(&s).await;
        let members = c.get_members(pdpb::GetMembersRequest::default()).await.unwrap().into_inner();
        let cluster_id = members.header.unwrap().cluster_id;
        assert!(cluster_id != 0);
        let leader = members.leader.unwrap();
        assert_eq!(leader.client_urls, vec![format!("http://{}", s.addr)]);

        let store = common::store(1, "127.0.0.1:1");
        for bad in [0, 3] {
            let req = pdpb::BootstrapRequest {
                header: None,
                store: Some(store.clone()),
                region: Some(region()),
                api_version: bad,
            };
            let err = c.bootstrap(req).await.expect_err("bootstrap without a valid api version");
            assert!(err.message().contains("api version"), "{err}");
        }
        let r = c
            .bootstrap(pdpb::BootstrapRequest {
                header: None,
                store: Some(store.clone()),
                region: Some(region()),
                api_version: 2,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.header.unwrap().error.is_none());
        let again = c
            .bootstrap(pdpb::BootstrapRequest {
                header: None,
                store: Some(store.clone()),
                region: Some(region()),
                api_version: 2,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            again.header.unwrap().error.unwrap().r#type,
            pdpb::ErrorType::AlreadyBootstrapped as i32
        );

        let mut ids = vec![];
        for _ in 0..5 {
            ids.push(c.alloc_id(pdpb::AllocIdRequest::default()).await.unwrap().into_inner().id);
        }
        let ts = tso(&mut c, 10).await;
        drop(c);
        s.stop().await;
        (cluster_id, ids, ts)
    };

    let s = PdServer::start(cfg(dir.path())).await.unwrap();
    let mut c = client(&s).await;
    let h = c.is_bootstrapped(pdpb::IsBootstrappedRequest::default()).await.unwrap().into_inner();
    assert!(h.bootstrapped);
    assert_eq!(h.header.unwrap().cluster_id, cluster_id, "cluster id is stable");
    let id = c.alloc_id(pdpb::AllocIdRequest::default()).await.unwrap().into_inner().id;
    assert!(ids.iter().all(|old| id > *old), "ids are never reused");
    assert!(tso(&mut c, 1).await > ts, "timestamps keep increasing");
    let r = c
        .get_region(pdpb::GetRegionRequest {
            header: None,
            region_key: b"any".to_vec(),
            need_buckets: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.region.unwrap().id, 2, "routing table persisted");
    let stores =
        c.get_all_stores(pdpb::GetAllStoresRequest::default()).await.unwrap().into_inner().stores;
    assert_eq!(stores.len(), 1);
    let config =
        c.get_cluster_config(pdpb::GetClusterConfigRequest::default()).await.unwrap().into_inner();
    assert_eq!(config.api_version, 2, "api version persisted");
    // Requests for another cluster are refused.
    let wrong = pdpb::AllocIdRequest {
        header: Some(pdpb::RequestHeader { cluster_id: cluster_id + 1, sender_id: 0 }),
    };
    assert!(c.alloc_id(wrong).await.is_err());
    s.stop().await;
}

/// The first store's API version is the cluster's: PD reports it, keeps
/// keyspaces for V2 only, and (V1) leaves the first region whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_version_is_fixed_at_bootstrap() {
    use atoll_proto::keyspacepb::{keyspace_client::KeyspaceClient, LoadKeyspaceRequest};
    let dir = tempfile::tempdir().unwrap();
    let s = PdServer::start(cfg(dir.path())).await.unwrap();
    let mut c = client(&s).await;
    let config =
        c.get_cluster_config(pdpb::GetClusterConfigRequest::default()).await.unwrap().into_inner();
    assert_eq!(config.api_version, 0, "not chosen before bootstrap");
    let store = common::store(1, "127.0.0.1:1");
    let req = pdpb::BootstrapRequest {
        header: None,
        store: Some(store.clone()),
        region: Some(region()),
        api_version: 1,
    };
    assert!(c.bootstrap(req).await.unwrap().into_inner().header.unwrap().error.is_none());
    let config =
        c.get_cluster_config(pdpb::GetClusterConfigRequest::default()).await.unwrap().into_inner();
    assert_eq!(config.api_version, 1);
    // A second bootstrap with another version changes nothing.
    let req = pdpb::BootstrapRequest {
        header: None,
        store: Some(store.clone()),
        region: Some(region()),
        api_version: 2,
    };
    let again = c.bootstrap(req).await.unwrap().into_inner();
    assert_eq!(
        again.header.unwrap().error.unwrap().r#type,
        pdpb::ErrorType::AlreadyBootstrapped as i32
    );
    let config =
        c.get_cluster_config(pdpb::GetClusterConfigRequest::default()).await.unwrap().into_inner();
    assert_eq!(config.api_version, 1);

    let mut ks = KeyspaceClient::connect(format!("http://{}", s.addr)).await.unwrap();
    let resp = ks
        .load_keyspace(LoadKeyspaceRequest { header: None, name: "DEFAULT".into() })
        .await
        .unwrap()
        .into_inner();
    let err = resp.header.unwrap().error.expect("keyspaces need API V2");
    assert!(err.message.contains("API V1"), "{}", err.message);
    assert!(resp.keyspace.is_none());

    // The whole-key-space first region gets no keyspace split.
    let hb = pdpb::RegionHeartbeatRequest {
        region: Some(region()),
        leader: Some(region().peers[0].clone()),
        ..Default::default()
    };
    let mut stream = c.region_heartbeat(tokio_stream::iter(vec![hb])).await.unwrap().into_inner();
    let next = tokio::time::timeout(std::time::Duration::from_millis(500), stream.message()).await;
    assert!(
        !matches!(next, Ok(Ok(Some(ref r))) if r.split_region.is_some()),
        "no split in V1: {next:?}"
    );
    s.stop().await;
}

/// Region lookups before bootstrap wait for it (tikv-client 0.4 commits
/// "successfully" without writing when PD knows no region for a key), and
/// answer `NotBootstrapped` if it does not come within the wait; a region
/// whose leader PD does not know yet is answered with no leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_lookups_wait_for_bootstrap() {
    let dir = tempfile::tempdir().unwrap();
    let s = PdServer::start(cfg(dir.path())).await.unwrap();
    let mut c = client(&s).await;
    let lookup = |c: &mut PdClient<tonic::transport::Channel>| {
        let mut c = c.clone();
        async move {
            let req = pdpb::GetRegionRequest {
                header: None,
                region_key: b"k".to_vec(),
                need_buckets: false,
            };
            c.get_region(req).await.unwrap().into_inner()
        }
    };
    let started = std::time::Instant::now();
    let r = lookup(&mut c).await;
    assert!(started.elapsed() >= atoll_pd::core::ROUTING_WAIT, "answered without waiting");
    assert!(r.region.is_none());
    assert_eq!(r.header.unwrap().error.unwrap().r#type, pdpb::ErrorType::NotBootstrapped as i32);
    let scan =
        pdpb::ScanRegionsRequest { start_key: vec![], end_key: vec![], limit: 0, header: None };
    let r = c.scan_regions(scan).await.unwrap().into_inner();
    assert_eq!(r.header.unwrap().error.unwrap().r#type, pdpb::ErrorType::NotBootstrapped as i32);

    // A lookup already waiting is answered by the bootstrap.
    let waiting = tokio::spawn(lookup(&mut c));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let req = pdpb::BootstrapRequest {
        header: None,
        store: Some(common::store(1, "127.0.0.1:1")),
        region: Some(region()),
        api_version: 1,
    };
    assert!(c.bootstrap(req).await.unwrap().into_inner().header.unwrap().error.is_none());
    let r = waiting.await.unwrap();
    assert!(r.header.unwrap().error.is_none());
    // No store has reported a leader yet: the region with its peers and no
    // leader, not withheld (clients then try the peers).
    assert!(r.leader.is_none(), "{:?}", r.leader);
    let region = r.region.unwrap();
    assert_eq!(region.id, 2);
    assert!(!region.peers.is_empty());
    s.stop().await;
}
