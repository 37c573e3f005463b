//! # ordo-core: Raft (and Multi-Paxos) as deterministic state machines
//!
//! This crate is Ordo's consensus engine. It does no I/O: no sockets, no disk, no clock, no
//! threads, no unseeded randomness (its dependency list and `tests/purity.rs` enforce that).
//! Everything that touches the world lives in a driver — `ordo-node`'s `Node`, run by the
//! coordinator's runtime or by the simulator (`ordo-sim`) — that feeds the core **inputs** and
//! carries out its **outputs**.
//! The same code therefore runs in production and under the seeded simulator, and any
//! interleaving the simulator finds replays from its seed.
//!
//! ## The driving loop
//!
//! A driver owns one [`Raft`] and runs this loop (the coordinator does it on one task):
//!
//! ```text
//! loop {
//!     wait for the next input:
//!         a tick of the clock            -> raft.tick()
//!         a message from peer p          -> raft.handle_message(p, message)
//!         a client proposal              -> raft.propose(id, payload)
//!         a linearizable read            -> raft.read_index(id)
//!         storage finished a write       -> raft.handle_durable(last_log_id)
//!         an operator's transfer request -> raft.transfer_leadership(target)
//!     while let Some(output) = raft.poll_output() {
//!         carry it out, in order (see the contract below)
//!     }
//! }
//! ```
//!
//! Drain [`Raft::poll_output`] after every input. Append messages are built when the driver
//! polls, so every proposal made since the last poll travels in the same message: a driver
//! that takes all queued proposals before polling batches replication for free.
//!
//! ## The calling contract: what must be durable before what
//!
//! Outputs come in the order they must take effect:
//!
//! 1. [`Output::PersistHardState`] — term and vote. It must be **durable before any later
//!    output is carried out**, above all before any later `Send`: a vote or a term a node has
//!    spoken about must survive its crash, or it could vote twice in one term.
//! 2. [`Output::PersistEntries`] — write these entries, replacing any stored entries from the
//!    first one's index on. These writes may complete **asynchronously** and in a group (one
//!    fsync for many), but they must land **in the order given**. When a write is durable,
//!    report it with [`Raft::handle_durable`] and the id of its last entry. The core never
//!    acknowledges an entry to a leader, nor counts a leader's own copy toward commit, before
//!    that report — so a leader may send appends while its own write is still in flight (Raft
//!    thesis §10.2.1).
//! 3. [`Output::Send`] — best effort. The core tolerates loss, duplication and reordering.
//! 4. [`Output::Apply`] — committed entries that are also durable locally, in index order;
//!    apply them to the state machine before carrying out later outputs.
//! 5. [`Output::ProposalResult`] and [`Output::ReadResult`] — replies. A proposal's result
//!    follows the `Apply` of its entry; a read's result says the state machine has applied
//!    everything the read must see.
//!
//! [`Output::RoleChanged`] is informational (logs, metrics, client redirection).
//!
//! ## What the core implements
//!
//! Raft for a cluster that bootstraps with 1, 3 or 5 voters: elections with randomized timeouts from a
//! seed, **pre-vote** and **check-quorum** (both on by default; a follower that heard from a
//! live leader within the election timeout ignores vote requests), a no-op entry at the start
//! of each term, commit of current-term entries only (Raft §5.4.2), replication pipelined
//! within a bounded window of messages and bytes per follower with probe and replicate modes
//! and conflict-term hints, heartbeats carrying the commit index, **leader transfer**,
//! **linearizable reads** by ReadIndex, back-pressure on uncommitted bytes, snapshot install,
//! and **membership changes** one server at a time (thesis §4.3): learners that receive the log
//! and count toward nothing, promotion once caught up, removal (a removed leader hands over and
//! steps down), a configuration in force from its append, and Ongaro's rules (a change only
//! after the term's first commit, one uncommitted change at a time).
//!
//! ## A second engine
//!
//! [`paxos::MultiPaxos`] is Multi-Paxos behind the same inputs, outputs, message type and
//! durability contract (its module docs describe the protocol). Two differences reach the
//! driver: its durability report counts writes ([`paxos::MultiPaxos::handle_durable_writes`]),
//! because an acceptor's write rewrites every slot after the first one it changes, so two
//! writes may end with the same entry; and it makes no membership changes. [`Engine`] is the
//! boundary a driver holds: either engine behind one set of methods.
//!
//! ## Proof
//!
//! The simulator crate (`coordinator/sim`, `ordo-sim`) runs whole clusters of real nodes, this
//! core inside them, under seeded faults and checks Raft's safety properties on every step; it
//! prints the command that replays any failure.

pub mod engine;
pub mod paxos;
pub mod raft;
pub mod rng;
pub mod state;

pub use engine::Engine;
pub use paxos::MultiPaxos;
pub use raft::{
    AppendResponse, Body, Config, ConfigError, ConflictHint, INDEX_MAX, InvalidMessage,
    LEARNERS_MAX, MEMBER_ADDRESS_BYTES_MAX, MembershipChange, MembershipError, Message, Output,
    ProposalId, ProposalLost, ProposeError, Raft, ReadError, ReadId, RejectHint, ReplicationMode,
    Restored, Role, StartError, Status, TERM_MAX, TransferError, VOTERS_MAX,
};
