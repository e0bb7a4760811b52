//! A TLS listener for axum: TCP connections are accepted and their handshakes run in tasks of
//! their own (bounded in time, so a slow or silent peer holds up nobody); only connections
//! whose handshake succeeded reach the router. A peer without a certificate of the cluster, or
//! one that speaks plain HTTP, never gets past the handshake.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Longest a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct TlsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// `port` names the port in logs and metrics (`rpc`, `http`).
    pub fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        port: &'static str,
    ) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (ready, incoming) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, go on.
                        tracing::warn!(port, error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if ready.is_closed() {
                    return;
                }
                let (acceptor, ready) = (acceptor.clone(), ready.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => refused(port, peer, &e.to_string()),
                        Err(_) => refused(port, peer, "no handshake in time"),
                    }
                });
            }
        });
        Ok(TlsListener {
            incoming,
            local,
            accepting,
        })
    }
}

fn refused(port: &'static str, peer: SocketAddr, why: &str) {
    crate::telemetry::metrics::handshake_refused(port);
    tracing::debug!(port, %peer, reason = why, "connection refused at the TLS handshake");
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accepting task ended (never on its own): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
