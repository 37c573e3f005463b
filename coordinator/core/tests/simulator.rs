//! The simulator as part of `cargo test`: a band of seeds for both cluster sizes, and the
//! replay guarantee. (CI also runs `ordo-sim` over 1,000+ seeds in release mode.)

use ordo_core::sim::{SeedOptions, run_seed};

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

#[test]
fn seeds_pass_on_three_and_five_nodes() {
    for nodes in [3, 5] {
        for seed in 0..40 {
            let report = run_seed(SeedOptions::draw(seed, Some(nodes)));
            if let Some(failure) = report.failure {
                panic!(
                    "{}: {failure}\nreplay: {}",
                    report.options,
                    report.options.replay_command()
                );
            }
            assert!(
                report.commits > 0,
                "seed {seed} committed nothing: the run proved nothing"
            );
        }
    }
}
