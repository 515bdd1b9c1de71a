//! The README's "Deploy on three machines", step by step, with each machine
//! a network namespace of its own (its own IP): etcd, an atoll-pd member
//! and an atoll-server on every machine, configured from the files in
//! `etc/deploy/` rendered as the README says; the operator's commands
//! (atoll-ctl, tikv-client, Prometheus scrapes) from outside. Then one
//! whole machine (the PD leader's) is killed and the cluster goes on.
//!
//! Needs root (namespaces, as `make test` in CI has); elsewhere it says
//! why and passes without running.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atoll_tests::netns::Network;
use atoll_tests::proc::{binary, eventually, http_get};

const MACHINES: usize = 3;

/// The README's render step: `sed -e "s/@N@/$N/g; s/@IP@/$IP/g; ..."`.
fn render(template: &str, n: usize, ips: &[String], data: &Path) -> String {
    let mut s = template
        .replace("@N@", &n.to_string())
        .replace("@IP@", &ips[n - 1])
        .replace("@DATA@", &data.display().to_string());
    for (i, ip) in ips.iter().enumerate() {
        s = s.replace(&format!("@IP{}@", i + 1), ip);
    }
    assert!(!s.contains('@'), "unrendered placeholder in:\n{s}");
    s
}

fn template(name: &str) -> String {
    let p = atoll_tests::repo_file("etc/deploy").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `KEY=VALUE` lines of an environment file (comments skipped).
fn env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

struct Machine {
    dir: PathBuf,
    procs: Vec<(&'static str, Child)>,
}

impl Machine {
    fn spawn(&mut self, name: &'static str, mut cmd: Command) {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        cmd.stdout(Stdio::from(log.try_clone().unwrap())).stderr(Stdio::from(log));
        self.procs.push((name, cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"))));
    }

    /// The whole machine goes away (power cut): SIGKILL everything on it.
    fn kill(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.procs.clear();
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

struct Deployment {
    machines: Vec<Machine>,
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, m) in self.machines.iter().enumerate() {
                for name in ["etcd", "pd", "store"] {
                    eprintln!("--- machine {} {name} log (tail) ---", i + 1);
                    let log = m.log(name);
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
        for m in &mut self.machines {
            m.kill();
        }
    }
}

fn ctl(pd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary("atoll-ctl")).arg("--pd").arg(pd).args(args).output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn json(addr: &str, path: &str) -> serde_json::Value {
    http_get(addr, path).ok().and_then(|b| serde_json::from_str(&b).ok()).unwrap_or_default()
}

async fn tikv_client(endpoints: &[String]) -> tikv_client::RawClient {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let cfg = tikv_client::Config::default().with_default_keyspace();
        if let Ok(c) = tikv_client::RawClient::new_with_config(endpoints.to_vec(), cfg).await {
            if c.put(b"ready".to_vec(), b"1".to_vec()).await.is_ok() {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "the deployed cluster never became writable");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_machines_as_the_readme_deploys_them() {
    let net = match Network::create(MACHINES) {
        Ok(n) => Arc::new(n),
        Err(e) => {
            atoll_tests::skip("deploy", &format!("network namespaces unavailable: {e}"));
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("ATOLL_KEEP_TEST_DIR").is_some() {
        eprintln!("test dir {}", dir.path().display());
    }
    let ips: Vec<String> = (0..MACHINES).map(|i| net.host(i).ip.clone()).collect();
    let mut d = Deployment { machines: vec![] };

    // Steps 1-3 on every machine: render the files, start etcd, atoll-pd,
    // atoll-server (what the systemd units run).
    for i in 0..MACHINES {
        let n = i + 1;
        let mdir = dir.path().join(format!("machine-{n}"));
        std::fs::create_dir_all(&mdir).unwrap();
        let mut m = Machine { dir: mdir.clone(), procs: vec![] };
        let etcd_env = render(&template("etcd.conf"), n, &ips, &mdir);
        let pd_toml = render(&template("pd.toml"), n, &ips, &mdir);
        let store_toml = render(&template("store.toml"), n, &ips, &mdir);
        std::fs::write(mdir.join("pd.toml"), pd_toml).unwrap();
        std::fs::write(mdir.join("store.toml"), store_toml).unwrap();
        let mut etcd = net.command(i, Path::new("/usr/bin/etcd"));
        etcd.envs(env_file(&etcd_env));
        m.spawn("etcd", etcd);
        d.machines.push(m);
    }
    for i in 0..MACHINES {
        let mdir = d.machines[i].dir.clone();
        let mut pd = net.command(i, &binary("atoll-pd"));
        pd.arg("--config").arg(mdir.join("pd.toml")).current_dir(&mdir);
        d.machines[i].spawn("pd", pd);
        let mut store = net.command(i, &binary("atoll-server"));
        store.arg("--config").arg(mdir.join("store.toml")).current_dir(&mdir);
        d.machines[i].spawn("store", store);
    }
    let pd_list: Vec<String> = ips.iter().map(|ip| format!("{ip}:2479")).collect();
    let pd_arg = pd_list.join(",");

    // Step 4: the operator checks from outside.
    let client = tikv_client(&pd_list).await;
    assert!(
        eventually(Duration::from_secs(60), || async {
            let (ok, out) = ctl(&pd_arg, &["stores"]);
            ok && out.matches("\tUp\t").count() == MACHINES
        })
        .await,
        "stores: {}",
        ctl(&pd_arg, &["stores"]).1
    );
    // Every PD member registers itself in etcd as it starts; the leader
    // lists it within a second.
    let listed = || json(&pd_list[0], "/pd/api/v1/members");
    assert!(
        eventually(Duration::from_secs(10), || async {
            listed()["members"].as_array().map(Vec::len) == Some(MACHINES)
        })
        .await,
        "members: {}",
        listed()
    );
    let members = listed();
    // Every region has a replica on each machine (host labels, 3 replicas).
    assert!(
        eventually(Duration::from_secs(60), || async {
            let leader = members["leader"]["client_urls"][0].as_str().unwrap_or_default();
            let leader = leader.trim_start_matches("http://");
            let regions = json(leader, "/pd/api/v1/regions");
            regions["regions"].as_array().is_some_and(|rs| {
                !rs.is_empty()
                    && rs.iter().all(|r| r["peers"].as_array().is_some_and(|p| p.len() == 3))
            })
        })
        .await,
        "regions never got 3 replicas"
    );
    for k in 0..100u32 {
        client.put(format!("k{k:03}").into_bytes(), k.to_string().into_bytes()).await.unwrap();
    }
    // Step 5: Prometheus scrapes every target of the rendered config.
    let prom = render(&template("prometheus.yml"), 1, &ips, dir.path());
    let targets: Vec<&str> = prom
        .lines()
        .filter(|l| l.contains("targets:"))
        .flat_map(|l| l.split('"').skip(1).step_by(2))
        .collect();
    assert_eq!(targets.len(), 2 * MACHINES, "{prom}");
    for t in &targets {
        let metrics = http_get(t, "/metrics").unwrap_or_default();
        assert!(metrics.contains("atoll_"), "no metrics at {t}");
    }

    // A machine dies: the one whose PD member leads.
    let leader_name = json(&pd_list[0], "/pd/api/v1/members")["leader"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let victim: usize = leader_name.trim_start_matches("pd-").parse::<usize>().unwrap() - 1;
    d.machines[victim].kill();
    let killed = Instant::now();
    let survivors: Vec<String> =
        pd_list.iter().enumerate().filter(|(i, _)| *i != victim).map(|(_, a)| a.clone()).collect();
    assert!(
        eventually(Duration::from_secs(10), || async {
            survivors
                .iter()
                .any(|a| json(&a.replace(":2479", ":2480"), "/status")["is_leader"] == true)
        })
        .await,
        "no new PD leader after machine {} died",
        victim + 1
    );
    println!("new PD leader {:?} after machine {} died", killed.elapsed(), victim + 1);
    // Writes and reads go on with two machines of three.
    let mut done = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while done < 50 && Instant::now() < deadline {
        let k = format!("after-{done:03}").into_bytes();
        if client.put(k, b"x".to_vec()).await.is_ok() {
            done += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(done, 50, "writes stopped after machine {} died", victim + 1);
    for k in 0..100u32 {
        let v = client.get(format!("k{k:03}").into_bytes()).await.unwrap();
        assert_eq!(v, Some(k.to_string().into_bytes()), "k{k:03}");
    }
    println!("the cluster kept serving after machine {} (the PD leader's) died", victim + 1);
}
