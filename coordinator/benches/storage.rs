//! Storage benchmark (a plain program, not a timed test):
//!
//! ```text
//! cargo bench -p ordo-coordinator --bench storage
//! ```
//!
//! 1. Direct writes to the redb store: 1, 10, 100 and 1,000 entries per transaction (one fsync
//!    each), at 128 B and 4 KiB payloads: entries/s, MB/s of payload, fsyncs/s, p50/p99 commit
//!    latency, and bytes the process wrote to disk per entry (`write_bytes` of /proc/self/io).
//! 2. Many concurrent appenders through the [`GroupCommitWriter`], 128 B entries: each appender
//!    submits one entry, waits until it is reported durable, and repeats. This is the design
//!    target: at least 100,000 durable entries/s on a 2-core machine.
//!
//! The files live under the target directory (`ORDO_BENCH_DIR` overrides it), which must be on
//! a real disk, not tmpfs, for the fsync figures to mean anything. `ORDO_BENCH_SECONDS` sets the
//! duration of each measurement (default 2). The figures of the last run on the development VM
//! are in the `storage` module's documentation.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ordo_common::{Entry, EntryPayload, HardState, LogId};
use ordo_coordinator::storage::{
    GroupCommitWriter, LogStore, RedbLogStore, RedbOptions, WriteBatch, WriterEvent,
};

const GROUP_ENTRIES: [u64; 4] = [1, 10, 100, 1000];
const PAYLOAD_BYTES: [usize; 2] = [128, 4096];
const APPENDERS: [usize; 3] = [64, 256, 1024];
const TERM: u64 = 1;

