//! One conformance suite for every store: each case below is a generic function over a
//! [`Harness`], and the macro at the bottom runs every case against the in-memory store and the
//! redb store. A store that passes this suite keeps the `LogStore` contract's checklist.

mod common;

use std::num::NonZeroU64;

use bytes::Bytes;
use common::{Harness, MemHarness, RedbHarness, entries, entry, hard_state, is_intact};
use ordo_common::batch::{Batch, BatchId, Message};
use ordo_common::limits::ENTRY_PAYLOAD_BYTES_MAX;
use ordo_common::{EngineKind, Entry, EntryPayload, LogId};
use ordo_coordinator::storage::{
    ApplyProgress, Install, LogRead, LogState, LogStore, Retention, SnapshotState, StateUpdate,
    StorageError, StoreState, WriteBatch,
};
use ordo_core::state::Command;

const ALL: u64 = u64::MAX;

fn keep_all() -> Retention {
    Retention::default()
}

fn write<S: LogStore>(store: &mut S, batch: WriteBatch) -> LogState {
    store.write(&batch).expect("write")
}

fn refused<S: LogStore>(store: &mut S, batch: WriteBatch) -> String {
    let before = store.store_state().expect("state");
    let error = store.write(&batch).expect_err("write should be refused");
    assert!(
        matches!(error, StorageError::InvalidWrite { .. }),
        "expected InvalidWrite, got {error}"
    );
    assert!(!error.is_fatal());
    assert_eq!(
        store.store_state().expect("state"),
        before,
        "a refused write changed the state"
    );
    error.to_string()
}

/// Term 1 saved, then entries `[1, hi)` of term 1.
fn log_of<S: LogStore>(store: &mut S, hi: u64) {
    write(store, WriteBatch::hard_state(hard_state(1, Some(1))));
    write(store, WriteBatch::entries(entries(1, hi, 1)));
}

fn commit_and_apply<S: LogStore>(store: &mut S, index: u64) {
    let term = store.term_at(index).expect("term");
    write(
        store,
        WriteBatch {
            committed: Some(index),
            state: Some(StateUpdate::applied(LogId::new(term, index))),
            ..WriteBatch::default()
        },
    );
}

fn fresh_store_is_empty<H: Harness>(harness: &mut H) {
    let store = harness.open(keep_all());
    let state = store.store_state().unwrap();
    assert_eq!(
        state,
        StoreState {
            log: LogState {
                first_index: 1,
                last_log_id: None,
                purged: None
            },
            ..StoreState::default()
        }
    );
    assert_eq!(store.entries(1, 1, ALL).unwrap(), vec![]);
    assert!(matches!(
        store.entries(1, 2, ALL),
        Err(StorageError::OutOfRange { .. })
    ));
    assert_eq!(store.term_at(0).unwrap(), 0);
    assert!(matches!(
        store.term_at(1),
        Err(StorageError::OutOfRange { .. })
    ));
    assert_eq!(store.batch_index(1).unwrap(), None);
    assert_eq!(store.outcome(&[7; 16]).unwrap(), None);
    assert_eq!(store.topic_offset("orders").unwrap(), 0);
}

fn append_and_read<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    write(&mut store, WriteBatch::hard_state(hard_state(2, None)));
    let log = write(&mut store, WriteBatch::entries(entries(1, 11, 1)));
    assert_eq!(log.last_log_id, Some(LogId::new(1, 10)));
    let log = write(&mut store, WriteBatch::entries(entries(11, 21, 2)));
    assert_eq!(log.last_log_id, Some(LogId::new(2, 20)));
    assert_eq!(log.first_index, 1);

    let mut expected = entries(1, 11, 1);
    expected.extend(entries(11, 21, 2));
    assert_eq!(store.entries(1, 21, ALL).unwrap(), expected);
    assert_eq!(store.entries(4, 9, ALL).unwrap(), expected[3..8].to_vec());
    assert_eq!(store.term_at(10).unwrap(), 1);
    assert_eq!(store.term_at(11).unwrap(), 2);
    assert_eq!(store.last_log_id().unwrap(), Some(LogId::new(2, 20)));
    assert_eq!(store.first_index().unwrap(), 1);
    assert_eq!(store.reader().entries(1, 21, ALL).unwrap(), expected);
}

