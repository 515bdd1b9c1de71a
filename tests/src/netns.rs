//! Hosts in their own Linux network namespaces, for real partitions.
//!
//! Every host gets a namespace, an IP and a veth pair into one bridge in
//! the root namespace; the bridge holds the gateway address, from which
//! the harness (the clients) reaches every host. Partitions are nftables
//! rules in the receiving host's namespace that drop packets from the
//! cut-off hosts, as Jepsen does with iptables: the processes keep running
//! and their sockets stay open, the packets just stop arriving.
//!
//! Everything is removed when the [`Network`] drops, and namespaces left by
//! a harness that died are removed by the next one. Creating a network
//! needs root, `ip` (iproute2) and `nft` (nftables); [`Network::create`]
//! says what is missing otherwise.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use parking_lot::Mutex;

/// Namespaces are named `atoll-<pid>-<n>-<host>`; interfaces (15 bytes at
/// most) `ab<pid hex>x<n>` (bridge) and `av<pid hex>x<n>h<host>` (veth).
const NS_PREFIX: &str = "atoll-";

/// One host: a namespace and its address.
#[derive(Clone, Debug)]
pub struct Host {
    pub ns: String,
    pub ip: String,
}

pub struct Network {
    bridge: String,
    gateway: String,
    hosts: Vec<Host>,
    /// Current drops: (from, to) host indices.
    cuts: Mutex<Vec<(usize, usize)>>,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("`{}`: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and bridges of harnesses that are no longer running.
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else { continue };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !pid_alive(p)) {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
    let Ok(out) = Command::new("ip").args(["-o", "link", "show", "type", "bridge"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "12: ab1f2e3x0: <...>"
        let Some(name) = line.split(':').nth(1).map(str::trim) else { continue };
        let Some(rest) = name.strip_prefix("ab") else { continue };
        let pid = rest.split('x').next().and_then(|p| u32::from_str_radix(p, 16).ok());
        if pid.is_some_and(|p| !pid_alive(p)) {
            let _ = run(&["ip", "link", "del", name]);
        }
    }
}

impl Network {
    /// Creates `hosts` namespaces on a fresh bridge, or says why it cannot.
    pub fn create(hosts: usize) -> Result<Network, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        for tool in ["ip", "nft"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if !found {
                return Err(format!(
                    "`{tool}` is not installed (apt-get install iproute2 nftables)"
                ));
            }
        }
        assert!(hosts < 200, "at most 200 hosts");
        remove_leftovers();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let subnet = format!("10.{}.{}", 100 + (pid / 256 + n) % 150, pid % 256);
        let mut net = Network {
            bridge: format!("ab{pid:x}x{n}"),
            gateway: format!("{subnet}.1"),
            hosts: vec![],
            cuts: Mutex::new(vec![]),
        };
        // On error, the partly built network is removed by its drop.
        run(&["ip", "link", "add", &net.bridge, "type", "bridge"])?;
        run(&["ip", "addr", "add", &format!("{}/24", net.gateway), "dev", &net.bridge])?;
        run(&["ip", "link", "set", &net.bridge, "up"])?;
        for i in 0..hosts {
            let host = Host {
                ns: format!("{NS_PREFIX}{pid}-{n}-{i}"),
                ip: format!("{subnet}.{}", 10 + i),
            };
            let veth = format!("av{pid:x}x{n}h{i}");
            run(&["ip", "netns", "add", &host.ns])?;
            net.hosts.push(host.clone());
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                &host.ns,
            ])?;
            run(&["ip", "link", "set", &veth, "master", &net.bridge, "up"])?;
            let ns = host.ns.as_str();
            run(&["ip", "-n", ns, "addr", "add", &format!("{}/24", host.ip), "dev", "eth0"])?;
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            run(&["ip", "netns", "exec", ns, "nft", "add", "table", "inet", "atoll"])?;
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "nft",
                "add",
                "chain",
                "inet",
                "atoll",
                "input",
                "{ type filter hook input priority 0; policy accept; }",
            ])?;
        }
        Ok(net)
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The bridge's address: where the harness itself appears to the hosts.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// A command that runs `program` inside host `i`'s namespace (the
    /// child's pid is the program's: `ip netns exec` execs it).
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(&self.hosts[i].ns).arg(program);
        c
    }

    /// Drops every packet from host `from` to host `to` (one way; TCP
    /// between them stalls both ways, as on a real network).
    pub fn cut(&self, from: usize, to: usize) -> Result<(), String> {
        let mut cuts = self.cuts.lock();
        if cuts.contains(&(from, to)) {
            return Ok(());
        }
        let (src, ns) = (&self.hosts[from].ip, &self.hosts[to].ns);
        run(&[
            "ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "atoll", "input", "ip",
            "saddr", src, "drop",
        ])?;
        cuts.push((from, to));
        Ok(())
    }

    /// Cuts both ways between every host of `a` and every host of `b`.
    pub fn cut_between(&self, a: &[usize], b: &[usize]) -> Result<(), String> {
        for &x in a {
            for &y in b {
                self.cut(x, y)?;
                self.cut(y, x)?;
            }
        }
        Ok(())
    }

    /// The drops in place now.
    pub fn cuts(&self) -> Vec<(usize, usize)> {
        self.cuts.lock().clone()
    }

    /// Removes every drop.
    pub fn heal(&self) -> Result<(), String> {
        let mut cuts = self.cuts.lock();
        let mut first_err = None;
        for h in &self.hosts {
            let r = run(&[
                "ip", "netns", "exec", &h.ns, "nft", "flush", "chain", "inet", "atoll", "input",
            ]);
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        cuts.clear();
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and so the pair.
        for h in &self.hosts {
            let _ = run(&["ip", "netns", "del", &h.ns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two hosts reach each other until cut; heal restores it; everything
    /// is gone after the drop. Skipped (with a note) where namespaces
    /// cannot be made.
    #[test]
    fn cut_and_heal_between_namespaces() {
        let net = match Network::create(2) {
            Ok(n) => n,
            Err(e) => {
                crate::skip("netns::cut_and_heal_between_namespaces", &e);
                return;
            }
        };
        // A TCP connect from host 0 to a port host 1 listens on.
        let connect = |timeout: u32| {
            let script = format!(
                "timeout {timeout} bash -c 'exec 3<>/dev/tcp/{}/9' 2>/dev/null; echo $?",
                net.host(1).ip
            );
            let out =
                net.command(0, std::path::Path::new("sh")).args(["-c", &script]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        // Nothing listens on port 9: a reachable host refuses (1), a cut
        // one never answers (timeout: 124).
        assert_eq!(connect(2), "1", "hosts reach each other");
        net.cut(0, 1).unwrap();
        assert_eq!(connect(1), "124", "the cut drops packets");
        net.heal().unwrap();
        assert_eq!(connect(2), "1", "healed");
        let ns = net.host(0).ns.clone();
        drop(net);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        assert!(!String::from_utf8_lossy(&list.stdout).contains(&ns), "namespace removed");
    }
}
