//! Golden bytes: the encoding of every type that crosses the wire or lands on disk, pinned.
//!
//! The order of an enum's variants *is* Ordo's disk and wire format (the codec writes the
//! variant's position), so swapping two variants, adding one in the middle or changing a field
//! silently breaks every stored log and every mixed-version cluster. These tests encode one
//! sample of every variant of every such type and compare the bytes with
//! `tests/testdata/*.golden`. Any difference fails, naming the value and both encodings.
//!
//! When the change is meant: move the version constant that governs the file
//! (`ordo_net::wire::WIRE_VERSION` for `wire.golden`, `STORAGE_FORMAT_VERSION` for
//! `storage.golden`), then regenerate with
//! `ORDO_GOLDEN_UPDATE=1 cargo test -p ordo-coordinator --test golden`. Regenerating refuses to
//! rewrite changed bytes under an unchanged version.
//!
//! Every sample list is built around an exhaustive `match`: a new variant does not compile
//! until it has a sample here.

use std::collections::BTreeSet;
use std::path::PathBuf;

use bytes::Bytes;
use ordo_common::batch::{
    Batch, BatchError, BatchId, CommittedBatch, Message, Outcome, Precondition, RejectReason,
};
use ordo_common::client::{
    BusyCode, ClientRequest, ClientResponse, MemberInfo, MemberList, NodeRole, NodeStatus,
    RefusedCode,
};
use ordo_common::coord::{CoordRefusal, LeaderChange, MutexInfo, MutexKind, SessionId};
use ordo_common::membership::{MembershipChange, MembershipError};
use ordo_common::{Entry, EntryPayload, HardState, LogId, Membership, codec};
use ordo_coordinator::storage::record::{encode_bytes, encode_entry, encode_value};
use ordo_coordinator::storage::{
    STORAGE_FORMAT_VERSION, SnapshotState, StateUpdate, WriteBatch, layout,
};
use ordo_coordinator::transport::PeerFrame;
use ordo_core::state::{Command, CoordOp, CoordState, Registered};
use ordo_core::{AppendResponse, Body, ConflictHint, Message as RaftMessage, RejectHint};
use ordo_net::wire::{WIRE_VERSION, encode_frame};
use ordo_node::snapshot::encode_snapshot;

const UPDATE: &str = "ORDO_GOLDEN_UPDATE";

// ----- the tests -----

#[test]
fn wire_encodings_are_pinned_by_wire_version() {
    let mut samples = Vec::new();
    labelled(&mut samples, "ClientRequest", client_requests());
    labelled(&mut samples, "ClientResponse", client_responses());
    labelled(&mut samples, "PeerFrame", peer_frames());
    let framed = encode_frame(&ClientRequest::Status);
    samples.push(("frame(ClientRequest::Status)".into(), framed));
    check(
        "wire.golden",
        "WIRE_VERSION",
        u64::from(WIRE_VERSION),
        samples,
    );
}

/// Every refusal a node can answer with carries a code the error table documents.
#[test]
fn every_refusal_on_the_wire_has_a_documented_code() {
    let mut coded = 0;
    for response in client_responses() {
        if let Some(code) = response.error_code() {
            assert!(
                ordo_common::errors::lookup(code).is_some(),
                "{response:?} answers code {code}, which ERRORS.md does not list"
            );
            coded += 1;
        }
    }
    for error in batch_errors() {
        let code = ordo_common::errors::ErrorCode::code(&error);
        assert!(
            ordo_common::errors::lookup(code).is_some(),
            "{error:?}: {code}"
        );
    }
    for error in membership_errors() {
        let code = ordo_common::errors::ErrorCode::code(&error);
        assert!(
            ordo_common::errors::lookup(code).is_some(),
            "{error:?}: {code}"
        );
    }
    for reason in reject_reasons() {
        assert!(
            ordo_common::errors::lookup(reason.code()).is_some(),
            "{reason:?}"
        );
    }
    assert!(coded > 20, "the samples cover the refusals ({coded} coded)");
}

/// ERRORS.md is what `ordo_common::errors::markdown_table` prints (here rather than in
/// `ordo-common`, which must not touch files).
#[test]
fn errors_md_is_generated_from_the_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ERRORS.md");
    let generated = ordo_common::errors::markdown_table();
    if std::env::var_os("ORDO_ERRORS_UPDATE").is_some() {
        std::fs::write(&path, &generated).expect("write ERRORS.md");
    }
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == generated,
        "ERRORS.md is out of step with common/src/errors.rs; regenerate it with \
         ORDO_ERRORS_UPDATE=1 cargo test -p ordo-coordinator --test golden"
    );
}

