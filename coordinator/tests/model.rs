//! Property test: random operation sequences (appends, suffix replacements, term and vote
//! changes, commits, applies with table updates, rule-breaking writes, reads, restarts) run
//! against each store and against a plain `Vec` model; after every step the store must agree
//! with the model exactly.
//!
//! `PROPTEST_CASES` sets the number of cases (default 48 per store).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;

use common::{Harness, MemHarness, RedbHarness, entry};
use ordo_common::{Entry, HardState, LogId, LogIndex};
use ordo_coordinator::storage::{
    ApplyProgress, LogRead, LogState, LogStore, Retention, StateUpdate, StorageError, StoreState,
    WriteBatch,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries of the current term.
    Append {
        count: u8,
        len: u16,
    },
    /// Replace the suffix starting `back` entries before the end (kept above the commit index).
    Replace {
        back: u8,
        count: u8,
    },
    /// Raise the term by `bump` (or keep it, for 0) and vote.
    Vote {
        bump: u8,
        vote: Option<u8>,
    },
    Commit {
        ahead: u8,
    },
    Apply {
        ahead: u8,
        batches: u8,
        topic: u8,
    },
    /// A write that breaks one of the store's rules.
    Break {
        rule: u8,
    },
    Read {
        lo: u8,
        hi: u8,
        budget: u16,
    },
    TermAt {
        index: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1..12u8, 0..300u16).prop_map(|(count, len)| Op::Append { count, len }),
        2 => (0..12u8, 1..6u8).prop_map(|(back, count)| Op::Replace { back, count }),
        2 => (0..3u8, proptest::option::of(1..4u8)).prop_map(|(bump, vote)| Op::Vote { bump, vote }),
        3 => (0..12u8).prop_map(|ahead| Op::Commit { ahead }),
        3 => (0..8u8, 0..3u8, 0..3u8)
            .prop_map(|(ahead, batches, topic)| Op::Apply { ahead, batches, topic }),
        2 => (0..8u8).prop_map(|rule| Op::Break { rule }),
        3 => (0..64u8, 0..64u8, 0..2000u16).prop_map(|(lo, hi, budget)| Op::Read { lo, hi, budget }),
        1 => (0..64u8).prop_map(|index| Op::TermAt { index }),
        1 => Just(Op::Reopen),
    ]
}

fn retention() -> impl Strategy<Value = Retention> {
    proptest::option::of(4..40u64).prop_map(|entries_max| Retention {
        entries_max: entries_max.and_then(NonZeroU64::new),
        bytes_max: None,
        ..Retention::default()
    })
}

/// The store's contract, written as plainly as possible.
#[derive(Clone, Debug)]
struct Model {
    retention: Retention,
    /// Entries from `first` on.
    log: Vec<Entry>,
    first: LogIndex,
    purged: Option<LogId>,
    hard_state: HardState,
    committed: LogIndex,
    applied: Option<LogId>,
    last_seq: u64,
    batches: BTreeMap<u64, LogIndex>,
    registry: HashMap<[u8; 16], Vec<u8>>,
    offsets: HashMap<String, u64>,
}

impl Model {
    fn new(retention: Retention) -> Self {
        Self {
            retention,
            log: Vec::new(),
            first: 1,
            purged: None,
            hard_state: HardState::default(),
            committed: 0,
            applied: None,
            last_seq: 0,
            batches: BTreeMap::new(),
            registry: HashMap::new(),
            offsets: HashMap::new(),
        }
    }

    fn last(&self) -> Option<LogId> {
        self.log.last().map(Entry::log_id).or(self.purged)
    }

    fn last_index(&self) -> LogIndex {
        self.last().map_or(0, |id| id.index)
    }

    fn applied_index(&self) -> LogIndex {
        self.applied.map_or(0, |id| id.index)
    }