fn appends_must_not_leave_holes<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    log_of(&mut store, 6);
    refused(&mut store, WriteBatch::entries(entries(7, 9, 1)));
    refused(&mut store, WriteBatch::entries(vec![entry(0, 1, 3)]));
    let mut gap = entries(6, 8, 1);
    gap.push(entry(9, 1, 3));
    let message = refused(&mut store, WriteBatch::entries(gap));
    assert!(message.contains("consecutive"), "{message}");
    // A refused batch writes none of its parts.
    refused(
        &mut store,
        WriteBatch {
            hard_state: Some(hard_state(5, Some(2))),
            entries: entries(8, 9, 1),
            ..WriteBatch::default()
        },
    );
    assert_eq!(store.hard_state().unwrap(), hard_state(1, Some(1)));
    write(&mut store, WriteBatch::entries(entries(6, 8, 1)));
    assert_eq!(store.last_log_id().unwrap(), Some(LogId::new(1, 7)));
}

fn conflicting_suffix_is_replaced<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    log_of(&mut store, 11);
    write(&mut store, WriteBatch::hard_state(hard_state(3, None)));
    let log = write(&mut store, WriteBatch::entries(entries(6, 9, 3)));
    assert_eq!(log.last_log_id, Some(LogId::new(3, 8)));
    let mut expected = entries(1, 6, 1);
    expected.extend(entries(6, 9, 3));
    assert_eq!(store.entries(1, 9, ALL).unwrap(), expected);
    assert!(matches!(
        store.term_at(9),
        Err(StorageError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.entries(1, 10, ALL),
        Err(StorageError::OutOfRange { .. })
    ));
    // Replacing the whole log, from index 1.
    let log = write(&mut store, WriteBatch::entries(entries(1, 3, 3)));
    assert_eq!(log.last_log_id, Some(LogId::new(3, 2)));
    assert_eq!(store.entries(1, 3, ALL).unwrap(), entries(1, 3, 3));
    // Replacing a suffix with a longer one, in the same batch as a term change.
    write(
        &mut store,
        WriteBatch {
            hard_state: Some(hard_state(4, Some(2))),
            entries: entries(2, 30, 4),
            ..WriteBatch::default()
        },
    );
    assert_eq!(store.last_log_id().unwrap(), Some(LogId::new(4, 29)));
    assert_eq!(store.term_at(1).unwrap(), 3);
    assert_eq!(store.entries(2, 30, ALL).unwrap(), entries(2, 30, 4));
}

fn entry_terms_follow_raft<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    write(&mut store, WriteBatch::hard_state(hard_state(2, None)));
    write(&mut store, WriteBatch::entries(entries(1, 5, 2)));
    let message = refused(&mut store, WriteBatch::entries(entries(5, 7, 1)));
    assert!(message.contains("below the term"), "{message}");
    let message = refused(&mut store, WriteBatch::entries(entries(5, 7, 3)));
    assert!(message.contains("newer than the current term"), "{message}");
    let mut falling = entries(5, 6, 2);
    falling.extend(entries(6, 7, 1));
    refused(&mut store, WriteBatch::entries(falling));
    // The same batch may raise the term and append entries of the new term.
    write(
        &mut store,
        WriteBatch {
            hard_state: Some(hard_state(3, None)),
            entries: entries(5, 7, 3),
            ..WriteBatch::default()
        },
    );
    assert_eq!(store.last_log_id().unwrap(), Some(LogId::new(3, 6)));
}

/// A Multi-Paxos log: a slot holds the ballot its value was accepted at, which may fall along
/// the slots (an acceptor keeps values an earlier leader left after the ones a new leader
/// rewrites), but never passes the promise; an install keeps every slot after it; the engine is
/// recorded once and for good.
/// A Multi-Paxos install of an empty state through `last_included`, keeping the slots after it.
fn keep_suffix_install(last_included: LogId, last_seq: u64) -> WriteBatch {
    WriteBatch {
        install: Some(Install {
            last_included,
            keep_suffix: true,
            state: SnapshotState {
                applied: last_included,
                last_seq,
                log_time_ms: 0,
                registry_floor_ms: 0,
                offsets: vec![],
                registry: vec![],
                coord: vec![],
            },
        }),
        ..WriteBatch::default()
    }
}

