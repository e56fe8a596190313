//! Gossip membership: which nodes exist, where they answer gRPC, and whether they are alive.
//!
//! Callers speak to the small [`Membership`] trait; [`SerfMembership`] implements it on top of
//! `serf` 0.5 (SWIM gossip with Lifeguard, over UDP for probes and gossip and TCP for state
//! sync). Swapping the gossip crate means writing another implementation of the trait, not
//! touching callers.
//!
//! What a node tells the others about itself travels in serf tags (at most 512 bytes encoded):
//! `node_id` (our `u64` id) and `grpc_addr`. The serf node name is `node-<id>`, so a node that
//! restarts with the same id is recognised as the same member.
//!
//! How to use it:
//! 1. [`SerfMembership::start`] binds the gossip sockets (port 0 is allowed; read the port back
//!    with [`SerfMembership::bound_addr`]).
//! 2. [`Membership::subscribe`] before joining if every change matters, then read
//!    [`Membership::members`] for the state so far.
//! 3. [`join_with_retry`] until one seed answers (nodes start in any order).
//! 4. [`Membership::leave`] on graceful shutdown; dropping the handle without it shuts gossip down
//!    abruptly and the others report this node as failed.
//!
//! Encryption: with a key configured, every packet and stream is AES-GCM encrypted and anything
//! unencrypted or under another key is dropped. serf 0.5.2 needs four settings for that (primary
//! key, algorithm, verify-outgoing, verify-incoming); `memberlist_options` sets all of them.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use parking_lot::RwLock;
use serf::event::{Event, EventProducer, MemberEventType};
use serf::types::{EncryptionAlgorithm, MaybeResolvedAddress, SecretKey, SmolStr};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The serf transport we run: UDP + TCP sockets on tokio, addresses given as `SocketAddr`.
type SerfTransport = serf::tokio::TokioNetTransport<
    SmolStr,
    serf::tokio::TokioSocketAddrResolver,
    serf::tokio::TokioTcp,
>;
/// Options of [`SerfTransport`].
type SerfTransportOptions = serf::net::NetTransportOptions<
    SmolStr,
    serf::tokio::TokioSocketAddrResolver,
    serf::tokio::TokioTcp,
>;
/// The serf delegate we run (serf's default).
type SerfDelegate = serf::DefaultDelegate<SerfTransport>;
/// One running serf instance.
type Serf = serf::Serf<SerfTransport, SerfDelegate>;
/// Errors returned by [`Serf`].
type SerfError = serf::error::Error<SerfTransport, SerfDelegate>;
/// A member as serf reports it.
type SerfMember = serf::types::Member<SmolStr, SocketAddr>;
/// The receiving end of serf's event channel.
type SerfEvents = serf::event::EventSubscriber<SerfTransport, SerfDelegate>;

// Handles and errors cross tasks and end up in `anyhow` errors.
const _: () = {
    const fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<SerfMembership>();
    assert_send_sync::<MembershipError>();
};

/// Tag carrying our `u64` node id.
pub const TAG_NODE_ID: &str = "node_id";
/// Tag carrying the node's gRPC address (`host:port`).
pub const TAG_GRPC_ADDR: &str = "grpc_addr";
/// Longest accepted `grpc_addr`: tags must fit in serf's 512-byte node metadata.
pub const MAX_GRPC_ADDR_BYTES: usize = 256;
/// Capacity of the event channel returned by [`Membership::subscribe`].
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;
/// How often the background task re-reads serf's member list even without events.
const MEMBERS_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// Longest time one seed's DNS lookup may take before it counts as unresolvable.
const SEED_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// What gossip says about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Our node id (from the `node_id` tag).
    pub node_id: u64,
    /// Where the node serves gRPC (from the `grpc_addr` tag).
    pub grpc_addr: String,
    /// Where the node gossips (its advertised address).
    pub gossip_addr: SocketAddr,
    /// Liveness as gossip sees it.
    pub status: MemberStatus,
}

