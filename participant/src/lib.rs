//! Ordo's participant SDK.
//!
//! [`connection`] holds the QUIC + mutual-TLS connection to one coordinator and the
//! request/response exchange on it. The batch client (submit, status, subscribe) and the
//! exactly-once applier build on it.

pub mod connection;

pub use connection::{ClientTls, ConnectError, NodeConnection};
