//! Connections for the gRPC server: plain TCP, or TLS handshakes done off the accept loop (a
//! slow or hostile client cannot hold up others), with plaintext clients on a TLS port refused
//! by name in the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::security::tls::{HANDSHAKE_TIMEOUT, Reloading, ServerTls};
use crate::telemetry::{ReasonLabels, metrics};

/// First byte of a TLS record carrying a handshake (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Connections handed to the server but not yet taken.
const BACKLOG: usize = 128;
/// Most handshakes (or plaintext refusals) in progress; connections beyond are closed at once,
/// so a flood of slow clients cannot use up file descriptors and starve peers.
const MAX_PENDING_HANDSHAKES: usize = 512;

/// Why a TLS connection was dropped before it could carry a request.
#[derive(Debug)]
enum Refused {
    /// The client spoke something other than TLS (plaintext HTTP/2, most likely).
    Plaintext,
    /// The client closed the connection before sending anything.
    Closed,
    /// The handshake failed (for example a certificate from another CA, or expired).
    Handshake(std::io::Error),
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::Plaintext => "plaintext",
            Refused::Closed => "closed",
            Refused::Handshake(e) => {
                let text = e.to_string();
                if text.contains("certificate") || text.contains("Certificate") {
                    "bad_certificate"
                } else {
                    "handshake"
                }
            }
        }
    }
}

/// Answers every request of a plaintext HTTP/2 (gRPC) client with UNAVAILABLE saying the port
/// needs TLS, rather than leaving it with a bare connection reset.
async fn answer_plaintext(tcp: TcpStream) {
    let service = hyper::service::service_fn(|_request| async {
        let status = tonic::Status::unavailable(
            "this port requires TLS: connect with the cluster's CA and a client certificate \
             (logbook --ca ... --cert ... --key ...)",
        );
        Ok::<_, std::convert::Infallible>(status.into_http::<http_body_util::Full<bytes::Bytes>>())
    });
    let serving = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, serving).await;
}

async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, Refused> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(0) => return Err(Refused::Closed),
        Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
            answer_plaintext(tcp).await;
            return Err(Refused::Plaintext);
        }
        Ok(_) => {}
        Err(e) => return Err(Refused::Handshake(e)),
    }
    acceptor.accept(tcp).await.map_err(Refused::Handshake)
}

fn refused(peer: SocketAddr, reason: &str, detail: &str) {
    metrics()
        .tls_handshake_failures
        .get_or_create(&ReasonLabels {
            reason: reason.to_string(),
        })
        .inc();
    if reason == "closed" {
        tracing::debug!(%peer, "connection closed before the TLS handshake");
    } else {
        tracing::warn!(%peer, reason, "refused a connection on the TLS port: {detail}");
    }
}

/// Accepts connections on `listener` and yields those that complete a TLS handshake with the
/// configuration current at the time. Ends when the receiving side is dropped.
pub fn tls_incoming(
    listener: TcpListener,
    tls: Arc<Reloading<ServerTls>>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(BACKLOG);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                refused(peer, "overload", "too many TLS handshakes in progress");
                continue;
            };
            // Without it, Nagle's algorithm and delayed ACKs add ~40 ms stalls.
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().config.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(acceptor, tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        let detail = match &e {
                            Refused::Plaintext => {
                                "the client did not start a TLS handshake (plaintext on a TLS port?)"
                                    .to_string()
                            }
                            Refused::Closed => String::new(),
                            Refused::Handshake(e) => format!("TLS handshake failed: {e}"),
                        };
                        refused(peer, e.reason(), &detail);
                    }
                    Err(_) => refused(peer, "timeout", "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
