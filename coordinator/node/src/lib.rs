//! # ordo-node: one coordinator's logic, without I/O
//!
//! A [`Node`] is everything a coordinator decides: the consensus core, the batch state machine,
//! which client waits for what, when an answer may go out, and what subscribers may read. It
//! reads no clock, opens no socket or file and draws no unseeded randomness, so the same code
//! runs under the tokio runtime in `ordo-coordinator` and under the seeded simulator in
//! `ordo-sim`, where every interleaving it meets replays from a seed.
//!
//! ## The driving loop
//!
//! A runtime owns one node and runs this loop:
//!
//! ```text
//! loop {
//!     wait for the next input:
//!         a tick of the clock                 -> node.tick()
//!         a message from peer p               -> node.handle_message(p, message)
//!         a client request, named r           -> node.handle_request(r, request)
//!         storage made writes durable         -> node.handle_durable(report)
//!         the operator asks it to stop        -> node.stop()
//!     while let Some(output) = node.poll_output() {
//!         carry it out, in order (see below)
//!     }
//!     if node.is_stopped() { break }
//! }
//! make every write durable, report it, then node.abandon() and drain the replies
//! ```
//!
//! ## The calling contract
//!
//! Outputs come in the order they must take effect:
//!
//! - [`Output::Persist`]: writes land in the order given (write 1, 2, 3, …), each whole or not
//!   at all. A `sync` write must be durable before any later output is carried out: it holds a
//!   term or vote the node is about to act on. Other writes may complete in the background, in
//!   groups; report them with [`Node::handle_durable`], cumulatively.
//! - [`Output::Send`]: best effort; the protocol tolerates loss, duplication and reordering.
//! - [`Output::Reply`]: the answer to one client request. A submitter is told a batch's outcome
//!   as soon as the node applied its entry, which it does only to committed entries (durable on
//!   a majority) that are durable in its own log: the state write recording the apply may still
//!   be in flight, and a restart applies the entry again from the log, deterministically. A
//!   status query is answered linearizably.
//! - [`Output::Servable`]: batches up to this seq are applied and durable here. It may follow
//!   the reply for seq s by one state write: a subscriber asking for s then waits that long.
//! - [`Output::Halt`]: the node found what it must not go on with (a corrupt committed entry);
//!   stop it, and say why.
//!
//! ## Crate map
//!
//! - [`node`]: the [`Node`] and its inputs and outputs.
//! - [`storage`]: the storage contract the node writes through, the rules every store
//!   enforces, the checked record layout, and the in-memory store the simulator runs on.
//! - [`sessions`]: sessions, locks and elections as a node keeps them: a leader's TTL clock,
//!   and the clients waiting for a grant or a leadership change.
//! - [`snapshot`]: the snapshot format (the state machine as of an applied entry), the same
//!   bytes on every node for the same index.

pub mod node;
pub mod sessions;
pub mod snapshot;
pub mod storage;

pub use node::{
    Durable, Fault, MemberView, Node, NodeConfig, NodeView, Output, Recovered, RequestId,
    StartError, TopicQuota, WriteId, committed_batch, encode_registered, recovered_tables,
};