#[test]
fn storage_encodings_are_pinned_by_storage_format_version() {
    let mut samples = Vec::new();
    let tables = [
        layout::META_TABLE,
        layout::LOG_TABLE,
        layout::RAFT_TABLE,
        layout::BATCHES_TABLE,
        layout::REGISTRY_TABLE,
        layout::OFFSETS_TABLE,
        layout::COORD_TABLE,
    ];
    samples.push(("table names".into(), tables.join(",").into_bytes()));
    let keys = [
        layout::FORMAT_KEY,
        layout::HARD_STATE_KEY,
        layout::COMMITTED_KEY,
        layout::APPLIED_KEY,
        layout::LAST_SEQ_KEY,
        layout::PURGED_KEY,
        layout::LOG_TIME_KEY,
        layout::REGISTRY_FLOOR_KEY,
        layout::CLUSTER_ID_KEY,
        layout::INCARNATION_KEY,
        layout::WAL_STORE_KEY,
        layout::WAL_GENERATION_KEY,
        layout::WAL_RECORDS_KEY,
    ];
    samples.push(("raft keys".into(), keys.join(",").into_bytes()));
    for (number, entry) in entries().iter().enumerate() {
        samples.push((format!("entry record #{number}"), encode_entry(entry)));
    }
    for (first, value) in layout::log_group_records(&entries()) {
        samples.push((format!("log group at {first}"), value));
    }
    let (first_seq, value) = layout::seq_group_record(&[(11, 40), (12, 41), (13, 45)]);
    samples.push((format!("seq group at {first_seq}"), value));
    samples.push((
        "write-ahead header".into(),
        layout::wal_header(0x0123_4567_89ab_cdef, 3),
    ));
    let mut update = StateUpdate::applied(LogId::new(3, 9));
    update.seqs = vec![(5, 9)];
    update.registry = vec![([4; 16], vec![1, 2, 3])];
    update.registry_evicted = vec![[2; 16]];
    update.offsets = vec![("orders".into(), 12)];
    update.log_time_ms = 1_700_000_000_456;
    update.registry_floor_ms = 1_699_999_000_000;
    update.coord = vec![
        (b"lmain".to_vec(), Some(vec![9])),
        (b"sgone".to_vec(), None),
    ];
    let wal_batch = WriteBatch {
        hard_state: Some(HardState {
            term: 3,
            vote: Some(2),
        }),
        entries: entries()[..2].to_vec(),
        committed: Some(9),
        state: Some(update),
        install: None,
    };
    samples.push((
        "write-ahead record".into(),
        layout::wal_record(3, &wal_batch),
    ));
    let hard_state = HardState {
        term: 7,
        vote: Some(3),
    };
    let raft_records = [
        (
            layout::LOG_TIME_KEY,
            encode_value(layout::LOG_TIME_KEY.as_bytes(), &1_700_000_000_456u64),
        ),
        (
            layout::REGISTRY_FLOOR_KEY,
            encode_value(layout::REGISTRY_FLOOR_KEY.as_bytes(), &1_699_999_000_000u64),
        ),
        (
            layout::HARD_STATE_KEY,
            encode_value(layout::HARD_STATE_KEY.as_bytes(), &hard_state),
        ),
        (
            layout::COMMITTED_KEY,
            encode_value(layout::COMMITTED_KEY.as_bytes(), &41u64),
        ),
        (
            layout::APPLIED_KEY,
            encode_value(layout::APPLIED_KEY.as_bytes(), &LogId::new(6, 40)),
        ),
        (
            layout::LAST_SEQ_KEY,
            encode_value(layout::LAST_SEQ_KEY.as_bytes(), &19u64),
        ),
        (
            layout::PURGED_KEY,
            encode_value(layout::PURGED_KEY.as_bytes(), &LogId::new(2, 9)),
        ),
        (
            layout::CLUSTER_ID_KEY,
            encode_value(
                layout::CLUSTER_ID_KEY.as_bytes(),
                &ordo_common::ClusterId::initial([1, 2, 3]),
            ),
        ),
    ];
    for (key, record) in raft_records {
        samples.push((format!("raft record {key}"), record));
    }
    samples.push((
        "seq record 19 -> 40".into(),
        encode_value(&19u64.to_be_bytes(), &40u64),
    ));
    for (number, outcome) in outcomes().into_iter().enumerate() {
        let id = [0xAB; 16];
        let record = Registered {
            outcome,
            content: 0x0123_4567_89AB_CDEF,
        };
        samples.push((
            format!("registry record #{number}"),
            encode_bytes(&id, &codec::encode(&record)),
        ));
    }
    samples.push((
        "offset record orders -> 12".into(),
        encode_value(b"orders", &12u64),
    ));
    for (number, (key, row)) in coord_rows().into_iter().enumerate() {
        samples.push((
            format!("coordination row #{number}"),
            encode_bytes(&key, &row),
        ));
    }
    samples.push((
        "snapshot file".into(),
        encode_snapshot(&SnapshotState {
            applied: LogId::new(6, 40),
            last_seq: 19,
            log_time_ms: 1_700_000_000_456,
            registry_floor_ms: 1_699_999_000_000,
            offsets: vec![("orders".into(), 12)],
            registry: vec![([0xAB; 16], vec![1, 2, 3])],
            coord: coord_rows(),
        }),
    ));
    check(
        "storage.golden",
        "STORAGE_FORMAT_VERSION",
        STORAGE_FORMAT_VERSION,
        samples,
    );
}

