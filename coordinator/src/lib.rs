//! Ordo's coordinator node runtime: everything around the consensus core that touches the world.
//!
//! - [`storage`]: the Raft log, hard state, progress and state-machine tables in one redb file,
//!   behind a group-commit writer thread.
//! - [`transport`]: QUIC with mutual TLS for peers and clients; [`clients`]: serving clients
//!   within their budgets.
//! - [`driver`]: the one task that owns the core and carries out its outputs in order.
//! - [`auth`]: who may do what, by certificate identity.
//! - [`config`]: file → environment → flags.
//! - [`node`]: `ordo serve`, wiring the above together; [`certs`]: `ordo certs`.
//! - [`join`]: asking a running cluster for its members (`ordo serve --join`).

pub mod auth;
pub mod certs;
pub mod clients;
pub mod config;
pub mod driver;
pub mod http;
pub mod join;
pub mod node;
pub mod snapshot_transfer;
pub mod storage;
pub mod transport;
