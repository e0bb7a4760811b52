//! The `http` executor: sends one HTTP request with Dkron's config keys
//! (`method`, `url`, `headers`, `body`, `timeout`, `expectCode`,
//! `expectBody`, `debug`, and the `tls*` options) and judges the response.
//! It owns the reqwest clients: one shared default client, plus a small cache
//! of clients with custom TLS settings, because building a client loads root
//! certificates and is far too costly to repeat on every run.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Client, Method, Url};

use crate::output::{TailBuffer, compose, tail_str};
use crate::shell::parse_go_bool;
use crate::{ExecOutcome, RunContext};

/// Dkron's default request timeout, in seconds.
const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// `expectBody` is matched against at most this much of the body, so a
/// huge response cannot exhaust memory; the output keeps only its tail.
const MATCH_CAP: usize = 8 * 1024 * 1024;
/// Custom-TLS clients kept; jobs rarely use more than a few distinct setups.
const TLS_CACHE_CAP: usize = 16;

/// Problems with an http executor config, found without any IO.
pub fn validate_config(config: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut problem = |k: &str, m: String| problems.push((k.to_owned(), m));

    let method = get(config, "method");
    if method.is_empty() {
        problem("method", "method is empty".to_owned());
    } else if parse_method(method).is_err() {
        problem("method", format!("invalid HTTP method \"{method}\""));
    }

    let url = get(config, "url");
    if url.is_empty() {
        problem("url", "url is empty".to_owned());
    } else if let Err(e) = parse_url(url) {
        problem("url", e);
    }

    let timeout = get(config, "timeout");
    if !timeout.is_empty() && timeout.parse::<u64>().is_err() {
        problem(
            "timeout",
            format!("timeout must be a non-negative integer number of seconds, got \"{timeout}\""),
        );
    }

    if let Err(e) = parse_expect_codes(get(config, "expectCode")) {
        problem("expectCode", e);
    }

    let expect_body = get(config, "expectBody");
    if !expect_body.is_empty()
        && let Err(e) = regex::Regex::new(expect_body)
    {
        problem(
            "expectBody",
            format!("expectBody is not a valid regex: {e}"),
        );
    }

    let headers = get(config, "headers");
    if !headers.is_empty() && serde_json::from_str::<Vec<String>>(headers).is_err() {
        problem(
            "headers",
            "headers must be a JSON array of \"Name: value\" strings".to_owned(),
        );
    }

    let cert = get(config, "tlsCertificateFile");
    let key = get(config, "tlsCertificateKeyFile");
    if cert.is_empty() != key.is_empty() {
        problem(
            if cert.is_empty() {
                "tlsCertificateFile"
            } else {
                "tlsCertificateKeyFile"
            },
            "tlsCertificateFile and tlsCertificateKeyFile must be set together".to_owned(),
        );
    }
    problems
}

fn get<'a>(config: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    config.get(key).map_or("", String::as_str)
}

fn parse_method(method: &str) -> Result<Method, String> {
    // Methods are case-sensitive on the wire; users write "get" meaning GET.
    Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("invalid HTTP method \"{method}\""))
}

fn parse_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("url is not valid: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        other => Err(format!("url must use http or https, not \"{other}\"")),
    }
}

/// Parse `expectCode` ("200" or "200,201"). Exact integer comparison, not
/// Dkron's substring match where "20" would accept 200.
fn parse_expect_codes(text: &str) -> Result<Vec<u16>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(c),
            _ => Err(format!(
                "expectCode must be a comma-separated list of HTTP status codes (100-599), got \"{s}\""
            )),
        })
        .collect()
}

/// Dkron's `headers` entries, split on the FIRST ':' so values such as
/// URLs keep their colons. Bad entries become warnings, never panics.
fn parse_header_entries(
    entries: &[String],
    warnings: &mut Vec<String>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for entry in entries {
        if entry.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = entry.split_once(':') else {
            warnings.push(format!(
                "Warning: header entry \"{entry}\" has no ':' and was ignored"
            ));
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => out.push((n, v)),
            _ => warnings.push(format!(
                "Warning: header \"{name}\" is not a valid HTTP header and was ignored"
            )),
        }
    }
    out
}

