//! Stable error codes: one flat namespace for every error a client or an operator can see (SDK
//! errors, the CLI's output, answers of the nodes, `/readyz`, refusals in node logs).
//!
//! A code never changes meaning once published; scripts and dashboards may match on it. The
//! message beside a code is for people and may change. [`CODES`] lists every code with what it
//! means and what to do; `ERRORS.md` is generated from it (a test keeps the two in step).

/// An error with a stable code.
pub trait ErrorCode {
    /// The stable code: lowercase words joined by `_`, listed in [`CODES`].
    fn code(&self) -> &'static str;
}

/// One entry of the code table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeDoc {
    pub code: &'static str,
    /// Where it is seen.
    pub seen: &'static str,
    /// What happened.
    pub meaning: &'static str,
    /// What to do about it.
    pub fix: &'static str,
}

const fn doc(
    code: &'static str,
    seen: &'static str,
    meaning: &'static str,
    fix: &'static str,
) -> CodeDoc {
    CodeDoc {
        code,
        seen,
        meaning,
        fix,
    }
}

/// Every stable code, grouped by where it is seen.
pub const CODES: &[CodeDoc] = &[
    // Outcomes of a batch (definite: recorded in the log).
    doc(
        "topic_offset",
        "submit, status",
        "a `TopicOffset` precondition failed: the topic holds another number of messages",
        "read the topic's offset again and resubmit with a fresh id if still wanted",
    ),
    doc(
        "batch_not_committed",
        "submit, status",
        "a `BatchCommitted` precondition named a batch that has not committed",
        "submit the other batch first, or drop the precondition",
    ),
    doc(
        "fenced",
        "submit, status",
        "a fencing precondition failed: the lock or election moved on to another holder or epoch",
        "the caller lost the lock or leadership: stop acting on it, acquire again",
    ),
    // Refusals (nothing was appended unless the code says otherwise).
    doc(
        "bad_frame",
        "any request",
        "the request's bytes do not decode (or are of another wire version)",
        "use an SDK or CLI of the cluster's version",
    ),
    doc(
        "too_large",
        "submit, subscribe",
        "the request is over a named size limit (the message names it)",
        "split the batch, or shorten the filter",
    ),
    doc(
        "unsupported",
        "any request",
        "the node does not serve this request this way",
        "use the request the message names",
    ),
    doc(
        "storage_failed",
        "any request",
        "the node could not read or write its storage",
        "check the node's log and disk; another node may answer meanwhile",
    ),
    doc(
        "id_conflict",
        "submit",
        "the batch id is registered with other content: ids are single-use",
        "submit new content with a fresh id",
    ),
    doc(
        "beyond_horizon",
        "submit, status",
        "the batch id is older than the registry's horizon (or too far ahead of the cluster's clock): it will never commit",
        "ask the status of the earlier attempt; submit new work with a fresh id",
    ),
    doc(
        "forbidden",
        "any request",
        "the caller's certificate identity may not do this (the message names the [auth] rule), or a node certificate acted as a client",
        "grant the identity the topic, lock or admin right in [auth], or use another identity",
    ),
    doc(
        "limit_exceeded",
        "submit",
        "a limit of the node's state (topics, sessions, locks) would be exceeded",
        "raise the limit the message names, or clean up",
    ),
    // Busy (retry: the SDK does, up to its retry timeout).
    doc(
        "backpressure",
        "submit, locks",
        "too much is proposed and not yet committed",
        "retry after a pause; the SDK backs off by itself",
    ),
    doc(
        "transfer_in_progress",
        "submit, membership",
        "leadership is moving to another node",
        "retry; the new leader answers shortly",
    ),
    doc(
        "stopping",
        "any request",
        "the node is shutting down",
        "retry at another node",
    ),
    doc(
        "proposal_overwritten",
        "submit",
        "this attempt was appended but another leader's entry took its place: it will never commit",
        "retry with the same id (never commits twice)",
    ),
    doc(
        "read_lost",
        "status, locks",
        "leadership was lost before a linearizable read was confirmed",
        "retry",
    ),
    doc(
        "too_many_reads",
        "status, locks",
        "too many linearizable reads are waiting",
        "retry after a pause",
    ),
    doc(
        "outcome_unknown",
        "submit",
        "the attempt may or may not have committed (no answer in time, or the node stopped)",
        "ask the batch's status, or retry with the same id (never commits twice)",
    ),
    doc(
        "storage_full",
        "submit",
        "the leader's disk is below storage.free_space_min: proposals are refused, reads go on",
        "free disk space; proposals resume by themselves",
    ),
    doc(
        "no_leader",
        "any request, status, /readyz",
        "no leader is known (an election is running, or no majority is reachable)",
        "wait for an election; if it lasts, restore a majority of voters",
    ),
    doc(
        "quota",
        "any request",
        "a budget per identity, connection or node is used up (the message names its transport.* key)",
        "retry later or with less at once, or raise the named limit",
    ),
    doc(
        "not_leader",
        "any request",
        "this node does not lead; the answer names the leader when it knows it",
        "the SDK follows it; from scripts, ask the leader",
    ),
    // SDK errors.
    doc(
        "unavailable",
        "SDK",
        "no node could take the request within the retry timeout; a submit was never appended",
        "check that a majority of nodes runs and is reachable; retry with the same id",
    ),
    doc(
        "compacted",
        "SDK, subscribe",
        "the requested position is below what the nodes retain (retention)",
        "resume from a snapshot of your state, or keep up closer (raise retention.*)",
    ),
    doc(
        "tls",
        "SDK, CLI",
        "certificates or keys could not be loaded or do not match the CA",
        "check the TLS directory: ca.pem and client-NAME.pem/.key from `ordo certs`",
    ),
    doc(
        "socket",
        "SDK, CLI",
        "a local UDP socket could not be opened",
        "check the local network configuration",
    ),
    doc(
        "connect",
        "SDK, CLI",
        "a node could not be reached or refused the handshake",
        "check the endpoint, that the node runs, and the certificates",
    ),
    doc(
        "timeout",
        "SDK, CLI",
        "a node did not answer in time",
        "check the node's health; the SDK tries the others",
    ),
    doc(
        "connection_lost",
        "SDK, CLI",
        "the connection to a node broke",
        "the SDK reconnects; check the node if it persists",
    ),
    doc(
        "leader_moved",
        "SDK",
        "the node that was asked no longer leads",
        "the SDK follows the new leader",
    ),
    doc(
        "session_lost",
        "locks",
        "the session expired or was closed: its locks and campaigns are gone",
        "open a new session; stop acting on locks held under the old one",
    ),
    doc(
        "session_gone",
        "locks",
        "the session the request names does not exist (expired or closed)",
        "open a new session",
    ),
    doc(
        "not_owner",
        "locks",
        "the session belongs to another identity",
        "use a session of your own",
    ),
    doc(
        "ttl_out_of_range",
        "locks",
        "the session TTL is outside the allowed range (the message gives it)",
        "choose a TTL within the range",
    ),
    doc(
        "coord_limit",
        "locks",
        "a limit on sessions, locks, elections or waiters was reached (the message names it)",
        "close unused sessions, or raise the limit",
    ),
    doc(
        "unexpected_answer",
        "SDK",
        "a node answered with something this request cannot get (a bug, or mixed versions)",
        "report it with the message",
    ),
    doc(
        "handler_failed",
        "applier",
        "the participant's handler returned an error; nothing of the batch was applied",
        "fix the handler; the applier resumes at the same batch",
    ),
    doc(
        "applier_database",
        "applier",
        "the participant's database failed",
        "check the participant's disk and database file",
    ),
    doc(
        "subscription_ended",
        "applier, subscribe",
        "the node ended the subscription (it stopped, or knew no leader for long)",
        "the SDK resubscribes elsewhere; check the cluster if it persists",
    ),
    // Batch validation (before anything is sent).
    doc(
        "batch_empty",
        "submit",
        "a batch needs at least one message",
        "add a message",
    ),
    doc(
        "too_many_messages",
        "submit",
        "the batch has more messages than BATCH_MESSAGES_MAX",
        "split the batch",
    ),
    doc(
        "too_many_topics",
        "submit",
        "the batch names more topics than BATCH_TOPICS_MAX",
        "split the batch",
    ),
    doc(
        "topic_name_too_long",
        "submit",
        "a topic name is longer than TOPIC_NAME_BYTES_MAX",
        "use a shorter name",
    ),
    doc(
        "empty_topic_name",
        "submit",
        "a topic name is empty",
        "name the topic",
    ),
    doc(
        "key_too_long",
        "submit",
        "a message key is longer than MESSAGE_KEY_BYTES_MAX",
        "use a shorter key",
    ),
    doc(
        "too_many_headers",
        "submit",
        "a message has more headers than MESSAGE_HEADERS_MAX",
        "fold headers together",
    ),
    doc(
        "too_many_preconditions",
        "submit",
        "the batch has more preconditions than BATCH_PRECONDITIONS_MAX",
        "split the batch",
    ),
    doc(
        "batch_id_not_uuid_v7",
        "submit",
        "the batch id is not a UUID v7 (the registry orders ids by their time)",
        "generate ids with `new_batch_id` or any UUID v7 generator",
    ),
    doc(
        "bad_mutex_name",
        "submit, locks",
        "a lock or election name is empty or too long",
        "use a name within the limit the message gives",
    ),
    // Membership changes.
    doc(
        "term_not_started",
        "membership",
        "the new leader has not committed an entry of its term yet",
        "retry in a moment",
    ),
    doc(
        "change_in_progress",
        "membership",
        "another membership change has not committed yet",
        "wait for it (ordo member list), then retry",
    ),
    doc(
        "invalid_id",
        "membership",
        "node id 0 is not valid",
        "use ids from 1",
    ),
    doc(
        "retired",
        "membership",
        "the id belonged to a removed node: ids are never reused",
        "give the new node a fresh id",
    ),
    doc(
        "already_member",
        "membership",
        "the node is already a member",
        "nothing to do",
    ),
    doc(
        "not_a_member",
        "membership",
        "the node is not a member",
        "check the id with ordo member list",
    ),
    doc(
        "not_a_learner",
        "membership",
        "only a learner can be promoted",
        "add it as a learner first",
    ),
    doc(
        "last_voter",
        "membership",
        "the last voter cannot be removed",
        "add another voter first",
    ),
    doc(
        "invalid_address",
        "membership",
        "the member's address is empty or too long",
        "give host:port",
    ),
    doc(
        "too_many_learners",
        "membership",
        "the cluster has as many learners as allowed",
        "promote or remove a learner first",
    ),
    doc(
        "too_many_voters",
        "membership",
        "the cluster has as many voters as allowed",
        "remove a voter first",
    ),
    doc(
        "learner_behind",
        "membership",
        "the learner is too far behind to be promoted (raft.promote_lag_entries_max)",
        "wait for it to catch up, or use --learner to promote it when ready",
    ),
    doc(
        "would_lose_quorum",
        "membership",
        "the change would leave fewer reachable voters than a majority",
        "bring unreachable voters back first",
    ),
    doc(
        "engine_keeps_members",
        "membership",
        "the cluster runs the multi-paxos engine, which keeps the voters it bootstrapped with",
        "run a raft cluster to change membership, or bootstrap a new cluster with the voters you want",
    ),
    // Health (ordo status, /readyz).
    doc(
        "no_quorum",
        "ordo status",
        "the leader hears from no majority of voters",
        "restore connectivity to, or restart, enough voters",
    ),
    doc(
        "unreachable",
        "ordo status",
        "no node answered",
        "check that the nodes run, and the endpoints and certificates",
    ),
    doc(
        "leader_unreachable",
        "/readyz",
        "this node has not heard from its leader within an election timeout",
        "check the network between this node and the leader",
    ),
    doc(
        "applying_behind",
        "/readyz",
        "this node has applied far fewer entries than it knows committed (http.ready_lag_entries_max)",
        "wait; if it persists, check the node's disk and CPU",
    ),
    // Operators: the node and the CLI.
    doc(
        "config",
        "ordo serve, CLI",
        "the configuration is invalid (the message names the key)",
        "fix the key; `ordo serve --check-config` validates without starting",
    ),
    doc(
        "data_dir",
        "ordo serve",
        "the data directory cannot be created, read or locked",
        "check its path and permissions, and that no other node uses it",
    ),
    doc(
        "storage",
        "ordo serve, /api",
        "the node's storage failed to open or to read",
        "check the disk; see the node's log",
    ),
    doc(
        "lost_data",
        "ordo serve",
        "the node's data is older than what it promised its peers (a restored or wiped disk): it must not take part",
        "remove the node and add it back with a fresh id and empty data directory",
    ),
    doc(
        "transport",
        "ordo serve",
        "the node cannot listen, or its certificates are unusable",
        "check listen, tls_dir and transport.* keys",
    ),
    doc(
        "join",
        "ordo serve",
        "joining a cluster failed, or this node was removed from it",
        "check --join and the member list",
    ),
    doc(
        "http",
        "ordo serve",
        "the HTTP listener cannot start (http.listen)",
        "choose a free address, or \"off\"",
    ),
    doc(
        "engine_mismatch",
        "ordo serve",
        "the data directory holds a log the other consensus engine wrote (consensus.engine)",
        "start with the engine the data was written by, or with an empty data directory",
    ),
    doc(
        "internal",
        "any",
        "an invariant broke inside the node",
        "report it with the node's log",
    ),
    doc(
        "io",
        "CLI",
        "reading or writing a local file failed",
        "check the path and permissions",
    ),
    doc(
        "usage",
        "CLI",
        "the command line is invalid",
        "see ordo --help",
    ),
    doc(
        "method_not_allowed",
        "/api",
        "the HTTP listener serves GET only",
        "use GET",
    ),
    doc(
        "not_found",
        "/api",
        "no such page",
        "see the README for the pages a node serves",
    ),
    doc(
        "metrics_off",
        "/metrics",
        "metrics are off on this node (http.metrics = false)",
        "turn http.metrics on",
    ),
];

