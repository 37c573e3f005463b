//! Membership changes on real `ordo serve` processes, driven through the real `ordo member`
//! CLI, with producers and subscribers running throughout and the history checker reading
//! what they recorded: a cluster grows from 3 to 5, loses its leader by removal, replaces a
//! node with a new id on an empty data directory (which catches up by snapshot), shrinks back
//! to 3, and no acknowledged batch is lost, duplicated, torn or reordered.

mod support;

use std::time::Duration;

use ordo_common::NodeId;
use ordo_common::client::NodeRole;
use support::history::{self, Workload, WorkloadOptions};
use support::members::{
    MEMBERSHIP_TIMEOUT as TIMEOUT, add_node, change, leader_of, member, member_list, voters,
    wait_for_voters,
};
use support::{ClusterOptions, TestCluster, wait_until};

/// The most entries a node keeps in these runs.
const RETAINED_ENTRIES_MAX: u64 = 1_500;

/// Small retention and a small in-memory window, so that a node added late cannot be sent the
/// log from its start and must install a snapshot.
fn compacting(nodes: u64) -> ClusterOptions {
    let mut options = ClusterOptions::fast(nodes);
    options.environment = vec![
        // More than a subscriber falls behind while it moves off a node that was removed.
        (
            "ORDO_RETENTION_ENTRIES_MAX".into(),
            RETAINED_ENTRIES_MAX.to_string(),
        ),
        ("ORDO_RETENTION_TRAILING_ENTRIES".into(), "50".into()),
        // The leader's in-memory window would otherwise still hold what the disk let go.
        ("ORDO_RAFT_LOG_WINDOW_BYTES_MAX".into(), "16KiB".into()),
    ];
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_grows_replaces_its_leader_and_a_node_and_shrinks_under_load() {
    let mut cluster = TestCluster::start_with(compacting(3));
    cluster.wait_for_leader(TIMEOUT).await;
    let options = WorkloadOptions {
        producers: 3,
        subscribers: 2,
        pause: Duration::from_millis(5),
        ..WorkloadOptions::default()
    };
    let workload = Workload::start(&cluster, options, 13).await;
    workload.wait_for_progress(30, TIMEOUT).await;

    // Grow 3 -> 5, one node at a time.
    let four = add_node(&mut cluster, &[1, 2, 3, 4]).await;
    // Twice the retained entries: the log node 5 needs from its start is gone by then.
    workload
        .wait_for_progress(2 * RETAINED_ENTRIES_MAX, TIMEOUT)
        .await;
    let five = add_node(&mut cluster, &[1, 2, 3, 4, 5]).await;
    workload.wait_for_progress(20, TIMEOUT).await;
    assert_eq!((four, five), (4, 5));
    // The node that joined last installed a snapshot: the log it needed was compacted away.
    assert!(
        cluster.log(five).contains("installed a snapshot"),
        "node {five} caught up without a snapshot:\n{}",
        cluster.log(five)
    );

    // Remove the leader: it hands over, and the rest go on without it.
    let list = member_list(&cluster).expect("member list");
    let old_leader = leader_of(&list).expect("a leader");
    change(&cluster, &["remove", &old_leader.to_string()]);
    let remaining: Vec<NodeId> = [1, 2, 3, 4, 5]
        .into_iter()
        .filter(|id| *id != old_leader)
        .collect();
    let list = wait_for_voters(&cluster, &remaining).await;
    assert_ne!(leader_of(&list), Some(old_leader));
    workload.wait_for_progress(20, TIMEOUT).await;
    // The removed node, still running, cannot disturb the others: the term stays.
    let new_leader = leader_of(&list).expect("a leader");
    let term = cluster.status(new_leader).await.expect("status").term;
    tokio::time::sleep(cluster.election_timeout() * 4).await;
    let status = cluster.status(new_leader).await.expect("status");
    assert_eq!(
        (status.term, status.role),
        (term, NodeRole::Leader),
        "the removed node disturbed the cluster"
    );
    // Its id is never reused.
    let (code, _, stderr) = member(&cluster, &["add", &old_leader.to_string(), "127.0.0.1:1"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("never reused"), "{stderr}");
    cluster.stop(old_leader, TIMEOUT).await;
    cluster.forget(old_leader);

    // Replace a follower: remove it, and add a new id on an empty data directory.
    let leader = leader_of(&member_list(&cluster).expect("member list")).expect("a leader");
    // An original node, so that the next step can keep one (the workload's clients know only
    // the original addresses and learn the others from leader hints).
    let replaced = remaining
        .iter()
        .copied()
        .find(|id| *id != leader && *id <= 3)
        .expect("an original follower");
    change(&cluster, &["remove", &replaced.to_string()]);
    let without: Vec<NodeId> = remaining
        .iter()
        .copied()
        .filter(|id| *id != replaced)
        .collect();
    wait_for_voters(&cluster, &without).await;
    cluster.stop(replaced, TIMEOUT).await;
    cluster.forget(replaced);
    let mut with_new = without.clone();
    with_new.push(6);
    let six = add_node(&mut cluster, &with_new).await;
    assert_eq!(six, 6);
    workload.wait_for_progress(20, TIMEOUT).await;

    // Shrink to 3.
    let leader = leader_of(&member_list(&cluster).expect("member list")).expect("a leader");
    let shrunk = with_new
        .iter()
        .copied()
        .find(|id| *id != leader && *id > 3)
        .expect("a follower that joined");
    change(&cluster, &["remove", &shrunk.to_string()]);
    let three: Vec<NodeId> = with_new
        .iter()
        .copied()
        .filter(|id| *id != shrunk)
        .collect();
    wait_for_voters(&cluster, &three).await;
    cluster.stop(shrunk, TIMEOUT).await;
    cluster.forget(shrunk);
    workload.wait_for_progress(20, TIMEOUT).await;

    let history = workload.finish(TIMEOUT).await;
    let problems = history::check(&history);
    assert!(
        problems.is_empty(),
        "{}\n{}",
        history.summary(),
        problems.join("\n")
    );
    eprintln!("{}", history.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_changes_are_refused_with_their_reason() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(TIMEOUT).await;
    // A voter that was never started would leave 4 voters with 3 reachable: allowed (3 make
    // the quorum of 4) but it cannot be promoted until it has caught up.
    let (code, _, stderr) = member(&cluster, &["add", "9", "127.0.0.1:9", "--learner"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = member(&cluster, &["promote", "9"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("has not caught up"), "{stderr}");
    // Removing a node that is not a member, or the last learner twice, names the reason.
    let (code, _, stderr) = member(&cluster, &["remove", "8"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("is not a member"), "{stderr}");
    change(&cluster, &["remove", "9"]);
    // With one voter down, removing another would leave one reachable voter of two.
    let list = member_list(&cluster).expect("member list");
    let leader = leader_of(&list).expect("a leader");
    let followers: Vec<NodeId> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    cluster.kill9(followers[0]);
    wait_until(TIMEOUT, "the leader to see the dead follower", async || {
        let list = member_list(&cluster)?;
        let dead = list
            .iter()
            .find(|member| member["id"].as_u64() == Some(followers[0]))
            .ok_or("no such member")?;
        if dead["reachable"] == false {
            Ok(())
        } else {
            Err(format!("{list:?}"))
        }
    })
    .await;
    let (code, _, stderr) = member(&cluster, &["remove", &followers[1].to_string()]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("reachable voters"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holding_another_clusters_data_is_refused() {
    let mut ours = TestCluster::start(3);
    ours.wait_for_leader(TIMEOUT).await;
    let mut theirs = TestCluster::start(1);
    theirs.wait_for_leader(TIMEOUT).await;
    theirs.stop(1, TIMEOUT).await;
    // A node of ours whose data directory holds the other cluster's data.
    let id = ours.prepare_joining_node();
    copy_dir(theirs.data_dir(1), ours.data_dir(id));
    let mark = ours.log_mark(id);
    ours.restart(id);
    let status = ours.wait_exit(id, TIMEOUT).await;
    assert!(!status.success());
    let log = ours.log_since(id, mark);
    assert!(log.contains("belongs to cluster"), "{log}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create the target directory");
    for entry in std::fs::read_dir(from).expect("read the directory") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy a file");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_is_refused_and_replaced_under_a_new_id() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(TIMEOUT).await.id;
    let acks = cluster.propose_many(leader, "before", 20).await;
    cluster
        .wait_for_caught_up(acks.last().unwrap().index, TIMEOUT)
        .await;
    // A follower's disk dies: it comes back, same id and address, with nothing.
    let victim = cluster.others(leader)[0];
    cluster.kill9(victim);
    std::fs::remove_dir_all(cluster.data_dir(victim)).expect("wipe the data directory");
    let mark = cluster.log_mark(victim);
    cluster.restart(victim);
    // Its peers refuse it, and it stops, saying which commands replace it.
    let exit = cluster.wait_exit(victim, TIMEOUT).await;
    assert!(!exit.success(), "{exit:?}");
    let log = cluster.log_since(victim, mark);
    let line = log
        .lines()
        .find(|line| line.contains("lost its data") && line.contains("ordo member remove"))
        .unwrap_or_else(|| panic!("no refusal naming the commands:\n{log}"));
    assert!(line.contains(&format!("node {victim}")), "{line}");
    // The others commit without it.
    let more = cluster.propose_many(leader, "after", 10).await;
    // The operator follows the advice: remove it, add a new id on an empty data directory.
    change(&cluster, &["remove", &victim.to_string()]);
    cluster.forget(victim);
    let mut expected: Vec<NodeId> = cluster.ids();
    expected.push(4);
    let new = add_node(&mut cluster, &expected).await;
    assert_eq!(new, 4);
    cluster
        .wait_for_caught_up(more.last().unwrap().index, TIMEOUT)
        .await;
    let all: Vec<_> = acks.into_iter().chain(more).collect();
    cluster.stop_all(TIMEOUT).await;
    cluster.assert_acknowledged_writes_stored(&all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_with_learner_stays_one_until_promoted_by_hand() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(TIMEOUT).await.id;
    cluster.propose_many(leader, "before", 20).await;
    let id = cluster.prepare_joining_node();
    cluster.restart(id);
    let address = cluster.address(id).to_string();
    let (code, stdout, stderr) = member(&cluster, &["add", &id.to_string(), &address, "--learner"]);
    assert_eq!(code, 0, "{stderr}");
    let added: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(added["learners"], serde_json::json!([id]), "{stdout}");
    // Caught up, it stays a learner: nobody promotes it but the operator.
    wait_until(TIMEOUT, "the learner to catch up", async || {
        let list = member_list(&cluster)?;
        let learner = list
            .iter()
            .find(|member| member["id"].as_u64() == Some(id))
            .ok_or("not listed")?;
        let caught_up = learner["role"] == "learner"
            && learner["reachable"] == true
            && learner["behind"].as_u64() == Some(0);
        if caught_up {
            Ok(())
        } else {
            Err(format!("{list:?}"))
        }
    })
    .await;
    tokio::time::sleep(cluster.election_timeout() * 2).await;
    let list = member_list(&cluster).expect("member list");
    assert_eq!(voters(&list), [1, 2, 3], "{list:?}");
    change(&cluster, &["promote", &id.to_string()]);
    wait_for_voters(&cluster, &[1, 2, 3, id]).await;
}

/// A node started with `--join` while the cluster has no leader (its leader and one follower
/// frozen: the node left answers `NotLeader` without a hint) keeps asking instead of giving up,
/// and joins once a leader is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joining_while_the_cluster_has_no_leader_waits_for_one() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(TIMEOUT).await.id;
    let frozen = [leader, cluster.others(leader)[0]];
    let awake = cluster.others(leader)[1];
    let id = cluster.prepare_joining_node();
    for node in frozen {
        cluster.sigstop(node);
    }
    wait_until(TIMEOUT, "the awake node to know no leader", async || {
        let status = cluster.status(awake).await?;
        match status.leader {
            None => Ok(()),
            Some(leader) => Err(format!("still follows {leader}")),
        }
    })
    .await;
    let mark = cluster.log_mark(id);
    cluster.restart(id);
    // A whole round over the three addresses failed, and the node asks again.
    cluster
        .wait_for_log(id, mark, &["no member list yet"], TIMEOUT)
        .await;
    for node in frozen {
        cluster.sigcont(node);
    }
    let address = cluster.address(id).to_string();
    wait_until(TIMEOUT, "the leader to add the joined node", async || {
        let (code, _, stderr) = member(&cluster, &["add", &id.to_string(), &address]);
        (code == 0).then_some(()).ok_or(stderr)
    })
    .await;
    wait_for_voters(&cluster, &[1, 2, 3, id]).await;
    let log = cluster.log_since(id, mark);
    assert!(!log.contains("cannot join"), "{log}");
}