fn main() {
    let seconds: f64 = std::env::var("ORDO_BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2.0);
    let duration = Duration::from_secs_f64(seconds);
    let base = std::env::var_os("ORDO_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).expect("create the bench directory");
    print_environment(&base);

    println!();
    println!("direct writes to RedbLogStore (one transaction and one fsync per write)");
    println!(
        "{:>8} {:>9} {:>12} {:>9} {:>10} {:>10} {:>10} {:>12}",
        "payload", "entries/", "entries/s", "MB/s", "fsyncs/s", "p50 ms", "p99 ms", "disk B/entry"
    );
    println!("{:>8} {:>9}", "", "commit");
    for payload_bytes in PAYLOAD_BYTES {
        for group_entries in GROUP_ENTRIES {
            let dir = tempfile::tempdir_in(&base).expect("bench dir");
            let result = direct_writes(
                &dir.path().join("log.redb"),
                payload_bytes,
                group_entries,
                duration,
            );
            println!(
                "{:>8} {:>9} {:>12.0} {:>9.1} {:>10.0} {:>10.3} {:>10.3} {:>12.0}",
                payload_bytes,
                group_entries,
                result.entries_per_second,
                result.megabytes_per_second,
                result.fsyncs_per_second,
                result.latency_p50_ms,
                result.latency_p99_ms,
                result.disk_bytes_per_entry
            );
        }
    }

    println!();
    println!(
        "concurrent appenders through GroupCommitWriter, 128 B entries, one entry per request"
    );
    println!(
        "{:>9} {:>12} {:>9} {:>10} {:>13} {:>10} {:>10} {:>12}",
        "appenders",
        "entries/s",
        "MB/s",
        "fsyncs/s",
        "entries/fsync",
        "p50 ms",
        "p99 ms",
        "disk B/entry"
    );
    for appenders in APPENDERS {
        let dir = tempfile::tempdir_in(&base).expect("bench dir");
        let result = concurrent_appenders(&dir.path().join("log.redb"), appenders, 128, duration);
        println!(
            "{:>9} {:>12.0} {:>9.1} {:>10.0} {:>13.1} {:>10.3} {:>10.3} {:>12.0}",
            appenders,
            result.entries_per_second,
            result.megabytes_per_second,
            result.fsyncs_per_second,
            result.entries_per_second / result.fsyncs_per_second,
            result.latency_p50_ms,
            result.latency_p99_ms,
            result.disk_bytes_per_entry
        );
    }
}

struct Figures {
    entries_per_second: f64,
    megabytes_per_second: f64,
    fsyncs_per_second: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    disk_bytes_per_entry: f64,
}

fn payload(index: u64, payload_bytes: usize) -> EntryPayload {
    let mut bytes = vec![0u8; payload_bytes];
    for (offset, byte) in bytes.iter_mut().enumerate() {
        *byte = (index as usize).wrapping_mul(31).wrapping_add(offset) as u8;
    }
    EntryPayload::Normal(bytes.into())
}

fn open(path: &Path) -> RedbLogStore {
    let mut store = RedbLogStore::open(path, RedbOptions::default()).expect("open store");
    store
        .write(&WriteBatch::hard_state(HardState {
            term: TERM,
            vote: Some(1),
        }))
        .expect("save term");
    store
}

fn direct_writes(
    path: &Path,
    payload_bytes: usize,
    group_entries: u64,
    duration: Duration,
) -> Figures {
    let mut store = open(path);
    let mut next = 1;
    let mut latencies = Vec::new();
    let written_before = process_write_bytes();
    let started = Instant::now();
    while started.elapsed() < duration {
        let entries: Vec<Entry> = (next..next + group_entries)
            .map(|index| Entry {
                term: TERM,
                index,
                payload: payload(index, payload_bytes),
            })
            .collect();
        let commit_started = Instant::now();
        store.write(&WriteBatch::entries(entries)).expect("write");
        latencies.push(commit_started.elapsed());
        next += group_entries;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let written = process_write_bytes().saturating_sub(written_before);
    let entries = (next - 1) as f64;
    latencies.sort();
    Figures {
        entries_per_second: entries / elapsed,
        megabytes_per_second: entries * payload_bytes as f64 / elapsed / 1e6,
        fsyncs_per_second: latencies.len() as f64 / elapsed,
        latency_p50_ms: percentile_ms(&latencies, 50),
        latency_p99_ms: percentile_ms(&latencies, 99),
        disk_bytes_per_entry: written as f64 / entries,
    }
}

/// The durable watermark the writer's sink publishes to the appenders.
#[derive(Default)]
struct Watermark {
    durable_index: Mutex<u64>,
    advanced: Condvar,
}

fn concurrent_appenders(
    path: &Path,
    appenders: usize,
    payload_bytes: usize,
    duration: Duration,
) -> Figures {
    let store = open(path);
    let watermark = Arc::new(Watermark::default());
    let groups = Arc::new(Mutex::new(0u64));
    let sink_watermark = watermark.clone();
    let sink_groups = groups.clone();
    let writer = GroupCommitWriter::start(store, move |event| match event {
        WriterEvent::Durable(report) => {
            let index = report.last_log_id.map_or(0, |id: LogId| id.index);
            *sink_groups.lock().expect("groups") += 1;
            *sink_watermark.durable_index.lock().expect("watermark") = index;
            sink_watermark.advanced.notify_all();
        }
        other => panic!("writer event {other:?}"),
    })
    .expect("start writer");
    let writer = Arc::new(writer);
    // Log indexes are handed out in submission order, as the Raft driver does.
    let next_index = Arc::new(Mutex::new(1u64));
    let written_before = process_write_bytes();
    let groups_before = *groups.lock().expect("groups");
    let started = Instant::now();
    let deadline = started + duration;
    let threads: Vec<_> = (0..appenders)
        .map(|_| {
            let writer = writer.clone();
            let watermark = watermark.clone();
            let next_index = next_index.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let submitted = Instant::now();
                    let index = {
                        let mut next = next_index.lock().expect("index");
                        let index = *next;
                        let entry = Entry {
                            term: TERM,
                            index,
                            payload: payload(index, payload_bytes),
                        };
                        writer
                            .submit(WriteBatch::entries(vec![entry]))
                            .expect("submit");
                        *next += 1;
                        index
                    };
                    let mut durable = watermark.durable_index.lock().expect("watermark");
                    while *durable < index {
                        durable = watermark.advanced.wait(durable).expect("watermark");
                    }
                    latencies.push(submitted.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|thread| thread.join().expect("appender"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let written = process_write_bytes().saturating_sub(written_before);
    let fsyncs = (*groups.lock().expect("groups") - groups_before) as f64;
    let entries = latencies.len() as f64;
    latencies.sort();
    drop(Arc::try_unwrap(writer).ok().map(GroupCommitWriter::close));
    Figures {
        entries_per_second: entries / elapsed,
        megabytes_per_second: entries * payload_bytes as f64 / elapsed / 1e6,
        fsyncs_per_second: fsyncs / elapsed,
        latency_p50_ms: percentile_ms(&latencies, 50),
        latency_p99_ms: percentile_ms(&latencies, 99),
        disk_bytes_per_entry: written as f64 / entries,
    }
}

fn percentile_ms(sorted: &[Duration], percent: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (sorted.len() * percent / 100).min(sorted.len() - 1);
    sorted[rank].as_secs_f64() * 1000.0
}

/// Bytes this process caused to be written to the block device so far.
fn process_write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes: "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

fn print_environment(base: &Path) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let base = base.canonicalize().unwrap_or_else(|_| base.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let filesystem = mounts
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (fields.len() > 2 && base.starts_with(fields[1]))
                .then(|| (fields[1].len(), fields[0], fields[2]))
        })
        .max()
        .map(|(_, device, kind)| format!("{device} ({kind})"))
        .unwrap_or_else(|| "unknown".into());
    println!("ordo storage benchmark");
    println!("cpus: {cpus} × {model}");
    println!("data: {} on {filesystem}", base.display());
}
