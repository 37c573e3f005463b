//! Issue 4, with real `ordo serve` processes on loopback: a cluster elects one leader that
//! `ordo status` shows every node agreeing on; it survives a kill -9 of its leader, and a
//! SIGTERM'd leader hands leadership over before it exits; a restarted node rejoins as a
//! follower and catches up; no acknowledged write is lost along the way (checked in the nodes'
//! stored logs, not only in their commit indexes).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ordo_common::NodeId;
use ordo_common::client::{NodeRole, NodeStatus};
use ordo_participant::{Batch, BatchStatus, Client, Message, new_batch_id};
use support::{
    Ack, ClusterOptions, Proposer, TestCluster, elections_between, highest_index, path_str,
    poll_until, run_ordo, run_ordo_checked, wait_until,
};

/// Time for a fresh cluster's processes to start and elect a leader, on a busy machine.
const STARTUP: Duration = Duration::from_secs(30);
/// Time for a node to stop, or for proposals to commit, on a busy machine.
const SETTLE: Duration = Duration::from_secs(30);
/// The frozen-leader test's request and idle timeouts: a wait that only they could end fails it.
const PATIENT: Duration = Duration::from_secs(60);
/// Time for a restarted node to be following and caught up: its peers must notice that it
/// restarted (their connections to its previous process are dead), reconnect, and send it what
/// it missed. Well under the QUIC idle timeout (10 s), which is how long a peer that does not
/// notice a restart keeps writing into the dead connection.
const REJOIN: Duration = Duration::from_secs(5);

#[tokio::test]
async fn three_nodes_elect_one_leader_and_ordo_status_agrees_on_every_node() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(STARTUP).await;
    let followers: Vec<u64> = cluster
        .ids()
        .into_iter()
        .filter(|id| *id != leader.id)
        .collect();
    // The leader counts a peer reachable once it has heard from it within an election timeout.
    wait_until(
        SETTLE,
        "the leader to hear from both followers",
        async || {
            let status = cluster.status(leader.id).await?;
            match status.reachable_peers == followers {
                true => Ok(()),
                false => Err(format!("reachable: {:?}", status.reachable_peers)),
            }
        },
    )
    .await;

    let output = run_ordo_checked(&[
        "status",
        "--json",
        "--endpoints",
        &cluster.endpoints(),
        "--tls-dir",
        path_str(cluster.tls_dir()),
    ]);
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    let mut lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is a JSON object"))
        .collect();
    assert_eq!(
        lines.len(),
        4,
        "one line per node, then the verdict:\n{stdout}"
    );
    let verdict = lines.pop().expect("the verdict");
    assert_eq!(verdict["health"], "ok", "{verdict}");
    assert_eq!(verdict["healthy"], true, "{verdict}");
    assert_eq!(verdict["leader"], leader.id, "{verdict}");
    assert_eq!(verdict["voters"], 3, "{verdict}");
    assert_eq!(verdict["voters_reachable"], 3, "{verdict}");
    let mut ids = BTreeSet::new();
    for line in &lines {
        assert!(line.get("error").is_none(), "a node did not answer: {line}");
        let id = line["id"].as_u64().expect("id");
        ids.insert(id);
        assert_eq!(line["address"], cluster.address(id).to_string(), "{line}");
        assert_eq!(
            line["term"], leader.term,
            "node {id} disagrees on the term: {line}"
        );
        assert_eq!(
            line["leader"], leader.id,
            "node {id} disagrees on the leader: {line}"
        );
        let role = if id == leader.id {
            "leader"
        } else {
            "follower"
        };
        assert_eq!(line["role"], role, "{line}");
        assert!(
            line["lag_entries"].is_u64(),
            "node {id}'s lag in entries: {line}"
        );
    }
    assert_eq!(
        ids,
        cluster.ids().into_iter().collect(),
        "every node answered once"
    );

    // The table form works too, and names the leader.
    let output = run_ordo_checked(&[
        "status",
        "--endpoints",
        &cluster.endpoints(),
        "--tls-dir",
        path_str(cluster.tls_dir()),
    ]);
    let table = String::from_utf8(output.stdout).expect("UTF-8 output");
    let rows: Vec<&str> = table.lines().collect();
    let mut roles: Vec<&str> = rows[1..rows.len() - 1]
        .iter()
        .filter_map(|row| row.split_whitespace().nth(2))
        .collect();
    roles.sort();
    assert_eq!(roles, ["follower", "follower", "leader"], "{table}");
    let verdict = rows.last().expect("a verdict line");
    assert!(
        verdict.starts_with(&format!("health: ok: leader {}", leader.id)),
        "{table}"
    );
}

