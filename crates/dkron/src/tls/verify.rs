//! How an RPC client checks the server: the whole chain against the trusted CAs, as webpki
//! does it, and — with derived certificates — the cluster's name instead of the address
//! dialled (a member is reached by IP, container name or anything gossip advertises, and every
//! member's leaf names the cluster). With the operator's certificates any certificate of the
//! trusted CA is a member, whatever names it carries.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Debug)]
pub(super) struct ClusterServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<CryptoProvider>,
    /// The name every member's certificate carries, or `None`: the chain alone decides.
    name: Option<ServerName<'static>>,
}

impl ClusterServerVerifier {
    pub(super) fn new(
        roots: Arc<rustls::RootCertStore>,
        provider: Arc<CryptoProvider>,
        name: Option<&'static str>,
    ) -> anyhow::Result<ClusterServerVerifier> {
        let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| anyhow::anyhow!("building the RPC server verifier: {e}"))?;
        let name = name
            .map(ServerName::try_from)
            .transpose()
            .map_err(|e| anyhow::anyhow!("the cluster name: {e}"))?;
        Ok(ClusterServerVerifier {
            inner,
            roots,
            provider,
            name,
        })
    }
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.name {
            Some(name) => {
                self.inner
                    .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            }
            None => {
                let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_cert_signed_by_trust_anchor(
                    &cert,
                    &self.roots,
                    intermediates,
                    now,
                    self.provider.signature_verification_algorithms.all,
                )?;
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
