//! # ordo-core: Raft without I/O
//!
//! (Crate documentation is written below, once the API settles.)

pub mod raft;
pub mod rng;
pub mod sim;

pub use raft::{
    AppendResponse, Body, Config, ConfigError, InvalidMessage, Message, Output, ProposalId,
    ProposalLost, ProposeError, Raft, ReadError, ReadId, ReplicationMode, Restored, Role,
    StartError, Status, TransferError,
};
