//! The request layer around every gRPC service: checks the caller's certificate chain and
//! names the caller from it, refuses callers without a valid one (UNAUTHENTICATED, saying
//! why) and non-nodes on the Raft service (PERMISSION_DENIED), opens one span per request (continuing a trace from `traceparent`
//! metadata), and records latency by method and code.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustls::pki_types::CertificateDer;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tower_service::Service;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::security::Caller;
use crate::security::tls::{Reloading, ServerTls};
use crate::telemetry::{ReasonLabels, RequestLabels, metrics};

/// Path prefix of the Raft service (peers only).
const RAFT_SERVICE: &str = "/logbook.v1.RaftService/";
/// gRPC health check, open to probes without certificates (`Watch` is not: it holds a stream).
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
/// Leaf certificates larger than this are verified on every request rather than cached.
const VERDICT_MAX_CERT_BYTES: usize = 8 << 10;
/// Method names used as metric labels; anything else is `other` (clients choose paths, and
/// each label set is a series kept for the life of the process).
const KNOWN_METHODS: &[&str] = &[
    "TopicService/CreateTopic",
    "TopicService/DeleteTopic",
    "TopicService/ListTopics",
    "TopicService/DescribeTopic",
    "TopicService/CreateSnapshot",
    "ProduceService/Produce",
    "ProduceService/ProduceStream",
    "ConsumeService/Consume",
    "ConsumeService/ConsumeStream",
    "MetadataService/GetMetadata",
    "RaftService/AppendEntries",
    "RaftService/Vote",
    "RaftService/InstallSnapshot",
    "RaftService/AppendEntriesBatch",
    "RaftService/ProposeMeta",
    "Health/Check",
    "Health/Watch",
    "ServerReflection/ServerReflectionInfo",
];
/// Longest `x-request-id` taken from a client.
const MAX_REQUEST_ID: usize = 64;

/// How long a certificate chain's verdict is reused (per leaf certificate).
const VERDICT_TTL: Duration = Duration::from_secs(5);
/// Most verdicts kept (only successes are kept: they need a certificate our CA signed).
const VERDICTS_MAX: usize = 1024;

/// How callers are authenticated.
#[derive(Debug, Clone, Default)]
pub struct AuthPolicy {
    /// The port's TLS (callers are named by their certificates); `None`: plaintext.
    pub tls: Option<Arc<Reloading<ServerTls>>>,
    /// Callers without a certificate are refused (UNAUTHENTICATED).
    pub require_client_cert: bool,
}

/// Recent verdicts on client certificate chains, so a connection's requests do not each
/// verify signatures again.
#[derive(Debug, Default)]
struct Verdicts {
    /// Verdict, when it was reached, and the TLS configuration's generation it was reached
    /// under (a reload, for example a new CA, makes it stale), by leaf certificate.
    entries: Mutex<HashMap<Vec<u8>, Verdict>>,
}

/// A chain's check: the outcome, when, and under which TLS configuration generation.
type Verdict = (Result<(), String>, Instant, u64);

impl Verdicts {
    fn verify(
        &self,
        tls: &Reloading<ServerTls>,
        chain: &[CertificateDer<'static>],
    ) -> Result<(), String> {
        let Some(leaf) = chain.first() else {
            return Err("no certificate".into());
        };
        let (current, generation) = tls.current_with_generation();
        if let Some((verdict, at, reached_under)) = self.entries.lock().get(leaf.as_ref())
            && at.elapsed() < VERDICT_TTL
            && *reached_under == generation
        {
            return verdict.clone();
        }
        let verdict = current.verify_client(chain);
        // Failures are not cached: anyone can make endless distinct bad certificates.
        if verdict.is_ok() && leaf.as_ref().len() <= VERDICT_MAX_CERT_BYTES {
            let mut entries = self.entries.lock();
            if entries.len() >= VERDICTS_MAX {
                entries.clear();
            }
            entries.insert(
                leaf.as_ref().to_vec(),
                (verdict.clone(), Instant::now(), generation),
            );
        }
        verdict
    }
}

/// The layer (see the module docs).
#[derive(Debug, Clone)]
pub struct RequestLayer {
    policy: Arc<AuthPolicy>,
    verdicts: Arc<Verdicts>,
}

impl RequestLayer {
    /// The layer for a server with `policy`.
    pub fn new(policy: AuthPolicy) -> Self {
        RequestLayer {
            policy: Arc::new(policy),
            verdicts: Arc::default(),
        }
    }
}

impl<S> tower_layer::Layer<S> for RequestLayer {
    type Service = RequestService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestService {
            inner,
            policy: self.policy.clone(),
            verdicts: self.verdicts.clone(),
        }
    }
}

