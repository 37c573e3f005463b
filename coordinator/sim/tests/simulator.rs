//! The simulator as part of `cargo test`: a band of seeds for both cluster sizes, and the
//! replay guarantee. (CI also runs `ordo-sim` over 1,000+ seeds in release mode.)

use ordo_sim::{SeedOptions, run_seed};

#[test]
fn a_seed_replays_to_the_identical_trace() {
    for seed in [3, 17, 40] {
        let first = run_seed(SeedOptions::draw(seed, None));
        let second = run_seed(SeedOptions::draw(seed, None));
        assert_eq!(first.trace, second.trace, "seed {seed}");
        assert_eq!(
            (first.ticks, first.messages, first.commits),
            (second.ticks, second.messages, second.commits)
        );
        assert_ne!(
            first.trace,
            run_seed(SeedOptions::draw(seed + 1000, None)).trace
        );
    }
}

/// 500 seeds of each cluster size in release builds (`cargo test --release`, what CI runs),
/// 40 in debug builds; `ORDO_SIM_SEEDS` overrides the count per size.
#[test]
fn seeds_pass_on_three_and_five_nodes() {
    let default = if cfg!(debug_assertions) { 40 } else { 500 };
    let seeds: u64 = std::env::var("ORDO_SIM_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default);
    let mut failures = Vec::new();
    for nodes in [3, 5] {
        for seed in 0..seeds {
            let report = run_seed(SeedOptions::draw(seed, Some(nodes)));
            match report.failure {
                Some(failure) => failures.push(format!(
                    "{}: {failure}\n  replay: {}",
                    report.options,
                    report.options.replay_command()
                )),
                None => assert!(report.commits > 0, "seed {seed} committed nothing"),
            }
        }
    }
    println!("sim: seeds={} failures={}", 2 * seeds, failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
