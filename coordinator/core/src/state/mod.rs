//! The replicated state machine for atomic batches: deterministic, no I/O, the same code on
//! every coordinator and in the simulator.
//!
//! Applying a committed batch:
//! 1. If its `BatchId` is in the idempotency registry, the outcome is the recorded one and
//!    nothing changes (a retried submit never commits twice, across leader changes and
//!    restarts, as long as the id is still registered).
//! 2. Otherwise its preconditions are evaluated against the state before it. All hold: the batch
//!    takes the next `seq` (dense, from 1) and each topic's offset advances by its messages.
//!    Any fails: the whole batch is rejected, with the reason. Either outcome is registered.
//!
//! **Registry bound.** The registry keeps the outcomes of the most recent
//! `registry_entries_max` batches (oldest evicted first, in apply order, so every node evicts
//! the same ones). A retry of a batch whose outcome was evicted is treated as a new batch, and
//! a `BatchCommitted` precondition on an evicted batch fails. With the default of 1,000,000 and
//! 10,000 batches per second, that is a retry window of over a minute and a half.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;

use ordo_common::LogIndex;
use ordo_common::batch::{Batch, BatchId, Outcome, Precondition, RejectReason};
use ordo_common::codec::{self, DecodeError};
use ordo_common::limits::ENTRY_PAYLOAD_BYTES_MAX;
use serde::{Deserialize, Serialize};

/// Default bound on the idempotency registry.
pub const REGISTRY_ENTRIES_MAX_DEFAULT: usize = 1_000_000;

/// What a normal log entry carries: every normal entry's payload is one encoded command, so a
/// payload that does not decode is corruption or version skew, never something to skip. New
/// commands (locks, sessions) become new variants, at the end: the order is the disk format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// An atomic batch, applied by [`BatchState::apply`].
    Batch(Batch),
    /// Opaque bytes that change no state (diagnostics, transport and simulator tests).
    Raw(Bytes),
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, ENTRY_PAYLOAD_BYTES_MAX)
    }
}

/// What applying one entry did, for the driver to persist and to answer the submitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub id: BatchId,
    pub outcome: Outcome,
    /// The id was already registered: `outcome` is the original one and nothing changed.
    pub duplicate: bool,
    /// Topics whose offsets changed, with their new offsets.
    pub offsets: Vec<(String, u64)>,
    /// Registry entries evicted to stay within the bound.
    pub evicted: Vec<BatchId>,
}

/// The batch state: sequence, topic offsets, idempotency registry.
#[derive(Clone, Debug)]
pub struct BatchState {
    last_seq: u64,
    offsets: BTreeMap<String, u64>,
    registry: HashMap<BatchId, Outcome>,
    registry_order: VecDeque<BatchId>,
    registry_entries_max: usize,
}

impl BatchState {
    pub fn new(registry_entries_max: usize) -> Self {
        Self {
            last_seq: 0,
            offsets: BTreeMap::new(),
            registry: HashMap::new(),
            registry_order: VecDeque::new(),
            registry_entries_max: registry_entries_max.max(1),
        }
    }

    /// Rebuilds the state from what storage kept: the registry in apply order.
    pub fn restore(
        registry_entries_max: usize,
        last_seq: u64,
        offsets: BTreeMap<String, u64>,
        registry: Vec<(BatchId, Outcome)>,
    ) -> Self {
        let mut state = Self::new(registry_entries_max);
        state.last_seq = last_seq;
        state.offsets = offsets;
        for (id, outcome) in registry {
            state.register(id, outcome);
        }
        state
    }

    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn offset(&self, topic: &str) -> u64 {
        self.offsets.get(topic).copied().unwrap_or(0)
    }

    pub fn offsets(&self) -> &BTreeMap<String, u64> {
        &self.offsets
    }

    pub fn outcome(&self, id: &BatchId) -> Option<&Outcome> {
        self.registry.get(id)
    }

    /// Applies the batch committed at `index`.
    pub fn apply(&mut self, index: LogIndex, batch: &Batch) -> Applied {
        if let Some(outcome) = self.registry.get(&batch.id) {
            return Applied {
                id: batch.id,
                outcome: outcome.clone(),
                duplicate: true,
                offsets: Vec::new(),
                evicted: Vec::new(),
            };
        }
        let (outcome, offsets) = match self.check(batch) {
            Err(reason) => (Outcome::Rejected { reason }, Vec::new()),
            Ok(()) => {
                self.last_seq += 1;
                let mut changed = Vec::new();
                for (topic, count) in batch.counts_by_topic() {
                    let offset = self.offsets.entry(topic.to_string()).or_insert(0);
                    *offset += count;
                    changed.push((topic.to_string(), *offset));
                }
                (
                    Outcome::Committed {
                        seq: self.last_seq,
                        index,
                    },
                    changed,
                )
            }
        };
        let evicted = self.register(batch.id, outcome.clone());
        Applied {
            id: batch.id,
            outcome,
            duplicate: false,
            offsets,
            evicted,
        }
    }

