//! Who is calling: the subject named by a connection's client certificate.

use std::net::SocketAddr;

/// The caller of one request, put in the request's extensions by the server's request layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The certificate's subject (its Common Name); `None` without TLS or without a
    /// certificate.
    pub subject: Option<String>,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
}

pub use super::certs::NODE_PREFIX;

/// Subject name used in logs and ACL checks for a caller without a certificate.
pub const ANONYMOUS: &str = "anonymous";

impl Caller {
    /// The subject, or `anonymous`.
    pub fn name(&self) -> &str {
        self.subject.as_deref().unwrap_or(ANONYMOUS)
    }

    /// Whether the caller presented a node certificate (`CN=node:...`).
    pub fn is_node(&self) -> bool {
        self.subject
            .as_deref()
            .is_some_and(|s| s.starts_with(NODE_PREFIX))
    }
}
