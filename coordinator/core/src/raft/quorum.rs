//! Quorum arithmetic for a majority of the voters, in one place: the commit index, read rounds,
//! the vote tally and check-quorum all ask it. Membership changes will add joint quorums here.

/// What a tally of votes decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// The highest value that at least `quorum` of `values` reach (each voter's match index, say):
/// the value a majority has.
pub(crate) fn majority_value(values: &mut [u64], quorum: usize) -> u64 {
    assert!(
        (1..=values.len()).contains(&quorum),
        "a quorum of {quorum} among {} values",
        values.len()
    );
    values.sort_unstable_by(|a, b| b.cmp(a));
    let value = values[quorum - 1];
    assert!(
        values.iter().filter(|v| **v >= value).count() >= quorum,
        "a majority value is reached by a quorum"
    );
    value
}

/// Whether `count` of the voters (this node included) make a quorum.
pub(crate) fn is_quorum(count: usize, quorum: usize) -> bool {
    count >= quorum
}

/// The outcome of an election among `voters`, with `granted` and `rejected` answers so far
/// (this node's own vote among the granted).
pub(crate) fn vote_result(
    granted: usize,
    rejected: usize,
    quorum: usize,
    voters: usize,
) -> VoteResult {
    assert!(
        granted + rejected <= voters,
        "{granted} granted and {rejected} rejected among {voters} voters"
    );
    let won = granted >= quorum;
    // Lost once too few voters remain to make up a quorum.
    let lost = rejected > voters - quorum;
    assert!(!(won && lost), "an election cannot be won and lost at once");
    match (won, lost) {
        (true, _) => VoteResult::Won,
        (_, true) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_majority_value_is_the_quorum_th_highest() {
        assert_eq!(majority_value(&mut [5, 9, 7], 2), 7);
        assert_eq!(majority_value(&mut [1, 1, 8, 8, 3], 3), 3);
        assert_eq!(majority_value(&mut [4], 1), 4);
    }

    #[test]
    fn elections_are_won_by_a_quorum_and_lost_when_one_is_out_of_reach() {
        assert_eq!(vote_result(2, 0, 2, 3), VoteResult::Won);
        assert_eq!(vote_result(1, 1, 2, 3), VoteResult::Pending);
        assert_eq!(vote_result(1, 2, 2, 3), VoteResult::Lost);
        assert_eq!(vote_result(2, 2, 3, 5), VoteResult::Pending);
        assert_eq!(vote_result(2, 3, 3, 5), VoteResult::Lost);
        assert_eq!(vote_result(1, 0, 1, 1), VoteResult::Won);
    }
}
