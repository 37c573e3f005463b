//! The coordinator's durable storage: the storage contract from `ordo-node` (re-exported here
//! whole), with the two parts that touch a disk.
//!
//! - [`RedbLogStore`] keeps everything in one redb file and makes every [`WriteBatch`] durable
//!   with one write transaction and one fsync.
//! - [`GroupCommitWriter`] owns a store on a dedicated thread and turns every request pending
//!   when it is free into one transaction, which is the only way to get high throughput out of
//!   a disk: a durable commit costs about the same for one entry as for a thousand.
//!
//! The contract, the rules every store enforces, the record layout and the in-memory store live
//! in [`ordo_node::storage`], so that the simulator runs them too. Measured figures are in
//! `bench/README.md` (`cargo bench -p ordo-coordinator --bench storage`).

mod group_commit;
mod redb_store;
pub mod space;

pub use group_commit::{
    DurableReport, GROUP_BYTES_MAX, GROUP_REQUESTS_MAX, GroupCommitWriter, RequestId, Sink,
    TrySubmitError, WRITE_QUEUE_BYTES_MAX, WRITE_QUEUE_REQUESTS_MAX, WriterEvent,
};
pub use ordo_node::storage::*;
pub use redb_store::{
    CACHE_BYTES_DEFAULT, LOG_GROUP_BYTES_MAX, RedbLogReader, RedbLogStore, RedbOptions,
    SEQ_GROUP_ITEMS_MAX, SYNC_THREAD_NAME, VERIFY_TAIL_ENTRIES_DEFAULT, VerifyOnOpen,
    WRITEBACK_PERIOD, WRITEBACK_THREAD_NAME, layout,
};
