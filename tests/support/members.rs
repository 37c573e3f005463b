//! `ordo member` from tests: the real CLI, run against a [`TestCluster`].

use std::time::Duration;

use ordo_common::NodeId;
use serde_json::Value;

use super::{CLIENT_NAME, TestCluster, path_str, run_ordo, wait_until};

/// How long a membership change may take to show in the member list.
pub const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `ordo member ARGS...` against the cluster; returns (exit code, stdout, stderr).
pub fn member(cluster: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let endpoints = cluster.endpoints();
    let mut all = vec!["member"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--endpoints",
        &endpoints,
        "--tls-dir",
        path_str(cluster.tls_dir()),
        "--client",
        CLIENT_NAME,
    ]);
    let output = run_ordo(&all);
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `ordo member list --json`, one object per member.
pub fn member_list(cluster: &TestCluster) -> Result<Vec<Value>, String> {
    let (code, stdout, stderr) = member(cluster, &["list", "--json"]);
    if code != 0 {
        return Err(format!("member list exited {code}: {stderr}"));
    }
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).map_err(|error| format!("{error}: {line}")))
        .collect()
}

pub fn voters(list: &[Value]) -> Vec<NodeId> {
    list.iter()
        .filter(|member| member["role"] == "voter")
        .map(|member| member["id"].as_u64().expect("an id"))
        .collect()
}

pub fn leader_of(list: &[Value]) -> Option<NodeId> {
    list.iter()
        .find(|member| member["leader"] == true)
        .and_then(|member| member["id"].as_u64())
}

/// Runs a membership change that must succeed.
pub fn change(cluster: &TestCluster, args: &[&str]) {
    let (code, stdout, stderr) = member(cluster, args);
    assert_eq!(code, 0, "`ordo member {args:?}` failed: {stdout}{stderr}");
}

/// Waits until the member list shows exactly `expected` as voters, each reachable and caught
/// up to within a few entries of the leader.
pub async fn wait_for_voters(cluster: &TestCluster, expected: &[NodeId]) -> Vec<Value> {
    let what = format!("voters {expected:?}, all reachable and caught up");
    wait_until(MEMBERSHIP_TIMEOUT, &what, async || {
        let list = member_list(cluster)?;
        let caught_up = list.iter().all(|member| {
            member["reachable"] == true && member["behind"].as_u64().unwrap_or(u64::MAX) < 1000
        });
        if voters(&list) == expected && list.len() == expected.len() && caught_up {
            Ok(list)
        } else {
            Err(format!("members: {list:?}"))
        }
    })
    .await
}

/// Adds a new node the way an operator does: start it with `--join`, then `ordo member add`;
/// it is promoted once caught up. Returns its id.
pub async fn add_node(cluster: &mut TestCluster, voters_after: &[NodeId]) -> NodeId {
    let id = cluster.prepare_joining_node();
    cluster.restart(id);
    let address = cluster.address(id).to_string();
    change(cluster, &["add", &id.to_string(), &address]);
    wait_for_voters(cluster, voters_after).await;
    id
}

/// Words of the refusals that pass with time: a change or a term still settling, a learner
/// catching up, a voter briefly unreachable, a leader handing over.
const PASSING_REFUSALS: [&str; 5] = [
    "has not committed yet",
    "has not yet committed",
    "has not caught up",
    "reachable voters",
    "leadership transfer",
];

/// Runs a membership change, retrying while the leader refuses it for a passing reason (a
/// change or a term still settling, a learner catching up, a voter briefly unreachable).
pub async fn change_when_allowed(cluster: &TestCluster, args: &[&str]) {
    let what = format!("`ordo member {args:?}` to be accepted");
    wait_until(MEMBERSHIP_TIMEOUT, &what, async || {
        let (code, stdout, stderr) = member(cluster, args);
        match code {
            0 => Ok(()),
            3 if PASSING_REFUSALS
                .iter()
                .any(|passing| stderr.contains(passing)) =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Err(stderr)
            }
            _ => panic!("`ordo member {args:?}` failed ({code}): {stdout}{stderr}"),
        }
    })
    .await
}
