//! The built-in certificate tool (`logbook certs init|issue`): a certificate authority, node
//! certificates and client certificates, all with ECDSA P-256 keys.
//!
//! Layout of a certificate directory: `ca.pem` + `ca-key.pem` (the authority), then
//! `NAME.pem` + `NAME-key.pem` per issued certificate. A certificate file holds the leaf only.
//!
//! Every file is written atomically (a temporary file in the same directory, fsync, rename), so
//! a process that watches these files for reload never reads half a file. An issue writes the key
//! before the certificate; a watcher that reloads on a certificate change finds the new key in
//! place. Private keys are created with mode 0600, certificates with 0644.
//!
//! Subjects: a node certificate's common name is `node:NAME` ([`NODE_PREFIX`]) and it carries both
//! `serverAuth` and `clientAuth` (a node is a server to clients and a client to its peers); a client
//! certificate's common name is the client's name, which the ACLs ([`super::acl`]) refer to.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use time::OffsetDateTime;

/// Common-name prefix of node certificates (`node:NAME`); client names may not start with it.
pub const NODE_PREFIX: &str = "node:";

/// File name of the authority's certificate inside a certificate directory.
const CA_CERT_FILE: &str = "ca.pem";
/// File name of the authority's private key inside a certificate directory.
const CA_KEY_FILE: &str = "ca-key.pem";
/// Mode of private key files.
const KEY_MODE: u32 = 0o600;
/// Mode of certificate files.
const CERT_MODE: u32 = 0o644;
/// Longest common name X.509 allows (`ub-common-name`).
const MAX_COMMON_NAME_LEN: usize = 64;

/// What to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertKind {
    /// A node's certificate: CN `node:NAME`, the given SANs, serverAuth and clientAuth.
    Server {
        /// The node's name (files `NAME.pem`, `NAME-key.pem`).
        name: String,
        /// DNS subject alternative names.
        dns: Vec<String>,
        /// IP address subject alternative names.
        ips: Vec<IpAddr>,
    },
    /// A client's certificate: CN `NAME`, clientAuth only.
    Client {
        /// The client's name, the subject ACL rules refer to.
        name: String,
    },
}

impl CertKind {
    /// The name the files are named after.
    fn name(&self) -> &str {
        match self {
            CertKind::Server { name, .. } | CertKind::Client { name } => name,
        }
    }
}

/// The period a certificate is valid in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// First instant the certificate is valid.
    pub not_before: SystemTime,
    /// Last instant the certificate is valid.
    pub not_after: SystemTime,
}

impl Validity {
    /// From one hour ago (tolerates clock skew between machines) to `days` days from now.
    pub fn days(days: u32) -> Self {
        let now = SystemTime::now();
        let not_before = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
        // u32::MAX days is ~3.7e11 seconds: far inside SystemTime's i64 range, so this cannot
        // overflow; a date past year 9999 is refused when the certificate is made.
        let not_after = now + Duration::from_secs(u64::from(days) * 86_400);
        Validity {
            not_before,
            not_after,
        }
    }
}

/// The files a command wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate (PEM, the leaf only).
    pub cert_path: PathBuf,
    /// Its private key (PEM, PKCS#8, mode 0600).
    pub key_path: PathBuf,
}

