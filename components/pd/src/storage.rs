//! PD's durable state: cluster meta, id and TSO upper bounds, stores,
//! regions, running operators and the GC safe point, in an embedded
//! RocksDB or in etcd.

use std::path::Path;
use std::sync::Arc;

use atoll_engine_rocks::{RocksConfig, RocksEngine};
use atoll_engine_traits::{Iterable, KvEngine, Peekable, WriteBatch, WriteOptions, CF_DEFAULT};
use atoll_proto::metapb;
use prost::Message;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("pd storage: {0}")]
    Engine(#[from] atoll_engine_traits::Error),
    #[error("pd storage corrupted at {key}: {msg}")]
    Corrupted { key: String, msg: String },
    #[error("pd storage (etcd): {0}")]
    Etcd(String),
    /// A write of a PD member that is no longer the leader (etcd refused it).
    #[error("this PD member is no longer the leader")]
    NotLeader,
}

pub type Result<T> = std::result::Result<T, StorageError>;

const META_KEY: &[u8] = b"meta";
const ID_KEY: &[u8] = b"alloc_id";
const TSO_KEY: &[u8] = b"tso";
const SAFE_POINT_KEY: &[u8] = b"gc_safe_point";
const STORE_PREFIX: &[u8] = b"store/";
const REGION_PREFIX: &[u8] = b"region/";
const OPERATORS_KEY: &[u8] = b"operators";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub cluster_id: u64,
    pub bootstrapped: bool,
    pub max_peer_count: u32,
    /// `storage.api-version` of the cluster (1 or 2), recorded at bootstrap;
    /// 0 before (and in metadata older than the field, which was V2).
    #[serde(default)]
    pub api_version: u8,
}

impl ClusterMeta {
    /// The cluster's API version once bootstrapped.
    pub fn api_version(&self) -> Option<atoll_codec::api::ApiVersion> {
        use atoll_codec::api::ApiVersion;
        match (self.bootstrapped, ApiVersion::from_config(self.api_version)) {
            (false, _) => None,
            (true, Some(v)) => Some(v),
            (true, None) => Some(ApiVersion::V2),
        }
    }
}

/// The key-value store under PD's state: an embedded RocksDB (one PD) or
/// etcd (several PD members, see `etcd.rs`).
pub trait MetaKv: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// `sync`: durable before it returns (etcd always is).
    fn put(&self, key: &[u8], value: &[u8], sync: bool) -> Result<()>;
    fn delete(&self, key: &[u8]) -> Result<()>;
    /// Every pair whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Makes every earlier write durable.
    fn sync(&self) -> Result<()>;
}

/// PD's state in a RocksDB of its own.
pub struct RocksKv {
    engine: RocksEngine,
}

impl RocksKv {
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| atoll_engine_traits::Error::Engine(e.to_string()))?;
        let cfg = RocksConfig { write_buffer_size: 8 << 20, ..RocksConfig::default() };
        Ok(RocksKv { engine: RocksEngine::open(dir, &cfg)? })
    }
}

impl MetaKv for RocksKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.engine.get_value(key)?)
    }

    fn put(&self, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
        let mut wb = self.engine.write_batch();
        wb.put_cf(CF_DEFAULT, key, value)?;
        let opts = if sync { WriteOptions::sync() } else { WriteOptions::default() };
        self.engine.write(&mut wb, opts)?;
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<()> {
        self.engine.delete_cf(CF_DEFAULT, key)?;
        Ok(())
    }

    fn scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = vec![];
        self.engine.scan_cf(CF_DEFAULT, prefix, &prefix_end(prefix), false, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })?;
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        self.engine.sync()?;
        Ok(())
    }
}

/// PD's records over a [`MetaKv`].
#[derive(Clone)]
pub struct Storage {
    kv: Arc<dyn MetaKv>,
}

fn prefixed(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut e = prefix.to_vec();
    *e.last_mut().expect("non-empty prefix") += 1;
    e
}