/// Liveness of a member as gossip sees it.
///
/// serf does not surface SWIM's "suspect" state: a suspected node stays `Alive` until the
/// suspicion times out and it becomes `Failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberStatus {
    /// Answering probes.
    Alive,
    /// Announced a graceful leave that has not completed yet.
    Leaving,
    /// Left gracefully.
    Left,
    /// Stopped answering probes without leaving.
    Failed,
}

/// A change in membership, one per member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A node joined (or came back after failing or leaving).
    Joined(Member),
    /// A node changed its tags (for example its gRPC address).
    Updated(Member),
    /// A node stopped answering probes.
    Failed(Member),
    /// A node left gracefully.
    Left(Member),
    /// A failed or left node was forgotten after its reconnect or tombstone timeout.
    Reaped(Member),
}

impl MembershipEvent {
    /// The member the event is about.
    pub fn member(&self) -> &Member {
        match self {
            Self::Joined(m)
            | Self::Updated(m)
            | Self::Failed(m)
            | Self::Left(m)
            | Self::Reaped(m) => m,
        }
    }
}

/// Why a membership operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The configuration cannot work; the message says which field and why.
    #[error("invalid gossip configuration: {0}")]
    InvalidConfig(String),
    /// The encryption key is not an AES key length.
    #[error("gossip encryption key must be 16, 24 or 32 bytes (AES-128/192/256), got {len} bytes")]
    InvalidEncryptionKey {
        /// Length of the rejected key.
        len: usize,
    },
    /// Our tags do not fit in serf's 512-byte node metadata.
    #[error(
        "gossip tags encode to {encoded_bytes} bytes, over serf's 512-byte limit: shorten grpc_addr"
    )]
    TagsTooLarge {
        /// Encoded size serf computed.
        encoded_bytes: usize,
    },
    /// serf could not start (binding the sockets, most often).
    #[error("failed to start gossip on {bind_addr}")]
    Start {
        /// The address we tried to bind.
        bind_addr: SocketAddr,
        /// What serf reported.
        #[source]
        source: Box<SerfError>,
    },
    /// `join` was called with no seeds.
    #[error("no seeds to join")]
    NoSeeds,
    /// No seed could be resolved to an address.
    #[error("no seed could be resolved: {details}")]
    SeedsUnresolvable {
        /// One `seed: reason` entry per seed.
        details: String,
    },
    /// Every resolved seed address refused or failed the join.
    #[error("failed to join any of {attempted} seed address(es): {details}")]
    JoinFailed {
        /// How many addresses we tried.
        attempted: usize,
        /// One `address: reason` entry per address.
        details: String,
    },
    /// The seed source (for example the EC2 API) failed or found no other node yet.
    #[error("seed discovery: {0}")]
    Discovery(String),
    /// Joining was cancelled by the caller's shutdown signal.
    #[error("join cancelled by shutdown")]
    Cancelled,
    /// The gossip layer is shut down (after `leave` or `shutdown`).
    #[error("gossip is not running")]
    NotRunning,
    /// The graceful leave failed (the node still shuts down).
    #[error("graceful leave failed")]
    Leave(#[source] Box<SerfError>),
    /// Stopping serf failed.
    #[error("gossip shutdown failed")]
    Shutdown(#[source] Box<SerfError>),
}

impl MembershipError {
    /// Whether trying the same operation again later may succeed (seeds not up yet, DNS not ready).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::SeedsUnresolvable { .. } | Self::JoinFailed { .. } | Self::Discovery(_)
        )
    }
}