/// Errors of the certificate tool.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file exists and `force` was not given.
    #[error("{} already exists; pass --force to replace it", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Creating a directory or writing a file failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading a file failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The directory has no certificate authority.
    #[error(
        "no certificate authority in {} ({} or {} is missing): run `logbook certs init` first",
        dir.display(), CA_CERT_FILE, CA_KEY_FILE
    )]
    CaMissing {
        /// The certificate directory.
        dir: PathBuf,
    },
    /// The authority's certificate or key cannot be used.
    #[error("{} is not a usable certificate authority file: {reason}", path.display())]
    InvalidCa {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate name is not acceptable.
    #[error("invalid certificate name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// A node certificate without any DNS or IP subject alternative name.
    #[error("node certificate {name:?} needs at least one --dns name or --ip address")]
    NoSubjectAltNames {
        /// The node's name.
        name: String,
    },
    /// A DNS subject alternative name is not acceptable.
    #[error("invalid DNS name {dns:?}: {reason}")]
    InvalidDnsName {
        /// The name given.
        dns: String,
        /// Why it is refused.
        reason: String,
    },
    /// The validity period is empty or not representable.
    #[error("invalid validity period: {reason}")]
    InvalidValidity {
        /// What is wrong with it.
        reason: String,
    },
    /// rcgen failed to make a key or a certificate.
    #[error("cannot generate the {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// The cause.
        source: rcgen::Error,
    },
    /// Bytes that should be a DER certificate are not one.
    #[error("not a valid X.509 certificate: {reason}")]
    Parse {
        /// The parser's complaint.
        reason: String,
    },
    /// A certificate's subject has no usable common name (none, several, or not text).
    #[error("certificate subject has no usable common name: {reason}")]
    NoCommonName {
        /// Why none could be taken.
        reason: String,
    },
    /// The command line combination is not valid (clap normally catches these).
    #[error("{0}")]
    Usage(String),
}

/// Creates a certificate authority: `dir/ca.pem` and `dir/ca-key.pem` (creating `dir`).
pub fn init_ca(
    dir: &Path,
    common_name: &str,
    validity: Validity,
    force: bool,
) -> Result<Issued, CertError> {
    if common_name.trim().is_empty() || common_name.len() > MAX_COMMON_NAME_LEN {
        return Err(CertError::InvalidName {
            name: common_name.to_string(),
            reason: format!("a CA name must be 1 to {MAX_COMMON_NAME_LEN} bytes"),
        });
    }
    let issued = Issued {
        cert_path: dir.join(CA_CERT_FILE),
        key_path: dir.join(CA_KEY_FILE),
    };
    refuse_existing(&issued, force)?;

    let key = generate_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name_dn(common_name);
    // Signs leaves only: no intermediate authorities below it.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params, validity)?;
    let cert = params
        .self_signed(&key)
        .map_err(|source| CertError::Generate {
            what: "CA certificate",
            source,
        })?;

    create_dir(dir)?;
    write_atomically(
        &issued.key_path,
        key.serialize_pem().as_bytes(),
        KEY_MODE,
        force,
    )?;
    write_atomically(&issued.cert_path, cert.pem().as_bytes(), CERT_MODE, force)?;
    Ok(issued)
}

/// Issues a node or client certificate signed by the authority in `dir`: `dir/NAME.pem` and
/// `dir/NAME-key.pem`.
pub fn issue(
    dir: &Path,
    kind: &CertKind,
    validity: Validity,
    force: bool,
) -> Result<Issued, CertError> {
    let name = kind.name();
    validate_name(name)?;
    let mut params = CertificateParams::default();
    match kind {
        CertKind::Server { name, dns, ips } => {
            if dns.is_empty() && ips.is_empty() {
                return Err(CertError::NoSubjectAltNames { name: name.clone() });
            }
            params.distinguished_name = common_name_dn(&format!("{NODE_PREFIX}{name}"));
            for d in dns {
                params.subject_alt_names.push(dns_san(d)?);
            }
            params
                .subject_alt_names
                .extend(ips.iter().copied().map(SanType::IpAddress));
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
        CertKind::Client { name } => {
            params.distinguished_name = common_name_dn(name);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, validity)?;

    let issued = Issued {
        cert_path: dir.join(format!("{name}.pem")),
        key_path: dir.join(format!("{name}-key.pem")),
    };
    let ca = load_ca(dir)?;
    refuse_existing(&issued, force)?;

    let key = generate_key()?;
    let cert = params
        .signed_by(&key, &ca)
        .map_err(|source| CertError::Generate {
            what: "certificate",
            source,
        })?;
    write_atomically(
        &issued.key_path,
        key.serialize_pem().as_bytes(),
        KEY_MODE,
        force,
    )?;
    write_atomically(&issued.cert_path, cert.pem().as_bytes(), CERT_MODE, force)?;
    Ok(issued)
}

/// The common name (CN) of a DER certificate: how the server names a peer or a client.
///
/// A subject with several common names is refused: which one an ACL rule would match is
/// ambiguous.
pub fn subject_of(cert_der: &[u8]) -> Result<String, CertError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| CertError::Parse {
            reason: e.to_string(),
        })?;
    let mut names = cert.subject().iter_common_name();
    let first = names.next().ok_or_else(|| CertError::NoCommonName {
        reason: "the subject has no CN".to_string(),
    })?;
    if names.next().is_some() {
        return Err(CertError::NoCommonName {
            reason: "the subject has more than one CN".to_string(),
        });
    }
    first
        .as_str()
        .map(str::to_string)
        .map_err(|e| CertError::NoCommonName {
            reason: format!("the CN is not a string: {e}"),
        })
}

