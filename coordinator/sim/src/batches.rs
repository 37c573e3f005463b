//! The batch oracle: a reference model of the batch state machine, written apart from the one
//! in `ordo-core`, fed the committed log in index order (each index the first time any node
//! applies it; the Raft checker makes sure every node applies the same entry there). Against
//! the model it checks everything a client or an operator can observe of every node:
//!
//! - **what each apply recorded**: the seqs, topic offsets, registry insertions and evictions,
//!   log time and registry floor in a node's state write are the model's, entry for entry;
//! - **what submitters are told**: the outcome the model decided (the original one for a
//!   retried id), a conflict only for an id registered with other content, "beyond the horizon"
//!   only for an id the registry can no longer answer for — and an outcome only once the entry
//!   deciding it is durable in the log of the node that tells it (its state write may follow);
//! - **status reads** are linearizable: an outcome decided before the read began is seen (or, if
//!   it left the registry since, reported beyond the horizon), and no answer is one the model
//!   could not give;
//! - **subscribers** read the model's batch at every seq (in [`crate::cluster`], which also
//!   checks that a seq a node declared servable is durable there);
//! - **at the end**, every node's state holds the whole committed sequence (nothing lost), and
//!   every node's stored registry is the model's.
//!
//! The model itself reports a batch that is *phantom* (nobody submitted it), *torn* (applied
//! with other contents than submitted), committed *out of real-time order* (below a seq that was
//! acknowledged before it was submitted), *committed twice* (a second seq for one id), or
//! *rejected but visible*. Preconditions, duplicates, conflicts and the horizon are decided by
//! the model's own rules, so a node that decides otherwise disagrees with it.

use std::collections::{BTreeMap, HashMap, HashSet};

use ordo_common::batch::{
    Batch, BatchId, CommittedBatch, Message, Outcome, Precondition, RejectReason,
};
use ordo_common::client::{ClientResponse, RefusedCode};
use ordo_common::{Entry, EntryPayload, LogIndex, NodeId};
use ordo_core::state::{Command, Registered, RegistryLimits, content_hash, id_time_ms};
use ordo_node::storage::StateUpdate;

use crate::checker::{Violation, mix};
use crate::locks::LockModel;
use ordo_common::coord::MutexKind;

macro_rules! violation {
    ($($arg:tt)*) => { return Err(Violation(format!($($arg)*))) };
}

/// A 64-bit digest of bytes (for comparing them, not for security).
pub fn bytes_digest(bytes: &[u8]) -> u64 {
    bytes_hash(bytes)
}

fn bytes_hash(bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(bytes.len() as u64, |hash, chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        mix(hash, u64::from_le_bytes(word))
    })
}

fn messages_hash(messages: &[Message]) -> u64 {
    bytes_hash(&ordo_common::codec::encode(&messages))
}

/// The content hash the registry compares, computed as a node does.
pub fn batch_content(batch: &Batch) -> u64 {
    content_hash(&ordo_common::codec::encode(batch))
}

#[derive(Debug)]
struct Submitted {
    /// The highest seq acknowledged committed before the first submit.
    acknowledged_before: u64,
    acknowledged: Option<Outcome>,
}

/// What the model decided for one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Decided,
    Duplicate,
    Conflict,
    BeyondHorizon,
}

/// What applying one index did, in the model.
#[derive(Clone, Debug, Default)]
struct Effect {
    /// A newly committed batch: its seq.
    seq: Option<u64>,
    /// Topic offsets set by this entry.
    offsets: Vec<(String, u64)>,
    /// A registry insertion, and the evictions after the entry.
    registered: Option<BatchId>,
    evicted: Vec<BatchId>,
    log_time_ms: u64,
    registry_floor_ms: u64,
}

/// A status read in progress.
#[derive(Debug)]
struct StatusRead {
    batch: BatchId,
    /// The outcome the read must see (or report beyond the horizon): decided at or below an
    /// index acknowledged before the read began.
    settled: Option<Outcome>,
    /// The floor as of that index: an id at or below it cannot be unknown.
    settled_floor_ms: u64,
}

/// The model's registry: a map ordered by id (UUID v7: by time) with its byte count.
#[derive(Debug, Default)]
struct ModelRegistry {
    records: BTreeMap<BatchId, (Outcome, u64)>,
    bytes: u64,
    /// The newest id time evicted.
    floor_ms: u64,
}

