//! The gRPC server: the logbook services, gRPC health checking and reflection on one port, and
//! graceful shutdown.

mod admin_http;
mod api;
mod incoming;
mod layer;
mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub use admin_http::{probe, serve_admin};
pub use api::Api;
pub use layer::{AuthPolicy, RequestLayer, code_name};
pub use status::{ERROR_DOMAIN, to_status};

use crate::config::BrokerConfig;
use crate::security::acl::Acl;
use crate::security::tls::{Reloading, ServerTls, server_tls};

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
    /// The TLS files cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::security::tls::TlsError),
    /// The ACL model or policy cannot be loaded.
    #[error("ACL: {0}")]
    Acl(#[from] crate::security::acl::AclError),
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// How the gRPC port is secured: TLS (reloaded from disk), client certificates, ACLs.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The server's TLS configuration (`None`: plaintext).
    pub tls: Option<Arc<Reloading<ServerTls>>>,
    /// Callers without a certificate are refused (under TLS).
    pub require_client_cert: bool,
    /// The ACL policy (`None`: every caller may do everything).
    pub acl: Option<Arc<Acl>>,
}

impl Security {
    /// TLS and ACLs as configured, with watchers that reload certificates and the policy when
    /// their files change.
    pub async fn from_config(config: &BrokerConfig) -> Result<Security, ServeError> {
        let tls = match config.tls_files()? {
            Some(files) => {
                let tls = Reloading::new("server", files, server_tls)?;
                tls.spawn_watcher();
                Some(tls)
            }
            None => None,
        };
        let acl = match config.acl_policy_file.as_os_str().is_empty() {
            true => None,
            false => {
                let model = (!config.acl_model_file.as_os_str().is_empty())
                    .then_some(config.acl_model_file.as_path());
                let acl = Arc::new(Acl::load(model, &config.acl_policy_file).await?);
                acl.spawn_reloader(crate::security::tls::RELOAD_EVERY);
                Some(acl)
            }
        };
        if acl.is_some() && tls.is_none() {
            tracing::warn!(
                "ACLs are on without TLS: every caller is \"anonymous\" (set tls_cert_file, \
                 tls_key_file and tls_ca_file to name callers by their certificates)"
            );
        }
        Ok(Security {
            tls,
            require_client_cert: config.tls_require_client_cert,
            acl,
        })
    }
}

/// Serves `broker` on `listener` until `shutdown` resolves. Then: health turns NOT_SERVING,
/// streams end, no new connections are accepted, in-flight requests finish, and every partition
/// is synced and closed.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    security: Security,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let api = Api::new(broker.clone(), security.acl.clone());
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
    tracing::info!(%address, tls = security.tls.is_some(), acl = security.acl.is_some(), "serving gRPC");

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
    let policy = AuthPolicy {
        tls: security.tls.clone(),
        require_client_cert: security.require_client_cert,
    };
    let router = Server::builder()
        .http2_adaptive_window(Some(true))
        .layer(RequestLayer::new(policy))
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
        );
    type Serving<'a> =
        std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send + 'a>>;
    let serving: Serving = match security.tls {
        Some(tls) => Box::pin(
            router.serve_with_incoming_shutdown(incoming::tls_incoming(listener, tls), stopping),
        ),
        None => {
            // Our own listener, so tonic's tcp_nodelay setting does not apply: set it on each
            // accepted connection (without it, Nagle's algorithm and delayed ACKs add ~40 ms
            // stalls).
            let incoming = TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60)));
            Box::pin(router.serve_with_incoming_shutdown(incoming, stopping))
        }
    };
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
