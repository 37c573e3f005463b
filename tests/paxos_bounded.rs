//! The bounded suite (`tests/bounded.rs`) with every node on the Multi-Paxos engine: the name
//! of this test binary selects it (see `support::test_engine`). Compaction, snapshots to a
//! follower left behind, a full disk, and a backup restored onto a Raft cluster.

#[path = "bounded.rs"]
mod suite;
