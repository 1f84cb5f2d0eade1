//! Log and trace set-up shared by every shoal binary.
//!
//! Logs: text by default, JSON lines with `--log-format json`; the filter comes from `RUST_LOG`
//! (default `info`). Logs go to stderr so that stdout stays for command output.
//!
//! Traces: OpenTelemetry over OTLP/gRPC when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `…_TRACES_ENDPOINT`) is set; off otherwise. Spans cross processes as W3C trace context
//! carried inside tasks (see [`trace_context`] and [`set_remote_parent`]).

use std::io::IsTerminal;
use std::str::FromStr;

use std::collections::HashMap;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// An unknown `--log-format` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}; use \"text\" or \"json\"")]
pub struct UnknownLogFormat(String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(UnknownLogFormat(other.to_owned())),
        }
    }
}

/// Installs the global subscriber with logs only (no trace export). For short-lived tools.
pub fn init_logging(format: LogFormat) {
    let _ = init(None, format);
}

/// Whether the standard `OTEL_*` variables ask for OTLP trace export: an endpoint is set and
/// neither `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none` turns it off.
pub fn otlp_requested(env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| env(name).is_some_and(|value| !value.trim().is_empty());
    let disabled = env("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|value| value.eq_ignore_ascii_case("none"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// Flushes exported spans when dropped; keep it alive until `main` returns.
#[derive(Debug)]
#[must_use = "spans are flushed when the guard is dropped"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("shoal: flushing trace spans: {error}");
        }
    }
}

/// Installs the global subscriber: logs to stderr and, for a `service` (`shoal-coordinator`,
/// `shoal-worker`) when [`otlp_requested`], spans exported over OTLP/gRPC (endpoint, headers,
/// timeouts and batching from the standard `OTEL_*` variables). Call once, first thing in
/// `main`, inside the tokio runtime. The W3C trace-context propagator is installed either way.
pub fn init(service: Option<&str>, format: LogFormat) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::stderr().is_terminal();
    let fmt = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let mut failure = None;
    let provider = match service {
        Some(service) if otlp_requested(|name| std::env::var(name).ok()) => {
            match tracer_provider(service) {
                Ok(provider) => Some(provider),
                Err(error) => {
                    failure = Some(error);
                    None
                }
            }
        }
        _ => None,
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("shoal"))
            // shoal's own spans only: the libraries' (h2, hyper, tonic) would drown them.
            .with_filter(filter_fn(|metadata| {
                metadata.is_span()
                    && metadata.target().starts_with("shoal")
                    && *metadata.level() <= tracing::Level::INFO
            }))
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .init();
    if let Some(error) = failure {
        tracing::warn!(%error, "OTLP trace export is off: the exporter could not be built");
    }
    TelemetryGuard { provider }
}

fn tracer_provider(
    service: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let mut resource = Resource::builder().with_attribute(KeyValue::new(
        "service.instance.id",
        format!(
            "{}:{}",
            gethostname::gethostname().to_string_lossy(),
            std::process::id()
        ),
    ));
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// Bucket bounds (seconds) of every duration histogram.
const SECONDS_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle)
/// and keeps its histograms trimmed. Render the text exposition with `handle.render()`.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&SECONDS_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}

/// The W3C trace context (`traceparent`, `tracestate`) of `span`, to carry in a task; empty when
/// trace export is off.
pub fn trace_context(span: &tracing::Span) -> Vec<(String, String)> {
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&span.context(), &mut carrier);
    });
    let mut pairs: Vec<(String, String)> = carrier.into_iter().collect();
    pairs.sort();
    pairs
}

/// Makes `span` a child of the remote span in `carrier` (from [`trace_context`]); a no-op when
/// the carrier is empty or trace export is off.
pub fn set_remote_parent(span: &tracing::Span, carrier: &[(String, String)]) {
    if carrier.is_empty() {
        return;
    }
    let map: HashMap<String, String> = carrier.iter().cloned().collect();
    let parent =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&map));
    // Fails only when no OpenTelemetry layer is installed: nothing to join then.
    let _ = span.set_parent(parent);
}

/// A short stable digest of an SQL statement (FNV-1a, 64 bits, hex), for span attributes that
/// must identify a statement without carrying its text.
pub fn statement_digest(statement: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in statement.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_formats_only() {
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert!("yaml".parse::<LogFormat>().is_err());
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn otlp_export_follows_the_standard_variables() {
        assert!(!otlp_requested(env(&[])));
        assert!(otlp_requested(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(otlp_requested(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://collector:4317"
        )])));
        assert!(!otlp_requested(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            " "
        )])));
        assert!(!otlp_requested(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "TRUE")
        ])));
        assert!(!otlp_requested(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_TRACES_EXPORTER", "none")
        ])));
    }

    #[test]
    fn statement_digests_are_stable_and_distinguish_statements() {
        // FNV-1a's published test vector for the empty input.
        assert_eq!(statement_digest(""), "cbf29ce484222325");
        assert_eq!(statement_digest("ALTER TABLE t ADD x INT").len(), 16);
        assert_ne!(
            statement_digest("ALTER TABLE t ADD x INT"),
            statement_digest("ALTER TABLE t ADD y INT")
        );
    }

    #[test]
    fn trace_context_is_empty_without_an_exporter() {
        assert!(trace_context(&tracing::Span::none()).is_empty());
    }
}
