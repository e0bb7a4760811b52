//! The operator's PEM files: certificate chain and key, trusted CAs, revocation list. Each
//! error names the file and the setting, so a misconfigured node says what to fix.

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// This node's certificate (leaf first, then any intermediates) and its key.
pub(super) fn certified_key(
    cert: &str,
    key: &str,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read cert-file {cert}: it must hold PEM certificates"))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "cert-file {cert} holds no certificate (PEM, BEGIN CERTIFICATE)"
    );
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read key-file {key}: it must hold a PEM private key"))?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .with_context(|| format!("key-file {key}: an unsupported key type"))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .with_context(|| format!("key-file {key} is not the key of cert-file {cert}"))?;
    Ok(certified)
}

/// The CAs other nodes' (and API clients') certificates must chain to.
pub(super) fn roots(path: &str) -> anyhow::Result<rustls::RootCertStore> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!("cannot read trusted-ca-file {path}: it must hold PEM certificates")
        })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).with_context(|| {
            format!("trusted-ca-file {path} holds a certificate that is not a CA")
        })?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "trusted-ca-file {path} holds no certificate"
    );
    Ok(roots)
}

/// Revoked certificates (none without a file).
pub(super) fn crls(path: &str) -> anyhow::Result<Vec<CertificateRevocationListDer<'static>>> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|crls| crls.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read client-crl-file {path}: it must hold a PEM X509 CRL"))
}
