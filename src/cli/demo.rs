//! The `ordo dev --demo` workload: several producers submit atomic transfer batches (a debit, a
//! credit and an audit record, all or nothing) while two participants apply the committed
//! batches into their own redb databases through the exactly-once `Applier`. Every two seconds
//! it prints both participants' position and state hash; at the end it checks that they agree,
//! that money is conserved, and that every acknowledged batch was applied.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ordo_participant::{
    Applier, Batch, Client, ClientConfig, CommittedBatch, HandlerError, Message, SubmitError,
    new_batch_id,
};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const BALANCES: TableDefinition<&str, i64> = TableDefinition::new("balances");
const DIGEST: TableDefinition<&str, u64> = TableDefinition::new("digest");
const ACCOUNTS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];
const PRODUCERS: usize = 3;

/// Runs the demo for `duration`; returns whether every check held.
pub async fn run(
    endpoints: Vec<SocketAddr>,
    dir: &Path,
    duration: Duration,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let mut config = ClientConfig::new(endpoints, dir.join("tls"));
    config.client_name = Some("demo".into());
    let client = connect_with_patience(config).await?;
    println!(
        "demo: {PRODUCERS} producers submit atomic transfers; participants A and B apply them"
    );

    let acknowledged = Arc::new(AtomicU64::new(0));
    let last_seq = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let (client, acknowledged, last_seq) =
            (client.clone(), acknowledged.clone(), last_seq.clone());
        producers.push(tokio::spawn(async move {
            let mut counter = producer as u64;
            while Instant::now() < deadline {
                counter = counter
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let from = ACCOUNTS[(counter >> 33) as usize % ACCOUNTS.len()];
                let to = ACCOUNTS[(counter >> 40) as usize % ACCOUNTS.len()];
                let amount = 1 + (counter >> 50) % 100;
                let batch = transfer(producer, from, to, amount);
                match client.submit(batch).await {
                    Ok(committed) => {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                        last_seq.fetch_max(committed.seq, Ordering::Relaxed);
                    }
                    Err(SubmitError::Timeout { id, .. }) => {
                        eprintln!("demo: batch {id} outcome unknown")
                    }
                    Err(error) => eprintln!("demo: submit failed: {error}"),
                }
            }
        }));
    }

    let participants: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let path = dir.join(format!("participant-{name}.redb"));
            let database = Arc::new(redb::Database::create(path)?);
            Ok::<_, redb::DatabaseError>((name, database))
        })
        .collect::<Result<_, _>>()?;
    let mut appliers = Vec::new();
    for (name, database) in &participants {
        let applier = Applier::new(client.clone(), database.clone(), "demo", Vec::new());
        let name = name.to_string();
        appliers.push(tokio::spawn(async move {
            if let Err(error) = applier.run(apply_transfer).await {
                eprintln!("demo: participant {name} stopped: {error}");
            }
        }));
    }

    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let views: Vec<_> = participants
            .iter()
            .map(|(name, db)| (name, view(db)))
            .collect();
        let agree = views[0].1 == views[1].1;
        println!(
            "demo: {} batches acknowledged | A at seq {} hash {:016x} | B at seq {} hash {:016x} | {}",
            acknowledged.load(Ordering::Relaxed),
            views[0].1.0,
            views[0].1.1,
            views[1].1.0,
            views[1].1.1,
            if agree { "agree" } else { "catching up" }
        );
    }
    for producer in producers {
        producer.await?;
    }
    // Let both participants reach the last acknowledged seq.
    let target = last_seq.load(Ordering::Relaxed);
    let settle = Instant::now() + Duration::from_secs(20);
    while participants.iter().any(|(_, db)| view(db).0 < target) && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for applier in appliers {
        applier.abort();
    }
    let (a, b) = (view(&participants[0].1), view(&participants[1].1));
    let total_a = total_balance(&participants[0].1);
    let agree = a == b;
    let complete = a.0 >= target;
    println!(
        "demo: final: A at seq {} hash {:016x}; B at seq {} hash {:016x}",
        a.0, a.1, b.0, b.1
    );
    println!(
        "demo: participants agree: {}; every acknowledged batch applied (through seq {target}): {}; money conserved (sum {total_a}): {}",
        yes(agree),
        yes(complete),
        yes(total_a == 0)
    );
    Ok(agree && complete && total_a == 0)
}

fn yes(value: bool) -> &'static str {
    if value { "yes" } else { "NO" }
}

async fn connect_with_patience(
    config: ClientConfig,
) -> Result<Client, Box<dyn std::error::Error + Send + Sync>> {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        match Client::connect(config.clone()).await {
            Ok(client) => return Ok(client),
            Err(error) if Instant::now() > until => return Err(error.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A transfer: both legs and the audit record commit together or not at all.
fn transfer(producer: usize, from: &str, to: &str, amount: u64) -> Batch {
    Batch {
        id: new_batch_id(),
        messages: vec![
            Message::new("accounts", format!("{from}:-{amount}")),
            Message::new("accounts", format!("{to}:+{amount}")),
            Message::new(
                "audit",
                format!("producer {producer}: {from} -> {to} {amount}"),
            ),
        ],
        preconditions: Vec::new(),
    }
}

/// The participant's handler: runs inside the applier's transaction.
fn apply_transfer(
    transaction: &redb::WriteTransaction,
    batch: &CommittedBatch,
) -> Result<(), HandlerError> {
    let mut balances = transaction.open_table(BALANCES)?;
    for message in batch.messages.iter().filter(|m| m.topic == "accounts") {
        let text = std::str::from_utf8(&message.payload)?;
        let (account, delta) = text.split_once(':').ok_or("malformed leg")?;
        let delta: i64 = delta.parse()?;
        let current = balances.get(account)?.map_or(0, |value| value.value());
        balances.insert(account, current + delta)?;
    }
    let mut digest = transaction.open_table(DIGEST)?;
    let previous = digest.get("hash")?.map_or(0, |value| value.value());
    let mut hash = previous ^ batch.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for byte in batch.id.0 {
        hash = (hash ^ byte as u64).wrapping_mul(0x100_0000_01B3);
    }
    digest.insert("hash", hash)?;
    digest.insert("seq", batch.seq)?;
    Ok(())
}

/// (seq, state hash) of a participant.
fn view(database: &redb::Database) -> (u64, u64) {
    let read = || -> Result<(u64, u64), Box<dyn std::error::Error>> {
        let transaction = database.begin_read()?;
        let digest = match transaction.open_table(DIGEST) {
            Ok(table) => table,
            Err(_) => return Ok((0, 0)),
        };
        let seq = digest.get("seq")?.map_or(0, |value| value.value());
        let hash = digest.get("hash")?.map_or(0, |value| value.value());
        Ok((seq, hash))
    };
    read().unwrap_or((0, 0))
}

fn total_balance(database: &redb::Database) -> i64 {
    let read = || -> Result<i64, Box<dyn std::error::Error>> {
        let transaction = database.begin_read()?;
        let Ok(table) = transaction.open_table(BALANCES) else {
            return Ok(0);
        };
        let mut total = 0;
        for row in table.iter()? {
            total += row?.1.value();
        }
        Ok(total)
    };
    read().unwrap_or(i64::MIN)
}
