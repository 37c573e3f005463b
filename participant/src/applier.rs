//! Exactly-once apply. The service owns a redb database; for every committed batch the applier
//! opens one write transaction, lets the service's handler change its own tables, stores the
//! batch's seq as the cursor **in the same transaction**, and commits. A crash before the
//! commit loses both the changes and the cursor; after it, both are durable. On start it
//! resumes after the stored cursor, so every batch is applied once — never skipped, never twice.

use std::sync::Arc;

use ordo_common::batch::{BatchId, CommittedBatch};
use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};

use crate::client::{Client, QueryError};

/// The applier's own table in the service's database: cursor name → last applied seq.
pub const CURSOR_TABLE: TableDefinition<&str, u64> = TableDefinition::new("ordo_applier_cursor");

/// What a handler may fail with; the batch is then not applied and the applier stops.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Why the applier stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplierError {
    #[error("the service database failed: {0}")]
    Database(String),
    #[error("the handler failed on seq {seq}: {error}")]
    Handler { seq: u64, error: HandlerError },
    /// The cluster's retention deleted batches this applier has not applied yet: seqs
    /// `cursor + 1 .. first_seq` are gone, and applying from `first_seq` on would silently skip
    /// them. The service's state must be rebuilt from something that already includes them
    /// (a backup of this database, or another replica's) before it applies again; raising
    /// `[retention]` on the coordinators keeps this from recurring.
    #[error(
        "batches after this applier's cursor {cursor} were compacted away (the cluster's first \
         retained seq is {first_seq}): restore this service's database from a copy taken at \
         seq {} or later, or raise [retention] on the coordinators",
        first_seq - 1
    )]
    Compacted { cursor: u64, first_seq: u64 },
    #[error("subscription failed: {0}")]
    Subscription(QueryError),
    #[error("the subscription ended")]
    Ended,
}

fn database_error(error: impl std::fmt::Display) -> ApplierError {
    ApplierError::Database(error.to_string())
}

/// Applies committed batches to a service's redb database exactly once.
pub struct Applier {
    client: Client,
    database: Arc<Database>,
    name: String,
    topics: Vec<String>,
}

impl Applier {
    /// `name` identifies this applier's cursor (several appliers may share a database).
    pub fn new(client: Client, database: Arc<Database>, name: &str, topics: Vec<String>) -> Self {
        Self {
            client,
            database,
            name: name.to_string(),
            topics,
        }
    }

    /// The last seq applied (0 before any).
    pub fn cursor(&self) -> Result<u64, ApplierError> {
        let read = self.database.begin_read().map_err(database_error)?;
        let table = match read.open_table(CURSOR_TABLE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(error) => return Err(database_error(error)),
        };
        let cursor = table.get(self.name.as_str()).map_err(database_error)?;
        Ok(cursor.map_or(0, |value| value.value()))
    }

    /// Applies batches as they commit, forever (or until an error). See [`Self::run_until`].
    pub async fn run<H>(&self, handler: H) -> Result<(), ApplierError>
    where
        H: FnMut(&WriteTransaction, &CommittedBatch) -> Result<(), HandlerError>,
    {
        self.run_until(u64::MAX, handler).await
    }

    /// Applies batches until the cursor reaches `last_seq`. `handler` runs inside the
    /// transaction that also advances the cursor; it must not commit or abort it.
    ///
    /// With a topic filter the applier still reads every batch and filters here, so that its
    /// position moves past batches without its topics (a server-side filter would leave it no
    /// way to know a seq went by). Such batches advance the cursor lazily: it is written with the
    /// next applied batch, or when `last_seq` is reached; after a crash they are read and
    /// skipped again, which is harmless.
    pub async fn run_until<H>(&self, last_seq: u64, mut handler: H) -> Result<(), ApplierError>
    where
        H: FnMut(&WriteTransaction, &CommittedBatch) -> Result<(), HandlerError>,
    {
        let stored = self.cursor()?;
        let mut position = stored;
        if position >= last_seq {
            return Ok(());
        }
        let mut subscription = self.client.subscribe(position + 1, Vec::new());
        while position < last_seq {
            let mut batch = match subscription.next().await.ok_or(ApplierError::Ended)? {
                Ok(batch) => batch,
                Err(QueryError::Compacted { first_seq }) => {
                    return Err(ApplierError::Compacted {
                        cursor: position,
                        first_seq,
                    });
                }
                Err(error) => return Err(ApplierError::Subscription(error)),
            };
            if batch.seq <= position {
                continue;
            }
            position = batch.seq;
            if !self.topics.is_empty() {
                batch
                    .messages
                    .retain(|message| self.topics.contains(&message.topic));
                if batch.messages.is_empty() {
                    continue;
                }
            }
            blocking(|| self.apply_one(&batch, Some(&mut handler)))?;
        }
        if position > self.cursor()? {
            let skipped = CommittedBatch {
                seq: position,
                index: 0,
                id: BatchId([0; 16]),
                messages: Vec::new(),
            };
            blocking(|| self.apply_one::<H>(&skipped, None))?;
        }
        Ok(())
    }

    /// One transaction: the handler's changes (if any) and the cursor at `batch.seq`.
    fn apply_one<H>(
        &self,
        batch: &CommittedBatch,
        handler: Option<&mut H>,
    ) -> Result<(), ApplierError>
    where
        H: FnMut(&WriteTransaction, &CommittedBatch) -> Result<(), HandlerError>,
    {
        let transaction = self.database.begin_write().map_err(database_error)?;
        if let Some(handler) = handler {
            handler(&transaction, batch).map_err(|error| ApplierError::Handler {
                seq: batch.seq,
                error,
            })?;
        }
        {
            let mut cursor = transaction
                .open_table(CURSOR_TABLE)
                .map_err(database_error)?;
            cursor
                .insert(self.name.as_str(), batch.seq)
                .map_err(database_error)?;
        }
        transaction.commit().map_err(database_error)
    }
}

/// Runs a blocking redb transaction from async code. On a multi-thread runtime the worker hands
/// its other tasks to its peers first (`block_in_place`); a current-thread runtime (the
/// `#[tokio::test]` default) has no peers to hand them to, and `block_in_place` would panic
/// there, so the transaction runs inline: that runtime's tasks wait for the commit, and nothing
/// else does.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
