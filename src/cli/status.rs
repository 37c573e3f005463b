//! `ordo status`: asks every endpoint for its view and prints a table (or JSON lines).

use std::process::ExitCode;
use std::time::Duration;

use ordo_common::client::{ClientRequest, ClientResponse, MemberList, NodeRole, NodeStatus};
use ordo_participant::{ClientTls, ErrorCode, NodeConnection};

use ordo_participant::parse_endpoints;

use super::ClientArguments;

/// How long to wait for each node.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn run(
    client: &ClientArguments,
    json: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let endpoints = parse_endpoints(&client.endpoints)?;
    let tls = ClientTls::load(&client.tls_dir, client.client.as_deref())?;
    let queries = endpoints.clone().into_iter().map(|address| {
        let tls = tls.clone();
        async move {
            let connection = NodeConnection::connect(address, &tls, STATUS_TIMEOUT).await?;
            let status = connection.request(&ClientRequest::Status).await?;
            // The leader also says who the voters are and which it hears from.
            let members = match &status {
                ClientResponse::Status(status) if status.role == NodeRole::Leader => {
                    match connection.request(&ClientRequest::MemberList).await {
                        Ok(ClientResponse::Members(list)) => Some(*list),
                        _ => None,
                    }
                }
                _ => None,
            };
            Ok::<_, ordo_participant::ConnectError>((status, members))
        }
    });
    let answers = futures_join_all(queries).await;
    let mut members = None;
    let mut rows = Vec::new();
    for (address, answer) in endpoints.iter().zip(answers) {
        match answer {
            Ok((ClientResponse::Status(status), list)) => {
                members = members.or(list);
                rows.push(Ok(*status));
            }
            Ok((other, _)) => rows.push(Err((
                *address,
                format!("unexpected answer {other:?}"),
                "unexpected_answer",
            ))),
            Err(error) => rows.push(Err((*address, error.to_string(), error.code()))),
        }
    }
    let statuses: Vec<&NodeStatus> = rows.iter().filter_map(|row| row.as_ref().ok()).collect();
    let health = Health::judge(&statuses, members.as_ref(), endpoints.len());
    if !json {
        println!(
            "{:<4} {:<21} {:<13} {:>6} {:>7} {:>10} {:>10} {:>10} {:>9} {:>9}  reachable",
            "id", "address", "role", "term", "leader", "last", "commit", "applied", "lag", "behind"
        );
    }
    for row in rows {
        match row {
            Ok(status) => {
                let lag = health.lag(&status);
                if json {
                    let mut line = ordo_coordinator::http::status_json(&status);
                    line["lag_entries"] = serde_json::json!(lag.map(|lag| lag.entries));
                    line["lag_ms"] = serde_json::json!(lag.and_then(|lag| lag.ms));
                    println!("{}", serde_json::to_string(&line)?);
                    continue;
                }
                let leader = status.leader.map_or("-".to_string(), |id| id.to_string());
                let (entries, behind) = match lag {
                    Some(lag) => (
                        lag.entries.to_string(),
                        lag.ms.map_or("?".to_string(), |ms| format!("{ms}ms")),
                    ),
                    None => ("-".to_string(), "-".to_string()),
                };
                println!(
                    "{:<4} {:<21} {:<13} {:>6} {:>7} {:>10} {:>10} {:>10} {:>9} {:>9}  {:?}",
                    status.id,
                    status.address,
                    status.role,
                    status.term,
                    leader,
                    status.last_index,
                    status.commit_index,
                    status.applied_index,
                    entries,
                    behind,
                    status.reachable_peers
                );
                if status.storage_full {
                    println!(
                        "     node {}: disk below storage.free_space_min, refusing proposals",
                        status.id
                    );
                }
            }
            Err((address, error, code)) => {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "address": address.to_string(), "error": error, "code": code })
                    );
                } else {
                    println!("-    {address:<21} unreachable: {error}");
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string(&health.json())?);
    } else {
        println!("{}", health.line());
    }
    Ok(if health.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How far a node is behind the leader.
#[derive(Clone, Copy)]
struct Lag {
    /// Entries the leader knows committed that the node has not applied.
    entries: u64,
    /// How much older (by the leader's clock) the node's last applied entry is than the
    /// leader's; `None` when a stamp is missing (a node that applied nothing since it started).
    ms: Option<u64>,
}

/// The verdict on the cluster, from the answers.
struct Health {
    leader: Option<NodeStatus>,
    /// Voters, and those of them the leader heard from lately (from the leader's member list).
    voters: Option<(usize, usize)>,
    answered: usize,
    asked: usize,
    /// Why the cluster is unhealthy; `None` when it is healthy.
    problem: Option<(&'static str, String)>,
    /// What is not right although the cluster works (a node unreachable or lagging).
    warnings: Vec<String>,
}

/// A node this many entries behind the leader is reported as lagging.
const LAGGING_ENTRIES: u64 = 1000;

impl Health {
    fn judge(statuses: &[&NodeStatus], members: Option<&MemberList>, asked: usize) -> Self {
        let leader = statuses
            .iter()
            .filter(|status| status.role == NodeRole::Leader)
            .max_by_key(|status| status.term)
            .map(|leader| (*leader).clone());
        let voters = members.map(|list| {
            let voters = list.members.iter().filter(|member| member.voter);
            let reachable = voters.clone().filter(|member| member.reachable).count();
            (voters.count(), reachable)
        });
        let mut health = Self {
            leader,
            voters,
            answered: statuses.len(),
            asked,
            problem: None,
            warnings: Vec::new(),
        };
        match (&health.leader, health.voters) {
            (None, _) if statuses.is_empty() => {
                health.problem = Some(("unreachable", "no node answered".to_string()));
            }
            (None, _) => {
                health.problem = Some((
                    "no_leader",
                    format!("none of the {} nodes that answered leads", statuses.len()),
                ));
            }
            (Some(leader), Some((voters, reachable))) if reachable <= voters / 2 => {
                health.problem = Some((
                    "no_quorum",
                    format!(
                        "leader {} hears from {reachable} of {voters} voters, not a majority",
                        leader.id
                    ),
                ));
            }
            _ => {}
        }
        if health.answered < asked {
            health.warnings.push(format!(
                "{} of {asked} endpoints did not answer",
                asked - health.answered
            ));
        }
        for status in statuses {
            if let Some(lag) = health.lag(status)
                && lag.entries > LAGGING_ENTRIES
            {
                health.warnings.push(format!(
                    "node {} is {} entries behind the leader",
                    status.id, lag.entries
                ));
            }
        }
        health
    }

    fn healthy(&self) -> bool {
        self.problem.is_none()
    }

    /// `ok`, `degraded` (it works, with warnings) or `unhealthy`.
    fn verdict(&self) -> &'static str {
        match (&self.problem, self.warnings.is_empty()) {
            (Some(_), _) => "unhealthy",
            (None, true) => "ok",
            (None, false) => "degraded",
        }
    }

    /// How far `status`'s node is behind the leader; `None` without a leader.
    fn lag(&self, status: &NodeStatus) -> Option<Lag> {
        let leader = self.leader.as_ref()?;
        let entries = leader.commit_index.saturating_sub(status.applied_index);
        let ms = if entries == 0 {
            Some(0)
        } else if leader.applied_stamp_ms > 0 && status.applied_stamp_ms > 0 {
            Some(
                leader
                    .applied_stamp_ms
                    .saturating_sub(status.applied_stamp_ms),
            )
        } else {
            None
        };
        Some(Lag { entries, ms })
    }

    fn line(&self) -> String {
        match (&self.problem, &self.leader) {
            (Some((code, reason)), _) => format!("health: UNHEALTHY ({code}): {reason}"),
            (None, Some(leader)) => {
                let voters = self.voters.map_or(String::new(), |(voters, reachable)| {
                    format!(", {reachable}/{voters} voters reachable")
                });
                let warnings = if self.warnings.is_empty() {
                    String::new()
                } else {
                    format!("; {}", self.warnings.join("; "))
                };
                format!(
                    "health: {}: leader {} (term {}){voters}, {}/{} endpoints answered{warnings}",
                    self.verdict(),
                    leader.id,
                    leader.term,
                    self.answered,
                    self.asked
                )
            }
            (None, None) => "health: unknown".to_string(),
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "health": self.verdict(),
            "healthy": self.healthy(),
            "code": self.problem.as_ref().map(|(code, _)| *code),
            "reason": self.problem.as_ref().map(|(_, reason)| reason.clone()),
            "warnings": self.warnings,
            "leader": self.leader.as_ref().map(|leader| leader.id),
            "term": self.leader.as_ref().map(|leader| leader.term),
            "voters": self.voters.map(|(voters, _)| voters),
            "voters_reachable": self.voters.map(|(_, reachable)| reachable),
        })
    }
}

/// Runs the futures concurrently and collects their results in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.expect("status query task"));
    }
    outputs
}
