//! Crash test with real processes: nothing reported durable is ever lost to a SIGKILL.
//!
//! The parent test re-runs this test binary as a child process (selecting the `crash_child`
//! test, with an environment variable naming the data directory). The child opens the redb
//! store, writes through the group commit writer as fast as it can (appends of varying size,
//! term and vote changes, commits and applies with state machine table updates, with retention
//! compacting the log) and prints a `durable ...` line each time the writer reports a group
//! durable. The parent reads the pipe, SIGKILLs the child at a random moment, reopens the store
//! and checks that every entry reported durable is present and intact with no hole, and that the
//! hard state, commit index, apply progress and tables are at least what was reported.
//!
//! `ORDO_CRASH_SEED` replays a run (the seed is printed); `ORDO_CRASH_CYCLES` sets the number of
//! kill/reopen cycles (default 100). A SIGKILL loses what the process had not handed to the
//! kernel; it does not lose the kernel's page cache, so this test checks the commit protocol, not
//! the disk's honesty about fsync.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{Rng, entries, entry, is_intact, seed_from_env};
use ordo_common::{HardState, LogId};
use ordo_coordinator::storage::{
    GroupCommitWriter, LogRead, RedbLogStore, RedbOptions, Retention, StateUpdate, VerifyOnOpen,
    WriteBatch, WriterEvent,
};

const CHILD_DIR_ENV: &str = "ORDO_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "ORDO_CRASH_CHILD_SEED";
const CYCLES_DEFAULT: u64 = 100;
const TOPIC: &str = "crash";
const NODE: u64 = 1;
/// Longest wait for the child to open the store or to report progress.
const CHILD_WAIT: Duration = Duration::from_secs(60);

fn retention() -> Retention {
    Retention {
        entries_max: std::num::NonZeroU64::new(5000),
        bytes_max: std::num::NonZeroU64::new(16 << 20),
        ..Retention::default()
    }
}

fn store_path(dir: &Path) -> PathBuf {
    dir.join("log.redb")
}

/// What the child reported durable, field by field. Every field only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Durable {
    last: LogId,
    hard_state: HardState,
    committed: u64,
    applied: u64,
}