fn slot_ballots_follow_multi_paxos<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    assert_eq!(store.store_state().unwrap().engine, EngineKind::Raft);
    H::set_engine(&mut store, EngineKind::MultiPaxos).expect("a fresh store takes an engine");
    write(&mut store, WriteBatch::hard_state(hard_state(5, None)));
    write(&mut store, WriteBatch::entries(entries(1, 6, 3)));
    // A new leader's value for slot 2, at ballot 5, and the slots after it kept at ballot 3.
    let mut rewrite = entries(2, 3, 5);
    rewrite.extend(entries(3, 6, 3));
    write(&mut store, WriteBatch::entries(rewrite.clone()));
    assert_eq!(store.entries(2, 6, ALL).unwrap(), rewrite);
    assert_eq!(store.last_log_id().unwrap(), Some(LogId::new(3, 5)));
    let message = refused(&mut store, WriteBatch::entries(entries(6, 7, 6)));
    assert!(message.contains("newer than the current term"), "{message}");
    commit_and_apply(&mut store, 2);
    // A snapshot whose last slot carries another ballot than this acceptor's keeps the rest.
    let install = keep_suffix_install(LogId::new(4, 3), 3);
    write(&mut store, install);
    assert_eq!(store.entries(4, 6, ALL).unwrap(), entries(4, 6, 3));
    // One past the end of the log, from a leader ahead of this acceptor: nothing to keep.
    let ahead = keep_suffix_install(LogId::new(5, 9), 9);
    write(&mut store, ahead);
    let state = store.store_state().unwrap();
    assert_eq!(
        (state.log.first_index, state.log.last_log_id),
        (10, Some(LogId::new(5, 9)))
    );
    assert_eq!(store.entries(10, 10, ALL).unwrap(), vec![]);
    write(&mut store, WriteBatch::entries(entries(10, 12, 5)));
    drop(store);
    let mut store = harness.open(keep_all());
    assert_eq!(store.store_state().unwrap().engine, EngineKind::MultiPaxos);
    assert_eq!(store.entries(10, 12, ALL).unwrap(), entries(10, 12, 5));
    assert!(H::set_engine(&mut store, EngineKind::Raft).is_err());
    H::set_engine(&mut store, EngineKind::MultiPaxos).expect("the same engine again");
}

fn term_and_vote_follow_raft<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    assert_eq!(store.hard_state().unwrap(), hard_state(0, None));
    write(&mut store, WriteBatch::hard_state(hard_state(1, None)));
    write(&mut store, WriteBatch::hard_state(hard_state(1, Some(3))));
    write(&mut store, WriteBatch::hard_state(hard_state(1, Some(3))));
    refused(&mut store, WriteBatch::hard_state(hard_state(1, Some(2))));
    refused(&mut store, WriteBatch::hard_state(hard_state(1, None)));
    refused(&mut store, WriteBatch::hard_state(hard_state(0, Some(3))));
    write(&mut store, WriteBatch::hard_state(hard_state(5, None)));
    drop(store);
    let store = harness.open(keep_all());
    assert_eq!(store.hard_state().unwrap(), hard_state(5, None));
}

fn progress_and_tables<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    log_of(&mut store, 11);
    refused(
        &mut store,
        WriteBatch {
            committed: Some(11),
            ..WriteBatch::default()
        },
    );
    write(
        &mut store,
        WriteBatch {
            committed: Some(6),
            ..WriteBatch::default()
        },
    );
    refused(
        &mut store,
        WriteBatch {
            committed: Some(5),
            ..WriteBatch::default()
        },
    );
    let message = refused(&mut store, WriteBatch::entries(entries(6, 8, 1)));
    assert!(message.contains("committed"), "{message}");
    // Applying past the commit index, or naming the wrong term, is refused.
    let apply = |index: u64, term: u64| WriteBatch {
        state: Some(StateUpdate::applied(LogId::new(term, index))),
        ..WriteBatch::default()
    };
    refused(&mut store, apply(7, 1));
    refused(&mut store, apply(4, 2));
    write(
        &mut store,
        WriteBatch {
            state: Some(StateUpdate {
                applied: LogId::new(1, 4),
                seqs: vec![(1, 2), (2, 4)],
                registry: vec![
                    ([1; 16], b"committed 1".to_vec()),
                    ([2; 16], b"c2".to_vec()),
                ],
                offsets: vec![("orders".into(), 3), ("payments".into(), 1)],
                registry_evicted: vec![],
                log_time_ms: 0,
                registry_floor_ms: 0,
                coord: vec![],
            }),
            ..WriteBatch::default()
        },
    );
    // Seqs are dense and name newly applied entries.
    let with_seqs = |applied: u64, seqs: Vec<(u64, u64)>| WriteBatch {
        state: Some(StateUpdate {
            seqs,
            ..StateUpdate::applied(LogId::new(1, applied))
        }),
        ..WriteBatch::default()
    };
    refused(&mut store, with_seqs(6, vec![(4, 5)]));
    refused(&mut store, with_seqs(6, vec![(3, 4)]));
    refused(&mut store, with_seqs(6, vec![(3, 7)]));
    refused(&mut store, apply(3, 1));
    write(
        &mut store,
        WriteBatch {
            committed: Some(10),
            state: Some(StateUpdate {
                applied: LogId::new(1, 6),
                seqs: vec![(3, 6)],
                registry: vec![([2; 16], b"replaced".to_vec())],
                offsets: vec![("orders".into(), 5)],
                registry_evicted: vec![],
                log_time_ms: 0,
                registry_floor_ms: 0,
                coord: vec![],
            }),
            ..WriteBatch::default()
        },
    );
    let check = |store: &dyn LogRead| {
        assert_eq!(
            store.progress().unwrap(),
            ApplyProgress {
                committed: 10,
                applied: Some(LogId::new(1, 6))
            }
        );
        assert_eq!(store.store_state().unwrap().last_seq, 3);
        assert_eq!(store.batch_index(1).unwrap(), Some(2));
        assert_eq!(store.batch_index(3).unwrap(), Some(6));
        assert_eq!(store.batch_index(4).unwrap(), None);
        assert_eq!(
            store.outcome(&[1; 16]).unwrap(),
            Some(b"committed 1".to_vec())
        );
        assert_eq!(store.outcome(&[2; 16]).unwrap(), Some(b"replaced".to_vec()));
        assert_eq!(store.outcome(&[3; 16]).unwrap(), None);
        assert_eq!(store.topic_offset("orders").unwrap(), 5);
        assert_eq!(store.topic_offset("payments").unwrap(), 1);
    };
    check(&store);
    drop(store);
    let store = harness.open(keep_all());
    check(&store);
    check(&store.reader());
}

