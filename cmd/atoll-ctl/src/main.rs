//! `atoll-ctl`: a command-line client for Atoll.

use anyhow::Context;
use atoll_client::{Config, RawClient};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "atoll-ctl", about = "Atoll command-line client")]
struct Args {
    /// Comma-separated PD endpoints.
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',')]
    pd: Vec<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a key.
    Put {
        key: String,
        value: String,
        /// Expire after this many seconds.
        #[arg(long, default_value_t = 0)]
        ttl: u64,
    },
    /// Read a key.
    Get { key: String },
    /// Delete a key.
    Delete { key: String },
    /// List pairs in [start, end).
    Scan {
        #[arg(default_value = "")]
        start: String,
        #[arg(default_value = "")]
        end: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Stores and regions as PD sees them.
    Status,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let client = RawClient::connect(Config::new(a.pd.clone())).await.context("connect to PD")?;
    match a.cmd {
        Cmd::Put { key, value, ttl } => {
            client.put_with_ttl(key.as_bytes(), value.as_bytes(), ttl).await?;
            println!("OK");
        }
        Cmd::Get { key } => match client.get(key.as_bytes()).await? {
            Some(v) => println!("{}", String::from_utf8_lossy(&v)),
            None => {
                eprintln!("(not found)");
                std::process::exit(1);
            }
        },
        Cmd::Delete { key } => {
            client.delete(key.as_bytes()).await?;
            println!("OK");
        }
        Cmd::Scan { start, end, limit } => {
            for (k, v) in client.scan(start.as_bytes(), end.as_bytes(), limit).await? {
                println!("{}\t{}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v));
            }
        }
        Cmd::Status => {
            let pd = client.pd();
            println!("cluster {} (pd {})", pd.cluster_id(), pd.leader_url());
            println!("STORE\tADDRESS\tSTATE");
            for s in pd.get_all_stores().await? {
                println!("{}\t{}\t{}", s.id, s.address, if s.state == 0 { "Up" } else { "Offline/Tombstone" });
            }
            println!("REGION\tSTART\tEND\tVERSION\tLEADER_STORE\tPEERS");
            for r in pd.scan_regions(b"", b"", 0).await? {
                let e = r.region.region_epoch.clone().unwrap_or_default();
                let peers: Vec<String> = r.region.peers.iter().map(|p| format!("{}@{}", p.id, p.store_id)).collect();
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    r.region.id,
                    hex(&r.region.start_key),
                    hex(&r.region.end_key),
                    e.version,
                    r.leader.map(|l| l.store_id.to_string()).unwrap_or_else(|| "-".into()),
                    peers.join(",")
                );
            }
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
