use std::net::SocketAddr;
use std::path::PathBuf;

use atoll_util::ReadableDuration;
use serde::{Deserialize, Serialize};

/// PD settings (a TOML file, or flags in `atoll-pd`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub name: String,
    /// gRPC (and `/pd/api/v1/*` HTTP) listen address.
    pub client_addr: String,
    /// Address clients are told to use; defaults to `client-addr`.
    pub advertise_client_addr: String,
    /// `/metrics` and `/status`.
    pub status_addr: String,
    /// The embedded store of a single PD (unused with `etcd`).
    pub data_dir: PathBuf,
    /// etcd endpoints (`host:port`): run as one member of a PD group whose
    /// state is in etcd. Empty: a single PD with its state in `data-dir`.
    pub etcd: Vec<String>,
    /// Prefix of every etcd key this PD group uses (one cluster per prefix).
    pub etcd_root: String,
    /// Replicas per region (`max_peer_count`); stores wait for this many to bootstrap.
    pub max_replicas: u32,
    /// How far ahead of the clock the persisted TSO bound is kept.
    pub tso_save_interval: ReadableDuration,
    /// Ids reserved per persisted allocation step.
    pub id_alloc_step: u64,
    pub log_level: String,
    /// How often the schedulers look at the cluster.
    pub schedule_interval: ReadableDuration,
    /// A store silent this long is down; its replicas are rebuilt elsewhere.
    pub max_store_down_time: ReadableDuration,
    /// Operators running at once, per kind.
    pub leader_schedule_limit: usize,
    pub region_schedule_limit: usize,
    pub replica_schedule_limit: usize,
    /// Balance when the busiest and idlest stores differ by more than this
    /// many leaders / regions.
    pub balance_tolerance: u64,
    /// An operator not finished in this time is dropped (and may be re-planned).
    pub operator_timeout: ReadableDuration,
    /// Mutual TLS on both ports (none: plaintext).
    pub security: atoll_util::tls::SecurityConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "pd".into(),
            client_addr: "127.0.0.1:2379".into(),
            advertise_client_addr: String::new(),
            status_addr: "127.0.0.1:2380".into(),
            data_dir: PathBuf::from("./data/pd"),
            etcd: vec![],
            etcd_root: "/atoll".into(),
            max_replicas: 3,
            tso_save_interval: ReadableDuration::secs(3),
            id_alloc_step: 1000,
            log_level: "info".into(),
            schedule_interval: ReadableDuration::secs(1),
            max_store_down_time: ReadableDuration::secs(30 * 60),
            leader_schedule_limit: 4,
            region_schedule_limit: 8,
            replica_schedule_limit: 16,
            balance_tolerance: 1,
            operator_timeout: ReadableDuration::secs(600),
            security: atoll_util::tls::SecurityConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        let listen = self
            .client_addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("pd.client-addr {:?}: {e}", self.client_addr))?;
        if listen.ip().is_unspecified() && self.advertise_client_addr.is_empty() {
            return Err(format!(
                "pd.client-addr {listen} listens on every interface: set \
                 pd.advertise-client-addr (--advertise-addr) to an address stores and clients reach"
            ));
        }
        self.status_addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("pd.status-addr {:?}: {e}", self.status_addr))?;
        if self.etcd.iter().any(|e| e.trim().is_empty()) {
            return Err("pd.etcd has an empty endpoint".into());
        }
        if !self.etcd.is_empty() && !self.etcd_root.starts_with('/') {
            return Err(format!("pd.etcd-root {:?} must start with '/'", self.etcd_root));
        }
        if self.name.is_empty() {
            return Err(
                "pd.name must not be empty (members of a PD group need unique names)".into()
            );
        }
        if self.max_replicas == 0 {
            return Err("pd.max-replicas must be at least 1".into());
        }
        if self.id_alloc_step == 0 {
            return Err("pd.id-alloc-step must be positive".into());
        }
        if self.schedule_interval.0.as_millis() < 10 {
            return Err("pd.schedule-interval must be at least 10ms".into());
        }
        if self.max_store_down_time.0.is_zero() || self.operator_timeout.0.is_zero() {
            return Err("pd.max-store-down-time and pd.operator-timeout must be positive".into());
        }
        self.security.validate().map_err(|e| e.to_string())?;
        if self.tso_save_interval.0.as_millis() < 100 {
            return Err("pd.tso-save-interval must be at least 100ms".into());
        }
        Ok(())
    }

    pub fn schedule_config(&self) -> crate::schedule::ScheduleConfig {
        crate::schedule::ScheduleConfig {
            max_replicas: self.max_replicas as usize,
            max_store_down_time: self.max_store_down_time.0,
            leader_schedule_limit: self.leader_schedule_limit,
            region_schedule_limit: self.region_schedule_limit,
            replica_schedule_limit: self.replica_schedule_limit,
            balance_tolerance: self.balance_tolerance,
            operator_timeout: self.operator_timeout.0,
        }
    }

    pub fn advertise(&self) -> String {
        if self.advertise_client_addr.is_empty() {
            self.client_addr.clone()
        } else {
            self.advertise_client_addr.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_on_every_interface_needs_an_advertised_address() {
        let mut c = Config { client_addr: "0.0.0.0:2379".into(), ..Config::default() };
        assert!(c.validate().unwrap_err().contains("advertise-client-addr"));
        c.advertise_client_addr = "10.0.0.5:2379".into();
        c.validate().unwrap();
        assert_eq!(c.advertise(), "10.0.0.5:2379");
        Config::default().validate().unwrap();
    }
}
