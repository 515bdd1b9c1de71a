//! An etcd cluster of real `etcd` processes (Debian's `etcd-server`), for
//! PD groups in tests: on loopback, or one member per host of a
//! [`Network`]. Every member is killed when the cluster drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netns::Network;
use crate::proc::free_port;

/// etcd's own ports, used inside namespaces (each host has its own ports).
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;

struct EtcdProc {
    name: String,
    client_url: String,
    peer_url: String,
    data: PathBuf,
    log: PathBuf,
    host: Option<usize>,
    child: Option<Child>,
}

pub struct EtcdCluster {
    members: Vec<EtcdProc>,
    net: Option<Arc<Network>>,
}

/// Where `etcd` is; `make test` installs it (Debian's etcd-server).
fn etcd_binary() -> PathBuf {
    for p in ["/usr/bin/etcd", "/usr/local/bin/etcd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("etcd is not installed (apt-get install etcd-server; `make test` does)");
}

impl EtcdCluster {
    /// `n` members on loopback, with their data and logs under `dir`.
    pub fn start(dir: &Path, n: usize) -> EtcdCluster {
        let urls = (0..n)
            .map(|_| {
                (
                    format!("http://127.0.0.1:{}", free_port()),
                    format!("http://127.0.0.1:{}", free_port()),
                )
            })
            .collect();
        Self::start_with(dir, urls, None, vec![])
    }

    /// One member on each of `hosts` of `net`, at etcd's usual ports.
    pub fn start_in(dir: &Path, net: Arc<Network>, hosts: &[usize]) -> EtcdCluster {
        let urls = hosts
            .iter()
            .map(|&h| {
                let ip = &net.host(h).ip;
                (format!("http://{ip}:{ETCD_CLIENT_PORT}"), format!("http://{ip}:{ETCD_PEER_PORT}"))
            })
            .collect();
        Self::start_with(dir, urls, Some(net), hosts.to_vec())
    }

    fn start_with(
        dir: &Path,
        urls: Vec<(String, String)>,
        net: Option<Arc<Network>>,
        hosts: Vec<usize>,
    ) -> EtcdCluster {
        let members: Vec<EtcdProc> = urls
            .into_iter()
            .enumerate()
            .map(|(i, (client_url, peer_url))| EtcdProc {
                name: format!("etcd{i}"),
                client_url,
                peer_url,
                data: dir.join(format!("etcd{i}")),
                log: dir.join(format!("etcd{i}.log")),
                host: hosts.get(i).copied(),
                child: None,
            })
            .collect();
        let mut c = EtcdCluster { members, net };
        for i in 0..c.members.len() {
            c.start_member(i);
        }
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    /// `host:port` of every member's client endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.trim_start_matches("http://").to_owned()).collect()
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (Re)starts member `i` on its data directory.
    pub fn start_member(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        assert!(m.child.is_none(), "etcd member {i} is running");
        let mut cmd = match (&self.net, m.host) {
            (Some(net), Some(h)) => net.command(h, &etcd_binary()),
            _ => Command::new(etcd_binary()),
        };
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data)
            .arg("--listen-client-urls")
            .arg(&m.client_url)
            .arg("--advertise-client-urls")
            .arg(&m.client_url)
            .arg("--listen-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-cluster")
            .arg(initial)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg("atoll-test")
            // Loopback elections: fast, as the stores' raft in tests.
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500");
        let f = std::fs::OpenOptions::new().create(true).append(true).open(&m.log).unwrap();
        let child = cmd
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// SIGKILL member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until every running member answers `/health` with true.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for m in self.members.iter().filter(|m| m.child.is_some()) {
            let addr = m.client_url.trim_start_matches("http://");
            loop {
                let ok = crate::proc::http_get(addr, "/health")
                    .is_ok_and(|b| b.contains("\"health\":\"true\""));
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "etcd {} not healthy; log:\n{}",
                    m.name,
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
    }
}
