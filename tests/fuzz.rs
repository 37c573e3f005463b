//! Fuzzing, on the stable toolchain, of every decoder that reads bytes from the network or the
//! disk. Each test below is one target:
//!
//! | test | decoder | bytes from |
//! |------|---------|------------|
//! | `frames_client_request` | `ordo_net::wire::read_frame::<ClientRequest>` | a client's stream |
//! | `frames_client_response` | `read_frame::<ClientResponse>` | a node's answer (SDK, CLI, `--join`) |
//! | `frames_peer` | `read_frame::<PeerFrame>` | a peer link (Raft, snapshot streams) |
//! | `codec_values` | `ordo_common::codec::decode` of every stored or carried type | both |
//! | `log_commands` | `ordo_core::state::Command::decode`, `stamp_of`, `batch_bytes`, `committed_batch` | a log entry |
//! | `storage_entries` | `storage::record::{decode_entry, entry_term, entry_facts}` | the log table |
//! | `storage_values` | `storage::record::{decode_value, decode_bytes}`, then the registry and coordination rows they hold | the state tables |
//! | `snapshot_files` | `ordo_node::snapshot::decode_snapshot`, then the install chain (`recovered_tables`, `BatchState::restore`) | a snapshot transfer, `ordo snapshot restore` |
//! | `snapshot_bodies` | `ordo_common::codec::decode_snapshot_body`, then the install chain | the same, past the checksum |
//! | `config_files` | `ordo_coordinator::config::NodeConfig::load` | the node's TOML file |
//! | `small_files` | `PeerIncarnations::load`, `snapshot_transfer::recover` (its marker) | the data directory |
//! | `tls_files` | `tls::{root_store, Identity::load, client_config}`, `certs::generate` on an existing CA | the TLS directory |
//!
//! Every target is fed (a) structure-aware inputs: valid encodings of generated values, as they
//! are and then mutated (bit flips, byte and length-field edits, truncation, insertion,
//! repetition, splicing with another valid encoding), most of them with their envelope (frame
//! length, record checksum, snapshot length and checksum) repaired afterwards so that the
//! mutation reaches the decoder behind it; and (b) raw random bytes, half of them wrapped in a
//! valid envelope. Inputs are at most [`INPUT_BYTES_MAX`] (64 KiB).
//!
//! For every input, the properties checked are:
//! - **no panic**: each decode runs inside `catch_unwind`; a panic fails the target with the
//!   input's hex, the panic's message and location, and a backtrace (first panic only).
//! - **no over-allocation**: a counting global allocator records the largest single allocation
//!   made on the decoding thread while the decode runs, checked against the target's bound (see
//!   [`Bound`]). Parsers of text and PEM get 4 × the input + 1 MiB. The codec-based decoders
//!   get the limit they declare, because a length prefix legitimately makes them claim up to
//!   it before the input runs out: `FRAME_BYTES_MAX` (67 MiB) for frames, records and values
//!   (the caller's frame limit and the codec's claim limit); a snapshot body what
//!   `codec::claim_limit` gives its length (16 times it, at least 1 MiB, in tiers, at most 16 GiB:
//!   this bound caught an 80-byte snapshot whose length prefix claimed 15 GiB). When the largest allocation of a target is over the linear
//!   bound, its summary prints the input that made it.
//! - **valid inputs are accepted**: an unmutated valid encoding must decode, and re-encode to
//!   the same bytes (otherwise the structure-aware inputs would not be what they claim).
//! - **no hang**: there is no timing assertion; the work per input is bounded by its size, the
//!   test must simply finish (CI's timeout catches a hang), and the slowest input is reported.
//!
//! Each target ends with one line (run with `--nocapture` to see it): executions, how many were
//! accepted, crashes, the largest allocation and on what input, the slowest input.
//!
//! ## Running longer, reproducing
//!
//! By default each target runs a fixed number of cases (the whole file takes about a minute in
//! `--release` on 2 cores). Longer, N seconds per target:
//!
//! ```text
//! ORDO_FUZZ_SECONDS=600 cargo test --release --test fuzz -- --nocapture
//! ```
//!
//! Case `i` of a target is generated from `ORDO_FUZZ_SEED` (a fixed default when unset; every
//! summary line prints it), the target's name and `i` alone, so a failure reproduces with the
//! command it prints: `ORDO_FUZZ_SEED=<seed> ORDO_FUZZ_CASE=<i> cargo test --release --test
//! fuzz <target> -- --nocapture` runs just that case. A different seed explores other inputs.
//!
//! `ORDO_FUZZ_PLANT=1` also runs `planted_bugs_are_reported`: a copy of the frame reader, in
//! this file, with two bugs planted (a reservation of an unchecked length prefix, and a slice
//! past the end of the input that only structured inputs reach). That target must fail, with
//! both bugs in its report, which shows that the checks above can fail.
//!
//! `config_files` skips inputs whose peers would make the loader resolve a host name (it says
//! how many), to keep the test off the network.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Once, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_common::batch::{
    Batch, BatchError, BatchId, CommittedBatch, Message, Outcome, Precondition, RejectReason,
};
use ordo_common::client::{
    BusyCode, CLIENT_REQUEST_BYTES_MAX, CLIENT_RESPONSE_BYTES_MAX, ClientRequest, ClientResponse,
    MemberInfo, MemberList, NodeRole, NodeStatus, RefusedCode,
};
use ordo_common::codec;
use ordo_common::coord::{
    CoordRefusal, LeaderChange, MutexInfo, MutexKind, SessionId, SessionInfo,
};
use ordo_common::limits::{ENTRY_PAYLOAD_BYTES_MAX, FRAME_BYTES_MAX, OUTCOME_BYTES_MAX};
use ordo_common::membership::{MembershipChange, MembershipError};
use ordo_common::{ClusterId, Entry, EntryPayload, HardState, LogId, Membership};
use ordo_coordinator::config::{NodeConfig, Overrides, default_config_text};
use ordo_coordinator::snapshot_transfer::{self, MARKER_FILE_NAME};
use ordo_coordinator::transport::{PEER_FRAME_BYTES_MAX, PEER_INCARNATIONS_FILE, PeerFrame};
use ordo_core::state::coord::{COORD_ROW_BYTES_MAX, Holder, Mutex, Session, Waiter};
use ordo_core::state::{BatchState, Command, CoordOp, CoordRow, Registered, RegistryLimits};
use ordo_core::{AppendResponse, Body, ConflictHint, RejectHint};
use ordo_net::wire::{WIRE_VERSION, encode_frame, read_frame};
use ordo_node::snapshot::{SNAPSHOT_BYTES_MAX, decode_snapshot, encode_snapshot};
use ordo_node::storage::record;
use ordo_node::storage::{SnapshotState, StoreState, StoredTables};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::runtime::Runtime;

/// Largest input fed to a decoder: the work per input is bounded by its size.
const INPUT_BYTES_MAX: usize = 64 * 1024;

/// Most frames read from one input (a stream of frames).
const FRAMES_PER_INPUT_MAX: usize = 64;

/// What a snapshot's body may claim while it decodes: `SNAPSHOT_DECODE_CLAIM_BYTES_MAX` in
/// `common/src/codec.rs` (private there), 16 GiB.
const SNAPSHOT_DECODE_CLAIM_BYTES: u64 = 1 << 34;

// ---------------------------------------------------------------------------------------------
// Allocation accounting.

/// The system allocator, recording the largest single allocation (or reallocation) made on a
/// thread while that thread is inside a decode ([`measure`]).
///
/// Allocations of [`MAPPED_BYTES_MIN`] or more are served by an anonymous `MAP_NORESERVE`
/// mapping instead: a decoder that claims gigabytes it never touches then shows up in the
/// report instead of aborting the test binary on a machine with less memory than it claimed.
struct CountingAllocator;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// The input being decoded, for [`report_failed_allocation`].
    static CURRENT_INPUT: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

const MAPPED_BYTES_MIN: usize = 256 << 20;
const PAGE_BYTES: usize = 4096;

fn record_allocation(size: usize) {
    let tracking = TRACKING.try_with(Cell::get).unwrap_or(false);
    if tracking {
        let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    }
}

/// A failed allocation aborts the process (`handle_alloc_error`), which no `catch_unwind`
/// stops: when it happens inside a decode, this prints the input first, without allocating.
fn checked(pointer: *mut u8, size: usize) -> *mut u8 {
    if pointer.is_null() && TRACKING.try_with(Cell::get).unwrap_or(false) {
        report_failed_allocation(size);
    }
    pointer
}

fn report_failed_allocation(size: usize) {
    struct Stderr {
        buffer: [u8; 512],
        len: usize,
    }
    impl Stderr {
        fn flush(&mut self) {
            // SAFETY: writes initialized bytes of a live buffer to standard error.
            unsafe { libc::write(2, self.buffer.as_ptr().cast(), self.len) };
            self.len = 0;
        }
    }
    impl std::fmt::Write for Stderr {
        fn write_str(&mut self, text: &str) -> std::fmt::Result {
            for byte in text.bytes() {
                if self.len == self.buffer.len() {
                    self.flush();
                }
                self.buffer[self.len] = byte;
                self.len += 1;
            }
            Ok(())
        }
    }
    let (pointer, len) = CURRENT_INPUT
        .try_with(Cell::get)
        .unwrap_or((std::ptr::null(), 0));
    let mut stderr = Stderr {
        buffer: [0; 512],
        len: 0,
    };
    let _ = write!(
        stderr,
        "\nfuzz: an allocation of {size} bytes failed inside a decode (the process aborts); \
         the input, {len} bytes (hex): "
    );
    if !pointer.is_null() {
        // SAFETY: the harness sets this to the live input for the duration of the decode.
        let input = unsafe { std::slice::from_raw_parts(pointer, len) };
        for byte in input {
            let _ = write!(stderr, "{byte:02x}");
        }
    }
    let _ = writeln!(stderr);
    stderr.flush();
}

