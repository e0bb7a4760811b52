//! Who may talk on the RPC port: mutual TLS between the holders of the gossip key.
//!
//! With `--encrypt KEY` (a `dkron keygen` key) every node derives the same **cluster CA** from
//! the key — HKDF-SHA256 turns it into an Ed25519 signing key, and a self-signed CA
//! certificate with fixed fields makes every node's copy identical — and mints itself a
//! short-lived **leaf certificate** signed by that CA (a fresh key each time, renewed well
//! before it expires). RPC servers require a client certificate from a cluster CA, and RPC
//! clients accept only servers that present one, so a host without the key cannot connect at
//! all: a forged run order, vote or write is refused at the handshake. Every installed key
//! contributes its CA to the trusted roots, so a keyring being rotated keeps the cluster
//! talking; leaves are minted by the first key's CA.
//!
//! Certificates are made by `rcgen`, TLS is `rustls` with the ring provider: no crypto of our
//! own. Leaves name the cluster (`CLUSTER_NAME`) and the node; clients check the chain and that
//! name (a cluster member may be reached at any address).
//!
//! With **explicit PKI** (Dkron Pro's `--cert-file`, `--key-file`, `--trusted-ca-file`,
//! `--client-crl-file`) the node presents the operator's certificate instead, peers must chain
//! to the trusted CA (any certificate of it is a member: no name check), revoked ones are
//! refused, and the files are read again at each renewal, so replacing them on disk rotates
//! the certificate. The same certificate serves the HTTP API over HTTPS (`https.rs`).

mod ca;
mod files;
mod https;
mod listener;
mod verify;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use https::https_client_config;
pub use listener::TlsListener;

use crate::clock::SharedClock;
use crate::config::AgentConfig;
use ca::ClusterCa;

/// What decides a node's (or the CLI's) TLS: the gossip key and the certificate files.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub encrypt: String,
    pub auto_tls: bool,
    pub cert_file: String,
    pub key_file: String,
    pub trusted_ca_file: String,
    pub crl_file: String,
}

impl TlsSettings {
    pub fn of(config: &AgentConfig) -> TlsSettings {
        TlsSettings {
            encrypt: config.encrypt.clone(),
            auto_tls: config.auto_tls,
            cert_file: config.cert_file.clone(),
            key_file: config.key_file.clone(),
            trusted_ca_file: config.trusted_ca_file.clone(),
            crl_file: config.client_crl_file.clone(),
        }
    }
}

/// Where a node's certificates come from.
enum Source {
    /// Minted from the gossip key's CAs (the first one signs).
    Derived { cas: Vec<ClusterCa> },
    /// The operator's files, read again at each renewal.
    Files { cert: String, key: String },
}

/// The name every leaf certificate carries and every client checks.
pub const CLUSTER_NAME: &str = "cluster.dkron-rs.invalid";
/// How long a minted leaf is valid.
const LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How often a node mints itself a new leaf (a quarter of its lifetime).
pub const RENEW_EVERY: Duration = Duration::from_secs(6 * 3600);
/// How far back a leaf's validity starts, for clocks that disagree between nodes.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// This node's TLS identity in the cluster: the trusted CAs, the revoked certificates and its
/// current certificate.
pub struct ClusterTls {
    source: Source,
    roots: Arc<rustls::RootCertStore>,
    crls: Vec<rustls::pki_types::CertificateRevocationListDer<'static>>,
    name: String,
    clock: SharedClock,
    current: Arc<Current>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("roots", &self.roots.len())
            .field("name", &self.name)
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    dkron_executors::install_crypto_provider();
    Arc::new(rustls::crypto::ring::default_provider())
}

impl ClusterTls {
    /// The identity of `name` in the cluster of the gossip keys `keys` (raw key bytes, the
    /// first one signs), with a leaf minted now.
    pub fn new(keys: &[Vec<u8>], name: &str, clock: SharedClock) -> anyhow::Result<ClusterTls> {
        anyhow::ensure!(
            !keys.is_empty(),
            "mutual TLS needs a gossip key (--encrypt)"
        );
        let provider = provider();
        let cas = keys
            .iter()
            .map(|k| ClusterCa::derive(k))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let leaf = cas[0].mint(name, clock.now(), LEAF_LIFETIME, CLOCK_SKEW, &provider)?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in &cas {
            roots
                .add(ca.certificate().clone())
                .context("trusting the cluster CA")?;
        }
        Ok(ClusterTls {
            source: Source::Derived { cas },
            roots: Arc::new(roots),
            crls: Vec::new(),
            name: name.to_string(),
            clock,
            current: Arc::new(Current::of(leaf)),
            provider,
        })
    }