/// The registry takes insertions and evictions in one write; the log time and the registry's
/// floor never go back; `tables` reads every offset and registry record, in key order.
fn registry_evictions_log_time_and_tables<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    log_of(&mut store, 7);
    write(
        &mut store,
        WriteBatch {
            committed: Some(6),
            ..WriteBatch::default()
        },
    );
    let update =
        |applied: u64, registry: Vec<([u8; 16], Vec<u8>)>, evicted: Vec<[u8; 16]>| WriteBatch {
            state: Some(StateUpdate {
                registry,
                registry_evicted: evicted,
                offsets: vec![("b".into(), applied), ("a".into(), 1)],
                log_time_ms: 1000 * applied,
                registry_floor_ms: 10 * applied,
                ..StateUpdate::applied(LogId::new(1, applied))
            }),
            ..WriteBatch::default()
        };
    write(
        &mut store,
        update(
            2,
            vec![([3; 16], b"three".to_vec()), ([1; 16], b"one".to_vec())],
            vec![],
        ),
    );
    // One write both registers an id and evicts two (one of them registered in it).
    write(
        &mut store,
        update(
            4,
            vec![([2; 16], b"two".to_vec()), ([4; 16], b"four".to_vec())],
            vec![[1; 16], [4; 16]],
        ),
    );
    let mut back = update(5, vec![], vec![]);
    back.state.as_mut().unwrap().log_time_ms = 3999;
    let message = refused(&mut store, back);
    assert!(message.contains("log time"), "{message}");
    let check = |store: &dyn LogRead| {
        let state = store.store_state().unwrap();
        assert_eq!((state.log_time_ms, state.registry_floor_ms), (4000, 40));
        let tables = store.tables().unwrap();
        assert_eq!(tables.offsets, vec![("a".into(), 1), ("b".into(), 4)]);
        assert_eq!(
            tables.registry,
            vec![([2; 16], b"two".to_vec()), ([3; 16], b"three".to_vec())]
        );
        assert_eq!(store.outcome(&[1; 16]).unwrap(), None);
    };
    check(&store);
    drop(store);
    let store = harness.open(keep_all());
    check(&store);
    check(&store.reader());
}