/// `logbook certs ...`: the certificate tool.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a certificate authority (ca.pem, ca-key.pem).
    Init {
        /// Directory the files are written to (created if missing).
        #[arg(long, value_name = "DIR", default_value = "certs")]
        dir: PathBuf,
        /// Common name of the authority.
        #[arg(long, value_name = "NAME", default_value = "logbook CA")]
        name: String,
        /// Days the authority is valid for.
        #[arg(long, value_name = "DAYS", default_value_t = 3650)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a node (--server) or client (--client NAME) certificate signed by the CA in --dir.
    #[command(group(clap::ArgGroup::new("kind").required(true).args(["server", "client"])))]
    Issue {
        /// Directory holding ca.pem and ca-key.pem; the new files go there too.
        #[arg(long, value_name = "DIR", default_value = "certs")]
        dir: PathBuf,
        /// Issue a node certificate (CN node:NAME, serverAuth and clientAuth); needs --name.
        #[arg(long, requires = "name")]
        server: bool,
        /// The node's name (with --server).
        #[arg(long, value_name = "NAME", conflicts_with = "client")]
        name: Option<String>,
        /// DNS names of the node, comma separated (with --server).
        #[arg(
            long,
            value_name = "NAME,...",
            value_delimiter = ',',
            conflicts_with = "client"
        )]
        dns: Vec<String>,
        /// IP addresses of the node, comma separated (with --server).
        #[arg(
            long,
            value_name = "IP,...",
            value_delimiter = ',',
            conflicts_with = "client"
        )]
        ip: Vec<IpAddr>,
        /// Issue a client certificate with this name (CN NAME, clientAuth).
        #[arg(long, value_name = "NAME", conflicts_with = "server")]
        client: Option<String>,
        /// Days the certificate is valid for.
        #[arg(long, value_name = "DAYS", default_value_t = 825)]
        days: u32,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Runs a `logbook certs` command; prints the paths written, one per line, to stdout.
pub fn run(command: CertsCommand) -> Result<(), CertError> {
    let issued = match command {
        CertsCommand::Init {
            dir,
            name,
            days,
            force,
        } => init_ca(&dir, &name, Validity::days(days), force)?,
        CertsCommand::Issue {
            dir,
            server,
            name,
            dns,
            ip,
            client,
            days,
            force,
        } => {
            let kind = match (server, name, client) {
                (true, Some(name), None) => CertKind::Server { name, dns, ips: ip },
                (false, None, Some(name)) if dns.is_empty() && ip.is_empty() => {
                    CertKind::Client { name }
                }
                _ => {
                    return Err(CertError::Usage(
                        "give either --server --name NAME [--dns ...] [--ip ...] or --client NAME"
                            .to_string(),
                    ));
                }
            };
            issue(&dir, &kind, Validity::days(days), force)?
        }
    };
    println!("{}", issued.cert_path.display());
    println!("{}", issued.key_path.display());
    Ok(())
}