    /// A node's identity as its settings give it: the operator's files when `cert_file` is
    /// set, else certificates derived from the gossip key (unless `auto_tls` is off); `None`:
    /// the RPC port stays plain.
    pub fn for_node(
        settings: &TlsSettings,
        name: &str,
        clock: SharedClock,
    ) -> anyhow::Result<Option<Arc<ClusterTls>>> {
        if !settings.cert_file.is_empty() {
            return Ok(Some(Arc::new(ClusterTls::from_files(
                settings, name, clock,
            )?)));
        }
        if !settings.auto_tls {
            return Ok(None);
        }
        ClusterTls::from_encrypt_key(&settings.encrypt, name, clock)
    }

    /// The identity of the operator's certificate files.
    fn from_files(
        settings: &TlsSettings,
        name: &str,
        clock: SharedClock,
    ) -> anyhow::Result<ClusterTls> {
        anyhow::ensure!(
            !settings.trusted_ca_file.is_empty(),
            "a certificate (cert-file) needs trusted-ca-file: the CA the other nodes' certificates chain to"
        );
        let provider = provider();
        let roots = files::roots(&settings.trusted_ca_file)?;
        let crls = files::crls(&settings.crl_file)?;
        let leaf = files::certified_key(&settings.cert_file, &settings.key_file, &provider)?;
        Ok(ClusterTls {
            source: Source::Files {
                cert: settings.cert_file.clone(),
                key: settings.key_file.clone(),
            },
            roots: Arc::new(roots),
            crls,
            name: name.to_string(),
            clock,
            current: Arc::new(Current::of(leaf)),
            provider,
        })
    }

    /// The identity from a base64 `--encrypt` key; `None` without one (an empty key).
    pub fn from_encrypt_key(
        key: &str,
        name: &str,
        clock: SharedClock,
    ) -> anyhow::Result<Option<Arc<ClusterTls>>> {
        use base64::Engine;
        if key.is_empty() {
            return Ok(None);
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key.trim())
            .context("invalid --encrypt key: not base64 (use the output of `dkron keygen`)")?;
        Ok(Some(Arc::new(ClusterTls::new(&[raw], name, clock)?)))
    }

    /// Mints a new leaf (or reads the certificate files again); connections made from now on
    /// present it.
    pub fn renew(&self) -> anyhow::Result<()> {
        let leaf = match &self.source {
            Source::Derived { cas } => cas[0].mint(
                &self.name,
                self.clock.now(),
                LEAF_LIFETIME,
                CLOCK_SKEW,
                &self.provider,
            )?,
            Source::Files { cert, key } => files::certified_key(cert, key, &self.provider)?,
        };
        *self.current.0.write().expect("leaf lock") = Arc::new(leaf);
        Ok(())
    }

    /// A client-certificate verifier: the trusted CAs, the revoked certificates refused;
    /// `mandatory` or merely offered.
    fn client_verifier(
        &self,
        mandatory: bool,
    ) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        )
        .with_crls(self.crls.clone());
        let builder = if mandatory {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        builder
            .build()
            .context("building the client-certificate verifier")
    }

    /// What the RPC port serves with: TLS 1.3, a client certificate from a cluster CA
    /// required.
    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let verifier = self.client_verifier(true)?;
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3")?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(self.current.clone());
        // HTTP/2 is what nodes speak (`rpc/client.rs`); HTTP/1.1 for earlier versions.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// What RPC clients connect with: TLS 1.3, this node's leaf as client certificate, and
    /// only servers with a leaf of a cluster CA accepted.
    pub fn client_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let name = match self.source {
            Source::Derived { .. } => Some(CLUSTER_NAME),
            Source::Files { .. } => None,
        };
        let verifier =
            verify::ClusterServerVerifier::new(self.roots.clone(), self.provider.clone(), name)?;
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(self.current.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// Renews the leaf every [`RENEW_EVERY`] until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(RENEW_EVERY) => {}
                () = shutdown.requested() => return,
            }
            if let Err(e) = self.renew() {
                tracing::error!(error = %format!("{e:#}"), "could not renew this node's TLS certificate; RPC connections fail once it expires. Restart the node");
            }
        }
    }
}

/// The leaf presented now, on both ends of a connection.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl Current {
    fn of(key: CertifiedKey) -> Current {
        Current(RwLock::new(Arc::new(key)))
    }

    fn get(&self) -> Arc<CertifiedKey> {
        self.0.read().expect("leaf lock").clone()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for Current {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
