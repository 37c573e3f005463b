//! The fault suite (`tests/faults.rs`) with every node on the Multi-Paxos engine: the name of
//! this test binary selects it (see `support::test_engine`). Same runs, same history checker,
//! same arguments (`cargo test --release --test paxos_faults -- sigstop --seed 42`).

#[path = "faults.rs"]
mod suite;

fn main() {
    suite::main();
}