/// The entry for `code`, if it is a published code.
pub fn lookup(code: &str) -> Option<&'static CodeDoc> {
    CODES.iter().find(|entry| entry.code == code)
}

/// The table in Markdown, as `ERRORS.md` holds it.
pub fn markdown_table() -> String {
    let mut text = String::from(
        "# Ordo's error codes\n\n\
         Every error a client or an operator can see carries one of these codes: SDK errors \
         (`ErrorCode::code`), the CLI (`error[CODE]: ...`, and a `code` field in JSON), the \
         nodes' answers and refusal log lines (`code=...`), `/readyz` and `ordo status`. A \
         code keeps its meaning; the message beside it is for people and names the limit or \
         rule involved. Generated from `common/src/errors.rs` (a test keeps this file in step: \
         `ORDO_ERRORS_UPDATE=1 cargo test -p ordo-coordinator --test golden` rewrites it).\n\n\
         | code | seen in | meaning | what to do |\n|---|---|---|---|\n",
    );
    for entry in CODES {
        text.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            entry.code, entry.seen, entry.meaning, entry.fix
        ));
    }
    text
}

impl ErrorCode for crate::client::BusyCode {
    fn code(&self) -> &'static str {
        self.as_str()
    }
}

impl ErrorCode for crate::client::RefusedCode {
    fn code(&self) -> &'static str {
        self.as_str()
    }
}

