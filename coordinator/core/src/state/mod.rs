//! The replicated state machine for atomic batches: deterministic, no I/O, the same code on
//! every coordinator and in the simulator.
//!
//! Applying a committed batch, stamped by the leader that proposed it with its clock's time:
//! 1. The **log time** advances to the stamp (it never goes back). Every decision that depends on
//!    time reads the log time, never a clock, so every node decides the same.
//! 2. If the batch's id is in the idempotency registry, the answer is the recorded outcome and
//!    nothing changes — unless the content differs, which is an id **conflict**, refused.
//! 3. If the id is older than the registry can answer for (its UUID v7 time is at or below the
//!    **floor**: `log time − horizon`, or the newest id evicted to stay within the byte budget),
//!    or further in the future than the allowed clock skew, the batch is refused as **beyond the
//!    horizon**: it might have committed once already, and the registry could no longer tell.
//! 4. Otherwise its preconditions are evaluated against the state before it. All hold: the batch
//!    takes the next `seq` (dense, from 1) and each topic's offset advances by its messages. Any
//!    fails: the whole batch is rejected, with the reason. Either outcome is registered.
//!
//! So "exactly once" holds for a retried id for as long as the registry answers for it: at least
//! the horizon (24 hours by default) after the id's time, unless the registry's byte budget fills
//! first; past that, a retry is refused, never committed twice. Ids are ordered by their UUID v7
//! time, so the registry evicts oldest first, identically on every node.

pub mod coord;

use std::collections::BTreeMap;

use bytes::Bytes;
use ordo_common::batch::{Batch, BatchId, Outcome, Precondition, RejectReason};
use ordo_common::codec::{self, DecodeError};
use ordo_common::coord::MutexKind;
use ordo_common::limits::ENTRY_PAYLOAD_BYTES_MAX;
use ordo_common::{LogIndex, Membership};
use serde::{Deserialize, Serialize};

pub use coord::{CoordAnswer, CoordEvents, CoordOp, CoordRow, CoordState};
pub use ordo_common::coord::CoordRefusal;

/// How long the registry answers for an id, by default: 24 hours after the id's time.
pub const REGISTRY_HORIZON_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;
/// Most bytes the registry holds (in memory and on disk), by default.
pub const REGISTRY_BYTES_MAX_DEFAULT: u64 = 128 * 1024 * 1024;
/// How far in the future an id's time may be, by default, before it is refused (client clocks
/// ahead of the leader's by more than this are refused, so no id can pin the registry).
pub const FUTURE_SKEW_MS_DEFAULT: u64 = 60 * 1000;
/// Bytes counted per registered id beyond its outcome (id, content hash, map overhead).
pub const REGISTRY_ENTRY_OVERHEAD_BYTES: u64 = 64;

/// What bounds the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegistryLimits {
    pub horizon_ms: u64,
    pub bytes_max: u64,
    pub future_skew_ms: u64,
}

impl Default for RegistryLimits {
    fn default() -> Self {
        Self {
            horizon_ms: REGISTRY_HORIZON_MS_DEFAULT,
            bytes_max: REGISTRY_BYTES_MAX_DEFAULT,
            future_skew_ms: FUTURE_SKEW_MS_DEFAULT,
        }
    }
}

/// What a normal log entry carries: every normal entry's payload is one encoded command, so a
/// payload that does not decode is corruption or version skew, never something to skip. New
/// commands (locks, sessions) become new variants, at the end: the order is the disk format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// An atomic batch, applied by [`BatchState::apply`], with the proposing leader's clock
    /// (milliseconds since the Unix epoch) when it proposed it. The batch comes first and the
    /// stamp last, so the batch's own encoding is a slice of the command's.
    Batch { batch: Batch, stamp_ms: u64 },
    /// Opaque bytes that change no state (diagnostics, transport and simulator tests).
    Raw(Bytes),
    /// A change to sessions, locks or elections, applied by [`BatchState::apply_coord`], with
    /// the proposing leader's clock when it proposed it.
    Coord { op: CoordOp, stamp_ms: u64 },
}

