//! Membership changes, one server at a time (Raft thesis §4.3), and the configurations a node's
//! log holds.
//!
//! A configuration entry is in force on a node from the moment the node appends it, and is
//! undone if the entry is truncated. Because every change adds or removes at most one voter, the
//! majorities of the old and the new configuration always overlap. Two rules keep that true
//! across leaders (Ongaro's 2015 correction): a leader appends a configuration only after an
//! entry of its own term has committed, and only while no other configuration is uncommitted.

use ordo_common::{LogIndex, Membership};

/// The configurations of a node's log: the latest at or below the commit index, and those
/// appended after it (which a new leader may still truncate).
#[derive(Clone, Debug)]
pub(crate) struct Configs {
    committed: (LogIndex, Membership),
    pending: Vec<(LogIndex, Membership)>,
}

impl Configs {
    pub(crate) fn new(index: LogIndex, membership: Membership) -> Self {
        Self {
            committed: (index, membership),
            pending: Vec::new(),
        }
    }

    /// The membership in force: the latest configuration in the log.
    pub(crate) fn effective(&self) -> &Membership {
        self.pending
            .last()
            .map_or(&self.committed.1, |(_, membership)| membership)
    }

    /// The latest configuration at or below the commit index: final, never truncated.
    pub(crate) fn committed(&self) -> &Membership {
        &self.committed.1
    }

    /// The index of the configuration in force (0 for the bootstrap membership).
    pub(crate) fn effective_index(&self) -> LogIndex {
        self.pending
            .last()
            .map_or(self.committed.0, |(index, _)| *index)
    }

    /// The first configuration appended and not yet committed, if any.
    pub(crate) fn uncommitted(&self) -> Option<LogIndex> {
        self.pending.first().map(|(index, _)| *index)
    }

    pub(crate) fn append(&mut self, index: LogIndex, membership: Membership) {
        assert!(
            index > self.effective_index(),
            "configurations are appended in log order"
        );
        self.pending.push((index, membership));
    }

    /// Undoes the configurations at or after `index` (their entries were truncated).
    pub(crate) fn truncate_from(&mut self, index: LogIndex) {
        assert!(index > self.committed.0, "a committed configuration stays");
        self.pending.retain(|(at, _)| *at < index);
    }

    /// Entries through `index` are committed.
    pub(crate) fn commit_to(&mut self, index: LogIndex) {
        while let Some((at, _)) = self.pending.first()
            && *at <= index
        {
            self.committed = self.pending.remove(0);
        }
    }

    /// A snapshot through `index`, taken under `membership`, replaced the log up to `index`;
    /// configurations after it stay only when the log after it was kept.
    pub(crate) fn install(&mut self, index: LogIndex, membership: Membership, keep_suffix: bool) {
        if keep_suffix {
            self.pending.retain(|(at, _)| *at > index);
        } else {
            self.pending.clear();
        }
        self.committed = (index, membership);
    }
}

#[cfg(test)]
mod tests {
    use ordo_common::membership::MembershipChange;

    use super::*;

    fn three() -> Membership {
        Membership {
            voters: [1, 2, 3].into(),
            ..Membership::default()
        }
    }

    #[test]
    fn the_latest_configuration_rules_and_truncation_undoes_it() {
        let mut configs = Configs::new(0, three());
        let four = MembershipChange::AddLearner {
            id: 4,
            address: "a:4".into(),
            promote: false,
        }
        .apply(&three())
        .unwrap();
        configs.append(7, four.clone());
        assert_eq!(configs.effective(), &four);
        assert_eq!(configs.uncommitted(), Some(7));
        configs.truncate_from(7);
        assert_eq!(configs.effective(), &three());
        configs.append(9, four.clone());
        configs.commit_to(8);
        assert_eq!(configs.uncommitted(), Some(9));
        configs.commit_to(9);
        assert_eq!(configs.uncommitted(), None);
        assert_eq!(configs.effective(), &four);
        configs.install(20, three(), false);
        assert_eq!(
            (configs.effective(), configs.effective_index()),
            (&three(), 20)
        );
    }
}
