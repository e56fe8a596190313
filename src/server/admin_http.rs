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

/// Asks a broker's admin port for `/healthz` (or `/readyz` when `ready`): `Ok` with the body when
/// it answers 200, `Err` with the reason otherwise (`logbook health`, the image's HEALTHCHECK).
/// An unspecified address (`0.0.0.0`, `::`) means this host.
pub async fn probe(addr: std::net::SocketAddr, ready: bool) -> Result<String, String> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let path = if ready { "/readyz" } else { "/healthz" };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to the admin port {addr}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("admin port {addr}: {e}"))?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("admin port {addr}: {e}"))?;
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map_err(|e| format!("admin port {addr}: {e}"))?
            .to_bytes();
        let body = String::from_utf8_lossy(&body).trim().to_string();
        if status == StatusCode::OK {
            Ok(body)
        } else {
            Err(format!("{path} answered {status}: {body}"))
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), exchange)
        .await
        .map_err(|_| format!("admin port {addr}: no answer within 3s"))?
}
