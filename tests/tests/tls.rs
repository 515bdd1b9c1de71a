//! Mutual TLS: with a `[security]` section, PD and a store accept only
//! clients whose certificate the cluster CA signed and whose CN is
//! allowed, on every port (PD's gRPC/HTTP and status ports, the store's
//! gRPC and status ports). Our client, atoll-ctl and the upstream
//! tikv-client work with a valid certificate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use atoll_client::{Config, RawClient};
use atoll_tests::proc::{ProcCluster, TEST_PD_CONFIG, TEST_STORE_CONFIG};
use atoll_util::tls::{rustls, SecurityConfig};

fn make_certs(dir: &Path) {
    let script = atoll_tests::repo_file("scripts/make-certs.sh");
    let ok = Command::new("bash").arg(script).arg(dir).status().expect("run make-certs.sh");
    assert!(ok.success(), "make-certs.sh failed");
}

/// A client certificate with CN `intruder`, signed by the cluster CA.
fn make_intruder(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "intruder-key.pem",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "intruder-key.pem",
        "-subj",
        "/O=atoll/CN=intruder",
        "-out",
        "intruder.csr",
    ]);
    std::fs::write(
        dir.join("intruder.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=clientAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "intruder.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "intruder.ext",
        "-out",
        "intruder.pem",
    ]);
}

fn security(dir: &Path, ca: &str, name: &str) -> SecurityConfig {
    SecurityConfig {
        ca_path: dir.join(ca),
        cert_path: dir.join(format!("{name}.pem")),
        key_path: dir.join(format!("{name}-key.pem")),
        cert_allowed_cn: vec![],
    }
}

fn section(s: &SecurityConfig) -> String {
    format!(
        "\n[security]\nca-path = {:?}\ncert-path = {:?}\nkey-path = {:?}\n\
         cert-allowed-cn = [\"atoll-pd\", \"atoll-server\", \"atoll-client\"]\n",
        s.ca_path, s.cert_path, s.key_path
    )
}

/// What a probe sends once the TLS connection is up.
#[derive(Clone, Copy)]
enum Speak {
    /// `GET <path>` over HTTP/1.1; an answer starts with `HTTP/1.1`.
    Http1(&'static str),
    /// The HTTP/2 preface; an answer is the server's SETTINGS frame.
    H2,
}

/// Connects over TLS with `cfg`, says something, and returns what came
/// back, or why nothing did.
fn probe(addr: &str, cfg: Arc<rustls::ClientConfig>, speak: Speak) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let hello: Vec<u8> = match speak {
        Speak::Http1(path) => {
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into()
        }
        Speak::H2 => {
            let mut v = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
            v.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // empty SETTINGS
            v
        }
    };
    s.write_all(&hello).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 64];
    let mut got = 0;
    while got < 9 {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(format!("closed after {got} bytes")),
            Ok(n) => got += n,
            Err(e) => return Err(e.to_string()),
        }
    }
    buf.truncate(got);
    let answered = match speak {
        Speak::Http1(_) => buf.starts_with(b"HTTP/1.1 200"),
        Speak::H2 => buf[3] == 4, // a SETTINGS frame
    };
    if answered {
        Ok(buf)
    } else {
        Err(format!("unexpected answer {:?}", String::from_utf8_lossy(&buf)))
    }
}

fn no_cert_client(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls_pemfile::certs(&mut pem.as_slice()).unwrap() {
        roots.add(&rustls::Certificate(c)).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_safe_defaults()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_port_requires_a_certificate_of_the_cluster_ca_with_an_allowed_cn() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().to_path_buf();
    make_certs(&dir);
    make_intruder(&dir);
    let other: PathBuf = dir.join("other");
    make_certs(&other);

    let pd_sec = security(&dir, "ca.pem", "pd");
    let store_sec = security(&dir, "ca.pem", "server");
    let c = ProcCluster::start_with(
        1,
        &format!("{TEST_PD_CONFIG}{}", section(&pd_sec)),
        &format!("{TEST_STORE_CONFIG}{}", section(&store_sec)),
    );

    // Our client with a valid certificate: writes and reads.
    let client_sec = security(&dir, "ca.pem", "client");
    let cfg = Config::new(vec![c.pd_addr.clone()]).with_security(client_sec.clone());
    let mut client = None;
    for _ in 0..100 {
        if let Ok(cl) = RawClient::connect(cfg.clone()).await {
            if cl.put(b"k", b"v").await.is_ok() {
                client = Some(cl);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let client =
        client.unwrap_or_else(|| panic!("TLS cluster not usable: {}", c.log("store0.log")));
    assert_eq!(client.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));

    // The upstream tikv-client with the same certificate.
    let tikv = tikv_client::RawClient::new_with_config(
        vec![c.pd_addr.clone()],
        tikv_client::Config::default()
            .with_security(&client_sec.ca_path, &client_sec.cert_path, &client_sec.key_path)
            .with_default_keyspace(),
    )
    .await
    .expect("tikv-client over TLS");
    tikv.put(b"t".to_vec(), b"1".to_vec()).await.unwrap();
    assert_eq!(tikv.get(b"t".to_vec()).await.unwrap(), Some(b"1".to_vec()));

    // atoll-ctl with the certificate; without it, refused.
    let ctl = |tls: bool| {
        let mut cmd = Command::new(atoll_tests::proc::binary("atoll-ctl"));
        cmd.arg("--pd").arg(&c.pd_addr);
        if tls {
            cmd.arg("--ca-path").arg(&client_sec.ca_path);
            cmd.arg("--cert-path").arg(&client_sec.cert_path);
            cmd.arg("--key-path").arg(&client_sec.key_path);
        }
        cmd.arg("stores").output().unwrap()
    };
    let out = ctl(true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\tUp\t"));
    assert!(!ctl(false).status.success(), "atoll-ctl without a certificate got in");

    // Every port, with every kind of client.
    let ports = [
        ("pd client", c.pd_addr.clone(), Speak::Http1("/pd/api/v1/health")),
        ("pd status", c.pd_status.clone(), Speak::Http1("/status")),
        ("store", c.store_addr(0).to_owned(), Speak::H2),
        ("store status", c.status_addr(0).to_owned(), Speak::Http1("/status")),
    ];
    let valid = client_sec.rustls_client().unwrap().unwrap();
    let other_ca = security(&dir, "ca.pem", "other/client").rustls_client().unwrap().unwrap();
    let bad_cn = security(&dir, "ca.pem", "intruder").rustls_client().unwrap().unwrap();
    let no_cert = no_cert_client(&client_sec.ca_path);
    for (name, addr, speak) in &ports {
        probe(addr, valid.clone(), *speak)
            .unwrap_or_else(|e| panic!("{name} {addr} refused a valid client: {e}"));
        for (kind, cfg) in
            [("no certificate", &no_cert), ("another CA", &other_ca), ("CN intruder", &bad_cn)]
        {
            let r = probe(addr, cfg.clone(), *speak);
            assert!(r.is_err(), "{name} {addr} let in a client with {kind}: {r:?}");
            println!("{name}: {kind} refused ({})", r.unwrap_err());
        }
    }
}
