//! Google application-default credentials, the way Google's client libraries find them (Dkron's
//! Pub/Sub executor uses them): the JSON file `GOOGLE_APPLICATION_CREDENTIALS` names, else
//! gcloud's `~/.config/gcloud/application_default_credentials.json`, else the metadata server
//! of the VM or pod (`GCE_METADATA_HOST` overrides its address). A service account key is
//! exchanged for a token with a JWT signed by ring (RS256); a user's refresh token is
//! exchanged at its token endpoint. Tokens are reused until a minute before they expire.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The scope the token is asked for.
const SCOPE: &str = "https://www.googleapis.com/auth/pubsub";
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The metadata server's link-local address (`metadata.google.internal`).
const METADATA_HOST: &str = "169.254.169.254";

static CACHE: Mutex<Option<(String, Instant)>> = Mutex::const_new(None);

/// A bearer token for Pub/Sub.
pub async fn token(http: &reqwest::Client) -> Result<String, String> {
    let mut cache = CACHE.lock().await;
    if let Some((token, until)) = cache.as_ref()
        && Instant::now() < *until
    {
        return Ok(token.clone());
    }
    let (token, lifetime) = fetch(http).await?;
    let until = Instant::now() + lifetime.saturating_sub(Duration::from_secs(60));
    *cache = Some((token.clone(), until));
    Ok(token)
}

async fn fetch(http: &reqwest::Client) -> Result<(String, Duration), String> {
    let file = match std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
        Ok(path) if !path.is_empty() => Some(path),
        _ => std::env::var("HOME")
            .ok()
            .map(|home| format!("{home}/.config/gcloud/application_default_credentials.json"))
            .filter(|p| std::path::Path::new(p).exists()),
    };
    let Some(path) = file else {
        return metadata_token(http).await;
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read the credentials file {path}: {e}"))?;
    let creds: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("the credentials file {path} is not JSON: {e}"))?;
    let field = |name: &str| creds[name].as_str().unwrap_or("").to_owned();
    let form: Vec<(&str, String)> = match creds["type"].as_str() {
        Some("service_account") => {
            let token_uri = match field("token_uri") {
                u if u.is_empty() => GOOGLE_TOKEN_URI.to_owned(),
                u => u,
            };
            let assertion = signed_assertion(
                &field("client_email"),
                &field("private_key_id"),
                &field("private_key"),
                &token_uri,
            )
            .map_err(|e| format!("the service account key in {path}: {e}"))?;
            return exchange(
                http,
                &token_uri,
                &[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned(),
                    ),
                    ("assertion", assertion),
                ],
            )
            .await;
        }
        Some("authorized_user") => vec![
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", field("client_id")),
            ("client_secret", field("client_secret")),
            ("refresh_token", field("refresh_token")),
        ],
        other => {
            return Err(format!(
                "the credentials file {path} has type {other:?}; service_account and authorized_user are supported"
            ));
        }
    };
    let token_uri = match field("token_uri") {
        u if u.is_empty() => GOOGLE_TOKEN_URI.to_owned(),
        u => u,
    };
    exchange(http, &token_uri, &form).await
}

/// A JWT bearer assertion for `email`, signed with the service account's PKCS#8 PEM key.
fn signed_assertion(
    email: &str,
    key_id: &str,
    pem: &str,
    audience: &str,
) -> Result<String, String> {
    let der = pem_body(pem).ok_or("private_key is not a PEM private key")?;
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| format!("private_key is not an RSA PKCS#8 key: {e}"))?;
    let now = SystemTime::UNIX_EPOCH
        .elapsed()
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": key_id });
    let claims = serde_json::json!({
        "iss": email, "scope": SCOPE, "aud": audience, "iat": now, "exp": now + 3600,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut signature,
    )
    .map_err(|_| "signing failed".to_owned())?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// The DER bytes of a `-----BEGIN PRIVATE KEY-----` PEM block.
fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    STANDARD.decode(body).ok().filter(|d| !d.is_empty())
}

/// Posts an OAuth form to `uri`; the token and how long it lives.
async fn exchange(
    http: &reqwest::Client,
    uri: &str,
    form: &[(&str, String)],
) -> Result<(String, Duration), String> {
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", form_escape(v)))
        .collect::<Vec<_>>()
        .join("&");
    let response = http
        .post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("token endpoint {uri}: {e}"))?;
    token_answer(uri, response).await
}

async fn metadata_token(http: &reqwest::Client) -> Result<(String, Duration), String> {
    let host = std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| METADATA_HOST.to_owned());
    let uri = format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
    let response = http
        .get(&uri)
        .header("Metadata-Flavor", "Google")
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .map_err(|e| {
            format!("GOOGLE_APPLICATION_CREDENTIALS is not set and the metadata server {host} did not answer ({e}); set PUBSUB_EMULATOR_HOST for an emulator")
        })?;
    token_answer(&uri, response).await
}

async fn token_answer(
    uri: &str,
    response: reqwest::Response,
) -> Result<(String, Duration), String> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!(
            "token endpoint {uri} answered {status}: {}",
            text.trim()
        ));
    }
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("token endpoint {uri} answered no JSON: {e}"))?;
    let token = v["access_token"]
        .as_str()
        .ok_or_else(|| format!("token endpoint {uri} answered no access_token"))?;
    let lifetime = v["expires_in"].as_u64().unwrap_or(300);
    Ok((token.to_owned(), Duration::from_secs(lifetime)))
}

/// `application/x-www-form-urlencoded` escaping of one value.
fn form_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_escaped() {
        assert_eq!(form_escape("a b+c/=&"), "a+b%2Bc%2F%3D%26");
        assert_eq!(form_escape("urn:ietf:params"), "urn%3Aietf%3Aparams");
    }

    /// A key made for this test (openssl genpkey, RSA 2048) and nothing else.
    const TEST_KEY: &str = include_str!("../testdata/throwaway-test-key.pem");

    #[test]
    fn a_service_account_assertion_is_signed_rs256_for_pubsub() {
        let jwt = signed_assertion(
            "dkron@proj.iam.gserviceaccount.com",
            "key-1",
            TEST_KEY,
            "https://oauth2.example/token",
        )
        .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let json = |part: &str| -> serde_json::Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
        };
        let (header, claims) = (json(parts[0]), json(parts[1]));
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["kid"], "key-1");
        assert_eq!(claims["iss"], "dkron@proj.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "https://oauth2.example/token");
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            3600
        );
        // The signature verifies with the key's public half, over header.claims.
        let key = ring::signature::RsaKeyPair::from_pkcs8(&pem_body(TEST_KEY).unwrap()).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            ring::signature::KeyPair::public_key(&key).as_ref().to_vec(),
        );
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        assert!(public.verify(signed.as_bytes(), &signature).is_ok());
        assert!(public.verify(b"something else", &signature).is_err());
    }

    #[test]
    fn pem_bodies() {
        let pem = "-----BEGIN PRIVATE KEY-----\nAAEC\nAw==\n-----END PRIVATE KEY-----\n";
        assert_eq!(pem_body(pem), Some(vec![0, 1, 2, 3]));
        assert_eq!(pem_body("not a key"), None);
        assert!(signed_assertion("a@b", "k", pem, "https://x").is_err());
    }
}
