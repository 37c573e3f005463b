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

pub use ordo_common::errors::{CODES, CodeDoc, ErrorCode};

impl ErrorCode for SubmitError {
    fn code(&self) -> &'static str {
        match self {
            Self::Rejected { reason } => reason.code(),
            Self::TooLarge { .. } => "too_large",
            Self::Invalid(error) => error.code(),
            Self::Unavailable { .. } => "unavailable",
            Self::Timeout { .. } => "outcome_unknown",
            Self::IdConflict { .. } => "id_conflict",
            Self::BeyondHorizon { .. } => "beyond_horizon",
            Self::Refused { code, .. } => code.as_str(),
        }
    }
}

impl ErrorCode for QueryError {
    fn code(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::Compacted { .. } => "compacted",
            Self::Refused { code, .. } => code.as_str(),
        }
    }
}

impl ErrorCode for ConnectError {
    fn code(&self) -> &'static str {
        match self {
            Self::Tls(_) => "tls",
            Self::Socket(_) => "socket",
            Self::Connect { .. } => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Connection { .. } => "connection_lost",
            Self::LeaderMoved { .. } => "leader_moved",
            Self::Frame { .. } => "bad_frame",
        }
    }
}

impl ErrorCode for CoordError {
    fn code(&self) -> &'static str {
        match self {
            Self::SessionLost(_) => "session_lost",
            Self::Refused(refusal) => refusal.code(),
            Self::Query(error) => error.code(),
            Self::Unexpected(_) => "unexpected_answer",
        }
    }
}

impl ErrorCode for MemberError {
    fn code(&self) -> &'static str {
        match self {
            Self::Refused(error) => error.code(),
            Self::Query(error) => error.code(),
            Self::Unexpected(_) => "unexpected_answer",
        }
    }
}

impl ErrorCode for ApplierError {
    fn code(&self) -> &'static str {
        match self {
            Self::Database(_) => "applier_database",
            Self::Handler { .. } => "handler_failed",
            Self::Compacted { .. } => "compacted",
            Self::Subscription(error) => error.code(),
            Self::Ended => "subscription_ended",
        }
    }
}

/// The stable code of any error the SDK returns (see [`ErrorCode`]); `None` for an error of
/// another library.
pub fn error_code(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    if let Some(error) = error.downcast_ref::<SubmitError>() {
        return Some(error.code());
    }
    if let Some(error) = error.downcast_ref::<QueryError>() {
        return Some(error.code());
    }
    if let Some(error) = error.downcast_ref::<ConnectError>() {
        return Some(error.code());
    }
    if let Some(error) = error.downcast_ref::<CoordError>() {
        return Some(error.code());
    }
    if let Some(error) = error.downcast_ref::<MemberError>() {
        return Some(error.code());
    }
    if let Some(error) = error.downcast_ref::<ApplierError>() {
        return Some(error.code());
    }
    if let Some(error) = error.downcast_ref::<BatchError>() {
        return Some(error.code());
    }
    None
}

#[cfg(test)]
mod error_codes {
    use super::*;
    use ordo_common::client::RefusedCode;
    use ordo_common::coord::CoordRefusal;

    #[test]
    fn every_sdk_error_has_a_documented_code() {
        let address: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let id = BatchId::v7(1, [0; 10]);
        let query = || QueryError::Unavailable { detail: "x".into() };
        let errors: Vec<Box<dyn std::error::Error + 'static>> = vec![
            Box::new(SubmitError::Rejected {
                reason: RejectReason::BatchNotCommitted { batch: id },
            }),
            Box::new(SubmitError::TooLarge {
                limit: 1,
                error: BatchError::Empty,
            }),
            Box::new(SubmitError::Invalid(BatchError::EmptyTopicName)),
            Box::new(SubmitError::Unavailable { detail: "x".into() }),
            Box::new(SubmitError::Timeout {
                id,
                detail: "x".into(),
            }),
            Box::new(SubmitError::IdConflict { id }),
            Box::new(SubmitError::BeyondHorizon {
                id,
                reason: "x".into(),
            }),
            Box::new(SubmitError::Refused {
                code: RefusedCode::Forbidden,
                reason: "x".into(),
            }),
            Box::new(query()),
            Box::new(QueryError::Compacted { first_seq: 2 }),
            Box::new(ConnectError::Socket(std::io::Error::other("x"))),
            Box::new(ConnectError::Connect {
                address,
                detail: "x".into(),
            }),
            Box::new(ConnectError::Timeout {
                address,
                timeout: std::time::Duration::from_secs(1),
            }),
            Box::new(ConnectError::Connection {
                address,
                detail: "x".into(),
            }),
            Box::new(ConnectError::LeaderMoved {
                address,
                detail: "x".into(),
            }),
            Box::new(CoordError::SessionLost(SessionId([1; 16]))),
            Box::new(CoordError::Refused(CoordRefusal::SessionGone(SessionId(
                [1; 16],
            )))),
            Box::new(CoordError::Query(query())),
            Box::new(CoordError::Unexpected("x".into())),
            Box::new(MemberError::Refused(MembershipError::InvalidId)),
            Box::new(MemberError::Query(query())),
            Box::new(MemberError::Unexpected("x".into())),
            Box::new(ApplierError::Database("x".into())),
            Box::new(ApplierError::Handler {
                seq: 1,
                error: "x".into(),
            }),
            Box::new(ApplierError::Compacted {
                cursor: 1,
                first_seq: 2,
            }),
            Box::new(ApplierError::Subscription(query())),
            Box::new(ApplierError::Ended),
        ];
        for error in &errors {
            let code = error_code(error.as_ref()).expect("an SDK error has a code");
            assert!(
                ordo_common::errors::lookup(code).is_some(),
                "{error} has code {code}, which ERRORS.md does not list"
            );
        }
    }
}
