//! Helpers for the tests that drive the upstream `tikv-client` crate (a
//! dev-dependency, so they live here rather than in `atoll_tests`).

use std::time::Duration;

use atoll_tests::proc::ProcCluster;
use tikv_client::{Config, RawClient};

/// A `tikv-client` raw client with `cfg`, once it can write to the cluster
/// (bootstrap and the first leader can take a while); waits up to 60 s.
pub async fn writable_tikv_client(c: &ProcCluster, cfg: Config) -> RawClient {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(cl) = RawClient::new_with_config(vec![c.pd_addr.clone()], cfg.clone()).await {
            if cl.put(b"ready".to_vec(), b"1".to_vec()).await.is_ok() {
                cl.delete(b"ready".to_vec()).await.unwrap();
                return cl;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tikv-client could not use the cluster; pd log:\n{}",
            c.log("pd.log")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
