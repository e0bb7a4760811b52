//! `nats`: publish `message` on `subject`, Dkron's keys (`url` a comma list, `subject`,
//! `message`, `userName`, `password`, `debug`).
//!
//! Dkron ignores publish errors and reports success before the message left the client.
//! Here the run succeeds only after the server has processed the message (a message to our
//! own inbox, sent after it, came back), and the message carries the run's identity as headers:
//! `Nats-Msg-Id` (the execution id; a JetStream stream on the subject drops a duplicate)
//! and the `x-dkron-*` headers the http executor sends.

use std::collections::BTreeMap;

use async_nats::{ConnectOptions, HeaderMap, ServerAddr};

use crate::pool::{Closing, Conn};
use crate::{Connections, Outcome, Run, get};

impl Conn for async_nats::Client {
    fn close(self) -> Closing {
        Box::pin(async move {
            // Dropping the last handle also ends the connection; draining first lets
            // anything still buffered go out.
            let _ = self.drain().await;
        })
    }
    fn same(&self, other: &Self) -> bool {
        // A client's identity is its connection's: the same server info and the same
        // statistics counters.
        std::ptr::eq(
            std::sync::Arc::as_ptr(&self.statistics()),
            std::sync::Arc::as_ptr(&other.statistics()),
        )
    }
}

pub fn validate_config(config: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    if let Err(e) = servers(get(config, "url")) {
        problems.push(("url".to_owned(), e));
    }
    if get(config, "subject").is_empty() {
        problems.push(("subject".to_owned(), "subject is empty".to_owned()));
    } else if !valid_subject(get(config, "subject")) {
        problems.push((
            "subject".to_owned(),
            format!(
                "subject \"{}\" is not a NATS subject to publish on: tokens separated by '.', no spaces, no wildcards",
                get(config, "subject")
            ),
        ));
    }
    problems
}

/// The server addresses of Dkron's `url` (Go's `nats.Connect` takes a comma list).
fn servers(url: &str) -> Result<Vec<ServerAddr>, String> {
    if url.is_empty() {
        return Err("url is empty".to_owned());
    }
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<ServerAddr>().map_err(|e| {
                format!(
                    "url \"{}\" is not a NATS server URL (nats://host:port, tls://host:port): {e}",
                    crate::redact(u, &BTreeMap::from([("url".to_owned(), u.to_owned())]))
                )
            })
        })
        .collect()
}

/// A subject a message can be published on.
fn valid_subject(subject: &str) -> bool {
    !subject
        .split('.')
        .any(|t| t.is_empty() || t == "*" || t == ">" || t.contains(char::is_whitespace))
}

pub async fn execute(
    config: &BTreeMap<String, String>,
    run: &Run,
    connections: &Connections,
) -> Outcome {
    let servers = servers(get(config, "url")).map_err(|e| format!("{e}\n"))?;
    let (user, password) = (get(config, "userName"), get(config, "password"));
    let key = format!("{}\n{user}\n{password}", get(config, "url"));
    let pool = &connections.pools().nats;
    let connect = || async {
        let mut options = ConnectOptions::new()
            .name("dkron")
            // A dead server should fail the run now, not after 30 s of retries.
            .connection_timeout(std::time::Duration::from_secs(5));
        if !user.is_empty() || !password.is_empty() {
            options = options.user_and_password(user.to_owned(), password.to_owned());
        }
        options.connect(servers.clone()).await
    };
    let lease = pool
        .get_usable(&key, connect, |c| {
            c.connection_state() != async_nats::connection::State::Disconnected
        })
        .await
        .map_err(|e| format!("error connecting to NATS: {e}\n"))?;
    let client = lease.conn.clone();

    let subject = get(config, "subject").to_owned();
    let payload = get(config, "message").as_bytes().to_vec();
    let sent = if client.server_info().headers {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", run.execution_id.as_str());
        for (name, value) in run.headers() {
            headers.insert(name, value.as_str());
        }
        client
            .publish_with_headers(subject.clone(), headers, payload.into())
            .await
    } else {
        client.publish(subject.clone(), payload.into()).await
    };
    if let Err(e) = sent {
        pool.discard(&key, &client);
        return Err(format!("nats: publish on \"{subject}\" failed: {e}\n"));
    }
    if let Err(e) = confirmed(&client).await {
        pool.discard(&key, &client);
        return Err(format!(
            "nats: the server did not confirm the message on \"{subject}\": {e}\n"
        ));
    }
    if !get(config, "debug").is_empty() {
        tracing::info!(job = %run.job_name, subject = %subject, server = %client.server_info().server_name, "nats: message confirmed by the server");
    }
    Ok("Result: Message successfully sent\n".to_owned())
}

