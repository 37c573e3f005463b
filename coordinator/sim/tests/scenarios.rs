//! Named regression scenarios, each a scripted run of real cores in the simulator with every
//! safety checker on. Each says why it exists.

use std::cell::RefCell;
use std::collections::BTreeSet;

use ordo_common::client::ClientResponse;
use ordo_core::{Body, Config, MembershipChange, MembershipError, Message, Role};
use ordo_sim::cluster::{Cluster, ClusterOptions, address_of};

fn cluster(nodes: usize, configure: impl Fn(&mut Config) + 'static) -> Cluster {
    cluster_with_spares(nodes, 0, configure)
}

/// A cluster of `nodes` voters, and `spares` more nodes that may be added later.
fn cluster_with_spares(
    nodes: usize,
    spares: usize,
    configure: impl Fn(&mut Config) + 'static,
) -> Cluster {
    let mut options = ClusterOptions::calm(nodes, 7);
    options.spares = spares;
    options.configure = Box::new(configure);
    Cluster::new(options)
}

fn assert_safe(cluster: &Cluster) {
    if let Some(violation) = cluster.violation() {
        panic!("safety violation: {violation}\n{}", cluster.describe());
    }
}

/// Elects `id` (campaigning until it wins) and waits until every live node applied its no-op.
fn elect(cluster: &mut Cluster, id: u64) {
    for _ in 0..20 {
        cluster.campaign(id);
        if cluster.run_until(40, |c| c.leader() == Some(id)) {
            break;
        }
    }
    assert_eq!(cluster.leader(), Some(id), "{}", cluster.describe());
    let commit = |c: &Cluster| c.node(id).unwrap().commit_index();
    assert!(cluster.run_until(100, |c| commit(c)
        == c.node(id).unwrap().last_log_id().index));
    assert_safe(cluster);
}

fn is_append_from(message: &Message, from: u64, sender: u64) -> bool {
    from == sender && matches!(message.body, Body::Append { .. })
}

fn is_vote_from(message: &Message, from: u64, senders: &[u64]) -> bool {
    senders.contains(&from) && matches!(message.body, Body::Vote { .. })
}

/// Raft paper, Figure 8: an entry from an earlier term that sits on a majority must not be
/// committed by counting replicas; a later leader may legitimately overwrite it. With the rule
/// broken, S1 commits (2, t1) in step 4 and S5 overwrites it in step 5, which the checker reports
/// as a leader-completeness or state-machine-safety violation.
#[test]
fn figure_8_old_term_entry_on_a_majority_is_not_committed_by_counting() {
    let mut c = cluster(5, |config| config.append_entries_max = 1);
    // 1. S1 leads; index 1 (its no-op) is committed everywhere.
    elect(&mut c, 1);
    let t1 = c.node(1).unwrap().term();
    // 2. S1 appends index 2 and replicates it to S2 only.
    for other in [3, 4, 5] {
        c.network.cut_both_ways(1, other);
    }
    let index_2 = c.propose(1, 16).expect("S1 leads");
    assert_eq!(index_2.index, 2);
    assert!(c.run_until(50, |c| c.durable_log(2).len() >= 2));
    // 3. S1 crashes. S5 wins with S3 and S4 and appends its own index 2, which reaches no one.
    c.crash(1);
    c.heal();
    c.isolate(2);
    c.set_filter(Some(Box::new(|from, _, m| {
        is_append_from(m, from, 5) || is_vote_from(m, from, &[3, 4])
    })));
    assert!(
        c.run_until(400, |c| c.leader() == Some(5)),
        "{}",
        c.describe()
    );
    let t2 = c.node(5).unwrap().term();
    assert!(t2 > t1);
    c.crash(5);
    // 4. S1 restarts and wins term t3 with S2, S3, S4; it replicates (2, t1) to S3 and S4 but
    //    its own term's no-op (index 3) reaches no one. (2, t1) now sits on S1..S4.
    c.heal();
    c.restart(1);
    // S1's first append to S3 and S4 probes at index 2, which they lack: let that one through
    // so they reject it and S1 backs off to send them (2, t1); drop every later one carrying 3.
    let probed = RefCell::new(BTreeSet::new());
    c.set_filter(Some(Box::new(move |from, to, m| {
        let carries_index_3 =
            matches!(&m.body, Body::Append { entries, .. } if entries.iter().any(|e| e.index >= 3));
        let held_back = from == 1
            && carries_index_3
            && !((to == 3 || to == 4) && probed.borrow_mut().insert(to));
        held_back || is_vote_from(m, from, &[2, 3, 4])
    })));
    assert!(
        c.run_until(400, |c| c.leader() == Some(1)),
        "{}",
        c.describe()
    );
    let on_majority = |c: &Cluster| {
        [1, 2, 3, 4]
            .iter()
            .all(|id| c.durable_log(*id).get(1).is_some_and(|e| e.term == t1))
    };
    assert!(c.run_until(100, on_majority), "{}", c.describe());
    c.run(20);
    assert!(
        c.node(1).unwrap().commit_index() < 2,
        "S1 committed an entry of an earlier term by counting replicas"
    );
    // 5. S1 crashes; S5 restarts and wins with S2..S4 (its last entry has the newer term) and
    //    overwrites index 2 everywhere. Legal, because (2, t1) was never committed.
    c.crash(1);
    c.restart(5);
    c.set_filter(Some(Box::new(|from, _, m| {
        is_vote_from(m, from, &[2, 3, 4])
    })));
    assert!(
        c.run_until(400, |c| c.leader() == Some(5)),
        "{}",
        c.describe()
    );
    // 6. Everyone back: the cluster converges on S5's index 2.
    c.set_filter(None);
    c.restart(1);
    assert!(c.run_until(600, Cluster::converged), "{}", c.describe());
    assert_safe(&c);
    assert_eq!(c.node(3).unwrap().entry(2).unwrap().term, t2);
    assert_eq!(
        c.oracle.acknowledged, 0,
        "the overwritten proposal was never acknowledged"
    );
}

