use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use atoll_codec::api::ApiVersion;
use atoll_util::{ReadableDuration, ReadableSize};
use serde::{Deserialize, Serialize};

/// The whole `atoll-server` configuration (`etc/config-template.toml`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub log_level: String,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub pd: PdConfig,
    pub raftstore: atoll_raftstore::Config,
    pub pessimistic_txn: PessimisticTxnConfig,
    /// Mutual TLS on every port and to PD and other stores (none: plaintext).
    pub security: atoll_util::tls::SecurityConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: "info".into(),
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            pd: PdConfig::default(),
            raftstore: atoll_raftstore::Config::default(),
            pessimistic_txn: PessimisticTxnConfig::default(),
            security: atoll_util::tls::SecurityConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServerConfig {
    /// gRPC address for clients and peers.
    pub addr: String,
    /// Address other stores and clients use; defaults to `addr`.
    pub advertise_addr: String,
    /// `/metrics` and `/status`.
    pub status_addr: String,
    /// Address Prometheus and tools reach `status_addr` at (PD shows it);
    /// defaults to `status_addr`.
    pub advertise_status_addr: String,
    /// Keys longer than this are rejected.
    pub max_key_size: ReadableSize,
    /// Values larger than this are rejected (must stay below the raft entry limit).
    pub max_value_size: ReadableSize,
    /// Largest `limit` a scan may ask for.
    pub max_scan_limit: u32,
    /// Raft messages queued per target store before sends fail.
    pub raft_msg_queue_max: usize,
    /// Messages and bytes per transport batch.
    pub raft_msg_batch_max: usize,
    pub raft_msg_batch_bytes_max: ReadableSize,
    /// Largest gRPC message accepted or sent.
    pub grpc_max_message_size: ReadableSize,
    /// How often the GC worker asks PD whether the GC safe point moved.
    pub gc_interval: ReadableDuration,
    /// How far ahead of PD's clock a request's timestamp may be (TiKV's
    /// `storage.max-ts.max-drift`); one further ahead is refused, as raising
    /// `max_ts` to it would push later async-commit and 1PC commits up.
    pub max_ts_drift: ReadableDuration,
    /// Store labels, e.g. `labels = { zone = "z1", host = "h1" }`. PD never
    /// puts two replicas of a region on stores with the same `host`.
    pub labels: BTreeMap<String, String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: "127.0.0.1:20160".into(),
            advertise_addr: String::new(),
            status_addr: "127.0.0.1:20180".into(),
            advertise_status_addr: String::new(),
            max_key_size: ReadableSize::kib(8),
            max_value_size: ReadableSize::mib(6),
            max_scan_limit: 10240,
            raft_msg_queue_max: 8192,
            raft_msg_batch_max: 256,
            raft_msg_batch_bytes_max: ReadableSize::mib(10),
            grpc_max_message_size: ReadableSize::mib(64),
            gc_interval: ReadableDuration(std::time::Duration::from_secs(10)),
            max_ts_drift: ReadableDuration(std::time::Duration::from_secs(60)),
            labels: BTreeMap::new(),
        }
    }
}

/// Pessimistic lock waiting (TiKV's `[pessimistic-txn]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct PessimisticTxnConfig {
    /// The longest a PessimisticLock request waits for another
    /// transaction's lock to go (its `wait_timeout` 0 means this long).
    pub wait_for_lock_timeout: ReadableDuration,
    /// Requests waiting at once on this store; more answer the lock at once.
    pub max_waiters: usize,
}