/// Waits until the server processed everything this connection sent so far. async-nats's
/// `flush` only writes the buffer to the socket; a server handles a connection's messages
/// in order, so a message to our own inbox, sent after the job's and echoed back to us,
/// proves the server processed the job's message.
async fn confirmed(client: &async_nats::Client) -> Result<(), String> {
    use futures_util::StreamExt;
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish(inbox, Default::default())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    match echo.next().await {
        Some(_) => Ok(()),
        None => Err("the connection closed before the server answered".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;

    #[test]
    fn dkron_texts_name_the_key() {
        assert_eq!(
            validate_config(&cfg(&[])),
            vec![
                ("url".to_owned(), "url is empty".to_owned()),
                ("subject".to_owned(), "subject is empty".to_owned())
            ]
        );
        let ok = cfg(&[
            ("url", "nats://127.0.0.1:4222, nats://127.0.0.2:4222"),
            ("subject", "jobs.report"),
        ]);
        assert!(validate_config(&ok).is_empty());
        let bad = cfg(&[("url", "nats://[::1"), ("subject", "jobs.>")]);
        let keys: Vec<_> = validate_config(&bad).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["url", "subject"]);
    }

    #[test]
    fn a_bad_url_does_not_show_its_password() {
        let problems =
            validate_config(&cfg(&[("url", "nats://bob:s3cret@[::1"), ("subject", "a")]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(!problems[0].1.contains("s3cret"), "{problems:?}");
    }

    /// A server that completes the handshake and then never answers a PING: a publish it
    /// never confirmed must not count as a success (Dkron's would).
    #[tokio::test]
    async fn an_unconfirmed_publish_fails_the_run() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<Vec<String>>();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            write
                .write_all(b"INFO {\"server_id\":\"fake\",\"version\":\"2.10.0\",\"headers\":true,\"max_payload\":1048576,\"proto\":1}\r\n")
                .await
                .unwrap();
            let mut lines = BufReader::new(read).lines();
            let mut seen = Vec::new();
            let mut seen_tx = Some(seen_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("PING") {
                    // Keep the connection alive, but never deliver the echo that confirms.
                    write.write_all(b"PONG\r\n").await.unwrap();
                } else if line.starts_with("PUB _INBOX.") {
                    if let Some(tx) = seen_tx.take() {
                        let _ = tx.send(std::mem::take(&mut seen));
                    }
                } else {
                    seen.push(line);
                }
            }
        });
        let url = format!("nats://127.0.0.1:{port}");
        let config = cfg(&[
            ("url", &url),
            ("subject", "a"),
            ("message", "hi"),
            ("timeout", "2"),
        ]);
        let c = Connections::default();
        let err = crate::execute("nats", &config, &run(), &c)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            err.contains("no confirmation from the broker within 2s"),
            "{err}"
        );
        let seen = seen_rx.await.unwrap();
        assert!(seen.iter().any(|l| l.starts_with("HPUB a ")), "{seen:?}");
    }

    #[tokio::test]
    async fn a_dead_server_fails_the_run_and_says_why() {
        let url = format!("nats://127.0.0.1:{}", dead_port());
        let config = cfg(&[("url", &url), ("subject", "a"), ("password", "pw")]);
        let c = Connections::default();
        let out = crate::execute("nats", &config, &run(), &c).await.unwrap();
        let err = out.unwrap_err();
        assert!(err.starts_with("error connecting to NATS: "), "{err}");
    }
}