/// The client TLS setup of one job; file contents (not paths) are the key,
/// so editing a certificate file takes effect on the next run.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TlsKey {
    no_verify: bool,
    identity_pem: Option<Vec<u8>>,
    roots_pem: Option<Vec<u8>>,
}

fn default_client() -> Result<Client, String> {
    static DEFAULT: OnceLock<Result<Client, String>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            crate::install_crypto_provider();
            Client::builder()
                .http1_title_case_headers()
                .build()
                .map_err(|e| format!("Error: building HTTP client: {}", error_chain(&e)))
        })
        .clone()
}

fn tls_client(key: TlsKey) -> Result<Client, String> {
    static CACHE: OnceLock<Mutex<HashMap<TlsKey, Client>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    // A poisoned lock only means another run panicked mid-insert; the map
    // itself is still usable.
    if let Some(c) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    crate::install_crypto_provider();
    let mut builder = Client::builder()
        .http1_title_case_headers()
        .tls_danger_accept_invalid_certs(key.no_verify);
    if let Some(pem) = &key.identity_pem {
        let id = reqwest::Identity::from_pem(pem)
            .map_err(|e| format!("Error: loading client certificate: {}", error_chain(&e)))?;
        builder = builder.identity(id);
    }
    if let Some(pem) = &key.roots_pem {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("Error: loading tlsRootCAsFile: {}", error_chain(&e)))?;
        if roots.is_empty() {
            return Err("Error: tlsRootCAsFile holds no certificate".to_owned());
        }
        // Dkron uses exactly these roots, not the system ones plus these.
        builder = builder.tls_certs_only(roots);
    }
    let client = builder
        .build()
        .map_err(|e| format!("Error: building HTTP client: {}", error_chain(&e)))?;
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= TLS_CACHE_CAP {
        map.clear();
    }
    map.insert(key, client.clone());
    Ok(client)
}

fn client_for(
    config: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) -> Result<Client, String> {
    let no_verify = parse_go_bool(get(config, "tlsNoVerifyPeer"));
    let cert = get(config, "tlsCertificateFile");
    let key_file = get(config, "tlsCertificateKeyFile");
    let roots = get(config, "tlsRootCAsFile");
    let read = |what: &str, path: &str| {
        std::fs::read(path).map_err(|e| format!("Error: reading {what} '{path}': {e}"))
    };
    let identity_pem = match (cert.is_empty(), key_file.is_empty()) {
        (false, false) => {
            let mut pem = read("tlsCertificateFile", cert)?;
            pem.push(b'\n');
            pem.extend(read("tlsCertificateKeyFile", key_file)?);
            Some(pem)
        }
        (true, true) => None,
        _ => {
            warnings.push(
                "Warning: tlsCertificateFile and tlsCertificateKeyFile must be set together; client certificate not used"
                    .to_owned(),
            );
            None
        }
    };
    let roots_pem = if roots.is_empty() {
        None
    } else {
        Some(read("tlsRootCAsFile", roots)?)
    };
    if !no_verify && identity_pem.is_none() && roots_pem.is_none() {
        return default_client();
    }
    tls_client(TlsKey {
        no_verify,
        identity_pem,
        roots_pem,
    })
}

/// An error with its causes: reqwest's top-level message alone ("error
/// sending request") hides the useful part (refused, timed out, TLS...).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

/// The "Config: {...}" debug line. Header values may carry credentials, so
/// only header names are shown.
fn debug_line(config: &BTreeMap<String, String>) -> String {
    let mut map = serde_json::Map::new();
    for (k, v) in config {
        let value = if k == "headers" {
            match serde_json::from_str::<Vec<String>>(v) {
                Ok(entries) => serde_json::Value::Array(
                    entries
                        .iter()
                        .map(|e| {
                            let name = e.split_once(':').map_or(e.as_str(), |(n, _)| n);
                            serde_json::Value::String(format!("{}: <redacted>", name.trim()))
                        })
                        .collect(),
                ),
                Err(_) => serde_json::Value::String("<redacted>".to_owned()),
            }
        } else {
            serde_json::Value::String(v.clone())
        };
        map.insert(k.clone(), value);
    }
    format!("Config: {}", serde_json::Value::Object(map))
}