    fn term_at(&self, index: LogIndex) -> Result<u64, &'static str> {
        if index == 0 {
            return Ok(0);
        }
        if let Some(purged) = self.purged.filter(|p| p.index == index) {
            return Ok(purged.term);
        }
        if index < self.first {
            return Err("compacted");
        }
        self.log
            .get((index - self.first) as usize)
            .map(|e| e.term)
            .ok_or("out of range")
    }

    fn state(&self) -> StoreState {
        StoreState {
            log: LogState {
                first_index: self.first,
                last_log_id: self.last(),
                purged: self.purged,
            },
            hard_state: self.hard_state,
            progress: ApplyProgress {
                committed: self.committed,
                applied: self.applied,
            },
            last_seq: self.last_seq,
            log_time_ms: 0,
            registry_floor_ms: 0,
            engine: ordo_common::EngineKind::Raft,
        }
    }

    /// Applies a batch the generator built to be valid.
    fn apply(&mut self, batch: &WriteBatch) {
        if let Some(hard_state) = batch.hard_state {
            self.hard_state = hard_state;
        }
        if let Some(start) = batch.entries.first().map(|e| e.index) {
            self.log.truncate((start - self.first) as usize);
            self.log.extend(batch.entries.iter().cloned());
        }
        if let Some(committed) = batch.committed {
            self.committed = committed;
        }
        if let Some(state) = &batch.state {
            self.applied = Some(state.applied);
            for &(seq, index) in &state.seqs {
                self.batches.insert(seq, index);
                self.last_seq = seq;
            }
            self.registry.extend(state.registry.iter().cloned());
            self.offsets.extend(state.offsets.iter().cloned());
        }
        self.compact();
    }

    /// Retention as documented: past `entries_max`, delete down to seven eighths of it, never
    /// past the applied entry.
    fn compact(&mut self) {
        let (Some(entries_max), Some(applied)) = (self.retention.entries_max, self.applied) else {
            return;
        };
        let entries_max = u64::from(entries_max);
        let count = self.log.len() as u64;
        if count <= entries_max {
            return;
        }
        let keep = entries_max - entries_max / 8;
        let new_first = (self.last_index() + 1 - keep).min(applied.index + 1);
        if new_first <= self.first {
            return;
        }
        let removed = (new_first - self.first) as usize;
        self.purged = Some(self.log[removed - 1].log_id());
        self.log.drain(..removed);
        self.first = new_first;
        self.batches.retain(|_, index| *index >= new_first);
    }

    /// Builds the batch for `op`: `Ok` for a valid one, `Err` for one the store must refuse.
    fn batch(&self, op: &Op) -> Option<Result<WriteBatch, WriteBatch>> {
        let last = self.last_index();
        let term = self.hard_state.term;
        Some(match *op {
            Op::Append { count, len } => Ok(WriteBatch::entries(
                (last + 1..=last + u64::from(count))
                    .map(|index| entry(index, term, len as usize))
                    .collect(),
            )),
            Op::Replace { back, count } => {
                let floor = (self.committed + 1).max(self.first);
                let start = (last + 1).saturating_sub(u64::from(back)).max(floor);
                Ok(WriteBatch::entries(
                    (start..start + u64::from(count))
                        .map(|index| entry(index, term, 7 + index as usize % 50))
                        .collect(),
                ))
            }
            Op::Vote { bump, vote } => {
                let vote = vote.map(u64::from);
                if bump == 0 && self.hard_state.vote.is_some() && vote != self.hard_state.vote {
                    Err(WriteBatch::hard_state(HardState { term, vote }))
                } else {
                    Ok(WriteBatch::hard_state(HardState {
                        term: term + u64::from(bump),
                        vote,
                    }))
                }
            }
            Op::Commit { ahead } => Ok(WriteBatch {
                committed: Some((self.committed + u64::from(ahead)).min(last)),
                ..WriteBatch::default()
            }),
            Op::Apply {
                ahead,
                batches,
                topic,
            } => {
                let from = self.applied_index();
                let to = (from + u64::from(ahead)).min(self.committed);
                if to == 0 || to < from {
                    return None;
                }
                let seqs: Vec<(u64, LogIndex)> = (from + 1..=to)
                    .take(batches as usize)
                    .enumerate()
                    .map(|(i, index)| (self.last_seq + 1 + i as u64, index))
                    .collect();
                Ok(WriteBatch {
                    state: Some(StateUpdate {
                        applied: LogId::new(self.term_at(to).ok()?, to),
                        registry: seqs
                            .iter()
                            .map(|&(seq, _)| ([seq as u8; 16], seq.to_le_bytes().to_vec()))
                            .collect(),
                        seqs,
                        offsets: vec![(format!("topic-{topic}"), to)],
                        registry_evicted: vec![],
                        log_time_ms: 0,
                        registry_floor_ms: 0,
                        coord: vec![],
                    }),
                    ..WriteBatch::default()
                })
            }
            Op::Break { rule } => Err(self.broken(rule)),
            Op::Read { .. } | Op::TermAt { .. } | Op::Reopen => return None,
        })
    }

    fn broken(&self, rule: u8) -> WriteBatch {
        let last = self.last_index();
        let term = self.hard_state.term;
        match rule {
            0 => WriteBatch::entries(vec![entry(last + 2, term, 3)]),
            1 => WriteBatch::entries(vec![entry(last + 1, term + 1, 3)]),
            2 => WriteBatch {
                committed: Some(last + 1),
                ..WriteBatch::default()
            },
            3 if self.committed > 0 => WriteBatch {
                committed: Some(self.committed - 1),
                ..WriteBatch::default()
            },
            4 if self.committed >= self.first => {
                WriteBatch::entries(vec![entry(self.committed, term, 3)])
            }
            5 if term > 0 => WriteBatch::hard_state(HardState {
                term: term - 1,
                vote: None,
            }),
            6 => WriteBatch {
                state: Some(StateUpdate::applied(LogId::new(term, self.committed + 1))),
                ..WriteBatch::default()
            },
            _ => WriteBatch {
                state: Some(StateUpdate {
                    seqs: vec![(self.last_seq + 2, self.committed)],
                    ..StateUpdate::applied(LogId::new(
                        self.term_at(self.committed).unwrap_or(0),
                        self.committed,
                    ))
                }),
                ..WriteBatch::default()
            },
        }
    }

    /// The batches at `from ..= to`, consecutive from `from`, within `budget` payload bytes (at
    /// least one): what [`LogRead::batches_from`] must answer.
    fn batches_from(&self, from: u64, to: u64, budget: u64) -> Vec<(u64, Entry)> {
        let mut read = Vec::new();
        let mut bytes = 0;
        for seq in from..=to {
            let held = self.batches.get(&seq).and_then(|&index| {
                let position = index.checked_sub(self.first)?;
                self.log.get(usize::try_from(position).ok()?)
            });
            let Some(entry) = held else {
                break;
            };
            bytes += entry.payload_bytes();
            if bytes > budget && !read.is_empty() {
                break;
            }
            read.push((seq, entry.clone()));
        }
        read
    }

    fn read(&self, lo: LogIndex, hi: LogIndex, budget: u64) -> Result<Vec<Entry>, String> {
        if lo > hi {
            return Err("invalid range".into());
        }
        if lo < self.first {
            return Err("compacted".into());
        }
        if hi > self.last_index() + 1 {
            return Err("out of range".into());
        }
        let mut read = Vec::new();
        let mut bytes = 0;
        for entry in &self.log[(lo - self.first) as usize..(hi - self.first) as usize] {
            bytes += entry.payload_bytes();
            if bytes > budget && !read.is_empty() {
                break;
            }
            read.push(entry.clone());
        }
        Ok(read)
    }
}