/// Bytes of a command's encoding before the batch's (the variant tag).
const COMMAND_TAG_BYTES: usize = 4;
/// Bytes of a command's encoding after the batch's (the stamp).
const STAMP_BYTES: usize = 8;

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, ENTRY_PAYLOAD_BYTES_MAX)
    }

    /// The leader stamp of an encoded command, if it is a batch, without decoding it (storage
    /// reads it to age entries).
    pub fn stamp_of(encoded: &[u8]) -> Option<u64> {
        let tag = encoded.get(..COMMAND_TAG_BYTES)?;
        if tag != [0; COMMAND_TAG_BYTES] || encoded.len() < COMMAND_TAG_BYTES + STAMP_BYTES {
            return None;
        }
        let stamp = encoded.get(encoded.len() - STAMP_BYTES..)?;
        Some(u64::from_le_bytes(stamp.try_into().ok()?))
    }

    /// The encoding of the batch inside an encoded `Command::Batch`: what its content hash
    /// covers, the same whichever leader stamped it.
    pub fn batch_bytes(encoded: &[u8]) -> &[u8] {
        let end = encoded.len().saturating_sub(STAMP_BYTES);
        encoded.get(COMMAND_TAG_BYTES..end).unwrap_or_default()
    }
}

/// A 64-bit hash of a batch's content, to tell a retry (same content) from a conflicting reuse
/// of its id. Stable across builds: it reads the codec's bytes, which `golden.rs` pins.
pub fn content_hash(batch_bytes: &[u8]) -> u64 {
    let mut hash = 0x6F72_646F_5F62_6174 ^ batch_bytes.len() as u64;
    let mut words = batch_bytes.chunks_exact(8);
    for word in &mut words {
        hash = mix(hash ^ u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    mix(hash ^ u64::from_le_bytes(tail))
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The time a UUID v7 carries: its first 48 bits, milliseconds since the Unix epoch.
pub fn id_time_ms(id: &BatchId) -> u64 {
    let mut time = [0u8; 8];
    time[2..].copy_from_slice(&id.0[..6]);
    u64::from_be_bytes(time)
}

/// What the registry keeps for one id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub outcome: Outcome,
    /// [`content_hash`] of the batch that got the outcome.
    pub content: u64,
}

impl Registered {
    /// Bytes this record counts against the registry's budget.
    pub fn bytes(&self) -> u64 {
        codec::encode(&self.outcome).len() as u64 + REGISTRY_ENTRY_OVERHEAD_BYTES
    }
}

/// What applying one batch decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A new id: committed or rejected, and now registered.
    Decided(Outcome),
    /// The id was registered with this content: the original outcome; nothing changed.
    Duplicate(Outcome),
    /// The id was registered with other content: refused; nothing changed.
    Conflict,
    /// The registry can no longer answer for the id (or its time is too far ahead): refused,
    /// never committed; nothing changed.
    BeyondHorizon { floor_ms: u64 },
}

/// What applying one entry did, for the node to persist and to answer the submitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub id: BatchId,
    pub verdict: Verdict,
    /// Topics whose offsets changed, with their new offsets.
    pub offsets: Vec<(String, u64)>,
    /// The record registered for the id, when the verdict registered one.
    pub registered: Option<Registered>,
    /// Ids evicted to stay within the horizon and the byte budget.
    pub evicted: Vec<BatchId>,
}

/// What a status query learns of an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdStatus<'a> {
    Known(&'a Outcome),
    /// Never seen, and within what the registry answers for.
    Unknown,
    /// Not registered, and at or below the floor: whether it ever committed is no longer known.
    BeyondHorizon {
        floor_ms: u64,
    },
}

