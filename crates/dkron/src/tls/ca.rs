//! The cluster CA derived from a gossip key, and the leaves it signs.

use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ED25519, SerialNumber,
};
use ring::hkdf;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// HKDF salt and info: the CA key is bound to this purpose, so the same gossip key used for
/// anything else never yields it.
const SALT: &[u8] = b"dkron-rs cluster CA";
const INFO: &[u8] = b"ed25519 signing key, v1";

/// PKCS#8 v1 (RFC 8410) prefix of an Ed25519 private key: the seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// One gossip key's CA: its signing key and its (self-signed, identical on every node)
/// certificate.
pub(super) struct ClusterCa {
    params: CertificateParams,
    key: KeyPair,
    certificate: CertificateDer<'static>,
}

impl ClusterCa {
    /// The CA every holder of `key` derives.
    pub(super) fn derive(key: &[u8]) -> anyhow::Result<ClusterCa> {
        let mut seed = [0u8; 32];
        hkdf::Salt::new(hkdf::HKDF_SHA256, SALT)
            .extract(key)
            .expand(&[INFO], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut seed))
            .map_err(|_| anyhow::anyhow!("deriving the cluster CA key"))?;
        let der = [ED25519_PKCS8_PREFIX.as_slice(), &seed].concat();
        let key =
            KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), &PKCS_ED25519)
                .context("loading the cluster CA key")?;
        // Names the CA by its key, so the CAs of several keys (rotation) stay apart.
        let fingerprint: String = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw())
            .as_ref()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("dkron-rs cluster CA {fingerprint}"),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // Fixed fields (Ed25519 signatures are deterministic): every node's copy is the same.
        params.serial_number = Some(SerialNumber::from_slice(fingerprint.as_bytes()));
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(2225, 1, 1);
        let certificate = params
            .self_signed(&key)
            .context("signing the cluster CA certificate")?
            .der()
            .clone();
        Ok(ClusterCa {
            params,
            key,
            certificate,
        })
    }

    pub(super) fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// A leaf for node `name`, valid from `skew` before `now` for `lifetime`, with a fresh key.
    pub(super) fn mint(
        &self,
        name: &str,
        now: Timestamp,
        lifetime: Duration,
        skew: Duration,
        provider: &CryptoProvider,
    ) -> anyhow::Result<CertifiedKey> {
        let key = KeyPair::generate_for(&PKCS_ED25519).context("generating a TLS key")?;
        let mut params = CertificateParams::new(vec![super::CLUSTER_NAME.to_string()])
            .context("the cluster name")?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.not_before = offset_time(now, -(skew.as_secs() as i64))?;
        params.not_after = offset_time(now, lifetime.as_secs() as i64)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let leaf = params
            .signed_by(&key, &issuer)
            .context("signing this node's TLS certificate")?;
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = provider
            .key_provider
            .load_private_key(private)
            .context("loading this node's TLS key")?;
        Ok(CertifiedKey::new(
            vec![leaf.der().clone(), self.certificate.clone()],
            signing,
        ))
    }
}

/// `now` moved by `seconds`, as the certificate library's time type.
fn offset_time(now: Timestamp, seconds: i64) -> anyhow::Result<time::OffsetDateTime> {
    time::OffsetDateTime::from_unix_timestamp(now.as_second().saturating_add(seconds))
        .context("a certificate validity time")
}