impl Default for PessimisticTxnConfig {
    fn default() -> Self {
        PessimisticTxnConfig {
            wait_for_lock_timeout: ReadableDuration(std::time::Duration::from_secs(1)),
            max_waiters: 10_240,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// The cluster's API version (TiKV `storage.api-version`): 1 serves raw
    /// keys as they are (tikv-client `RawClient::new`, tikv-python), 2 serves
    /// keyspaces (tikv-client with a keyspace). The first store to bootstrap
    /// fixes it for the cluster; a store configured otherwise refuses to start.
    pub api_version: u8,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { data_dir: PathBuf::from("./data/store"), api_version: 2 }
    }
}

impl StorageConfig {
    /// The configured API version (validated by [`Config::validate`]).
    pub fn api_version(&self) -> ApiVersion {
        ApiVersion::from_config(self.api_version).expect("validated storage.api-version")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct PdConfig {
    pub endpoints: Vec<String>,
}

impl Default for PdConfig {
    fn default() -> Self {
        PdConfig { endpoints: vec!["127.0.0.1:2379".into()] }
    }
}

impl Config {
    pub fn from_toml(s: &str) -> Result<Config, String> {
        toml::from_str(s).map_err(|e| e.to_string())
    }

    pub fn validate(&self) -> Result<(), String> {
        self.security.validate().map_err(|e| e.to_string())?;
        if let Some((k, v)) =
            self.server.labels.iter().find(|(k, v)| k.trim().is_empty() || v.trim().is_empty())
        {
            return Err(format!("server.labels: empty label key or value ({k:?} = {v:?})"));
        }
        for (name, a, advertised) in [
            ("addr", &self.server.addr, &self.server.advertise_addr),
            ("status-addr", &self.server.status_addr, &self.server.advertise_status_addr),
        ] {
            let listen =
                a.parse::<SocketAddr>().map_err(|e| format!("server.{name} {a:?}: {e}"))?;
            check_advertised(name, listen, advertised)?;
        }
        if self.pd.endpoints.is_empty() {
            return Err("pd.endpoints must list at least one PD".into());
        }
        if ApiVersion::from_config(self.storage.api_version).is_none() {
            return Err(format!(
                "storage.api-version must be 1 or 2, not {}",
                self.storage.api_version
            ));
        }
        if self.server.max_key_size.0 == 0 || self.server.max_value_size.0 == 0 {
            return Err("server.max-key-size and max-value-size must be positive".into());
        }
        if self.server.max_value_size.0 + self.server.max_key_size.0 + 1024
            > self.raftstore.raft_entry_max_size.0
        {
            return Err(format!(
                "server.max-value-size ({}) must leave room under raftstore.raft-entry-max-size ({})",
                self.server.max_value_size, self.raftstore.raft_entry_max_size
            ));
        }
        if self.server.max_scan_limit == 0
            || self.server.raft_msg_queue_max == 0
            || self.server.raft_msg_batch_max == 0
        {
            return Err(
                "server scan limit and raft message queue/batch limits must be positive".into()
            );
        }
        if self.server.max_ts_drift.0 < std::time::Duration::from_secs(1) {
            return Err("server.max-ts-drift must be at least 1s".into());
        }
        let wait = self.pessimistic_txn.wait_for_lock_timeout.0;
        if wait.is_zero() || wait > std::time::Duration::from_secs(3600) {
            return Err("pessimistic-txn.wait-for-lock-timeout must be between 1ms and 1h".into());
        }
        if self.pessimistic_txn.max_waiters == 0 {
            return Err("pessimistic-txn.max-waiters must be positive".into());
        }
        if self.server.gc_interval.0.is_zero() {
            return Err("server.gc-interval must be positive".into());
        }
        if self.server.grpc_max_message_size.0 < self.raftstore.raft_entry_max_size.0 * 2 {
            return Err(
                "server.grpc-max-message-size must be at least twice raftstore.raft-entry-max-size"
                    .into(),
            );
        }
        self.raftstore.validate()
    }

    /// The address PD records for `/metrics` and `/status` (`bound`: the
    /// address the status server listens on).
    pub fn advertise_status_addr(&self, bound: SocketAddr) -> String {
        if self.server.advertise_status_addr.is_empty() {
            bound.to_string()
        } else {
            self.server.advertise_status_addr.clone()
        }
    }

    pub fn advertise_addr(&self) -> String {
        if self.server.advertise_addr.is_empty() {
            self.server.addr.clone()
        } else {
            self.server.advertise_addr.clone()
        }
    }
}

/// A listen address on every interface (`0.0.0.0`, `[::]`) needs an
/// advertised one that other hosts can reach: `host:port`, not itself
/// unspecified.
fn check_advertised(name: &str, listen: SocketAddr, advertised: &str) -> Result<(), String> {
    if advertised.is_empty() {
        if listen.ip().is_unspecified() {
            return Err(format!(
                "server.{name} {listen} listens on every interface: set server.advertise-{name} \
                 to an address other hosts can reach"
            ));
        }
        return Ok(());
    }
    let Some((host, port)) = advertised.rsplit_once(':') else {
        return Err(format!("server.advertise-{name} {advertised:?} needs host:port"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("server.advertise-{name} {advertised:?} needs host:port"));
    }
    if advertised.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_unspecified()) {
        return Err(format!(
            "server.advertise-{name} {advertised} is not reachable from other hosts"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_template_equals_defaults() {
        // The running test's manifest dir (cargo test sets it): the
        // compile-time one may name another checkout of a shared target dir.
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
        let text = std::fs::read_to_string(format!("{dir}/../../etc/config-template.toml"))
            .expect("etc/config-template.toml exists");
        let parsed = Config::from_toml(&text).unwrap();
        assert_eq!(
            parsed,
            Config::default(),
            "etc/config-template.toml drifted from Config::default()"
        );
        parsed.validate().unwrap();
    }

    #[test]
    fn bad_configs_are_rejected() {
        assert!(Config::from_toml("[server]\nnope = 1").is_err(), "unknown keys are errors");
        let mut c = Config::default();
        c.server.max_value_size = ReadableSize::mib(100);
        assert!(c.validate().unwrap_err().contains("max-value-size"));
        let mut c = Config::default();
        c.pd.endpoints.clear();
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.server.addr = "not an addr".into();
        assert!(c.validate().is_err());
        for bad in [0, 3] {
            let mut c = Config::default();
            c.storage.api_version = bad;
            assert!(c.validate().unwrap_err().contains("storage.api-version must be 1 or 2"));
        }
        // Listening on every interface needs a routable advertised address.
        let mut c = Config::default();
        c.server.addr = "0.0.0.0:20160".into();
        assert!(c.validate().unwrap_err().contains("set server.advertise-addr"));
        c.server.advertise_addr = "10.0.0.7:20160".into();
        c.server.status_addr = "0.0.0.0:20180".into();
        assert!(c.validate().unwrap_err().contains("set server.advertise-status-addr"));
        c.server.advertise_status_addr = "store1.example:20180".into();
        c.validate().unwrap();
        for bad in ["0.0.0.0:20180", "no-port", ":20180", "host:port"] {
            c.server.advertise_status_addr = bad.into();
            assert!(c.validate().is_err(), "{bad}");
        }
        let v1 = Config::from_toml("[storage]\napi-version = 1").unwrap();
        v1.validate().unwrap();
        assert_eq!(v1.storage.api_version(), ApiVersion::V1);
    }
}