#[tokio::test]
async fn status_exits_non_zero_without_a_leader_or_a_quorum() {
    let cluster = TestCluster::start_with(ClusterOptions::fast(3));
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    let endpoints = cluster.endpoints();
    let status = |json: bool| {
        let mut arguments = vec![
            "status",
            "--endpoints",
            &endpoints,
            "--tls-dir",
            path_str(cluster.tls_dir()),
        ];
        if json {
            arguments.push("--json");
        }
        run_ordo(&arguments)
    };
    // Stop both followers: the leader steps down once it hears from no majority (check
    // quorum), and the one node that answers knows no leader.
    let followers = cluster.others(leader);
    for id in &followers {
        cluster.sigstop(*id);
    }
    let verdict = poll_until(SETTLE, async || {
        let output = status(true);
        let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
        let verdict: serde_json::Value = stdout
            .lines()
            .last()
            .and_then(|line| serde_json::from_str(line).ok())
            .ok_or(format!("no verdict line in {stdout:?}"))?;
        match (output.status.success(), verdict["healthy"].as_bool()) {
            (false, Some(false)) => Ok(verdict),
            _ => Err(format!("exit {:?}: {verdict}", output.status)),
        }
    })
    .await;
    let table = status(false);
    for id in &followers {
        cluster.sigcont(*id);
    }
    let verdict = verdict.unwrap_or_else(|last| {
        panic!("ordo status still called the cluster healthy with 2 of 3 nodes stopped: {last}")
    });
    assert!(
        ["no_leader", "no_quorum"].contains(&verdict["code"].as_str().unwrap_or_default()),
        "{verdict}"
    );
    assert!(!table.status.success(), "the table form exits non-zero too");
    let text = String::from_utf8(table.stdout).expect("UTF-8 output");
    assert!(text.contains("health: UNHEALTHY ("), "{text}");
    // Healed, it is healthy again.
    poll_until(SETTLE, async || {
        let output = status(true);
        match output.status.success() {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&output.stdout).into_owned()),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("ordo status never called the healed cluster healthy: {last}"));
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_a_few_election_timeouts_and_rejoins_as_a_follower() {
    let mut cluster = TestCluster::start(3);
    let election_timeout = cluster.election_timeout();
    let old = cluster.wait_for_leader(STARTUP).await;
    let acks = cluster.propose_many(old.id, "before", 20).await;
    // Keep proposing while the leader dies: what it acknowledged in its last moment counts too.
    let proposer = cluster.spawn_proposer(old.id, "during").await;
    wait_until(SETTLE, "the proposer to be acknowledged", async || {
        (proposer.acked() >= 5)
            .then_some(())
            .ok_or("fewer than 5".to_string())
    })
    .await;

    let killed_at = Instant::now();
    cluster.kill9(old.id);
    let new = wait_for_new_leader(&cluster, &old, SETTLE).await;
    let election_time = killed_at.elapsed();
    eprintln!(
        "new leader {} in term {} {election_time:?} after the kill (election timeout {election_timeout:?})",
        new.id, new.term
    );
    assert!(
        election_time < 5 * election_timeout,
        "the new leader took {election_time:?}, over 5 election timeouts of {election_timeout:?}"
    );
    rejoin_and_check(&mut cluster, proposer, acks, old.id, &new).await;
}

/// A submit sent to a leader that then freezes (SIGSTOP: it neither answers nor closes, as if
/// cut off) is acknowledged by the next leader, long before the client's request timeout or
/// QUIC's idle timeout would have ended its wait (all a minute here), and commits once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_waiting_on_a_frozen_leader_is_acknowledged_once_by_the_next_leader() {
    // The nodes' QUIC idle timeout too: a connection's is the shorter of its two ends'.
    let mut options = ClusterOptions::fast(3);
    options.environment.push((
        "ORDO_TRANSPORT_IDLE_TIMEOUT".into(),
        format!("{}s", PATIENT.as_secs()),
    ));
    let cluster = TestCluster::start_with(options);
    let old = cluster.wait_for_leader(STARTUP).await;
    let mut config = cluster.client_config();
    config.request_timeout = PATIENT;
    config.idle_timeout = PATIENT;
    config.retry_timeout = PATIENT * 2;
    let client = Client::connect(config).await.expect("connect");
    let batch = |payload: &str| Batch {
        id: new_batch_id(),
        messages: vec![Message::new("frozen", payload.as_bytes().to_vec())],
        preconditions: Vec::new(),
    };
    // The client learns who leads.
    client.submit(batch("first")).await.expect("first");

    cluster.sigstop(old.id);
    let waiting = batch("waiting");
    let id = waiting.id;
    let sent = Instant::now();
    let committed = tokio::time::timeout(PATIENT / 2, client.submit(waiting))
        .await
        .expect("acknowledged before the request timeout, by the next leader")
        .expect("committed");
    eprintln!(
        "a submit sent to the frozen leader {} was acknowledged {:?} later (seq {})",
        old.id,
        sent.elapsed(),
        committed.seq
    );
    // The old leader wakes up: whatever it held of the request, the batch is in the order once.
    cluster.sigcont(old.id);
    // A status query waiting on a frozen leader moves on the same way.
    let second = cluster.wait_for_leader(STARTUP).await;
    cluster.sigstop(second.id);
    let status = tokio::time::timeout(PATIENT / 2, client.status(id))
        .await
        .expect("answered before the request timeout, by the leader after")
        .expect("a status");
    assert!(
        matches!(status, BatchStatus::Committed { seq, .. } if seq == committed.seq),
        "{status:?}"
    );
    cluster.sigcont(second.id);
    let last = client.submit(batch("last")).await.expect("last");
    let mut subscription = client.subscribe(1, vec!["frozen".to_string()]);
    let mut seen = Vec::new();
    while let Some(delivered) = tokio::time::timeout(SETTLE, subscription.next())
        .await
        .expect("the subscription delivers")
    {
        let delivered = delivered.expect("a committed batch");
        seen.push(delivered.id);
        if delivered.seq == last.seq {
            break;
        }
    }
    assert_eq!(
        seen.iter().filter(|seen| **seen == id).count(),
        1,
        "the waiting batch commits exactly once: {seen:?}"
    );
    assert_eq!(seen.len(), 3, "first, waiting, last: {seen:?}");
}

