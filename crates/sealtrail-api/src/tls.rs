//! Native TLS for REST and gRPC (rustls, the `ring` provider), so a small deployment
//! needs no proxy in front: config keys `api.tls_cert_file` (PEM: the certificate, then any
//! intermediates) and `api.tls_key_file` (PEM: PKCS#8, PKCS#1 or SEC1 private key).
//!
//! The certificate is read at start (a missing file, a key that does not match the
//! certificate or an unreadable PEM stops the server with a message naming the file) and
//! again on `SIGHUP` ([`TlsEdge::reload`]): new handshakes use the new pair, connections
//! already open keep theirs; a pair that fails to load is logged and the old one stays in
//! use, so a renewal script can never take the server down. REST offers ALPN `http/1.1`,
//! gRPC `h2`; TLS 1.2 and 1.3 with rustls' safe defaults.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

/// The two files of a TLS identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The loaded identity (reloadable) and an acceptor for each protocol.
pub struct TlsEdge {
    resolver: Arc<ReloadingCert>,
    rest: TlsAcceptor,
    grpc: TlsAcceptor,
}

impl TlsEdge {
    /// Loads `files`; the error says which file is wrong and how.
    pub fn load(files: TlsFiles) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = load_pair(&files, &provider)?;
        let resolver = Arc::new(ReloadingCert {
            files,
            provider: provider.clone(),
            current: RwLock::new(Arc::new(current)),
        });
        let config = |alpn: &[u8]| -> Result<TlsAcceptor, String> {
            let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS setup: {e}"))?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        Ok(Self {
            rest: config(b"http/1.1")?,
            grpc: config(b"h2")?,
            resolver,
        })
    }

    /// Re-reads the files. On success new handshakes use the new pair; on failure the
    /// old pair stays in use. Returns a line describing what is now served.
    pub fn reload(&self) -> Result<String, String> {
        let fresh = load_pair(&self.resolver.files, &self.resolver.provider)?;
        let summary = describe(&fresh);
        *self.resolver.current.write().expect("tls lock") = Arc::new(fresh);
        Ok(summary)
    }

    /// What is served now: the leaf certificate's SHA-256 fingerprint and chain length.
    pub fn describe(&self) -> String {
        describe(&self.resolver.current.read().expect("tls lock"))
    }

    pub fn rest_acceptor(&self) -> TlsAcceptor {
        self.rest.clone()
    }

    pub fn grpc_acceptor(&self) -> TlsAcceptor {
        self.grpc.clone()
    }

    /// Reloads on every `SIGHUP` until the process ends, logging the outcome.
    pub fn reload_on_sighup(self: &Arc<Self>) -> std::io::Result<()> {
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let tls = self.clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match tls.reload() {
                    Ok(summary) => {
                        metrics::counter!("sealtrail_tls_reloads_total", "result" => "ok")
                            .increment(1);
                        tracing::info!(%summary, "SIGHUP: TLS certificate reloaded");
                    }
                    Err(err) => {
                        metrics::counter!("sealtrail_tls_reloads_total", "result" => "failed")
                            .increment(1);
                        tracing::error!(%err, "SIGHUP: TLS certificate NOT reloaded; still serving the previous one");
                    }
                }
            }
        });
        Ok(())
    }
}

#[derive(Debug)]
struct ReloadingCert {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("tls lock").clone())
    }
}

fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let named = |path: &Path, what: &str, err: &dyn std::fmt::Display| {
        format!("tls {what} {}: {err}", path.display())
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| named(&files.cert, "certificate file (api.tls_cert_file)", &e))?;
    if certs.is_empty() {
        return Err(named(
            &files.cert,
            "certificate file (api.tls_cert_file)",
            &"no CERTIFICATE block in it",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| named(&files.key, "key file (api.tls_key_file)", &e))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| named(&files.key, "key file (api.tls_key_file)", &e))?;
    let pair = CertifiedKey::new(certs, signing);
    pair.keys_match().map_err(|e| {
        format!(
            "api.tls_key_file {} does not belong to the certificate in api.tls_cert_file {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(pair)
}

fn describe(pair: &CertifiedKey) -> String {
    let leaf = pair
        .cert
        .first()
        .map(|c| const_hex::encode(Sha256::digest(c)));
    format!(
        "leaf sha256 {} ({} certificate(s) in the chain)",
        leaf.unwrap_or_default(),
        pair.cert.len()
    )
}