/// The membership operations callers need; implemented by [`SerfMembership`].
///
/// The futures are `Send` so callers can spawn them; the trait is used generically
/// (`M: Membership`, usually behind an `Arc`), not as `dyn`.
pub trait Membership: Send + Sync + 'static {
    /// Contacts every seed (`host:port`, DNS names allowed) and returns how many addresses answered.
    ///
    /// Seeds resolving to this node itself are skipped; if every seed is this node, the result is
    /// `Ok(0)` (this node starts the cluster). Fails unless at least one other address answered.
    fn join(&self, seeds: &[String])
    -> impl Future<Output = Result<usize, MembershipError>> + Send;

    /// The latest known members, this node included, sorted by node id.
    fn members(&self) -> Vec<Member>;

    /// Changes from now on. A lagging receiver gets `RecvError::Lagged`: re-read [`Self::members`].
    fn subscribe(&self) -> broadcast::Receiver<MembershipEvent>;

    /// Leaves gracefully (others see this node as `Left`), then stops gossiping.
    ///
    /// A no-op once the node has stopped (after an earlier `leave` or a shutdown).
    fn leave(&self) -> impl Future<Output = Result<(), MembershipError>> + Send;

    /// This node's id.
    fn local_node_id(&self) -> u64;
}

/// Gossip timings. [`Default`] is serf's LAN profile; tests on one host use shorter values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipTiming {
    /// Time between failure-detection probes of one random member.
    pub probe_interval: Duration,
    /// How long a probe waits for an ack before asking other nodes to probe indirectly.
    pub probe_timeout: Duration,
    /// Time between gossip rounds (piggybacked broadcasts).
    pub gossip_interval: Duration,
    /// Suspicion timeout multiplier: a suspect is declared failed after about
    /// `suspicion_mult * log10(cluster size) * probe_interval`.
    pub suspicion_mult: usize,
    /// Time between full state syncs (TCP push/pull) with one random member.
    pub push_pull_interval: Duration,
    /// Timeout for TCP connections and stream reads/writes (joins and state syncs).
    pub stream_timeout: Duration,
    /// How long a graceful leave waits for its broadcast to go out.
    pub broadcast_timeout: Duration,
    /// How long a leaving node keeps answering probes so the leave propagates.
    pub leave_propagate_delay: Duration,
    /// Time between runs of the reaper that forgets failed and left members.
    pub reap_interval: Duration,
    /// Time between attempts to reconnect to failed members.
    pub reconnect_interval: Duration,
    /// How long a failed member is kept (and retried) before it is reaped.
    pub reconnect_timeout: Duration,
    /// How long a left member is kept as a tombstone before it is reaped.
    pub tombstone_timeout: Duration,
    /// How long a dead node's name stays bound to its old address. Zero (serf's default) means
    /// a node restarted on a new address is rejected by the others (their join still returns
    /// `Ok`) until they forget the dead entry, about 30 s later.
    pub dead_node_reclaim_time: Duration,
}

impl Default for GossipTiming {
    fn default() -> Self {
        Self::lan()
    }
}

impl GossipTiming {
    /// serf's LAN defaults, read from serf itself.
    pub fn lan() -> Self {
        let serf_opts = serf::Options::new();
        let ml = serf_opts.memberlist_options();
        Self {
            probe_interval: ml.probe_interval(),
            probe_timeout: ml.probe_timeout(),
            gossip_interval: ml.gossip_interval(),
            suspicion_mult: ml.suspicion_mult(),
            push_pull_interval: ml.push_pull_interval(),
            stream_timeout: ml.timeout(),
            broadcast_timeout: serf_opts.broadcast_timeout(),
            leave_propagate_delay: serf_opts.leave_propagate_delay(),
            reap_interval: serf_opts.reap_interval(),
            reconnect_interval: serf_opts.reconnect_interval(),
            reconnect_timeout: serf_opts.reconnect_timeout(),
            tombstone_timeout: serf_opts.tombstone_timeout(),
            dead_node_reclaim_time: ml.dead_node_reclaim_time(),
        }
    }

    /// Short timings for clusters on one host (tests): failures are detected within a few
    /// seconds and a leave completes in well under a second.
    pub fn loopback() -> Self {
        Self {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(100),
            gossip_interval: Duration::from_millis(50),
            suspicion_mult: 2,
            push_pull_interval: Duration::from_secs(1),
            stream_timeout: Duration::from_secs(2),
            broadcast_timeout: Duration::from_secs(2),
            leave_propagate_delay: Duration::from_millis(200),
            dead_node_reclaim_time: Duration::from_secs(1),
            ..Self::lan()
        }
    }
}

