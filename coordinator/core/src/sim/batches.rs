//! The batch oracle: what clients submitted and were told, against what every node's batch
//! state machine applied. It reports a batch that is
//! - **lost**: acknowledged committed, yet a converged node never applied it (checked at the end);
//! - **duplicate**: committed at two seqs;
//! - **torn**: applied with other contents than submitted, or with topic offsets that do not
//!   match the committed messages (recomputed here independently);
//! - **divergent**: two nodes disagree on the batch at a seq;
//! - **out of real-time order**: committed at a seq below one acknowledged before it was submitted;
//! - **rejected but visible**: acknowledged rejected, yet committed (or the other way round);
//! - **committed against its preconditions**: a topic offset or a batch it required did not hold.

use std::collections::{BTreeMap, HashMap};

use ordo_common::NodeId;
use ordo_common::batch::{Batch, BatchId, Outcome, Precondition};

use super::checker::{Violation, mix};
use crate::state::Applied;

macro_rules! violation {
    ($($arg:tt)*) => { return Err(Violation(format!($($arg)*))) };
}

fn batch_hash(batch: &Batch) -> u64 {
    let bytes = ordo_common::codec::encode(batch);
    bytes.chunks(8).fold(bytes.len() as u64, |hash, chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        mix(hash, u64::from_le_bytes(word))
    })
}

fn offsets_hash(offsets: &BTreeMap<String, u64>) -> u64 {
    offsets.iter().fold(0, |hash, (topic, offset)| {
        let topic_hash = topic.bytes().fold(0u64, |h, b| mix(h, b as u64));
        mix(mix(hash, topic_hash), *offset)
    })
}

#[derive(Debug)]
struct Submitted {
    hash: u64,
    /// The highest seq acknowledged before the first submit.
    acknowledged_before: u64,
    acknowledged: Option<Outcome>,
}

#[derive(Debug, Default)]
pub struct BatchOracle {
    submitted: HashMap<BatchId, Submitted>,
    /// The committed sequence, seq 1 first: (id, content hash, offsets hash after it).
    sequence: Vec<(BatchId, u64, u64)>,
    /// Offsets recomputed from the committed batches alone.
    expected_offsets: BTreeMap<String, u64>,
    /// The outcome each batch got the first time any node applied it.
    outcomes: HashMap<BatchId, Outcome>,
    acknowledged_seq_max: u64,
    pub acknowledged_committed: u64,
    pub acknowledged_rejected: u64,
    pub duplicates_absorbed: u64,
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

    /// `node` applied `batch`; its state machine said `applied` and now has `offsets`.
    pub fn on_apply(
        &mut self,
        node: NodeId,
        batch: &Batch,
        applied: &Applied,
        offsets: &BTreeMap<String, u64>,
    ) -> Result<(), Violation> {
        let Some(submitted) = self.submitted.get(&batch.id) else {
            violation!(
                "node {node} applied batch {} that no client submitted",
                batch.id
            );
        };
        if batch_hash(batch) != submitted.hash {
            violation!(
                "torn: node {node} applied batch {} with other contents than submitted",
                batch.id
            );
        }
        match self.outcomes.get(&batch.id) {
            Some(first) if *first != applied.outcome => violation!(
                "divergent: batch {} had outcome {first:?} but node {node} got {:?}",
                batch.id,
                applied.outcome
            ),
            Some(_) if !applied.duplicate => {
                // Another node saw it once, this node sees it for the first time: fine unless the
                // node had already registered it (then it must report a duplicate).
            }
            Some(_) => self.duplicates_absorbed += 1,
            None => {
                self.outcomes.insert(batch.id, applied.outcome.clone());
            }
        }
        let Outcome::Committed { seq, .. } = applied.outcome else {
            if let Some(Outcome::Committed { .. }) = submitted.acknowledged {
                violation!(
                    "batch {} acknowledged committed but node {node} rejected it",
                    batch.id
                );
            }
            return Ok(());
        };
        if applied.duplicate {
            return Ok(());
        }
        if let Some(Outcome::Rejected { .. }) = submitted.acknowledged {
            violation!(
                "rejected but visible: batch {} committed at seq {seq} on node {node}",
                batch.id
            );
        }
        let hash = offsets_hash(offsets);
        let known = self.sequence.len() as u64;
        if seq <= known {
            let (id, content, offsets_after) = self.sequence[seq as usize - 1];
            if id != batch.id || content != submitted.hash {
                violation!(
                    "divergent: seq {seq} is batch {id} elsewhere but {} on node {node}",
                    batch.id
                );
            }
            if offsets_after != hash {
                violation!(
                    "torn: node {node}'s topic offsets after seq {seq} differ from the committed messages"
                );
            }
            return Ok(());
        }
        if seq != known + 1 {
            violation!("seq gap: node {node} committed seq {seq} after {known}");
        }
        if let Some(position) = self.sequence.iter().position(|(id, _, _)| *id == batch.id) {
            violation!(
                "duplicate: batch {} committed at seq {} and again at {seq}",
                batch.id,
                position + 1
            );
        }
        if seq <= submitted.acknowledged_before {
            violation!(
                "real-time order: batch {} committed at seq {seq}, below seq {} acknowledged before it was submitted",
                batch.id,
                submitted.acknowledged_before
            );
        }
        self.check_preconditions(node, batch, seq)?;
        for (topic, count) in batch.counts_by_topic() {
            *self.expected_offsets.entry(topic.to_string()).or_insert(0) += count;
        }
        if offsets_hash(&self.expected_offsets) != hash {
            violation!(
                "torn: node {node}'s topic offsets after seq {seq} differ from the committed messages"
            );
        }
        self.sequence.push((batch.id, submitted.hash, hash));
        Ok(())
    }