/// Adds `values`' encodings to `samples`, labelled by type and position (labels stay put when
/// a variant is renamed, which changes no byte).
fn labelled<T: serde::Serialize>(samples: &mut Vec<(String, Vec<u8>)>, kind: &str, values: Vec<T>) {
    for (number, value) in values.iter().enumerate() {
        samples.push((format!("{kind} #{number}"), codec::encode(value)));
    }
}

// ----- samples, one per variant -----

fn id(byte: u8) -> BatchId {
    BatchId::v7(1_700_000_000_000 + u64::from(byte), [byte; 10])
}

fn batch() -> Batch {
    Batch {
        id: id(1),
        messages: vec![
            Message {
                topic: "orders".into(),
                key: Some(Bytes::from_static(b"k")),
                payload: Bytes::from_static(b"pay"),
                headers: vec![("h".into(), Bytes::from_static(b"v"))],
            },
            Message::new("audit", "x"),
        ],
        preconditions: preconditions(),
    }
}

fn preconditions() -> Vec<Precondition> {
    let samples = vec![
        Precondition::TopicOffset {
            topic: "orders".into(),
            offset: 41,
        },
        Precondition::BatchCommitted { batch: id(2) },
        Precondition::LockHeld {
            name: "jobs".into(),
            token: 77,
        },
        Precondition::Leader {
            election: "scheduler".into(),
            epoch: 78,
        },
    ];
    covers(&samples, 4, |sample| match sample {
        Precondition::TopicOffset { .. } => 0,
        Precondition::BatchCommitted { .. } => 1,
        Precondition::LockHeld { .. } => 2,
        Precondition::Leader { .. } => 3,
    });
    samples
}

fn reject_reasons() -> Vec<RejectReason> {
    let samples = vec![
        RejectReason::TopicOffset {
            topic: "orders".into(),
            expected: 41,
            actual: 42,
        },
        RejectReason::BatchNotCommitted { batch: id(3) },
        RejectReason::Fenced {
            kind: MutexKind::Lock,
            name: "jobs".into(),
            token: 77,
            current: Some(80),
        },
    ];
    covers(&samples, 3, |sample| match sample {
        RejectReason::TopicOffset { .. } => 0,
        RejectReason::BatchNotCommitted { .. } => 1,
        RejectReason::Fenced { .. } => 2,
    });
    samples
}

fn outcomes() -> Vec<Outcome> {
    let mut samples = vec![Outcome::Committed { seq: 19, index: 40 }];
    samples.extend(
        reject_reasons()
            .into_iter()
            .map(|reason| Outcome::Rejected { reason }),
    );
    covers(&samples, 2, |sample| match sample {
        Outcome::Committed { .. } => 0,
        Outcome::Rejected { .. } => 1,
    });
    samples
}

fn commands() -> Vec<Command> {
    let samples = vec![
        Command::Batch {
            batch: batch(),
            stamp_ms: 1_700_000_000_123,
        },
        Command::Raw(Bytes::from_static(b"raw")),
    ];
    let mut samples = samples;
    samples.extend(coord_ops().into_iter().map(|op| Command::Coord {
        op,
        stamp_ms: 1_700_000_000_124,
    }));
    covers(&samples, 3, |sample| match sample {
        Command::Batch { .. } => 0,
        Command::Raw(_) => 1,
        Command::Coord { .. } => 2,
    });
    samples
}

fn session(byte: u8) -> SessionId {
    SessionId([byte; 16])
}

fn coord_ops() -> Vec<CoordOp> {
    let samples = vec![
        CoordOp::Open {
            session: session(1),
            owner: "cert:0123456789abcdef".into(),
            ttl_ms: 10_000,
        },
        CoordOp::KeepAlive {
            sessions: vec![session(1), session(2)],
        },
        CoordOp::Expire {
            session: session(1),
            renewed_index: 40,
        },
        CoordOp::Close {
            session: session(2),
        },
        CoordOp::Acquire {
            kind: MutexKind::Lock,
            name: "jobs".into(),
            session: session(1),
            value: vec![],
            lock_delay_ms: 15_000,
        },
        CoordOp::Release {
            kind: MutexKind::Election,
            name: "scheduler".into(),
            session: session(1),
        },
        CoordOp::Proclaim {
            name: "scheduler".into(),
            session: session(1),
            epoch: 41,
            value: b"w1".to_vec(),
        },
        CoordOp::Wake {
            mutexes: vec![(MutexKind::Lock, "jobs".into())],
        },
    ];
    covers(&samples, 8, |sample| match sample {
        CoordOp::Open { .. } => 0,
        CoordOp::KeepAlive { .. } => 1,
        CoordOp::Expire { .. } => 2,
        CoordOp::Close { .. } => 3,
        CoordOp::Acquire { .. } => 4,
        CoordOp::Release { .. } => 5,
        CoordOp::Proclaim { .. } => 6,
        CoordOp::Wake { .. } => 7,
    });
    samples
}