/// Backoff between attempts of [`join_with_retry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinBackoff {
    /// Delay after the first failed attempt.
    pub initial: Duration,
    /// Upper bound of the delay (it doubles after each failure).
    pub max: Duration,
}

impl Default for JoinBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

/// Configuration of [`SerfMembership`].
#[derive(Clone)]
pub struct GossipConfig {
    /// Our node id; the serf node name is `node-<id>`.
    pub node_id: u64,
    /// UDP and TCP address to bind; port 0 picks a free port (read it with `bound_addr`).
    pub bind_addr: SocketAddr,
    /// Address other nodes should use, when it differs from the bound one (NAT, 0.0.0.0);
    /// port 0 means the bound port. Requires a non-zero bind port. Without it, a 0.0.0.0 bind
    /// advertises the first private IP of the host.
    pub advertise_addr: Option<SocketAddr>,
    /// Our gRPC address (`host:port`), gossiped in the `grpc_addr` tag.
    pub grpc_addr: String,
    /// Shared AES key (16, 24 or 32 bytes); `None` gossips in plaintext.
    pub encryption_key: Option<Vec<u8>>,
    /// Probe, gossip and reaping timings.
    pub timing: GossipTiming,
}

impl std::fmt::Debug for GossipConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key itself.
        f.debug_struct("GossipConfig")
            .field("node_id", &self.node_id)
            .field("bind_addr", &self.bind_addr)
            .field("advertise_addr", &self.advertise_addr)
            .field("grpc_addr", &self.grpc_addr)
            .field(
                "encryption_key",
                &self.encryption_key.as_ref().map(|_| "<redacted>"),
            )
            .field("timing", &self.timing)
            .finish()
    }
}

impl GossipConfig {
    /// A configuration with no advertise override, no encryption and LAN timings.
    pub fn new(node_id: u64, bind_addr: SocketAddr, grpc_addr: impl Into<String>) -> Self {
        Self {
            node_id,
            bind_addr,
            advertise_addr: None,
            grpc_addr: grpc_addr.into(),
            encryption_key: None,
            timing: GossipTiming::lan(),
        }
    }
}

/// The serf node name for our node id.
pub fn node_name(node_id: u64) -> String {
    format!("node-{node_id}")
}

/// Our node id from a serf node name written by [`node_name`].
fn node_id_from_name(name: &str) -> Option<u64> {
    name.strip_prefix("node-")?.parse().ok()
}

/// Builds serf's memberlist options: timings, and all four encryption settings when keyed.
fn memberlist_options(timing: &GossipTiming, key: Option<SecretKey>) -> serf::MemberlistOptions {
    let opts = serf::MemberlistOptions::lan()
        .with_probe_interval(timing.probe_interval)
        .with_probe_timeout(timing.probe_timeout)
        .with_gossip_interval(timing.gossip_interval)
        .with_suspicion_mult(timing.suspicion_mult)
        .with_push_pull_interval(timing.push_pull_interval)
        .with_timeout(timing.stream_timeout)
        .with_dead_node_reclaim_time(timing.dead_node_reclaim_time);
    match key {
        // serf 0.5.2 only encrypts when the key, the algorithm AND verify-outgoing are all set;
        // with any one missing it sends plaintext without a warning. Verify-incoming makes it
        // drop plaintext and wrongly keyed messages instead of accepting them.
        Some(key) => opts
            .with_primary_key(key)
            .with_encryption_algo(EncryptionAlgorithm::NoPadding)
            .with_gossip_verify_outgoing(true)
            .with_gossip_verify_incoming(true),
        None => opts,
    }
}

