//! HTTPS on the HTTP port (with the operator's certificate), and the CLI's HTTPS client.

use std::sync::Arc;

use anyhow::Context;

use super::{ClusterTls, Current, Source, TlsSettings, files, provider};

impl ClusterTls {
    /// What the HTTP port serves with when the node has the operator's certificate: the same
    /// certificate (renewals apply), TLS 1.2 or 1.3 for browsers, and with `client_cert_auth` a
    /// client certificate of the trusted CA required (revoked ones refused). `None` with
    /// derived certificates: browsers do not trust the cluster's own CA, so the HTTP port stays
    /// plain and the dashboard keeps working.
    pub fn https_config(
        &self,
        client_cert_auth: bool,
    ) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        if matches!(self.source, Source::Derived { .. }) {
            return Ok(None);
        }
        let builder = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?;
        let builder = if client_cert_auth {
            builder.with_client_cert_verifier(self.client_verifier(true)?)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(self.current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

/// The TLS a CLI command speaks to `https://` addresses with: the trusted CA of the settings
/// (`None` without one: the system's roots) and, with a certificate, that client certificate.
pub fn https_client_config(settings: &TlsSettings) -> anyhow::Result<Option<rustls::ClientConfig>> {
    if settings.trusted_ca_file.is_empty() {
        anyhow::ensure!(
            settings.cert_file.is_empty(),
            "--cert-file needs --trusted-ca-file: the CA the server's certificate chains to"
        );
        return Ok(None);
    }
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(files::roots(&settings.trusted_ca_file)?);
    let config = if settings.cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let key = files::certified_key(&settings.cert_file, &settings.key_file, &provider)?;
        builder.with_client_cert_resolver(Arc::new(Current::of(key)))
    };
    Ok(Some(config))
}
