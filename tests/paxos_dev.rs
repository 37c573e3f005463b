//! The `ordo dev` suite (`tests/dev.rs`) on the Multi-Paxos engine: the name of this test binary
//! selects it (see `support::test_engine`), and the demo passes `--consensus-engine` to `ordo dev`.

#[path = "dev.rs"]
mod suite;
