//! The batches suite (`tests/batches.rs`) with every node on the Multi-Paxos engine: the name of
//! this test binary selects it (see `support::test_engine`).

#[path = "batches.rs"]
mod suite;
