//! The core's configuration: cluster shape, timing in ticks, and the flow-control limits.

use ordo_common::NodeId;
use ordo_common::limits::ENTRY_PAYLOAD_BYTES_MAX;

/// Everything the core needs to know that does not change while it runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; must be one of `voters` unless `voters` is empty.
    pub id: NodeId,
    /// The bootstrap membership: 1, 3 or 5 voters, in force until the log or a snapshot says
    /// otherwise. Empty for a node that joins a running cluster: it learns the membership
    /// from the leader and never campaigns before it is a voter.
    pub voters: Vec<NodeId>,
    /// Base election timeout. A follower campaigns after a random timeout in `[base, 2 * base)`
    /// ticks without hearing from a leader; a leader steps down after `base` ticks without
    /// hearing from a majority (check-quorum).
    pub election_timeout_ticks: u32,
    /// A leader sends heartbeats this often.
    pub heartbeat_interval_ticks: u32,
    /// A follower in Replicate mode that is behind and acknowledges nothing for this long is
    /// probed again (its appends or their answers were lost).
    pub replication_stall_ticks: u32,
    /// Run a pre-vote round before campaigning, so a node that cannot win never bumps the term.
    pub pre_vote: bool,
    /// A leader that has not heard from a majority for an election timeout steps down, and
    /// followers that heard from a leader recently refuse to vote.
    pub check_quorum: bool,
    /// Most payload bytes in one append message (at least one entry always moves).
    pub append_bytes_max: u64,
    /// Most entries in one append message.
    pub append_entries_max: usize,
    /// Most unacknowledged append messages to one follower in Replicate mode.
    pub inflight_messages_max: usize,
    /// Most unacknowledged payload bytes to one follower in Replicate mode.
    pub inflight_bytes_max: u64,
    /// Most payload bytes the leader holds proposed but not yet committed; proposals beyond it
    /// are refused so that a slow cluster pushes back on clients instead of growing memory.
    pub uncommitted_bytes_max: u64,
    /// Largest payload of one proposal.
    pub proposal_bytes_max: u64,
    /// Most read requests waiting for their read-index round or for apply.
    pub pending_reads_max: usize,
    /// Most payload bytes handed to the state machine in one Apply output.
    pub apply_bytes_max: u64,
    /// Most payload bytes of entries the core keeps in memory. Applied entries beyond it leave
    /// the window, oldest first; a leader reads them back from storage for a follower that
    /// needs them.
    pub log_window_bytes_max: u64,
    /// A leader waits this long for a follower to acknowledge a snapshot it was sent before it
    /// tries again (a follower that died mid-transfer never pins its leader).
    pub snapshot_timeout_ticks: u32,
    /// A learner is promoted only when its log is at most this many entries behind the
    /// leader's (etcd promotes at 90 % of the leader's index).
    pub promote_lag_entries_max: u64,
    /// Breaks Ongaro's rule on purpose: a leader may append a configuration before an entry of
    /// its own term has committed. Only the simulator's counter-example sets it, to show that
    /// the scenario catches the bug; a real node never does.
    pub plant_config_before_term_commit: bool,
    /// Check the core's whole invariant chain after every input (the log's shape, the
    /// replication window's accounting), whatever the build profile. The simulator turns it on
    /// in every seed; debug builds check always; a production node leaves it off, as the checks
    /// walk the whole in-memory log. Cheap assertions run everywhere regardless.
    pub invariant_checks: bool,
    /// Multi-Paxos only: plant one of the classic bugs, to prove the checkers catch it. Never
    /// set outside tests.
    pub plant_paxos: Option<crate::paxos::PlantedBug>,
}

impl Config {
    /// Defaults that suit a loopback or LAN cluster ticking every 10–50 ms.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Self {
            id,
            voters,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 2,
            replication_stall_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            append_bytes_max: 1024 * 1024,
            append_entries_max: 4096,
            inflight_messages_max: 64,
            inflight_bytes_max: 32 * 1024 * 1024,
            uncommitted_bytes_max: 256 * 1024 * 1024,
            proposal_bytes_max: ENTRY_PAYLOAD_BYTES_MAX,
            pending_reads_max: 65_536,
            apply_bytes_max: 16 * 1024 * 1024,
            log_window_bytes_max: 64 * 1024 * 1024,
            snapshot_timeout_ticks: 3000,
            promote_lag_entries_max: 1000,
            plant_config_before_term_commit: false,
            invariant_checks: false,
            plant_paxos: None,
        }
    }

    /// Checks the configuration; the core refuses to start on an invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.voters.len() {
            return Err(ConfigError::DuplicateVoter);
        }
        if !self.voters.is_empty() && ![1, 3, 5].contains(&self.voters.len()) {
            return Err(ConfigError::VoterCount(self.voters.len()));
        }
        if !self.voters.is_empty() && !self.voters.contains(&self.id) {
            return Err(ConfigError::NotAVoter(self.id));
        }
        if self.heartbeat_interval_ticks == 0
            || self.election_timeout_ticks <= self.heartbeat_interval_ticks
        {
            return Err(ConfigError::Timing {
                election_timeout_ticks: self.election_timeout_ticks,
                heartbeat_interval_ticks: self.heartbeat_interval_ticks,
            });
        }
        let positive = [
            ("append_bytes_max", self.append_bytes_max),
            ("append_entries_max", self.append_entries_max as u64),
            ("inflight_messages_max", self.inflight_messages_max as u64),
            ("inflight_bytes_max", self.inflight_bytes_max),
            ("uncommitted_bytes_max", self.uncommitted_bytes_max),
            ("pending_reads_max", self.pending_reads_max as u64),
            ("apply_bytes_max", self.apply_bytes_max),
            (
                "replication_stall_ticks",
                self.replication_stall_ticks as u64,
            ),
            ("snapshot_timeout_ticks", self.snapshot_timeout_ticks as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero(name));
        }
        if self.proposal_bytes_max > ENTRY_PAYLOAD_BYTES_MAX {
            return Err(ConfigError::ProposalTooLarge(self.proposal_bytes_max));
        }
        Ok(())
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("a voter is listed twice")]
    DuplicateVoter,
    #[error("{0} voters: a cluster has 1, 3 or 5 voters")]
    VoterCount(usize),
    #[error("node {0} is not among the voters")]
    NotAVoter(NodeId),
    #[error(
        "election timeout ({election_timeout_ticks} ticks) must exceed the heartbeat interval \
         ({heartbeat_interval_ticks} ticks), which must be positive"
    )]
    Timing {
        election_timeout_ticks: u32,
        heartbeat_interval_ticks: u32,
    },
    #[error("{0} must be positive")]
    Zero(&'static str),
    #[error("proposal_bytes_max {0} exceeds ENTRY_PAYLOAD_BYTES_MAX")]
    ProposalTooLarge(u64),
    #[error(
        "node id {0} cannot name a Multi-Paxos ballot: ids run from 1 to 65535 under that engine"
    )]
    BallotNodeId(NodeId),
}