/// Checks the configuration and returns the address to advertise, if overridden.
fn validate(config: &GossipConfig) -> Result<Option<SocketAddr>, MembershipError> {
    if config.grpc_addr.is_empty() {
        return Err(MembershipError::InvalidConfig(
            "grpc_addr must not be empty".into(),
        ));
    }
    if config.grpc_addr.len() > MAX_GRPC_ADDR_BYTES {
        return Err(MembershipError::InvalidConfig(format!(
            "grpc_addr is {} bytes, at most {MAX_GRPC_ADDR_BYTES} fit in gossip tags",
            config.grpc_addr.len()
        )));
    }
    if config.timing.probe_interval.is_zero() || config.timing.gossip_interval.is_zero() {
        return Err(MembershipError::InvalidConfig(
            "probe_interval and gossip_interval must be positive".into(),
        ));
    }
    match config.advertise_addr {
        None => Ok(None),
        Some(_) if config.bind_addr.port() == 0 => Err(MembershipError::InvalidConfig(
            "advertise_addr needs a fixed bind port (bind_addr port is 0)".into(),
        )),
        Some(adv) if adv.port() == 0 => {
            Ok(Some(SocketAddr::new(adv.ip(), config.bind_addr.port())))
        }
        Some(adv) => Ok(Some(adv)),
    }
}

/// Converts a serf member; `None` for nodes that are not ours or in a state we do not report.
fn to_member(m: &SerfMember) -> Option<Member> {
    let tags = m.tags();
    let node_id = tags
        .get(TAG_NODE_ID)
        .and_then(|v| v.parse().ok())
        .or_else(|| node_id_from_name(m.node().id()));
    let Some(node_id) = node_id else {
        tracing::debug!(name = %m.node().id(), "gossip member without a node id, ignored");
        return None;
    };
    let Some(grpc_addr) = tags.get(TAG_GRPC_ADDR) else {
        tracing::debug!(node_id, "gossip member without a grpc_addr tag, ignored");
        return None;
    };
    let status = match m.status() {
        serf::types::MemberStatus::Alive => MemberStatus::Alive,
        serf::types::MemberStatus::Leaving => MemberStatus::Leaving,
        serf::types::MemberStatus::Left => MemberStatus::Left,
        serf::types::MemberStatus::Failed => MemberStatus::Failed,
        other => {
            tracing::debug!(node_id, status = %other, "gossip member in an unreported state");
            return None;
        }
    };
    Some(Member {
        node_id,
        grpc_addr: grpc_addr.to_string(),
        gossip_addr: *m.node().address(),
        status,
    })
}

/// Gossip membership on serf (SWIM over UDP and TCP).
///
/// Not `Clone`: share it behind an `Arc`. Dropping it without [`Membership::leave`] stops gossip
/// abruptly (the others report this node as failed).
pub struct SerfMembership {
    /// The running serf instance.
    serf: Serf,
    /// Our node id.
    node_id: u64,
    /// The address the gossip sockets are bound to (port resolved when 0 was asked).
    bound_addr: SocketAddr,
    /// The address other nodes use to reach us.
    advertise_addr: SocketAddr,
    /// Latest member list, refreshed by the event task.
    members: Arc<RwLock<Vec<Member>>>,
    /// Sender side of [`Membership::subscribe`].
    events: broadcast::Sender<MembershipEvent>,
    /// Converts serf events into ours; ends when serf shuts down.
    event_task: JoinHandle<()>,
    /// Set once `leave` or `shutdown` started.
    stopped: AtomicBool,
}

impl std::fmt::Debug for SerfMembership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerfMembership")
            .field("node_id", &self.node_id)
            .field("bound_addr", &self.bound_addr)
            .field("advertise_addr", &self.advertise_addr)
            .finish_non_exhaustive()
    }
}