fn is_mapped(layout: &Layout) -> bool {
    layout.size() >= MAPPED_BYTES_MIN && layout.align() <= PAGE_BYTES
}

fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping touches no existing memory; the result is checked.
    let pointer = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if pointer == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        pointer.cast()
    }
}

// SAFETY: every block comes from `System` or from `map`, and goes back to where it came from:
// which one is decided by its layout alone (`is_mapped`), the same on allocation and release.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record_allocation(layout.size());
        let pointer = if is_mapped(&layout) {
            map(layout.size())
        } else {
            // SAFETY: the caller's layout contract is passed on unchanged.
            unsafe { System.alloc(layout) }
        };
        checked(pointer, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record_allocation(layout.size());
        let pointer = if is_mapped(&layout) {
            // Anonymous mappings are zero-filled.
            map(layout.size())
        } else {
            // SAFETY: as in `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        };
        checked(pointer, layout.size())
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if is_mapped(&layout) {
            // SAFETY: a block of this layout was mapped by `map` with this size.
            unsafe { libc::munmap(pointer.cast(), layout.size()) };
        } else {
            // SAFETY: a block of this layout came from `System`.
            unsafe { System.dealloc(pointer, layout) }
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size`, rounded up to `layout.align()`, does
        // not overflow, which is what this constructor requires.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_mapped(&layout) && !is_mapped(&new_layout) {
            record_allocation(new_size);
            // SAFETY: both layouts are `System`'s; the caller's contract is passed on.
            return checked(
                unsafe { System.realloc(pointer, layout, new_size) },
                new_size,
            );
        }
        // SAFETY: `new_layout` has a non-zero size (the caller's contract).
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                std::ptr::copy_nonoverlapping(pointer, moved, layout.size().min(new_size));
                self.dealloc(pointer, layout);
            }
        }
        moved
    }
}

/// Runs `decode` with allocation tracking on: its result (or the panic it raised) and the
/// largest single allocation it made.
fn measure<R>(input: &[u8], decode: impl FnOnce() -> R) -> (std::thread::Result<R>, usize) {
    CURRENT_INPUT.with(|current| current.set((input.as_ptr(), input.len())));
    LARGEST.with(|largest| largest.set(0));
    TRACKING.with(|tracking| tracking.set(true));
    IN_DECODE.with(|inside| inside.set(true));
    let result = catch_unwind(AssertUnwindSafe(decode));
    IN_DECODE.with(|inside| inside.set(false));
    TRACKING.with(|tracking| tracking.set(false));
    CURRENT_INPUT.with(|current| current.set((std::ptr::null(), 0)));
    (result, LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------------------------------------
// Panics.

thread_local! {
    static IN_DECODE: Cell<bool> = const { Cell::new(false) };
    /// Whether the next panic inside a decode should capture a backtrace (the first one does).
    static WANT_BACKTRACE: Cell<bool> = const { Cell::new(true) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics inside a decode are recorded (message, location, a backtrace for the first) for the
/// target's report instead of printed; any other panic goes to the default hook.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_DECODE.with(Cell::get) {
                return default(info);
            }
            // What the report needs is not the decoder's allocation.
            TRACKING.with(|tracking| tracking.set(false));
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(a non-string panic payload)".into());
            let location = info
                .location()
                .map_or_else(|| "unknown location".into(), |l| l.to_string());
            let mut text = format!("panicked at {location}: {message}");
            if WANT_BACKTRACE.with(|want| want.replace(false)) {
                let backtrace = std::backtrace::Backtrace::force_capture();
                let _ = write!(text, "\nbacktrace:\n{backtrace}");
            }
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(text));
        }));
    });
}

// ---------------------------------------------------------------------------------------------
// Settings.

struct Settings {
    seed: u64,
    seconds: Option<u64>,
    only_case: Option<u64>,
    plant: bool,
}

const SEED_DEFAULT: u64 = 0x6F72_646F_6675_7A7A; // "ordofuzz"

fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let number = |name: &str| {
            let text = std::env::var(name).ok()?;
            let text = text.trim();
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
                None => text.replace('_', "").parse(),
            };
            Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
        };
        Settings {
            seed: number("ORDO_FUZZ_SEED").unwrap_or(SEED_DEFAULT),
            seconds: number("ORDO_FUZZ_SECONDS"),
            only_case: number("ORDO_FUZZ_CASE"),
            plant: std::env::var("ORDO_FUZZ_PLANT").is_ok_and(|value| value == "1"),
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The harness.

/// How much a single allocation made while decoding an input may claim.
#[derive(Clone, Copy)]
enum Bound {
    /// 4 × the input's length + 1 MiB: for decoders whose output is proportional to what they
    /// read (parsers of text and PEM, checksum checks). A copy of the input, a vector grown by
    /// doubling past it and a parse tree fit in 4 ×; the MiB is for what every call allocates
    /// whatever the input (the configuration's defaults, a TLS configuration, I/O buffers).
    Linear,
    /// A limit the decoder itself declares, whatever its input says: a length prefix may make
    /// it claim this much (and no more) before the input runs out.
    Declared { bytes: u64, name: &'static str },
    /// What the codec lets an input of this length claim (`ordo_common::codec::claim_limit`):
    /// in proportion to the input, in tiers, within the decoder's ceiling.
    Claim { snapshot: bool },
}

impl Bound {
    fn bytes(self, input: usize) -> u64 {
        match self {
            Self::Linear => 4 * input as u64 + (1 << 20),
            Self::Declared { bytes, .. } => bytes,
            Self::Claim { snapshot } => ordo_common::codec::claim_limit(input, snapshot),
        }
    }

    fn describe(self) -> String {
        match self {
            Self::Linear => "4 × input + 1 MiB".into(),
            Self::Declared { bytes, name } => format!("{name} = {}", human_bytes(bytes)),
            Self::Claim { snapshot: true } => "codec::claim_limit(input, snapshot)".into(),
            Self::Claim { snapshot: false } => "codec::claim_limit(input)".into(),
        }
    }
}

/// What a frame reader may claim: its body buffer grows with the bytes that arrive
/// (`ordo_net::wire::read_frame_body`), so what a declared length may make it hold is what the
/// codec lets an input of that size claim, whatever the header says.
const FRAME_BOUND: Bound = Bound::Claim { snapshot: false };

/// What the codec may claim at most: `DECODE_CLAIM_BYTES_MAX` (private in
/// `common/src/codec.rs`) is `FRAME_BYTES_MAX`.
const CODEC_BOUND: Bound = Bound::Declared {
    bytes: FRAME_BYTES_MAX,
    name: "FRAME_BYTES_MAX (frame limit, codec claim limit)",
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
enum Kind {
    /// A valid encoding of a generated value: must be accepted and re-encode identically.
    Valid,
    /// A valid encoding, mutated.
    Mutated,
    /// Random bytes (perhaps in a valid envelope).
    Raw,
}

struct Input {
    bytes: Vec<u8>,
    kind: Kind,
    /// A parameter of the decode besides the bytes (a log index, a record type, a file).
    aux: u64,
}

enum Verdict {
    Refused,
    Accepted,
    /// Accepted, and this is the value encoded again.
    Reencoded(Vec<u8>),
    /// Not run (see the target).
    Skipped,
}

#[derive(Default)]
struct Stats {
    executions: u64,
    accepted: u64,
    valid: u64,
    skipped: u64,
    crashes: u64,
    over_allocations: u64,
    valid_refused: u64,
    /// The largest allocation, the input that made it, its case.
    largest: (usize, Vec<u8>, u64),
    slowest: (Duration, usize, u64),
    /// Crashes by the kind of input that caused them: valid, mutated, raw.
    crashes_by_kind: [u64; 3],
    /// The first few failures of each problem: crash, over-allocation, valid input refused.
    failures: [Vec<String>; 3],
}

/// Failures reported in full, of each problem.
const FAILURES_SHOWN: usize = 2;

const CRASH: usize = 0;
const OVER_ALLOCATION: usize = 1;
const VALID_REFUSED: usize = 2;

/// Runs one target: `generate` makes case `i`'s input from a generator seeded by the seed, the
/// target's name and `i`; `decode` runs the decoder on it. `default_cases` is chosen so that the
/// target takes 5 to 15 seconds in `--release` on 2 cores, the whole file about a minute.
fn fuzz(
    name: &str,
    default_cases: u64,
    bound: Bound,
    mut generate: impl FnMut(&mut Rng) -> Input,
    mut decode: impl FnMut(&Input) -> Verdict,
) {
    install_panic_hook();
    let settings = settings();
    let target_seed = mix(settings.seed ^ fnv(name.as_bytes()));
    let started = Instant::now();
    let deadline = settings.seconds.map(|s| started + Duration::from_secs(s));
    let cases: Box<dyn Iterator<Item = u64>> = match (settings.only_case, deadline) {
        (Some(case), _) => Box::new(std::iter::once(case)),
        (None, Some(_)) => Box::new(0..),
        (None, None) => Box::new(0..default_cases),
    };
    let mut stats = Stats::default();
    for case in cases {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }
        let mut rng = Rng::new(mix(target_seed.wrapping_add(case)));
        let mut input = generate(&mut rng);
        if input.bytes.len() > INPUT_BYTES_MAX {
            input.bytes.truncate(INPUT_BYTES_MAX);
            if input.kind == Kind::Valid {
                input.kind = Kind::Mutated;
            }
        }
        let clock = Instant::now();
        let (result, largest) = measure(&input.bytes, || decode(&input));
        let elapsed = clock.elapsed();
        stats.executions += 1;
        if largest > stats.largest.0 {
            stats.largest = (largest, input.bytes.clone(), case);
        }
        if elapsed > stats.slowest.0 {
            stats.slowest = (elapsed, input.bytes.len(), case);
        }
        let reproduce = || {
            format!(
                "case {case} ({:?} input of {} bytes, aux {}); reproduce with ORDO_FUZZ_SEED={:#x} \
                 ORDO_FUZZ_CASE={case} cargo test --release --test fuzz {name} -- --nocapture\n\
                 input (hex): {}",
                input.kind,
                input.bytes.len(),
                input.aux,
                settings.seed,
                hex(&input.bytes),
            )
        };
        let fail = |stats: &mut Stats, problem: usize, what: String| {
            if stats.failures[problem].len() < FAILURES_SHOWN {
                stats.failures[problem].push(format!("{what}\n  {}", reproduce()));
            }
        };
        let verdict = match result {
            Ok(verdict) => verdict,
            Err(_) => {
                stats.crashes += 1;
                stats.crashes_by_kind[input.kind as usize] += 1;
                let panic = LAST_PANIC
                    .with(|last| last.borrow_mut().take())
                    .unwrap_or_else(|| "panicked (no message recorded)".into());
                fail(&mut stats, CRASH, format!("CRASH: {panic}"));
                continue;
            }
        };
        if largest as u64 > bound.bytes(input.bytes.len()) {
            stats.over_allocations += 1;
            fail(
                &mut stats,
                OVER_ALLOCATION,
                format!(
                    "OVER-ALLOCATION: one allocation of {largest} bytes ({}) for an input of {} \
                     bytes; the bound is {} bytes ({})",
                    human_bytes(largest as u64),
                    input.bytes.len(),
                    bound.bytes(input.bytes.len()),
                    bound.describe()
                ),
            );
        }
        match &verdict {
            Verdict::Refused => {}
            Verdict::Skipped => stats.skipped += 1,
            Verdict::Accepted | Verdict::Reencoded(_) => stats.accepted += 1,
        }
        if input.kind == Kind::Valid {
            stats.valid += 1;
            let problem = match &verdict {
                Verdict::Refused => Some("refused"),
                Verdict::Reencoded(again) if *again != input.bytes => {
                    Some("accepted, but encodes back to other bytes")
                }
                _ => None,
            };
            if let Some(problem) = problem {
                stats.valid_refused += 1;
                fail(
                    &mut stats,
                    VALID_REFUSED,
                    format!("VALID INPUT {problem} (a generator or codec bug)"),
                );
            }
        }
    }
    report(name, bound, &stats, started.elapsed());
}

fn report(name: &str, bound: Bound, stats: &Stats, elapsed: Duration) {
    let skipped = if stats.skipped > 0 {
        format!(", {} skipped", stats.skipped)
    } else {
        String::new()
    };
    eprintln!(
        "fuzz {name}: {} executions ({} accepted, {} valid{skipped}), {} crashes, {} \
         over-allocations, largest allocation {} on a {}-byte input (case {}; bound {}), slowest \
         input {:.2?} ({} bytes, case {}); seed {:#x}, {:.1?}",
        stats.executions,
        stats.accepted,
        stats.valid,
        stats.crashes,
        stats.over_allocations,
        human_bytes(stats.largest.0 as u64),
        stats.largest.1.len(),
        stats.largest.2,
        bound.describe(),
        stats.slowest.0,
        stats.slowest.1,
        stats.slowest.2,
        settings().seed,
        elapsed,
    );
    let (largest, input, case) = &stats.largest;
    if *largest as u64 > Bound::Linear.bytes(input.len()) && input.len() <= 1024 {
        eprintln!(
            "fuzz {name}: the largest allocation, {}, is over 4 × input + 1 MiB: case {case}, \
             input (hex): {}",
            human_bytes(*largest as u64),
            hex(input)
        );
    }
    let failed = stats.crashes + stats.over_allocations + stats.valid_refused;
    if failed > 0 {
        let [valid, mutated, raw] = stats.crashes_by_kind;
        panic!(
            "fuzz {name}: {} crashes ({valid} on valid inputs, {mutated} on mutated ones, {raw} on \
             random bytes), {} over-allocations, {} valid inputs refused; the first of each:\n\n{}",
            stats.crashes,
            stats.over_allocations,
            stats.valid_refused,
            stats.failures.concat().join("\n\n")
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..0x10_0000 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        0x10_0000..0x4000_0000 => format!("{:.1} MiB", bytes as f64 / 1048576.0),
        _ => format!("{:.1} GiB", bytes as f64 / 1073741824.0),
    }
}

// ---------------------------------------------------------------------------------------------
// Random numbers and mutations.

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }

    fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn flag(&mut self) -> bool {
        self.one_in(2)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())].clone()
    }

    /// A length up to `max`, small ones far more likely than large ones.
    fn len(&mut self, max: usize) -> usize {
        let scale = self.below(usize::BITS as u64 - max.leading_zeros() as u64 + 1);
        (self.below(1 << scale) as usize).min(max)
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.len(max);
        (0..len).map(|_| self.next() as u8).collect()
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.next() as u8)
    }

    /// A number, with the edges more likely than a uniform draw would make them.
    fn number(&mut self) -> u64 {
        match self.below(4) {
            0 => self.below(16),
            1 => self.pick(&[
                0,
                1,
                u64::from(u8::MAX),
                u64::from(u32::MAX),
                i64::MAX as u64,
                u64::MAX,
                1 << 32,
                1_700_000_000_000,
            ]),
            2 => self.below(1 << 20),
            _ => self.next(),
        }
    }

    fn text(&mut self, max: usize) -> String {
        let len = self.len(max);
        (0..len)
            .map(|_| match self.below(16) {
                0 => self.pick(&['é', '€', '𝄞', '\0', '\n', '"', '\\', '\u{FEFF}']),
                1..4 => self.pick(&['.', '-', '_', '*', ' ', ':', '/', '=']),
                _ => (b'a' + self.below(26) as u8) as char,
            })
            .collect()
    }

    fn name(&mut self) -> String {
        let name = self.text(24);
        if name.is_empty() { "t".into() } else { name }
    }
}

/// A value a length or count field could hold to make a decoder stumble, given that `remaining`
/// bytes follow the field.
fn interesting_length(rng: &mut Rng, remaining: u64) -> u64 {
    match rng.below(3) {
        0 => rng.pick(&[
            remaining,
            remaining + 1,
            remaining.saturating_sub(1),
            remaining * 2,
            remaining / 8,
            remaining + 8,
        ]),
        1 => rng.pick(&[
            0,
            1,
            2,
            7,
            8,
            255,
            256,
            4095,
            4096,
            65535,
            65536,
            1 << 20,
            (1 << 20) + 1,
            0x7FFF_FFFF,
            0x8000_0000,
            0xFFFF_FFFF,
            1 << 32,
            FRAME_BYTES_MAX,
            FRAME_BYTES_MAX + 1,
            ENTRY_PAYLOAD_BYTES_MAX,
            SNAPSHOT_BYTES_MAX,
            SNAPSHOT_DECODE_CLAIM_BYTES,
            SNAPSHOT_DECODE_CLAIM_BYTES + 1,
            i64::MAX as u64,
            u64::MAX,
        ]),
        _ => {
            let scale = rng.below(36);
            rng.below(1 << scale)
        }
    }
}

/// Applies one to four mutations to `data`; `donor` is another valid encoding to splice with.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, donor: &[u8]) {
    let rounds = if rng.flag() { 1 } else { 1 + rng.below(4) };
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(12) {
            0 | 1 => {
                for _ in 0..1 + rng.below(4) {
                    if len > 0 {
                        let at = rng.index(len);
                        data[at] ^= 1 << rng.below(8);
                    }
                }
            }
            2 if len > 0 => {
                let at = rng.index(len);
                let random = rng.next() as u8;
                data[at] = rng.pick(&[0, 1, 0x7F, 0x80, 0xFE, 0xFF, random]);
            }
            3 if len > 0 => {
                let at = rng.index(len);
                data[at] = data[at].wrapping_add(rng.pick(&[1, 2, 16, 0xFF, 0xFE, 0xF0]));
            }
            // A length-field edit: a little-endian word, as the codec writes lengths and
            // counts (u64) and variant tags (u32), set to a troublesome value.
            4 | 5 if len > 0 => {
                let width = rng.pick(&[8, 8, 4, 2, 1]);
                let at = rng.index(len);
                let remaining = len.saturating_sub(at + width) as u64;
                let value = interesting_length(rng, remaining).to_le_bytes();
                let end = (at + width).min(len);
                data[at..end].copy_from_slice(&value[..end - at]);
            }
            6 => data.truncate(rng.index(len + 1)),
            7 if len > 0 => {
                let at = rng.index(len);
                let end = (at + 1 + rng.len(64)).min(len);
                data.drain(at..end);
            }
            8 => {
                let at = rng.index(len + 1);
                let inserted = rng.bytes(32);
                data.splice(at..at, inserted);
            }
            // Repetition: long sequences, deep nesting.
            9 if len > 0 => {
                let at = rng.index(len);
                let end = (at + 1 + rng.len(16)).min(len);
                let chunk = data[at..end].to_vec();
                let copies = 1 + rng.len(256);
                let repeated: Vec<u8> = chunk
                    .iter()
                    .copied()
                    .cycle()
                    .take(chunk.len() * copies)
                    .collect();
                data.splice(at..at, repeated);
            }
            10 => {
                let cut = rng.index(len + 1);
                let from = rng.index(donor.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&donor[from..]);
            }
            _ => {
                let garbage = rng.bytes(64);
                data.extend(garbage);
            }
        }
        data.truncate(INPUT_BYTES_MAX);
    }
}

/// How a target makes its inputs: `valid` makes a valid encoding, `reframe` repairs the
/// envelope around (mutated or random) contents.
fn generate_input(
    rng: &mut Rng,
    valid: impl Fn(&mut Rng) -> Vec<u8>,
    reframe: impl Fn(&mut Rng, &mut Vec<u8>),
) -> Input {
    let (bytes, kind) = match rng.below(16) {
        0 | 1 => (valid(rng), Kind::Valid),
        2 | 3 => (rng.bytes(4096), Kind::Raw),
        4 | 5 => {
            let mut bytes = rng.bytes(4096);
            reframe(rng, &mut bytes);
            (bytes, Kind::Raw)
        }
        _ => {
            let mut bytes = valid(rng);
            let donor = valid(rng);
            mutate(rng, &mut bytes, &donor);
            if !rng.one_in(4) {
                reframe(rng, &mut bytes);
            }
            (bytes, Kind::Mutated)
        }
    };
    Input {
        bytes,
        kind,
        aux: 0,
    }
}

fn no_envelope(_: &mut Rng, _: &mut Vec<u8>) {}

// ---------------------------------------------------------------------------------------------
// Generated values: every variant of every type the decoders read.

fn batch_id(r: &mut Rng) -> BatchId {
    if r.one_in(4) {
        BatchId(r.array())
    } else {
        BatchId::v7(r.below(1 << 48), r.array())
    }
}

fn session_id(r: &mut Rng) -> SessionId {
    SessionId(r.array())
}

fn node_id(r: &mut Rng) -> u64 {
    if r.one_in(8) {
        r.number()
    } else {
        1 + r.below(7)
    }
}

fn blob(r: &mut Rng, max: usize) -> Vec<u8> {
    r.bytes(max)
}

fn some<T>(r: &mut Rng, make: impl FnOnce(&mut Rng) -> T) -> Option<T> {
    if r.flag() { Some(make(r)) } else { None }
}

fn list<T>(r: &mut Rng, max: u64, mut make: impl FnMut(&mut Rng) -> T) -> Vec<T> {
    (0..r.below(max + 1)).map(|_| make(r)).collect()
}

fn message(r: &mut Rng) -> Message {
    Message {
        topic: r.name(),
        key: some(r, |r| Bytes::from(blob(r, 16))),
        payload: Bytes::from(blob(r, 96)),
        headers: list(r, 2, |r| (r.name(), Bytes::from(blob(r, 8)))),
    }
}

fn precondition(r: &mut Rng) -> Precondition {
    match r.below(4) {
        0 => Precondition::TopicOffset {
            topic: r.name(),
            offset: r.number(),
        },
        1 => Precondition::BatchCommitted { batch: batch_id(r) },
        2 => Precondition::LockHeld {
            name: r.name(),
            token: r.number(),
        },
        _ => Precondition::Leader {
            election: r.name(),
            epoch: r.number(),
        },
    }
}

fn batch(r: &mut Rng) -> Batch {
    Batch {
        id: batch_id(r),
        messages: list(r, 4, message),
        preconditions: list(r, 2, precondition),
    }
}

fn mutex_kind(r: &mut Rng) -> MutexKind {
    r.pick(&[MutexKind::Lock, MutexKind::Election])
}

fn reject_reason(r: &mut Rng) -> RejectReason {
    match r.below(3) {
        0 => RejectReason::TopicOffset {
            topic: r.name(),
            expected: r.number(),
            actual: r.number(),
        },
        1 => RejectReason::BatchNotCommitted { batch: batch_id(r) },
        _ => RejectReason::Fenced {
            kind: mutex_kind(r),
            name: r.name(),
            token: r.number(),
            current: some(r, Rng::number),
        },
    }
}

fn outcome(r: &mut Rng) -> Outcome {
    if r.flag() {
        Outcome::Committed {
            seq: r.number(),
            index: r.number(),
        }
    } else {
        Outcome::Rejected {
            reason: reject_reason(r),
        }
    }
}

fn registered(r: &mut Rng) -> Registered {
    Registered {
        outcome: outcome(r),
        content: r.next(),
    }
}

fn ids(r: &mut Rng, max: u64) -> BTreeSet<u64> {
    list(r, max, node_id).into_iter().collect()
}

fn membership(r: &mut Rng) -> Membership {
    let voters = ids(r, 5);
    let learners = ids(r, 2);
    let addresses = voters
        .iter()
        .chain(&learners)
        .map(|id| (*id, format!("10.0.0.{}:7001", id % 250)))
        .collect();
    Membership {
        promote_when_ready: learners.iter().copied().filter(|_| r.flag()).collect(),
        voters,
        learners,
        addresses,
        retired: ids(r, 2),
    }
}

fn membership_change(r: &mut Rng) -> MembershipChange {
    match r.below(3) {
        0 => MembershipChange::AddLearner {
            id: node_id(r),
            address: r.name(),
            promote: r.flag(),
        },
        1 => MembershipChange::Promote { id: node_id(r) },
        _ => MembershipChange::Remove { id: node_id(r) },
    }
}

fn membership_error(r: &mut Rng) -> MembershipError {
    let id = node_id(r);
    let count = r.below(10) as usize;
    match r.below(15) {
        0 => MembershipError::NotLeader {
            leader_hint: some(r, node_id),
        },
        1 => MembershipError::TransferInProgress,
        2 => MembershipError::TermNotStarted,
        3 => MembershipError::ChangeInProgress { index: r.number() },
        4 => MembershipError::InvalidId,
        5 => MembershipError::Retired(id),
        6 => MembershipError::AlreadyMember(id),
        7 => MembershipError::NotAMember(id),
        8 => MembershipError::NotALearner(id),
        9 => MembershipError::LastVoter(id),
        10 => MembershipError::InvalidAddress {
            bytes: count,
            limit: 256,
        },
        11 => MembershipError::TooManyLearners { limit: count },
        12 => MembershipError::TooManyVoters { limit: count },
        13 => MembershipError::LearnerBehind {
            id,
            match_index: r.number(),
            last_index: r.number(),
        },
        _ => MembershipError::WouldLoseQuorum {
            reachable: count,
            quorum: count / 2 + 1,
        },
    }
}

fn batch_error(r: &mut Rng) -> BatchError {
    let (count, limit) = (r.number(), r.number());
    match r.below(11) {
        0 => BatchError::Empty,
        1 => BatchError::TooManyMessages { count, limit },
        2 => BatchError::TooLarge {
            bytes: count,
            limit,
        },
        3 => BatchError::TooManyTopics { count, limit },
        4 => BatchError::TopicNameTooLong {
            bytes: count,
            limit,
        },
        5 => BatchError::EmptyTopicName,
        6 => BatchError::KeyTooLong {
            bytes: count,
            limit,
        },
        7 => BatchError::TooManyHeaders { count, limit },
        8 => BatchError::TooManyPreconditions { count, limit },
        9 => BatchError::NotUuidV7 { id: batch_id(r) },
        _ => BatchError::BadMutexName {
            bytes: count,
            limit,
        },
    }
}

fn coord_refusal(r: &mut Rng) -> CoordRefusal {
    match r.below(5) {
        0 => CoordRefusal::SessionGone(session_id(r)),
        1 => CoordRefusal::NotOwner {
            session: session_id(r),
            owner: r.name(),
        },
        2 => CoordRefusal::TtlOutOfRange {
            ttl_ms: r.number(),
            min_ms: r.number(),
            max_ms: r.number(),
        },
        3 => CoordRefusal::Limit {
            what: r.name(),
            limit_name: r.name(),
            limit: r.number(),
        },
        _ => CoordRefusal::NotLeader {
            name: r.name(),
            session: session_id(r),
            epoch: r.number(),
        },
    }
}

fn leader_change(r: &mut Rng) -> LeaderChange {
    LeaderChange {
        revision: r.number(),
        leader: some(r, |r| (r.number(), blob(r, 16))),
    }
}

fn busy_code(r: &mut Rng) -> BusyCode {
    r.pick(&[
        BusyCode::Backpressure,
        BusyCode::TransferInProgress,
        BusyCode::Stopping,
        BusyCode::ProposalOverwritten,
        BusyCode::ReadLost,
        BusyCode::TooManyReads,
        BusyCode::OutcomeUnknown,
        BusyCode::StorageFull,
        BusyCode::NoLeader,
        BusyCode::Quota,
    ])
}

fn refused_code(r: &mut Rng) -> RefusedCode {
    r.pick(&[
        RefusedCode::BadFrame,
        RefusedCode::TooLarge,
        RefusedCode::Unsupported,
        RefusedCode::StorageFailed,
        RefusedCode::IdConflict,
        RefusedCode::BeyondHorizon,
        RefusedCode::Forbidden,
        RefusedCode::LimitExceeded,
    ])
}

fn node_status(r: &mut Rng) -> NodeStatus {
    NodeStatus {
        id: node_id(r),
        address: r.name(),
        role: r.pick(&[
            NodeRole::Follower,
            NodeRole::PreCandidate,
            NodeRole::Candidate,
            NodeRole::Leader,
        ]),
        term: r.number(),
        leader: some(r, node_id),
        last_index: r.number(),
        commit_index: r.number(),
        applied_index: r.number(),
        durable_index: r.number(),
        reachable_peers: list(r, 4, node_id),
        storage_full: r.flag(),
        tick_gap_max_us: r.number(),
        late_not_leader_refusals: r.number(),
        applied_stamp_ms: r.number(),
        engine: r.pick(&ordo_common::EngineKind::ALL),
    }
}

fn member_list(r: &mut Rng) -> MemberList {
    MemberList {
        cluster: ClusterId(r.array()),
        leader: node_id(r),
        term: r.number(),
        last_index: r.number(),
        membership_index: r.number(),
        membership_committed: r.flag(),
        members: list(r, 4, |r| MemberInfo {
            id: node_id(r),
            address: r.name(),
            voter: r.flag(),
            reachable: r.flag(),
            match_index: r.number(),
            promote_when_ready: r.flag(),
        }),
        retired: list(r, 2, node_id),
    }
}

fn client_request(r: &mut Rng) -> ClientRequest {
    match r.below(17) {
        0 => ClientRequest::Hello,
        1 => ClientRequest::Status,
        2 => ClientRequest::Propose {
            payload: Bytes::from(blob(r, 256)),
        },
        3 => ClientRequest::Submit { batch: batch(r) },
        4 => ClientRequest::BatchStatus { id: batch_id(r) },
        5 => ClientRequest::Subscribe {
            from_seq: r.number(),
            topics: list(r, 3, Rng::name),
        },
        6 => ClientRequest::SnapshotSave,
        7 => ClientRequest::OpenSession {
            session: session_id(r),
            ttl_ms: r.number(),
            owner: r.name(),
        },
        8 => ClientRequest::KeepAlive {
            session: session_id(r),
        },
        9 => ClientRequest::CloseSession {
            session: session_id(r),
        },
        10 => ClientRequest::Acquire {
            kind: mutex_kind(r),
            name: r.name(),
            session: session_id(r),
            value: blob(r, 32),
            lock_delay_ms: r.number(),
        },
        11 => ClientRequest::Release {
            kind: mutex_kind(r),
            name: r.name(),
            session: session_id(r),
        },
        12 => ClientRequest::Proclaim {
            name: r.name(),
            session: session_id(r),
            epoch: r.number(),
            value: blob(r, 32),
        },
        13 => ClientRequest::Observe {
            name: r.name(),
            after_revision: r.number(),
        },
        14 => ClientRequest::CoordList,
        15 => ClientRequest::MemberList,
        _ => ClientRequest::MemberChange {
            change: membership_change(r),
        },
    }
}

fn client_response(r: &mut Rng) -> ClientResponse {
    match r.below(26) {
        0 => ClientResponse::Welcome { node: node_id(r) },
        1 => ClientResponse::Status(Box::new(node_status(r))),
        2 => ClientResponse::Committed {
            index: r.number(),
            term: r.number(),
        },
        3 => ClientResponse::NotLeader {
            leader: some(r, node_id),
            leader_address: some(r, Rng::name),
        },
        4 => ClientResponse::Refused {
            code: refused_code(r),
            reason: r.name(),
        },
        5 => ClientResponse::Outcome(outcome(r)),
        6 => ClientResponse::Unknown,
        7 => ClientResponse::Invalid(batch_error(r)),
        8 => ClientResponse::Busy {
            code: busy_code(r),
            reason: r.name(),
        },
        9 => ClientResponse::Batch(CommittedBatch {
            seq: r.number(),
            index: r.number(),
            id: batch_id(r),
            messages: list(r, 3, message),
        }),
        10 => ClientResponse::Compacted {
            first_seq: r.number(),
        },
        11 => ClientResponse::BeyondHorizon {
            floor_ms: r.number(),
        },
        12 => ClientResponse::SnapshotChunk {
            data: Bytes::from(blob(r, 512)),
        },
        13 => ClientResponse::SnapshotEnd {
            applied_index: r.number(),
            applied_term: r.number(),
            bytes: r.number(),
        },
        14 => ClientResponse::SessionOpened { ttl_ms: r.number() },
        15 => ClientResponse::SessionRenewed,
        16 => ClientResponse::SessionGone {
            session: session_id(r),
        },
        17 => ClientResponse::Held { token: r.number() },
        18 => ClientResponse::Released { held: r.flag() },
        19 => ClientResponse::CoordRefused(coord_refusal(r)),
        20 => ClientResponse::LeaderChanges {
            changes: list(r, 3, leader_change),
            gap: r.flag(),
        },
        21 => ClientResponse::CoordList {
            sessions: list(r, 2, |r| SessionInfo {
                id: session_id(r),
                owner: r.name(),
                ttl_ms: r.number(),
                renewed_ms: r.number(),
                mutexes: list(r, 2, |r| (mutex_kind(r), r.name())),
            }),
            mutexes: list(r, 2, |r| MutexInfo {
                kind: mutex_kind(r),
                name: r.name(),
                holder: some(r, |r| (session_id(r), r.number(), blob(r, 8))),
                waiters: list(r, 2, session_id),
                free_at_ms: r.number(),
            }),
        },
        22 => ClientResponse::Done,
        23 => ClientResponse::Members(Box::new(member_list(r))),
        24 => ClientResponse::MembershipChanged {
            index: r.number(),
            membership: Box::new(membership(r)),
        },
        _ => ClientResponse::MembershipRefused(membership_error(r)),
    }
}

fn coord_op(r: &mut Rng) -> CoordOp {
    match r.below(8) {
        0 => CoordOp::Open {
            session: session_id(r),
            owner: r.name(),
            ttl_ms: r.number(),
        },
        1 => CoordOp::KeepAlive {
            sessions: list(r, 3, session_id),
        },
        2 => CoordOp::Expire {
            session: session_id(r),
            renewed_index: r.number(),
        },
        3 => CoordOp::Close {
            session: session_id(r),
        },
        4 => CoordOp::Acquire {
            kind: mutex_kind(r),
            name: r.name(),
            session: session_id(r),
            value: blob(r, 16),
            lock_delay_ms: r.number(),
        },
        5 => CoordOp::Release {
            kind: mutex_kind(r),
            name: r.name(),
            session: session_id(r),
        },
        6 => CoordOp::Proclaim {
            name: r.name(),
            session: session_id(r),
            epoch: r.number(),
            value: blob(r, 16),
        },
        _ => CoordOp::Wake {
            mutexes: list(r, 3, |r| (mutex_kind(r), r.name())),
        },
    }
}

fn command(r: &mut Rng) -> Command {
    match r.below(3) {
        0 => Command::Batch {
            batch: batch(r),
            stamp_ms: r.number(),
        },
        1 => Command::Raw(Bytes::from(blob(r, 64))),
        _ => Command::Coord {
            op: coord_op(r),
            stamp_ms: r.number(),
        },
    }
}

fn entry_payload(r: &mut Rng) -> EntryPayload {
    match r.below(4) {
        0 => EntryPayload::Noop,
        1 => EntryPayload::Normal(Bytes::from(blob(r, 64))),
        2 => EntryPayload::Normal(Bytes::from(command(r).encode())),
        _ => EntryPayload::Config(membership(r)),
    }
}

fn entry(r: &mut Rng) -> Entry {
    Entry {
        term: r.number(),
        index: r.number(),
        payload: entry_payload(r),
    }
}

fn log_id(r: &mut Rng) -> LogId {
    LogId::new(r.number(), r.number())
}

fn hard_state(r: &mut Rng) -> HardState {
    HardState {
        term: r.number(),
        vote: some(r, node_id),
    }
}

fn raft_message(r: &mut Rng) -> ordo_core::Message {
    let body = match r.below(7) {
        0 => Body::Vote {
            last_log_id: log_id(r),
            pre_vote: r.flag(),
            leader_transfer: r.flag(),
        },
        1 => Body::VoteResponse {
            pre_vote: r.flag(),
            granted: r.flag(),
        },
        2 => Body::Append {
            prev_log_id: log_id(r),
            entries: list(r, 3, entry),
            commit_index: r.number(),
        },
        3 => Body::AppendResponse(if r.flag() {
            AppendResponse::Accepted {
                match_index: r.number(),
            }
        } else {
            AppendResponse::Rejected {
                rejected_prev_index: r.number(),
                hint: RejectHint {
                    last_index: r.number(),
                    conflict: some(r, |r| ConflictHint {
                        term: r.number(),
                        first_index: r.number(),
                    }),
                },
            }
        }),
        4 => Body::Heartbeat {
            commit_index: r.number(),
            read_round: r.number(),
        },
        5 => Body::HeartbeatResponse {
            read_round: r.number(),
        },
        _ => Body::TimeoutNow,
    };
    ordo_core::Message {
        term: r.number(),
        body,
    }
}

fn peer_frame(r: &mut Rng) -> PeerFrame {
    match r.below(8) {
        0 => PeerFrame::Hello {
            from: node_id(r),
            to: node_id(r),
            cluster: ClusterId(r.array()),
            incarnation: r.next(),
        },
        1 => PeerFrame::Welcome,
        2 => PeerFrame::Refused { reason: r.name() },
        3 | 4 => PeerFrame::Raft(raft_message(r)),
        5 => PeerFrame::SnapshotBegin {
            term: r.number(),
            last_included: log_id(r),
            bytes: r.number(),
        },
        6 => {
            let data = blob(r, 1024);
            PeerFrame::SnapshotChunk {
                crc: if r.flag() {
                    crc32(&data)
                } else {
                    r.next() as u32
                },
                data: Bytes::from(data),
            }
        }
        _ => PeerFrame::SnapshotEnd,
    }
}

fn session(r: &mut Rng) -> Session {
    Session {
        owner: r.name(),
        ttl_ms: r.number(),
        renewed_index: r.number(),
        renewed_ms: r.number(),
        mutexes: list(r, 3, |r| (mutex_kind(r), r.name()))
            .into_iter()
            .collect(),
    }
}

fn mutex(r: &mut Rng) -> Mutex {
    Mutex {
        holder: some(r, |r| Holder {
            session: session_id(r),
            token: r.number(),
            value: blob(r, 16),
            lock_delay_ms: r.number(),
        }),
        waiters: list(r, 3, |r| Waiter {
            session: session_id(r),
            value: blob(r, 16),
            lock_delay_ms: r.number(),
        })
        .into_iter()
        .collect::<VecDeque<_>>(),
        free_at_ms: r.number(),
        history: list(r, 3, leader_change).into_iter().collect(),
    }
}

/// One stored row of the coordination state: a session, a lock or election, the membership.
fn coord_row(r: &mut Rng) -> CoordRow {
    match r.below(4) {
        0 | 1 => {
            let mut key = vec![b's'];
            key.extend(r.array::<16>());
            (key, codec::encode(&session(r)))
        }
        2 => {
            let mut key = vec![r.pick(b"le")];
            key.extend(r.name().into_bytes());
            (key, codec::encode(&mutex(r)))
        }
        _ => (b"m".to_vec(), codec::encode(&membership(r))),
    }
}

fn snapshot_state(r: &mut Rng) -> SnapshotState {
    let offsets: BTreeMap<String, u64> =
        list(r, 4, |r| (r.name(), r.number())).into_iter().collect();
    let registry: BTreeMap<[u8; 16], Vec<u8>> =
        list(r, 4, |r| (batch_id(r).0, codec::encode(&registered(r))))
            .into_iter()
            .collect();
    let coord: BTreeMap<Vec<u8>, Vec<u8>> = list(r, 4, coord_row).into_iter().collect();
    SnapshotState {
        applied: log_id(r),
        last_seq: r.number(),
        log_time_ms: r.number(),
        registry_floor_ms: r.number(),
        offsets: offsets.into_iter().collect(),
        registry: registry.into_iter().collect(),
        coord: coord.into_iter().collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Envelopes.

/// CRC-32 (IEEE), as `crc32fast` computes it, to reseal mutated snapshots.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    0xEDB8_8320 ^ (crc >> 1)
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    !bytes.iter().fold(!0u32, |crc, byte| {
        TABLE[((crc ^ u32::from(*byte)) & 0xFF) as usize] ^ (crc >> 8)
    })
}

/// 1 to 3 frames of generated values.
fn frames<T: Serialize>(r: &mut Rng, make: impl Fn(&mut Rng) -> T) -> Vec<u8> {
    let count = if r.one_in(4) { 2 + r.below(2) } else { 1 };
    (0..count).flat_map(|_| encode_frame(&make(r))).collect()
}

/// Makes `bytes` one frame again: the length field counts what follows, the version is right.
fn reframe_frame(r: &mut Rng, bytes: &mut [u8]) {
    if bytes.len() < 5 {
        return;
    }
    let length = (bytes.len() - 4) as u32;
    bytes[..4].copy_from_slice(&length.to_le_bytes());
    if !r.one_in(8) {
        bytes[4] = WIRE_VERSION;
    }
}

/// Reseals a storage record: the format byte and the checksum over the key and the body.
fn reseal_record(r: &mut Rng, key: &[u8], bytes: &mut Vec<u8>) {
    if bytes.len() < 5 {
        return;
    }
    let resealed = record::encode_bytes(key, &bytes[5..]);
    *bytes = resealed;
    if r.one_in(16) {
        bytes[0] = r.next() as u8;
    }
}

const SNAPSHOT_HEADER_BYTES: usize = 20;

/// Repairs a snapshot file around its body: magic and version (usually), the body's length
/// (usually), the trailing checksum (always).
fn reseal_snapshot(r: &mut Rng, bytes: &mut [u8]) {
    if bytes.len() < SNAPSHOT_HEADER_BYTES + 4 {
        return;
    }
    if !r.one_in(8) {
        bytes[..8].copy_from_slice(b"ORDOSNAP");
        bytes[8..12].copy_from_slice(&ordo_node::snapshot::SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    }
    if !r.one_in(8) {
        let body = (bytes.len() - SNAPSHOT_HEADER_BYTES - 4) as u64;
        bytes[12..20].copy_from_slice(&body.to_le_bytes());
    }
    let end = bytes.len() - 4;
    let crc = crc32(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
}

// ---------------------------------------------------------------------------------------------
// Frames.

/// An `AsyncRead` over a slice that hands out at most `chunk` bytes per read, so that the frame
/// reader's partial-read paths run too.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let count = self.data.len().min(self.chunk).min(buf.remaining());
        let (now, rest) = self.data.split_at(count);
        buf.put_slice(now);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a tokio runtime")
}

/// Reads frames from `input` until the stream ends or a frame is refused; accepted when the
/// whole stream is well-formed frames, re-encoded.
fn read_frames<T: DeserializeOwned + Serialize>(
    runtime: &Runtime,
    input: &Input,
    limit: u64,
) -> Verdict {
    let chunk = match input.aux {
        0 => usize::MAX,
        chunk => chunk as usize,
    };
    let mut reader = Trickle {
        data: &input.bytes,
        chunk,
    };
    runtime.block_on(async {
        let mut again = Vec::new();
        for _ in 0..FRAMES_PER_INPUT_MAX {
            match read_frame::<T, _>(&mut reader, limit).await {
                Ok(Some(value)) => again.extend(encode_frame(&value)),
                Ok(None) => return Verdict::Reencoded(again),
                Err(_) => return Verdict::Refused,
            }
        }
        Verdict::Accepted
    })
}

fn frame_input<T: Serialize>(r: &mut Rng, make: fn(&mut Rng) -> T) -> Input {
    let mut input = generate_input(r, |r| frames(r, make), |r, bytes| reframe_frame(r, bytes));
    input.aux = if r.one_in(4) { 1 + r.below(7) } else { 0 };
    input
}

#[test]
fn frames_client_request() {
    let runtime = runtime();
    fuzz(
        "frames_client_request",
        2_000_000,
        FRAME_BOUND,
        |r| frame_input(r, client_request),
        |input| read_frames::<ClientRequest>(&runtime, input, CLIENT_REQUEST_BYTES_MAX),
    );
}

#[test]
fn frames_client_response() {
    let runtime = runtime();
    fuzz(
        "frames_client_response",
        1_800_000,
        FRAME_BOUND,
        |r| frame_input(r, client_response),
        |input| read_frames::<ClientResponse>(&runtime, input, CLIENT_RESPONSE_BYTES_MAX),
    );
}

#[test]
fn frames_peer() {
    let runtime = runtime();
    fuzz(
        "frames_peer",
        1_600_000,
        FRAME_BOUND,
        |r| frame_input(r, peer_frame),
        |input| read_frames::<PeerFrame>(&runtime, input, PEER_FRAME_BYTES_MAX),
    );
}

// ---------------------------------------------------------------------------------------------
// The codec, directly.

/// Decodes `bytes` as a `T` with `limit`; `Some(re-encoding)` if it decodes.
fn decode_as<T: DeserializeOwned + Serialize>(bytes: &[u8], limit: u64) -> Option<Vec<u8>> {
    codec::decode::<T>(bytes, limit)
        .ok()
        .map(|value| codec::encode(&value))
}

/// Every type the codec reads from the network or the disk outside a frame or a snapshot, with
/// the limit its caller passes.
fn decode_every_type(bytes: &[u8]) -> Vec<Option<Vec<u8>>> {
    vec![
        decode_as::<Entry>(bytes, FRAME_BYTES_MAX),
        decode_as::<EntryPayload>(bytes, ENTRY_PAYLOAD_BYTES_MAX + 64),
        decode_as::<HardState>(bytes, 1 << 20),
        decode_as::<LogId>(bytes, 1 << 20),
        decode_as::<ClusterId>(bytes, 1 << 20),
        decode_as::<u64>(bytes, 1 << 20),
        decode_as::<Registered>(bytes, OUTCOME_BYTES_MAX),
        decode_as::<Session>(bytes, COORD_ROW_BYTES_MAX),
        decode_as::<Mutex>(bytes, COORD_ROW_BYTES_MAX),
        decode_as::<Membership>(bytes, COORD_ROW_BYTES_MAX),
        decode_as::<Command>(bytes, ENTRY_PAYLOAD_BYTES_MAX),
        decode_as::<ordo_core::Message>(bytes, FRAME_BYTES_MAX),
        decode_as::<ClientRequest>(bytes, FRAME_BYTES_MAX),
        decode_as::<ClientResponse>(bytes, FRAME_BYTES_MAX),
        decode_as::<PeerFrame>(bytes, FRAME_BYTES_MAX),
    ]
}

fn any_value(r: &mut Rng) -> Vec<u8> {
    match r.below(15) {
        0 => codec::encode(&entry(r)),
        1 => codec::encode(&entry_payload(r)),
        2 => codec::encode(&hard_state(r)),
        3 => codec::encode(&log_id(r)),
        4 => codec::encode(&ClusterId(r.array())),
        5 => codec::encode(&r.number()),
        6 => codec::encode(&registered(r)),
        7 => codec::encode(&session(r)),
        8 => codec::encode(&mutex(r)),
        9 => codec::encode(&membership(r)),
        10 => codec::encode(&command(r)),
        11 => codec::encode(&raft_message(r)),
        12 => codec::encode(&client_request(r)),
        13 => codec::encode(&client_response(r)),
        _ => codec::encode(&peer_frame(r)),
    }
}

#[test]
fn codec_values() {
    fuzz(
        "codec_values",
        500_000,
        CODEC_BOUND,
        |r| generate_input(r, any_value, no_envelope),
        |input| {
            let decoded = decode_every_type(&input.bytes);
            // A valid input is the encoding of one of the types: that one must give it back.
            match decoded
                .iter()
                .flatten()
                .find(|again| **again == input.bytes)
            {
                Some(again) => Verdict::Reencoded(again.clone()),
                None => match decoded.into_iter().flatten().next() {
                    Some(again) => Verdict::Reencoded(again),
                    None => Verdict::Refused,
                },
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Log entries: the command a normal entry carries, and the stored record.

#[test]
fn log_commands() {
    fuzz(
        "log_commands",
        650_000,
        CODEC_BOUND,
        |r| generate_input(r, |r| command(r).encode(), no_envelope),
        |input| {
            let bytes = &input.bytes;
            // What storage reads without decoding, and the content hash of a batch.
            let _ = Command::stamp_of(bytes);
            let _ = ordo_core::state::content_hash(Command::batch_bytes(bytes));
            // What subscriptions read: the committed batch an entry carries.
            let entry = Entry {
                term: 1,
                index: 7,
                payload: EntryPayload::Normal(Bytes::copy_from_slice(bytes)),
            };
            let _ = ordo_node::committed_batch(3, &entry);
            match Command::decode(bytes) {
                Ok(command) => Verdict::Reencoded(command.encode()),
                Err(_) => Verdict::Refused,
            }
        },
    );
}

#[test]
fn storage_entries() {
    fuzz(
        "storage_entries",
        2_000_000,
        CODEC_BOUND,
        |r| {
            let index = if r.flag() { r.below(64) } else { r.number() };
            let key = record::entry_key(index);
            let mut input = generate_input(
                r,
                |r| {
                    let mut entry = entry(r);
                    entry.index = index;
                    record::encode_entry(&entry)
                },
                |r, bytes| reseal_record(r, &key, bytes),
            );
            input.aux = index;
            input
        },
        |input| {
            let index = input.aux;
            let _ = record::entry_term(index, &input.bytes);
            let _ = record::entry_facts(index, &input.bytes);
            match record::decode_entry(index, &input.bytes) {
                Ok(entry) => Verdict::Reencoded(record::encode_entry(&entry)),
                Err(_) => Verdict::Refused,
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// State records.

/// The kinds of state record a store keeps, by the key they are stored under.
const STATE_RECORDS: [&[u8]; 8] = [
    b"hard_state",
    b"applied",
    b"purged",
    b"last_seq",
    b"cluster_id",
    b"\0\0\0\0\0\0\0\x09",
    b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10",
    b"sfuzz-session-key",
];

fn state_record(r: &mut Rng, kind: u64) -> Vec<u8> {
    let key = STATE_RECORDS[kind as usize];
    match kind {
        0 => record::encode_value(key, &hard_state(r)),
        1 | 2 => record::encode_value(key, &log_id(r)),
        3 | 5 => record::encode_value(key, &r.number()),
        4 => record::encode_value(key, &ClusterId(r.array())),
        6 => record::encode_bytes(key, &codec::encode(&registered(r))),
        _ => {
            let (_, value) = coord_row(r);
            record::encode_bytes(key, &value)
        }
    }
}

/// Decodes a state record as the store does for its kind; for raw-bytes records (registry
/// outcomes, coordination rows), also what the node does with the bytes at start.
fn decode_state_record(kind: u64, bytes: &[u8]) -> Verdict {
    let key = STATE_RECORDS[kind as usize];
    fn again<T: Serialize>(key: &[u8], value: Result<T, String>) -> Verdict {
        match value {
            Ok(value) => Verdict::Reencoded(record::encode_value(key, &value)),
            Err(_) => Verdict::Refused,
        }
    }
    match kind {
        0 => again(key, record::decode_value::<HardState>(key, bytes)),
        1 | 2 => again(key, record::decode_value::<LogId>(key, bytes)),
        3 | 5 => again(key, record::decode_value::<u64>(key, bytes)),
        4 => again(key, record::decode_value::<ClusterId>(key, bytes)),
        6 => {
            let Ok(outcome) = record::decode_bytes(key, bytes) else {
                return Verdict::Refused;
            };
            let stored = StoredTables {
                registry: vec![(key.try_into().expect("16 bytes"), outcome.to_vec())],
                ..StoredTables::default()
            };
            match ordo_node::recovered_tables(&StoreState::default(), stored) {
                Ok(_) => Verdict::Reencoded(record::encode_bytes(key, outcome)),
                Err(_) => Verdict::Refused,
            }
        }
        _ => {
            let Ok(row) = record::decode_bytes(key, bytes) else {
                return Verdict::Refused;
            };
            // The row's key says what it holds: try it as each kind.
            let accepted = [b"s0123456789abcdef".as_slice(), b"lfuzz", b"efuzz", b"m"]
                .iter()
                .filter(|key| {
                    ordo_core::state::CoordState::restore(&[(key.to_vec(), row.to_vec())]).is_ok()
                })
                .count();
            if accepted > 0 {
                Verdict::Reencoded(record::encode_bytes(key, row))
            } else {
                Verdict::Refused
            }
        }
    }
}

#[test]
fn storage_values() {
    fuzz(
        "storage_values",
        3_000_000,
        CODEC_BOUND,
        |r| {
            let kind = r.below(STATE_RECORDS.len() as u64);
            let key = STATE_RECORDS[kind as usize];
            let mut input = generate_input(
                r,
                |r| state_record(r, kind),
                |r, bytes| reseal_record(r, key, bytes),
            );
            input.aux = kind;
            input
        },
        |input| decode_state_record(input.aux, &input.bytes),
    );
}

// ---------------------------------------------------------------------------------------------
// Snapshots.

/// What a node does with a decoded snapshot when it installs it: decode the registry's records
/// and the coordination rows, and restore the batch state from them.
fn install(state: &SnapshotState) -> bool {
    let stored = StoredTables {
        offsets: state.offsets.clone(),
        registry: state.registry.clone(),
        coord: state.coord.clone(),
    };
    let store = StoreState {
        last_seq: state.last_seq,
        log_time_ms: state.log_time_ms,
        registry_floor_ms: state.registry_floor_ms,
        ..StoreState::default()
    };
    ordo_node::recovered_tables(&store, stored)
        .ok()
        .and_then(|tables| BatchState::restore(RegistryLimits::default(), tables).ok())
        .is_some()
}

/// A snapshot decoder's bound: what its body may claim, in proportion to its length (up to
/// 16 GiB: a full registry decodes to more than one frame's worth of memory).
const SNAPSHOT_BOUND: Bound = Bound::Claim { snapshot: true };

#[test]
fn snapshot_files() {
    fuzz(
        "snapshot_files",
        800_000,
        SNAPSHOT_BOUND,
        |r| {
            generate_input(
                r,
                |r| encode_snapshot(&snapshot_state(r)),
                |r, bytes| reseal_snapshot(r, bytes),
            )
        },
        |input| match decode_snapshot(&input.bytes) {
            Ok(state) if install(&state) => Verdict::Reencoded(encode_snapshot(&state)),
            _ => Verdict::Refused,
        },
    );
}

#[test]
fn snapshot_bodies() {
    fuzz(
        "snapshot_bodies",
        700_000,
        SNAPSHOT_BOUND,
        |r| generate_input(r, |r| codec::encode(&snapshot_state(r)), no_envelope),
        |input| match codec::decode_snapshot_body::<SnapshotState>(&input.bytes, SNAPSHOT_BYTES_MAX)
        {
            Ok(state) if install(&state) => Verdict::Reencoded(codec::encode(&state)),
            _ => Verdict::Refused,
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration files.

/// Pieces of TOML (and of Ordo's values) to insert into a configuration file.
const TOML_TOKENS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "{",
    "}",
    ",",
    ".",
    "\n",
    "#",
    "\\",
    "\\u0000",
    "\\U0010FFFF",
    "1e308",
    "-0",
    "nan",
    "inf",
    "0x7FFFFFFFFFFFFFFF",
    "-9223372036854775808",
    "9223372036854775808",
    "18446744073709551615",
    "1979-05-27T07:32:00Z",
    "\"99999999999999h\"",
    "\"18446744073709551615GiB\"",
    "\"16EiB\"",
    "\"0ms\"",
    "\"1ns\"",
    "true",
    "[raft]",
    "[peers]",
    "[transport]",
    "[auth]",
    "[[auth.acl]]\nidentity = \"svc\"\nwrite = [\"orders.*\"]\n",
    "join = [\"127.0.0.1:1\"]\n",
    "a.b.c.d = 1\n",
    "x = { y = { z = [[[1]]] } }\n",
];

/// Text-aware mutations on top of the byte-level ones: TOML tokens, repeated lines.
fn mutate_text(r: &mut Rng, text: &mut Vec<u8>, donor: &[u8]) {
    match r.below(3) {
        0 => {
            for _ in 0..1 + r.below(3) {
                let at = r.index(text.len() + 1);
                let token = r.pick(TOML_TOKENS).as_bytes();
                text.splice(at..at, token.iter().copied());
            }
        }
        1 => {
            let lines: Vec<&[u8]> = text.split(|byte| *byte == b'\n').collect();
            let line = r.pick(&lines).to_vec();
            let copies = 1 + r.len(512);
            let at = r.index(text.len() + 1);
            let mut repeated = Vec::new();
            for _ in 0..copies {
                repeated.extend_from_slice(&line);
                repeated.push(b'\n');
            }
            text.splice(at..at, repeated);
        }
        _ => mutate(r, text, donor),
    }
    text.truncate(INPUT_BYTES_MAX);
}

/// A valid configuration: the defaults with peers, an id among them, and some values changed
/// within their rules, as TOML.
fn valid_config(r: &mut Rng) -> Vec<u8> {
    if r.one_in(4) {
        return default_config_text().into_bytes();
    }
    let mut table = toml::Table::try_from(NodeConfig::default()).expect("defaults serialize");
    let voters = r.pick(&[1u64, 3, 5]);
    let first = 1 + r.below(100);
    let mut peers = toml::Table::new();
    for id in first..first + voters {
        // IP addresses only: whether `localhost` resolves depends on the machine.
        let address = if r.flag() {
            format!("127.0.0.1:{}", 7000 + id)
        } else {
            format!("[::1]:{}", 7000 + id)
        };
        peers.insert(id.to_string(), toml::Value::String(address));
    }
    table.insert("peers".into(), toml::Value::Table(peers));
    table.insert(
        "id".into(),
        toml::Value::Integer((first + r.below(voters)) as i64),
    );
    let sizes = ["1MiB", "64MiB", "2GiB", "1048576", "512KiB"];
    let set = |table: &mut toml::Table, name: &str, key: &str, value: toml::Value| {
        if let Some(toml::Value::Table(section)) = table.get_mut(name)
            && section.contains_key(key)
        {
            section.insert(key.into(), value);
        }
    };
    if r.flag() {
        let value = toml::Value::String(r.pick(&sizes[..3]).into());
        set(&mut table, "registry", "bytes_max", value);
    }
    if r.flag() {
        let value = toml::Value::String(r.pick(&["1s", "10m", "24h", "7days"]).into());
        set(&mut table, "retention", "age", value);
    }
    if r.flag() {
        let value = toml::Value::String(r.pick(&sizes).into());
        set(&mut table, "storage", "cache", value);
    }
    if r.flag() {
        let value = toml::Value::Integer(r.below(257) as i64);
        set(&mut table, "runtime", "worker_threads", value);
    }
    if r.flag() {
        let value = toml::Value::Boolean(r.flag());
        set(&mut table, "raft", "pre_vote", value);
    }
    toml::to_string(&table)
        .expect("a table serializes")
        .into_bytes()
}

/// Whether loading `text` could make the loader resolve a host name (a peer address that is
/// neither an IP address nor `localhost`): such inputs are skipped, to keep the test off the
/// network (a name lookup may also take seconds where DNS is unreachable).
fn needs_name_lookup(text: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return false;
    };
    let Some(toml::Value::Table(peers)) = table.get("peers") else {
        return false;
    };
    peers.values().any(|address| {
        let Some(address) = address.as_str() else {
            return false;
        };
        if address.parse::<std::net::SocketAddr>().is_ok() {
            return false;
        }
        match address.rsplit_once(':') {
            Some((host, port)) => {
                port.parse::<u16>().is_ok()
                    && host != "localhost"
                    && host.parse::<std::net::IpAddr>().is_err()
            }
            None => false,
        }
    })
}

#[test]
fn config_files() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("ordo.toml");
    // A stack overflow cannot be caught: should one abort the test, the input is in this file.
    eprintln!(
        "fuzz config_files: the input being decoded is in {}",
        path.display()
    );
    fuzz(
        "config_files",
        25_000,
        Bound::Linear,
        |r| {
            let (bytes, kind) = match r.below(16) {
                0..3 => (valid_config(r), Kind::Valid),
                3 => (r.bytes(2048), Kind::Raw),
                4 => (r.text(2048).into_bytes(), Kind::Raw),
                _ => {
                    let mut text = valid_config(r);
                    let donor = valid_config(r);
                    for _ in 0..1 + r.below(3) {
                        mutate_text(r, &mut text, &donor);
                    }
                    (text, Kind::Mutated)
                }
            };
            Input {
                bytes,
                kind,
                aux: 0,
            }
        },
        |input| {
            if needs_name_lookup(&input.bytes) {
                return Verdict::Skipped;
            }
            std::fs::write(&path, &input.bytes).expect("write the configuration file");
            let environment: [(String, String); 0] = [];
            match NodeConfig::load(Some(&path), environment, &Overrides::default()) {
                Ok(_) => Verdict::Accepted,
                Err(_) => Verdict::Refused,
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Small files of the data directory.

#[test]
fn small_files() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    fuzz(
        "small_files",
        15_000,
        Bound::Linear,
        |r| {
            // `id incarnation` lines; an `index term` marker.
            let valid = |r: &mut Rng| -> Vec<u8> {
                let lines = list(r, 5, |r| format!("{} {}\n", node_id(r), r.next()));
                let mut text = lines.concat();
                if r.one_in(4) {
                    text = format!("{} {}\n", r.number(), r.number());
                }
                text.into_bytes()
            };
            let mut input = generate_input(r, valid, no_envelope);
            if input.kind == Kind::Mutated && r.flag() {
                let donor = valid(r);
                mutate_text(r, &mut input.bytes, &donor);
            }
            input.aux = r.below(2);
            input
        },
        |input| {
            if input.aux == 0 {
                let file = dir.path().join(PEER_INCARNATIONS_FILE);
                std::fs::write(&file, &input.bytes).expect("write the incarnations file");
                let loaded = ordo_coordinator::transport::PeerIncarnations::load(dir.path());
                if loaded.is_ok() {
                    Verdict::Accepted
                } else {
                    Verdict::Refused
                }
            } else {
                let file = dir.path().join(MARKER_FILE_NAME);
                std::fs::write(&file, &input.bytes).expect("write the install marker");
                let recovered = snapshot_transfer::recover(dir.path(), 5);
                if recovered.is_ok() {
                    Verdict::Accepted
                } else {
                    Verdict::Refused
                }
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// TLS files.

/// The files of a TLS directory the node reads, by name.
const TLS_FILES: [&str; 4] = ["ca.pem", "ca.key", "node-1.pem", "node-1.key"];

/// Replaces one file of `dir` with the input, then loads the directory as a node does (and as
/// `ordo certs` does when a CA exists), and puts the original file back.
fn load_tls(dir: &Path, originals: &[Vec<u8>], input: &Input) -> Verdict {
    let which = input.aux as usize;
    let path = dir.join(TLS_FILES[which]);
    std::fs::write(&path, &input.bytes).expect("write a TLS file");
    let roots = ordo_net::tls::root_store(dir);
    let identity = ordo_net::tls::Identity::load(dir, "node-1");
    let configured = match (roots, identity) {
        (Ok(roots), Ok(identity)) => {
            ordo_net::tls::client_config(roots, identity, ordo_net::wire::CLIENT_ALPN).is_ok()
        }
        _ => false,
    };
    let issued = ordo_coordinator::certs::generate(dir, 1, &[]).is_ok();
    std::fs::write(&path, &originals[which]).expect("restore a TLS file");
    if configured && issued {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}

/// A PEM file's label and contents.
fn pem_parts(text: &[u8]) -> Option<(String, Vec<u8>)> {
    use base64::Engine as _;
    let text = std::str::from_utf8(text).ok()?;
    let rest = &text[text.find("-----BEGIN ")? + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let body_end = rest.find("-----END ")?;
    let body: String = rest
        .get(label_end + "-----".len()..body_end)?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    Some((rest[..label_end].to_string(), der))
}

/// `der` as a PEM file with `label`.
fn pem(label: &str, der: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    let _ = writeln!(text, "-----END {label}-----");
    text.into_bytes()
}

#[test]
fn tls_files() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    ordo_coordinator::certs::generate(dir.path(), 1, &[]).expect("generate certificates");
    let originals: Vec<Vec<u8>> = TLS_FILES
        .iter()
        .map(|name| std::fs::read(dir.path().join(name)).expect("a generated file"))
        .collect();
    let parts: Vec<(String, Vec<u8>)> = originals
        .iter()
        .map(|file| pem_parts(file).expect("a generated file is PEM"))
        .collect();
    fuzz(
        "tls_files",
        10_000,
        Bound::Linear,
        |r| {
            let which = r.index(TLS_FILES.len());
            let (label, der) = &parts[which];
            let (bytes, kind) = match r.below(8) {
                0 => (originals[which].clone(), Kind::Valid),
                1 => (r.bytes(4096), Kind::Raw),
                2 => {
                    let label = r.pick(&["CERTIFICATE", "PRIVATE KEY", "EC PRIVATE KEY"]);
                    (pem(label, &r.bytes(2048)), Kind::Raw)
                }
                3 => {
                    let mut text = originals[which].clone();
                    let donor = r.pick(&originals);
                    mutate(r, &mut text, &donor);
                    (text, Kind::Mutated)
                }
                // The DER inside the PEM, mutated, so that the certificate and key parsers see it.
                _ => {
                    let mut der = der.clone();
                    let donor = parts[r.index(parts.len())].1.clone();
                    mutate(r, &mut der, &donor);
                    (pem(label, &der), Kind::Mutated)
                }
            };
            Input {
                bytes,
                kind,
                aux: which as u64,
            }
        },
        |input| load_tls(dir.path(), &originals, input),
    );
}

// ---------------------------------------------------------------------------------------------
// Planted bugs: `ORDO_FUZZ_PLANT=1` checks that the checks can fail.

/// A copy of the frame reader with two bugs planted. It reserves the length a frame's header
/// declares before checking it against the limit (up to 4 GiB: an over-allocation), and it has
/// a hand-written fast path for proposals that slices the payload's declared length without
/// checking it against what the frame holds (a panic). The panic is out of reach of random
/// bytes: it needs a frame of the right version holding a proposal's tag, then a payload length
/// beyond the frame.
fn planted_read_frame(bytes: &[u8], limit: u64) -> Result<ClientRequest, String> {
    const PROPOSE_TAG: u32 = 2;
    let (header, rest) = bytes.split_first_chunk::<4>().ok_or("truncated")?;
    let length = u32::from_le_bytes(*header) as usize;
    let mut body = Vec::with_capacity(length);
    if length as u64 > limit {
        return Err("too large".into());
    }
    body.extend_from_slice(rest.get(..length).ok_or("truncated")?);
    let (&version, encoded) = body.split_first().ok_or("empty")?;
    if version != WIRE_VERSION {
        return Err("version".into());
    }
    if let Some((tag, rest)) = encoded.split_first_chunk::<4>()
        && u32::from_le_bytes(*tag) == PROPOSE_TAG
    {
        let (declared, payload) = rest.split_first_chunk::<8>().ok_or("truncated")?;
        let declared = u64::from_le_bytes(*declared).min(usize::MAX as u64) as usize;
        let payload = payload[..declared].to_vec();
        return Ok(ClientRequest::Propose {
            payload: payload.into(),
        });
    }
    codec::decode(encoded, limit).map_err(|error| error.to_string())
}

#[test]
fn planted_bugs_are_reported() {
    if !settings().plant {
        eprintln!("fuzz planted_bugs_are_reported: skipped (set ORDO_FUZZ_PLANT=1 to run it)");
        return;
    }
    fuzz(
        "planted_bugs_are_reported",
        20_000,
        CODEC_BOUND,
        |r| {
            generate_input(
                r,
                |r| encode_frame(&client_request(r)),
                |r, bytes| reframe_frame(r, bytes),
            )
        },
        |input| match planted_read_frame(&input.bytes, CLIENT_REQUEST_BYTES_MAX) {
            Ok(request) => Verdict::Reencoded(encode_frame(&request)),
            Err(_) => Verdict::Refused,
        },
    );
}
