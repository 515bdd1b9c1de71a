//! `atoll-server`: parse flags, load config, run one store.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(name = "atoll-server", about = "Atoll store server")]
struct Args {
    /// TOML config file (see etc/config-template.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// gRPC address for clients and peers.
    #[arg(long)]
    addr: Option<String>,
    #[arg(long)]
    advertise_addr: Option<String>,
    /// /metrics and /status address.
    #[arg(long)]
    status_addr: Option<String>,
    /// The /metrics and /status address other hosts use (with a 0.0.0.0 status-addr).
    #[arg(long)]
    advertise_status_addr: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Comma-separated PD endpoints.
    #[arg(long, value_delimiter = ',')]
    pd: Option<Vec<String>>,
    #[arg(long)]
    log_level: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut cfg = match &a.config {
        Some(p) => atoll_server::Config::from_toml(
            &std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?,
        )
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("parse {}", p.display()))?,
        None => atoll_server::Config::default(),
    };
    if let Some(v) = a.addr {
        cfg.server.addr = v;
    }
    if let Some(v) = a.advertise_addr {
        cfg.server.advertise_addr = v;
    }
    if let Some(v) = a.status_addr {
        cfg.server.status_addr = v;
    }
    if let Some(v) = a.advertise_status_addr {
        cfg.server.advertise_status_addr = v;
    }
    if let Some(v) = a.data_dir {
        cfg.storage.data_dir = v;
    }
    if let Some(v) = a.pd {
        cfg.pd.endpoints = v;
    }
    if let Some(v) = a.log_level {
        cfg.log_level = v;
    }
    atoll_util::logger::init(&cfg.log_level);
    cfg.validate().map_err(anyhow::Error::msg)?;
    atoll_server::run(cfg).await?;
    Ok(())
}
