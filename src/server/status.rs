//! Broker errors as gRPC statuses: a standard code, a message, and structured details
//! (`google.rpc.ErrorInfo` with a reason and metadata, `ResourceInfo`, `BadRequest`,
//! `RetryInfo`) that clients read with `tonic_types::StatusExt`.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::broker::BrokerError;
use crate::log::LogError;

/// The `ErrorInfo.domain` of every logbook error.
pub const ERROR_DOMAIN: &str = "logbook";

fn info(reason: &str, metadata: &[(&str, String)]) -> ErrorDetails {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata)
}

/// Maps a broker error to a status with details.
pub fn to_status(error: BrokerError) -> Status {
    let message = error.to_string();
    let (code, details) = match &error {
        BrokerError::UnknownTopic(name) => {
            let mut d = info("UNKNOWN_TOPIC", &[("topic", name.clone())]);
            d.set_resource_info("topic", name, "", "create the topic first");
            (Code::NotFound, d)
        }
        BrokerError::UnknownPartition {
            topic,
            partition,
            partitions,
        } => {
            let mut d = info(
                "UNKNOWN_PARTITION",
                &[
                    ("topic", topic.clone()),
                    ("partition", partition.to_string()),
                    ("partitions", partitions.to_string()),
                ],
            );
            d.set_resource_info("partition", format!("{topic}/{partition}"), "", "");
            (Code::NotFound, d)
        }
        BrokerError::TopicExists(name) => {
            let mut d = info("TOPIC_EXISTS", &[("topic", name.clone())]);
            d.set_resource_info("topic", name, "", "already exists");
            (Code::AlreadyExists, d)
        }
        BrokerError::InvalidArgument { field, reason } => (
            Code::InvalidArgument,
            ErrorDetails::with_bad_request_violation(*field, reason),
        ),
        BrokerError::RequestTooLarge { size, limit } => (
            Code::ResourceExhausted,
            info(
                "REQUEST_TOO_LARGE",
                &[
                    ("size_bytes", size.to_string()),
                    ("limit_bytes", limit.to_string()),
                ],
            ),
        ),
        BrokerError::ShuttingDown => (
            Code::Unavailable,
            ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
        ),
        BrokerError::NotLeader {
            group,
            leader_id,
            leader_addr,
            ..
        } => {
            let mut metadata = vec![("group", group.clone())];
            if let Some(id) = leader_id {
                metadata.push(("leader_id", id.to_string()));
            }
            if let Some(addr) = leader_addr {
                metadata.push(("leader_addr", addr.clone()));
            }
            (Code::FailedPrecondition, info("NOT_LEADER", &metadata))
        }
        BrokerError::Unavailable(_) => (
            Code::Unavailable,
            ErrorDetails::with_retry_info(Some(Duration::from_millis(200))),
        ),
        BrokerError::DataDirLocked(_) | BrokerError::Io { .. } => {
            (Code::Internal, info("BROKER_IO_ERROR", &[]))
        }
        BrokerError::Log(log) => log_status(log),
    };
    Status::with_error_details(code, message, details)
}

fn log_status(error: &LogError) -> (Code, ErrorDetails) {
    match error {
        LogError::OffsetOutOfRange {
            requested,
            log_start_offset,
            log_end_offset,
        } => {
            let mut d = info(
                "OFFSET_OUT_OF_RANGE",
                &[
                    ("requested_offset", requested.to_string()),
                    ("log_start_offset", log_start_offset.to_string()),
                    ("high_watermark", log_end_offset.to_string()),
                ],
            );
            d.add_bad_request_violation(
                "offset",
                format!("must be between {log_start_offset} and {log_end_offset}"),
            );
            (Code::OutOfRange, d)
        }
        LogError::RecordTooLarge { size, max_bytes } => (
            Code::ResourceExhausted,
            info(
                "RECORD_BATCH_TOO_LARGE",
                &[
                    ("size_bytes", size.to_string()),
                    ("limit_bytes", max_bytes.to_string()),
                ],
            ),
        ),
        LogError::InvalidBatch(e) => (
            Code::InvalidArgument,
            ErrorDetails::with_bad_request_violation("record_batch", e.to_string()),
        ),
        LogError::NotBatchBoundary { .. } | LogError::InvalidConfig(_) => (
            Code::InvalidArgument,
            ErrorDetails::with_bad_request_violation("offset", error.to_string()),
        ),
        LogError::Io { .. } if error.is_disk_full() => {
            let mut d = info("DISK_FULL", &[]);
            d.set_retry_info(Some(Duration::from_secs(1)));
            (Code::Unavailable, d)
        }
        LogError::Io { .. } => (Code::Unavailable, info("STORAGE_ERROR", &[])),
        LogError::Corruption {
            segment, position, ..
        } => (
            Code::DataLoss,
            info(
                "CORRUPT_DATA",
                &[
                    ("segment", segment.display().to_string()),
                    ("position", position.to_string()),
                ],
            ),
        ),
        LogError::Failed { .. } => (Code::Unavailable, info("PARTITION_FAILED", &[])),
        LogError::Closed { .. } => {
            let mut d = info("PARTITION_CLOSED", &[]);
            d.set_retry_info(Some(Duration::from_secs(1)));
            (Code::Unavailable, d)
        }
        LogError::Truncated { .. } => (Code::Aborted, info("TRUNCATED", &[])),
    }
}