impl ErrorCode for crate::batch::RejectReason {
    fn code(&self) -> &'static str {
        crate::batch::RejectReason::code(self)
    }
}

impl ErrorCode for crate::batch::BatchError {
    fn code(&self) -> &'static str {
        use crate::batch::BatchError::*;
        match self {
            Empty => "batch_empty",
            TooManyMessages { .. } => "too_many_messages",
            TooLarge { .. } => "too_large",
            TooManyTopics { .. } => "too_many_topics",
            TopicNameTooLong { .. } => "topic_name_too_long",
            EmptyTopicName => "empty_topic_name",
            KeyTooLong { .. } => "key_too_long",
            TooManyHeaders { .. } => "too_many_headers",
            TooManyPreconditions { .. } => "too_many_preconditions",
            NotUuidV7 { .. } => "batch_id_not_uuid_v7",
            BadMutexName { .. } => "bad_mutex_name",
        }
    }
}

impl ErrorCode for crate::membership::MembershipError {
    fn code(&self) -> &'static str {
        use crate::membership::MembershipError::*;
        match self {
            NotLeader { .. } => "not_leader",
            TransferInProgress => "transfer_in_progress",
            TermNotStarted => "term_not_started",
            ChangeInProgress { .. } => "change_in_progress",
            InvalidId => "invalid_id",
            Retired(_) => "retired",
            AlreadyMember(_) => "already_member",
            NotAMember(_) => "not_a_member",
            NotALearner(_) => "not_a_learner",
            LastVoter(_) => "last_voter",
            InvalidAddress { .. } => "invalid_address",
            TooManyLearners { .. } => "too_many_learners",
            TooManyVoters { .. } => "too_many_voters",
            LearnerBehind { .. } => "learner_behind",
            WouldLoseQuorum { .. } => "would_lose_quorum",
            EngineKeepsMembers { .. } => "engine_keeps_members",
        }
    }
}