/// A 5-node cluster where only the link between the leader and one follower is cut. The cut
/// follower cannot hear the leader and times out, but pre-vote and the leader lease on the
/// other followers keep it from ever bumping the term, so the leader stays and keeps
/// committing. The same cut with both features off disrupts the leader (the contrast test),
/// which proves the scenario exercises them.
#[test]
fn five_node_partial_partition_keeps_one_stable_leader() {
    let (terms_changed, commits) = partial_partition_run(true);
    assert!(
        !terms_changed,
        "pre-vote + check-quorum let the cut follower disrupt the leader"
    );
    assert!(commits > 100);
}

#[test]
fn partial_partition_without_pre_vote_and_check_quorum_disrupts_the_leader() {
    let (terms_changed, _) = partial_partition_run(false);
    assert!(
        terms_changed,
        "expected the cut follower to force new elections"
    );
}

fn partial_partition_run(protections: bool) -> (bool, u64) {
    let mut c = cluster(5, move |config| {
        config.pre_vote = protections;
        config.check_quorum = protections;
    });
    elect(&mut c, 1);
    let term = c.node(1).unwrap().term();
    let commit_before = c.node(1).unwrap().commit_index();
    c.network.cut_both_ways(1, 2);
    let mut changed = false;
    for tick in 0..1_000 {
        if tick % 5 == 0
            && let Some(leader) = c.leader()
        {
            let _ = c.propose(leader, 8);
        }
        c.tick();
        changed |= c.max_term() != term || c.leader() != Some(1);
    }
    assert_safe(&c);
    let commits = c.node(1).unwrap().commit_index() - commit_before;
    (changed, commits)
}