/// Refuses names that are empty, too long, reserved, or not made of `[A-Za-z0-9._@-]` (the name
/// becomes a file name and a common name).
fn validate_name(name: &str) -> Result<(), CertError> {
    let refuse = |reason: &str| {
        Err(CertError::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.starts_with(NODE_PREFIX) {
        return refuse("\"node:\" is reserved for node certificates (use --server --name NAME)");
    }
    if name == crate::security::ANONYMOUS {
        return refuse("\"anonymous\" is the name of callers without a certificate");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-')))
    {
        return refuse(&format!(
            "{c:?} is not allowed (only letters, digits, '.', '_', '@' and '-')"
        ));
    }
    if name == "." || name == ".." {
        return refuse("it is not a file name");
    }
    // NAME.pem / NAME-key.pem must never be the authority's own files.
    if name == "ca" || name == "ca-key" {
        return refuse("it would overwrite the authority's files (ca.pem, ca-key.pem)");
    }
    if name.len() + NODE_PREFIX.len() > MAX_COMMON_NAME_LEN {
        return refuse(&format!(
            "longer than {} bytes",
            MAX_COMMON_NAME_LEN - NODE_PREFIX.len()
        ));
    }
    Ok(())
}

/// A DNS subject alternative name (IA5 text, no empty entries such as `--dns a,,b`).
fn dns_san(dns: &str) -> Result<SanType, CertError> {
    if dns.trim().is_empty() {
        return Err(CertError::InvalidDnsName {
            dns: dns.to_string(),
            reason: "it is empty".to_string(),
        });
    }
    let ia5 = dns
        .to_string()
        .try_into()
        .map_err(|e: rcgen::Error| CertError::InvalidDnsName {
            dns: dns.to_string(),
            reason: e.to_string(),
        })?;
    Ok(SanType::DnsName(ia5))
}

/// A distinguished name holding just a common name.
fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A fresh ECDSA P-256 key.
fn generate_key() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CertError::Generate {
        what: "ECDSA P-256 key",
        source,
    })
}

/// Sets `not_before`/`not_after`, refusing an empty period or dates X.509 cannot hold.
fn set_validity(params: &mut CertificateParams, validity: Validity) -> Result<(), CertError> {
    if validity.not_after <= validity.not_before {
        return Err(CertError::InvalidValidity {
            reason: "not_after is not later than not_before".to_string(),
        });
    }
    params.not_before = to_offset_date_time(validity.not_before)?;
    params.not_after = to_offset_date_time(validity.not_after)?;
    Ok(())
}

/// Converts to whole seconds (X.509 has no sub-second times), within years 1..=9999.
fn to_offset_date_time(t: SystemTime) -> Result<OffsetDateTime, CertError> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).ok(),
        Err(e) => i64::try_from(e.duration().as_secs()).ok().map(|s| -s),
    };
    secs.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .filter(|d| (1..=9999).contains(&d.year()))
        .ok_or_else(|| CertError::InvalidValidity {
            reason: "a date falls outside years 1 to 9999".to_string(),
        })
}

/// Loads the authority of `dir`, checking that the key belongs to the certificate and that the
/// certificate is a CA.
fn load_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let read = |path: &Path| match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(CertError::CaMissing {
            dir: dir.to_path_buf(),
        }),
        Err(source) => Err(CertError::Read {
            path: path.to_path_buf(),
            source,
        }),
    };
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let invalid = |path: &Path, reason: String| CertError::InvalidCa {
        path: path.to_path_buf(),
        reason,
    };

    let key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(&key_path, e.to_string()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| invalid(&cert_path, format!("not a PEM certificate: {e}")))?;
    let ca_cert = pem
        .parse_x509()
        .map_err(|e| invalid(&cert_path, format!("not an X.509 certificate: {e}")))?;
    if !ca_cert.is_ca() {
        return Err(invalid(
            &cert_path,
            "the certificate is not a CA (basicConstraints cA is not set)".to_string(),
        ));
    }
    if ca_cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(invalid(
            &key_path,
            format!("the key does not belong to {}", cert_path.display()),
        ));
    }
    Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| invalid(&cert_path, e.to_string()))
}