#[derive(Debug)]
pub struct BatchOracle {
    limits: RegistryLimits,
    /// Every submitted content of every id.
    submitted: HashMap<(BatchId, u64), Submitted>,
    /// The model: the last index folded in, the committed sequence (seq 1 first: id, messages
    /// hash), topic offsets, the registry, the log time.
    model_index: LogIndex,
    sequence: Vec<(BatchId, u64)>,
    offsets: BTreeMap<String, u64>,
    registry: ModelRegistry,
    log_time_ms: u64,
    /// Every outcome ever decided, with the index that decided it (never evicted).
    decided: HashMap<BatchId, (Outcome, LogIndex)>,
    /// Batches in the order their outcomes were decided (for clients resubmitting one).
    decided_order: Vec<BatchId>,
    /// Every (id, content, verdict) an entry got.
    verdicts: HashSet<(BatchId, u64, Kind)>,
    effects: BTreeMap<LogIndex, Effect>,
    statuses: HashMap<u64, StatusRead>,
    /// Ids whose outcome some submitter was told.
    acknowledged_ids: HashSet<BatchId>,
    /// The highest index whose outcome a submitter was told.
    acknowledged_index_max: LogIndex,
    acknowledged_seq_max: u64,
    pub acknowledged_committed: u64,
    pub acknowledged_rejected: u64,
    /// Configuration entries committed (membership changes, automatic promotions included).
    pub configs_committed: u64,
    pub duplicates_absorbed: u64,
    pub conflicts: u64,
    pub beyond_horizon: u64,
    pub evicted: u64,
    pub statuses_served: u64,
    pub subscribed: u64,
    /// Sessions, locks and elections, folded in the same order.
    pub locks: LockModel,
}

impl BatchOracle {
    pub fn new(limits: RegistryLimits) -> Self {
        Self {
            limits,
            submitted: HashMap::new(),
            model_index: 0,
            sequence: Vec::new(),
            offsets: BTreeMap::new(),
            registry: ModelRegistry::default(),
            log_time_ms: 0,
            decided: HashMap::new(),
            decided_order: Vec::new(),
            verdicts: HashSet::new(),
            effects: BTreeMap::new(),
            statuses: HashMap::new(),
            acknowledged_ids: HashSet::new(),
            acknowledged_index_max: 0,
            acknowledged_seq_max: 0,
            acknowledged_committed: 0,
            acknowledged_rejected: 0,
            configs_committed: 0,
            duplicates_absorbed: 0,
            conflicts: 0,
            beyond_horizon: 0,
            evicted: 0,
            statuses_served: 0,
            subscribed: 0,
            locks: LockModel::default(),
        }
    }

    /// A client submits (or resubmits) `batch`.
    pub fn submit(&mut self, batch: &Batch) {
        let acknowledged_before = self.acknowledged_seq_max;
        self.submitted
            .entry((batch.id, batch_content(batch)))
            .or_insert_with(|| Submitted {
                acknowledged_before,
                acknowledged: None,
            });
    }

    /// The floor every decision reads, as of the model's index.
    fn floor_ms(&self) -> u64 {
        let time_floor = self.log_time_ms.saturating_sub(self.limits.horizon_ms);
        self.registry.floor_ms.max(time_floor)
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
        let mut effect = match &entry.payload {
            EntryPayload::Noop => Effect::default(),
            EntryPayload::Config(_) => {
                self.configs_committed += 1;
                Effect::default()
            }
            EntryPayload::Normal(bytes) => match Command::decode(bytes) {
                Ok(Command::Raw(_)) => Effect::default(),
                Ok(Command::Coord { op, stamp_ms }) => {
                    self.log_time_ms = self.log_time_ms.max(stamp_ms);
                    self.locks.fold(entry, &op, self.log_time_ms)?;
                    Effect::default()
                }
                Ok(Command::Batch { batch, stamp_ms }) => {
                    let content = content_hash(Command::batch_bytes(bytes));
                    self.fold(entry.index, &batch, stamp_ms, content)?
                }
                Err(error) => violation!("entry {} holds no command: {error}", entry.index),
            },
        };
        effect.log_time_ms = self.log_time_ms;
        effect.registry_floor_ms = self.registry.floor_ms;
        self.effects.insert(entry.index, effect);
        Ok(())
    }

