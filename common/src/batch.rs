//! Atomic batches: the user's unit of change. A batch's messages, to any topics, commit together
//! at one `seq` or not at all; its `BatchId` makes a retried submit commit at most once.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::LogIndex;
use crate::coord::{MUTEX_NAME_BYTES_MAX, MutexKind};
use crate::limits::{
    BATCH_BYTES_MAX, BATCH_MESSAGES_MAX, BATCH_PRECONDITIONS_MAX, BATCH_TOPICS_MAX,
    MESSAGE_HEADERS_MAX, MESSAGE_KEY_BYTES_MAX, TOPIC_NAME_BYTES_MAX,
};

/// A batch's idempotency key: a UUID v7 (RFC 9562), whose first 48 bits are its time in
/// milliseconds since the Unix epoch. Ids are ordered by that time, which is how the registry
/// knows how old an id is; callers choosing their own ids must make them UUID v7 too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BatchId(pub [u8; 16]);

impl BatchId {
    /// Whether the id is a UUID v7: version 7, RFC 9562 variant.
    pub fn is_uuid_v7(&self) -> bool {
        self.0[6] >> 4 == 7 && self.0[8] >> 6 == 0b10
    }

    /// A UUID v7 for time `time_ms` with the given 74 random bits (the rest of `random`'s
    /// bytes are overwritten by the version and variant).
    pub fn v7(time_ms: u64, random: [u8; 10]) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&time_ms.to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&random);
        bytes[6] = 0x70 | (bytes[6] & 0x0F);
        bytes[8] = 0x80 | (bytes[8] & 0x3F);
        Self(bytes)
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0],
            b[1],
            b[2],
            b[3],
            b[4],
            b[5],
            b[6],
            b[7],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl std::str::FromStr for BatchId {
    type Err = String;

    /// Parses the hyphenated (or plain) 32-hex-digit form.
    fn from_str(text: &str) -> Result<Self, String> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("{text:?} is not a UUID (32 hex digits)"));
        }
        let mut bytes = [0u8; 16];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * index..2 * index + 2], 16).expect("hex checked");
        }
        Ok(BatchId(bytes))
    }
}

/// One message of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub topic: String,
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Vec<(String, Bytes)>,
}

/// Bytes the encoding adds per message (lengths of topic, key, payload and headers), counted
/// against [`BATCH_BYTES_MAX`] so that every valid batch fits in one log entry and one frame.
pub const MESSAGE_ENCODING_OVERHEAD_BYTES: u64 = 48;
/// Bytes the encoding adds per header (its name's and value's lengths).
pub const HEADER_ENCODING_OVERHEAD_BYTES: u64 = 16;
/// Bytes the encoding adds per precondition, besides its topic name.
pub const PRECONDITION_ENCODING_OVERHEAD_BYTES: u64 = 40;
/// Bytes the encoding adds per batch (id, lengths, the command tag).
pub const BATCH_ENCODING_OVERHEAD_BYTES: u64 = 64;

impl Message {
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            key: None,
            payload: payload.into(),
            headers: Vec::new(),
        }
    }

    /// The bytes this message counts against [`BATCH_BYTES_MAX`]: its content plus an upper
    /// bound of what encoding it adds.
    fn bytes(&self) -> u64 {
        let headers: u64 = self
            .headers
            .iter()
            .map(|(name, value)| (name.len() + value.len()) as u64 + HEADER_ENCODING_OVERHEAD_BYTES)
            .sum();
        let key = self.key.as_ref().map_or(0, Bytes::len) as u64;
        self.topic.len() as u64
            + key
            + self.payload.len() as u64
            + headers
            + MESSAGE_ENCODING_OVERHEAD_BYTES
    }
}

/// A condition that must hold when the batch is applied, or the whole batch is rejected.
/// New kinds (lock fencing tokens, session epochs) are added as new variants at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Precondition {
    /// Optimistic concurrency: `topic` holds exactly `offset` messages.
    TopicOffset { topic: String, offset: u64 },
    /// Another batch has committed.
    BatchCommitted { batch: BatchId },
    /// Fencing: lock `name` is held with exactly this token when the batch applies.
    LockHeld { name: String, token: u64 },
    /// Fencing: election `election` is led at exactly this epoch when the batch applies.
    Leader { election: String, epoch: u64 },
}

/// An atomic batch as submitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub id: BatchId,
    pub messages: Vec<Message>,
    pub preconditions: Vec<Precondition>,
}