impl SerfMembership {
    /// Binds the gossip sockets and starts serf; the node is alone until it joins.
    pub async fn start(config: GossipConfig) -> Result<Self, MembershipError> {
        let advertise = validate(&config)?;
        let key = config
            .encryption_key
            .as_deref()
            .map(|k| {
                SecretKey::try_from(k)
                    .map_err(|_| MembershipError::InvalidEncryptionKey { len: k.len() })
            })
            .transpose()?;
        let encrypted = key.is_some();

        let name = node_name(config.node_id);
        let mut transport = SerfTransportOptions::new(SmolStr::new(&name));
        transport.add_bind_address(config.bind_addr);
        if let Some(adv) = advertise {
            transport = transport.with_advertise_address(adv);
        }

        let timing = &config.timing;
        let opts = serf::Options::new()
            .with_tags(
                [
                    (TAG_NODE_ID, config.node_id.to_string()),
                    (TAG_GRPC_ADDR, config.grpc_addr.clone()),
                ]
                .into_iter(),
            )
            .with_broadcast_timeout(timing.broadcast_timeout)
            .with_leave_propagate_delay(timing.leave_propagate_delay)
            .with_reap_interval(timing.reap_interval)
            .with_reconnect_interval(timing.reconnect_interval)
            .with_reconnect_timeout(timing.reconnect_timeout)
            .with_tombstone_timeout(timing.tombstone_timeout)
            .with_memberlist_options(memberlist_options(timing, key));

        // Unbounded on purpose: serf sends events while holding its member-table lock, and our
        // task reads that table; a full bounded channel would deadlock the two.
        let (producer, subscriber) = EventProducer::unbounded();
        let serf = Serf::with_event_producer(transport, opts, producer)
            .await
            .map_err(|e| match e {
                serf::error::Error::Serf(serf::error::SerfError::TagsTooLarge(n)) => {
                    MembershipError::TagsTooLarge { encoded_bytes: n }
                }
                other => MembershipError::Start {
                    bind_addr: config.bind_addr,
                    source: Box::new(other),
                },
            })?;

        let advertise_addr = *serf.advertise_node().address();
        let bound_addr = if config.bind_addr.port() == 0 {
            // Without an override the advertised address carries the port the OS picked.
            SocketAddr::new(config.bind_addr.ip(), advertise_addr.port())
        } else {
            config.bind_addr
        };

        let members = Arc::new(RwLock::new(Vec::new()));
        refresh_members(&serf, &members).await;
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let event_task = tokio::spawn(run_event_loop(
            serf.clone(),
            subscriber,
            members.clone(),
            events.clone(),
        ));

        tracing::info!(
            node_id = config.node_id,
            %bound_addr,
            %advertise_addr,
            encrypted,
            "gossip started"
        );
        Ok(Self {
            serf,
            node_id: config.node_id,
            bound_addr,
            advertise_addr,
            members,
            events,
            event_task,
            stopped: AtomicBool::new(false),
        })
    }

    /// The address the gossip UDP and TCP sockets are bound to (the real port if 0 was asked).
    pub fn bound_addr(&self) -> SocketAddr {
        self.bound_addr
    }

    /// The address other nodes use to reach this node.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise_addr
    }

    /// Whether gossip is encrypted (key, algorithm and verify-outgoing all in effect).
    pub fn encryption_enabled(&self) -> bool {
        self.serf.encryption_enabled()
    }

    /// Stops gossiping at once, without telling anyone: the others will report this node failed.
    pub async fn shutdown(&self) -> Result<(), MembershipError> {
        self.stopped.store(true, Ordering::SeqCst);
        self.serf
            .shutdown()
            .await
            .map_err(|e| MembershipError::Shutdown(Box::new(e)))
    }

    /// Whether a resolved seed address is this node.
    fn is_self(&self, addr: SocketAddr) -> bool {
        addr == self.advertise_addr
            || addr == self.bound_addr
            || (self.bound_addr.ip().is_unspecified()
                && addr.ip().is_loopback()
                && addr.port() == self.bound_addr.port())
    }

    /// Resolves seeds to distinct addresses; fails only if none resolves.
    async fn resolve_seeds(seeds: &[String]) -> Result<Vec<SocketAddr>, MembershipError> {
        let lookups = seeds.iter().map(|seed| async move {
            let result =
                tokio::time::timeout(SEED_LOOKUP_TIMEOUT, tokio::net::lookup_host(seed.as_str()))
                    .await;
            let result = match result {
                Ok(Ok(addrs)) => Ok(addrs.collect::<Vec<_>>()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("lookup timed out after {SEED_LOOKUP_TIMEOUT:?}")),
            };
            (seed, result)
        });
        let mut seen = HashSet::new();
        let mut addrs = Vec::new();
        let mut failures = Vec::new();
        for (seed, result) in join_all(lookups).await {
            match result {
                Ok(resolved) if resolved.is_empty() => {
                    failures.push(format!("{seed}: resolved to no address"));
                }
                Ok(resolved) => {
                    for addr in resolved {
                        if seen.insert(addr) {
                            addrs.push(addr);
                        }
                    }
                }
                Err(reason) => {
                    tracing::debug!(%seed, %reason, "gossip seed did not resolve");
                    failures.push(format!("{seed}: {reason}"));
                }
            }
        }
        if addrs.is_empty() {
            return Err(MembershipError::SeedsUnresolvable {
                details: failures.join("; "),
            });
        }
        Ok(addrs)
    }
}