pub async fn execute(config: &BTreeMap<String, String>, ctx: &RunContext) -> ExecOutcome {
    let limit = ctx.output_limit;
    let mut lines: Vec<String> = Vec::new();
    if !get(config, "debug").is_empty() {
        lines.push(debug_line(config));
    }
    let fail = |lines: &[String], msg: String| {
        let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        text.push_str(&msg);
        ExecOutcome {
            success: false,
            output: tail_str(&text, limit).to_owned(),
        }
    };

    let method_text = get(config, "method");
    if method_text.is_empty() {
        return fail(&lines, "method is empty".to_owned());
    }
    let url_text = get(config, "url");
    if url_text.is_empty() {
        return fail(&lines, "url is empty".to_owned());
    }
    let method = match parse_method(method_text) {
        Ok(m) => m,
        Err(e) => return fail(&lines, e),
    };
    let url = match parse_url(url_text) {
        Ok(u) => u,
        Err(e) => return fail(&lines, e),
    };
    let expect_codes = match parse_expect_codes(get(config, "expectCode")) {
        Ok(c) => c,
        Err(e) => return fail(&lines, e),
    };
    // Checked before sending: a job that can never succeed should not have
    // side effects on the remote end.
    let expect_body = match get(config, "expectBody") {
        "" => None,
        re => match regex::bytes::Regex::new(re) {
            Ok(r) => Some(r),
            Err(e) => return fail(&lines, format!("expectBody regex is invalid: {e}")),
        },
    };

    let headers_text = get(config, "headers");
    let header_entries: Vec<String> = if headers_text.is_empty() {
        Vec::new()
    } else {
        match serde_json::from_str(headers_text) {
            Ok(h) => h,
            Err(_) => {
                lines.push("Error: parsing headers failed".to_owned());
                Vec::new()
            }
        }
    };
    let headers = parse_header_entries(&header_entries, &mut lines);

    let timeout_text = get(config, "timeout");
    let timeout_secs = if timeout_text.is_empty() {
        DEFAULT_TIMEOUT_SECS
    } else {
        match timeout_text.parse::<u64>() {
            Ok(t) => t,
            Err(_) => {
                lines.push(format!(
                    "Warning: invalid timeout value: \"{timeout_text}\" not understood, using default value of {DEFAULT_TIMEOUT_SECS}."
                ));
                DEFAULT_TIMEOUT_SECS
            }
        }
    };

    let client = match client_for(config, &mut lines) {
        Ok(c) => c,
        Err(e) => return fail(&lines, e),
    };

    let mut req = client.request(method, url);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    // Set last so a job's own headers cannot spoof its identity or token.
    let dkron_headers = [
        // Lower-case: `from_static` requires it, and names are case-insensitive.
        ("x-dkron-job", ctx.job_name.clone()),
        ("x-dkron-scheduled-time", ctx.scheduled_time.clone()),
        ("x-dkron-execution-id", ctx.execution_id.clone()),
        ("x-dkron-fencing-token", ctx.fencing_token.to_string()),
    ];
    let mut header_map = reqwest::header::HeaderMap::new();
    for (name, value) in dkron_headers {
        match HeaderValue::from_str(&value) {
            Ok(v) => {
                header_map.insert(HeaderName::from_static(name), v);
            }
            Err(_) => lines.push(format!(
                "Warning: {name} not sent: value is not a valid header value"
            )),
        }
    }
    // `headers()` replaces same-named entries, where `header()` would add.
    req = req.headers(header_map);
    let body = get(config, "body");
    if !body.is_empty() {
        req = req.body(body.to_owned());
    }
    // Go's http.Client treats a zero timeout as "no timeout"; Dkron inherits it.
    if timeout_secs > 0 {
        req = req.timeout(Duration::from_secs(timeout_secs));
    }

    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return fail(&lines, format!("Error: {}", error_chain(&e))),
    };
    let status = resp.status().as_u16();
    let mut out = TailBuffer::new(limit);
    let mut matched_body: Vec<u8> = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                out.push(&chunk);
                if expect_body.is_some() && matched_body.len() < MATCH_CAP {
                    let room = MATCH_CAP - matched_body.len();
                    matched_body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
            }
            Ok(None) => break,
            Err(e) => {
                let prefix: String = lines.iter().map(|l| format!("{l}\n")).collect();
                let suffix = format!(
                    "{}Error: reading response body: {}",
                    if out.is_empty() || out.ends_with_newline() {
                        ""
                    } else {
                        "\n"
                    },
                    error_chain(&e)
                );
                return ExecOutcome {
                    success: false,
                    output: compose(&prefix, &out, &suffix, limit),
                };
            }
        }
    }
    tracing::debug!(job = %ctx.job_name, status, "http job answered");

    let mut problem = None;
    if !expect_codes.is_empty() && !expect_codes.contains(&status) {
        problem = Some("received response code does not match the expected code");
    } else if let Some(re) = &expect_body
        && !re.is_match(&matched_body)
    {
        problem = Some("received response body did not match the expected body");
    }

    let prefix: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let suffix = match problem {
        Some(p) if out.is_empty() || out.ends_with_newline() => p.to_owned(),
        Some(p) => format!("\n{p}"),
        None => String::new(),
    };
    ExecOutcome {
        success: problem.is_none(),
        output: compose(&prefix, &out, &suffix, limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn ctx(limit: usize) -> RunContext {
        RunContext {
            job_name: "web-job".to_owned(),
            execution_id: "exec-9".to_owned(),
            scheduled_time: "2026-11-27T10:00:00Z".to_owned(),
            fencing_token: 11,
            output_limit: limit,
            live: Default::default(),
            connections: Default::default(),
            plugins: Default::default(),
        }
    }

    use crate::test_support::cfg;

    async fn run(pairs: &[(&str, &str)]) -> ExecOutcome {
        crate::install_crypto_provider();
        tokio::time::timeout(
            Duration::from_secs(30),
            crate::execute("http", &cfg(pairs), &ctx(64 * 1024)),
        )
        .await
        .expect("http executor did not return within 30 s")
    }

    /// A raw HTTP/1.1 server on 127.0.0.1. `/status/<code>` answers with
    /// that code; `/hang` never answers. The body echoes the request body
    /// and the X-Dkron-* and X-Url headers, one per line.
    async fn server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(handle(sock));
            }
        });
        format!("http://{addr}")
    }

    async fn handle(mut sock: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or("");
        let path = request_line.split(' ').nth(1).unwrap_or("/").to_owned();
        let mut content_length = 0usize;
        let mut echoed = String::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                let lname = name.trim().to_ascii_lowercase();
                if lname == "content-length" {
                    content_length = value.trim().parse().unwrap_or(0);
                }
                if lname.starts_with("x-dkron-") || lname == "x-url" {
                    echoed.push_str(&format!("{lname}={}\n", value.trim()));
                }
                if lname.starts_with("x-case-") {
                    echoed.push_str(&format!("sent-as={}\n", name.trim()));
                }
            }
        }
        while buf.len() < head_end + content_length {
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        if path == "/hang" {
            // Hold the connection without answering; bounded so the task
            // ends even if the client never gives up.
            tokio::time::sleep(Duration::from_secs(20)).await;
            return;
        }
        let status: u16 = path
            .strip_prefix("/status/")
            .and_then(|s| s.parse().ok())
            .unwrap_or(200);
        let body = format!(
            "method={}\nbody={}\n{echoed}",
            request_line.split(' ').next().unwrap_or(""),
            String::from_utf8_lossy(&buf[head_end..head_end + content_length])
        );
        let resp = format!(
            "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        let _ = sock.shutdown().await;
    }

    #[tokio::test]
    async fn get_succeeds_and_sends_dkron_headers() {
        let base = server().await;
        let url = format!("{base}/status/200");
        let r = run(&[("method", "GET"), ("url", &url), ("headers", "[]")]).await;
        assert!(r.success, "{r:?}");
        assert!(r.output.starts_with("method=GET\n"), "{r:?}");
        assert!(r.output.contains("x-dkron-job=web-job\n"), "{r:?}");
        assert!(
            r.output
                .contains("x-dkron-scheduled-time=2026-11-27T10:00:00Z\n")
        );
        assert!(r.output.contains("x-dkron-execution-id=exec-9\n"));
        assert!(r.output.contains("x-dkron-fencing-token=11\n"));
    }

    #[tokio::test]
    async fn post_body_is_sent() {
        let base = server().await;
        let url = format!("{base}/status/201");
        let r = run(&[("method", "post"), ("url", &url), ("body", "{\"a\":1}")]).await;
        assert!(r.success, "{r:?}");
        assert!(r.output.contains("method=POST\nbody={\"a\":1}\n"), "{r:?}");
    }

    #[tokio::test]
    async fn expect_code_match_and_mismatch() {
        let base = server().await;
        let url = format!("{base}/status/201");
        let r = run(&[("method", "GET"), ("url", &url), ("expectCode", "200, 201")]).await;
        assert!(r.success, "{r:?}");

        let url = format!("{base}/status/500");
        let r = run(&[("method", "GET"), ("url", &url), ("expectCode", "200")]).await;
        assert!(!r.success);
        assert!(
            r.output
                .ends_with("received response code does not match the expected code"),
            "{r:?}"
        );
        // Exact comparison: "20" must not accept 200 the way a substring would.
        let url = format!("{base}/status/200");
        let r = run(&[("method", "GET"), ("url", &url), ("expectCode", "20,500")]).await;
        assert!(!r.success, "{r:?}");
    }

    #[tokio::test]
    async fn no_expect_code_accepts_any_status() {
        let base = server().await;
        let url = format!("{base}/status/503");
        let r = run(&[("method", "GET"), ("url", &url)]).await;
        assert!(r.success, "{r:?}");
    }

    #[tokio::test]
    async fn expect_body_match_and_mismatch() {
        let base = server().await;
        let url = format!("{base}/status/200");
        let r = run(&[
            ("method", "GET"),
            ("url", &url),
            ("expectBody", "job=web-j.b"),
        ])
        .await;
        assert!(r.success, "{r:?}");
        let r = run(&[("method", "GET"), ("url", &url), ("expectBody", "^nope$")]).await;
        assert!(!r.success);
        assert!(
            r.output
                .ends_with("received response body did not match the expected body"),
            "{r:?}"
        );
        let r = run(&[
            ("method", "GET"),
            ("url", &url),
            ("expectBody", "(unclosed"),
        ])
        .await;
        assert!(!r.success);
        assert!(r.output.contains("regex is invalid"), "{r:?}");
    }

    #[tokio::test]
    async fn header_with_colon_in_value_arrives_intact() {
        let base = server().await;
        let url = format!("{base}/status/200");
        let r = run(&[
            ("method", "GET"),
            ("url", &url),
            ("headers", r#"["X-Url: http://a:1", "no-colon-here"]"#),
        ])
        .await;
        assert!(r.success, "{r:?}");
        assert!(r.output.contains("x-url=http://a:1\n"), "{r:?}");
        assert!(r.output.contains("\"no-colon-here\" has no ':'"), "{r:?}");
    }

    #[tokio::test]
    async fn dkron_headers_cannot_be_spoofed() {
        let base = server().await;
        let url = format!("{base}/status/200");
        let r = run(&[
            ("method", "GET"),
            ("url", &url),
            ("headers", r#"["X-Dkron-Fencing-Token: 999"]"#),
        ])
        .await;
        assert!(r.output.contains("x-dkron-fencing-token=11\n"), "{r:?}");
        assert!(!r.output.contains("999"), "{r:?}");
    }

    #[tokio::test]
    async fn invalid_headers_json_is_reported() {
        let base = server().await;
        let url = format!("{base}/status/200");
        let r = run(&[("method", "GET"), ("url", &url), ("headers", "{nope")]).await;
        assert!(r.success, "{r:?}");
        assert!(
            r.output.starts_with("Error: parsing headers failed\n"),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn invalid_timeout_warns_and_uses_default() {
        let base = server().await;
        let url = format!("{base}/status/200");
        let r = run(&[("method", "GET"), ("url", &url), ("timeout", "soon")]).await;
        assert!(r.success, "{r:?}");
        assert!(r.output.starts_with(
            "Warning: invalid timeout value: \"soon\" not understood, using default value of 30.\n"
        ));
    }

    #[tokio::test]
    async fn timeout_against_silent_server_fails() {
        let base = server().await;
        let url = format!("{base}/hang");
        let start = std::time::Instant::now();
        let r = run(&[("method", "GET"), ("url", &url), ("timeout", "1")]).await;
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(!r.success);
        assert!(r.output.starts_with("Error: "), "{r:?}");
    }

    /// Header names go out as Go's net/http sends them (canonical Title-Case), not
    /// lower-cased: some servers match them case-sensitively.
    #[tokio::test]
    async fn header_names_are_sent_in_gos_canonical_case() {
        let base = server().await;
        let url = format!("{base}/status/200");
        let r = run(&[
            ("method", "GET"),
            ("url", &url),
            ("headers", r#"["X-Case-Test: a", "x-case-lower: b"]"#),
        ])
        .await;
        assert!(r.success, "{r:?}");
        assert!(r.output.contains("sent-as=X-Case-Test\n"), "{r:?}");
        assert!(r.output.contains("sent-as=X-Case-Lower\n"), "{r:?}");
    }

    #[tokio::test]
    async fn connection_refused_fails() {
        // Bind then drop to get a port with (very likely) no listener.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let r = run(&[("method", "GET"), ("url", &format!("http://{addr}/"))]).await;
        assert!(!r.success);
        assert!(r.output.starts_with("Error: "), "{r:?}");
    }

    #[tokio::test]
    async fn method_and_url_required() {
        let r = run(&[("url", "http://127.0.0.1:1/")]).await;
        assert!(!r.success);
        assert_eq!(r.output, "method is empty");
        let r = run(&[("method", "GET")]).await;
        assert!(!r.success);
        assert_eq!(r.output, "url is empty");
        let r = run(&[("method", "GET"), ("url", "ftp://x/")]).await;
        assert!(!r.success);
    }

    #[tokio::test]
    async fn debug_line_hides_header_values() {
        let base = server().await;
        let url = format!("{base}/status/200");
        let r = run(&[
            ("method", "GET"),
            ("url", &url),
            ("debug", "true"),
            ("headers", r#"["Authorization: Bearer s3cret"]"#),
        ])
        .await;
        assert!(r.success, "{r:?}");
        let first = r.output.lines().next().unwrap_or("");
        assert!(first.starts_with("Config: {"), "{first}");
        assert!(first.contains("Authorization"), "{first}");
        assert!(!r.output.contains("s3cret"), "{r:?}");
    }

    #[tokio::test]
    async fn missing_tls_file_fails() {
        let r = run(&[
            ("method", "GET"),
            ("url", "https://127.0.0.1:1/"),
            ("tlsRootCAsFile", "/nonexistent/ca.pem"),
        ])
        .await;
        assert!(!r.success);
        assert!(r.output.contains("tlsRootCAsFile"), "{r:?}");
    }

    #[tokio::test]
    async fn no_verify_client_builds() {
        // Builds the custom-TLS client (cached) and fails only on connect.
        let r = run(&[
            ("method", "GET"),
            ("url", "https://127.0.0.1:1/"),
            ("tlsNoVerifyPeer", "true"),
        ])
        .await;
        assert!(!r.success);
        assert!(r.output.starts_with("Error: "), "{r:?}");
    }

    #[test]
    fn validate_reports_problems() {
        assert!(
            validate_config(&cfg(&[
                ("method", "GET"),
                ("url", "https://example.com/x"),
                ("headers", "[]"),
                ("expectCode", "200,201"),
                ("expectBody", "ok"),
                ("timeout", "10"),
            ]))
            .is_empty()
        );
        let p = validate_config(&cfg(&[
            ("timeout", "-1"),
            ("expectCode", "200,abc,700"),
            ("expectBody", "(x"),
            ("headers", "{}"),
            ("tlsCertificateFile", "/c.pem"),
        ]));
        let keys: Vec<&str> = p.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "method",
                "url",
                "timeout",
                "expectCode",
                "expectBody",
                "headers",
                "tlsCertificateKeyFile"
            ]
        );
        assert_eq!(p[0].1, "method is empty");
        assert_eq!(p[1].1, "url is empty");
        let p = validate_config(&cfg(&[("method", "GET"), ("url", "not a url")]));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, "url");
    }

    #[test]
    fn header_entries_split_on_first_colon() {
        let mut warnings = Vec::new();
        let entries = vec![
            "X-Url: http://a:1".to_owned(),
            "bad".to_owned(),
            "".to_owned(),
            "Bad Name: v".to_owned(),
        ];
        let h = parse_header_entries(&entries, &mut warnings);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].0.as_str(), "x-url");
        assert_eq!(h[0].1.to_str().ok(), Some("http://a:1"));
        assert_eq!(warnings.len(), 2);
    }
}
