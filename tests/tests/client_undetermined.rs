//! A write whose answer is lost is undetermined: Atoll's client reports it
//! as such and does not send it again (a repeated CAS could compare against
//! its own write, a repeated put overwrite a newer one). Reads, and writes
//! that never left because no connection could be made, are retried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atoll_client::{ApiVersion, Config, Error, RawClient};
use atoll_pd::PdServer;
use atoll_proto::metapb;
use atoll_proto::pdpb::{self, pd_client::PdClient};
use tokio::io::AsyncReadExt;

/// A "store" that accepts connections, reads whatever is sent and never
/// answers: every request reaches it and no answer comes back.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, accepted)
}

async fn start_pd(dir: &tempfile::TempDir) -> PdServer {
    PdServer::start(atoll_pd::Config {
        client_addr: "127.0.0.1:0".into(),
        status_addr: "127.0.0.1:0".into(),
        data_dir: dir.path().to_path_buf(),
        ..atoll_pd::Config::default()
    })
    .await
    .unwrap()
}

/// An API V1 cluster of one region on one store at `store_addr`.
async fn bootstrap(pd: &PdServer, store_addr: String) {
    let mut c = PdClient::connect(format!("http://{}", pd.addr)).await.unwrap();
    let region = metapb::Region {
        id: 2,
        region_epoch: Some(metapb::RegionEpoch { conf_ver: 1, version: 1 }),
        peers: vec![metapb::Peer { id: 3, store_id: 1, ..Default::default() }],
        ..Default::default()
    };
    let store = metapb::Store { id: 1, address: store_addr, ..Default::default() };
    let req = pdpb::BootstrapRequest {
        header: None,
        store: Some(store),
        region: Some(region),
        api_version: 1,
    };
    assert!(c.bootstrap(req).await.unwrap().into_inner().header.unwrap().error.is_none());
}

/// Short timeouts, three attempts.
fn fast_config(pd: &PdServer) -> Config {
    Config {
        timeout: Duration::from_millis(300),
        max_attempts: 3,
        max_backoff: Duration::from_millis(10),
        ..Config::new(vec![pd.addr.to_string()])
    }
    .with_api_version(ApiVersion::V1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_write_answer_is_undetermined_and_not_resent() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(&dir).await;
    let (store_addr, accepted) = black_hole().await;
    bootstrap(&pd, store_addr).await;
    let client = RawClient::connect(fast_config(&pd)).await.unwrap();

    let err = client.compare_and_swap(b"k", None, b"v").await.expect_err("no answer");
    // Returned from the first attempt (a retry would have ended `Exhausted`).
    assert!(matches!(err, Error::Undetermined(_)), "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // A put resent after it applied could overwrite a newer write: the
    // same. A read is retried until the attempts run out.
    let err = client.put(b"k", b"v").await.expect_err("no answer");
    assert!(matches!(err, Error::Undetermined(_)), "{err}");
    let err = client.get(b"k").await.expect_err("no answer");
    assert!(matches!(err, Error::Exhausted { attempts: 3, .. }), "{err}");
    drop(client);
    pd.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_could_not_connect_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(&dir).await;
    // A port nobody listens on: every connection is refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    bootstrap(&pd, closed).await;
    let client = RawClient::connect(fast_config(&pd)).await.unwrap();
    let err = client.compare_and_swap(b"k", None, b"v").await.expect_err("nobody listens");
    assert!(matches!(err, Error::Exhausted { attempts: 3, .. }), "{err}");
    let err = client.put(b"k", b"v").await.expect_err("nobody listens");
    assert!(matches!(err, Error::Exhausted { attempts: 3, .. }), "{err}");
    drop(client);
    pd.stop().await;
}

/// A store that takes requests and never answers (dead, paused or cut
/// off) holds an operation up for the attempt deadline, not the RPC
/// timeout: a write is then undetermined, a read is tried elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_store_is_given_up_on_at_the_attempt_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let pd = start_pd(&dir).await;
    let (store_addr, _) = black_hole().await;
    bootstrap(&pd, store_addr).await;
    let cfg = Config {
        timeout: Duration::from_secs(60),
        attempt_timeout: Duration::from_millis(200),
        ..fast_config(&pd)
    };
    let client = RawClient::connect(cfg).await.unwrap();

    let t = std::time::Instant::now();
    let err = client.put(b"k", b"v").await.expect_err("no answer");
    assert!(matches!(&err, Error::Undetermined(m) if m.contains("within")), "{err}");
    // Every read attempt goes to the one (silent) store: each ends at the
    // short deadline, none waits for the minute-long RPC timeout.
    let err = client.get(b"k").await.expect_err("no answer");
    assert!(matches!(err, Error::Exhausted { attempts: 3, .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(30), "waited {:?}", t.elapsed());
    drop(client);
    pd.stop().await;
}