#[tokio::test]
async fn a_sigterm_leader_hands_leadership_over_before_it_exits_and_loses_no_acknowledged_write() {
    // A 1 s election timeout makes the hand-over unmistakable: a transfer takes a few round
    // trips, an election after a timeout at least one election timeout of silence.
    let mut cluster = TestCluster::start_with(ClusterOptions {
        election_timeout: Duration::from_millis(1000),
        ..ClusterOptions::fast(3)
    });
    let election_timeout = cluster.election_timeout();
    let old = cluster.wait_for_leader(STARTUP).await;
    let acks = cluster.propose_many(old.id, "before", 20).await;
    cluster
        .wait_for_caught_up(highest_index(&acks), SETTLE)
        .await;
    let proposer = cluster.spawn_proposer(old.id, "during").await;
    wait_until(SETTLE, "the proposer to be acknowledged", async || {
        (proposer.acked() >= 5)
            .then_some(())
            .ok_or("fewer than 5".to_string())
    })
    .await;

    let mark = cluster.log_mark(old.id);
    let terminated_at = Instant::now();
    cluster.sigterm(old.id);
    let new = wait_for_new_leader(&cluster, &old, SETTLE).await;
    let hand_over_time = terminated_at.elapsed();
    let exit = cluster.wait_exit(old.id, SETTLE).await;
    eprintln!(
        "node {} leads term {} {hand_over_time:?} after the SIGTERM; the old leader exited with {exit}",
        new.id, new.term
    );
    assert_eq!(exit.code(), Some(0), "the old leader exits cleanly");
    assert_eq!(
        elections_between(old.term, new.term),
        1,
        "leadership moved straight to the next term"
    );
    assert!(
        hand_over_time < election_timeout,
        "the new leader took {hand_over_time:?}: an election after a timeout, not a transfer"
    );
    let stopping = cluster.log_since(old.id, mark);
    assert!(
        stopping.contains("stopping: transferring leadership")
            && stopping.contains("handed_over=true"),
        "the old leader's log does not show a hand-over:\n{stopping}"
    );
    rejoin_and_check(&mut cluster, proposer, acks, old.id, &new).await;
}

