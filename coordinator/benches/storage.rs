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
//! 3. Node-shaped writes: each transaction appends a group of batch entries and saves what the
//!    previous group's apply changed (seqs, registry records, topic offsets, commit index), as a
//!    busy node's group commit does: batches/s, CPU per write and per batch, disk bytes per batch.
//!
//! `ORDO_BENCH_ONLY=direct,appenders,node` runs only the sections named;
//! `ORDO_BENCH_NODE_WITHOUT=entries,state,seqs,registry,offsets` leaves those parts out of the
//! node-shaped writes, to see what each costs.
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
    GroupCommitWriter, LogStore, RedbLogStore, RedbOptions, StateUpdate, WriteBatch, WriterEvent,
};

const GROUP_ENTRIES: [u64; 4] = [1, 10, 100, 1000];
const PAYLOAD_BYTES: [usize; 2] = [128, 4096];
const APPENDERS: [usize; 3] = [64, 256, 1024];
const TERM: u64 = 1;
/// Node-shaped writes: batches per write (one group commit), payload bytes of each batch.
const NODE_SHAPES: [(u64, usize); 3] = [(1, 160), (40, 1_400), (40, 14_000)];
/// Topics a node-shaped write moves the offsets of.
const NODE_TOPICS: usize = 10;
/// Registry records kept by the node-shaped writes before the oldest is evicted.
const NODE_REGISTRY_RECORDS: u64 = 100_000;

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
    let only = std::env::var("ORDO_BENCH_ONLY").unwrap_or_default();
    let runs = |section: &str| only.is_empty() || only.split(',').any(|name| name == section);

    if runs("direct") {
        direct_section(&base, duration);
    }
    if runs("appenders") {
        appenders_section(&base, duration);
    }
    if runs("node") {
        node_section(&base, duration);
    }
}

fn direct_section(base: &Path, duration: Duration) {
    println!();
    println!("direct writes to RedbLogStore (one transaction and one fsync per write)");
    println!(
        "{:>8} {:>9} {:>12} {:>9} {:>10} {:>10} {:>10} {:>12}",
        "payload", "entries/", "entries/s", "MB/s", "fsyncs/s", "p50 ms", "p99 ms", "disk B/entry"
    );
    println!("{:>8} {:>9}", "", "commit");
    for payload_bytes in PAYLOAD_BYTES {
        for group_entries in GROUP_ENTRIES {
            let dir = tempfile::tempdir_in(base).expect("bench dir");
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
}

fn appenders_section(base: &Path, duration: Duration) {
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
        let dir = tempfile::tempdir_in(base).expect("bench dir");
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

fn node_section(base: &Path, duration: Duration) {
    println!();
    println!(
        "node-shaped writes: each appends a group of batches and saves the apply of the previous \
         group (seqs, registry records with time-ordered ids, {NODE_TOPICS} topic offsets, commit \
         index); {NODE_REGISTRY_RECORDS} registry records kept"
    );
    println!(
        "{:>8} {:>9} {:>12} {:>10} {:>12} {:>10} {:>12}",
        "batches/", "batch B", "batches/s", "p50 ms", "CPU µs/", "CPU µs/", "disk B/"
    );
    println!(
        "{:>8} {:>9} {:>12} {:>10} {:>12} {:>10} {:>12}",
        "write", "", "", "", "write", "batch", "batch"
    );
    for (group, batch_bytes) in NODE_SHAPES {
        let dir = tempfile::tempdir_in(base).expect("bench dir");
        let result = node_shaped_writes(&dir.path().join("log.redb"), group, batch_bytes, duration);
        println!(
            "{:>8} {:>9} {:>12.0} {:>10.3} {:>12.0} {:>10.1} {:>12.0}",
            group,
            batch_bytes,
            result.batches_per_second,
            result.latency_p50_ms,
            result.cpu_micros_per_write,
            result.cpu_micros_per_write / group as f64,
            result.disk_bytes_per_batch
        );
    }
}

struct NodeFigures {
    batches_per_second: f64,
    latency_p50_ms: f64,
    cpu_micros_per_write: f64,
    disk_bytes_per_batch: f64,
}

/// Writes shaped like a busy node's group commits: `group` batch entries appended, and the
/// state the previous group's apply changed, in one transaction.
fn node_shaped_writes(
    path: &Path,
    group: u64,
    batch_bytes: usize,
    duration: Duration,
) -> NodeFigures {
    let without = std::env::var("ORDO_BENCH_NODE_WITHOUT").unwrap_or_default();
    let keeps = |part: &str| !without.split(',').any(|name| name == part);
    let mut store = open(path);
    let mut next = 1;
    let mut seq = 0;
    let mut registered = std::collections::VecDeque::new();
    let mut latencies = Vec::new();
    let written_before = process_write_bytes();
    let cpu_before = process_cpu_micros();
    let started = Instant::now();
    while started.elapsed() < duration {
        let entries: Vec<Entry> = (next..next + group)
            .map(|index| Entry {
                term: TERM,
                index,
                payload: payload(index, batch_bytes),
            })
            .collect();
        let mut batch = WriteBatch::entries(if keeps("entries") { entries } else { vec![] });
        if next > 1 && keeps("state") {
            let applied = next - 1;
            let mut state = StateUpdate::applied(LogId::new(TERM, applied));
            for index in applied + 1 - group..=applied {
                seq += 1;
                if keeps("seqs") {
                    state.seqs.push((seq, index));
                }
                if !keeps("registry") {
                    continue;
                }
                // A time-ordered id, as clients draw them: the time first, then randomness.
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&index.to_be_bytes());
                id[8..].copy_from_slice(&index.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
                state.registry.push((id, vec![7u8; 48]));
                registered.push_back(id);
                if registered.len() as u64 > NODE_REGISTRY_RECORDS {
                    state.registry_evicted.extend(registered.pop_front());
                }
            }
            state.offsets = (0..if keeps("offsets") { NODE_TOPICS } else { 0 })
                .map(|topic| (format!("topic-{topic}"), seq))
                .collect();
            state.log_time_ms = next;
            batch.committed = Some(applied);
            batch.state = Some(state);
        }
        let commit_started = Instant::now();
        store.write(&batch).expect("write");
        latencies.push(commit_started.elapsed());
        next += group;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_micros().saturating_sub(cpu_before) as f64;
    let written = process_write_bytes().saturating_sub(written_before);
    let batches = (next - 1) as f64;
    latencies.sort();
    NodeFigures {
        batches_per_second: batches / elapsed,
        latency_p50_ms: percentile_ms(&latencies, 50),
        cpu_micros_per_write: cpu / latencies.len() as f64,
        disk_bytes_per_batch: written as f64 / batches,
    }
}

/// CPU time (user and system) this process has used so far, in microseconds.
fn process_cpu_micros() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start after its ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |field: usize| fields.get(field).and_then(|v| v.parse::<u64>().ok());
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let total = ticks(11).unwrap_or(0) + ticks(12).unwrap_or(0);
    // Clock ticks are 100 per second on every Linux this runs on (USER_HZ).
    total * 10_000
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
