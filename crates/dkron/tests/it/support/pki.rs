//! A test PKI on disk: a CA, a node certificate (for 127.0.0.1 and localhost), client
//! certificates — valid, expired, revoked (with the CA's CRL) — and one of another CA.

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use tempfile::TempDir;

/// A certificate and its key, as PEM files.
#[derive(Clone)]
pub struct CertFiles {
    pub cert: String,
    pub key: String,
}

pub struct Pki {
    _dir: TempDir,
    pub ca: String,
    pub crl: String,
    pub node: CertFiles,
    pub client: CertFiles,
    pub expired: CertFiles,
    pub revoked: CertFiles,
    /// A client certificate of another CA.
    pub stranger: CertFiles,
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn write(dir: &Path, name: &str, text: String) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap().der().to_vec();
    (Issuer::new(params, key), cert)
}

fn leaf(
    dir: &Path,
    name: &str,
    issuer: &Issuer<'static, KeyPair>,
    serial: u64,
    expired: bool,
) -> CertFiles {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, issuer).unwrap();
    CertFiles {
        cert: write(dir, &format!("{name}.pem"), pem("CERTIFICATE", cert.der())),
        key: write(
            dir,
            &format!("{name}.key"),
            pem("PRIVATE KEY", &key.serialize_der()),
        ),
    }
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let (issuer, ca_der) = ca("dkron test CA");
        let (other, _) = ca("another CA");
        let now =
            time::OffsetDateTime::from_unix_timestamp(dkron::clock::wall().as_second()).unwrap();
        let crl = CertificateRevocationListParams {
            this_update: now - time::Duration::hours(1),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(4u64),
                revocation_time: now - time::Duration::hours(1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap();
        Pki {
            ca: write(&path, "ca.pem", pem("CERTIFICATE", &ca_der)),
            crl: write(&path, "crl.pem", pem("X509 CRL", crl.der())),
            node: leaf(&path, "node", &issuer, 1, false),
            client: leaf(&path, "client", &issuer, 2, false),
            expired: leaf(&path, "expired", &issuer, 3, true),
            revoked: leaf(&path, "revoked", &issuer, 4, false),
            stranger: leaf(&path, "stranger", &other, 5, false),
            _dir: dir,
        }
    }
}