/// Why a batch was refused before it reached the log. Each names the limit it broke.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum BatchError {
    #[error("a batch needs at least one message")]
    Empty,
    #[error("{count} messages exceed BATCH_MESSAGES_MAX ({limit})")]
    TooManyMessages { count: u64, limit: u64 },
    #[error("{bytes} bytes (content and encoding) exceed BATCH_BYTES_MAX ({limit})")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("{count} topics exceed BATCH_TOPICS_MAX ({limit})")]
    TooManyTopics { count: u64, limit: u64 },
    #[error("topic name of {bytes} bytes exceeds TOPIC_NAME_BYTES_MAX ({limit})")]
    TopicNameTooLong { bytes: u64, limit: u64 },
    #[error("empty topic name")]
    EmptyTopicName,
    #[error("a message key of {bytes} bytes exceeds MESSAGE_KEY_BYTES_MAX ({limit})")]
    KeyTooLong { bytes: u64, limit: u64 },
    #[error("{count} headers exceed MESSAGE_HEADERS_MAX ({limit})")]
    TooManyHeaders { count: u64, limit: u64 },
    #[error("{count} preconditions exceed BATCH_PRECONDITIONS_MAX ({limit})")]
    TooManyPreconditions { count: u64, limit: u64 },
    /// The registry orders ids by the time a UUID v7 carries; other ids cannot be aged.
    #[error("batch id {id} is not a UUID v7; generate ids with a UUID v7 generator")]
    NotUuidV7 { id: BatchId },
    #[error(
        "a fencing precondition names a lock or election of {bytes} bytes; names are 1 to MUTEX_NAME_BYTES_MAX ({limit}) bytes"
    )]
    BadMutexName { bytes: u64, limit: u64 },
}

impl Batch {
    /// Checks every limit. The SDK checks before sending; the coordinator checks again on
    /// receipt, and only that check is authoritative.
    pub fn validate(&self) -> Result<(), BatchError> {
        if !self.id.is_uuid_v7() {
            return Err(BatchError::NotUuidV7 { id: self.id });
        }
        if self.messages.is_empty() {
            return Err(BatchError::Empty);
        }
        let count = self.messages.len() as u64;
        if count > BATCH_MESSAGES_MAX {
            return Err(BatchError::TooManyMessages {
                count,
                limit: BATCH_MESSAGES_MAX,
            });
        }
        if bytes_counted(self) > BATCH_BYTES_MAX {
            let bytes = bytes_counted(self);
            return Err(BatchError::TooLarge {
                bytes,
                limit: BATCH_BYTES_MAX,
            });
        }
        let mut topics = std::collections::BTreeSet::new();
        for message in &self.messages {
            check_topic(&message.topic)?;
            topics.insert(message.topic.as_str());
            if let Some(key) = &message.key
                && key.len() as u64 > MESSAGE_KEY_BYTES_MAX
            {
                let bytes = key.len() as u64;
                return Err(BatchError::KeyTooLong {
                    bytes,
                    limit: MESSAGE_KEY_BYTES_MAX,
                });
            }
            let headers = message.headers.len() as u64;
            if headers > MESSAGE_HEADERS_MAX {
                return Err(BatchError::TooManyHeaders {
                    count: headers,
                    limit: MESSAGE_HEADERS_MAX,
                });
            }
        }
        if topics.len() as u64 > BATCH_TOPICS_MAX {
            let count = topics.len() as u64;
            return Err(BatchError::TooManyTopics {
                count,
                limit: BATCH_TOPICS_MAX,
            });
        }
        let preconditions = self.preconditions.len() as u64;
        if preconditions > BATCH_PRECONDITIONS_MAX {
            let limit = BATCH_PRECONDITIONS_MAX;
            return Err(BatchError::TooManyPreconditions {
                count: preconditions,
                limit,
            });
        }
        for precondition in &self.preconditions {
            match precondition {
                Precondition::TopicOffset { topic, .. } => check_topic(topic)?,
                Precondition::LockHeld { name, .. }
                | Precondition::Leader { election: name, .. } => {
                    let bytes = name.len() as u64;
                    if bytes == 0 || bytes > MUTEX_NAME_BYTES_MAX {
                        let limit = MUTEX_NAME_BYTES_MAX;
                        return Err(BatchError::BadMutexName { bytes, limit });
                    }
                }
                Precondition::BatchCommitted { .. } => {}
            }
        }
        Ok(())
    }

    /// Messages per topic, in topic order.
    pub fn counts_by_topic(&self) -> std::collections::BTreeMap<&str, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for message in &self.messages {
            *counts.entry(message.topic.as_str()).or_insert(0) += 1;
        }
        counts
    }
}

