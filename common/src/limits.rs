//! Every size limit in Ordo, named, with how the limits relate checked at compile time.
//!
//! A limit is the largest value accepted; anything larger is refused with an error that names
//! the limit. Runtime configuration may lower a limit, never raise it.

/// Largest application payload in one log entry (one atomic batch, encoded): 64 MiB.
pub const ENTRY_PAYLOAD_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Largest frame on the wire. One frame carries at most one entry larger than the per-message
/// budget, plus framing overhead.
pub const FRAME_BYTES_MAX: u64 = ENTRY_PAYLOAD_BYTES_MAX + 1024 * 1024;

const _: () = assert!(FRAME_BYTES_MAX > ENTRY_PAYLOAD_BYTES_MAX);
const _: () = assert!(
    FRAME_BYTES_MAX <= u32::MAX as u64,
    "frame lengths are u32 on the wire"
);
