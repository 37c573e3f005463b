//! The group commit writer: requests merge into few transactions, take effect exactly as if
//! written one by one in submission order, and a bad request is refused alone.
//!
//! The tests hold the writer inside its sink (the sink runs on the writer thread) to make
//! requests pile up deterministically, instead of sleeping and hoping they do.

mod common;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use common::{Harness, MemHarness, RedbHarness, Rng, entries, hard_state, is_intact};
use ordo_common::{Entry, HardState, LogId};
use ordo_coordinator::storage::{
    DurableReport, GroupCommitWriter, LogRead, LogState, LogStore, MemDisk, MemLogStore, RequestId,
    Result as StorageResult, Retention, StateUpdate, StorageError, StoreState, TrySubmitError,
    WRITE_QUEUE_REQUESTS_MAX, WriteBatch, WriterEvent,
};

const EVENT_WAIT: Duration = Duration::from_secs(30);

/// A writer whose sink forwards events to the test and, while `hold` is set, waits for the
/// test's go-ahead after each event.
struct Held<S: LogStore> {
    writer: GroupCommitWriter<S>,
    events: Receiver<WriterEvent>,
    release: Sender<()>,
}

impl<S: LogStore> Held<S> {
    fn start(store: S, hold_first: usize) -> Self {
        let (event_sender, events) = channel();
        let (release, released) = channel::<()>();
        let mut held = 0;
        let writer = GroupCommitWriter::start(store, move |event| {
            let _ = event_sender.send(event);
            if held < hold_first {
                held += 1;
                let _ = released.recv();
            }
        })
        .expect("start writer");
        Self {
            writer,
            events,
            release,
        }
    }

    fn next_event(&self) -> WriterEvent {
        self.events.recv_timeout(EVENT_WAIT).expect("writer event")
    }

    fn go(&self) {
        self.release.send(()).expect("release writer");
    }
}

fn durable(event: WriterEvent) -> DurableReport {
    match event {
        WriterEvent::Durable(report) => report,
        other => panic!("expected a durable report, got {other:?}"),
    }
}

