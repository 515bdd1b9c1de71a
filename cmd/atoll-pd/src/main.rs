//! `atoll-pd`: parse flags, load config, run the placement driver.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(name = "atoll-pd", about = "Atoll placement driver")]
struct Args {
    /// TOML config file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC + HTTP API address.
    #[arg(long)]
    client_addr: Option<String>,
    /// Address advertised to stores and clients (needed with a 0.0.0.0 client-addr).
    #[arg(long, alias = "advertise-addr")]
    advertise_client_addr: Option<String>,
    /// /metrics and /status address.
    #[arg(long)]
    status_addr: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// This member's name, unique in its PD group.
    #[arg(long)]
    name: Option<String>,
    /// etcd endpoints, comma-separated: run as one member of a PD group
    /// whose state is in etcd (several members for high availability).
    #[arg(long, value_delimiter = ',')]
    etcd: Option<Vec<String>>,
    /// Prefix of the group's etcd keys.
    #[arg(long)]
    etcd_root: Option<String>,
    #[arg(long)]
    max_replicas: Option<u32>,
    #[arg(long)]
    log_level: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut cfg: atoll_pd::Config = match &a.config {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?,
        )
        .with_context(|| format!("parse {}", p.display()))?,
        None => atoll_pd::Config::default(),
    };
    if let Some(v) = a.client_addr {
        cfg.client_addr = v;
    }
    if let Some(v) = a.advertise_client_addr {
        cfg.advertise_client_addr = v;
    }
    if let Some(v) = a.status_addr {
        cfg.status_addr = v;
    }
    if let Some(v) = a.data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = a.name {
        cfg.name = v;
    }
    if let Some(v) = a.etcd {
        cfg.etcd = v;
    }
    if let Some(v) = a.etcd_root {
        cfg.etcd_root = v;
    }
    if let Some(v) = a.max_replicas {
        cfg.max_replicas = v;
    }
    if let Some(v) = a.log_level {
        cfg.log_level = v;
    }
    atoll_util::logger::init(&cfg.log_level);
    cfg.validate().map_err(anyhow::Error::msg)?;
    atoll_pd::run(cfg).await?;
    Ok(())
}
