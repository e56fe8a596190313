//! Broker configuration with `figment`: built-in defaults, then a TOML file (`logbook.toml` in
//! the working directory if present, or the one named by `--config` / `LOGBOOK_CONFIG`), then
//! `LOGBOOK_*` environment variables, then command-line flags. A key is spelled the same way in
//! all four: `segment_max_bytes` in the file, `LOGBOOK_SEGMENT_MAX_BYTES` in the environment,
//! `--segment-max-bytes` on the command line. Unknown keys and bad values stop start-up with an
//! error that names the key and where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::log::{CleanupPolicy, FsyncPolicy, LogConfig};

/// The file read when no `--config` is given (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "logbook.toml";
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// A configuration that could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or parsed, or a key is unknown or has the wrong type.
    #[error("configuration error: {0}")]
    Load(#[from] Box<figment::Error>),
    /// The values were read but do not make sense together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything a broker needs to start. Field names are the configuration keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Where topics and the node identity are stored.
    pub data_dir: PathBuf,
    /// Address the gRPC server listens on (port 0 picks a free port).
    pub listen_addr: SocketAddr,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    /// When appended data is made durable: `always`, `interval(MS)` or `never`.
    pub fsync: FsyncPolicy,
    /// A segment rolls when its `.log` file would exceed this.
    pub segment_max_bytes: u64,
    /// A segment rolls when it has taken data for this long.
    pub segment_max_age_ms: u64,
    /// Preallocated size of a segment index.
    pub index_max_bytes: u64,
    /// Largest record batch (one produce request's records, encoded) a topic accepts by default.
    pub max_batch_bytes: u64,
    /// Largest gRPC request accepted.
    pub max_request_bytes: u64,
    /// Default size retention per partition in bytes; -1 for none.
    pub retention_bytes: i64,
    /// Default time retention in ms; -1 for none.
    pub retention_ms: i64,
    /// Default cleanup policy: `delete` or `compact`.
    pub cleanup_policy: CleanupPolicy,
    /// How long compaction keeps tombstones.
    pub delete_retention_ms: u64,
    /// How often retention and compaction run.
    pub maintenance_interval_ms: u64,
    /// Address peers and clients reach this node's gRPC server at ("": the bound listen address).
    pub advertise_addr: String,
    /// Address gossip (serf: UDP and TCP) binds to (port 0 picks a free port).
    pub gossip_addr: SocketAddr,
    /// Address other nodes reach this node's gossip at, `ip:port` or `host:port` (resolved at
    /// start; "": the bound gossip address).
    pub gossip_advertise_addr: String,
    /// Gossip seeds to join, `host:port` (DNS names allowed); retried until one answers.
    pub join: Vec<String>,
    /// Also join the running EC2 instances tagged `KEY=VALUE` (found through the EC2 API before
    /// every join attempt, at this node's gossip port); "" for none.
    pub join_aws_tag: String,
    /// Region of the `join_aws_tag` lookup ("": the SDK's chain, on EC2 the instance's region).
    pub join_aws_region: String,
    /// EC2 API endpoint of the `join_aws_tag` lookup ("": AWS's; for VPC endpoints and tests).
    pub join_aws_endpoint: String,
    /// The cluster forms once this many nodes have found each other by gossip.
    pub bootstrap_expect: u32,
    /// Shared gossip encryption key, hex (16, 24 or 32 bytes); "" for none.
    pub gossip_key: String,
    /// Replicas of each partition of a new topic (capped by the number of nodes).
    pub replication_factor: u32,
    /// How long gossip must report a node failed before its replicas are moved.
    pub dead_node_grace_ms: u64,
    /// Raft heartbeat interval of every group.
    pub raft_heartbeat_ms: u64,
    /// Shortest Raft election timeout (the longest is 1.5 times this). A follower that loses
    /// its leader waits the longest timeout (the leader's lease) plus a random one before it
    /// campaigns, so failover takes about 2.5 times this.
    pub raft_election_timeout_ms: u64,
    /// Where snapshots go: a directory, `file:///dir`, `s3://bucket/prefix`, or `none`
    /// ("": `<data_dir>/snapshots` on a standalone node, none on a cluster node).
    pub snapshot_store: String,
    /// S3 endpoint URL for S3-compatible servers ("": AWS).
    pub s3_endpoint: String,
    /// S3 region ("": from the AWS environment, else us-east-1).
    pub s3_region: String,
    /// Path-style S3 addressing (most S3-compatible servers need it).
    pub s3_force_path_style: bool,
    /// Longest time between snapshots of a partition that takes writes (a snapshot is also
    /// taken whenever a segment seals).
    pub snapshot_interval_ms: u64,
    /// Manifests kept per partition in the snapshot store.
    pub snapshot_retain: u32,
    /// Raft entries kept (logically) behind a snapshot, so a follower slightly behind gets
    /// entries rather than a snapshot.
    pub snapshot_keep_entries: u64,
    /// File holding the gossip encryption key in hex (instead of `gossip_key`); "" for none.
    pub gossip_key_file: PathBuf,
    /// PEM certificate (chain) of this node; with `tls_key_file` and `tls_ca_file` turns on
    /// TLS for the gRPC port and for connections to peers. "" for plaintext.
    pub tls_cert_file: PathBuf,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: PathBuf,
    /// PEM CA certificates that sign client and peer certificates.
    pub tls_ca_file: PathBuf,
    /// Under TLS, refuse callers without a client certificate (UNAUTHENTICATED).
    pub tls_require_client_cert: bool,
    /// Name checked in a peer's server certificate ("": the host of its advertised address).
    /// Set it where peers are reached by addresses no certificate can list in advance (the
    /// private IPs of an auto-scaling group): every node certificate then carries this DNS name.
    pub tls_peer_server_name: String,
    /// casbin model file ("": the built-in model, `config/acl_model.conf`).
    pub acl_model_file: PathBuf,
    /// casbin policy file; "" turns ACLs off (every caller may do everything).
    pub acl_policy_file: PathBuf,
    /// Address of the admin HTTP server (`/metrics`, `/healthz`, `/readyz`; port 0 picks one).
    pub admin_addr: SocketAddr,
    /// Log format on stderr: `human` or `json`.
    pub log_format: crate::telemetry::LogFormat,
    /// OTLP/gRPC endpoint spans are exported to (for example `http://collector:4317`); "" for
    /// none.
    pub otlp_endpoint: String,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let log = LogConfig::default();
        BrokerConfig {
            data_dir: PathBuf::from("./data"),
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 7400)),
            default_partitions: 1,
            fsync: log.fsync,
            segment_max_bytes: log.segment_max_bytes,
            segment_max_age_ms: log.segment_max_age_ms,
            index_max_bytes: log.index_max_bytes,
            max_batch_bytes: log.max_batch_bytes,
            max_request_bytes: 4 << 20,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3600 * 1000,
            cleanup_policy: log.cleanup_policy,
            delete_retention_ms: log.delete_retention_ms,
            maintenance_interval_ms: 30_000,
            advertise_addr: String::new(),
            gossip_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            gossip_advertise_addr: String::new(),
            join: Vec::new(),
            join_aws_tag: String::new(),
            join_aws_region: String::new(),
            join_aws_endpoint: String::new(),
            bootstrap_expect: 1,
            gossip_key: String::new(),
            replication_factor: 3,
            dead_node_grace_ms: 30_000,
            raft_heartbeat_ms: 250,
            raft_election_timeout_ms: 800,
            snapshot_store: String::new(),
            s3_endpoint: String::new(),
            s3_region: String::new(),
            s3_force_path_style: false,
            snapshot_interval_ms: 60_000,
            snapshot_retain: 3,
            snapshot_keep_entries: 1000,
            gossip_key_file: PathBuf::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            tls_ca_file: PathBuf::new(),
            tls_require_client_cert: true,
            tls_peer_server_name: String::new(),
            acl_model_file: PathBuf::new(),
            acl_policy_file: PathBuf::new(),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 7480)),
            log_format: crate::telemetry::LogFormat::Human,
            otlp_endpoint: String::new(),
        }
    }
}