/// Everything the batch state is, as storage keeps it and a snapshot carries it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateTables {
    pub last_seq: u64,
    pub log_time_ms: u64,
    pub registry_floor_ms: u64,
    /// In topic order.
    pub offsets: Vec<(String, u64)>,
    /// In id order.
    pub registry: Vec<(BatchId, Registered)>,
    /// Sessions, locks and elections, as rows in key order (see [`CoordState::rows`]).
    pub coord: Vec<CoordRow>,
}

/// The batch state: sequence, topic offsets, idempotency registry, log time.
#[derive(Clone, Debug)]
pub struct BatchState {
    last_seq: u64,
    offsets: BTreeMap<String, u64>,
    registry: BTreeMap<BatchId, Registered>,
    registry_bytes: u64,
    /// Ids at or below this time were evicted (or are older than the horizon).
    registry_floor_ms: u64,
    log_time_ms: u64,
    limits: RegistryLimits,
    coord: CoordState,
}

impl BatchState {
    pub fn new(limits: RegistryLimits) -> Self {
        Self {
            last_seq: 0,
            offsets: BTreeMap::new(),
            registry: BTreeMap::new(),
            registry_bytes: 0,
            registry_floor_ms: 0,
            log_time_ms: 0,
            limits,
            coord: CoordState::default(),
        }
    }

    /// The state storage kept (or a snapshot carried); an error if its coordination rows do not
    /// decode.
    pub fn restore(limits: RegistryLimits, tables: StateTables) -> Result<Self, DecodeError> {
        let coord = CoordState::restore(&tables.coord)?;
        let registry: BTreeMap<BatchId, Registered> = tables.registry.into_iter().collect();
        Ok(Self {
            last_seq: tables.last_seq,
            offsets: tables.offsets.into_iter().collect(),
            registry_bytes: registry.values().map(Registered::bytes).sum(),
            registry,
            registry_floor_ms: tables.registry_floor_ms,
            log_time_ms: tables.log_time_ms,
            limits,
            coord,
        })
    }

    /// The whole state, in a canonical order (what a snapshot carries).
    pub fn tables(&self) -> StateTables {
        StateTables {
            last_seq: self.last_seq,
            log_time_ms: self.log_time_ms,
            registry_floor_ms: self.registry_floor_ms,
            offsets: self.offsets.iter().map(|(t, o)| (t.clone(), *o)).collect(),
            registry: self
                .registry
                .iter()
                .map(|(id, record)| (*id, record.clone()))
                .collect(),
            coord: self.coord.rows(),
        }
    }

    /// Sessions, locks and elections.
    pub fn coord(&self) -> &CoordState {
        &self.coord
    }

    /// Coordination rows changed since the last call (`None`: deleted), for storage.
    pub fn take_coord_dirty(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.coord.take_dirty()
    }

    /// What the latest applies changed for sessions' clients.
    pub fn take_coord_events(&mut self) -> CoordEvents {
        self.coord.take_events()
    }

    /// Applies a configuration entry: the cluster's membership from here on.
    pub fn apply_membership(&mut self, membership: Membership) {
        self.coord.set_membership(membership);
    }

