//! The admin HTTP port: `/metrics` (Prometheus, OpenMetrics text), `/healthz` (the process
//! answers) and `/readyz` (caught up and serving), for Kubernetes probes and load balancer
//! health checks.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::telemetry::metrics;

/// OpenMetrics content type (what `prometheus-client` writes).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn text(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

async fn route(
    broker: Arc<Broker>,
    request: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "use GET\n");
    }
    match request.uri().path() {
        "/metrics" => {
            // One scrape at a time: a refresh clears and refills the state gauges.
            static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
            let _one = SCRAPE.lock().await;
            if let Err(e) = broker.refresh_metrics().await {
                tracing::warn!(error = %e, "metrics refresh failed; serving the last values");
            }
            text(StatusCode::OK, OPENMETRICS, metrics().encode())
        }
        "/healthz" => text(StatusCode::OK, PLAIN, "ok\n"),
        "/readyz" => match broker.readiness() {
            Ok(()) => text(StatusCode::OK, PLAIN, "ready\n"),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                format!("not ready: {reason}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: try /metrics, /healthz or /readyz\n",
        ),
    }
}

/// Serves the admin endpoints of `broker` on `listener` until `shutdown` resolves.
pub async fn serve_admin(
    broker: Arc<Broker>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "admin port: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let broker = broker.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let broker = broker.clone();
                async move { Ok::<_, Infallible>(route(broker, request).await) }
            });
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
        });
    }
    connections.shutdown().await;
}
