//! Ordo's shared vocabulary.
//!
//! Everything more than one crate must agree on lives here: the ids of the Raft log
//! ([`NodeId`], [`Term`], [`LogIndex`], [`LogId`]), the [`Entry`] that the log stores, the
//! durable [`HardState`], the named limits, and the one module that knows the byte codec
//! ([`codec`]). Nothing here does I/O.

pub mod batch;
pub mod client;
pub mod codec;
pub mod limits;
mod log;

pub use log::{Entry, EntryPayload, HardState, LogId, LogIndex, NodeId, Term};