/// Content plus an upper bound of the encoding overhead: what [`BATCH_BYTES_MAX`] limits. A batch
/// within it always encodes to at most this many bytes (checked by a unit test).
pub fn bytes_counted(batch: &Batch) -> u64 {
    let messages: u64 = batch.messages.iter().map(Message::bytes).sum();
    let preconditions: u64 = batch
        .preconditions
        .iter()
        .map(|precondition| match precondition {
            Precondition::TopicOffset { topic, .. } => topic.len() as u64,
            Precondition::BatchCommitted { .. } => 16,
            Precondition::LockHeld { name, .. } | Precondition::Leader { election: name, .. } => {
                name.len() as u64 + 8
            }
        } + PRECONDITION_ENCODING_OVERHEAD_BYTES)
        .sum();
    messages + preconditions + BATCH_ENCODING_OVERHEAD_BYTES
}

fn check_topic(topic: &str) -> Result<(), BatchError> {
    if topic.is_empty() {
        return Err(BatchError::EmptyTopicName);
    }
    if topic.len() as u64 > TOPIC_NAME_BYTES_MAX {
        let bytes = topic.len() as u64;
        return Err(BatchError::TopicNameTooLong {
            bytes,
            limit: TOPIC_NAME_BYTES_MAX,
        });
    }
    Ok(())
}

/// The definite outcome of a batch, recorded durably in the idempotency registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Committed { seq: u64, index: LogIndex },
    Rejected { reason: RejectReason },
}

/// Why a batch's preconditions failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RejectReason {
    #[error("topic {topic:?} is at offset {actual}, not {expected}")]
    TopicOffset {
        topic: String,
        expected: u64,
        actual: u64,
    },
    #[error("batch {batch} has not committed")]
    BatchNotCommitted { batch: BatchId },
    /// A fencing precondition failed: the lock (election) moved on, or was never held so.
    #[error("fenced: {} {name:?} is {}, not {token}", kind.noun(), match current { Some(t) => format!("held with token {t}"), None => "not held".to_string() })]
    Fenced {
        kind: MutexKind,
        name: String,
        token: u64,
        current: Option<u64>,
    },
}

impl RejectReason {
    /// The stable name of the reason (metrics labels, JSON).
    pub fn code(&self) -> &'static str {
        match self {
            Self::TopicOffset { .. } => "topic_offset",
            Self::BatchNotCommitted { .. } => "batch_not_committed",
            Self::Fenced { .. } => "fenced",
        }
    }
}

/// A committed batch as subscribers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedBatch {
    pub seq: u64,
    pub index: LogIndex,
    pub id: BatchId,
    pub messages: Vec<Message>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    fn worst_case(messages: usize, headers: usize, payload: usize, preconditions: usize) -> Batch {
        let message = Message {
            topic: "t".repeat(TOPIC_NAME_BYTES_MAX as usize),
            key: Some(Bytes::from(vec![1; 3])),
            payload: Bytes::from(vec![2; payload]),
            headers: (0..headers)
                .map(|_| (String::new(), Bytes::new()))
                .collect(),
        };
        let precondition = Precondition::TopicOffset {
            topic: "p".repeat(200),
            offset: 9,
        };
        Batch {
            id: BatchId::v7(1, [7; 10]),
            messages: vec![message; messages],
            preconditions: vec![precondition; preconditions],
        }
    }

    #[test]
    fn the_counted_bytes_bound_the_encoding() {
        for (messages, headers, payload, preconditions) in [
            (1, 0, 0, 0),
            (10, 64, 5, 3),
            (1000, 64, 0, 1024),
            (3, 0, 100_000, 0),
            (500, 1, 1, 1),
        ] {
            let batch = worst_case(messages, headers, payload, preconditions);
            let encoded = codec::encode(&crate::batch::Batch::clone(&batch)).len() as u64 + 8;
            assert!(
                encoded <= bytes_counted(&batch),
                "{encoded} > {}",
                bytes_counted(&batch)
            );
        }
    }

    #[test]
    fn every_limit_at_once_is_refused_by_size_not_by_the_frame() {
        let batch = worst_case(
            BATCH_MESSAGES_MAX as usize,
            MESSAGE_HEADERS_MAX as usize,
            6000,
            0,
        );
        assert!(matches!(
            batch.validate(),
            Err(BatchError::TooLarge {
                limit: BATCH_BYTES_MAX,
                ..
            })
        ));
    }
}
