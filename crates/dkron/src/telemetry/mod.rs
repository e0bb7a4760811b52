//! Logs and traces: one `tracing` subscriber writing text or JSON lines to stderr and, with
//! `--otel-endpoint`, exporting spans over OTLP/HTTP (protobuf) to an OpenTelemetry
//! collector. Spans: `http.request` (API calls), `raft.write` (replicated writes) and
//! `execution` (one run, from order to recorded result, with its job and execution id).
//! Metrics, with every metric name, are in [`metrics`].

pub mod metrics;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::WithExportConfig;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;

/// Keeps the trace exporter alive; dropping it flushes the spans not yet sent.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("dkron: could not flush traces to the collector: {e}");
        }
    }
}

/// Installs the process's subscriber. `RUST_LOG` overrides `level`; openraft is noisy at
/// info, so it logs from warn, and so do the brokers' clients, which log each connection at
/// info and its details (addresses, URLs) at debug: the plugin executors say what matters
/// in the run's output, without secrets.
pub fn init(level: &str, format: &str, otel_endpoint: &str) -> anyhow::Result<Telemetry> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        format!(
            "{level},openraft=warn,hyper=warn,reqwest=warn,async_nats=warn,lapin=warn,amq_protocol=warn,rskafka=warn,tonic=warn,h2=warn"
        )
    });
    let (otel, provider) = if otel_endpoint.is_empty() {
        (None, None)
    } else {
        let provider = tracer_provider(otel_endpoint)?;
        let tracer = provider.tracer("dkron");
        (Some(tracer), Some(provider))
    };
    let _ = tracing::subscriber::set_global_default(subscriber(&filter, format, otel));
    Ok(Telemetry { provider })
}

type Subscriber = Box<dyn tracing::Subscriber + Send + Sync>;

/// The log layer (`filter` as `RUST_LOG` reads, text or JSON) and, given a tracer, the span
/// exporter.
fn subscriber(
    filter: &str,
    format: &str,
    otel: Option<opentelemetry_sdk::trace::SdkTracer>,
) -> Subscriber {
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if format == "json" {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.boxed()
    }
    .with_filter(tracing_subscriber::EnvFilter::new(filter).and(
        // Dynamic, so it is asked for every event (a plain filter_fn is cached per callsite).
        tracing_subscriber::filter::dynamic_filter_fn(|m, _| {
            // The StatsD exporter logs an error on every flush (each second) while its
            // receiver is down: one a minute says as much.
            !m.target().starts_with("metrics_exporter_dogstatsd")
                || EXPORTER_ERRORS.allow(unix_seconds())
        }),
    ));
    let registry = tracing_subscriber::registry().with(fmt);
    // Not `.with(otel)` with an `Option`: a `None` layer claims interest in every callsite,
    // so every span and event was built, then filtered one by one (EnvFilter and the span
    // registry). At 2,000 runs/s with the log at warn, dropping it took the leader from 54 %
    // to 37 % of a core and creates while firing from 757/s to 5,026/s.
    match otel {
        None => Box::new(registry),
        Some(tracer) => Box::new(
            registry.with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    // Our spans travel whatever the log level; log events stay in the log.
                    .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                        m.is_span()
                            && *m.level() <= tracing::Level::INFO
                            && m.target().starts_with("dkron")
                    })),
            ),
        ),
    }
}

/// Lets one event through per [`Throttle::EVERY_S`] seconds.
struct Throttle {
    last: AtomicU64,
}

impl Throttle {
    const EVERY_S: u64 = 60;

    const fn new() -> Throttle {
        Throttle {
            last: AtomicU64::new(0),
        }
    }

    fn allow(&self, now_s: u64) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now_s >= last + Self::EVERY_S)
            && self
                .last
                .compare_exchange(last, now_s.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

static EXPORTER_ERRORS: Throttle = Throttle::new();

fn unix_seconds() -> u64 {
    u64::try_from(crate::clock::wall().as_second()).unwrap_or(0)
}

fn tracer_provider(endpoint: &str) -> anyhow::Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    let url = traces_url(endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .with_context(|| {
            format!("invalid otel-endpoint {endpoint:?}: use http://collector:4318")
        })?;
    let batch = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_secs(1))
                .build(),
        )
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("dkron")
                .build(),
        )
        .build())
}

/// The OTLP/HTTP traces URL for an `--otel-endpoint`: a bare `host:port` gets `http://`, and
/// a URL without a path gets `/v1/traces`.
pub fn traces_url(endpoint: &str) -> String {
    let with_scheme = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let after_scheme = with_scheme.split_once("://").map_or("", |(_, rest)| rest);
    if after_scheme.trim_end_matches('/').contains('/') {
        with_scheme
    } else {
        format!("{}/v1/traces", with_scheme.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::{Throttle, subscriber, traces_url};

    #[test]
    fn what_the_log_level_filters_out_is_never_built() {
        // An info span under `warn` must not be created at all: building and then dropping
        // each one cost a leader a third of its CPU at 2,000 runs/s.
        let sub = subscriber("warn,h2=warn", "text", None);
        tracing::subscriber::with_default(sub, || {
            assert!(tracing::info_span!("execution", job = "j").is_disabled());
            assert!(!tracing::enabled!(target: "h2", tracing::Level::DEBUG));
            assert!(tracing::enabled!(tracing::Level::WARN));
        });
        let sub = subscriber("info", "json", None);
        tracing::subscriber::with_default(sub, || {
            assert!(!tracing::info_span!("execution", job = "j").is_disabled());
        });
    }

    #[test]
    fn the_throttle_lets_one_event_through_a_minute() {
        let t = Throttle::new();
        assert!(t.allow(1_000));
        assert!(!t.allow(1_001));
        assert!(!t.allow(1_059));
        assert!(t.allow(1_060));
        assert!(!t.allow(1_061));
    }

    #[test]
    fn endpoints_become_traces_urls() {
        assert_eq!(
            traces_url("collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("https://c/otlp/v1/traces"),
            "https://c/otlp/v1/traces"
        );
    }
}
