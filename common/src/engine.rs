//! Which consensus engine a cluster runs. Chosen at bootstrap and stored with the data: a node
//! refuses to start on data written under the other engine.

use serde::{Deserialize, Serialize};

/// A consensus engine. Both order the same log behind the same boundary (`ordo-core`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EngineKind {
    /// Raft: election, log replication, commit of the current term's entries.
    #[default]
    Raft,
    /// Multi-Paxos: prepare/promise per ballot, then accept/accepted per slot.
    MultiPaxos,
}

impl EngineKind {
    pub const ALL: [EngineKind; 2] = [EngineKind::Raft, EngineKind::MultiPaxos];

    /// The name operators write (`consensus.engine`, `--consensus-engine`).
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Raft => "raft",
            EngineKind::MultiPaxos => "multi-paxos",
        }
    }

    /// The engine called `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        for kind in EngineKind::ALL {
            assert_eq!(EngineKind::parse(kind.name()), Some(kind));
        }
        assert_eq!(EngineKind::parse("paxos"), None);
        assert_eq!(EngineKind::parse("Raft"), None);
    }
}