/// A follower cut off long enough to raise its term (here it runs without pre-vote, as a node of
/// an older version might) rejoins. Its higher term makes the leader step down, but its stale
/// log cannot win, so one of the up-to-date nodes leads the new term; nothing acknowledged is
/// lost and the rejoined follower catches up.
#[test]
fn partitioned_follower_rejoins_with_a_higher_term() {
    let mut c = cluster(3, |config| config.pre_vote = config.id != 3);
    elect(&mut c, 1);
    c.isolate(3);
    for _ in 0..10 {
        c.propose(1, 32).expect("leader");
    }
    c.run(300);
    let rejoining_term = c.node(3).unwrap().term();
    assert!(
        rejoining_term > c.node(1).unwrap().term() + 3,
        "{}",
        c.describe()
    );
    assert!(c.oracle.acknowledged >= 10);
    c.heal();
    assert!(c.run_until(800, Cluster::converged), "{}", c.describe());
    assert_safe(&c);
    let leader = c.leader().unwrap();
    assert_ne!(leader, 3, "a node with a stale log won an election");
    assert!(c.node(leader).unwrap().term() > rejoining_term);
    assert_eq!(
        c.node(3).unwrap().last_log_id(),
        c.node(leader).unwrap().last_log_id()
    );
}

/// A leader cut off with a minority keeps accepting proposals into its log but must never
/// commit them; check-quorum makes it step down; the majority elects a new leader; after the
/// heal the old leader's uncommitted entries are overwritten and their proposals reported lost.
#[test]
fn leader_isolated_with_a_minority_does_not_commit() {
    let mut c = cluster(5, |_| {});
    elect(&mut c, 1);
    let old_term = c.node(1).unwrap().term();
    let commit_before = c.node(1).unwrap().commit_index();
    c.split(&[1, 2]);
    for _ in 0..5 {
        c.propose(1, 8).expect("still believes it leads");
    }
    let mut stepped_down_at = None;
    for tick in 0..100 {
        c.tick();
        assert_eq!(
            c.node(1).unwrap().commit_index(),
            commit_before,
            "minority leader committed"
        );
        if stepped_down_at.is_none() && c.node(1).unwrap().role() != Role::Leader {
            stepped_down_at = Some(tick);
        }
    }
    let stepped_down_at = stepped_down_at.expect("check-quorum did not depose the cut-off leader");
    assert!(
        stepped_down_at <= 2 * 10,
        "stepped down after {stepped_down_at} ticks"
    );
    let new_leader = c.leader().expect("the majority side elects a leader");
    assert!([3, 4, 5].contains(&new_leader));
    assert!(c.node(new_leader).unwrap().term() > old_term);
    c.heal();
    // Fill the old leader's indexes with committed entries: that settles its proposals' fate.
    for _ in 0..5 {
        c.propose(new_leader, 8).expect("new leader accepts");
    }
    assert!(c.run_until(600, Cluster::converged), "{}", c.describe());
    assert_safe(&c);
    assert_eq!(
        c.oracle.lost, 5,
        "the minority leader's proposals must be reported lost"
    );
    assert_eq!(c.oracle.acknowledged, 5);
}

/// Leadership moves on request while clients keep proposing and reading: the target takes over
/// within an election timeout (no timeout gap), nothing acknowledged is lost, reads stay
/// linearizable, and "most up-to-date follower" works as a target.
#[test]
fn leader_transfer_under_load() {
    let mut c = cluster(3, |_| {});
    elect(&mut c, 1);
    let load = |c: &mut Cluster, ticks: u64| {
        for _ in 0..ticks {
            if let Some(leader) = c.leader() {
                let _ = c.propose(leader, 64);
                let _ = c.propose(leader, 64);
                let _ = c.read(leader);
            }
            c.tick();
        }
    };
    load(&mut c, 30);
    let term = c.node(1).unwrap().term();
    assert_eq!(c.transfer(1, Some(2)), Ok(2));
    let mut handed_over = None;
    for tick in 0..40 {
        load(&mut c, 1);
        if c.leader() == Some(2) {
            handed_over = Some(tick);
            break;
        }
    }
    let handed_over = handed_over.expect("transfer did not complete");
    assert!(
        handed_over < 10,
        "took {handed_over} ticks, an election timeout or more"
    );
    assert_eq!(c.node(2).unwrap().term(), term + 1);
    load(&mut c, 30);
    let target = c
        .transfer(2, None)
        .expect("transfer to the most up-to-date follower");
    assert!(
        c.run_until(20, |c| c.leader() == Some(target)),
        "{}",
        c.describe()
    );
    load(&mut c, 30);
    assert!(c.run_until(300, Cluster::converged));
    assert_safe(&c);
    assert!(c.oracle.acknowledged > 150, "{}", c.oracle.acknowledged);
    assert!(
        c.batches.statuses_served > 50,
        "{}",
        c.batches.statuses_served
    );
}