/// The stored rows of a state with one session holding a lock another waits for, an
/// election, and a membership.
fn coord_rows() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut state = CoordState::default();
    for (index, op) in [
        CoordOp::Open {
            session: session(1),
            owner: "a".into(),
            ttl_ms: 10_000,
        },
        CoordOp::Open {
            session: session(2),
            owner: "b".into(),
            ttl_ms: 10_000,
        },
        CoordOp::Acquire {
            kind: MutexKind::Lock,
            name: "jobs".into(),
            session: session(1),
            value: vec![],
            lock_delay_ms: 0,
        },
        CoordOp::Acquire {
            kind: MutexKind::Lock,
            name: "jobs".into(),
            session: session(2),
            value: vec![],
            lock_delay_ms: 0,
        },
        CoordOp::Acquire {
            kind: MutexKind::Election,
            name: "scheduler".into(),
            session: session(2),
            value: b"w2".to_vec(),
            lock_delay_ms: 0,
        },
    ]
    .iter()
    .enumerate()
    {
        state.apply(index as u64 + 1, op, 1_700_000_000_000);
    }
    state.set_membership(membership());
    state.rows()
}

fn membership() -> Membership {
    Membership {
        voters: [1, 2, 4].into(),
        learners: [5].into(),
        addresses: [
            (1, "n1:7001"),
            (2, "n2:7001"),
            (4, "n4:7001"),
            (5, "n5:7001"),
        ]
        .map(|(id, address)| (id, address.to_string()))
        .into(),
        promote_when_ready: [5].into(),
        retired: [3].into(),
    }
}

fn entries() -> Vec<Entry> {
    let mut samples = vec![Entry {
        term: 3,
        index: 8,
        payload: EntryPayload::Noop,
    }];
    for (offset, command) in commands().into_iter().enumerate() {
        samples.push(Entry {
            term: 3,
            index: 9 + offset as u64,
            payload: EntryPayload::Normal(Bytes::from(command.encode())),
        });
    }
    samples.push(Entry {
        term: 3,
        index: 9 + samples.len() as u64,
        payload: EntryPayload::Config(membership()),
    });
    covers(&samples, 3, |sample| match sample.payload {
        EntryPayload::Noop => 0,
        EntryPayload::Normal(_) => 1,
        EntryPayload::Config(_) => 2,
    });
    samples
}

fn batch_errors() -> Vec<BatchError> {
    let samples = vec![
        BatchError::Empty,
        BatchError::TooManyMessages { count: 2, limit: 1 },
        BatchError::TooLarge { bytes: 2, limit: 1 },
        BatchError::TooManyTopics { count: 2, limit: 1 },
        BatchError::TopicNameTooLong { bytes: 2, limit: 1 },
        BatchError::EmptyTopicName,
        BatchError::KeyTooLong { bytes: 2, limit: 1 },
        BatchError::TooManyHeaders { count: 2, limit: 1 },
        BatchError::TooManyPreconditions { count: 2, limit: 1 },
        BatchError::NotUuidV7 { id: id(5) },
        BatchError::BadMutexName {
            bytes: 0,
            limit: 255,
        },
    ];
    covers(&samples, 11, |sample| match sample {
        BatchError::Empty => 0,
        BatchError::TooManyMessages { .. } => 1,
        BatchError::TooLarge { .. } => 2,
        BatchError::TooManyTopics { .. } => 3,
        BatchError::TopicNameTooLong { .. } => 4,
        BatchError::EmptyTopicName => 5,
        BatchError::KeyTooLong { .. } => 6,
        BatchError::TooManyHeaders { .. } => 7,
        BatchError::TooManyPreconditions { .. } => 8,
        BatchError::NotUuidV7 { .. } => 9,
        BatchError::BadMutexName { .. } => 10,
    });
    samples
}

fn busy_codes() -> Vec<BusyCode> {
    let samples = vec![
        BusyCode::Backpressure,
        BusyCode::TransferInProgress,
        BusyCode::Stopping,
        BusyCode::ProposalOverwritten,
        BusyCode::ReadLost,
        BusyCode::TooManyReads,
        BusyCode::OutcomeUnknown,
        BusyCode::StorageFull,
        BusyCode::NoLeader,
        BusyCode::Quota,
    ];
    covers(&samples, 10, |sample| match sample {
        BusyCode::Backpressure => 0,
        BusyCode::TransferInProgress => 1,
        BusyCode::Stopping => 2,
        BusyCode::ProposalOverwritten => 3,
        BusyCode::ReadLost => 4,
        BusyCode::TooManyReads => 5,
        BusyCode::OutcomeUnknown => 6,
        BusyCode::StorageFull => 7,
        BusyCode::NoLeader => 8,
        BusyCode::Quota => 9,
    });
    samples
}

