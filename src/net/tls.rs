//! TLS for the listeners (`[tls]`): MQTT over TLS on `mqtt.tls_bind` and
//! `wss://` on `websocket.tls_bind`, with optional client certificates (mTLS).
//!
//! Owns: reading the certificate chain, key and client CA (PEM), the rustls
//! server configuration, swapping it on reload (SIGHUP: new connections get
//! the new certificate, existing ones keep theirs), and reading the verified
//! client certificate's common name for `cn_as_username`.
//! Must never: accept a client certificate that the configured CA did not
//! sign or that is outside its validity (rustls/webpki check both), or run
//! a handshake without the connect timeout.

use crate::config::TlsConfig;
use anyhow::Context;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The TLS configuration in force, replaceable on reload.
pub struct Tls {
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    server: RwLock<Arc<ServerConfig>>,
    cn_as_username: bool,
}

impl Tls {
    /// Reads the files named by `[tls]`; errors name the key and the file.
    pub fn load(config: &TlsConfig) -> anyhow::Result<Tls> {
        Ok(Tls { server: RwLock::new(Arc::new(server_config(config)?)), cn_as_username: config.cn_as_username })
    }

    /// Reads the certificate files again (SIGHUP). On error the old ones stay.
    pub fn reload(&self, config: &TlsConfig) -> anyhow::Result<()> {
        let server = server_config(config)?;
        *self.server.write() = Arc::new(server);
        tracing::info!("TLS certificates reloaded");
        Ok(())
    }

    /// Completes a TLS handshake and returns the stream and, with
    /// `cn_as_username`, the verified client certificate's common name.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<(TlsStream<TcpStream>, Option<Arc<str>>)> {
        let acceptor = TlsAcceptor::from(self.server.read().clone());
        let tls = acceptor.accept(stream).await?;
        let user = if self.cn_as_username {
            tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(|cert| common_name(cert))
        } else {
            None
        };
        Ok((tls, user.map(|u| Arc::from(u.as_str()))))
    }
}

fn server_config(config: &TlsConfig) -> anyhow::Result<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert_file)
        .with_context(|| format!("tls.cert_file: cannot read {}", config.cert_file.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("tls.cert_file {}: not PEM certificates", config.cert_file.display()))?;
    anyhow::ensure!(!certs.is_empty(), "tls.cert_file {}: no certificate in it", config.cert_file.display());
    let key = PrivateKeyDer::from_pem_file(&config.key_file)
        .with_context(|| format!("tls.key_file {}: no readable PEM private key", config.key_file.display()))?;
    let builder = ServerConfig::builder();
    let builder = match &config.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("tls.client_ca_file: cannot read {}", ca.display()))?
            {
                let cert =
                    cert.with_context(|| format!("tls.client_ca_file {}: not PEM certificates", ca.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("tls.client_ca_file {}: unusable CA certificate", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder(Arc::new(roots));
            let verifier = if config.require_client_cert { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().context("tls.client_ca_file: no usable CA")?)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(certs, key)
        .with_context(|| format!("tls.key_file {}: does not match tls.cert_file", config.key_file.display()))
}

/// The subject's common name of a DER certificate.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    (!cn.is_empty()).then_some(cn)
}

/// MQTT runs over a TLS stream like over TCP. Readiness is not asked of the
/// socket: rustls may hold decrypted bytes the socket no longer signals.
impl crate::mqtt::connection::ByteStream for TlsStream<TcpStream> {}
