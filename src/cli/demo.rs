//! The `ordo dev --demo` workload: several producers submit atomic transfer batches (a debit, a
//! credit and an audit record, all or nothing) while two participants apply the committed
//! batches into their own redb databases through the exactly-once `Applier`. Every two seconds
//! it prints both participants' position and state hash. Halfway through it kills the leader
//! with SIGKILL and reports the election (who, how long) and when producers were acknowledged
//! again. At the end it checks that the participants agree, that money is conserved, and that
//! every acknowledged batch is committed at the seq it was acknowledged with and was applied.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ordo_common::client::{ClientRequest, ClientResponse, NodeRole};
use ordo_participant::{
    Applier, Batch, BatchId, BatchStatus, Client, ClientConfig, ClientTls, CommittedBatch,
    HandlerError, Message, NodeConnection, SubmitError, new_batch_id,
};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const BALANCES: TableDefinition<&str, i64> = TableDefinition::new("balances");
const DIGEST: TableDefinition<&str, u64> = TableDefinition::new("digest");
const ACCOUNTS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];
const PRODUCERS: usize = 3;

/// Acknowledged batches whose outcome the demo checks at the end, at most (the first ones).
const CHECKED_ACKS_MAX: usize = 1_000_000;
/// Status queries in flight at once while checking acknowledged batches.
const CHECKS_IN_FLIGHT: usize = 64;

/// How the demo kills a node (`ordo dev` knows their processes): SIGKILL to node `id`.
pub type KillNode = Box<dyn Fn(u64) -> std::io::Result<()> + Send>;

