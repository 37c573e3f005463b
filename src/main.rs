//! `ordo`: the command line. It parses arguments and dispatches to the libraries; it holds no
//! logic of its own. The node runtime (`ordo serve`, `ordo dev`) arrives with the coordinator.

fn main() {
    println!(
        "ordo {}: the consensus core and its simulator are built; run `cargo run --release -p ordo-core --bin ordo-sim -- --seeds 100`",
        env!("CARGO_PKG_VERSION")
    );
}