/// An install replaces the state machine's tables and progress with the snapshot's and drops
/// the log through it (all of it, unless the suffix is kept); the seq table is empty after it.
/// Installs behind the applied index, of a conflicting suffix, or mixed with other writes are
/// refused.
fn an_install_replaces_the_state_and_the_log_through_it<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    log_of(&mut store, 11);
    commit_and_apply(&mut store, 4);
    let snapshot = |index: u64, term: u64, tag: u8| SnapshotState {
        applied: LogId::new(term, index),
        last_seq: 10 + index,
        log_time_ms: 1000 * index,
        registry_floor_ms: index,
        offsets: vec![("t".into(), index)],
        registry: vec![([tag; 16], vec![tag])],
        coord: vec![],
    };
    let install = |index: u64, term: u64, keep_suffix: bool| WriteBatch {
        install: Some(Install {
            last_included: LogId::new(term, index),
            keep_suffix,
            state: snapshot(index, term, index as u8),
        }),
        ..WriteBatch::default()
    };
    refused(&mut store, install(3, 1, true));
    let message = refused(&mut store, install(7, 2, true));
    assert!(message.contains("term"), "{message}");
    write(&mut store, WriteBatch::hard_state(hard_state(2, None)));
    let message = refused(&mut store, install(7, 2, true));
    assert!(message.contains("suffix"), "{message}");
    let mut mixed = install(7, 1, true);
    mixed.committed = Some(8);
    refused(&mut store, mixed);
    write(&mut store, install(7, 1, true));
    let check = |store: &dyn LogRead| {
        let state = store.store_state().unwrap();
        assert_eq!(state.log.first_index, 8);
        assert_eq!(state.log.purged, Some(LogId::new(1, 7)));
        assert_eq!(state.log.last_log_id, Some(LogId::new(1, 10)));
        assert_eq!(state.progress.applied, Some(LogId::new(1, 7)));
        assert_eq!((state.last_seq, state.log_time_ms), (17, 7000));
        assert_eq!(store.entries(8, 11, ALL).unwrap(), entries(8, 11, 1));
        assert!(matches!(
            store.entries(7, 8, ALL),
            Err(StorageError::Compacted { first_index: 8 })
        ));
        assert_eq!(store.term_at(7).unwrap(), 1);
        assert_eq!(store.first_seq().unwrap(), 18);
        assert_eq!(store.snapshot().unwrap(), snapshot(7, 1, 7));
    };
    check(&store);
    drop(store);
    let mut store = harness.open(keep_all());
    check(&store);
    // A snapshot past the log's end drops the whole log.
    write(&mut store, install(15, 2, false));
    let state = store.store_state().unwrap();
    assert_eq!(state.log.last_log_id, Some(LogId::new(2, 15)));
    assert_eq!(state.log.first_index, 16);
    assert_eq!(store.entries(16, 16, ALL).unwrap(), vec![]);
    assert_eq!(store.snapshot().unwrap(), snapshot(15, 2, 15));
    // And the log goes on after it.
    write(&mut store, WriteBatch::entries(entries(16, 18, 2)));
    assert_eq!(store.entries(16, 18, ALL).unwrap(), entries(16, 18, 2));
}

/// Retention keeps the trailing entries below the applied index, and deletes entries older
/// than its age by the log's time (an unstamped entry counts as old as the stamped one before
/// it); seqs of deleted entries go with them.
fn retention_by_age_keeps_trailing_entries<H: Harness>(harness: &mut H) {
    let retention = Retention {
        age_ms: NonZeroU64::new(10_000),
        trailing_entries: 3,
        ..Retention::default()
    };
    let mut store = harness.open(retention);
    write(&mut store, WriteBatch::hard_state(hard_state(1, Some(1))));
    // Entry i is a batch stamped at i seconds; entry 5 carries no batch.
    let stamped: Vec<Entry> = (1..=20)
        .map(|index| {
            let command = if index == 5 {
                Command::Raw(Bytes::from_static(b"raw"))
            } else {
                Command::Batch {
                    batch: Batch {
                        id: BatchId::v7(index, [index as u8; 10]),
                        messages: vec![Message::new("t", "x")],
                        preconditions: Vec::new(),
                    },
                    stamp_ms: 1000 * index,
                }
            };
            Entry {
                term: 1,
                index,
                payload: EntryPayload::Normal(Bytes::from(command.encode())),
            }
        })
        .collect();
    write(&mut store, WriteBatch::entries(stamped.clone()));
    let apply = |through: u64, log_time_ms: u64| WriteBatch {
        committed: Some(through),
        state: Some(StateUpdate {
            seqs: vec![],
            log_time_ms,
            ..StateUpdate::applied(LogId::new(1, through))
        }),
        ..WriteBatch::default()
    };
    // Log time 14 s: entries stamped before 4 s are older than the age.
    write(&mut store, apply(18, 14_000));
    assert_eq!(store.store_state().unwrap().log.first_index, 4);
    // Log time 30 s: everything is old, but the 3 entries below the applied index stay.
    write(&mut store, apply(19, 30_000));
    let log = store.store_state().unwrap().log;
    assert_eq!((log.first_index, log.purged), (17, Some(LogId::new(1, 16))));
    assert_eq!(store.entries(17, 21, ALL).unwrap(), stamped[16..].to_vec());
}

