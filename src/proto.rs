//! Generated gRPC types and services (`proto/logbook/v1/*.proto`), and the descriptor set that
//! gRPC reflection serves.

/// Package `logbook.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("logbook.v1");
}

/// The encoded `FileDescriptorSet` of every logbook proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/logbook_descriptor.bin"));