/// Waits until a running node other than `old` leads a later term than `old` did.
async fn wait_for_new_leader(
    cluster: &TestCluster,
    old: &NodeStatus,
    timeout: Duration,
) -> NodeStatus {
    wait_until(timeout, "another node to lead a later term", async || {
        for id in cluster.ids().into_iter().filter(|id| *id != old.id) {
            if let Ok(status) = cluster.status(id).await
                && status.role == NodeRole::Leader
                && status.term > old.term
            {
                return Ok(status);
            }
        }
        Err("no new leader yet".to_string())
    })
    .await
}

fn assert_acknowledged_below_every_commit_index<'a>(
    acks: &[Ack],
    statuses: impl Iterator<Item = &'a NodeStatus>,
) {
    let highest = highest_index(acks);
    for status in statuses {
        assert!(
            highest <= status.commit_index,
            "node {} has commit index {} below the acknowledged index {highest}",
            status.id,
            status.commit_index
        );
    }
}

/// The common end of the leader-loss tests: stop the background load, write more through the new
/// leader, restart the old one, and check that it rejoins as a follower, that every acknowledged
/// write is below every node's commit index, and that the stopped nodes' logs hold them all.
async fn rejoin_and_check(
    cluster: &mut TestCluster,
    proposer: Proposer,
    mut acks: Vec<Ack>,
    old: NodeId,
    new: &NodeStatus,
) {
    let (during, ended) = proposer.finish().await;
    eprintln!(
        "{} proposals acknowledged under load; then {ended}",
        during.len()
    );
    acks.extend(during);
    acks.extend(cluster.propose_many(new.id, "after", 20).await);

    let restarted_at = Instant::now();
    cluster.restart(old);
    let statuses = cluster
        .wait_for_caught_up(highest_index(&acks), REJOIN)
        .await;
    eprintln!(
        "node {old} rejoined and caught up {:?} after its restart",
        restarted_at.elapsed()
    );
    let rejoined = &statuses[&old];
    assert_eq!(rejoined.role, NodeRole::Follower);
    assert_eq!((rejoined.leader, rejoined.term), (Some(new.id), new.term));
    assert_acknowledged_below_every_commit_index(&acks, statuses.values());

    let exits = cluster.stop_all(SETTLE).await;
    assert!(exits.values().all(|status| status.success()), "{exits:?}");
    cluster.assert_acknowledged_writes_stored(&acks);
}

/// A cluster's engine is fixed when it bootstraps. A node restarted with the other engine on
/// its data refuses to start, says why with a stable code and both engines' names, and leaves
/// its data untouched: restarted with its own engine, it rejoins with everything it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_the_other_engine_refuses_its_data_and_keeps_it() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(STARTUP).await;
    let mut acks = cluster.propose_many(leader.id, "before", 20).await;
    cluster
        .wait_for_caught_up(highest_index(&acks), SETTLE)
        .await;
    let target = cluster.others(leader.id)[0];
    assert_eq!(cluster.stop(target, SETTLE).await.code(), Some(0));
    let (state_before, entries_before) = cluster.read_stored_log(target);

    let engine = support::test_engine();
    let other = support::other_engine(engine);
    cluster.options_mut().engine = other;
    let mark = cluster.log_mark(target);
    cluster.restart(target);
    let exit = cluster.wait_exit(target, SETTLE).await;
    let refusal = cluster.log_since(target, mark);
    assert!(
        !exit.success(),
        "node {target} started on data of the other engine:\n{refusal}"
    );
    assert!(
        refusal.contains("error[engine_mismatch]")
            && refusal.contains(&format!("consensus.engine = \"{}\"", engine.name()))
            && refusal.contains(other.name()),
        "the refusal does not say which engine wrote the data:\n{refusal}"
    );
    let (state_after, entries_after) = cluster.read_stored_log(target);
    assert_eq!(
        (state_after, entries_after),
        (state_before, entries_before),
        "the refused start changed the stored log"
    );

    cluster.options_mut().engine = engine;
    acks.extend(cluster.propose_many(leader.id, "after", 20).await);
    cluster.restart(target);
    let statuses = cluster
        .wait_for_caught_up(highest_index(&acks), SETTLE)
        .await;
    assert_eq!(statuses[&target].engine, engine);
    cluster.stop_all(SETTLE).await;
    cluster.assert_acknowledged_writes_stored(&acks);
}
