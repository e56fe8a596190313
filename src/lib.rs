//! logbook: a replicated, durable commit log (a Kafka-style broker).
//!
//! The house, one module per concern (see `ARCHITECTURE.md` for the intended whole):
//!
//! | module | owns | status |
//! |---|---|---|
//! | [`log`] | segments, mmap index, RecordBatch v2 framing and CRC, recovery, retention, compaction, group commit | built |
//! | [`broker`] | topics and partitions (each a Raft group) on this node, node identity, produce/consume operations | built (single node) |
//! | [`server`] | tonic services (client API, health, reflection), error statuses, graceful shutdown | built |
//! | [`client`] | client library (connect, produce, consume, streams) and the Kafka partitioner | built |
//! | [`cli`] | `topic`, `produce`, `consume` commands | built |
//! | [`config`] | figment layering and validation | built |
//! | [`proto`] | generated gRPC types | built |
//! | [`bench`](mod@bench) | benchmark programs run by `logbook bench ...` | built (`log`, `broker`) |
//! | [`raft`] | openraft type configs, log storage on top of `log`, partition state machine, gRPC network | built |
//! | [`cluster`] | metadata group state machine and replica placement (gossip, controller, replacement: planned) | in progress |
//! | `snapshot` | snapshot manifests, `SnapshotStore` (S3, local dir), restore | planned |
//! | `security` | rustls configs, casbin ACLs, certificate tool | planned |
//! | `telemetry` | tracing, OTLP, metrics | planned |
//!
//! Dependencies run one way: `server`/`cluster` → `raft` → `log`; `snapshot` depends on `log`
//! only; nothing depends on `server`. `main.rs` only parses the command line and wires parts.

pub mod bench;
pub mod broker;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod log;
pub mod proto;
pub mod raft;
pub mod server;