fn refused_codes() -> Vec<RefusedCode> {
    let samples = vec![
        RefusedCode::BadFrame,
        RefusedCode::TooLarge,
        RefusedCode::Unsupported,
        RefusedCode::StorageFailed,
        RefusedCode::IdConflict,
        RefusedCode::BeyondHorizon,
        RefusedCode::Forbidden,
        RefusedCode::LimitExceeded,
    ];
    covers(&samples, 8, |sample| match sample {
        RefusedCode::BadFrame => 0,
        RefusedCode::TooLarge => 1,
        RefusedCode::Unsupported => 2,
        RefusedCode::StorageFailed => 3,
        RefusedCode::IdConflict => 4,
        RefusedCode::BeyondHorizon => 5,
        RefusedCode::Forbidden => 6,
        RefusedCode::LimitExceeded => 7,
    });
    samples
}

fn roles() -> Vec<NodeRole> {
    let samples = vec![
        NodeRole::Follower,
        NodeRole::PreCandidate,
        NodeRole::Candidate,
        NodeRole::Leader,
    ];
    covers(&samples, 4, |sample| match sample {
        NodeRole::Follower => 0,
        NodeRole::PreCandidate => 1,
        NodeRole::Candidate => 2,
        NodeRole::Leader => 3,
    });
    samples
}

fn client_requests() -> Vec<ClientRequest> {
    let mut samples = vec![
        ClientRequest::Hello,
        ClientRequest::Status,
        ClientRequest::Propose {
            payload: Bytes::from_static(b"p"),
        },
        ClientRequest::Submit { batch: batch() },
        ClientRequest::BatchStatus { id: id(4) },
        ClientRequest::Subscribe {
            from_seq: 5,
            topics: vec!["orders".into()],
        },
        ClientRequest::SnapshotSave,
        ClientRequest::OpenSession {
            session: session(1),
            ttl_ms: 10_000,
            owner: String::new(),
        },
        ClientRequest::KeepAlive {
            session: session(1),
        },
        ClientRequest::CloseSession {
            session: session(1),
        },
        ClientRequest::Acquire {
            kind: MutexKind::Election,
            name: "scheduler".into(),
            session: session(1),
            value: b"w1".to_vec(),
            lock_delay_ms: 0,
        },
        ClientRequest::Release {
            kind: MutexKind::Lock,
            name: "jobs".into(),
            session: session(1),
        },
        ClientRequest::Proclaim {
            name: "scheduler".into(),
            session: session(1),
            epoch: 41,
            value: b"w1b".to_vec(),
        },
        ClientRequest::Observe {
            name: "scheduler".into(),
            after_revision: 40,
        },
        ClientRequest::CoordList,
        ClientRequest::MemberList,
    ];
    samples.extend(
        membership_changes()
            .into_iter()
            .map(|change| ClientRequest::MemberChange { change }),
    );
    covers(&samples, 17, |sample| match sample {
        ClientRequest::Hello => 0,
        ClientRequest::Status => 1,
        ClientRequest::Propose { .. } => 2,
        ClientRequest::Submit { .. } => 3,
        ClientRequest::BatchStatus { .. } => 4,
        ClientRequest::Subscribe { .. } => 5,
        ClientRequest::SnapshotSave => 6,
        ClientRequest::OpenSession { .. } => 7,
        ClientRequest::KeepAlive { .. } => 8,
        ClientRequest::CloseSession { .. } => 9,
        ClientRequest::Acquire { .. } => 10,
        ClientRequest::Release { .. } => 11,
        ClientRequest::Proclaim { .. } => 12,
        ClientRequest::Observe { .. } => 13,
        ClientRequest::CoordList => 14,
        ClientRequest::MemberList => 15,
        ClientRequest::MemberChange { .. } => 16,
    });
    samples
}

fn membership_changes() -> Vec<MembershipChange> {
    let samples = vec![
        MembershipChange::AddLearner {
            id: 6,
            address: "n6:7001".into(),
            promote: true,
        },
        MembershipChange::Promote { id: 6 },
        MembershipChange::Remove { id: 3 },
    ];
    covers(&samples, 3, |sample| match sample {
        MembershipChange::AddLearner { .. } => 0,
        MembershipChange::Promote { .. } => 1,
        MembershipChange::Remove { .. } => 2,
    });
    samples
}

