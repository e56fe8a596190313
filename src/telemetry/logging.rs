//! The tracing subscriber: logs to stderr in a human or JSON format, filtered by `RUST_LOG`,
//! and, when an OTLP endpoint is configured, spans exported over OTLP/gRPC.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use serde::{Deserialize, Serialize};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How often finished spans are sent to the OTLP endpoint.
const EXPORT_EVERY: Duration = Duration::from_secs(1);

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event (for terminals).
    #[default]
    Human,
    /// One JSON object per event, with the span's fields (for log pipelines).
    Json,
}

/// Telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter for {endpoint}: {reason}")]
    Otlp {
        /// The endpoint configured.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// A subscriber was already installed.
    #[error("logging is already set up: {0}")]
    AlreadySet(String),
}

/// Keeps the span exporter running; flushes it when dropped.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("OTLP exporter shutdown: {e}");
        }
    }
}

/// Installs the process's subscriber: `format` logs on stderr at `default_filter` (or
/// `RUST_LOG`), plus OTLP export of spans to `otlp_endpoint` (for example
/// `http://collector:4317`) unless it is empty. Call inside a Tokio runtime (the exporter's
/// gRPC client needs one).
pub fn init(
    format: LogFormat,
    default_filter: &str,
    otlp_endpoint: &str,
) -> Result<Telemetry, TelemetryError> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let (otel, provider) = if otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let otlp_error = |e: &dyn std::fmt::Display| TelemetryError::Otlp {
            endpoint: otlp_endpoint.to_string(),
            reason: e.to_string(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(otlp_endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| otlp_error(&e))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_EVERY)
                    .build(),
            )
            .build();
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("logbook")
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("logbook");
        // Only request spans (and what runs inside them) go out, not every debug event.
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(EnvFilter::new("info"));
        (Some(layer), Some(provider))
    };
    let installed = match format {
        LogFormat::Human => tracing_subscriber::registry()
            .with(otel)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only on a terminal, not in log files.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_filter(filter()),
            )
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(otel)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_filter(filter()),
            )
            .try_init(),
    };
    installed.map_err(|e| TelemetryError::AlreadySet(e.to_string()))?;
    Ok(Telemetry { provider })
}
