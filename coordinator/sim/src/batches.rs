//! The batch oracle: a reference model of the batch state machine, written apart from the one
//! in `ordo-core`, fed the committed log in index order (each index the first time any node
//! applies it; the Raft checker makes sure every node applies the same entry there). Against
//! the model it checks everything a client or an operator can observe of every node:
//!
//! - **what each apply recorded**: the seqs and topic offsets in a node's state write are the
//!   model's, entry for entry;
//! - **what submitters are told**: the outcome the model decided, the original one for a retried
//!   id, and only once that outcome is durable on the node that tells it;
//! - **status reads** are linearizable: an outcome decided before the read began is seen, and
//!   no answer is one the model did not decide;
//! - **subscribers** read the model's batch at every seq (in [`crate::cluster`], which also
//!   checks that a seq a node declared servable is durable there);
//! - **at the end**, every node's state holds the whole committed sequence (nothing lost).
//!
//! The model itself reports a batch that is *phantom* (nobody submitted it), *torn* (applied
//! with other contents than submitted), committed *out of real-time order* (below a seq that was
//! acknowledged before it was submitted), or *rejected but visible*. Preconditions and
//! duplicates are decided by the model's own rules, so a node that commits a batch against its
//! preconditions, or a retried id twice, disagrees with it.

use std::collections::{BTreeMap, HashMap};

use ordo_common::batch::{
    Batch, BatchId, CommittedBatch, Message, Outcome, Precondition, RejectReason,
};
use ordo_common::client::ClientResponse;
use ordo_common::{Entry, EntryPayload, LogIndex, NodeId};
use ordo_core::state::Command;
use ordo_node::storage::StateUpdate;

use crate::checker::{Violation, mix};

macro_rules! violation {
    ($($arg:tt)*) => { return Err(Violation(format!($($arg)*))) };
}

fn bytes_hash(bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(bytes.len() as u64, |hash, chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        mix(hash, u64::from_le_bytes(word))
    })
}

fn batch_hash(batch: &Batch) -> u64 {
    bytes_hash(&ordo_common::codec::encode(batch))
}

fn messages_hash(messages: &[Message]) -> u64 {
    bytes_hash(&ordo_common::codec::encode(&messages))
}

#[derive(Debug)]
struct Submitted {
    hash: u64,
    /// The highest seq acknowledged committed before the first submit.
    acknowledged_before: u64,
    acknowledged: Option<Outcome>,
}

/// What applying one index did, in the model.
#[derive(Clone, Debug, Default)]
struct Effect {
    /// A newly committed batch: its seq.
    seq: Option<u64>,
    /// Topic offsets set by this entry.
    offsets: Vec<(String, u64)>,
}

/// A status read in progress.
#[derive(Debug)]
struct StatusRead {
    batch: BatchId,
    /// The outcome the read must see: decided at or below an index acknowledged before the read
    /// began.
    settled: Option<Outcome>,
}

#[derive(Debug, Default)]
pub struct BatchOracle {
    submitted: HashMap<BatchId, Submitted>,
    /// The model: the last index folded in, the committed sequence (seq 1 first: id, content
    /// hash, messages hash), topic offsets, and each batch's outcome with the index deciding it.
    model_index: LogIndex,
    sequence: Vec<(BatchId, u64, u64)>,
    offsets: BTreeMap<String, u64>,
    outcomes: HashMap<BatchId, (Outcome, LogIndex)>,
    /// Batches in the order their outcomes were decided (for clients resubmitting one).
    decided_order: Vec<BatchId>,
    effects: BTreeMap<LogIndex, Effect>,
    statuses: HashMap<u64, StatusRead>,
    /// The highest index whose outcome a submitter was told.
    acknowledged_index_max: LogIndex,
    acknowledged_seq_max: u64,
    pub acknowledged_committed: u64,
    pub acknowledged_rejected: u64,
    pub duplicates_absorbed: u64,
    pub statuses_served: u64,
    pub subscribed: u64,
}

impl BatchOracle {
    /// A client submits (or resubmits) `batch`.
    pub fn submit(&mut self, batch: &Batch) {
        let acknowledged_before = self.acknowledged_seq_max;
        self.submitted.entry(batch.id).or_insert_with(|| Submitted {
            hash: batch_hash(batch),
            acknowledged_before,
            acknowledged: None,
        });
    }

    /// Folds the entry at the next index into the model (the first time any node applies it).
    pub fn on_first_apply(&mut self, entry: &Entry) -> Result<(), Violation> {
        if entry.index != self.model_index + 1 {
            violation!(
                "the model is at index {} but was fed index {}",
                self.model_index,
                entry.index
            );
        }
        self.model_index = entry.index;
        let effect = match &entry.payload {
            EntryPayload::Noop => Effect::default(),
            EntryPayload::Normal(bytes) => match Command::decode(bytes) {
                Ok(Command::Raw(_)) => Effect::default(),
                Ok(Command::Batch(batch)) => self.fold(entry.index, &batch)?,
                Err(error) => violation!("entry {} holds no command: {error}", entry.index),
            },
        };
        self.effects.insert(entry.index, effect);
        Ok(())
    }