impl Storage {
    /// Storage in an embedded RocksDB at `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self::new(Arc::new(RocksKv::open(dir)?)))
    }

    pub fn new(kv: Arc<dyn MetaKv>) -> Self {
        Storage { kv }
    }

    fn put_sync(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.kv.put(key, value, true)
    }

    fn get_u64(&self, key: &[u8]) -> Result<Option<u64>> {
        match self.kv.get(key)? {
            None => Ok(None),
            Some(v) => {
                let arr: [u8; 8] =
                    v.as_slice().try_into().map_err(|_| StorageError::Corrupted {
                        key: String::from_utf8_lossy(key).into(),
                        msg: format!("expected 8 bytes, got {}", v.len()),
                    })?;
                Ok(Some(u64::from_be_bytes(arr)))
            }
        }
    }

    pub fn load_meta(&self) -> Result<Option<ClusterMeta>> {
        match self.kv.get(META_KEY)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| StorageError::Corrupted { key: "meta".into(), msg: e.to_string() }),
        }
    }

    pub fn save_meta(&self, m: &ClusterMeta) -> Result<()> {
        self.put_sync(META_KEY, &serde_json::to_vec(m).expect("meta serializes"))
    }

    pub fn load_id_end(&self) -> Result<u64> {
        Ok(self.get_u64(ID_KEY)?.unwrap_or(0))
    }

    pub fn save_id_end(&self, end: u64) -> Result<()> {
        self.put_sync(ID_KEY, &end.to_be_bytes())
    }

    pub fn load_tso_limit(&self) -> Result<u64> {
        Ok(self.get_u64(TSO_KEY)?.unwrap_or(0))
    }

    pub fn save_tso_limit(&self, ms: u64) -> Result<()> {
        self.put_sync(TSO_KEY, &ms.to_be_bytes())
    }

    pub fn load_safe_point(&self) -> Result<u64> {
        Ok(self.get_u64(SAFE_POINT_KEY)?.unwrap_or(0))
    }

    pub fn save_safe_point(&self, sp: u64) -> Result<()> {
        self.put_sync(SAFE_POINT_KEY, &sp.to_be_bytes())
    }

    pub fn save_store(&self, s: &metapb::Store) -> Result<()> {
        self.put_sync(&prefixed(STORE_PREFIX, s.id), &s.encode_to_vec())
    }

    /// Region writes are not synced one by one: heartbeats re-send them.
    pub fn save_region(&self, r: &metapb::Region) -> Result<()> {
        self.kv.put(&prefixed(REGION_PREFIX, r.id), &r.encode_to_vec(), false)
    }

    pub fn delete_region(&self, id: u64) -> Result<()> {
        self.kv.delete(&prefixed(REGION_PREFIX, id))
    }

    /// The running operators (JSON, see `schedule::operator`), saved so a
    /// new PD leader goes on with them.
    pub fn save_operators(&self, json: &[u8]) -> Result<()> {
        self.kv.put(OPERATORS_KEY, json, false)
    }

    pub fn load_operators(&self) -> Result<Option<Vec<u8>>> {
        self.kv.get(OPERATORS_KEY)
    }

    fn load_all<M: Message + Default>(&self, prefix: &[u8]) -> Result<Vec<M>> {
        self.kv
            .scan(prefix)?
            .into_iter()
            .map(|(k, v)| {
                M::decode(v.as_slice()).map_err(|e| StorageError::Corrupted {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    msg: e.to_string(),
                })
            })
            .collect()
    }

    pub fn load_stores(&self) -> Result<Vec<metapb::Store>> {
        self.load_all(STORE_PREFIX)
    }

    pub fn load_regions(&self) -> Result<Vec<metapb::Region>> {
        self.load_all(REGION_PREFIX)
    }

    pub fn sync(&self) -> Result<()> {
        self.kv.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Storage::open(dir.path()).unwrap();
            assert_eq!(s.load_meta().unwrap(), None);
            s.save_meta(&ClusterMeta {
                cluster_id: 7,
                bootstrapped: true,
                max_peer_count: 3,
                api_version: 1,
            })
            .unwrap();
            s.save_id_end(2000).unwrap();
            s.save_tso_limit(123456).unwrap();
            s.save_store(&metapb::Store { id: 1, address: "a".into(), ..Default::default() })
                .unwrap();
            s.save_region(&metapb::Region { id: 2, ..Default::default() }).unwrap();
            s.save_region(&metapb::Region { id: 3, ..Default::default() }).unwrap();
            s.delete_region(3).unwrap();
            s.sync().unwrap();
        }
        let s = Storage::open(dir.path()).unwrap();
        assert_eq!(s.load_meta().unwrap().unwrap().cluster_id, 7);
        assert_eq!(
            s.load_meta().unwrap().unwrap().api_version(),
            Some(atoll_codec::api::ApiVersion::V1)
        );
        assert_eq!(s.load_id_end().unwrap(), 2000);
        assert_eq!(s.load_tso_limit().unwrap(), 123456);
        assert_eq!(s.load_stores().unwrap().len(), 1);
        assert_eq!(s.load_regions().unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![2]);
    }
}