    /// Applies a coordination op committed at `index`, stamped `stamp_ms`.
    pub fn apply_coord(&mut self, index: LogIndex, op: &CoordOp, stamp_ms: u64) -> CoordAnswer {
        self.log_time_ms = self.log_time_ms.max(stamp_ms);
        self.coord.apply(index, op, self.log_time_ms)
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

    /// The time of the newest stamp applied: the clock every decision reads.
    pub fn log_time_ms(&self) -> u64 {
        self.log_time_ms
    }

    /// The newest id time evicted for the byte budget or the horizon (what storage keeps; see
    /// [`Self::floor_ms`] for the floor decisions use).
    pub fn registry_floor_ms(&self) -> u64 {
        self.registry_floor_ms
    }

    /// Ids whose time is at or below this are beyond the horizon unless registered.
    pub fn floor_ms(&self) -> u64 {
        self.registry_floor_ms
            .max(self.log_time_ms.saturating_sub(self.limits.horizon_ms))
    }

    pub fn registry_len(&self) -> usize {
        self.registry.len()
    }

    pub fn registry_bytes(&self) -> u64 {
        self.registry_bytes
    }

    pub fn outcome(&self, id: &BatchId) -> Option<&Outcome> {
        self.registry.get(id).map(|record| &record.outcome)
    }

    /// What a status query for `id` answers.
    pub fn status(&self, id: &BatchId) -> IdStatus<'_> {
        match self.registry.get(id) {
            Some(record) => IdStatus::Known(&record.outcome),
            None if id_time_ms(id) <= self.floor_ms() => IdStatus::BeyondHorizon {
                floor_ms: self.floor_ms(),
            },
            None => IdStatus::Unknown,
        }
    }

    /// Whether a new submit of `id` would surely be refused as beyond the horizon (a leader's
    /// early answer; the apply decides).
    pub fn is_beyond_horizon(&self, id: &BatchId) -> bool {
        !self.registry.contains_key(id) && id_time_ms(id) <= self.floor_ms()
    }

    /// Applies the batch committed at `index`, stamped `stamp_ms`, whose encoding hashes to
    /// `content` ([`content_hash`]).
    pub fn apply(
        &mut self,
        index: LogIndex,
        batch: &Batch,
        stamp_ms: u64,
        content: u64,
    ) -> Applied {
        self.log_time_ms = self.log_time_ms.max(stamp_ms);
        let mut applied = Applied {
            id: batch.id,
            verdict: Verdict::Conflict,
            offsets: Vec::new(),
            registered: None,
            evicted: Vec::new(),
        };
        if let Some(record) = self.registry.get(&batch.id) {
            applied.verdict = if record.content == content {
                Verdict::Duplicate(record.outcome.clone())
            } else {
                Verdict::Conflict
            };
        } else {
            let time = id_time_ms(&batch.id);
            let floor_ms = self.floor_ms();
            let ahead = time > self.log_time_ms.saturating_add(self.limits.future_skew_ms);
            if time <= floor_ms || ahead {
                applied.verdict = Verdict::BeyondHorizon { floor_ms };
            } else {
                let outcome = match self.check(batch) {
                    Err(reason) => Outcome::Rejected { reason },
                    Ok(()) => {
                        self.last_seq += 1;
                        for (topic, count) in batch.counts_by_topic() {
                            let offset = self.offsets.entry(topic.to_string()).or_insert(0);
                            *offset += count;
                            applied.offsets.push((topic.to_string(), *offset));
                        }
                        Outcome::Committed {
                            seq: self.last_seq,
                            index,
                        }
                    }
                };
                let record = Registered {
                    outcome: outcome.clone(),
                    content,
                };
                self.registry_bytes += record.bytes();
                self.registry.insert(batch.id, record.clone());
                applied.registered = Some(record);
                applied.verdict = Verdict::Decided(outcome);
            }
        }
        applied.evicted = self.evict();
        applied
    }