/// The service the layer wraps around tonic's router.
#[derive(Debug, Clone)]
pub struct RequestService<S> {
    inner: S,
    policy: Arc<AuthPolicy>,
    verdicts: Arc<Verdicts>,
}

/// `Service/Method` from a gRPC path (`/logbook.v1.ProduceService/Produce`), or `other` for
/// a path that is none of ours.
fn method_name(path: &str) -> &'static str {
    let path = path.trim_start_matches('/');
    let name = match path.split_once('/') {
        Some((service, method)) => {
            let service = service.rsplit('.').next().unwrap_or(service);
            format!("{service}/{method}")
        }
        None => path.to_string(),
    };
    KNOWN_METHODS
        .iter()
        .find(|m| **m == name)
        .copied()
        .unwrap_or("other")
}

/// A client certificate chain (leaf first).
type Chain = Arc<Vec<CertificateDer<'static>>>;

/// The peer's address and certificate chain from the connection info tonic attaches.
fn connection(extensions: &http::Extensions) -> (Option<SocketAddr>, Option<Chain>) {
    if let Some(info) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        let chain = info.peer_certs().filter(|c| !c.is_empty());
        return (info.get_ref().remote_addr(), chain);
    }
    let peer = extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr);
    (peer, None)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)))
}

/// The gRPC status code of a response head (`OK` when the status comes later, in trailers).
fn response_code(response: &http::Response<Body>) -> Code {
    response
        .headers()
        .get("grpc-status")
        .map(|v| Code::from_bytes(v.as_bytes()))
        .unwrap_or(Code::Ok)
}

/// The snake-case-free, Prometheus-friendly name of a code (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl AuthPolicy {
    /// Why `caller` may not make a call to `path`, if it may not. `verdict` is the check of
    /// the caller's certificate chain, if it presented one.
    fn refuse(
        &self,
        path: &str,
        caller: &Caller,
        verdict: Option<&Result<(), String>>,
    ) -> Option<(Status, &'static str)> {
        if self.tls.is_none() || path == HEALTH_CHECK {
            return None;
        }
        if let Some(Err(reason)) = verdict {
            return Some((
                Status::unauthenticated(format!(
                    "client certificate rejected: {reason} (it must be signed by the cluster's CA and valid now)"
                )),
                "bad_certificate",
            ));
        }
        if caller.subject.is_none() && self.require_client_cert {
            return Some((
                Status::unauthenticated(
                    "a client certificate signed by the cluster's CA is required \
                     (logbook --ca ... --cert ... --key ...)",
                ),
                "no_certificate",
            ));
        }
        if path.starts_with(RAFT_SERVICE) && !caller.is_node() {
            return Some((
                Status::permission_denied(format!(
                    "subject {:?} may not call the Raft service: only node certificates \
                     (CN=node:<name>) may",
                    caller.name()
                )),
                "not_a_node",
            ));
        }
        None
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<http::Request<Body>> for RequestService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path().to_string();
        let method = method_name(&path);
        let (peer, chain) = connection(request.extensions());
        let verdict = match (&self.policy.tls, &chain) {
            (Some(tls), Some(chain)) => Some(self.verdicts.verify(tls, chain)),
            _ => None,
        };
        // Only a verified certificate names the caller.
        let subject = match (&verdict, &chain) {
            (Some(Ok(())), Some(chain)) => {
                crate::security::certs::subject_of(chain[0].as_ref()).ok()
            }
            _ => None,
        };
        let caller = Caller { subject, peer };
        let id = request_id(request.headers());
        let peer_text = peer.map(|p| p.to_string()).unwrap_or_default();
        let span = tracing::info_span!(
            "request",
            otel.name = %method,
            method = %method,
            peer = %peer_text,
            subject = %caller.name(),
            request_id = %id,
            topic = tracing::field::Empty,
            partition = tracing::field::Empty,
            code = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
        // Errors only if the span is disabled, which is fine.
        let _ = span.set_parent(parent);

        if let Some((status, reason)) = self.policy.refuse(&path, &caller, verdict.as_ref()) {
            span.in_scope(|| {
                tracing::warn!(
                    method = %method,
                    subject = %caller.name(),
                    peer = %peer_text,
                    reason,
                    "refused: {}",
                    status.message()
                );
            });
            metrics()
                .authentication_failures
                .get_or_create(&ReasonLabels {
                    reason: reason.to_string(),
                })
                .inc();
            let code = status.code();
            finish(&span, method, code, started);
            return Box::pin(async move { Ok(status.into_http()) });
        }

        request.extensions_mut().insert(caller);
        // The standard pattern for a cloned inner service: call the one that was made ready.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let future = inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let result = future.await;
            if let Ok(response) = &result {
                let code = response_code(response);
                finish(&span, method, code, started);
            }
            result
        })
    }
}

