//! `atoll-ctl`: a command-line client for Atoll.

use anyhow::Context;
use atoll_client::{Config, RawClient, TxnClient, TxnOptions};
use atoll_util::tls::SecurityConfig;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "atoll-ctl", about = "Atoll command-line client")]
struct Args {
    /// Comma-separated PD endpoints.
    #[arg(long, default_value = "127.0.0.1:2379", value_delimiter = ',')]
    pd: Vec<String>,
    /// Mutual TLS: the cluster's CA (PEM); with --cert-path and --key-path.
    #[arg(long)]
    ca_path: Option<std::path::PathBuf>,
    /// Mutual TLS: this client's certificate (PEM).
    #[arg(long)]
    cert_path: Option<std::path::PathBuf>,
    /// Mutual TLS: this client's private key (PEM).
    #[arg(long)]
    key_path: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where PD is and how to reach it.
struct Pd {
    endpoints: Vec<String>,
    security: SecurityConfig,
}

impl Pd {
    fn client_config(&self) -> Config {
        Config::new(self.endpoints.clone()).with_security(self.security.clone())
    }
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
    Scan(ScanArgs),
    /// Fingerprint of the pairs in [start, end): crc64-xor, pairs, bytes (RawChecksum).
    Checksum {
        #[arg(default_value = "")]
        start: String,
        #[arg(default_value = "")]
        end: String,
    },
    /// Stores and regions as PD sees them (gRPC view).
    Status,
    /// Stores with their state, region and leader counts.
    Stores,
    /// Regions with range, epoch, leader, peers and approximate size.
    Regions,
    /// Operators PD is running (balance, repair, admin).
    Operators,
    /// Ask PD to split a region at the given keys (none: in half by size).
    Split {
        #[arg(long)]
        region: u64,
        /// A key where a new region starts, as `put` takes it (repeatable).
        #[arg(long = "key")]
        keys: Vec<String>,
    },
    /// Ask PD to move a region's leader to a store.
    TransferLeader {
        #[arg(long)]
        region: u64,
        #[arg(long)]
        to_store: u64,
    },
    /// Transactional keys (the keyspace's `x` keys, API V2): one-shot
    /// transactions and snapshot reads.
    #[command(subcommand)]
    Txn(TxnCmd),
    /// Store lifecycle.
    #[command(subcommand)]
    Store(StoreCmd),
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Delete (decommission) a store: PD moves every replica off it, then
    /// marks it Tombstone; a store with that id never starts again.
    Delete { id: u64 },
}

/// A scan's range and limit (raw and transactional).
#[derive(clap::Args)]
struct ScanArgs {
    #[arg(default_value = "")]
    start: String,
    #[arg(default_value = "")]
    end: String,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

/// Prints pairs a line each, `key<TAB>value`.
fn print_pairs(pairs: Vec<(Vec<u8>, Vec<u8>)>) {
    for (k, v) in pairs {
        println!("{}\t{}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v));
    }
}

#[derive(Subcommand)]
enum TxnCmd {
    /// Print a fresh timestamp from PD.
    Ts,
    /// Read a key as of a timestamp (default: now).
    Get {
        key: String,
        #[arg(long)]
        ts: Option<u64>,
    },
    /// List pairs in [start, end) as of a timestamp (default: now).
    Scan {
        #[command(flatten)]
        range: ScanArgs,
        #[arg(long)]
        ts: Option<u64>,
    },
    /// Write keys in one transaction: `put k1 v1 [k2 v2 ...]`; prints the
    /// commit timestamp.
    Put {
        #[command(flatten)]
        commit: CommitArgs,
        #[arg(required = true, num_args = 2..)]
        pairs: Vec<String>,
    },
    /// Delete keys in one transaction; prints the commit timestamp.
    Delete {
        #[command(flatten)]
        commit: CommitArgs,
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// How a one-shot transaction commits (default: two phases).
#[derive(clap::Args)]
struct CommitArgs {
    /// Async commit: committed once every key is prewritten.
    #[arg(long)]
    async_commit: bool,
    /// 1PC: committed in the prewrite when one region holds every key
    /// (else as the other flags say).
    #[arg(long = "1pc")]
    one_pc: bool,
}

impl CommitArgs {
    fn options(&self) -> TxnOptions {
        let mut o = TxnOptions::optimistic();
        if self.async_commit {
            o = o.use_async_commit();
        }
        if self.one_pc {
            o = o.try_one_pc();
        }
        o
    }
}

async fn run_txn(pd: &Pd, cmd: TxnCmd) -> anyhow::Result<()> {
    let client = TxnClient::connect(pd.client_config()).await.context("connect to PD")?;
    let c = &client;
    let at = |ts: Option<u64>| async move {
        match ts {
            Some(ts) => Ok::<u64, atoll_client::Error>(ts),
            None => c.current_ts().await,
        }
    };
    match cmd {
        TxnCmd::Ts => println!("{}", client.current_ts().await?),
        TxnCmd::Get { key, ts } => match client.get_at(key.as_bytes(), at(ts).await?).await? {
            Some(v) => println!("{}", String::from_utf8_lossy(&v)),
            None => {
                eprintln!("(not found)");
                std::process::exit(1);
            }
        },
        TxnCmd::Scan { range: ScanArgs { start, end, limit }, ts } => {
            let ts = at(ts).await?;
            print_pairs(client.scan_at(start.as_bytes(), end.as_bytes(), limit, ts).await?);
        }
        TxnCmd::Put { commit, pairs } => {
            anyhow::ensure!(pairs.len() % 2 == 0, "put takes key value pairs");
            let mut t = client.begin_with(commit.options()).await?;
            for kv in pairs.chunks(2) {
                t.put(kv[0].as_bytes(), kv[1].as_bytes())?;
            }
            println!("committed at {}", t.commit().await?.unwrap_or_default());
        }
        TxnCmd::Delete { commit, keys } => {
            let mut t = client.begin_with(commit.options()).await?;
            for k in &keys {
                t.delete(k.as_bytes())?;
            }
            println!("committed at {}", t.commit().await?.unwrap_or_default());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    anyhow::ensure!(!a.pd.is_empty(), "no PD endpoint");
    let security = SecurityConfig {
        ca_path: a.ca_path.clone().unwrap_or_default(),
        cert_path: a.cert_path.clone().unwrap_or_default(),
        key_path: a.key_path.clone().unwrap_or_default(),
        cert_allowed_cn: vec![],
    };
    security.validate()?;
    let pd_http = Pd { endpoints: a.pd.clone(), security };
    match a.cmd {
        Cmd::Store(StoreCmd::Delete { id }) => {
            let v = pd_http_leader(&pd_http, "DELETE", &format!("/pd/api/v1/store/{id}"), None)?;
            println!(
                "store {id} is {}: PD moves its replicas away, then marks it Tombstone \
                 (watch `atoll-ctl stores`)",
                v["state"].as_str().unwrap_or("Offline")
            );
            return Ok(());
        }
        Cmd::Stores => return print_stores(&pd_http),
        Cmd::Regions => return print_regions(&pd_http),
        Cmd::Operators => return print_operators(&pd_http),
        Cmd::TransferLeader { region, to_store } => {
            let body = serde_json::json!({"name": "transfer-leader", "region_id": region, "to_store_id": to_store});
            return post_operator(&pd_http, body);
        }
        Cmd::Txn(cmd) => return run_txn(&pd_http, cmd).await,
        _ => {}
    }
    let client = RawClient::connect(pd_http.client_config()).await.context("connect to PD")?;
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
        Cmd::Scan(ScanArgs { start, end, limit }) => {
            print_pairs(client.scan(start.as_bytes(), end.as_bytes(), limit).await?);
        }
        Cmd::Checksum { start, end } => {
            let (crc, kvs, bytes) = client.checksum(start.as_bytes(), end.as_bytes()).await?;
            println!("crc64_xor {crc:#018x}\tkeys {kvs}\tbytes {bytes}");
        }
        Cmd::Split { region, keys } => {
            // PD takes the keys as raw requests carry them (API V2: with the keyspace prefix).
            let keys: Vec<String> =
                keys.iter().map(|k| hex_upper(&client.wire_key(k.as_bytes()))).collect();
            let body =
                serde_json::json!({"name": "split-region", "region_id": region, "keys": keys});
            post_operator(&pd_http, body)?;
        }
        Cmd::Stores
        | Cmd::Regions
        | Cmd::Operators
        | Cmd::TransferLeader { .. }
        | Cmd::Txn(_)
        | Cmd::Store(_) => {
            unreachable!("handled above")
        }
        Cmd::Status => {
            let pd = client.pd();
            println!(
                "cluster {} (pd {}, API {})",
                pd.cluster_id(),
                pd.leader_url(),
                client.api_version()
            );
            println!("STORE\tADDRESS\tSTATE");
            for s in pd.get_all_stores().await? {
                println!(
                    "{}\t{}\t{}",
                    s.id,
                    s.address,
                    if s.state == 0 { "Up" } else { "Offline/Tombstone" }
                );
            }
            println!("REGION\tSTART\tEND\tVERSION\tLEADER_STORE\tPEERS");
            for r in pd.scan_regions(b"", b"", 0).await? {
                let e = r.region.region_epoch.clone().unwrap_or_default();
                let peers: Vec<String> =
                    r.region.peers.iter().map(|p| format!("{}@{}", p.id, p.store_id)).collect();
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

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// A PD member that is not the leader; `leader`: where it says the leader is.
#[derive(Debug, thiserror::Error)]
#[error("PD at {addr} is not the leader")]
struct NotLeader {
    addr: String,
    leader: Option<String>,
}

/// A request to PD's `/pd/api/v1` API at the leader: tries the endpoints
/// in turn, following a follower's pointer to the leader.
fn pd_http_leader(
    pd: &Pd,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let tls = pd.security.rustls_client()?;
    let mut queue: std::collections::VecDeque<String> = pd.endpoints.iter().cloned().collect();
    let mut tried = std::collections::HashSet::new();
    let mut last = None;
    while let Some(addr) = queue.pop_front() {
        if !tried.insert(addr.clone()) {
            continue;
        }
        match pd_http(&addr, tls.as_ref(), method, path, body) {
            Ok(v) => return Ok(v),
            Err(e) => {
                if let Some(l) = e.downcast_ref::<NotLeader>().and_then(|n| n.leader.clone()) {
                    let l = l.trim_start_matches("http://").trim_start_matches("https://");
                    queue.push_front(l.to_owned());
                } else if e.downcast_ref::<std::io::Error>().is_none()
                    && e.downcast_ref::<NotLeader>().is_none()
                {
                    // PD answered and refused: that is the answer.
                    return Err(e);
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no PD endpoint")))
}

/// One HTTP/1.1 request to one PD member's `/pd/api/v1` API; returns the
/// JSON body. Fails with [`NotLeader`] on a follower, `io::Error` when
/// the member cannot be reached.
fn pd_http(
    addr: &str,
    tls: Option<&std::sync::Arc<atoll_util::tls::rustls::ClientConfig>>,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    use std::io::{Read, Write};
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut s: Box<dyn ReadWrite> = match tls {
        None => Box::new(tcp),
        Some(cfg) => {
            use atoll_util::tls::rustls;
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let name = rustls::ServerName::try_from(host.trim_matches(|c| c == '[' || c == ']'))
                .with_context(|| format!("PD address {addr}"))?;
            let conn = rustls::ClientConnection::new(cfg.clone(), name)?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )?;
    let mut out = String::new();
    // A TLS peer may close without close_notify after the response.
    if let Err(e) = s.read_to_string(&mut out) {
        if out.is_empty() {
            return Err(e.into());
        }
    }
    let (head, body) = out.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let v: serde_json::Value =
        serde_json::from_str(body).with_context(|| format!("PD answered: {head}"))?;
    if head.starts_with("HTTP/1.1 503") {
        let leader = v["leader"].as_str().map(str::to_owned);
        return Err(NotLeader { addr: addr.to_owned(), leader }.into());
    }
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("PD refused: {}", v["error"].as_str().unwrap_or(body));
    }
    Ok(v)
}

fn post_operator(pd: &Pd, body: serde_json::Value) -> anyhow::Result<()> {
    pd_http_leader(pd, "POST", "/pd/api/v1/operators", Some(&body))?;
    println!("OK");
    Ok(())
}

fn print_stores(pd: &Pd) -> anyhow::Result<()> {
    let v = pd_http_leader(pd, "GET", "/pd/api/v1/stores", None)?;
    println!("STORE\tADDRESS\tSTATE\tREGIONS\tLEADERS\tUSED_BYTES");
    for s in v["stores"].as_array().cloned().unwrap_or_default() {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            s["id"],
            s["address"].as_str().unwrap_or("-"),
            s["state_name"].as_str().unwrap_or("-"),
            s["region_count"],
            s["leader_count"],
            s["used_size"]
        );
    }
    Ok(())
}

fn print_regions(pd: &Pd) -> anyhow::Result<()> {
    let v = pd_http_leader(pd, "GET", "/pd/api/v1/regions", None)?;
    println!("REGION\tSTART\tEND\tCONF_VER\tVERSION\tLEADER_STORE\tPEERS\tSIZE\tKEYS");
    for r in v["regions"].as_array().cloned().unwrap_or_default() {
        let leader = r["leader"]["id"].as_u64();
        let peers: Vec<String> = r["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| {
                let mark = if p["id"].as_u64() == leader {
                    "*"
                } else if p["role"] == "learner" {
                    "(L)"
                } else {
                    ""
                };
                format!("{}@{}{mark}", p["id"], p["store_id"])
            })
            .collect();
        let or_dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r["id"],
            or_dash(r["start_key"].as_str().unwrap_or("")),
            or_dash(r["end_key"].as_str().unwrap_or("")),
            r["epoch"]["conf_ver"],
            r["epoch"]["version"],
            r["leader"]["store_id"].as_u64().map_or("-".into(), |s| s.to_string()),
            peers.join(","),
            r["approximate_size"],
            r["approximate_keys"]
        );
    }
    Ok(())
}

fn print_operators(pd: &Pd) -> anyhow::Result<()> {
    let v = pd_http_leader(pd, "GET", "/pd/api/v1/operators", None)?;
    println!("REGION\tOPERATOR\tKIND\tSTEP\tSTEPS\tAGE_SECS");
    for o in v["operators"].as_array().cloned().unwrap_or_default() {
        let steps: Vec<String> = o["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|s| s.to_string())
            .collect();
        println!(
            "{}\t{}\t{}\t{}\t{}\t{:.1}",
            o["region_id"],
            o["desc"].as_str().unwrap_or("-"),
            o["kind"].as_str().unwrap_or("-"),
            o["current_step"],
            steps.join(" -> "),
            o["age_secs"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}