/// `-1` (unlimited) or a non-negative limit.
pub fn limit(value: i64, key: &str) -> Result<Option<u64>, String> {
    match value {
        -1 => Ok(None),
        v if v >= 0 => Ok(Some(v as u64)),
        v => Err(format!("{key} = {v}: use -1 for unlimited or a value >= 0")),
    }
}

impl BrokerConfig {
    /// Loads the layered configuration (see the module docs) and validates it.
    pub fn load(flags: &ConfigFlags) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(BrokerConfig::default()));
        figment = match &flags.config {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError::Invalid(format!(
                        "configuration file {} does not exist",
                        path.display()
                    )));
                }
                figment.merge(Toml::file_exact(path))
            }
            // Optional: a missing default file contributes nothing.
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => figment,
        };
        let config: BrokerConfig = figment
            .merge(Env::prefixed("LOGBOOK_").ignore(&["config", "server"]))
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that are fine one by one but not together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.log_config().map_err(ConfigError::Invalid)?;
        if !(1..=MAX_PARTITIONS).contains(&self.default_partitions) {
            return Err(ConfigError::Invalid(format!(
                "default_partitions = {} must be between 1 and {MAX_PARTITIONS}",
                self.default_partitions
            )));
        }
        if self.max_request_bytes <= self.max_batch_bytes {
            return Err(ConfigError::Invalid(format!(
                "max_request_bytes = {} must be larger than max_batch_bytes = {}",
                self.max_request_bytes, self.max_batch_bytes
            )));
        }
        if self.bootstrap_expect == 0 || self.replication_factor == 0 {
            return Err(ConfigError::Invalid(
                "bootstrap_expect and replication_factor must be at least 1".into(),
            ));
        }
        self.gossip_key().map_err(ConfigError::Invalid)?;
        if !self.join_aws_tag.is_empty() {
            crate::cluster::discovery::parse_tag(&self.join_aws_tag)
                .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        self.tls_files()?;
        self.raft_timing()
            .validate()
            .map_err(ConfigError::Invalid)?;
        if self.snapshot_interval_ms == 0 || self.snapshot_retain == 0 {
            return Err(ConfigError::Invalid(
                "snapshot_interval_ms and snapshot_retain must be > 0".into(),
            ));
        }
        if self.snapshot_store.starts_with("s3://") {
            crate::snapshot::S3Location::parse(&self.snapshot_store)
                .map_err(|e| ConfigError::Invalid(format!("snapshot_store: {e}")))?;
        }
        if self.maintenance_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "maintenance_interval_ms must be > 0".into(),
            ));
        }
        Ok(())
    }

    /// The log settings topics get by default.
    pub fn log_config(&self) -> Result<LogConfig, String> {
        let config = LogConfig {
            segment_max_bytes: self.segment_max_bytes,
            segment_max_age_ms: self.segment_max_age_ms,
            index_max_bytes: self.index_max_bytes,
            max_batch_bytes: self.max_batch_bytes,
            fsync: self.fsync,
            retention_bytes: limit(self.retention_bytes, "retention_bytes")?,
            retention_ms: limit(self.retention_ms, "retention_ms")?,
            cleanup_policy: self.cleanup_policy,
            delete_retention_ms: self.delete_retention_ms,
        };
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// The gossip encryption key, decoded from hex (from `gossip_key` or `gossip_key_file`).
    pub fn gossip_key(&self) -> Result<Option<Vec<u8>>, String> {
        let from_file;
        let hex = match self.gossip_key_file.as_os_str().is_empty() {
            true => self.gossip_key.trim(),
            false if !self.gossip_key.is_empty() => {
                return Err("set gossip_key or gossip_key_file, not both".into());
            }
            false => {
                from_file = std::fs::read_to_string(&self.gossip_key_file).map_err(|e| {
                    format!("gossip_key_file {}: {e}", self.gossip_key_file.display())
                })?;
                from_file.trim()
            }
        };
        if hex.is_empty() {
            return Ok(None);
        }
        let bad =
            || "gossip_key must be 32, 48 or 64 hex digits (a 16, 24 or 32 byte key)".to_string();
        if !matches!(hex.len(), 32 | 48 | 64) {
            return Err(bad());
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
            .collect::<Result<Vec<u8>, String>>()
            .map(Some)
    }

    /// The node's TLS files (`None`: plaintext).
    pub fn tls_files(&self) -> Result<Option<crate::security::tls::TlsFiles>, ConfigError> {
        fn set(p: &Path) -> Option<&Path> {
            (!p.as_os_str().is_empty()).then_some(p)
        }
        let files = crate::security::tls::TlsFiles::from_settings(
            set(&self.tls_ca_file),
            set(&self.tls_cert_file),
            set(&self.tls_key_file),
            ["tls_ca_file", "tls_cert_file", "tls_key_file"],
        )
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        match files {
            Some(f) if f.cert.is_none() => Err(ConfigError::Invalid(
                "tls_ca_file needs tls_cert_file and tls_key_file (the node's own certificate)"
                    .into(),
            )),
            files => Ok(files),
        }
    }

    /// Raft timing of every group.
    pub fn raft_timing(&self) -> crate::raft::RaftTiming {
        crate::raft::RaftTiming {
            heartbeat_ms: self.raft_heartbeat_ms,
            election_timeout_min_ms: self.raft_election_timeout_ms,
            election_timeout_max_ms: self.raft_election_timeout_ms * 3 / 2,
            snapshot_keep_entries: self.snapshot_keep_entries,
        }
    }

    /// The snapshot store URL (`None` when disabled). Unset, a standalone node keeps snapshots
    /// in `<data_dir>/snapshots`; a cluster node has none, because every node of a cluster must
    /// see the same store (S3, or a directory they all share).
    pub fn snapshot_store_url(&self) -> Option<String> {
        let standalone =
            self.bootstrap_expect <= 1 && self.join.is_empty() && self.join_aws_tag.is_empty();
        match self.snapshot_store.trim() {
            "none" => None,
            "" if standalone => Some(self.data_dir.join("snapshots").display().to_string()),
            "" => None,
            url => Some(url.to_string()),
        }
    }

    /// S3 connection settings (endpoint, region, addressing).
    pub fn s3_location(&self) -> crate::snapshot::S3Location {
        crate::snapshot::S3Location {
            region: self.s3_region.clone(),
            endpoint: self.s3_endpoint.clone(),
            force_path_style: self.s3_force_path_style,
            ..Default::default()
        }
    }

    /// The effective configuration as TOML (what `logbook config` prints; the gossip key is
    /// redacted).
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.gossip_key.is_empty() {
            shown.gossip_key = "<redacted>".into();
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Command-line flags for the configuration keys (`logbook serve`, `logbook config`).
/// Only flags that are given override the other sources.
#[derive(Debug, Clone, Default, clap::Args, Serialize)]
pub struct ConfigFlags {
    /// Configuration file [default: ./logbook.toml if it exists]
    #[arg(long, env = "LOGBOOK_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where topics and the node identity are stored [default: ./data]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on, host:port [default: 127.0.0.1:7400]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_addr: Option<SocketAddr>,
    /// Partitions of a topic created without a count [default: 1]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_partitions: Option<u32>,
    /// always | interval(MS) | never [default: always]
    #[arg(long, value_name = "POLICY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fsync: Option<FsyncPolicy>,
    /// Segment size limit in bytes [default: 1 GiB]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_max_bytes: Option<u64>,
    /// Segment age limit in ms [default: 7 days]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_max_age_ms: Option<u64>,
    /// Preallocated index size in bytes [default: 10 MiB]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_max_bytes: Option<u64>,
    /// Largest record batch a topic accepts by default [default: 1 MiB]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch_bytes: Option<u64>,
    /// Largest gRPC request [default: 4 MiB]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u64>,
    /// Default size retention per partition, -1 for none [default: -1]
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<i64>,
    /// Default time retention in ms, -1 for none [default: 7 days]
    #[arg(long, value_name = "MS", allow_hyphen_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    /// delete | compact [default: delete]
    #[arg(long, value_name = "POLICY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_policy: Option<CleanupPolicy>,
    /// How long compaction keeps tombstones, ms [default: 1 day]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_retention_ms: Option<u64>,
    /// How often retention and compaction run, ms [default: 30000]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maintenance_interval_ms: Option<u64>,
    /// Address peers and clients reach this node at [default: the listen address]
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
    /// Gossip bind address [default: 127.0.0.1:0]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_addr: Option<SocketAddr>,
    /// Address other nodes reach this node's gossip at [default: the bound gossip address]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_advertise_addr: Option<String>,
    /// Gossip seeds, comma-separated host:port [default: none]
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<Vec<String>>,
    /// Join the running EC2 instances with this tag, KEY=VALUE [default: none]
    #[arg(long, value_name = "KEY=VALUE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_aws_tag: Option<String>,
    /// Region of the join_aws_tag lookup [default: the AWS SDK's region chain]
    #[arg(long, value_name = "REGION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_aws_region: Option<String>,
    /// EC2 API endpoint of the join_aws_tag lookup [default: AWS's]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_aws_endpoint: Option<String>,
    /// Nodes that must gossip before the cluster forms [default: 1]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_expect: Option<u32>,
    /// Replicas per partition of new topics [default: 3, capped by the cluster size]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<u32>,
    /// How long a failed node is waited for before its replicas move, ms [default: 30000]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_node_grace_ms: Option<u64>,
    /// Raft heartbeat interval, ms [default: 250]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_heartbeat_ms: Option<u64>,
    /// Shortest Raft election timeout, ms (the longest is 1.5 times this) [default: 800]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raft_election_timeout_ms: Option<u64>,
    /// Snapshot store: a directory, s3://bucket/prefix, or none [default: DATA_DIR/snapshots]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_store: Option<String>,
    /// S3 endpoint URL for S3-compatible servers [default: AWS]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: from the AWS environment, else us-east-1]
    #[arg(long, value_name = "REGION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_region: Option<String>,
    /// Path-style S3 addressing [default: false]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3_force_path_style: Option<bool>,
    /// Longest time between snapshots of a partition taking writes, ms [default: 60000]
    #[arg(long, value_name = "MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_interval_ms: Option<u64>,
    /// Manifests kept per partition in the store [default: 3]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_retain: Option<u32>,
    /// Raft entries kept behind a snapshot [default: 1000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_keep_entries: Option<u64>,
    /// File holding the gossip encryption key, hex (the key itself is never a flag) [default: none]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip_key_file: Option<PathBuf>,
    /// PEM certificate of this node; with --tls-key-file and --tls-ca-file turns on TLS [default: none]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file [default: none]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA that signs client and peer certificates [default: none]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Under TLS, refuse callers without a client certificate [default: true]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_require_client_cert: Option<bool>,
    /// Name checked in peers' certificates [default: the host of the peer's address]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_peer_server_name: Option<String>,
    /// casbin model file [default: the built-in model]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_model_file: Option<PathBuf>,
    /// casbin policy file; turns ACLs on [default: none, ACLs off]
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_policy_file: Option<PathBuf>,
    /// Admin HTTP address for /metrics, /healthz, /readyz [default: 127.0.0.1:7480]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<SocketAddr>,
    /// Log format: human | json [default: human]
    #[arg(long, value_name = "FORMAT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<crate::telemetry::LogFormat>,
    /// OTLP/gRPC endpoint for traces, e.g. http://collector:4317 [default: none]
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_render_as_toml_that_reads_back() {
        let config = BrokerConfig::default();
        config.validate().unwrap();
        let text = config.to_toml();
        let back: BrokerConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn the_gossip_key_can_come_from_a_file_but_not_from_both_places() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gossip.key");
        std::fs::write(&file, "000102030405060708090a0b0c0d0e0f\n").unwrap();
        let mut config = BrokerConfig {
            gossip_key_file: file.clone(),
            ..BrokerConfig::default()
        };
        assert_eq!(config.gossip_key().unwrap(), Some((0..16).collect()));
        config.gossip_key = "000102030405060708090a0b0c0d0e0f".into();
        assert!(config.gossip_key().unwrap_err().contains("not both"));
        config.gossip_key.clear();
        config.gossip_key_file = dir.path().join("missing");
        assert!(config.gossip_key().unwrap_err().contains("missing"));
    }

    #[test]
    fn tls_settings_come_as_a_set() {
        let config = BrokerConfig {
            tls_cert_file: "node.pem".into(),
            ..BrokerConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("tls_ca_file"), "{err}");
        let config = BrokerConfig {
            tls_ca_file: "ca.pem".into(),
            ..BrokerConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("tls_cert_file"), "{err}");
        assert_eq!(BrokerConfig::default().tls_files().unwrap(), None);
    }

    #[test]
    fn retention_limits_use_minus_one_for_unlimited() {
        assert_eq!(limit(-1, "k"), Ok(None));
        assert_eq!(limit(5, "k"), Ok(Some(5)));
        assert!(limit(-2, "k").is_err());
    }
}
