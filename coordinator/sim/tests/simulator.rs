//! The simulator as part of `cargo test`: a band of seeds for both cluster sizes, and the
//! replay guarantee. (CI also runs `ordo-sim` over 1,000+ seeds in release mode.)

use ordo_common::EngineKind;
use ordo_sim::{SeedOptions, run_seed};

#[test]
fn a_seed_replays_to_the_identical_trace() {
    for (seed, engine) in [3, 17, 40]
        .into_iter()
        .zip(EngineKind::ALL.into_iter().cycle())
    {
        let first = run_seed(SeedOptions::draw(seed, None).under(engine));
        let second = run_seed(SeedOptions::draw(seed, None).under(engine));
        assert_eq!(first.trace, second.trace, "seed {seed}");
        assert_eq!(
            (first.ticks, first.messages, first.commits),
            (second.ticks, second.messages, second.commits)
        );
        assert_ne!(
            first.trace,
            run_seed(SeedOptions::draw(seed + 1000, None).under(engine)).trace
        );
    }
}

/// 500 seeds of each cluster size under each engine in release builds (`cargo test
/// --release`, what CI runs), 40 in debug builds; `ORDO_SIM_SEEDS` overrides the count per
/// size and engine.
#[test]
fn seeds_pass_on_three_and_five_nodes_under_both_engines() {
    let default = if cfg!(debug_assertions) { 40 } else { 500 };
    let seeds: u64 = std::env::var("ORDO_SIM_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default);
    let mut failures = Vec::new();
    for (nodes, engine) in [3, 5]
        .into_iter()
        .flat_map(|nodes| EngineKind::ALL.map(|engine| (nodes, engine)))
    {
        for seed in 0..seeds {
            let report = run_seed(SeedOptions::draw(seed, Some(nodes)).under(engine));
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
    println!("sim: seeds={} failures={}", 4 * seeds, failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The Multi-Paxos bugs of `ordo_core::paxos::PlantedBug`, planted in every node of the
/// simulated cluster: the checkers must catch each within a band of seeds.
#[test]
fn planted_multi_paxos_bugs_are_caught() {
    use ordo_core::paxos::PlantedBug;
    for plant in [
        PlantedBug::IgnorePromisedValues,
        PlantedBug::AcceptBelowPromise,
        PlantedBug::DecideAcrossBallots,
        PlantedBug::ApplyPastHole,
        PlantedBug::PromiseBeforeDurable,
    ] {
        let caught = (0..200).find_map(|seed| {
            let mut options = SeedOptions::draw(seed, None).under(EngineKind::MultiPaxos);
            options.plant = Some(plant);
            run_seed(options)
                .failure
                .map(|failure| format!("seed {seed}: {failure}"))
        });
        let caught = caught.unwrap_or_else(|| panic!("{plant:?} was not caught in 200 seeds"));
        println!(
            "{plant:?}: {}",
            caught.chars().take(300).collect::<String>()
        );
    }
}
