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
    pub data_dir: PathBuf,
    /// Replicas per region (`max_peer_count`); stores wait for this many to bootstrap.
    pub max_replicas: u32,
    /// How far ahead of the clock the persisted TSO bound is kept.
    pub tso_save_interval: ReadableDuration,
    /// Ids reserved per persisted allocation step.
    pub id_alloc_step: u64,
    pub log_level: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "pd".into(),
            client_addr: "127.0.0.1:2379".into(),
            advertise_client_addr: String::new(),
            status_addr: "127.0.0.1:2380".into(),
            data_dir: PathBuf::from("./data/pd"),
            max_replicas: 3,
            tso_save_interval: ReadableDuration::secs(3),
            id_alloc_step: 1000,
            log_level: "info".into(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        self.client_addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("pd.client-addr {:?}: {e}", self.client_addr))?;
        self.status_addr
            .parse::<SocketAddr>()
            .map_err(|e| format!("pd.status-addr {:?}: {e}", self.status_addr))?;
        if self.max_replicas == 0 {
            return Err("pd.max-replicas must be at least 1".into());
        }
        if self.id_alloc_step == 0 {
            return Err("pd.id-alloc-step must be positive".into());
        }
        if self.tso_save_interval.0.as_millis() < 100 {
            return Err("pd.tso-save-interval must be at least 100ms".into());
        }
        Ok(())
    }

    pub fn advertise(&self) -> String {
        if self.advertise_client_addr.is_empty() {
            self.client_addr.clone()
        } else {
            self.advertise_client_addr.clone()
        }
    }
}
