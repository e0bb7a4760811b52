//! A local HTTP sink that records when each request arrived and which nominal time it carried.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::get;
use jiff::Timestamp;

#[derive(Clone)]
pub struct Hit {
    /// `X-Dkron-Job` (empty for the floor program).
    pub job: String,
    pub scheduled: Timestamp,
    pub arrived: Timestamp,
    /// `X-Dkron-Execution-Id` and `X-Dkron-Fencing-Token` as `id@token`: which run of the
    /// occurrence, sent by which leader's term (what tells two arrivals of one apart).
    pub run: String,
}

pub struct Sink {
    addr: std::net::SocketAddr,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Sink {
    pub async fn start() -> anyhow::Result<Sink> {
        Sink::start_on("127.0.0.1:0".parse()?).await
    }

    /// A sink listening on `addr` (a container network's gateway, for runs in containers).
    pub async fn start_on(addr: std::net::SocketAddr) -> anyhow::Result<Sink> {
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let recorded = hits.clone();
        let app = Router::new().route(
            "/",
            get(move |headers: HeaderMap| {
                let arrived = Timestamp::now();
                let recorded = recorded.clone();
                async move {
                    let scheduled = headers
                        .get("x-dkron-scheduled-time")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<Timestamp>().ok());
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    if let Some(scheduled) = scheduled {
                        recorded.lock().expect("sink lock").push(Hit {
                            job: header("x-dkron-job"),
                            scheduled,
                            arrived,
                            run: format!(
                                "{}@{}",
                                header("x-dkron-execution-id"),
                                header("x-dkron-fencing-token")
                            ),
                        });
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Sink { addr, hits })
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// How many requests carrying a nominal time arrived.
    pub fn count(&self) -> usize {
        self.hits.lock().expect("sink lock").len()
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("sink lock").clone()
    }
}