    /// A batch may commit only if its preconditions held against the committed sequence before
    /// it (recomputed here, independently of the state machine).
    fn check_preconditions(&self, node: NodeId, batch: &Batch, seq: u64) -> Result<(), Violation> {
        for precondition in &batch.preconditions {
            match precondition {
                Precondition::TopicOffset { topic, offset } => {
                    let actual = self.expected_offsets.get(topic).copied().unwrap_or(0);
                    if actual != *offset {
                        violation!(
                            "precondition broken: node {node} committed batch {} at seq {seq} though topic {topic} was at {actual}, not {offset}",
                            batch.id
                        );
                    }
                }
                Precondition::BatchCommitted { batch: other } => {
                    if !self.sequence.iter().any(|(id, _, _)| id == other) {
                        violation!(
                            "precondition broken: node {node} committed batch {} at seq {seq} though batch {other} had not committed",
                            batch.id
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// A client was told `outcome` for `id`.
    pub fn on_acknowledge(&mut self, id: BatchId, outcome: &Outcome) -> Result<(), Violation> {
        let Some(submitted) = self.submitted.get_mut(&id) else {
            violation!("acknowledgement for unknown batch {id}");
        };
        if let Some(previous) = &submitted.acknowledged {
            if previous != outcome {
                violation!("batch {id} acknowledged {previous:?} and later {outcome:?}");
            }
            return Ok(());
        }
        match outcome {
            Outcome::Committed { seq, .. } => {
                if self
                    .sequence
                    .get(*seq as usize - 1)
                    .map(|(committed, _, _)| *committed)
                    != Some(id)
                {
                    violation!("batch {id} acknowledged at seq {seq}, which holds another batch");
                }
                self.acknowledged_committed += 1;
                self.acknowledged_seq_max = self.acknowledged_seq_max.max(*seq);
            }
            Outcome::Rejected { .. } => {
                if self
                    .sequence
                    .iter()
                    .any(|(committed, _, _)| *committed == id)
                {
                    violation!(
                        "rejected but visible: batch {id} acknowledged rejected but committed"
                    );
                }
                self.acknowledged_rejected += 1;
            }
        }
        submitted.acknowledged = Some(outcome.clone());
        Ok(())
    }

    /// After convergence: every node's state holds the whole committed sequence.
    pub fn check_converged(&self, node: NodeId, last_seq: u64) -> Result<(), Violation> {
        let expected = self.sequence.len() as u64;
        if last_seq != expected {
            violation!(
                "lost: node {node} converged at seq {last_seq}, the cluster committed {expected}"
            );
        }
        Ok(())
    }

    /// Batches submitted but without an outcome yet, for clients to retry.
    pub fn unacknowledged(&self) -> impl Iterator<Item = BatchId> + '_ {
        self.submitted
            .iter()
            .filter(|(_, s)| s.acknowledged.is_none())
            .map(|(id, _)| *id)
    }

    pub fn committed_seqs(&self) -> u64 {
        self.sequence.len() as u64
    }
}