impl ErrorCode for crate::coord::CoordRefusal {
    fn code(&self) -> &'static str {
        use crate::coord::CoordRefusal::*;
        match self {
            SessionGone(_) => "session_gone",
            NotOwner { .. } => "not_owner",
            TtlOutOfRange { .. } => "ttl_out_of_range",
            Limit { .. } => "coord_limit",
            NotLeader { .. } => "not_leader",
        }
    }
}

impl crate::client::ClientResponse {
    /// The stable code of an answer that refuses, or is not an outcome; `None` for answers
    /// that carry what was asked for (and for a committed outcome).
    pub fn error_code(&self) -> Option<&'static str> {
        use crate::client::ClientResponse::*;
        Some(match self {
            NotLeader { .. } => "not_leader",
            Refused { code, .. } => code.as_str(),
            Busy { code, .. } => code.as_str(),
            Invalid(error) => error.code(),
            Compacted { .. } => "compacted",
            BeyondHorizon { .. } => "beyond_horizon",
            CoordRefused(refusal) => refusal.code(),
            MembershipRefused(error) => error.code(),
            SessionGone { .. } => "session_gone",
            Outcome(crate::batch::Outcome::Rejected { reason }) => reason.code(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for entry in CODES {
            assert!(seen.insert(entry.code), "{} is listed twice", entry.code);
            assert!(
                entry
                    .code
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{} is not lowercase words joined by _",
                entry.code
            );
            assert!(!entry.meaning.is_empty() && !entry.fix.is_empty());
        }
    }
}