fn refused(event: WriterEvent) -> (std::ops::RangeInclusive<RequestId>, StorageError) {
    match event {
        WriterEvent::Refused { requests, error } => (requests, error),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn pending_requests_become_one_transaction() {
    let held = Held::start(
        MemLogStore::open(&MemDisk::new(), Retention::default()).unwrap(),
        1,
    );
    held.writer
        .submit(WriteBatch::hard_state(hard_state(1, None)))
        .unwrap();
    // The writer is now held inside the sink: everything below queues up.
    let first = durable(held.next_event());
    assert_eq!(first.requests, 1..=1);
    for index in 1..=500 {
        let id = held
            .writer
            .submit(WriteBatch::entries(entries(index, index + 1, 1)))
            .unwrap();
        assert_eq!(id, index + 1);
    }
    held.go();
    let group = durable(held.next_event());
    assert_eq!(group.requests, 2..=501);
    assert_eq!(group.last_log_id, Some(LogId::new(1, 500)));
    let store = held.writer.close().unwrap();
    assert_eq!(store.entries(1, 501, u64::MAX).unwrap(), entries(1, 501, 1));
}

#[test]
fn merged_requests_act_as_if_written_in_order() {
    let held = Held::start(
        MemLogStore::open(&MemDisk::new(), Retention::default()).unwrap(),
        1,
    );
    held.writer.submit(WriteBatch::default()).unwrap();
    durable(held.next_event());
    let requests = vec![
        WriteBatch::hard_state(hard_state(1, Some(1))),
        WriteBatch::entries(entries(1, 11, 1)),
        WriteBatch::hard_state(hard_state(2, None)),
        // Replaces 5..=10 with term-2 entries: the later suffix wins.
        WriteBatch::entries(entries(5, 8, 2)),
        WriteBatch::entries(entries(8, 10, 2)),
        WriteBatch {
            committed: Some(6),
            ..WriteBatch::default()
        },
        WriteBatch {
            hard_state: Some(hard_state(2, Some(3))),
            state: Some(StateUpdate {
                applied: LogId::new(2, 6),
                seqs: vec![(1, 3), (2, 6)],
                registry: vec![([1; 16], b"first".to_vec())],
                offsets: vec![("t".into(), 1)],
                registry_evicted: vec![],
                log_time_ms: 0,
                registry_floor_ms: 0,
                coord: vec![],
            }),
            ..WriteBatch::default()
        },
        WriteBatch {
            state: Some(StateUpdate {
                applied: LogId::new(2, 6),
                seqs: vec![],
                registry: vec![([1; 16], b"second".to_vec()), ([2; 16], b"gone".to_vec())],
                offsets: vec![("t".into(), 2)],
                registry_evicted: vec![],
                log_time_ms: 500,
                registry_floor_ms: 0,
                coord: vec![],
            }),
            ..WriteBatch::default()
        },
        // A later request evicts an id an earlier one in the group registered.
        WriteBatch {
            state: Some(StateUpdate {
                registry_evicted: vec![[2; 16]],
                log_time_ms: 900,
                registry_floor_ms: 20,
                ..StateUpdate::applied(LogId::new(2, 6))
            }),
            ..WriteBatch::default()
        },
    ];
    let sequential = MemDisk::new();
    let mut reference = MemLogStore::open(&sequential, Retention::default()).unwrap();
    for request in &requests {
        reference.write(request).unwrap();
        held.writer.submit(request.clone()).unwrap();
    }
    held.go();
    let group = durable(held.next_event());
    assert_eq!(group.requests, 2..=10);
    assert_eq!(group.last_log_id, Some(LogId::new(2, 9)));
    assert_eq!(
        group.hard_state,
        Some(HardState {
            term: 2,
            vote: Some(3)
        })
    );
    let store = held.writer.close().unwrap();
    assert_same_contents(&store, &reference);
    assert_eq!(store.outcome(&[1; 16]).unwrap(), Some(b"second".to_vec()));
    assert_eq!(store.outcome(&[2; 16]).unwrap(), None);
    assert_eq!(store.topic_offset("t").unwrap(), 2);
    let state = store.store_state().unwrap();
    assert_eq!((state.log_time_ms, state.registry_floor_ms), (900, 20));
}

#[test]
fn a_bad_request_is_refused_alone() {
    let held = Held::start(
        MemLogStore::open(&MemDisk::new(), Retention::default()).unwrap(),
        1,
    );
    held.writer
        .submit(WriteBatch::hard_state(hard_state(1, Some(1))))
        .unwrap();
    durable(held.next_event());
    let submit = |batch| held.writer.submit(batch).unwrap();
    submit(WriteBatch::entries(entries(1, 5, 1))); // 2
    submit(WriteBatch::entries(entries(9, 10, 1))); // 3: a hole
    submit(WriteBatch::entries(entries(5, 7, 1))); // 4
    submit(WriteBatch::hard_state(hard_state(1, Some(2)))); // 5: a second vote in term 1
    submit(WriteBatch::hard_state(hard_state(2, None))); // 6
    submit(WriteBatch::entries(entries(7, 8, 2))); // 7
    held.go();
    assert_eq!(durable(held.next_event()).requests, 2..=2);
    let (requests, error) = refused(held.next_event());
    assert_eq!(requests, 3..=3);
    assert!(error.to_string().contains("hole"), "{error}");
    assert_eq!(durable(held.next_event()).requests, 4..=4);
    let (requests, error) = refused(held.next_event());
    assert_eq!(requests, 5..=5);
    assert!(error.to_string().contains("vote"), "{error}");
    let last = durable(held.next_event());
    assert_eq!(last.requests, 6..=7);
    assert_eq!(last.last_log_id, Some(LogId::new(2, 7)));
    let store = held.writer.close().unwrap();
    let mut expected = entries(1, 7, 1);
    expected.extend(entries(7, 8, 2));
    assert_eq!(store.entries(1, 8, u64::MAX).unwrap(), expected);
    assert_eq!(store.hard_state().unwrap(), hard_state(2, None));
}

#[test]
fn close_makes_everything_submitted_durable() {
    let mut harness = RedbHarness::new();
    let (sender, events) = channel();
    let writer = GroupCommitWriter::start(harness.open(Retention::default()), move |event| {
        let _ = sender.send(event);
    })
    .unwrap();
    writer
        .submit(WriteBatch::hard_state(hard_state(1, None)))
        .unwrap();
    for index in 1..=2000 {
        writer
            .submit(WriteBatch::entries(entries(index, index + 1, 1)))
            .unwrap();
    }
    drop(writer.close().unwrap());
    let reports: Vec<WriterEvent> = events.try_iter().collect();
    let mut next = 1;
    for event in &reports {
        let WriterEvent::Durable(report) = event else {
            panic!("unexpected event {event:?}");
        };
        assert_eq!(*report.requests.start(), next);
        next = report.requests.end() + 1;
    }
    assert_eq!(
        next, 2002,
        "every request was reported durable exactly once"
    );
    assert!(
        reports.len() < 2001,
        "no request was merged: {} groups",
        reports.len()
    );
    let store = harness.open(Retention::default());
    assert_eq!(
        store.entries(1, 2001, u64::MAX).unwrap(),
        entries(1, 2001, 1)
    );
}

#[test]
fn try_submit_answers_full_instead_of_blocking() {
    let held = Held::start(
        MemLogStore::open(&MemDisk::new(), Retention::default()).unwrap(),
        1,
    );
    held.writer
        .submit(WriteBatch::hard_state(hard_state(1, None)))
        .unwrap();
    durable(held.next_event());
    let mut accepted = 0;
    let mut index = 1;
    loop {
        match held
            .writer
            .try_submit(WriteBatch::entries(entries(index, index + 1, 1)))
        {
            Ok(_) => {
                accepted += 1;
                index += 1;
            }
            Err(TrySubmitError::Full(batch)) => {
                assert_eq!(batch.entries[0].index, index);
                break;
            }
            Err(TrySubmitError::Stopped(_)) => panic!("writer stopped"),
        }
    }
    assert_eq!(accepted, WRITE_QUEUE_REQUESTS_MAX);
    held.go();
    let store = held.writer.close().unwrap();
    assert_eq!(
        store.last_log_id().unwrap(),
        Some(LogId::new(1, accepted as u64))
    );
}

#[test]
fn readers_see_only_whole_durable_writes_while_the_writer_runs() {
    let mut harness = RedbHarness::new();
    let writer = GroupCommitWriter::start(harness.open(Retention::default()), |_| {}).unwrap();
    writer
        .submit(WriteBatch::hard_state(hard_state(1, None)))
        .unwrap();
    let reader = writer.reader();
    let reading = std::thread::spawn(move || {
        let mut last_seen = 0;
        while last_seen < 3000 {
            let last = reader.last_log_id().unwrap().map_or(0, |id| id.index);
            assert!(
                last >= last_seen,
                "the log went back from {last_seen} to {last}"
            );
            assert_eq!(last % 10, 0, "a write of 10 entries was seen in part");
            let read = reader.entries(1, last + 1, u64::MAX).unwrap();
            assert_eq!(read.len() as u64, last);
            assert!(read.iter().all(is_intact));
            last_seen = last;
        }
    });
    for start in (1..3000).step_by(10) {
        writer
            .submit(WriteBatch::entries(entries(start, start + 10, 1)))
            .unwrap();
    }
    reading.join().expect("reader thread");
    writer.close().unwrap();
}

/// A store that fails with an I/O error from its `fail_at`th write on, as a dying disk would.
struct FailingStore {
    inner: MemLogStore,
    writes: u64,
    fail_at: u64,
}

impl LogRead for FailingStore {
    fn store_state(&self) -> StorageResult<StoreState> {
        self.inner.store_state()
    }

    fn entries(&self, lo: u64, hi: u64, bytes_max: u64) -> StorageResult<Vec<Entry>> {
        self.inner.entries(lo, hi, bytes_max)
    }

    fn term_at(&self, index: u64) -> StorageResult<u64> {
        self.inner.term_at(index)
    }

    fn batch_index(&self, seq: u64) -> StorageResult<Option<u64>> {
        self.inner.batch_index(seq)
    }

    fn outcome(&self, batch_id: &[u8; 16]) -> StorageResult<Option<Vec<u8>>> {
        self.inner.outcome(batch_id)
    }

    fn topic_offset(&self, topic: &str) -> StorageResult<u64> {
        self.inner.topic_offset(topic)
    }

    fn tables(&self) -> StorageResult<ordo_coordinator::storage::StoredTables> {
        self.inner.tables()
    }

    fn snapshot(&self) -> StorageResult<ordo_coordinator::storage::SnapshotState> {
        self.inner.snapshot()
    }

    fn first_seq(&self) -> StorageResult<u64> {
        self.inner.first_seq()
    }
}

impl LogStore for FailingStore {
    type Reader = MemDisk;

    fn write(&mut self, batch: &WriteBatch) -> StorageResult<LogState> {
        self.writes += 1;
        if self.writes >= self.fail_at {
            return Err(std::io::Error::other("disk on fire").into());
        }
        self.inner.write(batch)
    }

    fn reader(&self) -> MemDisk {
        self.inner.reader()
    }
}

#[test]
fn a_fatal_error_stops_the_writer() {
    let store = FailingStore {
        inner: MemLogStore::open(&MemDisk::new(), Retention::default()).unwrap(),
        writes: 0,
        fail_at: 2,
    };
    let held = Held::start(store, 1);
    held.writer
        .submit(WriteBatch::hard_state(hard_state(1, None)))
        .unwrap();
    durable(held.next_event());
    held.writer
        .submit(WriteBatch::entries(entries(1, 3, 1)))
        .unwrap();
    held.writer
        .submit(WriteBatch::entries(entries(3, 4, 1)))
        .unwrap();
    held.go();
    match held.next_event() {
        WriterEvent::Failed { requests, error } => {
            assert_eq!(requests, 2..=3);
            assert!(error.is_fatal());
            assert!(error.to_string().contains("disk on fire"), "{error}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // The writer thread has stopped: new requests are turned away, not queued forever.
    let deadline = std::time::Instant::now() + EVENT_WAIT;
    loop {
        match held.writer.submit(WriteBatch::default()) {
            Err(StorageError::WriterStopped) => break,
            Ok(_) => assert!(std::time::Instant::now() < deadline, "writer never stopped"),
            Err(other) => panic!("unexpected error {other}"),
        }
        std::thread::yield_now();
    }
    assert!(matches!(
        held.writer.close(),
        Ok(_) | Err(StorageError::WriterStopped)
    ));
}

/// Random requests, some of them invalid, submitted in bursts: each request's outcome through
/// the writer matches its outcome when written alone, in order, and so do the final contents.
#[test]
fn random_requests_match_sequential_writes() {
    let seed = common::seed_from_env("ORDO_GROUP_COMMIT_SEED");
    let mut rng = Rng::new(seed);
    let mut harness = RedbHarness::new();
    let held = Held::start(harness.open(Retention::default()), usize::MAX);
    let reference_disk = MemDisk::new();
    let mut reference = MemLogStore::open(&reference_disk, Retention::default()).unwrap();
    let mut expected = Vec::new();
    let mut credits = 0;
    for id in 1..=600 {
        let batch = random_request(&mut rng, &reference);
        expected.push(reference.write(&batch).is_ok());
        assert_eq!(held.writer.submit(batch).unwrap(), id);
        credits += 1;
        // Let the writer go now and then, so that groups of every size form.
        if rng.chance(10) {
            for _ in 0..credits {
                held.go();
            }
            credits = 0;
        }
    }
    for _ in 0..=credits {
        held.go();
    }
    let mut outcomes = vec![None; expected.len() + 1];
    while outcomes[1..].iter().any(Option::is_none) {
        let (requests, ok) = match held.next_event() {
            WriterEvent::Durable(report) => (report.requests, true),
            WriterEvent::Refused { requests, .. } => (requests, false),
            WriterEvent::Failed { error, .. } | WriterEvent::NoSpace { error, .. } => {
                panic!("unexpected: {error}")
            }
        };
        held.go();
        for request in requests {
            assert!(
                outcomes[request as usize].is_none(),
                "request {request} reported twice"
            );
            outcomes[request as usize] = Some(ok);
        }
    }
    for (index, ok) in expected.iter().enumerate() {
        assert_eq!(
            outcomes[index + 1],
            Some(*ok),
            "request {} (seed {seed})",
            index + 1
        );
    }
    let refusals = expected.iter().filter(|ok| !**ok).count();
    assert!(
        refusals > 10,
        "only {refusals} requests were refused; the test lost its teeth"
    );
    drop(held.release);
    let store = held.writer.close().unwrap();
    assert_same_contents(&store, &reference);
    drop(store);
    assert_same_contents(&harness.open(Retention::default()), &reference);
}

/// A request that is usually valid for the state of `reference`: an append, a suffix
/// replacement, a term change, a commit or an apply. About one in ten is likely to break a rule;
/// the reference store decides whether it does.
fn random_request(rng: &mut Rng, reference: &MemLogStore) -> WriteBatch {
    let state = reference.store_state().unwrap();
    let last = state.log.last_index();
    let term = state.hard_state.term;
    let committed = state.progress.committed;
    let applied = state.progress.applied.map_or(0, |id| id.index);
    let broken = rng.chance(10);
    match rng.range(0, 5) {
        0 | 1 => {
            let start = if broken { last + 2 } else { last + 1 };
            WriteBatch::entries(entries(start, start + rng.range(1, 8), term))
        }
        2 => {
            let start = if broken {
                committed.max(1)
            } else {
                rng.range(committed + 1, last + 1)
            };
            WriteBatch::entries(entries(start, start + rng.range(1, 4), term))
        }
        3 => {
            let term = if broken {
                term.saturating_sub(1)
            } else {
                term + 1
            };
            WriteBatch::hard_state(HardState {
                term,
                vote: Some(rng.range(1, 3)),
            })
        }
        4 => WriteBatch {
            committed: Some(if broken {
                last + 1
            } else {
                rng.range(committed, last)
            }),
            ..WriteBatch::default()
        },
        _ if committed > applied => {
            let to = rng.range(applied + 1, committed);
            let seq = state.last_seq + if broken { 2 } else { 1 };
            WriteBatch {
                state: Some(StateUpdate {
                    applied: LogId::new(reference.term_at(to).unwrap(), to),
                    seqs: vec![(seq, to)],
                    registry: vec![([to as u8; 16], to.to_be_bytes().to_vec())],
                    offsets: vec![(format!("topic-{}", to % 3), to)],
                    registry_evicted: vec![],
                    log_time_ms: 0,
                    registry_floor_ms: 0,
                    coord: vec![],
                }),
                ..WriteBatch::default()
            }
        }
        _ => WriteBatch::default(),
    }
}

fn assert_same_contents(store: &dyn LogRead, reference: &dyn LogRead) {
    let state = reference.store_state().unwrap();
    assert_eq!(store.store_state().unwrap(), state);
    let (first, last) = (state.log.first_index, state.log.last_index());
    assert_eq!(
        store.entries(first, last + 1, u64::MAX).unwrap(),
        reference.entries(first, last + 1, u64::MAX).unwrap()
    );
    for seq in 0..=state.last_seq + 1 {
        assert_eq!(
            store.batch_index(seq).unwrap(),
            reference.batch_index(seq).unwrap()
        );
    }
    for id in 0..=255u8 {
        assert_eq!(
            store.outcome(&[id; 16]).unwrap(),
            reference.outcome(&[id; 16]).unwrap()
        );
    }
    for topic in ["topic-0", "topic-1", "topic-2"] {
        assert_eq!(
            store.topic_offset(topic).unwrap(),
            reference.topic_offset(topic).unwrap()
        );
    }
}

#[test]
fn both_harnesses_start_writers() {
    // The writer is generic over any store; the mem store gets the same treatment.
    let mut harness = MemHarness::new();
    let writer = GroupCommitWriter::start(harness.open(Retention::default()), |_| {}).unwrap();
    writer
        .submit(WriteBatch::hard_state(hard_state(1, None)))
        .unwrap();
    writer
        .submit(WriteBatch::entries(entries(1, 4, 1)))
        .unwrap();
    writer.close().unwrap();
    let store = harness.open(Retention::default());
    assert_eq!(store.entries(1, 4, u64::MAX).unwrap(), entries(1, 4, 1));
}

/// A state write alone waits for the next request and shares its transaction (one fsync for
/// both); closing the writer ends the wait at once. The linger is made long here so that the
/// outcome does not depend on timing.
#[test]
fn a_state_write_waits_to_share_the_next_append() {
    let (sender, events) = channel();
    let writer = GroupCommitWriter::start_lingering(
        MemLogStore::open(&MemDisk::new(), Retention::default()).unwrap(),
        Duration::from_secs(600),
        move |event| {
            let _ = sender.send(event);
        },
    )
    .unwrap();
    writer
        .submit(WriteBatch {
            hard_state: Some(hard_state(1, None)),
            entries: entries(1, 3, 1),
            ..WriteBatch::default()
        })
        .unwrap();
    assert_eq!(
        durable(events.recv_timeout(EVENT_WAIT).unwrap()).requests,
        1..=1
    );
    let apply = WriteBatch {
        committed: Some(2),
        ..WriteBatch::default()
    };
    writer.submit(apply).unwrap();
    // The state write waits: nothing is reported while it is alone.
    assert!(events.recv_timeout(Duration::from_millis(200)).is_err());
    writer
        .submit(WriteBatch::entries(entries(3, 4, 1)))
        .unwrap();
    let shared = durable(events.recv_timeout(EVENT_WAIT).unwrap());
    assert_eq!(shared.requests, 2..=3, "one transaction for both");
    assert_eq!(shared.last_log_id, Some(LogId::new(1, 3)));
    writer
        .submit(WriteBatch {
            committed: Some(3),
            ..WriteBatch::default()
        })
        .unwrap();
    let store = writer.close().unwrap();
    assert_eq!(
        durable(events.recv_timeout(EVENT_WAIT).unwrap()).requests,
        4..=4
    );
    assert_eq!(store.store_state().unwrap().progress.committed, 3);
}
