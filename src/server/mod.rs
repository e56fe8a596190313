//! The gRPC server: the logbook services, gRPC health checking and reflection on one port, and
//! graceful shutdown.

mod api;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use api::Api;
pub use status::{ERROR_DOMAIN, to_status};

use crate::broker::{Broker, BrokerError};
use crate::proto::FILE_DESCRIPTOR_SET;
use crate::proto::v1::raft_service_server::RaftServiceServer;
use crate::proto::v1::{
    consume_service_server::ConsumeServiceServer, metadata_service_server::MetadataServiceServer,
    produce_service_server::ProduceServiceServer, topic_service_server::TopicServiceServer,
};
use crate::raft::RaftRpcService;

/// tonic refuses requests above this multiple of `max_request_bytes` on its own (with
/// OUT_OF_RANGE, before our handlers see them); between 1x and this, our handlers answer
/// RESOURCE_EXHAUSTED with the limit.
const TRANSPORT_LIMIT_FACTOR: usize = 4;
/// How long shutdown waits for open connections before closing them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why serving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not be set up.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// Closing the broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Serves `broker` on `listener` until `shutdown` resolves. Then: health turns NOT_SERVING,
/// streams end, no new connections are accepted, in-flight requests finish, and every partition
/// is synced and closed.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let api = Api::new(broker.clone());
    let limit = broker.config().max_request_bytes as usize * TRANSPORT_LIMIT_FACTOR;
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<TopicServiceServer<Api>>().await;
    health.set_serving::<ProduceServiceServer<Api>>().await;
    health.set_serving::<ConsumeServiceServer<Api>>().await;
    health.set_serving::<MetadataServiceServer<Api>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let address = broker.address();
    tracing::info!(%address, "serving gRPC");

    let (signalled, mut signal_seen) = tokio::sync::watch::channel(false);
    let stopping = {
        let (broker, health) = (broker.clone(), health.clone());
        async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            health.set_not_serving::<TopicServiceServer<Api>>().await;
            health.set_not_serving::<ProduceServiceServer<Api>>().await;
            health.set_not_serving::<ConsumeServiceServer<Api>>().await;
            health.set_not_serving::<MetadataServiceServer<Api>>().await;
            broker.stop_streams();
            let _ = signalled.send(true);
        }
    };
    // Our own listener, so tonic's tcp_nodelay setting does not apply: set it on each accepted
    // connection (without it, Nagle's algorithm and delayed ACKs add ~40 ms stalls).
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)));
    let serving = Server::builder()
        .http2_adaptive_window(Some(true))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(TopicServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(ProduceServiceServer::new(api.clone()).max_decoding_message_size(limit))
        .add_service(
            ConsumeServiceServer::new(api.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(MetadataServiceServer::new(api))
        .add_service(
            RaftServiceServer::new(RaftRpcService::new(broker.raft_groups()))
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
        .serve_with_incoming_shutdown(incoming, stopping);
    // Graceful shutdown waits for every connection; a client that never reads (or holds a
    // health Watch open) must not hold the broker forever.
    let grace = async {
        let _ = signal_seen.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        served = serving => served.map_err(ServeError::from),
        _ = grace => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "closing the connections still open");
            Ok(())
        }
    };
    // Whatever happened above, acknowledged data is synced and the logs close cleanly.
    let closed = broker.close().await;
    served?;
    closed?;
    Ok(())
}