    fn check(&self, batch: &Batch) -> Result<(), RejectReason> {
        for precondition in &batch.preconditions {
            match precondition {
                Precondition::TopicOffset { topic, offset } => {
                    let actual = self.offset(topic);
                    if actual != *offset {
                        let topic = topic.clone();
                        return Err(RejectReason::TopicOffset {
                            topic,
                            expected: *offset,
                            actual,
                        });
                    }
                }
                Precondition::BatchCommitted { batch: other } => {
                    if !matches!(self.registry.get(other), Some(Outcome::Committed { .. })) {
                        return Err(RejectReason::BatchNotCommitted { batch: *other });
                    }
                }
            }
        }
        Ok(())
    }

    fn register(&mut self, id: BatchId, outcome: Outcome) -> Vec<BatchId> {
        self.registry.insert(id, outcome);
        self.registry_order.push_back(id);
        let mut evicted = Vec::new();
        while self.registry_order.len() > self.registry_entries_max {
            let oldest = self.registry_order.pop_front().expect("non-empty");
            self.registry.remove(&oldest);
            evicted.push(oldest);
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_common::batch::Message;

    fn batch(id: u8, topics: &[&str], preconditions: Vec<Precondition>) -> Batch {
        Batch {
            id: BatchId([id; 16]),
            messages: topics
                .iter()
                .map(|topic| Message::new(*topic, vec![id]))
                .collect(),
            preconditions,
        }
    }

    #[test]
    fn committed_batches_take_dense_seqs_and_advance_offsets() {
        let mut state = BatchState::new(100);
        let first = state.apply(5, &batch(1, &["a", "a", "b"], vec![]));
        assert_eq!(first.outcome, Outcome::Committed { seq: 1, index: 5 });
        assert_eq!(first.offsets, vec![("a".into(), 2), ("b".into(), 1)]);
        let second = state.apply(9, &batch(2, &["b"], vec![]));
        assert_eq!(second.outcome, Outcome::Committed { seq: 2, index: 9 });
        assert_eq!(
            (state.offset("a"), state.offset("b"), state.offset("c")),
            (2, 2, 0)
        );
    }

    #[test]
    fn a_duplicate_id_returns_the_original_outcome_and_changes_nothing() {
        let mut state = BatchState::new(100);
        let original = state.apply(3, &batch(7, &["a"], vec![]));
        let again = state.apply(8, &batch(7, &["a", "a"], vec![]));
        assert!(again.duplicate);
        assert_eq!(again.outcome, original.outcome);
        assert_eq!((state.last_seq(), state.offset("a")), (1, 1));
    }

    #[test]
    fn a_failed_precondition_rejects_the_whole_batch() {
        let mut state = BatchState::new(100);
        state.apply(1, &batch(1, &["a"], vec![]));
        let racing = Precondition::TopicOffset {
            topic: "a".into(),
            offset: 0,
        };
        let rejected = state.apply(2, &batch(2, &["a", "b"], vec![racing]));
        assert_eq!(
            rejected.outcome,
            Outcome::Rejected {
                reason: RejectReason::TopicOffset {
                    topic: "a".into(),
                    expected: 0,
                    actual: 1
                }
            }
        );
        assert_eq!(
            (state.last_seq(), state.offset("a"), state.offset("b")),
            (1, 1, 0)
        );
        let after = Precondition::BatchCommitted {
            batch: BatchId([2; 16]),
        };
        let blocked = state.apply(3, &batch(3, &["c"], vec![after]));
        assert!(matches!(
            blocked.outcome,
            Outcome::Rejected {
                reason: RejectReason::BatchNotCommitted { .. }
            }
        ));
        let ok = Precondition::BatchCommitted {
            batch: BatchId([1; 16]),
        };
        let both = vec![
            ok,
            Precondition::TopicOffset {
                topic: "a".into(),
                offset: 1,
            },
        ];
        assert!(matches!(
            state.apply(4, &batch(4, &["a"], both)).outcome,
            Outcome::Committed { seq: 2, .. }
        ));
    }

    #[test]
    fn the_registry_is_bounded_and_evicts_oldest_first() {
        let mut state = BatchState::new(2);
        state.apply(1, &batch(1, &["a"], vec![]));
        state.apply(2, &batch(2, &["a"], vec![]));
        let third = state.apply(3, &batch(3, &["a"], vec![]));
        assert_eq!(third.evicted, vec![BatchId([1; 16])]);
        assert!(state.outcome(&BatchId([1; 16])).is_none());
        let restored = BatchState::restore(
            2,
            state.last_seq(),
            state.offsets().clone(),
            vec![(
                BatchId([2; 16]),
                state.outcome(&BatchId([2; 16])).unwrap().clone(),
            )],
        );
        assert_eq!(restored.offset("a"), 3);
        assert!(restored.outcome(&BatchId([2; 16])).is_some());
    }

    #[test]
    fn commands_round_trip_and_garbage_is_an_error() {
        let command = Command::Batch(batch(9, &["t"], vec![]));
        assert_eq!(Command::decode(&command.encode()).unwrap(), command);
        assert!(Command::decode(&[1, 2, 3]).is_err());
    }
}
