//! The SDK's first steps: submit one atomic batch, ask for its outcome, read it back.
//!
//! ```sh
//! cargo run --release -- dev                       # terminal 1: a local 3-node cluster
//! cargo run --release --example quickstart         # terminal 2
//! ```
//!
//! `ORDO_ENDPOINTS`, `ORDO_TLS_DIR` and `ORDO_CLIENT` point it elsewhere, as they do the CLI.

use ordo_participant::{
    Batch, Client, ClientConfig, DEV_ENDPOINTS, DEV_TLS_DIR, Message, new_batch_id, parse_endpoints,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let setting = |name, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let endpoints = parse_endpoints(&setting("ORDO_ENDPOINTS", DEV_ENDPOINTS))?;
    let mut config = ClientConfig::new(endpoints, setting("ORDO_TLS_DIR", DEV_TLS_DIR));
    config.client_name = Some(setting("ORDO_CLIENT", "cli"));
    let client = Client::connect(config).await?;

    // Two topics, one atomic batch: both messages commit at one seq, or neither does.
    // (`Precondition`s make a batch conditional; examples/bank_transfer.rs uses them.)
    let batch = Batch {
        id: new_batch_id(),
        messages: vec![
            Message::new("orders", "order 1"),
            Message::new("audit", "order 1 placed"),
        ],
        preconditions: vec![],
    };
    let committed = client.submit(batch).await?;
    println!("batch {} committed at seq {}", committed.id, committed.seq);
    println!("its status: {:?}", client.status(committed.id).await?);

    // Every participant reads the same committed sequence, in the same order.
    let mut subscription = client.subscribe(1, vec!["orders".into(), "audit".into()]);
    while let Some(batch) = subscription.next().await {
        let batch = batch?;
        let topics: Vec<&str> = batch.messages.iter().map(|m| m.topic.as_str()).collect();
        println!("seq {}: batch {} to {topics:?}", batch.seq, batch.id);
        if batch.id == committed.id {
            return Ok(());
        }
    }
    Err("the subscription ended before our batch came by".into())
}
