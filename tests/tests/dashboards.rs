//! The shipped Grafana dashboard against a real Prometheus (Debian's
//! `prometheus`, installed by `make deps`) scraping a real cluster: every
//! panel query must return data.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use atoll_client::{Config, Error, RawClient, TxnClient};
use atoll_tests::proc::{
    eventually, free_port, http_get, ProcCluster, TEST_PD_CONFIG, TEST_STORE_CONFIG,
};
use atoll_tests::repo_file;
use serde_json::Value;

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(prom: &str, expr: &str) -> Value {
    let body =
        http_get(prom, &format!("/api/v1/query?query={}", urlencode(expr))).unwrap_or_default();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn has_data(v: &Value) -> bool {
    v["status"] == "success" && v["data"]["result"].as_array().is_some_and(|r| !r.is_empty())
}

#[test]
fn shipped_prometheus_config_is_valid() {
    let out = Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(repo_file("etc/prometheus.yml"))
        .output();
    let out = out.expect("promtool (Debian package prometheus) is installed by `make deps`");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_query_returns_data() {
    // GC every second, so the GC panels see rounds within the test.
    let store_cfg = format!("{TEST_STORE_CONFIG}\n[server]\ngc-interval = \"1s\"\n");
    let c = ProcCluster::start_with(3, TEST_PD_CONFIG, &store_cfg);
    let client = RawClient::connect(Config::new(vec![c.pd_addr.clone()])).await.unwrap();
    let txn = TxnClient::connect(Config::new(vec![c.pd_addr.clone()])).await.unwrap();
    assert!(
        eventually(Duration::from_secs(60), || async { client.put(b"ready", b"1").await.is_ok() })
            .await
    );

    let mut targets: Vec<String> =
        (0..c.store_count()).map(|i| format!("\"{}\"", c.status_addr(i))).collect();
    targets.push(format!("\"{}\"", c.pd_status));
    let cfg = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: atoll\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    let cfg_path = c.dir.path().join("prometheus.yml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let prom = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(c.dir.path().join("prometheus.log")).unwrap();
    let _p = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!("--storage.tsdb.path={}", c.dir.path().join("prom").display()))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("prometheus (Debian package) is installed by `make deps`"),
    );

    // Transactions: versions for GC to remove, and a write conflict (a
    // key error); then PD's GC safe point moves past them.
    for round in 0..3 {
        let mut t = txn.begin().await.unwrap();
        t.put(b"dash-txn", format!("v{round}").as_bytes()).unwrap();
        t.commit().await.unwrap();
    }
    let mut late = txn.begin().await.unwrap();
    let mut early = txn.begin().await.unwrap();
    late.put(b"dash-txn", b"late").unwrap();
    early.put(b"dash-txn", b"early").unwrap();
    late.commit().await.unwrap();
    assert!(matches!(early.commit().await, Err(Error::Aborted(_))));
    let safe_point = txn.current_ts().await.unwrap();
    assert_eq!(txn.pd().update_gc_safe_point(safe_point).await.unwrap(), safe_point);

    // A workload touching every panel: writes, reads, scans, a bad request,
    // timestamps, transactional reads.
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut i = 0u32;
    while Instant::now() < deadline {
        let k = format!("dash-{i:05}");
        client.put(k.as_bytes(), b"v").await.unwrap();
        client.get(k.as_bytes()).await.unwrap();
        if i.is_multiple_of(20) {
            client.scan(b"dash-", b"dash.", 50).await.unwrap();
            assert!(client.put(b"", b"empty keys are refused").await.is_err());
            client.pd().get_ts().await.unwrap();
            txn.begin().await.unwrap().get(b"dash-txn").await.unwrap();
        }
        i += 1;
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            query(&prom, "up == 1")["data"]["result"].as_array().is_some_and(|r| r.len() == 4)
        })
        .await,
        "prometheus did not scrape all 4 processes: {}",
        c.log("prometheus.log")
    );

    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("etc/grafana/atoll-overview.json")).unwrap(),
    )
    .unwrap();
    let exprs: Vec<(String, String)> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_owned();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_owned()))
        })
        .collect();
    assert!(exprs.len() >= 30, "the dashboard has {} queries", exprs.len());
    // Rates need a few scrapes: retry the stragglers for a while.
    let mut missing = exprs.clone();
    let until = Instant::now() + Duration::from_secs(30);
    while !missing.is_empty() && Instant::now() < until {
        missing.retain(|(_, e)| !has_data(&query(&prom, e)));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let detail: Vec<String> =
        missing.iter().map(|(t, e)| format!("{t}: {e} -> {}", query(&prom, e))).collect();
    assert!(missing.is_empty(), "dashboard queries without data:\n{}", detail.join("\n"));
}