fn membership_errors() -> Vec<MembershipError> {
    let samples = vec![
        MembershipError::NotLeader {
            leader_hint: Some(2),
        },
        MembershipError::TransferInProgress,
        MembershipError::TermNotStarted,
        MembershipError::ChangeInProgress { index: 44 },
        MembershipError::InvalidId,
        MembershipError::Retired(3),
        MembershipError::AlreadyMember(2),
        MembershipError::NotAMember(9),
        MembershipError::NotALearner(1),
        MembershipError::LastVoter(1),
        MembershipError::InvalidAddress {
            bytes: 300,
            limit: 256,
        },
        MembershipError::TooManyLearners { limit: 2 },
        MembershipError::TooManyVoters { limit: 7 },
        MembershipError::LearnerBehind {
            id: 6,
            match_index: 10,
            last_index: 5000,
        },
        MembershipError::WouldLoseQuorum {
            reachable: 1,
            quorum: 2,
        },
        MembershipError::EngineKeepsMembers {
            engine: ordo_common::EngineKind::MultiPaxos,
        },
    ];
    covers(&samples, 16, |sample| match sample {
        MembershipError::NotLeader { .. } => 0,
        MembershipError::TransferInProgress => 1,
        MembershipError::TermNotStarted => 2,
        MembershipError::ChangeInProgress { .. } => 3,
        MembershipError::InvalidId => 4,
        MembershipError::Retired(_) => 5,
        MembershipError::AlreadyMember(_) => 6,
        MembershipError::NotAMember(_) => 7,
        MembershipError::NotALearner(_) => 8,
        MembershipError::LastVoter(_) => 9,
        MembershipError::InvalidAddress { .. } => 10,
        MembershipError::TooManyLearners { .. } => 11,
        MembershipError::TooManyVoters { .. } => 12,
        MembershipError::LearnerBehind { .. } => 13,
        MembershipError::WouldLoseQuorum { .. } => 14,
        MembershipError::EngineKeepsMembers { .. } => 15,
    });
    samples
}

fn client_responses() -> Vec<ClientResponse> {
    let mut samples = vec![ClientResponse::Welcome { node: 2 }];
    samples.extend(roles().into_iter().map(|role| {
        ClientResponse::Status(Box::new(NodeStatus {
            id: 1,
            address: "127.0.0.1:7001".into(),
            role,
            term: 3,
            leader: Some(1),
            last_index: 9,
            commit_index: 8,
            applied_index: 7,
            durable_index: 9,
            reachable_peers: vec![2, 3],
            storage_full: false,
            tick_gap_max_us: 1250,
            late_not_leader_refusals: 4,
            applied_stamp_ms: 1_796_000_000_000,
            engine: ordo_common::EngineKind::MultiPaxos,
        }))
    }));
    samples.push(ClientResponse::Committed { index: 9, term: 3 });
    samples.push(ClientResponse::NotLeader {
        leader: Some(2),
        leader_address: Some("127.0.0.1:7002".into()),
    });
    samples.extend(
        refused_codes()
            .into_iter()
            .map(|code| ClientResponse::Refused {
                code,
                reason: "r".into(),
            }),
    );
    samples.extend(outcomes().into_iter().map(ClientResponse::Outcome));
    samples.push(ClientResponse::Unknown);
    samples.extend(batch_errors().into_iter().map(ClientResponse::Invalid));
    samples.extend(busy_codes().into_iter().map(|code| ClientResponse::Busy {
        code,
        reason: "b".into(),
    }));
    samples.push(ClientResponse::Batch(CommittedBatch {
        seq: 19,
        index: 40,
        id: id(1),
        messages: batch().messages,
    }));
    samples.push(ClientResponse::Compacted { first_seq: 100 });
    samples.push(ClientResponse::BeyondHorizon {
        floor_ms: 1_700_000_000_000,
    });
    samples.push(ClientResponse::SnapshotChunk {
        data: Bytes::from_static(b"ORDOSNAP"),
    });
    samples.push(ClientResponse::SnapshotEnd {
        applied_index: 40,
        applied_term: 6,
        bytes: 4096,
    });
    samples.push(ClientResponse::SessionOpened { ttl_ms: 10_000 });
    samples.push(ClientResponse::SessionRenewed);
    samples.push(ClientResponse::SessionGone {
        session: session(1),
    });
    samples.push(ClientResponse::Held { token: 41 });
    samples.push(ClientResponse::Released { held: true });
    samples.extend(
        [
            CoordRefusal::SessionGone(session(1)),
            CoordRefusal::NotOwner {
                session: session(1),
                owner: "a".into(),
            },
            CoordRefusal::TtlOutOfRange {
                ttl_ms: 10,
                min_ms: 3_000,
                max_ms: 3_600_000,
            },
            CoordRefusal::Limit {
                what: "w".into(),
                limit_name: "SESSIONS_MAX".into(),
                limit: 100_000,
            },
            CoordRefusal::NotLeader {
                name: "scheduler".into(),
                session: session(1),
                epoch: 40,
            },
        ]
        .into_iter()
        .map(ClientResponse::CoordRefused),
    );
    samples.push(ClientResponse::LeaderChanges {
        changes: vec![
            LeaderChange {
                revision: 41,
                leader: Some((41, b"w1".to_vec())),
            },
            LeaderChange {
                revision: 45,
                leader: None,
            },
        ],
        gap: false,
    });
    let mut state = CoordState::default();
    state.apply(
        1,
        &CoordOp::Open {
            session: session(1),
            owner: "a".into(),
            ttl_ms: 10_000,
        },
        5,
    );
    samples.push(ClientResponse::CoordList {
        sessions: state.session_infos(10),
        mutexes: vec![MutexInfo {
            kind: MutexKind::Lock,
            name: "jobs".into(),
            holder: Some((session(1), 41, vec![])),
            waiters: vec![session(2)],
            free_at_ms: 0,
        }],
    });
    samples.push(ClientResponse::Done);
    samples.push(ClientResponse::Members(Box::new(MemberList {
        cluster: ordo_common::ClusterId::initial([1, 2, 3]),
        leader: 1,
        term: 4,
        last_index: 120,
        membership_index: 100,
        membership_committed: true,
        members: vec![
            MemberInfo {
                id: 1,
                address: "n1:7001".into(),
                voter: true,
                reachable: true,
                match_index: 120,
                promote_when_ready: false,
            },
            MemberInfo {
                id: 5,
                address: "n5:7001".into(),
                voter: false,
                reachable: false,
                match_index: 7,
                promote_when_ready: true,
            },
        ],
        retired: vec![3],
    })));
    samples.push(ClientResponse::MembershipChanged {
        index: 100,
        membership: Box::new(membership()),
    });
    samples.extend(
        membership_errors()
            .into_iter()
            .map(ClientResponse::MembershipRefused),
    );
    covers(&samples, 26, |sample| match sample {
        ClientResponse::Welcome { .. } => 0,
        ClientResponse::Status(_) => 1,
        ClientResponse::Committed { .. } => 2,
        ClientResponse::NotLeader { .. } => 3,
        ClientResponse::Refused { .. } => 4,
        ClientResponse::Outcome(_) => 5,
        ClientResponse::Unknown => 6,
        ClientResponse::Invalid(_) => 7,
        ClientResponse::Busy { .. } => 8,
        ClientResponse::Batch(_) => 9,
        ClientResponse::Compacted { .. } => 10,
        ClientResponse::BeyondHorizon { .. } => 11,
        ClientResponse::SnapshotChunk { .. } => 12,
        ClientResponse::SnapshotEnd { .. } => 13,
        ClientResponse::SessionOpened { .. } => 14,
        ClientResponse::SessionRenewed => 15,
        ClientResponse::SessionGone { .. } => 16,
        ClientResponse::Held { .. } => 17,
        ClientResponse::Released { .. } => 18,
        ClientResponse::CoordRefused(_) => 19,
        ClientResponse::LeaderChanges { .. } => 20,
        ClientResponse::CoordList { .. } => 21,
        ClientResponse::Done => 22,
        ClientResponse::Members(_) => 23,
        ClientResponse::MembershipChanged { .. } => 24,
        ClientResponse::MembershipRefused(_) => 25,
    });
    samples
}

