//! `ordo-sim`: runs simulator seeds and reports failures with the command that replays them.
//!
//! ```text
//! cargo run --release -p ordo-sim -- --seeds 1000 [--start 0] [--nodes 3|5]
//!     [--engine raft|multi-paxos|both] [--verbose]
//! ```
//!
//! By default every seed runs under both consensus engines, with the same workload and faults.
//!
//! Every node's invariant checks are on in every build profile. The runner reads no clock
//! either (the purity test covers every source file of the crate); time a run with `time`.

use ordo_common::EngineKind;
use ordo_sim::{SeedOptions, run_seed};
use std::process::ExitCode;

struct Arguments {
    seeds: u64,
    start: u64,
    nodes: Option<usize>,
    engines: Vec<EngineKind>,
    verbose: bool,
}

fn parse() -> Result<Arguments, String> {
    let mut arguments = Arguments {
        seeds: 100,
        start: 0,
        nodes: None,
        engines: EngineKind::ALL.to_vec(),
        verbose: false,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = |name: &str| {
            words
                .next()
                .ok_or_else(|| format!("{name} needs a value"))?
                .parse::<u64>()
                .map_err(|error| format!("{name}: {error}"))
        };
        match word.as_str() {
            "--seeds" => arguments.seeds = value("--seeds")?,
            "--start" => arguments.start = value("--start")?,
            "--nodes" => match value("--nodes")? {
                nodes @ (3 | 5) => arguments.nodes = Some(nodes as usize),
                other => return Err(format!("--nodes must be 3 or 5, not {other}")),
            },
            "--engine" => {
                let name = words.next().ok_or("--engine needs a value")?;
                arguments.engines = match EngineKind::parse(&name) {
                    Some(engine) => vec![engine],
                    None if name == "both" => EngineKind::ALL.to_vec(),
                    None => {
                        return Err(format!(
                            "--engine must be raft, multi-paxos or both, not {name:?}"
                        ));
                    }
                };
            }
            "--verbose" | "-v" => arguments.verbose = true,
            "--help" | "-h" => {
                return Err("usage: ordo-sim --seeds N [--start S] [--nodes 3|5] \
                     [--engine raft|multi-paxos|both] [--verbose]"
                    .into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(arguments)
}

fn main() -> ExitCode {
    let arguments = match parse() {
        Ok(arguments) => arguments,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // Panics are caught per seed and reported; keep the default hook quiet about them.
    std::panic::set_hook(Box::new(|_| {}));
    let (mut failures, mut ticks, mut messages, mut commits, mut acknowledged, mut reads) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut batches, mut rejected, mut subscribed) = (0u64, 0u64, 0u64);
    let (mut duplicates, mut conflicts, mut beyond, mut evicted) = (0u64, 0u64, 0u64, 0u64);
    let (mut snapshots, mut installs, mut read_back) = (0u64, 0u64, 0u64);
    let (mut granted, mut expired, mut held, mut configs) = (0u64, 0u64, 0u64, 0u64);
    let runs = (arguments.start..arguments.start + arguments.seeds)
        .flat_map(|seed| arguments.engines.iter().map(move |engine| (seed, *engine)));
    let mut per_engine: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
    for (seed, engine) in runs {
        let options = SeedOptions::draw(seed, arguments.nodes).under(engine);
        if arguments.verbose || arguments.seeds == 1 {
            println!("seed {options}");
        }
        let report = run_seed(options);
        ticks += report.ticks;
        messages += report.messages;
        commits += report.commits;
        acknowledged += report.acknowledged;
        reads += report.reads;
        batches += report.batches_committed;
        rejected += report.batches_rejected;
        subscribed += report.subscribed;
        duplicates += report.duplicates;
        conflicts += report.conflicts;
        beyond += report.beyond_horizon;
        evicted += report.evicted;
        snapshots += report.snapshots_sent;
        installs += report.snapshots_installed;
        read_back += report.entries_read_back;
        granted += report.locks_granted;
        expired += report.sessions_expired;
        held += report.held_answers;
        configs += report.configs_committed;
        if arguments.verbose || arguments.seeds == 1 {
            println!(
                "  ticks={} messages={} commits={} acknowledged={} batches={} statuses={} subscribed={} trace={:016x}",
                report.ticks,
                report.messages,
                report.commits,
                report.acknowledged,
                report.batches_committed,
                report.reads,
                report.subscribed,
                report.trace
            );
        }
        let tally = per_engine.entry(engine.name()).or_default();
        tally.0 += 1;
        if report.failure.is_some() {
            tally.1 += 1;
        }
        if let Some(failure) = &report.failure {
            failures += 1;
            println!("FAIL {}: {failure}", report.options);
            println!("  replay: {}", report.options.replay_command());
        }
    }
    println!(
        "sim: seeds={} failures={failures} ticks={ticks} messages={messages} commits={commits} acknowledged={acknowledged} statuses={reads} batches={batches} rejected={rejected} subscribed={subscribed} duplicates={duplicates} conflicts={conflicts} beyond_horizon={beyond} evicted={evicted} snapshots_sent={snapshots} installed={installs} read_back={read_back} lock_grants={granted} expiries={expired} held_answers={held} membership_changes={configs}",
        arguments.seeds * arguments.engines.len() as u64,
    );
    for (engine, (runs, failed)) in &per_engine {
        println!("sim: engine={engine} seeds={runs} failures={failed}");
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