    fn fold(&mut self, index: LogIndex, batch: &Batch) -> Result<Effect, Violation> {
        let Some(submitted) = self.submitted.get(&batch.id) else {
            violation!(
                "phantom: batch {} applied at {index} but no client submitted it",
                batch.id
            );
        };
        if batch_hash(batch) != submitted.hash {
            violation!(
                "torn: batch {} applied at {index} with other contents than submitted",
                batch.id
            );
        }
        if self.outcomes.contains_key(&batch.id) {
            self.duplicates_absorbed += 1;
            return Ok(Effect::default());
        }
        let outcome = match self.reject_reason(batch) {
            Some(reason) => {
                if let Some(Outcome::Committed { .. }) = submitted.acknowledged {
                    violation!("batch {} acknowledged committed but rejected", batch.id);
                }
                Outcome::Rejected { reason }
            }
            None => {
                let seq = self.sequence.len() as u64 + 1;
                if seq <= submitted.acknowledged_before {
                    violation!(
                        "real-time order: batch {} committed at seq {seq}, below seq {} acknowledged before it was submitted",
                        batch.id,
                        submitted.acknowledged_before
                    );
                }
                if let Some(Outcome::Rejected { .. }) = submitted.acknowledged {
                    violation!(
                        "rejected but visible: batch {} committed at seq {seq}",
                        batch.id
                    );
                }
                self.sequence
                    .push((batch.id, submitted.hash, messages_hash(&batch.messages)));
                let mut changed = Vec::new();
                for message in &batch.messages {
                    *self.offsets.entry(message.topic.clone()).or_insert(0) += 1;
                }
                for topic in batch.messages.iter().map(|m| &m.topic) {
                    if !changed.iter().any(|(t, _)| t == topic) {
                        changed.push((topic.clone(), self.offsets[topic]));
                    }
                }
                let outcome = Outcome::Committed { seq, index };
                self.outcomes.insert(batch.id, (outcome, index));
                self.decided_order.push(batch.id);
                return Ok(Effect {
                    seq: Some(seq),
                    offsets: changed,
                });
            }
        };
        self.outcomes.insert(batch.id, (outcome, index));
        self.decided_order.push(batch.id);
        Ok(Effect::default())
    }

    /// The model's rule: the first precondition that does not hold, in order.
    fn reject_reason(&self, batch: &Batch) -> Option<RejectReason> {
        batch
            .preconditions
            .iter()
            .find_map(|precondition| match precondition {
                Precondition::TopicOffset { topic, offset } => {
                    let actual = self.offsets.get(topic).copied().unwrap_or(0);
                    (actual != *offset).then(|| RejectReason::TopicOffset {
                        topic: topic.clone(),
                        expected: *offset,
                        actual,
                    })
                }
                Precondition::BatchCommitted { batch: other } => {
                    let committed = matches!(
                        self.outcomes.get(other),
                        Some((Outcome::Committed { .. }, _))
                    );
                    (!committed).then_some(RejectReason::BatchNotCommitted { batch: *other })
                }
            })
    }

    /// `node` applied entries after `previously_applied` and recorded `update`: its seqs and
    /// offsets must be the model's for those entries.
    pub fn on_state_write(
        &self,
        node: NodeId,
        previously_applied: LogIndex,
        update: &StateUpdate,
    ) -> Result<(), Violation> {
        let range = previously_applied + 1..=update.applied.index;
        let mut seqs = Vec::new();
        let mut offsets = BTreeMap::new();
        for (index, effect) in self.effects.range(range.clone()) {
            if let Some(seq) = effect.seq {
                seqs.push((seq, *index));
            }
            offsets.extend(effect.offsets.iter().cloned());
        }
        if self.effects.range(range.clone()).count() as u64 != range.end() - range.start() + 1 {
            violation!(
                "node {node} applied through {} ahead of the model",
                range.end()
            );
        }
        if update.seqs != seqs {
            violation!(
                "node {node} recorded seqs {:?} for entries {range:?}, the model committed {seqs:?}",
                update.seqs
            );
        }
        let recorded: BTreeMap<String, u64> = update.offsets.iter().cloned().collect();
        if recorded != offsets {
            violation!(
                "torn: node {node} recorded topic offsets {recorded:?} for entries {range:?}, the model has {offsets:?}"
            );
        }
        Ok(())
    }

