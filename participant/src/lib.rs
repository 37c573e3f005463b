//! # ordo-participant: the Ordo SDK
//!
//! Services use this crate to **submit atomic batches** — many messages to many topics that
//! commit together or not at all — and to **apply committed batches exactly once**, in the one
//! order every participant agrees on.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ordo_participant::{Applier, Batch, Client, ClientConfig, Message, Precondition, new_batch_id};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let endpoints = vec!["127.0.0.1:7001".parse()?, "127.0.0.1:7002".parse()?];
//! let client = Client::connect(ClientConfig::new(endpoints, "ordo-dev/tls")).await?;
//!
//! // Two topics, one atomic batch; commit only if `orders` still holds 0 messages.
//! let batch = Batch {
//!     id: new_batch_id(),
//!     messages: vec![Message::new("orders", "order 1"), Message::new("audit", "order 1 placed")],
//!     preconditions: vec![Precondition::TopicOffset { topic: "orders".into(), offset: 0 }],
//! };
//! let committed = client.submit(batch).await?;
//! println!("committed at seq {}", committed.seq);
//! assert!(client.status(committed.id).await?.is_decided());
//!
//! // Apply every committed batch exactly once into the service's own redb database.
//! let database = Arc::new(redb::Database::create("service.redb")?);
//! let applier = Applier::new(client.clone(), database, "orders-service", vec![]);
//! applier.run_until(committed.seq, |_transaction, batch| {
//!     println!("seq {}: {} messages", batch.seq, batch.messages.len());
//!     Ok(())
//! }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! - [`Client::submit`] retries across leader changes with the same batch id, so a batch
//!   commits at most once; errors say whether a retry is safe ([`SubmitError`]).
//! - [`Client::status`] reads a batch's outcome linearizably, and says when an id is older than
//!   the registry answers for.
//!
//! ## What "exactly once" means
//!
//! A batch id is answered for by the cluster's idempotency registry for its **horizon**: at
//! least `registry.horizon` (24 hours by default) after the id's UUID v7 time, unless the
//! registry's byte budget (`registry.bytes_max`) fills first. Within it, resubmitting the id
//! returns the original outcome and never commits a second copy (resubmitting it with other
//! content is refused: [`SubmitError::IdConflict`]). Past it, a resubmit is refused
//! ([`SubmitError::BeyondHorizon`]) — never committed twice — and [`Client::status`] answers
//! [`BatchStatus::BeyondHorizon`]. Ids must be UUID v7 ([`new_batch_id`]).
//! - [`Client::subscribe`] streams committed batches in seq order, gap- and duplicate-free
//!   across reconnects.
//! - [`Applier`] commits the service's changes and its cursor in one redb transaction.
//! - [`Session`], [`LockGuard`] and [`Leadership`]: sessions, locks with fencing tokens enforced
//!   at commit, and leader election (see [`coord`]).
//! - [`Client::member_list`] and [`Client::change_membership`]: coordinators added, promoted and
//!   removed one at a time (see [`members`]).

pub mod applier;
pub mod client;
pub mod connection;
pub mod coord;
pub mod members;

pub use applier::{Applier, ApplierError, HandlerError};
pub use client::{
    BatchStatus, Client, ClientConfig, Committed, DEV_ENDPOINTS, DEV_TLS_DIR, QueryError,
    SubmitError, Subscription, new_batch_id, parse_endpoints,
};
pub use connection::{ClientTls, ConnectError, NodeConnection};
pub use coord::{CoordError, FenceCheck, Leadership, LockGuard, Observer, Session};
pub use members::MemberError;
pub use ordo_common::batch::{
    Batch, BatchError, BatchId, CommittedBatch, Message, Outcome, Precondition, RejectReason,
};
pub use ordo_common::client::{MemberInfo, MemberList};
pub use ordo_common::coord::{LeaderChange, MutexInfo, MutexKind, SessionId, SessionInfo};
pub use ordo_common::membership::{MembershipChange, MembershipError};