/// Refuses to go on when either output file exists, unless `force`; checked before anything is
/// written so a refusal leaves no half-issued pair behind.
fn refuse_existing(issued: &Issued, force: bool) -> Result<(), CertError> {
    if force {
        return Ok(());
    }
    for path in [&issued.key_path, &issued.cert_path] {
        if path.symlink_metadata().is_ok() {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    Ok(())
}

/// Creates a directory and its parents.
fn create_dir(dir: &Path) -> Result<(), CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path` atomically: a temporary file created with `mode` in the same
/// directory, fsync, then rename over `path` (`force`) or hard-link to it (fails if `path`
/// exists, so a concurrent writer is never clobbered), then fsync of the directory.
fn write_atomically(path: &Path, contents: &[u8], mode: u32, force: bool) -> Result<(), CertError> {
    let write_err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| write_err(std::io::Error::other("no file name")))?;
    let (tmp_path, mut file) = create_temp(dir, file_name, mode).map_err(write_err)?;
    let outcome = (|| {
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        if force {
            std::fs::rename(&tmp_path, path)
        } else {
            let linked = std::fs::hard_link(&tmp_path, path);
            let _ = std::fs::remove_file(&tmp_path);
            linked
        }
    })();
    match outcome {
        Ok(()) => {}
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_path);
            if e.kind() == ErrorKind::AlreadyExists {
                return Err(CertError::Exists {
                    path: path.to_path_buf(),
                });
            }
            return Err(write_err(e));
        }
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CertError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// Creates a new temporary file `.NAME.tmp-PID-N` in `dir` with `mode` set at creation.
fn create_temp(
    dir: &Path,
    file_name: &std::ffi::OsStr,
    mode: u32,
) -> std::io::Result<(PathBuf, File)> {
    let mut attempt = 0u32;
    loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(".tmp-{}-{}", std::process::id(), fastrand::u32(..)));
        let tmp_path = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp_path)
        {
            Ok(file) => return Ok((tmp_path, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use clap::Parser;
    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use x509_parser::extensions::GeneralName;

    use super::*;

    /// The DER of the (single) certificate in a PEM file.
    fn der_of(path: &Path) -> Vec<u8> {
        let pem = std::fs::read(path).unwrap();
        let (rest, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        assert!(
            x509_parser::pem::parse_x509_pem(rest).is_err(),
            "{} holds more than one certificate",
            path.display()
        );
        assert_eq!(pem.label, "CERTIFICATE");
        pem.contents
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn server(name: &str) -> CertKind {
        CertKind::Server {
            name: name.to_string(),
            dns: vec!["n1.example".to_string(), "localhost".to_string()],
            ips: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
        }
    }

    fn client(name: &str) -> CertKind {
        CertKind::Client {
            name: name.to_string(),
        }
    }

    fn roots(ca_der: &[u8]) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(ca_der.to_vec())).unwrap();
        Arc::new(roots)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn verify_as_client(ca_der: &[u8], leaf_der: &[u8]) -> Result<(), rustls::Error> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_der), provider())
            .build()
            .unwrap();
        verifier
            .verify_client_cert(
                &CertificateDer::from(leaf_der.to_vec()),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    fn verify_as_server(ca_der: &[u8], leaf_der: &[u8], name: &str) -> Result<(), rustls::Error> {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_der), provider())
            .build()
            .unwrap();
        verifier
            .verify_server_cert(
                &CertificateDer::from(leaf_der.to_vec()),
                &[],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
    }

    #[test]
    fn init_and_issue_write_pem_files_with_key_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let ca = init_ca(&certs, "test CA", Validity::days(10), false).unwrap();
        assert_eq!(ca.cert_path, certs.join("ca.pem"));
        assert_eq!(ca.key_path, certs.join("ca-key.pem"));
        let node = issue(&certs, &server("n1"), Validity::days(10), false).unwrap();
        assert_eq!(node.cert_path, certs.join("n1.pem"));
        assert_eq!(node.key_path, certs.join("n1-key.pem"));
        let alice = issue(&certs, &client("alice"), Validity::days(10), false).unwrap();
        for issued in [&ca, &node, &alice] {
            assert_eq!(
                mode_of(&issued.key_path),
                0o600,
                "{}",
                issued.key_path.display()
            );
            // The umask may narrow 0644, never widen it.
            assert_eq!(
                mode_of(&issued.cert_path) & !0o644,
                0,
                "{}",
                issued.cert_path.display()
            );
            let key = std::fs::read_to_string(&issued.key_path).unwrap();
            assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
            der_of(&issued.cert_path);
        }
        // No temporary file is left behind.
        let mut names: Vec<String> = std::fs::read_dir(&certs)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "alice-key.pem",
                "alice.pem",
                "ca-key.pem",
                "ca.pem",
                "n1-key.pem",
                "n1.pem"
            ]
        );
    }

    #[test]
    fn ca_is_a_p256_ca_that_signs_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), "test CA", Validity::days(10), false).unwrap();
        let der = der_of(&ca.cert_path);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(subject_of(&der).unwrap(), "test CA");
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign());
        assert_eq!(
            cert.public_key()
                .algorithm
                .parameters
                .as_ref()
                .unwrap()
                .as_oid()
                .unwrap(),
            x509_parser::oid_registry::OID_EC_P256
        );
    }

    #[test]
    fn node_certificate_names_the_node_and_serves_and_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), "test CA", Validity::days(10), false).unwrap();
        let node = issue(dir.path(), &server("n1"), Validity::days(10), false).unwrap();
        let ca_der = der_of(&ca.cert_path);
        let der = der_of(&node.cert_path);
        assert_eq!(subject_of(&der).unwrap(), "node:n1");

        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(!cert.is_ca());
        let sans = &cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        assert!(sans.contains(&GeneralName::DNSName("n1.example")));
        assert!(sans.contains(&GeneralName::DNSName("localhost")));
        assert!(sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
        assert!(sans.contains(&GeneralName::IPAddress(
            &std::net::Ipv6Addr::LOCALHOST.octets()
        )));
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());

        verify_as_server(&ca_der, &der, "n1.example").unwrap();
        verify_as_server(&ca_der, &der, "127.0.0.1").unwrap();
        verify_as_client(&ca_der, &der).unwrap();
        assert!(verify_as_server(&ca_der, &der, "other.example").is_err());
    }

    #[test]
    fn client_certificate_authenticates_but_cannot_serve() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), "test CA", Validity::days(10), false).unwrap();
        let alice = issue(
            dir.path(),
            &client("alice@example.com"),
            Validity::days(10),
            false,
        )
        .unwrap();
        let ca_der = der_of(&ca.cert_path);
        let der = der_of(&alice.cert_path);
        assert_eq!(subject_of(&der).unwrap(), "alice@example.com");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        verify_as_client(&ca_der, &der).unwrap();
        assert!(verify_as_server(&ca_der, &der, "alice.example").is_err());
    }

    #[test]
    fn a_leaf_of_another_ca_does_not_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        let ca_one = init_ca(&one, "one", Validity::days(10), false).unwrap();
        init_ca(&two, "two", Validity::days(10), false).unwrap();
        let leaf = issue(&two, &client("alice"), Validity::days(10), false).unwrap();
        assert!(verify_as_client(&der_of(&ca_one.cert_path), &der_of(&leaf.cert_path)).is_err());
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), "test CA", Validity::days(10), false).unwrap();
        let ca_pem = std::fs::read(&ca.cert_path).unwrap();
        let err = init_ca(dir.path(), "test CA", Validity::days(10), false).unwrap_err();
        assert!(
            matches!(&err, CertError::Exists { path } if path == &ca.key_path),
            "{err}"
        );
        assert!(err.to_string().contains("ca-key.pem"), "{err}");
        assert_eq!(std::fs::read(&ca.cert_path).unwrap(), ca_pem);

        let first = issue(dir.path(), &client("alice"), Validity::days(10), false).unwrap();
        let first_pem = std::fs::read(&first.cert_path).unwrap();
        let err = issue(dir.path(), &client("alice"), Validity::days(10), false).unwrap_err();
        assert!(err.to_string().contains("alice-key.pem"), "{err}");
        assert_eq!(std::fs::read(&first.cert_path).unwrap(), first_pem);

        // Only the certificate left: still refused, naming it, and no key is written.
        std::fs::remove_file(&first.key_path).unwrap();
        let err = issue(dir.path(), &client("alice"), Validity::days(10), false).unwrap_err();
        assert!(
            matches!(&err, CertError::Exists { path } if path == &first.cert_path),
            "{err}"
        );
        assert!(!first.key_path.exists());

        let second = issue(dir.path(), &client("alice"), Validity::days(10), true).unwrap();
        assert_ne!(std::fs::read(&second.cert_path).unwrap(), first_pem);
        assert_eq!(mode_of(&second.key_path), 0o600);
    }

    #[test]
    fn refuses_bad_names() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test CA", Validity::days(10), false).unwrap();
        for name in [
            "",
            "node:alice",
            "../alice",
            "a/b",
            "al ice",
            "alice\n",
            "tab\there",
            "ali*ce",
            "élise",
            "ca",
            "ca-key",
            "..",
            &"x".repeat(60),
        ] {
            let err = issue(dir.path(), &client(name), Validity::days(10), false).unwrap_err();
            assert!(
                matches!(err, CertError::InvalidName { .. }),
                "{name:?}: {err}"
            );
        }
        let err = issue(dir.path(), &server("a/b"), Validity::days(10), false).unwrap_err();
        assert!(matches!(err, CertError::InvalidName { .. }), "{err}");
        // Nothing but the CA was written.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        for name in [
            "alice",
            "Bob_2",
            "svc.orders-writer",
            "carol@example.com",
            &"x".repeat(59),
        ] {
            issue(dir.path(), &client(name), Validity::days(10), false)
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
    }

    #[test]
    fn node_certificate_needs_a_subject_alt_name() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "test CA", Validity::days(10), false).unwrap();
        let kind = CertKind::Server {
            name: "n1".to_string(),
            dns: vec![],
            ips: vec![],
        };
        let err = issue(dir.path(), &kind, Validity::days(10), false).unwrap_err();
        assert!(matches!(err, CertError::NoSubjectAltNames { .. }), "{err}");
        let kind = CertKind::Server {
            name: "n1".to_string(),
            dns: vec!["a.example".to_string(), String::new()],
            ips: vec![],
        };
        let err = issue(dir.path(), &kind, Validity::days(10), false).unwrap_err();
        assert!(matches!(err, CertError::InvalidDnsName { .. }), "{err}");
    }

    #[test]
    fn issue_without_a_ca_says_to_run_init() {
        let dir = tempfile::tempdir().unwrap();
        let err = issue(dir.path(), &client("alice"), Validity::days(10), false).unwrap_err();
        assert!(matches!(err, CertError::CaMissing { .. }), "{err}");
        assert!(
            err.to_string().contains("run `logbook certs init` first"),
            "{err}"
        );
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
        assert!(!dir.path().join("alice-key.pem").exists());
    }

    #[test]
    fn issue_refuses_a_ca_key_that_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        init_ca(&one, "one", Validity::days(10), false).unwrap();
        init_ca(&two, "two", Validity::days(10), false).unwrap();
        std::fs::copy(two.join("ca-key.pem"), one.join("ca-key.pem")).unwrap();
        let err = issue(&one, &client("alice"), Validity::days(10), false).unwrap_err();
        assert!(
            matches!(&err, CertError::InvalidCa { path, .. } if path == &one.join("ca-key.pem")),
            "{err}"
        );
        // A leaf is not an authority.
        issue(&two, &client("alice"), Validity::days(10), false).unwrap();
        std::fs::copy(two.join("alice.pem"), two.join("ca.pem")).unwrap();
        std::fs::copy(two.join("alice-key.pem"), two.join("ca-key.pem")).unwrap();
        let err = issue(&two, &client("bob"), Validity::days(10), false).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn expired_validity_makes_an_expired_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(dir.path(), "test CA", Validity::days(10), false).unwrap();
        let now = SystemTime::now();
        let validity = Validity {
            not_before: now - Duration::from_secs(3 * 86_400),
            not_after: now - Duration::from_secs(86_400),
        };
        let old = issue(dir.path(), &client("old"), validity, false).unwrap();
        let der = der_of(&old.cert_path);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let now_secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!(cert.validity().not_after.timestamp() < now_secs);
        assert_eq!(cert.validity().not_after.timestamp(), now_secs - 86_400);
        let err = verify_as_client(&der_of(&ca.cert_path), &der).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ExpiredContext { .. }
                    )
            ),
            "{err:?}"
        );
    }

    #[test]
    fn validity_days_spans_from_an_hour_ago() {
        let before = SystemTime::now();
        let v = Validity::days(2);
        let after = SystemTime::now();
        assert!(v.not_before >= before - Duration::from_secs(3600));
        assert!(v.not_before <= after - Duration::from_secs(3600));
        assert!(v.not_after >= before + Duration::from_secs(2 * 86_400));
        assert!(v.not_after <= after + Duration::from_secs(2 * 86_400));
        let empty = Validity {
            not_before: before,
            not_after: before,
        };
        let dir = tempfile::tempdir().unwrap();
        let err = init_ca(dir.path(), "test CA", empty, false).unwrap_err();
        assert!(matches!(err, CertError::InvalidValidity { .. }), "{err}");
    }

    #[test]
    fn subject_of_rejects_garbage() {
        assert!(matches!(
            subject_of(b"not a certificate"),
            Err(CertError::Parse { .. })
        ));
    }

    /// The command line as `logbook certs ...` parses it.
    #[derive(Debug, clap::Parser)]
    struct Certs {
        #[command(subcommand)]
        command: CertsCommand,
    }

    fn parse(args: &[&str]) -> Result<CertsCommand, clap::Error> {
        Certs::try_parse_from(std::iter::once("certs").chain(args.iter().copied()))
            .map(|c| c.command)
    }

    #[test]
    fn command_line_needs_exactly_one_of_server_and_client() {
        let issue = parse(&[
            "issue",
            "--server",
            "--name",
            "n1",
            "--dns",
            "a,b",
            "--ip",
            "127.0.0.1,::1",
        ])
        .unwrap();
        match issue {
            CertsCommand::Issue {
                server: true,
                name: Some(name),
                dns,
                ip,
                client: None,
                days: 825,
                ..
            } => {
                assert_eq!(name, "n1");
                assert_eq!(dns, ["a", "b"]);
                assert_eq!(ip.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["issue", "--client", "alice"]).unwrap(),
            CertsCommand::Issue {
                server: false,
                client: Some(_),
                ..
            }
        ));
        for bad in [
            &["issue"][..],
            &["issue", "--server"],
            &["issue", "--server", "--name", "n1", "--client", "alice"],
            &["issue", "--client", "alice", "--name", "n1"],
            &["issue", "--client", "alice", "--dns", "a"],
            &["issue", "--client", "alice", "--ip", "127.0.0.1"],
            &["issue", "--name", "n1", "--dns", "a"],
            &["issue", "--server", "--name", "n1", "--ip", "not-an-ip"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        assert!(matches!(
            parse(&["init"]).unwrap(),
            CertsCommand::Init { days: 3650, force: false, ref name, ref dir } if name == "logbook CA" && dir == Path::new("certs")
        ));
    }

    #[test]
    fn run_writes_the_files_it_prints() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        run(parse(&["init", "--dir", d, "--days", "30"]).unwrap()).unwrap();
        run(parse(&[
            "issue", "--dir", d, "--server", "--name", "n1", "--ip", "10.0.0.1",
        ])
        .unwrap())
        .unwrap();
        run(parse(&["issue", "--dir", d, "--client", "alice"]).unwrap()).unwrap();
        assert_eq!(
            subject_of(&der_of(&dir.path().join("n1.pem"))).unwrap(),
            "node:n1"
        );
        assert_eq!(
            subject_of(&der_of(&dir.path().join("alice.pem"))).unwrap(),
            "alice"
        );
    }
}