impl Membership for SerfMembership {
    async fn join(&self, seeds: &[String]) -> Result<usize, MembershipError> {
        if seeds.is_empty() {
            return Err(MembershipError::NoSeeds);
        }
        if self.stopped.load(Ordering::SeqCst) {
            return Err(MembershipError::NotRunning);
        }
        let addrs = Self::resolve_seeds(seeds).await?;
        let peers: Vec<SocketAddr> = addrs.into_iter().filter(|a| !self.is_self(*a)).collect();
        if peers.is_empty() {
            tracing::info!(
                node_id = self.node_id,
                "every gossip seed is this node: starting a cluster"
            );
            return Ok(0);
        }
        // One address at a time: serf serialises joins anyway, and its `join_many` future is not
        // `Send` (it holds a `RefCell` borrow across awaits).
        let mut joined = 0;
        let mut failures = Vec::new();
        for addr in &peers {
            match self
                .serf
                .join(MaybeResolvedAddress::Resolved(*addr), true)
                .await
            {
                Ok(_) => joined += 1,
                Err(e) => {
                    tracing::debug!(node_id = self.node_id, %addr, error = %e, "gossip join attempt failed");
                    failures.push(format!("{addr}: {e}"));
                }
            }
        }
        if joined == 0 {
            return Err(MembershipError::JoinFailed {
                attempted: peers.len(),
                details: failures.join("; "),
            });
        }
        if !failures.is_empty() {
            tracing::warn!(
                node_id = self.node_id,
                joined,
                failed = %failures.join("; "),
                "some gossip seeds did not answer"
            );
        }
        tracing::info!(node_id = self.node_id, joined, "joined gossip cluster");
        Ok(joined)
    }

    fn members(&self) -> Vec<Member> {
        self.members.read().clone()
    }

    fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }

    async fn leave(&self) -> Result<(), MembershipError> {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        tracing::info!(node_id = self.node_id, "leaving gossip cluster");
        let left = self.serf.leave().await;
        let shut = self.serf.shutdown().await;
        left.map_err(|e| MembershipError::Leave(Box::new(e)))?;
        shut.map_err(|e| MembershipError::Shutdown(Box::new(e)))
    }

    fn local_node_id(&self) -> u64 {
        self.node_id
    }
}

