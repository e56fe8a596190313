//! TLS for the gRPC port and for connections to peers (rustls with aws-lc-rs): configurations
//! built from PEM files, rebuilt when the files change on disk, and a connector that gives
//! tonic channels TLS with whatever configuration is current when a connection opens.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use hyper_util::rt::TokioIo;
use parking_lot::{Mutex, RwLock};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::UnixTime;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tokio::net::TcpStream;

/// How often certificate and key files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// Longest time a connection may take to connect and finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS files that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed as PEM.
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A certificate file holds no certificate.
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificates(PathBuf),
    /// rustls refused the certificates or key (for example a key that does not match).
    #[error("TLS configuration from {files}: {reason}")]
    Config {
        /// The files involved.
        files: String,
        /// rustls' reason.
        reason: String,
    },
    /// Only some of the TLS settings are given.
    #[error("{0}")]
    Incomplete(String),
}

/// The certificate authority, certificate and private key a node (or a client) presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate authorities trusted for the other side's certificate.
    pub ca: PathBuf,
    /// PEM certificate chain presented (leaf first); `None` for a client without one.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Files from three optional settings: none given is plaintext (`Ok(None)`); a CA alone
    /// is a client without a certificate; a certificate needs its key.
    pub fn from_settings(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        names: [&str; 3],
    ) -> Result<Option<TlsFiles>, TlsError> {
        let [ca_name, cert_name, key_name] = names;
        match (ca, cert, key) {
            (None, None, None) => Ok(None),
            (Some(ca), cert, key) if cert.is_some() == key.is_some() => Ok(Some(TlsFiles {
                ca: ca.to_path_buf(),
                cert: cert.map(Path::to_path_buf),
                key: key.map(Path::to_path_buf),
            })),
            (None, _, _) => Err(TlsError::Incomplete(format!(
                "{cert_name}/{key_name} need {ca_name} (the CA that signs the other side's certificate)"
            ))),
            _ => Err(TlsError::Incomplete(format!(
                "{cert_name} and {key_name} go together"
            ))),
        }
    }

    /// Every file, for change detection.
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.ca.clone()];
        paths.extend(self.cert.iter().cloned());
        paths.extend(self.key.iter().cloned());
        paths
    }

    fn describe(&self) -> String {
        self.paths()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The one crypto provider used for every TLS configuration.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The certificates in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates(path.to_path_buf()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| read_error(path, e))
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert).map_err(|e| read_error(ca, e))?;
    }
    Ok(roots)
}

fn config_error(files: &TlsFiles, e: impl std::fmt::Display) -> TlsError {
    TlsError::Config {
        files: files.describe(),
        reason: e.to_string(),
    }
}

