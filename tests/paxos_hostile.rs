//! The hostile-client suite (`tests/hostile.rs`) with every node on the Multi-Paxos engine:
//! the name of this test binary selects it (see `support::test_engine`). Floods, oversized
//! batches and slow clients meet the same limits whichever engine orders the log.

#[path = "hostile.rs"]
mod suite;