fn ranges_are_half_open<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    log_of(&mut store, 11);
    let all = entries(1, 11, 1);
    for lo in 1..=11 {
        assert_eq!(store.entries(lo, lo, ALL).unwrap(), vec![], "[{lo}, {lo})");
        for hi in lo..=11 {
            let expected = all[(lo - 1) as usize..(hi - 1) as usize].to_vec();
            assert_eq!(
                store.entries(lo, hi, ALL).unwrap(),
                expected,
                "[{lo}, {hi})"
            );
        }
    }
    assert!(matches!(
        store.entries(5, 4, ALL),
        Err(StorageError::InvalidRange { lo: 5, hi: 4 })
    ));
    assert!(matches!(
        store.entries(1, 12, ALL),
        Err(StorageError::OutOfRange {
            index: 11,
            last_index: 10
        })
    ));
    assert!(matches!(
        store.entries(12, 12, ALL),
        Err(StorageError::OutOfRange { .. })
    ));
    assert!(matches!(
        store.entries(0, 3, ALL),
        Err(StorageError::Compacted { first_index: 1 })
    ));
}

fn reads_respect_the_byte_budget<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    write(&mut store, WriteBatch::hard_state(hard_state(1, None)));
    let batch: Vec<Entry> = (1..=10).map(|index| entry(index, 1, 100)).collect();
    write(&mut store, WriteBatch::entries(batch.clone()));
    assert_eq!(store.entries(1, 11, 0).unwrap(), batch[..1].to_vec());
    assert_eq!(store.entries(1, 11, 99).unwrap(), batch[..1].to_vec());
    assert_eq!(store.entries(1, 11, 100).unwrap(), batch[..1].to_vec());
    assert_eq!(store.entries(1, 11, 299).unwrap(), batch[..2].to_vec());
    assert_eq!(store.entries(1, 11, 300).unwrap(), batch[..3].to_vec());
    assert_eq!(store.entries(4, 11, 1000).unwrap(), batch[3..].to_vec());
}

fn large_entries_round_trip<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    write(&mut store, WriteBatch::hard_state(hard_state(1, None)));
    let large: Vec<Entry> = (1..=3)
        .map(|index| entry(index, 1, (3 << 20) + index as usize * 4099))
        .collect();
    write(&mut store, WriteBatch::entries(large.clone()));
    write(&mut store, WriteBatch::entries(vec![entry(4, 1, 10)]));
    assert_eq!(store.entries(1, 4, ALL).unwrap(), large);
    assert_eq!(store.entries(1, 5, 1).unwrap(), large[..1].to_vec());
    drop(store);
    let store = harness.open(keep_all());
    assert_eq!(store.entries(1, 4, ALL).unwrap(), large);
    assert!(store.entries(1, 5, ALL).unwrap().iter().all(is_intact));
}

fn payload_limit_is_enforced<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    write(&mut store, WriteBatch::hard_state(hard_state(1, None)));
    let too_large = Entry {
        term: 1,
        index: 1,
        payload: EntryPayload::Normal(vec![0; ENTRY_PAYLOAD_BYTES_MAX as usize + 1].into()),
    };
    let message = refused(&mut store, WriteBatch::entries(vec![too_large]));
    assert!(message.contains("over the limit"), "{message}");
}

