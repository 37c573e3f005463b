//! `ordo status`: asks every endpoint for its view and prints a table (or JSON lines).

use std::process::ExitCode;
use std::time::Duration;

use ordo_common::client::{ClientRequest, ClientResponse};
use ordo_participant::{ClientTls, NodeConnection};

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
            connection.request(&ClientRequest::Status).await
        }
    });
    let answers = futures_join_all(queries).await;
    let mut unreachable = 0;
    if !json {
        println!(
            "{:<4} {:<21} {:<13} {:>6} {:>7} {:>10} {:>10} {:>10}  reachable",
            "id", "address", "role", "term", "leader", "last", "commit", "applied"
        );
    }
    for (address, answer) in endpoints.iter().zip(answers) {
        match answer {
            Ok(ClientResponse::Status(status)) => {
                if json {
                    println!("{}", serde_json::to_string(&status_json(&status))?);
                } else {
                    let leader = status.leader.map_or("-".to_string(), |id| id.to_string());
                    println!(
                        "{:<4} {:<21} {:<13} {:>6} {:>7} {:>10} {:>10} {:>10}  {:?}",
                        status.id,
                        status.address,
                        status.role,
                        status.term,
                        leader,
                        status.last_index,
                        status.commit_index,
                        status.applied_index,
                        status.reachable_peers
                    );
                    if status.storage_full {
                        println!(
                            "     node {}: disk below storage.free_space_min, refusing proposals",
                            status.id
                        );
                    }
                }
            }
            Ok(other) => {
                unreachable += 1;
                eprintln!("{address}: unexpected answer {other:?}");
            }
            Err(error) => {
                unreachable += 1;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "address": address.to_string(), "error": error.to_string() })
                    );
                } else {
                    println!("-    {address:<21} unreachable: {error}");
                }
            }
        }
    }
    Ok(if unreachable == endpoints.len() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn status_json(status: &ordo_common::client::NodeStatus) -> serde_json::Value {
    serde_json::json!({
        "id": status.id,
        "address": status.address,
        "role": status.role.as_str(),
        "term": status.term,
        "leader": status.leader,
        "last_index": status.last_index,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "durable_index": status.durable_index,
        "reachable_peers": status.reachable_peers,
        "storage_full": status.storage_full,
        "tick_gap_max_us": status.tick_gap_max_us,
        "late_not_leader_refusals": status.late_not_leader_refusals,
    })
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
