//! logbook: a replicated, durable commit log (a Kafka-style broker).
//!
//! The house, one module per concern (see `ARCHITECTURE.md` for the intended whole):
//!
//! | module | owns | status |
//! |---|---|---|
//! | [`log`] | segments, mmap index, RecordBatch v2 framing and CRC, recovery, retention, compaction, group commit | built |
//! | [`broker`] | this node's replicas (each a Raft group), the request combiner, the cluster runtime (`broker::node`: metadata group, formation, controller, reconciler, replacement), produce/consume operations | built |
//! | [`server`] | tonic services (client API, health, reflection), TLS accept loop, request layer (authentication, spans, latency), admin HTTP port (`/metrics`, `/healthz`, `/readyz`), error statuses, graceful shutdown | built |
//! | [`client`] | client library (one node, or a cluster with leader routing, replica reads and retries) and the Kafka partitioner | built |
//! | [`cli`] | `topic`, `produce`, `consume` commands | built |
//! | [`admin`] | `snapshot list/inspect/create`, `restore`, `s3-server` commands | built |
//! | [`config`] | figment layering and validation | built |
//! | [`proto`] | generated gRPC types | built |
//! | [`bench`](mod@bench) | benchmark programs run by `logbook bench ...` | built (`log`, `broker`, `cluster`, `snapshot`) |
//! | [`raft`] | openraft type configs, log storage on top of `log`, partition state machine, gRPC network | built |
//! | [`cluster`] | gossip membership (serf), the metadata group's state machine, replica placement | built |
//! | [`snapshot`] | snapshot store (`SnapshotStore`: local directory and S3), manifests, verified downloads, GC, a local S3 server | built (issue 5) |
//! | [`security`] | TLS configs reloaded from disk and the peer connector (rustls), the caller's identity, casbin ACLs, the `logbook certs` tool (rcgen) | built (issue 6) |
//! | [`telemetry`] | tracing subscriber (human/JSON logs, OTLP export), Prometheus metrics registry | built (issue 6) |
//!
//! Dependencies run one way: `server` → `broker` → `cluster`/`raft` → `log`/`snapshot`;
//! `snapshot` depends on `log` only; nothing depends on `server`. `main.rs` only parses the command line and
//! wires parts.

pub mod admin;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod log;
pub mod proto;
pub mod raft;
pub mod security;
pub mod server;
pub mod snapshot;
pub mod telemetry;