fn reopen_keeps_everything<H: Harness>(harness: &mut H) {
    let mut store = harness.open(keep_all());
    log_of(&mut store, 40);
    write(&mut store, WriteBatch::hard_state(hard_state(2, Some(3))));
    write(&mut store, WriteBatch::entries(entries(30, 50, 2)));
    write(
        &mut store,
        WriteBatch {
            committed: Some(35),
            state: Some(StateUpdate {
                applied: LogId::new(2, 33),
                seqs: vec![(1, 10), (2, 31)],
                registry: vec![([9; 16], vec![1, 2, 3])],
                offsets: vec![("t".into(), 2)],
                registry_evicted: vec![],
                log_time_ms: 0,
                registry_floor_ms: 0,
                coord: vec![],
            }),
            ..WriteBatch::default()
        },
    );
    let state = store.store_state().unwrap();
    let log = store.entries(1, 50, ALL).unwrap();
    drop(store);
    for _ in 0..2 {
        let store = harness.open(keep_all());
        assert_eq!(store.store_state().unwrap(), state);
        assert_eq!(store.reader().store_state().unwrap(), state);
        assert_eq!(store.entries(1, 50, ALL).unwrap(), log);
        assert_eq!(store.outcome(&[9; 16]).unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(store.batch_index(2).unwrap(), Some(31));
        assert_eq!(store.topic_offset("t").unwrap(), 2);
    }
}

fn compacted_reads_say_so<H: Harness>(harness: &mut H) {
    let retention = Retention {
        entries_max: NonZeroU64::new(16),
        bytes_max: None,
        ..Retention::default()
    };
    let mut store = harness.open(retention);
    log_of(&mut store, 41);
    // Nothing is applied yet, so nothing may be compacted, whatever the limit says.
    assert_eq!(store.first_index().unwrap(), 1);
    write(
        &mut store,
        WriteBatch {
            committed: Some(30),
            state: Some(StateUpdate {
                applied: LogId::new(1, 20),
                seqs: vec![(1, 3), (2, 12), (3, 20)],
                registry: vec![],
                offsets: vec![],
                registry_evicted: vec![],
                log_time_ms: 0,
                registry_floor_ms: 0,
                coord: vec![],
            }),
            ..WriteBatch::default()
        },
    );
    // Over the limit, compaction deletes up to the applied entry and no further.
    let state = store.store_state().unwrap();
    assert_eq!(state.log.first_index, 21);
    assert_eq!(state.log.purged, Some(LogId::new(1, 20)));
    assert_eq!(state.log.last_log_id, Some(LogId::new(1, 40)));
    let compacted = store.entries(20, 25, ALL).unwrap_err();
    assert!(matches!(
        compacted,
        StorageError::Compacted { first_index: 21 }
    ));
    assert!(!compacted.is_fatal());
    assert!(matches!(
        store.entries(1, 1, ALL),
        Err(StorageError::Compacted { .. })
    ));
    assert_eq!(store.entries(21, 41, ALL).unwrap(), entries(21, 41, 1));
    assert_eq!(store.term_at(20).unwrap(), 1);
    assert!(matches!(
        store.term_at(19),
        Err(StorageError::Compacted { first_index: 21 })
    ));
    assert_eq!(store.batch_index(1).unwrap(), None);
    assert_eq!(store.batch_index(3).unwrap(), None);
    // Once more is applied, compaction keeps seven eighths of the limit.
    commit_and_apply(&mut store, 40);
    assert_eq!(store.first_index().unwrap(), 41 - 14);
    // Appends continue after a compaction (staying within the limit, so nothing more is
    // compacted), and the whole state survives a restart.
    write(&mut store, WriteBatch::entries(entries(41, 43, 1)));
    let state = store.store_state().unwrap();
    drop(store);
    let store = harness.open(retention);
    assert_eq!(store.store_state().unwrap(), state);
    assert_eq!(store.entries(27, 43, ALL).unwrap(), entries(27, 43, 1));
    assert!(matches!(
        store.entries(26, 43, ALL),
        Err(StorageError::Compacted { first_index: 27 })
    ));
}

fn byte_retention_can_empty_the_log<H: Harness>(harness: &mut H) {
    let retention = Retention {
        entries_max: None,
        bytes_max: NonZeroU64::new(1),
        ..Retention::default()
    };
    let mut store = harness.open(retention);
    log_of(&mut store, 11);
    commit_and_apply(&mut store, 10);
    let log = store.log_state().unwrap();
    assert_eq!(
        log,
        LogState {
            first_index: 11,
            last_log_id: Some(LogId::new(1, 10)),
            purged: Some(LogId::new(1, 10)),
        }
    );
    assert_eq!(store.entries(11, 11, ALL).unwrap(), vec![]);
    assert_eq!(store.term_at(10).unwrap(), 1);
    drop(store);
    let mut store = harness.open(retention);
    assert_eq!(store.log_state().unwrap(), log);
    // The term of the purged entry still guards the next append.
    refused(&mut store, WriteBatch::entries(vec![entry(11, 0, 4)]));
    refused(&mut store, WriteBatch::entries(vec![entry(12, 1, 4)]));
    write(&mut store, WriteBatch::entries(entries(11, 13, 1)));
    assert_eq!(store.entries(11, 13, ALL).unwrap(), entries(11, 13, 1));
}

fn byte_retention_keeps_within_the_limit<H: Harness>(harness: &mut H) {
    let retention = Retention {
        entries_max: None,
        bytes_max: NonZeroU64::new(8 * 1024),
        ..Retention::default()
    };
    let mut store = harness.open(retention);
    write(&mut store, WriteBatch::hard_state(hard_state(1, None)));
    for index in 1..=100 {
        write(&mut store, WriteBatch::entries(vec![entry(index, 1, 500)]));
        commit_and_apply(&mut store, index);
    }
    let first = store.first_index().unwrap();
    let kept = 101 - first;
    // Records are 500 payload bytes plus a small header; at most 8 KiB of them are kept.
    assert!((12..=16).contains(&kept), "kept {kept} entries");
    drop(store);
    let store = harness.open(retention);
    assert_eq!(store.first_index().unwrap(), first);
    assert!(
        store
            .entries(first, 101, ALL)
            .unwrap()
            .iter()
            .all(is_intact)
    );
}

/// Big entries in one write, so that a store keeping several entries per record splits them
/// over records: a conflict and a compaction that fall inside a record keep exactly the entries
/// they must, and seqs forgotten by a compaction are the ones below it.
fn truncation_and_compaction_inside_a_write<H: Harness>(harness: &mut H) {
    let retention = Retention {
        entries_max: NonZeroU64::new(8),
        bytes_max: None,
        ..Retention::default()
    };
    let big = |lo: u64, hi: u64, term: u64| -> Vec<Entry> {
        (lo..hi).map(|index| entry(index, term, 23_000)).collect()
    };
    let mut store = harness.open(retention);
    write(&mut store, WriteBatch::hard_state(hard_state(1, Some(1))));
    write(&mut store, WriteBatch::entries(big(1, 41, 1)));
    assert_eq!(store.entries(1, 41, ALL).unwrap(), big(1, 41, 1));
    // A new leader's entries replace the suffix from 17 on.
    write(&mut store, WriteBatch::hard_state(hard_state(2, Some(2))));
    write(&mut store, WriteBatch::entries(big(17, 21, 2)));
    let mut expected = big(1, 17, 1);
    expected.extend(big(17, 21, 2));
    assert_eq!(store.entries(1, 21, ALL).unwrap(), expected);
    assert_eq!(store.term_at(16).unwrap(), 1);
    assert_eq!(store.term_at(17).unwrap(), 2);
    assert_eq!(
        store.store_state().unwrap().log.last_log_id,
        Some(LogId::new(2, 20))
    );
    assert!(matches!(
        store.entries(1, 22, ALL),
        Err(StorageError::OutOfRange { .. })
    ));
    // Everything applied, every entry a batch: the limit of 8 compacts through 13.
    let mut state = StateUpdate::applied(LogId::new(2, 20));
    state.seqs = (1..=20).map(|index| (index, index)).collect();
    write(
        &mut store,
        WriteBatch {
            committed: Some(20),
            state: Some(state),
            ..WriteBatch::default()
        },
    );
    let check = |store: &H::Store| {
        let state = store.store_state().unwrap();
        assert_eq!(state.log.first_index, 14);
        assert_eq!(state.log.purged, Some(LogId::new(1, 13)));
        assert_eq!(store.entries(14, 21, ALL).unwrap(), expected[13..].to_vec());
        assert_eq!(store.term_at(13).unwrap(), 1);
        assert!(matches!(
            store.entries(13, 15, ALL),
            Err(StorageError::Compacted { first_index: 14 })
        ));
        assert_eq!(store.first_seq().unwrap(), 14);
        assert_eq!(store.batch_index(13).unwrap(), None);
        assert_eq!(store.batch_index(14).unwrap(), Some(14));
        assert_eq!(store.batch_index(20).unwrap(), Some(20));
        assert_eq!(store.batch_index(21).unwrap(), None);
    };
    check(&store);
    drop(store);
    let mut store = harness.open(retention);
    check(&store);
    // The log goes on after the split record.
    write(&mut store, WriteBatch::entries(big(21, 24, 2)));
    assert_eq!(store.entries(20, 24, ALL).unwrap()[1..], big(21, 24, 2)[..]);
}

macro_rules! conformance_suite {
    ($($case:ident),* $(,)?) => {
        mod mem {
            $(
                #[test]
                fn $case() {
                    super::$case(&mut super::MemHarness::new());
                }
            )*
        }

        mod redb {
            $(
                #[test]
                fn $case() {
                    super::$case(&mut super::RedbHarness::new());
                }
            )*
        }
    };
}

conformance_suite!(
    fresh_store_is_empty,
    append_and_read,
    appends_must_not_leave_holes,
    conflicting_suffix_is_replaced,
    entry_terms_follow_raft,
    slot_ballots_follow_multi_paxos,
    term_and_vote_follow_raft,
    progress_and_tables,
    registry_evictions_log_time_and_tables,
    an_install_replaces_the_state_and_the_log_through_it,
    retention_by_age_keeps_trailing_entries,
    ranges_are_half_open,
    reads_respect_the_byte_budget,
    large_entries_round_trip,
    payload_limit_is_enforced,
    reopen_keeps_everything,
    compacted_reads_say_so,
    byte_retention_can_empty_the_log,
    byte_retention_keeps_within_the_limit,
    truncation_and_compaction_inside_a_write,
);