/// Records the outcome of a request on its span, in the latency histogram, and as an event.
fn finish(span: &tracing::Span, method: &str, code: Code, started: Instant) {
    let elapsed = started.elapsed();
    let name = code_name(code);
    span.record("code", name);
    span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
    metrics()
        .request_duration
        .get_or_create(&RequestLabels {
            method: method.to_string(),
            code: name.to_string(),
        })
        .observe(elapsed.as_secs_f64());
    span.in_scope(|| {
        if code == Code::Ok {
            tracing::debug!(code = name, "request finished");
        } else {
            tracing::info!(code = name, "request failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_drop_the_package() {
        assert_eq!(
            method_name("/logbook.v1.ProduceService/Produce"),
            "ProduceService/Produce"
        );
        assert_eq!(method_name("/grpc.health.v1.Health/Check"), "Health/Check");
        assert_eq!(method_name("/logbook.v1.ProduceService/Nope"), "other");
        assert_eq!(method_name("/x/y"), "other");
    }

    #[test]
    fn only_nodes_reach_raft_and_certificates_are_required_under_tls() {
        let files = {
            let dir = tempfile::tempdir().unwrap();
            crate::security::certs::init_ca(
                dir.path(),
                "test CA",
                crate::security::certs::Validity::days(1),
                false,
            )
            .unwrap();
            let node = crate::security::certs::CertKind::Server {
                name: "n".into(),
                dns: vec!["localhost".into()],
                ips: Vec::new(),
            };
            let issued = crate::security::certs::issue(
                dir.path(),
                &node,
                crate::security::certs::Validity::days(1),
                false,
            )
            .unwrap();
            let files = crate::security::tls::TlsFiles {
                ca: dir.path().join("ca.pem"),
                cert: Some(issued.cert_path),
                key: Some(issued.key_path),
            };
            (dir, files)
        };
        let policy = AuthPolicy {
            tls: Some(
                Reloading::new("test", files.1.clone(), crate::security::tls::server_tls).unwrap(),
            ),
            require_client_cert: true,
        };
        let client = Caller {
            subject: Some("alice".into()),
            peer: None,
        };
        let node = Caller {
            subject: Some("node:b1".into()),
            peer: None,
        };
        let nobody = Caller::default();
        let raft = "/logbook.v1.RaftService/Vote";
        let produce = "/logbook.v1.ProduceService/Produce";
        assert_eq!(
            policy.refuse(raft, &client, None).map(|(s, _)| s.code()),
            Some(Code::PermissionDenied)
        );
        assert!(policy.refuse(raft, &node, None).is_none());
        assert!(policy.refuse(produce, &client, None).is_none());
        assert_eq!(
            policy.refuse(produce, &nobody, None).map(|(s, _)| s.code()),
            Some(Code::Unauthenticated)
        );
        assert!(
            policy
                .refuse("/grpc.health.v1.Health/Check", &nobody, None)
                .is_none()
        );
        let rejected = Err("UnknownIssuer".to_string());
        assert_eq!(
            policy
                .refuse(produce, &client, Some(&rejected))
                .map(|(s, _)| s.code()),
            Some(Code::Unauthenticated)
        );
        // Without TLS there are no identities to check.
        assert!(AuthPolicy::default().refuse(raft, &nobody, None).is_none());
    }
}