/// Reads started on a leader that is then cut off never succeed: it cannot confirm its
/// leadership, and stepping down fails them so the client retries elsewhere.
#[test]
fn read_on_a_deposed_leader_fails_instead_of_returning_stale_data() {
    let mut c = cluster(3, |_| {});
    elect(&mut c, 1);
    c.isolate(1);
    let read = c.read(1).expect("leader accepts the read");
    c.run(40);
    assert_eq!(
        c.batches.statuses_served, 0,
        "read {read} was served without a quorum"
    );
    assert_ne!(c.node(1).unwrap().role(), Role::Leader);
    assert!(matches!(c.read(1), Err(ClientResponse::NotLeader { .. })));
    assert_safe(&c);
}

// ----- membership changes -----

fn add(id: u64, promote: bool) -> MembershipChange {
    MembershipChange::AddLearner {
        id,
        address: address_of(id),
        promote,
    }
}

fn voters(cluster: &Cluster, at: u64) -> Vec<u64> {
    let raft = cluster.node(at).expect("up");
    raft.membership().voters.iter().copied().collect()
}

/// Grow 3 → 5 through learners promoted once caught up, remove the leader (it hands over and
/// never campaigns again), shrink back to 3, and find a removed id refused for good. Batches
/// commit throughout, and every node that is still a member converges.
#[test]
fn a_cluster_grows_to_five_loses_its_leader_by_removal_and_shrinks_to_three() {
    let mut c = cluster_with_spares(3, 2, |_| {});
    elect(&mut c, 1);
    for _ in 0..20 {
        c.propose(1, 32).expect("node 1 leads");
    }
    // A follower refuses; the leader accepts, one change at a time.
    assert!(matches!(
        c.change_membership(2, add(4, true)),
        Err(MembershipError::NotLeader { .. })
    ));
    c.change_membership(1, add(4, true)).expect("add 4");
    assert!(matches!(
        c.change_membership(1, add(5, true)),
        Err(MembershipError::ChangeInProgress { .. })
    ));
    // The learner catches up and the leader promotes it by itself.
    assert!(
        c.run_until(500, |c| voters(c, 1) == [1, 2, 3, 4] && c.converged()),
        "{}",
        c.describe()
    );
    c.change_membership(1, add(5, true)).expect("add 5");
    assert!(
        c.run_until(500, |c| voters(c, 1).len() == 5 && c.converged()),
        "{}",
        c.describe()
    );
    // Remove the leader: it commits its own removal, hands over, and steps down.
    let term_before = c.node(1).unwrap().term();
    c.change_membership(1, MembershipChange::Remove { id: 1 })
        .expect("remove the leader");
    assert!(
        c.run_until(500, |c| c.leader().is_some_and(|l| l != 1) && c.converged()),
        "{}",
        c.describe()
    );
    let leader = c.leader().unwrap();
    assert_eq!(voters(&c, leader), [2, 3, 4, 5]);
    let term_after = c.node(leader).unwrap().term();
    assert!(term_after > term_before);
    // The removed node never campaigns again and cannot disturb the others.
    c.run(400);
    assert_eq!(c.leader(), Some(leader), "{}", c.describe());
    assert_eq!(c.node(leader).unwrap().term(), term_after);
    assert_ne!(c.node(1).unwrap().role(), Role::Leader);
    assert!(!c.node(1).unwrap().as_raft().unwrap().is_voter());
    // Shrink to three; the cluster still commits.
    let victim = if leader == 2 { 3 } else { 2 };
    c.change_membership(leader, MembershipChange::Remove { id: victim })
        .expect("remove a follower");
    let index = c.propose(leader, 32).expect("the leader leads").index;
    assert!(
        c.run_until(500, |c| c.converged()
            && c.node(leader).unwrap().commit_index() >= index),
        "{}",
        c.describe()
    );
    assert_eq!(voters(&c, leader).len(), 3);
    // Ids are never reused.
    assert_eq!(
        c.change_membership(leader, add(1, false)),
        Err(MembershipError::Retired(1))
    );
    assert_safe(&c);
}

