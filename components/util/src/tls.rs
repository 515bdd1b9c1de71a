//! Mutual TLS for every Atoll endpoint: the `[security]` config section,
//! the server side (a rustls acceptor that requires a client certificate
//! signed by the cluster's CA, then checks its common name against
//! `cert-allowed-cn`), and the client side (tonic's `ClientTlsConfig` with
//! the CA and this process's own certificate).
//!
//! Without a `[security]` section (all paths empty) everything is
//! plaintext, as before.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
pub use tokio_rustls::rustls;

/// The `[security]` section of PD and store configs (TiKV's names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct SecurityConfig {
    /// PEM file of the CA that signs every certificate of the cluster.
    pub ca_path: PathBuf,
    /// PEM certificate of this process (server and client identity).
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8 or SEC1/RSA) of `cert-path`.
    pub key_path: PathBuf,
    /// Common names a peer's certificate may have; empty: any the CA signed.
    pub cert_allowed_cn: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("security: {path}: {msg}")]
    File { path: String, msg: String },
    #[error("security: {0}")]
    Config(String),
}

/// (CA, certificate, key) as PEM bytes.
type Pem = (Vec<u8>, Vec<u8>, Vec<u8>);

fn file_err(path: &Path, msg: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.display().to_string(), msg: msg.to_string() }
}

impl SecurityConfig {
    /// Is TLS on (all three paths set)?
    pub fn enabled(&self) -> bool {
        !self.ca_path.as_os_str().is_empty()
    }

    /// All three paths or none; and the files must be readable PEM.
    pub fn validate(&self) -> Result<(), TlsError> {
        let set = [&self.ca_path, &self.cert_path, &self.key_path]
            .iter()
            .filter(|p| !p.as_os_str().is_empty())
            .count();
        match set {
            0 if self.cert_allowed_cn.is_empty() => Ok(()),
            0 => Err(TlsError::Config(
                "cert-allowed-cn needs ca-path, cert-path and key-path".into(),
            )),
            3 => {
                self.pem()?;
                Ok(())
            }
            _ => Err(TlsError::Config(
                "set all of ca-path, cert-path and key-path, or none (plaintext)".into(),
            )),
        }
    }

    fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
        std::fs::read(path).map_err(|e| file_err(path, e))
    }

    /// (CA, certificate, key) as PEM bytes.
    fn pem(&self) -> Result<Pem, TlsError> {
        let ca = Self::read(&self.ca_path)?;
        let cert = Self::read(&self.cert_path)?;
        let key = Self::read(&self.key_path)?;
        if certs(&ca, &self.ca_path)?.is_empty() {
            return Err(file_err(&self.ca_path, "no certificate in the file"));
        }
        if certs(&cert, &self.cert_path)?.is_empty() {
            return Err(file_err(&self.cert_path, "no certificate in the file"));
        }
        private_key(&key, &self.key_path)?;
        Ok((ca, cert, key))
    }

    /// The CA file's certificates as trust anchors.
    fn roots(&self, ca: &[u8]) -> Result<rustls::RootCertStore, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for c in certs(ca, &self.ca_path)? {
            roots.add(&c).map_err(|e| file_err(&self.ca_path, e))?;
        }
        Ok(roots)
    }

    /// The acceptor for this process's servers, or `None` for plaintext.
    pub fn acceptor(&self) -> Result<Option<TlsAcceptor>, TlsError> {
        if !self.enabled() {
            return Ok(None);
        }
        let (ca, cert, key) = self.pem()?;
        let roots = self.roots(&ca)?;
        let verifier = rustls::server::AllowAnyAuthenticatedClient::new(roots).boxed();
        let mut config = rustls::ServerConfig::builder()
            .with_safe_defaults()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&cert, &self.cert_path)?, private_key(&key, &self.key_path)?)
            .map_err(|e| file_err(&self.cert_path, e))?;
        // gRPC needs h2; the status pages and PD's HTTP API speak HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(TlsAcceptor {
            inner: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            allowed_cn: Arc::new(self.cert_allowed_cn.clone()),
        }))
    }

    /// tonic's client TLS settings (CA + own identity), or `None` for plaintext.
    pub fn client_tls(&self) -> Result<Option<tonic::transport::ClientTlsConfig>, TlsError> {
        if !self.enabled() {
            return Ok(None);
        }
        let (ca, cert, key) = self.pem()?;
        Ok(Some(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        ))
    }

    /// A rustls client config (for plain HTTPS callers such as `atoll-ctl`).
    pub fn rustls_client(&self) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
        if !self.enabled() {
            return Ok(None);
        }
        let (ca, cert, key) = self.pem()?;
        let roots = self.roots(&ca)?;
        let config = rustls::ClientConfig::builder()
            .with_safe_defaults()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                certs(&cert, &self.cert_path)?,
                private_key(&key, &self.key_path)?,
            )
            .map_err(|e| file_err(&self.cert_path, e))?;
        Ok(Some(Arc::new(config)))
    }

    /// `http://` or `https://`, for URLs to other Atoll processes.
    pub fn scheme(&self) -> &'static str {
        if self.enabled() {
            "https"
        } else {
            "http"
        }
    }
}

