//! Security: TLS configurations (reloaded when the files change), the caller's identity taken
//! from its certificate, ACLs with casbin, and the built-in certificate tool (rcgen).
//!
//! Identities: the subject of a certificate is its Common Name. Node certificates have
//! `CN=node:<name>` and client certificates `CN=<name>`; only nodes may call the Raft service,
//! and nodes are not subject to ACLs.

pub mod acl;
pub mod caller;
pub mod certs;
pub mod tls;

pub use caller::{ANONYMOUS, Caller, NODE_PREFIX};
