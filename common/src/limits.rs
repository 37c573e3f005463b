//! Every size limit in Ordo, named, with how the limits relate checked at compile time.
//!
//! A limit is the largest value accepted; anything larger is refused with an error that names
//! the limit. Runtime configuration may lower a limit, never raise it.

/// Largest application payload in one log entry (one atomic batch, encoded): 64 MiB of content
/// plus its encoding overhead.
pub const ENTRY_PAYLOAD_BYTES_MAX: u64 = 64 * 1024 * 1024 + 1024 * 1024;

/// Largest frame on the wire. One frame carries at most one entry larger than the per-message
/// budget, plus framing overhead.
pub const FRAME_BYTES_MAX: u64 = ENTRY_PAYLOAD_BYTES_MAX + 2 * 1024 * 1024;

const _: () = assert!(FRAME_BYTES_MAX > ENTRY_PAYLOAD_BYTES_MAX);
const _: () = assert!(
    FRAME_BYTES_MAX <= u32::MAX as u64,
    "frame lengths are u32 on the wire"
);

/// Most messages in one batch.
pub const BATCH_MESSAGES_MAX: u64 = 10_000;
/// Most bytes of topics, keys, headers and payloads in one batch: 64 MiB (etcd allows 1.5 MiB).
pub const BATCH_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Most distinct topics in one batch.
pub const BATCH_TOPICS_MAX: u64 = 1024;
/// Longest topic name, in bytes (in a batch, in a precondition and in the stored offsets).
pub const TOPIC_NAME_BYTES_MAX: u64 = 255;
/// Largest encoded outcome of one batch (a seq and an index, or a rejection reason that may name
/// a topic), as the idempotency registry stores it.
pub const OUTCOME_BYTES_MAX: u64 = 64 * 1024;
/// Longest message key, in bytes.
pub const MESSAGE_KEY_BYTES_MAX: u64 = 4096;
/// Most headers on one message.
pub const MESSAGE_HEADERS_MAX: u64 = 64;
/// Most preconditions on one batch.
pub const BATCH_PRECONDITIONS_MAX: u64 = 1024;
/// Bytes an encoded batch may add to its content (lengths, ids, preconditions).
pub const BATCH_ENCODING_OVERHEAD_BYTES_MAX: u64 = 1024 * 1024;

// An encoded batch must fit in one log entry, and an entry in one frame.
const _: () =
    assert!(BATCH_BYTES_MAX + BATCH_ENCODING_OVERHEAD_BYTES_MAX <= ENTRY_PAYLOAD_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX <= ENTRY_PAYLOAD_BYTES_MAX);
const _: () = assert!(
    BATCH_MESSAGES_MAX >= 10_000,
    "the product promises 10,000 messages per batch"
);

// The largest rejection reason names one topic; its outcome must fit the registry's record.
const _: () = assert!(TOPIC_NAME_BYTES_MAX + 256 <= OUTCOME_BYTES_MAX);
