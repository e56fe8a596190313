//! Client library: connects to a broker over gRPC; the CLI and the benchmarks use it.

mod partitioner;

pub use partitioner::{kafka_murmur2, partition_for_key};
