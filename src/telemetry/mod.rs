//! Telemetry: the tracing subscriber (human or JSON logs, OTLP trace export) and the
//! Prometheus metrics registry served on the admin port.

mod logging;
mod metrics;

pub use logging::{LogFormat, Telemetry, TelemetryError, init};
pub use metrics::{
    GroupLabels, Metrics, PartitionLabels, ReasonLabels, RequestLabels, StatusLabels, TopicLabels,
    metrics,
};