/// The gRPC server's TLS: its rustls configuration and the verifier of client certificates.
#[derive(Debug)]
pub struct ServerTls {
    /// The configuration new connections are accepted with.
    pub config: Arc<ServerConfig>,
    /// Verifies client certificate chains against the configured CA.
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ServerTls {
    /// Checks a client's certificate chain (leaf first) against the CA: `Err` names why it
    /// is not acceptable (another CA, expired, not for client authentication, ...).
    pub fn verify_client(&self, chain: &[CertificateDer<'_>]) -> Result<(), String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err("no certificate".into());
        };
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Lets the handshake finish whatever the client certificate's chain, while still checking
/// the handshake signature (the client holds the certificate's key). The chain is checked by
/// the gRPC layer with [`ServerTls::verify_client`], so that a client with a certificate from
/// another CA or an expired one is told UNAUTHENTICATED and why, rather than seeing a
/// connection cut mid-handshake. Nothing is served on such a connection.
#[derive(Debug)]
struct ChainCheckedPerRequest(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ChainCheckedPerRequest {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The gRPC server's TLS: presents `files.cert`; a client certificate is optional at the TLS
/// level and its chain is checked per request (see [`ServerTls::verify_client`]).
pub fn server_tls(files: &TlsFiles) -> Result<ServerTls, TlsError> {
    let (Some(cert), Some(key)) = (&files.cert, &files.key) else {
        return Err(TlsError::Incomplete(
            "a TLS server needs a certificate and its key".into(),
        ));
    };
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&files.ca)?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| config_error(files, e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(files, e))?
        .with_client_cert_verifier(Arc::new(ChainCheckedPerRequest(verifier.clone())))
        .with_single_cert(read_certs(cert)?, read_key(key)?)
        .map_err(|e| config_error(files, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        verifier,
    })
}

/// A client's configuration: trusts `files.ca` for the server and presents `files.cert` if set.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(files, e))?
        .with_root_certificates(roots(&files.ca)?);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| config_error(files, e))?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// What identifies a file's version: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// A configuration rebuilt from its files when they change (certificate rotation without a
/// restart). Connections opened after a reload use the new configuration; open ones keep theirs.
pub struct Reloading<T> {
    /// What it is, for logs.
    what: &'static str,
    /// The files it is built from.
    files: TlsFiles,
    /// Builds it.
    build: fn(&TlsFiles) -> Result<T, TlsError>,
    /// The current configuration.
    current: RwLock<Arc<T>>,
    /// The files' stamps when it was built.
    stamps: Mutex<Vec<Stamp>>,
    /// Reloads so far (what was derived from an older configuration is stale).
    generation: std::sync::atomic::AtomicU64,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("files", &self.files)
            .finish()
    }
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Builds the configuration from `files` (an error here stops start-up).
    pub fn new(
        what: &'static str,
        files: TlsFiles,
        build: fn(&TlsFiles) -> Result<T, TlsError>,
    ) -> Result<Arc<Self>, TlsError> {
        let stamps = files.paths().iter().map(|p| stamp(p)).collect();
        let current = build(&files)?;
        Ok(Arc::new(Reloading {
            what,
            files,
            build,
            current: RwLock::new(Arc::new(current)),
            stamps: Mutex::new(stamps),
            generation: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<T> {
        self.current.read().clone()
    }

    /// The current configuration and its generation (bumped by every reload).
    pub fn current_with_generation(&self) -> (Arc<T>, u64) {
        let current = self.current.read();
        (
            current.clone(),
            self.generation.load(std::sync::atomic::Ordering::Acquire),
        )
    }

    /// Rebuilds the configuration if a file changed. On error the old one stays in use (a
    /// half-written rotation is picked up once the files are complete).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps: Vec<Stamp> = self.files.paths().iter().map(|p| stamp(p)).collect();
        if *self.stamps.lock() == stamps {
            return Ok(false);
        }
        let built = (self.build)(&self.files)?;
        {
            let mut current = self.current.write();
            *current = Arc::new(built);
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        *self.stamps.lock() = stamps;
        Ok(true)
    }

    /// Checks the files every [`RELOAD_EVERY`] until the last other owner is gone.
    pub fn spawn_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let Some(this) = weak.upgrade() else { return };
                match this.reload_if_changed() {
                    Ok(true) => {
                        failing = false;
                        tracing::info!(what = this.what, files = %this.files.describe(), "reloaded TLS certificates");
                        crate::telemetry::metrics().tls_reloads.inc();
                    }
                    Ok(false) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(what = this.what, error = %e, "TLS files changed but cannot be used; keeping the previous ones");
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

/// A client-side TLS configuration (reloaded from disk or fixed) and an optional server name
/// to verify instead of the host connected to.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The configuration.
    config: Arc<Reloading<ClientConfig>>,
    /// Name expected in the server's certificate ("": the host of the address).
    server_name: String,
}

impl ClientTls {
    /// TLS from `files`; `server_name` overrides the name checked in the server's certificate.
    pub fn new(files: TlsFiles, server_name: &str) -> Result<Self, TlsError> {
        Ok(ClientTls {
            config: Reloading::new("client", files, client_config)?,
            server_name: server_name.to_string(),
        })
    }

    /// Reloads of the files so far (connections made before the last one use old certificates).
    pub fn generation(&self) -> u64 {
        self.config.current_with_generation().1
    }

    /// Watches the files for rotation (for long-lived clients such as a node's peer channels).
    pub fn spawn_watcher(&self) -> tokio::task::JoinHandle<()> {
        self.config.spawn_watcher()
    }

    /// A tonic connector for channels (TCP, then a TLS handshake with the current config).
    pub fn connector(&self) -> TlsConnector {
        TlsConnector { tls: self.clone() }
    }
}

/// Opens TLS connections for tonic channels (`Endpoint::connect_with_connector`).
#[derive(Debug, Clone)]
pub struct TlsConnector {
    tls: ClientTls,
}

/// The connection type a [`TlsConnector`] yields.
pub type TlsConnection = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TlsConnection;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConnection, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let name = match tls.server_name.as_str() {
                "" => host.clone(),
                name => name.to_string(),
            };
            let server_name = ServerName::try_from(name.clone())
                .map_err(|e| invalid(format!("bad TLS server name {name:?}: {e}")))?;
            let connect = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                tokio_rustls::TlsConnector::from(tls.config.current())
                    .connect(server_name, tcp)
                    .await
            };
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("TLS connection to {host}:{port} timed out"),
                    )
                })??;
            Ok(TokioIo::new(stream))
        })
    }
}