fn raft_bodies() -> Vec<Body> {
    let samples = vec![
        Body::Vote {
            last_log_id: LogId::new(3, 9),
            pre_vote: true,
            leader_transfer: false,
        },
        Body::VoteResponse {
            pre_vote: false,
            granted: true,
        },
        Body::Append {
            prev_log_id: LogId::new(3, 7),
            entries: entries(),
            commit_index: 7,
        },
        Body::AppendResponse(AppendResponse::Accepted { match_index: 10 }),
        Body::AppendResponse(AppendResponse::Rejected {
            rejected_prev_index: 7,
            hint: RejectHint {
                last_index: 5,
                conflict: Some(ConflictHint {
                    term: 2,
                    first_index: 4,
                }),
            },
        }),
        Body::Heartbeat {
            commit_index: 7,
            read_round: 2,
        },
        Body::HeartbeatResponse { read_round: 2 },
        Body::TimeoutNow,
        Body::Prepare {
            from: 8,
            transfer: true,
            probe: false,
        },
        Body::Promise {
            decided: 7,
            from: 8,
            entries: entries(),
            complete: false,
        },
        Body::Accept {
            first: 8,
            entries: entries(),
            decided: 7,
            read_round: 2,
        },
        Body::Accepted {
            through: 10,
            decided: 7,
            read_round: 2,
        },
        Body::Refused {
            decided: 7,
            held_through: 9,
        },
        Body::ProbeAnswer { granted: true },
    ];
    covers(&samples, 14, |sample| match sample {
        Body::Vote { .. } => 0,
        Body::VoteResponse { .. } => 1,
        Body::Append { .. } => 2,
        Body::AppendResponse(AppendResponse::Accepted { .. }) => 3,
        Body::AppendResponse(AppendResponse::Rejected { .. }) => 4,
        Body::Heartbeat { .. } => 5,
        Body::HeartbeatResponse { .. } => 6,
        Body::TimeoutNow => 7,
        Body::Prepare { .. } => 8,
        Body::Promise { .. } => 9,
        Body::Accept { .. } => 10,
        Body::Accepted { .. } => 11,
        Body::Refused { .. } => 12,
        Body::ProbeAnswer { .. } => 13,
    });
    samples
}