impl Durable {
    fn line(&self) -> String {
        format!(
            "durable {} {} {} {} {} {}",
            self.last.index,
            self.last.term,
            self.hard_state.term,
            self.hard_state.vote.unwrap_or(0),
            self.committed,
            self.applied
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let fields: Vec<u64> = line[line.find("durable ")?..]
            .strip_prefix("durable ")?
            .split(' ')
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        let [index, term, hard_term, vote, committed, applied] = fields[..] else {
            return None;
        };
        Some(Self {
            last: LogId::new(term, index),
            hard_state: HardState {
                term: hard_term,
                vote: (vote != 0).then_some(vote),
            },
            committed,
            applied,
        })
    }
}

#[test]
fn sigkill_never_loses_a_durable_write() {
    if std::env::var_os(CHILD_DIR_ENV).is_some() {
        return;
    }
    let seed = seed_from_env("ORDO_CRASH_SEED");
    let cycles = std::env::var("ORDO_CRASH_CYCLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(CYCLES_DEFAULT);
    println!("crash test: {cycles} cycles (set ORDO_CRASH_CYCLES to change)");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut reported = Durable::default();
    let mut reports_total = 0;
    let started = Instant::now();
    for cycle in 0..cycles {
        let mut child = ChildRun::spawn(dir.path(), rng.next_u64());
        child.wait_until_ready();
        if rng.chance(50) {
            std::thread::sleep(Duration::from_millis(rng.range(0, 25)));
        } else {
            child.wait_for_reports(rng.range(1, 40) as usize);
        }
        let lines = child.kill_and_collect();
        for line in &lines {
            let durable = Durable::parse(line)
                .unwrap_or_else(|| panic!("cycle {cycle}: bad line {line:?} (seed {seed})"));
            reported = max_durable(reported, durable);
            reports_total += 1;
        }
        verify_after_crash(dir.path(), &reported)
            .unwrap_or_else(|problem| panic!("cycle {cycle} (seed {seed}): {problem}"));
    }
    println!(
        "crash test: {cycles} SIGKILLs, {reports_total} durable reports checked, last durable \
         entry {}, in {:.1?}",
        reported.last,
        started.elapsed()
    );
    assert!(
        reports_total > cycles,
        "the children reported too little to test anything"
    );
}

fn max_durable(a: Durable, b: Durable) -> Durable {
    Durable {
        last: a.last.max(b.last),
        hard_state: if b.hard_state.term >= a.hard_state.term {
            b.hard_state
        } else {
            a.hard_state
        },
        committed: a.committed.max(b.committed),
        applied: a.applied.max(b.applied),
    }
}

/// Reopens the store as a restarted node would and checks it against what was reported.
fn verify_after_crash(dir: &Path, reported: &Durable) -> Result<(), String> {
    let options = RedbOptions {
        retention: retention(),
        verify_on_open: VerifyOnOpen::All,
        ..RedbOptions::default()
    };
    let store = RedbLogStore::open(store_path(dir), options)
        .map_err(|error| format!("the store did not reopen after SIGKILL: {error}"))?;
    let state = store.store_state().map_err(|e| e.to_string())?;
    let (first, last) = (state.log.first_index, state.log.last_index());
    if last < reported.last.index {
        return Err(format!(
            "entry {} was reported durable, but the log ends at {last}",
            reported.last
        ));
    }
    if first > 1 && first - 1 > state.progress.applied.map_or(0, |id| id.index) {
        return Err(format!(
            "entries up to {} were compacted before being applied",
            first - 1
        ));
    }
    if reported.last.index >= first
        && store
            .term_at(reported.last.index)
            .map_err(|e| e.to_string())?
            != reported.last.term
    {
        return Err(format!("entry {} changed its term", reported.last));
    }
    let log = store
        .entries(first, last + 1, u64::MAX)
        .map_err(|error| format!("reading the log failed: {error}"))?;
    if log.len() as u64 != last + 1 - first {
        return Err(format!("read {} entries of [{first}, {}]", log.len(), last));
    }
    if let Some(bad) = log.iter().find(|entry| !is_intact(entry)) {
        return Err(format!("entry {} does not hold its payload", bad.log_id()));
    }
    let hard_state = state.hard_state;
    let reported_hard = reported.hard_state;
    if hard_state.term < reported_hard.term
        || (hard_state.term == reported_hard.term && hard_state.vote != reported_hard.vote)
    {
        return Err(format!(
            "hard state {hard_state:?} is older than reported {reported_hard:?}"
        ));
    }
    let applied = state.progress.applied.map_or(0, |id| id.index);
    if state.progress.committed < reported.committed || applied < reported.applied {
        return Err(format!(
            "progress {:?} is behind reported commit {} / apply {}",
            state.progress, reported.committed, reported.applied
        ));
    }
    // The tables are written in the apply's transaction: they must agree with its progress.
    let offset = store.topic_offset(TOPIC).map_err(|e| e.to_string())?;
    if offset != applied {
        return Err(format!(
            "topic offset {offset} disagrees with the applied index {applied}"
        ));
    }
    if state.last_seq > 0 {
        let index = store
            .batch_index(state.last_seq)
            .map_err(|e| e.to_string())?;
        if index.is_some_and(|index| index != applied) {
            return Err(format!(
                "seq {} names {index:?}, not {applied}",
                state.last_seq
            ));
        }
    }
    Ok(())
}

/// A child process and the lines it printed.
struct ChildRun {
    child: std::process::Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    seen: Vec<String>,
}

impl ChildRun {
    fn spawn(dir: &Path, seed: u64) -> Self {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DIR_ENV, dir)
            .env(CHILD_SEED_ENV, seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let (sender, lines) = channel();
        let stdout = child.stdout.take().expect("child stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut child_stderr = child.stderr.take().expect("child stderr");
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = child_stderr.read_to_string(&mut text);
            if let Ok(mut collected) = collected.lock() {
                *collected = text;
            }
        });
        Self {
            child,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(CHILD_WAIT) {
            Ok(line) => line,
            Err(_) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let stderr = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
                panic!("the child stopped talking; its stderr:\n{stderr}");
            }
        }
    }

    fn wait_until_ready(&mut self) {
        loop {
            let line = self.next_line();
            // libtest prints "test crash_child ... " without a newline before the child runs.
            if line.contains("ready ") {
                return;
            }
            if line.contains("durable ") {
                self.seen.push(line);
            }
        }
    }

    fn wait_for_reports(&mut self, reports: usize) {
        while self.seen.len() < reports {
            let line = self.next_line();
            if line.contains("durable ") {
                self.seen.push(line);
            }
        }
    }

    /// SIGKILLs the child and returns every `durable` line it printed before it died.
    fn kill_and_collect(mut self) -> Vec<String> {
        self.child.kill().expect("SIGKILL the child");
        self.child.wait().expect("reap the child");
        // The pipe closes once the child is dead; the reader thread then ends the channel.
        for line in self.lines.iter() {
            if line.contains("durable ") {
                self.seen.push(line);
            }
        }
        self.seen
    }
}

/// The child: writes as fast as it can until it is killed. Does nothing in a normal test run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let seed = std::env::var(CHILD_SEED_ENV)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let options = RedbOptions {
        retention: retention(),
        ..RedbOptions::default()
    };
    let store = RedbLogStore::open(store_path(Path::new(&dir)), options)
        .unwrap_or_else(|error| panic!("child could not open the store: {error}"));
    let state = store.store_state().expect("state");
    let mut next = Durable {
        last: state.log.last_log_id.unwrap_or_default(),
        hard_state: state.hard_state,
        committed: state.progress.committed,
        applied: state.progress.applied.map_or(0, |id| id.index),
    };
    let mut last_seq = state.last_seq;
    let shared = Arc::new(Shared {
        progress: Mutex::new(ChildProgress {
            expected: vec![next],
            durable_request: 0,
            durable_last: next.last,
        }),
        advanced: Condvar::new(),
    });
    let sink_shared = shared.clone();
    let writer = GroupCommitWriter::start(store, move |event| match event {
        WriterEvent::Durable(report) => {
            let mut progress = sink_shared.lock();
            let durable = progress.expected[*report.requests.end() as usize];
            assert_eq!(report.last_log_id.unwrap_or_default(), durable.last);
            progress.durable_request = *report.requests.end();
            progress.durable_last = durable.last;
            println!("{}", durable.line());
            sink_shared.advanced.notify_all();
        }
        other => panic!("child writer event {other:?}"),
    })
    .expect("start writer");
    println!("\nready {}", next.last.index);
    let mut rng = Rng::new(seed);
    for request in 1.. {
        // Like a Raft driver with a bounded proposal queue, keep a few hundred requests in
        // flight, so that groups are realistic and the log grows at a testable pace.
        let durable = {
            let mut progress = shared.lock();
            while request > progress.durable_request + IN_FLIGHT_REQUESTS_MAX {
                progress = shared.advanced.wait(progress).expect("child progress lock");
            }
            progress.durable_last
        };
        let batch = match rng.range(0, 99) {
            0..=4 => {
                next.hard_state = HardState {
                    term: next.hard_state.term + 1,
                    vote: Some(NODE),
                };
                WriteBatch::hard_state(next.hard_state)
            }
            5 => {
                let large = entry(next.last.index + 1, next.hard_state.term, {
                    rng.range(64 << 10, 256 << 10) as usize
                });
                next.last = large.log_id();
                WriteBatch::entries(vec![large])
            }
            6..=17 if durable.index > next.applied => {
                last_seq += 1;
                next.committed = durable.index;
                next.applied = durable.index;
                let batch_id: [u8; 16] = [last_seq.to_be_bytes(), last_seq.to_le_bytes()]
                    .concat()
                    .try_into()
                    .expect("16 bytes");
                WriteBatch {
                    committed: Some(durable.index),
                    state: Some(StateUpdate {
                        applied: durable,
                        seqs: vec![(last_seq, durable.index)],
                        registry: vec![(batch_id, vec![1])],
                        offsets: vec![(TOPIC.to_string(), durable.index)],
                        registry_evicted: vec![],
                        log_time_ms: 0,
                        registry_floor_ms: 0,
                        coord: vec![],
                    }),
                    ..WriteBatch::default()
                }
            }
            _ => {
                let start = next.last.index + 1;
                let batch = entries(start, start + rng.range(1, 20), next.hard_state.term);
                next.last = batch.last().expect("non-empty").log_id();
                WriteBatch::entries(batch)
            }
        };
        shared.lock().expected.push(next);
        writer.submit(batch).expect("submit");
    }
}

/// Requests the child keeps in flight.
const IN_FLIGHT_REQUESTS_MAX: u64 = 256;

/// What the child's writer thread and main thread share.
struct Shared {
    progress: Mutex<ChildProgress>,
    advanced: Condvar,
}

struct ChildProgress {
    /// What each request leaves durable once it is, by request id.
    expected: Vec<Durable>,
    durable_request: u64,
    durable_last: LogId,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, ChildProgress> {
        self.progress.lock().expect("child progress lock")
    }
}
