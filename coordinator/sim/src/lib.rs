//! # ordo-sim: whole clusters of real nodes, under seeded faults
//!
//! The simulator runs N real [`ordo_node::Node`]s — the consensus core, the batch state machine,
//! the client bookkeeping, the apply and reply paths, exactly as `ordo serve` runs them — over
//! a simulated network that loses, duplicates, delays and reorders messages and partitions the
//! cluster, and over simulated disks that hold the real in-memory store, complete writes late,
//! report them late and in groups, and crash with writes half done. It owns the clock and every
//! random draw, so any interleaving it finds replays from its seed: it prints the command.
//!
//! ## Crate map
//!
//! - [`swarm`]: one seed end to end — draw the fault rates, run a safety phase with the faults on
//!   and a liveness phase with them healed, report.
//! - [`cluster`]: the cluster harness: nodes, disks, network, clients and subscribers, and the
//!   hooks that show every output to the checkers.
//! - [`checker`]: the consensus engine's safety properties on every step (Raft's or
//!   Multi-Paxos's), and the raw-proposal oracle.
//! - [`batches`]: the batch oracle, a reference model of the batch state machine that checks
//!   every node's applies, answers, status reads and subscriptions.
//! - [`locks`]: the lock oracle, a reference model of sessions, locks and elections (mutual
//!   exclusion, increasing tokens, expiry only after a TTL, fencing at commit).
//! - [`network`], [`disk`]: the simulated world.
//!
//! The same harness runs the scripted scenarios and the one-test-per-rule suite in `tests/`.

pub mod batches;
pub mod checker;
pub mod cluster;
pub mod disk;
pub mod locks;
pub mod network;
pub mod swarm;

pub use swarm::{RunReport, SeedOptions, run_seed};
