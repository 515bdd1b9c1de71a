//! PD's domain core without gRPC: every refusal is a typed [`CoreError`].

mod common;

use atoll_codec::api::ApiVersion;
use atoll_pd::core::{CoreError, SPLIT_COUNT_MAX};
use atoll_proto::{metapb, pdpb};
use common::{open_core as open, region, store};

#[test]
fn bootstrap_once_with_a_valid_api_version() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(&dir);
    assert!(matches!(core.ask_batch_split(&region(), 1), Err(CoreError::NotBootstrapped)));
    assert!(matches!(core.bootstrap(store(1, "a:1"), region(), 3), Err(CoreError::Invalid(_))));
    let no_peers = metapb::Region { peers: vec![], ..region() };
    assert!(matches!(core.bootstrap(store(1, "a:1"), no_peers, 2), Err(CoreError::Invalid(_))));
    assert!(!core.is_bootstrapped());
    assert_eq!(core.bootstrap(store(1, "a:1"), region(), 1).unwrap(), ApiVersion::V1);
    assert!(matches!(
        core.bootstrap(store(1, "a:1"), region(), 2),
        Err(CoreError::AlreadyBootstrapped)
    ));
    assert_eq!(core.cluster_meta().api_version(), Some(ApiVersion::V1));
    assert!(matches!(core.load_keyspace("DEFAULT"), Err(CoreError::NotFound(_))));
    assert_eq!(core.region_by_key(b"any").unwrap().region.id, 2);
}

#[test]
fn stores_keep_their_addresses_apart() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(&dir);
    core.put_store(store(1, "a:1")).unwrap();
    assert!(matches!(core.put_store(store(2, "a:1")), Err(CoreError::Conflict(_))));
    assert!(matches!(core.put_store(store(0, "b:1")), Err(CoreError::Invalid(_))));
    core.put_store(store(1, "a:2")).unwrap();
    core.put_store(store(2, "a:1")).unwrap();
    assert_eq!(core.stores(true).iter().map(|s| s.id).collect::<Vec<_>>(), vec![1, 2]);
    let stats = pdpb::StoreStats { store_id: 9, ..Default::default() };
    assert!(matches!(core.store_heartbeat(stats), Err(CoreError::NotFound(_))));
    assert!(matches!(core.store(9), Err(CoreError::NotFound(_))));
}

#[test]
fn split_ids_and_safe_point() {
    let dir = tempfile::tempdir().unwrap();
    let core = open(&dir);
    core.bootstrap(store(1, "a:1"), region(), 2).unwrap();
    let ids = core.ask_batch_split(&region(), 2).unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().all(|s| s.new_peer_ids.len() == 1));
    for bad in [0, SPLIT_COUNT_MAX + 1] {
        assert!(matches!(core.ask_batch_split(&region(), bad), Err(CoreError::Invalid(_))));
    }
    assert_eq!(core.update_gc_safe_point(10).unwrap(), 10);
    assert_eq!(core.update_gc_safe_point(5).unwrap(), 10, "never moves back");
    assert!(matches!(
        core.check_cluster(core.cluster_id() + 1),
        Err(CoreError::ClusterMismatch { .. })
    ));
    core.check_cluster(0).unwrap();
}