impl Drop for SerfMembership {
    fn drop(&mut self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // serf's tasks keep it alive after the handle is gone; stop them (no leave).
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let serf = self.serf.clone();
                let node_id = self.node_id;
                handle.spawn(async move {
                    if let Err(e) = serf.shutdown().await {
                        tracing::warn!(node_id, error = %e, "gossip shutdown on drop failed");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(
                    node_id = self.node_id,
                    "gossip dropped outside a tokio runtime: it keeps running until the process exits"
                );
                self.event_task.abort();
            }
        }
    }
}

/// Re-reads serf's member table into our snapshot.
async fn refresh_members(serf: &Serf, members: &RwLock<Vec<Member>>) {
    let serf_members = serf.members().await;
    let mut list: Vec<Member> = serf_members.iter().filter_map(to_member).collect();
    list.sort_by_key(|m| m.node_id);
    *members.write() = list;
}

/// Turns serf events into [`MembershipEvent`]s and keeps the member snapshot fresh.
async fn run_event_loop(
    serf: Serf,
    subscriber: SerfEvents,
    members: Arc<RwLock<Vec<Member>>>,
    events: broadcast::Sender<MembershipEvent>,
) {
    let shutdown = serf.shutdown_rx();
    let mut refresh = tokio::time::interval(MEMBERS_REFRESH_INTERVAL);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Not `StreamExt::next`: serf 0.5.2's `Stream` impl returns `Pending` without a wake-up
        // when it skips an internal query event, which can stall the stream for good.
        tokio::select! {
            event = subscriber.recv() => {
                let Ok(event) = event else { break };
                let Event::Member(event) = event else { continue };
                refresh_members(&serf, &members).await;
                for m in event.members() {
                    let Some(member) = to_member(m) else { continue };
                    tracing::debug!(
                        node_id = member.node_id,
                        gossip_addr = %member.gossip_addr,
                        event = %event.ty(),
                        "gossip membership change"
                    );
                    let ours = match event.ty() {
                        MemberEventType::Join => MembershipEvent::Joined(member),
                        MemberEventType::Update => MembershipEvent::Updated(member),
                        MemberEventType::Failed => MembershipEvent::Failed(member),
                        MemberEventType::Leave => MembershipEvent::Left(member),
                        MemberEventType::Reap => MembershipEvent::Reaped(member),
                    };
                    // No receiver is fine: nobody subscribed yet.
                    let _ = events.send(ours);
                }
            }
            _ = shutdown.recv() => break,
            _ = refresh.tick() => refresh_members(&serf, &members).await,
        }
    }
    tracing::debug!("gossip event loop stopped");
}

/// Joins through `seeds`, retrying with jittered exponential backoff until one answers.
///
/// Returns what [`Membership::join`] returned on success, its error if it is not retryable, or
/// [`MembershipError::Cancelled`] when `shutdown` completes first.
pub async fn join_with_retry<M: Membership>(
    membership: &M,
    seeds: &[String],
    backoff: JoinBackoff,
    shutdown: impl Future<Output = ()>,
) -> Result<usize, MembershipError> {
    join_discovered_with_retry(
        membership,
        || std::future::ready(Ok(seeds.to_vec())),
        backoff,
        shutdown,
    )
    .await
}

/// Like [`join_with_retry`], but asks `discover` for the seeds before every attempt (seeds that
/// come and go, such as the instances of an auto-scaling group). A discovery failure is
/// retried like a failed join.
pub async fn join_discovered_with_retry<M, D, F>(
    membership: &M,
    mut discover: D,
    backoff: JoinBackoff,
    shutdown: impl Future<Output = ()>,
) -> Result<usize, MembershipError>
where
    M: Membership,
    D: FnMut() -> F,
    F: Future<Output = Result<Vec<String>, MembershipError>>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let mut delay = backoff.initial;
    let mut attempt: u32 = 1;
    loop {
        let attempt_join = async {
            let seeds = discover().await?;
            membership.join(&seeds).await
        };
        let outcome = tokio::select! {
            outcome = attempt_join => outcome,
            () = &mut shutdown => return Err(MembershipError::Cancelled),
        };
        match outcome {
            Ok(joined) => return Ok(joined),
            Err(e) if e.is_retryable() => {
                // Wait between half and all of the delay, so nodes started together spread out.
                let half = delay / 2;
                let jitter = half.mul_f64(fastrand::f64());
                let wait = half + jitter;
                tracing::info!(
                    node_id = membership.local_node_id(),
                    attempt,
                    retry_in_ms = wait.as_millis() as u64,
                    error = %e,
                    "gossip join failed, retrying"
                );
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = &mut shutdown => return Err(MembershipError::Cancelled),
                }
                delay = (delay * 2).min(backoff.max);
                attempt = attempt.saturating_add(1);
            }
            Err(e) => return Err(e),
        }
    }
}
