//! Fixtures shared by PD's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::sync::Arc;

use atoll_pd::core::PdCore;
use atoll_pd::Config;
use atoll_proto::metapb;

/// A PD config on ephemeral ports with its data in `dir`.
pub fn cfg(dir: &std::path::Path) -> Config {
    Config {
        client_addr: "127.0.0.1:0".into(),
        status_addr: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    }
}

pub fn open_core(dir: &tempfile::TempDir) -> Arc<PdCore> {
    PdCore::open(cfg(dir.path())).unwrap()
}

pub fn store(id: u64, addr: &str) -> metapb::Store {
    metapb::Store { id, address: addr.into(), ..Default::default() }
}

/// Region 2 with one peer (3) on store 1: a bootstrap region.
pub fn region() -> metapb::Region {
    metapb::Region {
        id: 2,
        region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
        peers: vec![metapb::Peer { id: 3, store_id: 1, ..Default::default() }],
        ..Default::default()
    }
}