/// Ongaro's 2015 counter-example (raft-dev), shaped for learners: C0 = {1,2,3,4} voters and 5
/// a learner. S1 promotes S5 (C1: five voters) and only S5 hears it; S1 goes offline. S2 wins
/// the next term with S3 and S4 and removes S1 (C2: {2,3,4}); its entries reach S3 only, which
/// is a majority of C2. S1 comes back and wins with S4 and S5, a majority of C1, and overwrites
/// S2's committed entries. The rule that a leader changes the membership only after an entry
/// of its own term has committed stops S2 (its no-op is on two of C0's four voters), and the
/// run stays safe. Returns the violation the run hit, if any.
fn ongaro_counterexample(plant: bool) -> Option<String> {
    let mut c = cluster_with_spares(3, 2, move |config| {
        config.plant_config_before_term_commit = plant;
    });
    elect(&mut c, 1);
    c.change_membership(1, add(4, true)).expect("add 4");
    assert!(c.run_until(500, |c| voters(c, 1).len() == 4 && c.converged()));
    c.change_membership(1, add(5, false)).expect("add 5");
    assert!(c.run_until(500, |c| {
        c.converged() && c.node(1).unwrap().membership().learners.contains(&5)
    }));
    // 1. S1 promotes S5; only S5 receives the entry.
    for other in [2, 3, 4] {
        c.network.cut_both_ways(1, other);
    }
    let c1 = c
        .change_membership(1, MembershipChange::Promote { id: 5 })
        .expect("promote 5");
    assert!(c.run_until(100, |c| c.durable_log(5).len() as u64 >= c1.index));
    // 2. S1 goes offline. S2 wins with S3 and S4; nothing of S2's reaches S4 afterwards.
    c.crash(1);
    c.heal();
    c.isolate(5);
    c.set_filter(Some(Box::new(|from, to, message| {
        from == 2
            && to == 4
            && matches!(
                message.body,
                ordo_core::Body::Append { .. } | ordo_core::Body::Heartbeat { .. }
            )
    })));
    for _ in 0..20 {
        c.campaign(2);
        if c.run_until(60, |c| c.leader() == Some(2)) {
            break;
        }
    }
    assert_eq!(c.leader(), Some(2), "{}", c.describe());
    c.run(5);
    // 3. S2 removes S1 at once.
    let removal = c.change_membership(2, MembershipChange::Remove { id: 1 });
    if plant {
        let c2 = removal.expect("the planted bug lets S2 change the membership");
        assert!(c.run_until(100, |c| c.node(2).unwrap().commit_index() >= c2.index));
    } else {
        assert_eq!(removal, Err(MembershipError::TermNotStarted));
    }
    // 4. S2 and S3 are cut off; S1 returns and campaigns under C1 with S4 and S5.
    c.set_filter(None);
    c.heal();
    for a in [2, 3] {
        for b in [1, 4, 5] {
            c.network.cut_both_ways(a, b);
        }
    }
    c.restart(1);
    let s1_leads = |c: &Cluster| c.node(1).is_some_and(|r| r.role() == Role::Leader);
    for _ in 0..20 {
        if c.violation().is_some() || c.run_until(100, s1_leads) {
            break;
        }
        c.campaign(1);
    }
    // 5. Everyone back together.
    c.heal();
    c.run_until(1000, |c| c.violation().is_some() || c.converged());
    c.violation().map(|violation| violation.to_string())
}

#[test]
fn ongaro_counterexample_is_safe_because_changes_wait_for_the_terms_first_commit() {
    assert_eq!(ongaro_counterexample(false), None);
}

#[test]
fn ongaro_counterexample_breaks_safety_without_the_rule() {
    let violation = ongaro_counterexample(true)
        .expect("the planted bug (a configuration before the term's first commit) went unnoticed");
    // S1 wins under C1 without the entries S2 committed under C2.
    assert!(
        violation.contains("leader completeness") || violation.contains("committed prefix"),
        "{violation}"
    );
}