fn kind(error: &StorageError) -> String {
    match error {
        StorageError::InvalidRange { .. } => "invalid range".into(),
        StorageError::Compacted { .. } => "compacted".into(),
        StorageError::OutOfRange { .. } => "out of range".into(),
        other => format!("unexpected: {other}"),
    }
}

fn check<S: LogStore>(store: &S, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(store.store_state().unwrap(), model.state());
    prop_assert_eq!(store.reader().store_state().unwrap(), model.state());
    let all = store
        .entries(model.first, model.last_index() + 1, u64::MAX)
        .unwrap();
    prop_assert_eq!(&all, &model.log);
    for (seq, index) in &model.batches {
        prop_assert_eq!(store.batch_index(*seq).unwrap(), Some(*index));
    }
    for seq in 0..model.last_seq {
        if !model.batches.contains_key(&seq) {
            prop_assert_eq!(store.batch_index(seq).unwrap(), None);
        }
    }
    // A range of batches read at once is what reading them seq by seq gives, from every start
    // (held or not), within every budget.
    let reader = store.reader();
    for from in 0..=model.last_seq + 1 {
        for (span, budget) in [(0, u64::MAX), (7, u64::MAX), (7, 1), (7, 150), (1024, 400)] {
            let expected = model.batches_from(from, from + span, budget);
            prop_assert_eq!(
                &store.batches_from(from, from + span, budget).unwrap(),
                &expected
            );
            prop_assert_eq!(
                &reader.batches_from(from, from + span, budget).unwrap(),
                &expected
            );
        }
    }
    for (id, outcome) in &model.registry {
        prop_assert_eq!(store.outcome(id).unwrap(), Some(outcome.clone()));
    }
    for topic in 0..3 {
        let topic = format!("topic-{topic}");
        let expected = model.offsets.get(&topic).copied().unwrap_or(0);
        prop_assert_eq!(store.topic_offset(&topic).unwrap(), expected);
    }
    Ok(())
}

fn run<H: Harness>(
    mut harness: H,
    retention: Retention,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let mut store = harness.open(retention);
    let mut model = Model::new(retention);
    for op in &ops {
        match *op {
            Op::Reopen => {
                drop(store);
                store = harness.open(retention);
            }
            Op::Read { lo, hi, budget } => {
                let base = model.first.saturating_sub(2);
                let (lo, hi) = (base + u64::from(lo), base + u64::from(hi));
                let read = store.entries(lo, hi, u64::from(budget));
                prop_assert_eq!(
                    read.map_err(|e| kind(&e)),
                    model.read(lo, hi, u64::from(budget))
                );
            }
            Op::TermAt { index } => {
                let index = model.first.saturating_sub(3) + u64::from(index);
                let term = store.term_at(index).map_err(|e| kind(&e));
                prop_assert_eq!(term, model.term_at(index).map_err(String::from));
            }
            _ => match model.batch(op) {
                Some(Ok(batch)) => {
                    let log = store.write(&batch);
                    prop_assert!(log.is_ok(), "{:?} refused: {:?}", op, log);
                    model.apply(&batch);
                    prop_assert_eq!(log.unwrap(), model.state().log);
                }
                Some(Err(batch)) => {
                    let refused = store.write(&batch);
                    prop_assert!(
                        matches!(refused, Err(StorageError::InvalidWrite { .. })),
                        "{:?} was not refused: {:?}",
                        batch,
                        refused
                    );
                }
                None => {}
            },
        }
        check(&store, &model)?;
    }
    drop(store);
    let store = harness.open(retention);
    check(&store, &model)
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(48);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mem_store_matches_the_model(
        retention in retention(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(MemHarness::new(), retention, ops)?;
    }

    #[test]
    fn redb_store_matches_the_model(
        retention in retention(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(RedbHarness::new(), retention, ops)?;
    }
}
