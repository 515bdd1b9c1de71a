//! Joining the cluster: the store's id, registration with PD, and the
//! one-time cluster bootstrap.

use std::time::Duration;

use atoll_engine_traits::KvEngine;
use atoll_pd_client::PdClient;
use atoll_proto::metapb;
use atoll_raftstore::system::{
    abandon_initial_region, load_regions, load_store_ident, write_initial_region, write_store_ident,
};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("pd: {0}")]
    Pd(#[from] atoll_pd_client::PdError),
    #[error("store: {0}")]
    Store(#[from] atoll_raftstore::Error),
    #[error("data directory belongs to cluster {found}, but PD runs cluster {expected}")]
    WrongCluster { found: u64, expected: u64 },
}

/// Returns this store's id, allocating and persisting one on first start.
pub async fn store_id<E: KvEngine>(pd: &PdClient, engine: &E) -> Result<u64, NodeError> {
    let cluster_id = pd.cluster_id();
    if let Some(ident) = load_store_ident(engine)? {
        if ident.cluster_id != cluster_id {
            return Err(NodeError::WrongCluster { found: ident.cluster_id, expected: cluster_id });
        }
        return Ok(ident.store_id);
    }
    let id = pd.alloc_id().await?;
    write_store_ident(engine, cluster_id, id)?;
    Ok(id)
}

pub async fn register(pd: &PdClient, store: metapb::Store) -> Result<(), NodeError> {
    pd.put_store(store).await?;
    Ok(())
}

fn initial_epoch(r: &metapb::Region) -> bool {
    r.region_epoch.as_ref().is_some_and(|e| e.conf_ver == 1 && e.version == 1)
}

/// Bootstraps the cluster once `max_peer_count` stores have registered: the
/// store with the smallest id creates the first region with a peer on each of
/// the first `max_peer_count` stores. The others create their peer of that
/// region from PD's copy (it is empty, so its initial state is known).
pub async fn bootstrap<E: KvEngine>(pd: &PdClient, engine: &E, me: &metapb::Store) -> Result<(), NodeError> {
    let local = load_regions(engine)?;
    let mut logged = false;
    while !pd.is_bootstrapped().await? {
        // A previous run may have prepared the first region and died before PD knew.
        if let Some(r) = local.iter().find(|r| initial_epoch(r) && r.start_key.is_empty() && r.end_key.is_empty()) {
            pd.bootstrap(me.clone(), r.clone()).await?;
            continue;
        }
        let want = pd.get_cluster_config().await?.max_peer_count.max(1) as usize;
        let mut stores: Vec<u64> = pd.get_all_stores().await?.iter().map(|s| s.id).collect();
        stores.sort_unstable();
        if stores.len() >= want && stores[0] == me.id {
            let region_id = pd.alloc_id().await?;
            let mut peers = Vec::with_capacity(want);
            for s in &stores[..want] {
                peers.push(metapb::Peer { id: pd.alloc_id().await?, store_id: *s, ..Default::default() });
            }
            let region = metapb::Region {
                id: region_id,
                region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
                peers,
                ..Default::default()
            };
            write_initial_region(engine, &region)?;
            if pd.bootstrap(me.clone(), region.clone()).await? {
                tracing::info!(region = region_id, "bootstrapped the cluster");
            } else {
                abandon_initial_region(engine, &region)?;
            }
            break;
        }
        if !logged {
            tracing::info!("waiting for {want} stores to register before bootstrap ({} so far)", stores.len());
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
