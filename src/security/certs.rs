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
        #[arg(long, value_name = "NAME", requires = "server")]
        name: Option<String>,
        /// DNS names of the node, comma separated (with --server).
        #[arg(
            long,
            value_name = "NAME,...",
            value_delimiter = ',',
            requires = "server"
        )]
        dns: Vec<String>,
        /// IP addresses of the node, comma separated (with --server).
        #[arg(
            long,
            value_name = "IP,...",
            value_delimiter = ',',
            requires = "server"
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
