//! The observability suite (`tests/observe.rs`) with every node on the Multi-Paxos engine: the
//! name of this test binary selects it (see `support::test_engine`). Metrics, health checks and
//! the console in a real browser, on a cluster that reports `"engine": "multi-paxos"`.

#[path = "observe.rs"]
mod suite;
