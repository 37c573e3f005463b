//! `ordo member list | add | promote | remove`: the coordinators of a cluster, changed one at a
//! time. Refusals print the leader's reason and exit with [`EXIT_REFUSED`].

use std::process::ExitCode;

use ordo_participant::{MemberError, MemberList, MembershipChange};

use super::ClientArguments;
use super::batches::client;

/// The exit code of a change the cluster refused as it stands (the same as a rejected batch).
pub const EXIT_REFUSED: u8 = 3;

pub async fn list(
    arguments: &ClientArguments,
    json: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = client(arguments).await?;
    let list = client.member_list().await?;
    print_list(&list, json);
    Ok(ExitCode::SUCCESS)
}

fn print_list(list: &MemberList, json: bool) {
    if !json {
        let state = if list.membership_committed {
            "committed"
        } else {
            "not yet committed"
        };
        println!(
            "cluster {}  leader {}  term {}  membership at index {} ({state})",
            list.cluster, list.leader, list.term, list.membership_index
        );
    }
    for member in &list.members {
        let role = if member.voter { "voter" } else { "learner" };
        let behind = list.last_index.saturating_sub(member.match_index);
        if json {
            let line = serde_json::json!({
                "id": member.id,
                "address": member.address,
                "role": role,
                "leader": member.id == list.leader,
                "reachable": member.reachable,
                "match_index": member.match_index,
                "behind": behind,
                "promote_when_caught_up": member.promote_when_ready,
            });
            println!("{line}");
        } else {
            let reachable = if member.reachable {
                "reachable"
            } else {
                "unreachable"
            };
            let leader = if member.id == list.leader {
                "  (leader)"
            } else {
                ""
            };
            let promote = if member.promote_when_ready {
                "  (promoted when caught up)"
            } else {
                ""
            };
            println!(
                "{}  {}  {role}  {reachable}  behind {behind}{leader}{promote}",
                member.id, member.address
            );
        }
    }
}

pub async fn change(
    arguments: &ClientArguments,
    change: MembershipChange,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = client(arguments).await?;
    match client.change_membership(change).await {
        Ok((index, membership)) => {
            let line = serde_json::json!({
                "index": index,
                "voters": membership.voters,
                "learners": membership.learners,
            });
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(MemberError::Refused(reason)) => {
            eprintln!("refused: {reason}");
            Ok(ExitCode::from(EXIT_REFUSED))
        }
        Err(error) => Err(error.into()),
    }
}