    /// Evicts, oldest id first, what is older than the horizon or over the byte budget, and
    /// raises the floor past every evicted id.
    fn evict(&mut self) -> Vec<BatchId> {
        let time_floor = self.log_time_ms.saturating_sub(self.limits.horizon_ms);
        let mut evicted = Vec::new();
        while let Some((id, record)) = self.registry.first_key_value() {
            let time = id_time_ms(id);
            if time >= time_floor && self.registry_bytes <= self.limits.bytes_max {
                break;
            }
            self.registry_bytes -= record.bytes();
            self.registry_floor_ms = self.registry_floor_ms.max(time);
            let id = *id;
            self.registry.remove(&id);
            evicted.push(id);
        }
        evicted
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
                    if !matches!(self.outcome(other), Some(Outcome::Committed { .. })) {
                        return Err(RejectReason::BatchNotCommitted { batch: *other });
                    }
                }
                Precondition::LockHeld { name, token } => {
                    self.fence(MutexKind::Lock, name, *token)?;
                }
                Precondition::Leader { election, epoch } => {
                    self.fence(MutexKind::Election, election, *epoch)?;
                }
            }
        }
        Ok(())
    }

    /// Fencing: the batch commits only if `name` is held with exactly `token` now.
    fn fence(&self, kind: MutexKind, name: &str, token: u64) -> Result<(), RejectReason> {
        let current = self.coord.token(kind, name);
        if current == Some(token) {
            return Ok(());
        }
        Err(RejectReason::Fenced {
            kind,
            name: name.to_string(),
            token,
            current,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ordo_common::batch::Message;

    /// An id with UUID v7 time `time_ms` and a distinguishing byte.
    fn id(time_ms: u64, n: u8) -> BatchId {
        let mut bytes = [n; 16];
        bytes[..6].copy_from_slice(&time_ms.to_be_bytes()[2..]);
        BatchId(bytes)
    }

    fn batch(id: BatchId, topics: &[&str], preconditions: Vec<Precondition>) -> Batch {
        Batch {
            id,
            messages: topics
                .iter()
                .map(|topic| Message::new(*topic, vec![id.0[15]]))
                .collect(),
            preconditions,
        }
    }

    fn hash(batch: &Batch) -> u64 {
        content_hash(&codec::encode(batch))
    }

    fn apply(state: &mut BatchState, index: u64, batch: &Batch, stamp_ms: u64) -> Applied {
        state.apply(index, batch, stamp_ms, hash(batch))
    }

    fn committed(seq: u64, index: u64) -> Verdict {
        Verdict::Decided(Outcome::Committed { seq, index })
    }

    #[test]
    fn committed_batches_take_dense_seqs_and_advance_offsets() {
        let mut state = BatchState::new(RegistryLimits::default());
        let first = apply(
            &mut state,
            5,
            &batch(id(1000, 1), &["a", "a", "b"], vec![]),
            1000,
        );
        assert_eq!(first.verdict, committed(1, 5));
        assert_eq!(first.offsets, vec![("a".into(), 2), ("b".into(), 1)]);
        let second = apply(&mut state, 9, &batch(id(1000, 2), &["b"], vec![]), 1001);
        assert_eq!(second.verdict, committed(2, 9));
        assert_eq!(
            (state.offset("a"), state.offset("b"), state.offset("c")),
            (2, 2, 0)
        );
        assert_eq!(state.log_time_ms(), 1001);
    }

    #[test]
    fn a_retried_id_gets_the_original_outcome_and_other_content_is_a_conflict() {
        let mut state = BatchState::new(RegistryLimits::default());
        let original = batch(id(1000, 7), &["a"], vec![]);
        apply(&mut state, 3, &original, 1000);
        let again = apply(&mut state, 8, &original, 1200);
        assert_eq!(
            again.verdict,
            Verdict::Duplicate(Outcome::Committed { seq: 1, index: 3 })
        );
        let other = batch(id(1000, 7), &["a", "a"], vec![]);
        assert_eq!(
            apply(&mut state, 9, &other, 1300).verdict,
            Verdict::Conflict
        );
        assert_eq!((state.last_seq(), state.offset("a")), (1, 1));
    }

    #[test]
    fn a_failed_precondition_rejects_the_whole_batch() {
        let mut state = BatchState::new(RegistryLimits::default());
        apply(&mut state, 1, &batch(id(10, 1), &["a"], vec![]), 10);
        let racing = Precondition::TopicOffset {
            topic: "a".into(),
            offset: 0,
        };
        let rejected = apply(
            &mut state,
            2,
            &batch(id(10, 2), &["a", "b"], vec![racing]),
            10,
        );
        let reason = RejectReason::TopicOffset {
            topic: "a".into(),
            expected: 0,
            actual: 1,
        };
        assert_eq!(
            rejected.verdict,
            Verdict::Decided(Outcome::Rejected { reason })
        );
        assert_eq!(
            (state.last_seq(), state.offset("a"), state.offset("b")),
            (1, 1, 0)
        );
        let after = Precondition::BatchCommitted { batch: id(10, 2) };
        let blocked = apply(&mut state, 3, &batch(id(10, 3), &["c"], vec![after]), 10);
        assert!(matches!(
            blocked.verdict,
            Verdict::Decided(Outcome::Rejected {
                reason: RejectReason::BatchNotCommitted { .. }
            })
        ));
    }

    #[test]
    fn ids_older_than_the_horizon_are_refused_and_evicted_ids_are_never_committed_again() {
        let limits = RegistryLimits {
            horizon_ms: 1000,
            bytes_max: u64::MAX,
            future_skew_ms: 100,
        };
        let mut state = BatchState::new(limits);
        let early = batch(id(500, 1), &["a"], vec![]);
        assert_eq!(apply(&mut state, 1, &early, 600).verdict, committed(1, 1));
        // Time passes: the early id leaves the registry, and its retry is refused.
        let late = apply(&mut state, 2, &batch(id(2000, 2), &["a"], vec![]), 2000);
        assert_eq!(late.evicted, vec![early.id]);
        assert_eq!(
            state.status(&early.id),
            IdStatus::BeyondHorizon { floor_ms: 1000 }
        );
        let retry = apply(&mut state, 3, &early, 2001);
        assert_eq!(retry.verdict, Verdict::BeyondHorizon { floor_ms: 1001 });
        assert_eq!(state.last_seq(), 2, "the retry did not commit again");
        // Never seen but older than the horizon: refused too; too far ahead: refused.
        let stale = batch(id(900, 3), &["a"], vec![]);
        assert!(matches!(
            apply(&mut state, 4, &stale, 2001).verdict,
            Verdict::BeyondHorizon { .. }
        ));
        let ahead = batch(id(2200, 4), &["a"], vec![]);
        assert!(matches!(
            apply(&mut state, 5, &ahead, 2001).verdict,
            Verdict::BeyondHorizon { .. }
        ));
        assert_eq!(state.status(&id(1900, 9)), IdStatus::Unknown);
    }

    #[test]
    fn the_byte_budget_evicts_oldest_ids_first_and_raises_the_floor() {
        let one = Registered {
            outcome: Outcome::Committed { seq: 1, index: 1 },
            content: 0,
        }
        .bytes();
        let limits = RegistryLimits {
            horizon_ms: u64::MAX,
            bytes_max: 2 * one,
            future_skew_ms: u64::MAX,
        };
        let mut state = BatchState::new(limits);
        for n in 1..=3u8 {
            apply(
                &mut state,
                n as u64,
                &batch(id(100 * n as u64, n), &["a"], vec![]),
                1000,
            );
        }
        assert_eq!(state.registry_len(), 2);
        assert_eq!(state.floor_ms(), 100);
        assert!(state.is_beyond_horizon(&id(100, 1)));
        let restored = BatchState::restore(limits, state.tables()).expect("tables restore");
        assert_eq!(restored.tables(), state.tables());
        assert_eq!(restored.registry_bytes(), state.registry_bytes());
    }

    #[test]
    fn commands_round_trip_the_batch_bytes_are_a_slice_and_garbage_is_an_error() {
        let inner = batch(id(5, 9), &["t"], vec![]);
        let command = Command::Batch {
            batch: inner.clone(),
            stamp_ms: 77,
        };
        let encoded = command.encode();
        assert_eq!(Command::decode(&encoded).unwrap(), command);
        assert_eq!(
            Command::batch_bytes(&encoded),
            codec::encode(&inner).as_slice()
        );
        assert!(Command::decode(&[1, 2, 3]).is_err());
    }
}