    /// `node` told a submitter that `id` has `outcome`; the node's durable apply progress is
    /// at `durable_applied`, and its durable seq table maps the outcome's seq (if committed) to
    /// `durable_seq_index`.
    pub fn on_acknowledge(
        &mut self,
        node: NodeId,
        id: BatchId,
        outcome: &Outcome,
        durable_applied: LogIndex,
        durable_seq_index: Option<LogIndex>,
    ) -> Result<(), Violation> {
        let Some((decided, decided_at)) = self.outcomes.get(&id).cloned() else {
            violation!("node {node} answered batch {id} with {outcome:?}, which nothing decided");
        };
        if decided != *outcome {
            violation!(
                "node {node} answered batch {id} with {outcome:?}, but it was decided {decided:?}"
            );
        }
        if durable_applied < decided_at {
            violation!(
                "node {node} answered batch {id} before its apply was durable there (applied {durable_applied} durably, decided at {decided_at})"
            );
        }
        if let Outcome::Committed { seq, index } = outcome
            && durable_seq_index != Some(*index)
        {
            violation!(
                "node {node} answered batch {id} committed at seq {seq} before the seq was durable there"
            );
        }
        let Some(submitted) = self.submitted.get_mut(&id) else {
            violation!("acknowledgement for unknown batch {id}");
        };
        if submitted.acknowledged.is_none() {
            match outcome {
                Outcome::Committed { seq, .. } => {
                    self.acknowledged_committed += 1;
                    self.acknowledged_seq_max = self.acknowledged_seq_max.max(*seq);
                }
                Outcome::Rejected { .. } => self.acknowledged_rejected += 1,
            }
            submitted.acknowledged = Some(outcome.clone());
        }
        self.acknowledged_index_max = self.acknowledged_index_max.max(decided_at);
        Ok(())
    }

    /// A status read for `batch` begins, numbered `read`; `acknowledged_index` is the highest
    /// index any client had been told about (raw proposals included).
    pub fn invoke_status(&mut self, read: u64, batch: BatchId, acknowledged_index: LogIndex) {
        let horizon = acknowledged_index.max(self.acknowledged_index_max);
        let settled = self
            .outcomes
            .get(&batch)
            .filter(|(_, decided_at)| *decided_at <= horizon)
            .map(|(outcome, _)| outcome.clone());
        self.statuses.insert(read, StatusRead { batch, settled });
    }

    /// Status read `read` was answered by `node`.
    pub fn on_status(
        &mut self,
        node: NodeId,
        read: u64,
        response: &ClientResponse,
    ) -> Result<(), Violation> {
        let Some(status) = self.statuses.remove(&read) else {
            violation!("an answer to unknown status read {read}");
        };
        let batch = status.batch;
        match response {
            ClientResponse::Outcome(outcome) => {
                match self.outcomes.get(&batch) {
                    Some((decided, _)) if decided == outcome => {}
                    other => violation!(
                        "stale or invented status: node {node} said batch {batch} is {outcome:?}, the model has {other:?}"
                    ),
                }
                self.statuses_served += 1;
            }
            ClientResponse::Unknown => {
                if let Some(settled) = status.settled {
                    violation!(
                        "stale status: node {node} said batch {batch} is unknown, but it was {settled:?} before the read began"
                    );
                }
                self.statuses_served += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// A status read that will get no answer (its node crashed, or the answer was lost).
    pub fn forget_status(&mut self, read: u64) {
        self.statuses.remove(&read);
    }

    /// A subscriber on `node` read `batch` at its seq from the node's durable store.
    pub fn on_subscribed(&mut self, node: NodeId, batch: &CommittedBatch) -> Result<(), Violation> {
        let Some((id, _, messages)) = self.sequence.get(batch.seq as usize - 1) else {
            violation!(
                "a subscriber on node {node} read seq {}, which the cluster has not committed",
                batch.seq
            );
        };
        if *id != batch.id || *messages != messages_hash(&batch.messages) {
            violation!(
                "a subscriber on node {node} read batch {} at seq {}, the cluster committed {id} there",
                batch.id,
                batch.seq
            );
        }
        self.subscribed += 1;
        Ok(())
    }

    /// After convergence: every node's batch state holds the whole committed sequence.
    pub fn check_converged(&self, node: NodeId, last_seq: u64) -> Result<(), Violation> {
        let expected = self.sequence.len() as u64;
        if last_seq != expected {
            violation!(
                "lost: node {node} converged at seq {last_seq}, the cluster committed {expected}"
            );
        }
        Ok(())
    }

    /// Whether some submitter was told `id`'s outcome.
    pub fn is_acknowledged(&self, id: &BatchId) -> bool {
        self.submitted
            .get(id)
            .is_some_and(|submitted| submitted.acknowledged.is_some())
    }

    /// The model's offset of `topic` (for clients choosing preconditions).
    pub fn offset(&self, topic: &str) -> u64 {
        self.offsets.get(topic).copied().unwrap_or(0)
    }

    pub fn committed_seqs(&self) -> u64 {
        self.sequence.len() as u64
    }

    /// One of the `recent` most recently decided batches, chosen by `pick`, for clients that
    /// resubmit one or ask for its status.
    pub fn decided(&self, recent: usize, pick: u64) -> Option<BatchId> {
        let start = self.decided_order.len().saturating_sub(recent);
        let window = &self.decided_order[start..];
        (!window.is_empty()).then(|| window[pick as usize % window.len()])
    }
}