fn peer_frames() -> Vec<PeerFrame> {
    let mut samples = vec![
        PeerFrame::Hello {
            from: 1,
            to: 2,
            cluster: ordo_common::ClusterId::initial([1, 2, 3]),
            incarnation: 0x0123_4567_89AB_CDEF,
        },
        PeerFrame::Welcome,
        PeerFrame::Refused {
            reason: "no".into(),
        },
    ];
    samples.extend(
        raft_bodies()
            .into_iter()
            .map(|body| PeerFrame::Raft(RaftMessage { term: 3, body })),
    );
    samples.extend([
        PeerFrame::SnapshotBegin {
            term: 3,
            last_included: LogId::new(3, 40),
            bytes: 1234,
        },
        PeerFrame::SnapshotChunk {
            data: Bytes::from_static(b"chunk"),
            crc: 0xDEAD_BEEF,
        },
        PeerFrame::SnapshotEnd,
    ]);
    covers(&samples, 7, |sample| match sample {
        PeerFrame::Hello { .. } => 0,
        PeerFrame::Welcome => 1,
        PeerFrame::Refused { .. } => 2,
        PeerFrame::Raft(_) => 3,
        PeerFrame::SnapshotBegin { .. } => 4,
        PeerFrame::SnapshotChunk { .. } => 5,
        PeerFrame::SnapshotEnd => 6,
    });
    samples
}

/// Asserts that `samples` hold every one of `variants` variants, numbered by `variant` (an
/// exhaustive match, so a new variant fails to compile until it is numbered and sampled).
fn covers<T>(samples: &[T], variants: usize, variant: impl Fn(&T) -> usize) {
    let seen: BTreeSet<usize> = samples.iter().map(variant).collect();
    let all: BTreeSet<usize> = (0..variants).collect();
    assert_eq!(seen, all, "every variant needs a sample");
}

// ----- the fixture files -----

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/testdata")
        .join(name)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Compares `samples` with the fixture `name`, pinned under `constant` = `version`.
fn check(name: &str, constant: &str, version: u64, samples: Vec<(String, Vec<u8>)>) {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines = text.lines().filter(|line| !line.starts_with('#'));
    let pinned_version: Option<u64> = lines
        .next()
        .and_then(|line| line.strip_prefix("version "))
        .and_then(|version| version.parse().ok());
    let pinned: Vec<(String, String)> = lines
        .filter_map(|line| line.rsplit_once(' '))
        .map(|(label, bytes)| (label.to_string(), bytes.to_string()))
        .collect();
    let current: Vec<(String, String)> = samples
        .into_iter()
        .map(|(label, bytes)| (label.replace(' ', "_"), hex(&bytes)))
        .collect();
    let differences: Vec<String> = current
        .iter()
        .zip(pinned.iter().map(Some).chain(std::iter::repeat(None)))
        .filter(|(now, then)| Some(*now) != *then)
        .map(|((label, bytes), then)| match then {
            Some((old_label, old)) if old_label == label => {
                format!("{label}\n  pinned:  {old}\n  now:     {bytes}")
            }
            Some((old_label, _)) => format!("sample {label} where {old_label} was pinned"),
            None => format!("{label}: new, not pinned"),
        })
        .chain((pinned.len() > current.len()).then(|| "samples were removed".to_string()))
        .collect();
    if std::env::var_os(UPDATE).is_some() {
        assert!(
            differences.is_empty() || pinned_version != Some(version),
            "{name}: refusing to re-pin changed encodings under an unchanged {constant} \
             ({version}); move {constant} first. Changes:\n{}",
            differences.join("\n")
        );
        let mut out = format!(
            "# Golden encodings, pinned under {constant} = {version} (coordinator/tests/golden.rs).\n\
             # Regenerate only after moving {constant}: {UPDATE}=1 cargo test -p ordo-coordinator --test golden\n\
             version {version}\n"
        );
        for (label, bytes) in &current {
            out.push_str(&format!("{label} {bytes}\n"));
        }
        std::fs::write(&path, out).expect("write the fixture");
        return;
    }
    assert_eq!(
        pinned_version,
        Some(version),
        "{name} was pinned under {constant} = {pinned_version:?}, this build has {version}: \
         regenerate it with {UPDATE}=1 cargo test -p ordo-coordinator --test golden"
    );
    assert!(
        differences.is_empty(),
        "{name}: encodings changed under {constant} = {version}. This changes Ordo's format: \
         if it is meant, move {constant} and regenerate with {UPDATE}=1 cargo test -p \
         ordo-coordinator --test golden.\n{}",
        differences.join("\n")
    );
}
