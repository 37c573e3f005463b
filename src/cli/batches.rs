//! `ordo submit` and `ordo tail`.

use std::process::ExitCode;

use base64::Engine;
use ordo_participant::{
    Batch, BatchId, Client, ClientConfig, CommittedBatch, Message, Precondition, RejectReason,
    SubmitError, new_batch_id,
};

use ordo_participant::parse_endpoints;

use super::ClientArguments;

/// Marks a payload printed as base64 because it is not UTF-8.
pub const BASE64_MARKER: &str = "base64:";

pub async fn client(arguments: &ClientArguments) -> Result<Client, Box<dyn std::error::Error>> {
    let mut config = ClientConfig::new(parse_endpoints(&arguments.endpoints)?, &arguments.tls_dir);
    config.client_name = arguments.client.clone();
    Ok(Client::connect(config).await?)
}

/// `TOPIC=PAYLOAD`, `TOPIC=OFFSET` and `NAME=TOKEN` arguments.
pub fn split_pair(text: &str) -> Result<(&str, &str), String> {
    text.split_once('=')
        .ok_or_else(|| format!("{text:?} is not TOPIC=VALUE"))
}

pub async fn submit(
    arguments: &ClientArguments,
    id: Option<String>,
    expect: &[String],
    fence: &[String],
    epoch: &[String],
    messages: &[String],
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let id = match id {
        Some(text) => text.parse::<BatchId>()?,
        None => new_batch_id(),
    };
    let messages = messages
        .iter()
        .map(|pair| {
            split_pair(pair).map(|(topic, payload)| Message::new(topic, payload.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut preconditions = Vec::new();
    for pair in fence {
        let (name, token) = split_pair(pair)?;
        let token = token
            .parse()
            .map_err(|_| format!("{pair:?}: the token must be a number"))?;
        let name = name.to_string();
        preconditions.push(Precondition::LockHeld { name, token });
    }
    for pair in epoch {
        let (election, epoch) = split_pair(pair)?;
        let epoch = epoch
            .parse()
            .map_err(|_| format!("{pair:?}: the epoch must be a number"))?;
        let election = election.to_string();
        preconditions.push(Precondition::Leader { election, epoch });
    }
    for pair in expect {
        let (topic, offset) = split_pair(pair)?;
        let offset = offset
            .parse()
            .map_err(|_| format!("{pair:?}: the offset must be a number"))?;
        preconditions.push(Precondition::TopicOffset {
            topic: topic.to_string(),
            offset,
        });
    }
    let client = client(arguments).await?;
    match client
        .submit(Batch {
            id,
            messages,
            preconditions,
        })
        .await
    {
        Ok(committed) => {
            let line = serde_json::json!({
                "batch_id": committed.id.to_string(),
                "seq": committed.seq,
                "index": committed.index,
            });
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(SubmitError::Rejected { reason }) => {
            let line = serde_json::json!({
                "batch_id": id.to_string(),
                "rejected": reason.to_string(),
                "fenced": matches!(reason, RejectReason::Fenced { .. }),
            });
            println!("{line}");
            Ok(ExitCode::from(3))
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(ExitCode::FAILURE)
        }
    }
}

pub async fn tail(
    arguments: &ClientArguments,
    from: u64,
    topics: Vec<String>,
    json: bool,
    count: Option<u64>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = client(arguments).await?;
    let mut subscription = client.subscribe(from, topics);
    let mut printed = 0;
    while count.is_none_or(|count| printed < count) {
        match subscription.next().await {
            Some(Ok(batch)) => {
                println!("{}", render(&batch, json));
                printed += 1;
            }
            Some(Err(error)) => {
                eprintln!("error: {error}");
                return Ok(ExitCode::FAILURE);
            }
            None => break,
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per batch: JSON with payloads as UTF-8 (or base64 behind a marker), or text.
pub fn render(batch: &CommittedBatch, json: bool) -> String {
    let payload = |bytes: &[u8]| match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!(
            "{BASE64_MARKER}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    };
    if json {
        let messages: Vec<_> = batch
            .messages
            .iter()
            .map(|m| serde_json::json!({ "topic": m.topic, "payload": payload(&m.payload) }))
            .collect();
        serde_json::json!({
            "seq": batch.seq,
            "batch_id": batch.id.to_string(),
            "messages": messages,
        })
        .to_string()
    } else {
        let messages: Vec<String> = batch
            .messages
            .iter()
            .map(|m| format!("{}={}", m.topic, payload(&m.payload)))
            .collect();
        format!(
            "seq {} batch {} {}",
            batch.seq,
            batch.id,
            messages.join(" ")
        )
    }
}