    fn fold(
        &mut self,
        index: LogIndex,
        batch: &Batch,
        stamp_ms: u64,
        content: u64,
    ) -> Result<Effect, Violation> {
        let Some(submitted) = self.submitted.get(&(batch.id, content)) else {
            if self.submitted.keys().any(|(id, _)| *id == batch.id) {
                violation!(
                    "torn: batch {} applied at {index} with contents nobody submitted",
                    batch.id
                );
            }
            violation!(
                "phantom: batch {} applied at {index} but no client submitted it",
                batch.id
            );
        };
        self.log_time_ms = self.log_time_ms.max(stamp_ms);
        let mut effect = Effect::default();
        let time = id_time_ms(&batch.id);
        let kind = if let Some((outcome, registered_content)) = self.registry.records.get(&batch.id)
        {
            if *registered_content == content {
                self.duplicates_absorbed += 1;
                let _ = outcome;
                Kind::Duplicate
            } else {
                self.conflicts += 1;
                Kind::Conflict
            }
        } else if time <= self.floor_ms()
            || time > self.log_time_ms.saturating_add(self.limits.future_skew_ms)
        {
            self.beyond_horizon += 1;
            Kind::BeyondHorizon
        } else {
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
                    if let Some((Outcome::Committed { seq: first, .. }, _)) =
                        self.decided.get(&batch.id)
                    {
                        violation!(
                            "committed twice: batch {} at seq {first} and again at seq {seq}",
                            batch.id
                        );
                    }
                    self.sequence
                        .push((batch.id, messages_hash(&batch.messages)));
                    for message in &batch.messages {
                        *self.offsets.entry(message.topic.clone()).or_insert(0) += 1;
                    }
                    for topic in batch.messages.iter().map(|m| &m.topic) {
                        if !effect.offsets.iter().any(|(t, _)| t == topic) {
                            effect.offsets.push((topic.clone(), self.offsets[topic]));
                        }
                    }
                    effect.seq = Some(seq);
                    Outcome::Committed { seq, index }
                }
            };
            let record = Registered {
                outcome: outcome.clone(),
                content,
            };
            self.registry.bytes += record.bytes();
            self.registry
                .records
                .insert(batch.id, (outcome.clone(), content));
            self.decided.entry(batch.id).or_insert((outcome, index));
            self.decided_order.push(batch.id);
            effect.registered = Some(batch.id);
            Kind::Decided
        };
        self.verdicts.insert((batch.id, content, kind));
        self.evict(&mut effect);
        Ok(effect)
    }

    /// The model's eviction: oldest id first, past the horizon or over the byte budget.
    fn evict(&mut self, effect: &mut Effect) {
        let time_floor = self.log_time_ms.saturating_sub(self.limits.horizon_ms);
        while let Some((id, (outcome, content))) = self.registry.records.first_key_value() {
            let time = id_time_ms(id);
            if time >= time_floor && self.registry.bytes <= self.limits.bytes_max {
                break;
            }
            let record = Registered {
                outcome: outcome.clone(),
                content: *content,
            };
            self.registry.bytes -= record.bytes();
            self.registry.floor_ms = self.registry.floor_ms.max(time);
            let id = *id;
            self.registry.records.remove(&id);
            effect.evicted.push(id);
            self.evicted += 1;
        }
    }

    /// The model's fencing rule: the lock (election) is held with exactly `token`.
    fn fenced(&self, kind: MutexKind, name: &str, token: u64) -> Option<RejectReason> {
        let current = self.locks.token(kind, name);
        (current != Some(token)).then(|| RejectReason::Fenced {
            kind,
            name: name.to_string(),
            token,
            current,
        })
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
                        self.registry.records.get(other),
                        Some((Outcome::Committed { .. }, _))
                    );
                    (!committed).then_some(RejectReason::BatchNotCommitted { batch: *other })
                }
                Precondition::LockHeld { name, token } => {
                    self.fenced(MutexKind::Lock, name, *token)
                }
                Precondition::Leader { election, epoch } => {
                    self.fenced(MutexKind::Election, election, *epoch)
                }
            })
    }

    /// `node` applied entries after `previously_applied` and recorded `update`: everything it
    /// recorded must be the model's for those entries.
    pub fn on_state_write(
        &self,
        node: NodeId,
        previously_applied: LogIndex,
        update: &StateUpdate,
    ) -> Result<(), Violation> {
        let range = previously_applied + 1..=update.applied.index;
        let effects: Vec<&Effect> = self.effects.range(range.clone()).map(|(_, e)| e).collect();
        if effects.len() as u64 != range.end() - range.start() + 1 {
            violation!(
                "node {node} applied through {} ahead of the model",
                range.end()
            );
        }
        let seqs: Vec<(u64, LogIndex)> = self
            .effects
            .range(range.clone())
            .filter_map(|(index, effect)| effect.seq.map(|seq| (seq, *index)))
            .collect();
        if update.seqs != seqs {
            violation!(
                "node {node} recorded seqs {:?} for entries {range:?}, the model committed {seqs:?}",
                update.seqs
            );
        }
        let mut offsets = BTreeMap::new();
        for effect in &effects {
            offsets.extend(effect.offsets.iter().cloned());
        }
        let recorded: BTreeMap<String, u64> = update.offsets.iter().cloned().collect();
        if recorded != offsets {
            violation!(
                "torn: node {node} recorded topic offsets {recorded:?} for entries {range:?}, the model has {offsets:?}"
            );
        }
        let registered: Vec<[u8; 16]> = effects
            .iter()
            .filter_map(|effect| effect.registered.map(|id| id.0))
            .collect();
        let recorded: Vec<[u8; 16]> = update.registry.iter().map(|(id, _)| *id).collect();
        if recorded != registered {
            violation!(
                "node {node} registered {} ids for entries {range:?}, the model {}",
                recorded.len(),
                registered.len()
            );
        }
        let evicted: Vec<[u8; 16]> = effects
            .iter()
            .flat_map(|effect| effect.evicted.iter().map(|id| id.0))
            .collect();
        if update.registry_evicted != evicted {
            violation!(
                "node {node} evicted {} ids for entries {range:?}, the model {}",
                update.registry_evicted.len(),
                evicted.len()
            );
        }
        let last = effects.last().expect("a non-empty range");
        if (update.log_time_ms, update.registry_floor_ms)
            != (last.log_time_ms, last.registry_floor_ms)
        {
            violation!(
                "node {node} recorded log time {} and floor {} after {}, the model {} and {}",
                update.log_time_ms,
                update.registry_floor_ms,
                range.end(),
                last.log_time_ms,
                last.registry_floor_ms
            );
        }
        Ok(())
    }

    /// `node` told a submitter of `batch` `response`; the node's durable log ends at
    /// `durable_last`.
    pub fn on_submit_answer(
        &mut self,
        node: NodeId,
        batch: &Batch,
        response: &ClientResponse,
        durable_last: LogIndex,
    ) -> Result<(), Violation> {
        let id = batch.id;
        let content = batch_content(batch);
        match response {
            ClientResponse::Outcome(outcome) => {
                self.on_acknowledge(node, id, content, outcome, durable_last)
            }
            ClientResponse::Refused {
                code: RefusedCode::IdConflict,
                ..
            } => {
                if !self.verdicts.contains(&(id, content, Kind::Conflict)) {
                    violation!("node {node} called batch {id} a conflict, which no entry was");
                }
                Ok(())
            }
            ClientResponse::Refused {
                code: RefusedCode::BeyondHorizon,
                ..
            } => {
                let refused_at_apply = self.verdicts.contains(&(id, content, Kind::BeyondHorizon));
                if !refused_at_apply && id_time_ms(&id) > self.floor_ms() {
                    violation!(
                        "node {node} refused batch {id} (time {}) as beyond the horizon, which is at {}",
                        id_time_ms(&id),
                        self.floor_ms()
                    );
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_acknowledge(
        &mut self,
        node: NodeId,
        id: BatchId,
        content: u64,
        outcome: &Outcome,
        durable_last: LogIndex,
    ) -> Result<(), Violation> {
        let Some((decided, decided_at)) = self.decided.get(&id).cloned() else {
            violation!("node {node} answered batch {id} with {outcome:?}, which nothing decided");
        };
        if decided != *outcome {
            violation!(
                "node {node} answered batch {id} with {outcome:?}, but it was decided {decided:?}"
            );
        }
        if !self.verdicts.contains(&(id, content, Kind::Decided))
            && !self.verdicts.contains(&(id, content, Kind::Duplicate))
        {
            violation!("node {node} answered batch {id} with an outcome its content never got");
        }
        // Decided means some node applied the entry, so it is committed (the Raft checker holds
        // commits to a majority's durable logs); the answering node applied it too, which it
        // may only do from its own durable log. A restart re-applies it from there.
        if durable_last < decided_at {
            violation!(
                "node {node} answered batch {id} before the entry deciding it was durable in its log (durable through {durable_last}, decided at {decided_at})"
            );
        }
        let Some(submitted) = self.submitted.get_mut(&(id, content)) else {
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
        self.acknowledged_ids.insert(id);
        self.acknowledged_index_max = self.acknowledged_index_max.max(decided_at);
        Ok(())
    }

    /// A status read for `batch` begins, numbered `read`; `acknowledged_index` is the highest
    /// index any client had been told about (raw proposals included).
    pub fn invoke_status(&mut self, read: u64, batch: BatchId, acknowledged_index: LogIndex) {
        let horizon = acknowledged_index.max(self.acknowledged_index_max);
        let settled = self
            .decided
            .get(&batch)
            .filter(|(_, decided_at)| *decided_at <= horizon)
            .map(|(outcome, _)| outcome.clone());
        let settled_floor_ms =
            self.effects
                .range(..=horizon)
                .next_back()
                .map_or(0, |(_, effect)| {
                    let time_floor = effect.log_time_ms.saturating_sub(self.limits.horizon_ms);
                    effect.registry_floor_ms.max(time_floor)
                });
        self.statuses.insert(
            read,
            StatusRead {
                batch,
                settled,
                settled_floor_ms,
            },
        );
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
        let time = id_time_ms(&batch);
        match response {
            ClientResponse::Outcome(outcome) => {
                match self.decided.get(&batch) {
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
                if time <= status.settled_floor_ms {
                    violation!(
                        "stale status: node {node} said batch {batch} (time {time}) is unknown, but the horizon had passed it ({}) before the read began",
                        status.settled_floor_ms
                    );
                }
                self.statuses_served += 1;
            }
            ClientResponse::BeyondHorizon { floor_ms } => {
                if time > *floor_ms || *floor_ms > self.floor_ms() {
                    violation!(
                        "node {node} said batch {batch} (time {time}) is beyond a horizon at {floor_ms}; the model's is at {}",
                        self.floor_ms()
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
        let Some((id, messages)) = self.sequence.get(batch.seq as usize - 1) else {
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

    /// After convergence: `node`'s stored registry (id → outcome) is the model's.
    pub fn check_registry(
        &self,
        node: NodeId,
        stored: &[(BatchId, Registered)],
    ) -> Result<(), Violation> {
        let model: Vec<(BatchId, &Outcome)> = self
            .registry
            .records
            .iter()
            .map(|(id, (outcome, _))| (*id, outcome))
            .collect();
        let stored: Vec<(BatchId, &Outcome)> = stored
            .iter()
            .map(|(id, record)| (*id, &record.outcome))
            .collect();
        if stored != model {
            let only_stored: Vec<_> = stored
                .iter()
                .filter(|e| !model.contains(e))
                .take(3)
                .collect();
            let only_model: Vec<_> = model
                .iter()
                .filter(|e| !stored.contains(e))
                .take(3)
                .collect();
            violation!(
                "node {node} stores a registry of {} ids, the model holds {}; only stored: {only_stored:?}; only in the model: {only_model:?}",
                stored.len(),
                model.len()
            );
        }
        Ok(())
    }

    /// Whether some submitter was told `id`'s outcome.
    pub fn is_acknowledged(&self, id: &BatchId) -> bool {
        self.acknowledged_ids.contains(id)
    }

    /// The model's offset of `topic` (for clients choosing preconditions).
    pub fn offset(&self, topic: &str) -> u64 {
        self.offsets.get(topic).copied().unwrap_or(0)
    }

    /// The model's log time (for clients that make ids).
    pub fn log_time_ms(&self) -> u64 {
        self.log_time_ms
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
