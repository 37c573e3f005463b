//! Ordo's coordinator node runtime.
//!
//! Today this crate holds the node's durable storage ([`storage`]): the Raft log, the Raft hard
//! state, commit/apply progress and the replicated state machine's tables, in one redb file, with
//! a group-commit writer thread in front of it. The driver, transport and config modules join it
//! later; none of them may do disk I/O except through [`storage::LogStore`].

pub mod storage;
