//! Runs real `atoll-pd` / `atoll-server` processes for black-box tests, on
//! loopback or each on its own host of a [`Network`]. Every process is
//! killed when the harness drops.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::etcd::EtcdCluster;
use crate::netns::Network;

/// Path of a workspace binary next to the running test executable; for
/// `atoll-pd` and `atoll-server`, the one in `$ATOLL_BIN_DIR` when that is
/// set (a harness run against another build's servers, e.g. before and
/// after a change). `make test` builds the binaries first.
pub fn binary(name: &str) -> PathBuf {
    let server = matches!(name, "atoll-pd" | "atoll-server");
    if let Some(dir) = std::env::var_os("ATOLL_BIN_DIR").filter(|_| server) {
        let p = Path::new(&dir).join(name);
        assert!(p.exists(), "ATOLL_BIN_DIR has no {}", p.display());
        return p;
    }
    let exe = std::env::current_exe().expect("current exe");
    // Tests run from `target/release/deps`, benchmark binaries from `target/release`.
    let own = exe.parent().expect("exe dir");
    let dir = if own.join(name).exists() { own } else { own.parent().expect("target dir") };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built; run `make test` (it builds the binaries first)",
        p.display()
    );
    p
}

/// A port that was free a moment ago. Picked at random below the kernel's
/// ephemeral range (32768+), so outgoing connections of other tests cannot
/// grab it before our process binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(7919);
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed).wrapping_add(seed);
        let port = 20_000 + (n % 12_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// Store settings for tests: a 50ms tick so elections take well under a second.
pub const TEST_STORE_CONFIG: &str = r#"
log-level = "info"
[raftstore]
raft-base-tick-interval = "50ms"
pd-heartbeat-tick-interval = "1s"
pd-store-heartbeat-tick-interval = "2s"
raft-log-gc-tick-interval = "500ms"
"#;

/// PD settings for tests: schedule often, call a store dead after 3s.
pub const TEST_PD_CONFIG: &str = r#"
schedule-interval = "100ms"
max-store-down-time = "3s"
operator-timeout = "60s"
"#;

struct StoreProc {
    addr: String,
    status: String,
    data: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

struct PdProc {
    name: String,
    addr: String,
    status: String,
    /// Which host of the network it lives on.
    host: usize,
    child: Option<Child>,
}

pub struct ProcCluster {
    pub dir: tempfile::TempDir,
    /// The first PD member's address (the only one without etcd).
    pub pd_addr: String,
    /// The first PD member's `/metrics` + `/status` address.
    pub pd_status: String,
    pds: Vec<PdProc>,
    /// The etcd cluster of a PD group (PD members run with `--etcd`).
    etcd: Option<EtcdCluster>,
    max_replicas: usize,
    stores: Vec<StoreProc>,
    /// Hosts in network namespaces: PD on host 0, store `i` on host `i + 1`.
    net: Option<Arc<Network>>,
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    // Appends: a restarted process keeps the log of its earlier lives.
    let f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    cmd.stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f))
        .spawn()
        .expect("spawn process")
}

/// Ports inside a namespace: each host has its own port space.
const NS_PD_PORT: u16 = 2379;
const NS_PD_STATUS_PORT: u16 = 2378;
const NS_STORE_PORT: u16 = 20160;
const NS_STORE_STATUS_PORT: u16 = 20180;

impl ProcCluster {
    /// Starts PD and `n` stores with the test configs.
    pub fn start(n: usize) -> ProcCluster {
        Self::start_with(n, TEST_PD_CONFIG, TEST_STORE_CONFIG)
    }

    /// Starts PD and `n` stores on loopback; `pd_toml` / `store_toml` are
    /// config files.
    pub fn start_with(n: usize, pd_toml: &str, store_toml: &str) -> ProcCluster {
        Self::start_on(None, n, pd_toml, store_toml)
    }

