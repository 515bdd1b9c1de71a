//! Joining the cluster: the store's id, registration with PD, and the
//! one-time cluster bootstrap.

use std::time::Duration;

use atoll_codec::api::ApiVersion;
use atoll_engine_traits::KvEngine;
use atoll_pd_client::PdClient;
use atoll_proto::atollpb::StoreIdent;
use atoll_proto::metapb;
use atoll_raftstore::keys::DATA_FORMAT;
use atoll_raftstore::system::{
    abandon_initial_region, load_regions, load_store_ident, write_initial_region, write_store_ident,
};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("pd: {0}")]
    Pd(#[from] atoll_pd_client::PdError),
    #[error("store: {0}")]
    Store(#[from] atoll_raftstore::Error),
    #[error(
        "store {0} was deleted from the cluster (it is a tombstone) and cannot start again; \
         start a new store with an empty data directory"
    )]
    Tombstone(u64),
    #[error("data directory belongs to cluster {found}, but PD runs cluster {expected}")]
    WrongCluster { found: u64, expected: u64 },
    #[error(
        "data directory uses data format {found}, this build reads format {expected} only \
         (written by an older Atoll); move it away and start with an empty one"
    )]
    DataFormat { found: u32, expected: u32 },
    #[error("data directory was written by an API {found} store, but storage.api-version is {}", .configured.config_value())]
    DataApiVersion { found: String, configured: ApiVersion },
    #[error(
        "the cluster runs API {cluster} (fixed when it was bootstrapped), but this store's \
         storage.api-version is {}; set storage.api-version = {} or join another cluster",
        .configured.config_value(), .cluster.config_value()
    )]
    ClusterApiVersion { cluster: ApiVersion, configured: ApiVersion },
}

/// Returns this store's id, allocating and persisting one on first start.
/// A data directory of another cluster, data format or API version is refused.
pub async fn store_id<E: KvEngine>(
    pd: &PdClient,
    engine: &E,
    api_version: ApiVersion,
) -> Result<u64, NodeError> {
    let cluster_id = pd.cluster_id();
    if let Some(ident) = load_store_ident(engine)? {
        if ident.cluster_id != cluster_id {
            return Err(NodeError::WrongCluster { found: ident.cluster_id, expected: cluster_id });
        }
        if ident.data_format != DATA_FORMAT {
            return Err(NodeError::DataFormat { found: ident.data_format, expected: DATA_FORMAT });
        }
        if ApiVersion::from_proto(ident.api_version) != Some(api_version) {
            let found = ApiVersion::from_proto(ident.api_version)
                .map_or_else(|| format!("(unknown: {})", ident.api_version), |v| v.to_string());
            return Err(NodeError::DataApiVersion { found, configured: api_version });
        }
        return Ok(ident.store_id);
    }
    let store_id = pd.alloc_id().await?;
    let ident = StoreIdent {
        cluster_id,
        store_id,
        api_version: api_version.to_proto(),
        data_format: DATA_FORMAT,
    };
    write_store_ident(engine, &ident)?;
    Ok(store_id)
}

/// Refuses to serve a cluster whose API version (once bootstrapped) is not
/// this store's.
pub async fn check_cluster_api_version(
    pd: &PdClient,
    configured: ApiVersion,
) -> Result<(), NodeError> {
    match pd.api_version().await? {
        Some(cluster) if cluster != configured => {
            Err(NodeError::ClusterApiVersion { cluster, configured })
        }
        _ => Ok(()),
    }
}

/// Registers the store with PD; a deleted (tombstone) store is refused.
pub async fn register(pd: &PdClient, store: metapb::Store) -> Result<(), NodeError> {
    let id = store.id;
    match pd.put_store(store).await {
        Err(atoll_pd_client::PdError::Header {
            kind: atoll_proto::pdpb::ErrorType::StoreTombstone,
            ..
        }) => Err(NodeError::Tombstone(id)),
        r => Ok(r?),
    }
}

/// The stores of the first region: by id, skipping any whose `host` label
/// an earlier pick has (PD's placement rule), at most `want`.
fn first_on_distinct_hosts(mut stores: Vec<metapb::Store>, want: usize) -> Vec<u64> {
    stores.sort_by_key(|s| s.id);
    let host = |s: &metapb::Store| {
        s.labels.iter().find(|l| l.key == "host" && !l.value.is_empty()).map(|l| l.value.clone())
    };
    let mut hosts = std::collections::HashSet::new();
    stores
        .iter()
        .filter(|s| host(s).is_none_or(|h| hosts.insert(h)))
        .map(|s| s.id)
        .take(want)
        .collect()
}

fn initial_epoch(r: &metapb::Region) -> bool {
    r.region_epoch.as_ref().is_some_and(|e| e.conf_ver == 1 && e.version == 1)
}

/// Bootstraps the cluster once `max_peer_count` stores have registered: the
/// store with the smallest id creates the first region with a peer on each of
/// the first `max_peer_count` stores. The others create their peer of that
/// region from PD's copy (it is empty, so its initial state is known).
pub async fn bootstrap<E: KvEngine>(
    pd: &PdClient,
    engine: &E,
    me: &metapb::Store,
    api_version: ApiVersion,
) -> Result<(), NodeError> {
    let local = load_regions(engine)?;
    let mut logged = false;
    while !pd.is_bootstrapped().await? {
        // A previous run may have prepared the first region and died before PD knew.
        if let Some(r) = local
            .iter()
            .find(|r| initial_epoch(r) && r.start_key.is_empty() && r.end_key.is_empty())
        {
            pd.bootstrap(me.clone(), r.clone(), api_version).await?;
            continue;
        }
        let want = pd.get_cluster_config().await?.max_peer_count.max(1) as usize;
        let stores = first_on_distinct_hosts(pd.get_all_stores().await?, want);
        if stores.len() >= want && stores[0] == me.id {
            let region_id = pd.alloc_id().await?;
            let mut peers = Vec::with_capacity(want);
            for s in &stores[..want] {
                peers.push(metapb::Peer {
                    id: pd.alloc_id().await?,
                    store_id: *s,
                    ..Default::default()
                });
            }
            let region = metapb::Region {
                id: region_id,
                region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
                peers,
                ..Default::default()
            };
            write_initial_region(engine, &region)?;
            if pd.bootstrap(me.clone(), region.clone(), api_version).await? {
                tracing::info!(region = region_id, "bootstrapped the cluster");
            } else {
                abandon_initial_region(engine, &region)?;
            }
            break;
        }
        if !logged {
            tracing::info!(
                "waiting for {want} stores on distinct hosts to register before bootstrap ({} so far)",
                stores.len()
            );
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if load_regions(engine)?.is_empty() {
        if let Some(info) = pd.get_region(b"").await? {
            let r = info.region;
            if initial_epoch(&r) && r.peers.iter().any(|p| p.store_id == me.id) {
                write_initial_region(engine, &r)?;
                tracing::info!(region = r.id, "created this store's peer of the first region");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_region_goes_to_distinct_hosts() {
        let store = |id: u64, host: Option<&str>| metapb::Store {
            id,
            labels: host
                .map(|h| vec![metapb::StoreLabel { key: "host".into(), value: h.into() }])
                .unwrap_or_default(),
            ..Default::default()
        };
        let stores =
            vec![store(4, Some("c")), store(2, Some("a")), store(1, Some("a")), store(3, None)];
        assert_eq!(first_on_distinct_hosts(stores.clone(), 3), vec![1, 3, 4]);
        assert_eq!(
            first_on_distinct_hosts(stores[1..3].to_vec(), 3),
            vec![1],
            "one host: one pick"
        );
    }
}