/// Runs the demo for `duration`; with `kill`, kills the leader halfway. Returns whether every
/// check held.
pub async fn run(
    endpoints: Vec<SocketAddr>,
    dir: &Path,
    duration: Duration,
    kill: Option<KillNode>,
) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    let addresses = endpoints.clone();
    let mut config = ClientConfig::new(endpoints, dir.join("tls"));
    config.client_name = Some("demo".into());
    let client = connect_with_patience(config).await?;
    println!(
        "demo: {PRODUCERS} producers submit atomic transfers; participants A and B apply them"
    );

    let acknowledged = Arc::new(AtomicU64::new(0));
    let last_seq = Arc::new(AtomicU64::new(0));
    let acks: Arc<std::sync::Mutex<Vec<(BatchId, u64)>>> = Arc::default();
    let deadline = Instant::now() + duration;
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let (client, acknowledged, last_seq, acks) = (
            client.clone(),
            acknowledged.clone(),
            last_seq.clone(),
            acks.clone(),
        );
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
                let id = batch.id;
                match client.submit(batch).await {
                    Ok(committed) => {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                        last_seq.fetch_max(committed.seq, Ordering::Relaxed);
                        let mut acks = acks.lock().expect("acks lock");
                        if acks.len() < CHECKED_ACKS_MAX {
                            acks.push((id, committed.seq));
                        }
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

    let mut kill = kill.map(|kill| (kill, Instant::now() + duration / 2));
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if let Some((_, at)) = &kill
            && Instant::now() >= *at
        {
            let (kill, _) = kill.take().expect("checked");
            kill_the_leader(&addresses, dir, kill, &acknowledged).await;
        }
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
    let acks = std::mem::take(&mut *acks.lock().expect("acks lock"));
    let (checked, lost) = check_acknowledged(&client, acks).await;
    let (a, b) = (view(&participants[0].1), view(&participants[1].1));
    let total_a = total_balance(&participants[0].1);
    let agree = a == b;
    let complete = a.0 >= target;
    println!(
        "demo: final: A at seq {} hash {:016x}; B at seq {} hash {:016x}",
        a.0, a.1, b.0, b.1
    );
    println!(
        "demo: acknowledged batches committed at their seq: {checked} checked, {} lost",
        lost.len()
    );
    for problem in lost.iter().take(10) {
        println!("demo:   {problem}");
    }
    println!(
        "demo: no acknowledged batch lost: {}; participants agree: {}; every acknowledged batch applied (through seq {target}): {}; money conserved (sum {total_a}): {}",
        yes(lost.is_empty()),
        yes(agree),
        yes(complete),
        yes(total_a == 0)
    );
    Ok(lost.is_empty() && agree && complete && total_a == 0)
}

/// Finds the leader, kills it, and reports who was elected and how long it took, and when the
/// producers were acknowledged again.
async fn kill_the_leader(
    addresses: &[SocketAddr],
    dir: &Path,
    kill: KillNode,
    acknowledged: &AtomicU64,
) {
    let Ok(tls) = ClientTls::load(&dir.join("tls"), Some("demo")) else {
        eprintln!("demo: cannot load the demo's certificate; not killing the leader");
        return;
    };
    let Some((leader, term)) = find_leader(addresses, &tls, None).await else {
        println!("demo: no leader to kill right now; skipping the failover");
        return;
    };
    let before = acknowledged.load(Ordering::Relaxed);
    println!("demo: ---- kill -9 of the leader, node {leader} (term {term}) ----");
    let killed_at = Instant::now();
    if let Err(error) = kill(leader) {
        eprintln!("demo: cannot kill node {leader}: {error}");
        return;
    }
    let mut elected = None;
    let mut resumed = None;
    while killed_at.elapsed() < Duration::from_secs(30) && (elected.is_none() || resumed.is_none())
    {
        if resumed.is_none() && acknowledged.load(Ordering::Relaxed) > before + PRODUCERS as u64 {
            resumed = Some(killed_at.elapsed());
        }
        if elected.is_none()
            && let Some(new) = find_leader(addresses, &tls, Some(leader)).await
        {
            elected = Some((new, killed_at.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match elected {
        Some(((new, term), took)) => println!(
            "demo: node {new} elected leader (term {term}) {:.2} s after the kill",
            took.as_secs_f64()
        ),
        None => println!("demo: no new leader within 30 s of the kill"),
    }
    if let Some(took) = resumed {
        println!(
            "demo: producers acknowledged again {:.2} s after the kill; ordo dev restarts node {leader}",
            took.as_secs_f64()
        );
    }
}

/// The node that says it leads (not `except`), and its term.
async fn find_leader(
    addresses: &[SocketAddr],
    tls: &ClientTls,
    except: Option<u64>,
) -> Option<(u64, u64)> {
    for address in addresses {
        let Ok(connection) =
            NodeConnection::connect(*address, tls, Duration::from_millis(500)).await
        else {
            continue;
        };
        if let Ok(ClientResponse::Status(status)) = connection.request(&ClientRequest::Status).await
            && status.role == NodeRole::Leader
            && Some(status.id) != except
        {
            return Some((status.id, status.term));
        }
    }
    None
}

/// Asks the cluster for the outcome of every acknowledged batch: each must be committed, at
/// the seq it was acknowledged with. Returns how many were checked and what was wrong.
async fn check_acknowledged(client: &Client, acks: Vec<(BatchId, u64)>) -> (usize, Vec<String>) {
    let checked = acks.len();
    let acks = Arc::new(std::sync::Mutex::new(acks));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CHECKS_IN_FLIGHT {
        let (client, acks) = (client.clone(), acks.clone());
        tasks.spawn(async move {
            let mut problems = Vec::new();
            loop {
                let next = acks.lock().expect("acks lock").pop();
                let Some((id, seq)) = next else {
                    return problems;
                };
                match client.status(id).await {
                    Ok(BatchStatus::Committed { seq: stored, .. }) if stored == seq => {}
                    Ok(other) => {
                        problems.push(format!("batch {id} acknowledged at seq {seq}: {other:?}"))
                    }
                    Err(error) => {
                        problems.push(format!("batch {id}: cannot ask its status: {error}"))
                    }
                }
            }
        });
    }
    let mut problems = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(found) => problems.extend(found),
            Err(error) => problems.push(format!("a check failed: {error}")),
        }
    }
    (checked, problems)
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