    /// PD and one store per entry of `stores` (each its own config file),
    /// on loopback.
    pub fn start_each(pd_toml: &str, stores: &[String]) -> ProcCluster {
        let mut c = Self::start_pd_only(None, stores.len().min(3), pd_toml, "");
        for toml in stores {
            c.add_store_with(toml);
        }
        c
    }

    /// Like [`ProcCluster::start_with`], each process on its own host of
    /// `net` (which needs at least `n + 1` hosts): PD on host 0, store `i`
    /// on host `i + 1`.
    pub fn start_in(net: Arc<Network>, n: usize, pd_toml: &str, store_toml: &str) -> ProcCluster {
        assert!(net.len() > n, "{} hosts for PD and {n} stores", net.len());
        Self::start_on(Some(net), n, pd_toml, store_toml)
    }

    fn start_on(net: Option<Arc<Network>>, n: usize, pd_toml: &str, store_toml: &str) -> Self {
        let mut c = Self::start_pd_only(net, n.min(3), pd_toml, store_toml);
        for _ in 0..n {
            c.add_store();
        }
        c
    }

    /// PD alone, for a cluster of `max_replicas` replicas per region.
    fn start_pd_only(
        net: Option<Arc<Network>>,
        max_replicas: usize,
        pd_toml: &str,
        store_toml: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pd.toml"), pd_toml).unwrap();
        std::fs::write(dir.path().join("store.toml"), store_toml).unwrap();
        let (pd_addr, pd_status) = match &net {
            Some(net) => {
                let ip = &net.host(0).ip;
                (format!("{ip}:{NS_PD_PORT}"), format!("{ip}:{NS_PD_STATUS_PORT}"))
            }
            None => (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port())),
        };
        let pd = PdProc {
            name: "pd".into(),
            addr: pd_addr.clone(),
            status: pd_status.clone(),
            host: 0,
            child: None,
        };
        let mut c = ProcCluster {
            pd_addr,
            pd_status,
            pds: vec![pd],
            etcd: None,
            max_replicas,
            stores: vec![],
            dir,
            net,
        };
        c.start_pd();
        c
    }

    /// A PD group of `members` over a 3-member etcd cluster, and `n`
    /// stores, on loopback.
    pub fn start_group(members: usize, n: usize, pd_toml: &str, store_toml: &str) -> ProcCluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pd.toml"), pd_toml).unwrap();
        std::fs::write(dir.path().join("store.toml"), store_toml).unwrap();
        let etcd = EtcdCluster::start(dir.path(), 3);
        let pds: Vec<PdProc> = (0..members)
            .map(|i| PdProc {
                name: format!("pd{i}"),
                addr: format!("127.0.0.1:{}", free_port()),
                status: format!("127.0.0.1:{}", free_port()),
                host: 0,
                child: None,
            })
            .collect();
        let mut c = ProcCluster {
            pd_addr: pds[0].addr.clone(),
            pd_status: pds[0].status.clone(),
            pds,
            etcd: Some(etcd),
            max_replicas: n.min(3),
            stores: vec![],
            dir,
            net: None,
        };
        c.start_pd();
        for _ in 0..n {
            c.add_store();
        }
        c
    }

    /// A command running `binary(name)` where process `host` lives.
    fn command(&self, host: usize, name: &str) -> Command {
        match &self.net {
            Some(net) => net.command(host, &binary(name)),
            None => Command::new(binary(name)),
        }
    }

    /// The network the processes live in, if not loopback.
    pub fn network(&self) -> Option<&Arc<Network>> {
        self.net.as_ref()
    }

    /// (Re)starts every PD member that is not running.
    pub fn start_pd(&mut self) {
        for i in 0..self.pds.len() {
            if self.pds[i].child.is_none() {
                self.start_pd_member(i);
            }
        }
    }

    /// (Re)starts PD member `i` (on its data directory, or over etcd).
    pub fn start_pd_member(&mut self, i: usize) {
        assert!(self.pds[i].child.is_none(), "PD member {i} is running");
        let d = self.dir.path();
        let p = &self.pds[i];
        let mut cmd = self.command(p.host, "atoll-pd");
        cmd.arg("--config")
            .arg(d.join("pd.toml"))
            .arg("--name")
            .arg(&p.name)
            .arg("--client-addr")
            .arg(&p.addr)
            .arg("--status-addr")
            .arg(&p.status)
            .arg("--data-dir")
            .arg(d.join(&p.name))
            .arg("--max-replicas")
            .arg(self.max_replicas.to_string());
        if let Some(etcd) = &self.etcd {
            cmd.arg("--etcd").arg(etcd.endpoints().join(","));
        }
        let log = d.join(format!("{}.log", p.name));
        self.pds[i].child = Some(spawn(&mut cmd, &log));
    }

    /// Starts one more PD member over the group's etcd (a PD scale-out);
    /// returns its index.
    pub fn add_pd_member(&mut self) -> usize {
        assert!(self.etcd.is_some(), "a single PD has no group to join");
        let i = self.pds.len();
        self.pds.push(PdProc {
            name: format!("pd{i}"),
            addr: format!("127.0.0.1:{}", free_port()),
            status: format!("127.0.0.1:{}", free_port()),
            host: 0,
            child: None,
        });
        self.start_pd_member(i);
        i
    }

    /// SIGKILL every running PD member, like a crash; an error if none was
    /// running or a kill failed (a fault that did not apply).
    pub fn kill_pd(&mut self) -> Result<(), String> {
        if !self.pd_running() {
            return Err("no PD member is running".into());
        }
        for i in 0..self.pds.len() {
            self.kill_pd_member(i)?;
        }
        Ok(())
    }

    /// SIGKILL PD member `i` if it runs; an error if the kill failed.
    pub fn kill_pd_member(&mut self, i: usize) -> Result<(), String> {
        if let Some(mut p) = self.pds[i].child.take() {
            p.kill().map_err(|e| format!("kill -9 PD member {i}: {e}"))?;
            let _ = p.wait();
        }
        Ok(())
    }

    /// Is any PD member running?
    pub fn pd_running(&self) -> bool {
        self.pds.iter().any(|p| p.child.is_some())
    }

    /// Every PD member's client address (what stores get as `--pd`).
    pub fn pd_endpoints(&self) -> Vec<String> {
        self.pds.iter().map(|p| p.addr.clone()).collect()
    }

    pub fn pd_member_count(&self) -> usize {
        self.pds.len()
    }

    /// PD member `i`'s `/status` address.
    pub fn pd_member_status(&self, i: usize) -> &str {
        &self.pds[i].status
    }

    /// PD member `i`'s client address.
    pub fn pd_member_addr(&self, i: usize) -> &str {
        &self.pds[i].addr
    }

    /// The etcd cluster under the PD group, if any.
    pub fn etcd(&self) -> Option<&EtcdCluster> {
        self.etcd.as_ref()
    }

    /// Starts one more store (a new machine joining); returns its index.
    pub fn add_store(&mut self) -> usize {
        let config = self.dir.path().join("store.toml");
        self.add_store_with_config(config)
    }

    /// Starts one more store with its own config file contents.
    pub fn add_store_with(&mut self, store_toml: &str) -> usize {
        let config = self.dir.path().join(format!("store{}.toml", self.stores.len()));
        std::fs::write(&config, store_toml).unwrap();
        self.add_store_with_config(config)
    }

    fn add_store_with_config(&mut self, config: PathBuf) -> usize {
        let i = self.stores.len();
        let (addr, status) = match &self.net {
            Some(net) => {
                let ip = &net.host(i + 1).ip;
                (format!("{ip}:{NS_STORE_PORT}"), format!("{ip}:{NS_STORE_STATUS_PORT}"))
            }
            None => (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port())),
        };
        self.stores.push(StoreProc {
            addr,
            status,
            data: self.dir.path().join(format!("store{i}")),
            config,
            child: None,
        });
        self.start_store(i);
        i
    }

    /// Replaces store `i`'s config file (used at its next start).
    pub fn set_store_config(&mut self, i: usize, store_toml: &str) {
        let config = self.dir.path().join(format!("store{i}.toml"));
        std::fs::write(&config, store_toml).unwrap();
        self.stores[i].config = config;
    }

    /// Waits up to `timeout` for store `i`'s process to exit by itself;
    /// returns whether it exited successfully, `None` if it still runs.
    pub fn wait_store_exit(&mut self, i: usize, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        let child = self.stores[i].child.as_mut().expect("store was started");
        loop {
            if let Some(status) = child.try_wait().expect("wait for store") {
                self.stores[i].child = None;
                return Some(status.success());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn store_addr(&self, i: usize) -> &str {
        &self.stores[i].addr
    }

    pub fn start_store(&mut self, i: usize) {
        let log = self.dir.path().join(format!("store{i}.log"));
        let mut cmd = self.command(i + 1, "atoll-server");
        let s = &mut self.stores[i];
        assert!(s.child.is_none(), "store {i} is running");
        let child = spawn(
            cmd.arg("--config")
                .arg(&s.config)
                .arg("--addr")
                .arg(&s.addr)
                .arg("--status-addr")
                .arg(&s.status)
                .arg("--data-dir")
                .arg(&s.data)
                .arg("--pd")
                .arg(self.pds.iter().map(|p| p.addr.as_str()).collect::<Vec<_>>().join(",")),
            &log,
        );
        s.child = Some(child);
    }

    /// SIGKILL: no clean shutdown, like a crash.
    pub fn kill_store(&mut self, i: usize) -> Result<(), String> {
        let mut c =
            self.stores[i].child.take().ok_or_else(|| format!("store {i} is not running"))?;
        c.kill().map_err(|e| format!("kill -9 store {i}: {e}"))?;
        c.wait().map_err(|e| format!("wait for store {i}: {e}"))?;
        Ok(())
    }

    /// SIGSTOP (`pause`) or SIGCONT (resume) a running store: a process
    /// that holds its sockets and says nothing, like a long GC pause.
    /// An error if the store is not running or `kill` failed.
    pub fn signal_store(&mut self, i: usize, pause: bool) -> Result<(), String> {
        let c = self.stores[i].child.as_ref().ok_or_else(|| format!("store {i} is not running"))?;
        let sig = if pause { "-STOP" } else { "-CONT" };
        let status = Command::new("kill").arg(sig).arg(c.id().to_string()).status();
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(format!("kill {sig} store {i}: {s}")),
            Err(e) => Err(format!("kill {sig} store {i}: {e}")),
        }
    }

    /// Is store `i` running (not killed)?
    pub fn store_running(&self, i: usize) -> bool {
        self.stores[i].child.is_some()
    }

    /// Index of the store listening on `addr`.
    pub fn store_index_by_addr(&self, addr: &str) -> Option<usize> {
        self.stores.iter().position(|s| s.addr == addr)
    }

    pub fn store_count(&self) -> usize {
        self.stores.len()
    }

    pub fn status_addr(&self, i: usize) -> &str {
        &self.stores[i].status
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        // A failed test keeps its logs and data for a post-mortem.
        if std::thread::panicking() || std::env::var_os("ATOLL_KEEP_TEST_DIR").is_some() {
            eprintln!("keeping test dir {}", self.dir.path().display());
            let keep = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            let _ = keep.keep();
        }
        // Whatever still runs (a killed store or PD is no error here).
        for i in 0..self.stores.len() {
            let _ = self.kill_store(i);
        }
        let _ = self.kill_pd();
    }
}

/// Polls an async condition until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A connection for one HTTP exchange with `addr` (an IP and port): 2 s to
/// connect, 5 s per read.
fn http_connect(addr: &str) -> std::io::Result<std::net::TcpStream> {
    let sock = addr.parse().map_err(std::io::Error::other)?;
    let s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// A plain HTTP GET, returning the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = http_connect(addr)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

/// A plain HTTP POST of a JSON body, returning the body; panics if the
/// server cannot be reached.
pub fn http_post(addr: &str, path: &str, body: &str) -> String {
    try_http_post(addr, path, body).unwrap()
}

/// [`http_post`] that reports connection errors.
pub fn try_http_post(addr: &str, path: &str, body: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = http_connect(addr)?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

pub use atoll_codec::hex;

/// The default keyspace's transactional key `k` as requests carry it
/// (API V2: `x` + keyspace 0).
pub fn txn_wire_key(k: &[u8]) -> Vec<u8> {
    let mut w = atoll_codec::api::keyspace_prefix(atoll_codec::api::TXN_KEY_PREFIX, 0).to_vec();
    w.extend_from_slice(k);
    w
}

/// Splits the cluster's transactional key space (default keyspace) at each
/// of the user keys `keys`.
pub async fn split_txn_keys(c: &ProcCluster, keys: &[&str]) {
    let pd = atoll_pd_client::PdClient::connect(
        std::slice::from_ref(&c.pd_addr),
        Duration::from_secs(10),
    )
    .await
    .expect("pd");
    for k in keys {
        let w = txn_wire_key(k.as_bytes());
        split_at(&pd, &c.pd_addr, &atoll_codec::encode_bytes(&w), &w).await;
    }
}

/// Splits the region holding `region_key` so that a region starts exactly
/// there, through PD's HTTP API (`wire_key` is the same key as a raw
/// request carries it, which is what PD takes), and waits until PD routes
/// `region_key` to the new region.
pub async fn split_at(
    pd: &atoll_pd_client::PdClient,
    pd_addr: &str,
    region_key: &[u8],
    wire_key: &[u8],
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut asked: Option<Instant> = None;
    loop {
        let r = pd.get_region(region_key).await.ok().flatten();
        if let Some(r) = &r {
            if r.region.start_key == region_key {
                return;
            }
            // PD pushes the split to the region's leader, once it knows one;
            // ask again if it did not happen in a while.
            if r.leader.is_some() && asked.is_none_or(|t| t.elapsed() > Duration::from_secs(3)) {
                asked = Some(Instant::now());
                let body = format!(
                    r#"{{"name":"split-region","region_id":{},"keys":["{}"]}}"#,
                    r.region.id,
                    hex(wire_key)
                );
                http_post(pd_addr, "/pd/api/v1/operators", &body);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no split at {region_key:?}; PD has {:?}",
            r.map(|r| r.region)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Resends of a write whose outcome was undetermined, at most.
const RESEND_MAX: usize = 20;

/// Runs the write `f` again while its outcome is undetermined. Safe only
/// where the test is the keys' one writer and always writes the same
/// values: that is the application's call, not the client's.
async fn resend_while_undetermined<F, Fut>(mut f: F) -> atoll_client::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = atoll_client::Result<()>>,
{
    let mut res = f().await;
    for _ in 0..RESEND_MAX {
        if !matches!(res, Err(atoll_client::Error::Undetermined(_))) {
            break;
        }
        res = f().await;
    }
    res
}

/// Puts `key` = `value`, resending it after an undetermined outcome (see
/// [`resend_while_undetermined`]).
pub async fn put_resending(
    client: &atoll_client::RawClient,
    key: &[u8],
    value: &[u8],
) -> atoll_client::Result<()> {
    resend_while_undetermined(|| client.put(key, value)).await
}

/// [`put_resending`] for a batch.
pub async fn batch_put_resending(
    client: &atoll_client::RawClient,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
) -> atoll_client::Result<()> {
    resend_while_undetermined(|| client.batch_put(pairs.clone())).await
}