/// A gRPC endpoint for `addr` (`host:port` or a URL): `https://` with
/// `tls`, `http://` without.
pub fn endpoint(
    addr: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<tonic::transport::Endpoint, String> {
    let host = addr.trim_start_matches("http://").trim_start_matches("https://");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let ep = tonic::transport::Endpoint::from_shared(format!("{scheme}://{host}"))
        .map_err(|e| format!("{addr}: {e}"))?;
    match tls {
        Some(tls) => ep.tls_config(tls.clone()).map_err(|e| format!("{addr}: {e}")),
        None => Ok(ep),
    }
}

fn certs(pem: &[u8], path: &Path) -> Result<Vec<rustls::Certificate>, TlsError> {
    let mut r = pem;
    let certs = rustls_pemfile::certs(&mut r).map_err(|e| file_err(path, e))?;
    Ok(certs.into_iter().map(rustls::Certificate).collect())
}

fn private_key(pem: &[u8], path: &Path) -> Result<rustls::PrivateKey, TlsError> {
    let mut r = pem;
    loop {
        match rustls_pemfile::read_one(&mut r).map_err(|e| file_err(path, e))? {
            Some(
                rustls_pemfile::Item::PKCS8Key(k)
                | rustls_pemfile::Item::ECKey(k)
                | rustls_pemfile::Item::RSAKey(k),
            ) => return Ok(rustls::PrivateKey(k)),
            Some(_) => continue,
            None => return Err(file_err(path, "no private key in the file")),
        }
    }
}

/// Accepts TLS connections that present a certificate of the cluster's CA
/// whose common name is allowed.
#[derive(Clone)]
pub struct TlsAcceptor {
    inner: tokio_rustls::TlsAcceptor,
    allowed_cn: Arc<Vec<String>>,
}

impl TlsAcceptor {
    /// The TLS handshake, then the common-name check.
    pub async fn accept(
        &self,
        io: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
        let tls = self.inner.accept(io).await?;
        if !self.allowed_cn.is_empty() {
            let cn = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| subject_common_name(&c.0));
            if !cn.as_ref().is_some_and(|cn| self.allowed_cn.contains(cn)) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("client certificate CN {cn:?} is not in cert-allowed-cn"),
                ));
            }
        }
        Ok(tls)
    }
}

/// One DER element: (tag, contents, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject's common name (OID 2.5.4.3) of a DER X.509 certificate.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    const SEQ: u8 = 0x30;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let (_, cert, _) = der(cert).filter(|(t, _, _)| *t == SEQ)?;
    let (_, tbs, _) = der(cert).filter(|(t, _, _)| *t == SEQ)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject
    let (tag, _, r) = der(rest)?;
    if tag == 0xa0 {
        rest = r;
    }
    for _ in 0..4 {
        let (_, _, r) = der(rest)?;
        rest = r;
    }
    let (_, mut subject, _) = der(rest).filter(|(t, _, _)| *t == SEQ)?;
    // Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value }
    while !subject.is_empty() {
        let (_, set, r) = der(subject)?;
        subject = r;
        let (_, atv, _) = der(set)?;
        let (oid_tag, oid, value) = der(atv)?;
        if oid_tag == 0x06 && oid == CN_OID {
            let (_, v, _) = der(value)?;
            return String::from_utf8(v.to_vec()).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `server.pem` of `scripts/make-certs.sh`: CN atoll-server, issued by a
    /// CA whose CN is atoll-test-ca (the issuer comes before the subject in
    /// the certificate, and must not be taken for it).
    const CERT: &str = include_str!("../testdata/server.pem");

    #[test]
    fn the_subject_common_name_is_read_not_the_issuers() {
        let mut r = CERT.as_bytes();
        let der = rustls_pemfile::certs(&mut r).unwrap().remove(0);
        assert_eq!(subject_common_name(&der).as_deref(), Some("atoll-server"));
        assert_eq!(subject_common_name(b"\x30\x03\x02\x01"), None, "truncated input");
        assert_eq!(subject_common_name(&[]), None);
    }

    #[test]
    fn all_three_paths_or_none() {
        SecurityConfig::default().validate().unwrap();
        let half = SecurityConfig { ca_path: "ca.pem".into(), ..Default::default() };
        assert!(half.validate().unwrap_err().to_string().contains("all of"));
        let cn_only = SecurityConfig { cert_allowed_cn: vec!["x".into()], ..Default::default() };
        assert!(cn_only.validate().is_err());
        let missing = SecurityConfig {
            ca_path: "/nonexistent/ca.pem".into(),
            cert_path: "/nonexistent/c.pem".into(),
            key_path: "/nonexistent/k.pem".into(),
            cert_allowed_cn: vec![],
        };
        assert!(missing.validate().unwrap_err().to_string().contains("/nonexistent/ca.pem"));
    }
}
