//! Bank transfers across two services, each applying every transfer exactly once, in the one
//! order the cluster agreed on — and a checker that proves it at the end.
//!
//! - Six accounts open with 1,000 each, in one batch that brackets the run's history (a closing
//!   batch ends it). Topic names carry a fresh run name, so runs never see each other's topics.
//! - Producers (concurrent tasks) submit transfers. Each transfer is one atomic batch: a record
//!   for the **accounts** service (debit and credit), the same record for the **audit** service,
//!   and a message on the paying account's debit topic, with the precondition that this topic is
//!   still at the offset the producer read from its view (the accounts service's database). Of
//!   two racing transfers from one account at most one commits; the other is rejected and retried
//!   with a fresh view, or declined if the fresh view shows too little money. Credits only add,
//!   so a transfer that passes its precondition never overdraws.
//! - The two services are exactly-once `Applier`s, each with its own redb database and its own
//!   client, subscribed to different coordinators when there are several.
//! - Unknown outcomes (a coordinator died mid-request) are resolved with `Client::status`, and if
//!   the registry knows nothing yet, by submitting again with the same batch id, which can never
//!   commit twice.
//!
//! At the end the checker confirms: money is conserved; no balance is negative, nor ever was;
//! both services applied the same transfers at the same seqs (same last seq, same hash); every
//! acknowledged transfer was applied exactly once, at its acknowledged seq; no rejected transfer
//! was applied. It prints a report and exits 1 on any violation (2 when the run itself failed).
//!
//! ```sh
//! cargo run --release -- dev                         # terminal 1: a local 3-node cluster
//! cargo run --release --example bank_transfer        # terminal 2: 10 s of transfers, then checks
//! ```
//!
//! While it runs, kill a coordinator — the leader, for the hard case (`target/release/ordo
//! status` says which node leads; `pgrep -af 'ordo serve'` shows each node's pid and `--id`):
//! `kill -9 PID`. The transfers pause for an election and go on, and the checks still hold. A
//! service whose subscription was on the killed node notices at the SDK's idle timeout
//! (`CLIENT_IDLE_TIMEOUT`, 4 s) and resumes after its cursor on another node; the
//! producers read their view from the accounts service, so while that one waits, transfers
//! slow down.
//!
//! `ordo dev` starts a killed node again two seconds later; it catches up from the others.
//!
//! Flags: `--duration 10s`, `--producers 4`, `--data-dir DIR` (for `accounts.redb` and
//! `audit.redb`; a fresh temporary directory by default, removed if every check held), and like
//! the CLI `--endpoints`, `--tls-dir`, `--client` (or `ORDO_ENDPOINTS`, `ORDO_TLS_DIR`,
//! `ORDO_CLIENT`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use ordo_core::rng::Prng;
use ordo_participant::applier::CURSOR_TABLE;
use ordo_participant::{
    Applier, ApplierError, Batch, BatchId, BatchStatus, Client, ClientConfig, CommittedBatch,
    DEV_ENDPOINTS, DEV_TLS_DIR, HandlerError, Message, Precondition, RejectReason, SubmitError,
    new_batch_id, parse_endpoints,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

type Error = Box<dyn std::error::Error + Send + Sync>;

const ACCOUNTS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];
const OPENING_BALANCE: i64 = 1_000;
/// Both services' applier cursor name (each in its own database).
const APPLIER_NAME: &str = "bank";

/// One SDK request (connect and round trip): short, so that a request to a killed coordinator
/// is retried elsewhere soon.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one `submit` retries before it reports an unknown outcome to us.
const SUBMIT_RETRY_TIMEOUT: Duration = Duration::from_secs(10);
/// After the run, how long a transfer with an unknown outcome keeps being resolved.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a producer waits for its view to show what it knows has committed.
const VIEW_WAIT: Duration = Duration::from_secs(2);
/// How long both services may take to apply the closing batch. A subscription on a killed
/// coordinator notices only at the SDK's idle timeout (4 s), then moves on.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// account → balance (accounts service).
const BALANCES: TableDefinition<&str, i64> = TableDefinition::new("balances");
/// account → messages in its debit topic, i.e. that topic's offset (accounts service).
const DEBIT_OFFSETS: TableDefinition<&str, u64> = TableDefinition::new("debit_offsets");
/// transfer (its batch id) → the seq it was applied at (both services).
const APPLIED: TableDefinition<&[u8], u64> = TableDefinition::new("applied_transfers");
/// The keys below (both services).
const SUMMARY: TableDefinition<&str, u64> = TableDefinition::new("summary");
/// The last batch this service applied.
const POSITION: &str = "position";
const LAST_TRANSFER_SEQ: &str = "last_transfer_seq";
/// A hash chained over every applied transfer's seq, batch id and record.
const TRANSFERS_HASH: &str = "transfers_hash";
/// Transfers applied a second time (must stay 0).
const DUPLICATES: &str = "duplicates";
/// Transfers that left the paying account below zero (must stay 0).
const OVERDRAFTS: &str = "overdrafts";
/// The seq of the closing batch, once applied.
const CLOSED_AT: &str = "closed_at";

#[derive(Parser)]
#[command(about = "Bank transfers through Ordo, applied exactly once by two services, checked")]
struct Arguments {
    /// Coordinator addresses, comma-separated.
    #[arg(long, env = "ORDO_ENDPOINTS", default_value = DEV_ENDPOINTS)]
    endpoints: String,
    /// Directory with ca.pem and a client-NAME.pem/.key pair.
    #[arg(long, env = "ORDO_TLS_DIR", default_value = DEV_TLS_DIR)]
    tls_dir: PathBuf,
    /// Which client identity to use (client-NAME.pem).
    #[arg(long, env = "ORDO_CLIENT", default_value = "cli")]
    client: String,
    /// How long the producers submit transfers.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent producer tasks.
    #[arg(long, default_value_t = 4)]
    producers: u64,
    /// Where the services keep accounts.redb and audit.redb; a fresh temporary directory
    /// (removed after a clean run) by default.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let (data_dir, temporary) = match prepare_data_dir(arguments.data_dir.as_deref()) {
        Ok(found) => found,
        Err(error) => {
            eprintln!("bank_transfer: error: {error}");
            return ExitCode::from(2);
        }
    };
    let (passed, code) = match run(&arguments, &data_dir).await {
        Ok(true) => (true, ExitCode::SUCCESS),
        Ok(false) => (false, ExitCode::FAILURE),
        Err(error) => {
            eprintln!("bank_transfer: error: {error}");
            (false, ExitCode::from(2))
        }
    };
    if let Some(temporary) = temporary
        && !passed
    {
        let kept = temporary.keep();
        println!(
            "bank_transfer: the services' databases are kept in {}",
            kept.display()
        );
    }
    code
}

/// The services' directory, and the temporary directory behind it when none was given.
fn prepare_data_dir(given: Option<&Path>) -> Result<(PathBuf, Option<tempfile::TempDir>), Error> {
    let Some(dir) = given else {
        let temporary = tempfile::Builder::new().prefix("ordo-bank-").tempdir()?;
        return Ok((temporary.path().to_path_buf(), Some(temporary)));
    };
    std::fs::create_dir_all(dir)?;
    for service in ["accounts", "audit"] {
        let path = dir.join(format!("{service}.redb"));
        if path.exists() {
            return Err(format!(
                "{} is left from an earlier run; give a fresh --data-dir",
                path.display()
            )
            .into());
        }
    }
    Ok((dir.to_path_buf(), None))
}

/// Opens the bank, runs the producers and both services, closes the bank, checks. Returns
/// whether every check held.
async fn run(arguments: &Arguments, data_dir: &Path) -> Result<bool, Error> {
    let endpoints = parse_endpoints(&arguments.endpoints)?;
    let connect_to = |endpoints| connect(endpoints, &arguments.tls_dir, &arguments.client);
    let producers_client = connect_to(endpoints.clone()).await?;
    let bank = Arc::new(Bank::new(&format!(
        "bank-{}",
        &new_batch_id().to_string()[24..]
    )));
    let opening_seq = bank.open(&producers_client).await?;
    println!(
        "bank_transfer: {} opened {} accounts of {OPENING_BALANCE} at seq {opening_seq}; \
         {} producers for {:?}; services' databases in {}",
        bank.name,
        ACCOUNTS.len(),
        arguments.producers,
        arguments.duration,
        data_dir.display()
    );

    // Each service is its own process in real life: its own client, its own database. The
    // audit service's client lists the endpoints rotated, so the two subscribe to different
    // coordinators.
    let mut rotated = endpoints.clone();
    rotated.rotate_left(1);
    let accounts = Service::start(
        "accounts",
        data_dir,
        opening_seq,
        connect_to(endpoints).await?,
        bank.accounts_service_topics(),
        apply_to_accounts,
        &bank,
    )?;
    let audit = Service::start(
        "audit",
        data_dir,
        opening_seq,
        connect_to(rotated).await?,
        vec![bank.audit_topic.clone()],
        apply_to_audit,
        &bank,
    )?;

    let started = Instant::now();
    let deadline = started + arguments.duration;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut producers = Vec::new();
    for number in 0..arguments.producers {
        let producer = Producer {
            bank: bank.clone(),
            client: producers_client.clone(),
            view: accounts.database.clone(),
            ledger: ledger.clone(),
            random: Prng::new(number ^ u64::from_le_bytes(new_batch_id().0[8..].try_into()?)),
        };
        producers.push(tokio::spawn(producer.produce(opening_seq, deadline)));
    }
    report_progress(started, deadline, &ledger, &accounts, &audit).await;
    for producer in producers {
        producer.await??;
    }
    let elapsed = started.elapsed();

    // Nothing of ours can commit after the closing batch: once both services applied it, their
    // state is final and every outcome is definite.
    let closing_seq = bank.close(&producers_client).await?;
    let accounts = accounts.finish(closing_seq).await?;
    let audit = audit.finish(closing_seq).await?;
    let ledger = resolve_unknown(&producers_client, &ledger).await;
    print_totals(&ledger, elapsed);
    Ok(check(&ledger, &accounts, &audit, closing_seq))
}

async fn connect(endpoints: Vec<SocketAddr>, tls_dir: &Path, name: &str) -> Result<Client, Error> {
    let mut config = ClientConfig::new(endpoints, tls_dir);
    config.client_name = Some(name.to_string());
    config.request_timeout = REQUEST_TIMEOUT;
    config.retry_timeout = SUBMIT_RETRY_TIMEOUT;
    Client::connect(config).await.map_err(|error| {
        format!("cannot reach the cluster ({error}); is `cargo run --release -- dev` running?")
            .into()
    })
}

// ----- the bank's topics and records -----

/// The run's topics: every name starts with the run's name.
struct Bank {
    name: String,
    accounts_topic: String,
    audit_topic: String,
    /// Followed by an account's name: the topic every transfer from that account writes to.
    debit_prefix: String,
}

/// What the services read from a message's payload (text, one record per message).
enum Record {
    Open { account: String, amount: i64 },
    Transfer(Transfer),
    Close,
}

#[derive(Clone, Debug)]
struct Transfer {
    from: String,
    to: String,
    amount: i64,
}

impl Bank {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            accounts_topic: format!("{name}.accounts"),
            audit_topic: format!("{name}.audit"),
            debit_prefix: format!("{name}.debits."),
        }
    }

    fn debit_topic(&self, account: &str) -> String {
        format!("{}{account}", self.debit_prefix)
    }

    /// The account whose debit topic `topic` is.
    fn debit_account<'a>(&self, topic: &'a str) -> Option<&'a str> {
        topic.strip_prefix(&self.debit_prefix)
    }

    fn accounts_service_topics(&self) -> Vec<String> {
        let debits = ACCOUNTS.iter().map(|account| self.debit_topic(account));
        std::iter::once(self.accounts_topic.clone())
            .chain(debits)
            .collect()
    }

    /// One batch opens every account, for both services; it commits only on a fresh topic.
    async fn open(&self, client: &Client) -> Result<u64, Error> {
        let mut messages = Vec::new();
        for account in ACCOUNTS {
            let record = Record::Open {
                account: account.to_string(),
                amount: OPENING_BALANCE,
            };
            messages.push(Message::new(&self.accounts_topic, record.encode()));
            messages.push(Message::new(&self.audit_topic, record.encode()));
        }
        let precondition = Precondition::TopicOffset {
            topic: self.accounts_topic.clone(),
            offset: 0,
        };
        self.commit(client, messages, vec![precondition], "open")
            .await
    }

    /// One batch to both services after every transfer: the end of the run's history.
    async fn close(&self, client: &Client) -> Result<u64, Error> {
        let messages = vec![
            Message::new(&self.accounts_topic, Record::Close.encode()),
            Message::new(&self.audit_topic, Record::Close.encode()),
        ];
        self.commit(client, messages, Vec::new(), "close").await
    }

    async fn commit(
        &self,
        client: &Client,
        messages: Vec<Message>,
        preconditions: Vec<Precondition>,
        what: &str,
    ) -> Result<u64, Error> {
        let batch = Batch {
            id: new_batch_id(),
            messages,
            preconditions,
        };
        match settle(client, batch, Instant::now() + RESOLVE_TIMEOUT).await? {
            Settled::Committed(seq) => Ok(seq),
            Settled::Rejected(reason, _) => {
                Err(format!("could not {what} the bank: {reason}").into())
            }
            Settled::Unknown => Err(format!("could not {what} the bank: no outcome").into()),
        }
    }

    /// Debit and credit for the accounts service, the same record for the audit service, and
    /// the paying account's debit topic, which must still be at `debit_offset`.
    fn transfer_batch(&self, transfer: &Transfer, debit_offset: u64) -> Batch {
        let record = Record::Transfer(transfer.clone()).encode();
        let debit_topic = self.debit_topic(&transfer.from);
        Batch {
            id: new_batch_id(),
            messages: vec![
                Message::new(&self.accounts_topic, record.clone()),
                Message::new(&self.audit_topic, record.clone()),
                Message::new(debit_topic.clone(), record),
            ],
            preconditions: vec![Precondition::TopicOffset {
                topic: debit_topic,
                offset: debit_offset,
            }],
        }
    }
}

impl Record {
    fn encode(&self) -> String {
        match self {
            Record::Open { account, amount } => format!("open {account} {amount}"),
            Record::Transfer(t) => format!("transfer {} {} {}", t.from, t.to, t.amount),
            Record::Close => "close".to_string(),
        }
    }

    fn parse(payload: &[u8]) -> Result<Self, HandlerError> {
        let text = std::str::from_utf8(payload)?;
        let words: Vec<&str> = text.split(' ').collect();
        match words[..] {
            ["open", account, amount] => Ok(Record::Open {
                account: account.to_string(),
                amount: amount.parse()?,
            }),
            ["transfer", from, to, amount] => Ok(Record::Transfer(Transfer {
                from: from.to_string(),
                to: to.to_string(),
                amount: amount.parse()?,
            })),
            ["close"] => Ok(Record::Close),
            _ => Err(format!("not a bank record: {text:?}").into()),
        }
    }
}

// ----- the two services -----

/// A service: its database, and the applier task that feeds it.
struct Service {
    name: &'static str,
    database: Arc<Database>,
    applier: tokio::task::JoinHandle<Result<(), ApplierError>>,
}

/// What a service holds once the bank is closed.
struct ServiceState {
    name: &'static str,
    last_transfer_seq: u64,
    transfers_hash: u64,
    duplicates: u64,
    overdrafts: u64,
    closed_at: u64,
    applied: BTreeMap<BatchId, u64>,
    balances: BTreeMap<String, i64>,
}

type ServiceHandler = fn(&Bank, &WriteTransaction, &CommittedBatch) -> Result<(), HandlerError>;

impl Service {
    /// Creates the service's database and applies from the bank's opening batch on.
    fn start(
        name: &'static str,
        data_dir: &Path,
        opening_seq: u64,
        client: Client,
        topics: Vec<String>,
        handler: ServiceHandler,
        bank: &Arc<Bank>,
    ) -> Result<Self, Error> {
        let database = Arc::new(Database::create(data_dir.join(format!("{name}.redb")))?);
        initialize(&database, opening_seq)?;
        let applier = Applier::new(client, database.clone(), APPLIER_NAME, topics);
        let bank = bank.clone();
        let applier = tokio::spawn(async move {
            let result = applier
                .run(move |transaction, batch| handler(&bank, transaction, batch))
                .await;
            if let Err(error) = &result {
                eprintln!("bank_transfer: the {name} service stopped: {error}");
            }
            result
        });
        Ok(Self {
            name,
            database,
            applier,
        })
    }

    fn position(&self) -> u64 {
        summary(&self.database, POSITION).unwrap_or(0)
    }

    /// Waits until the service applied the closing batch, stops it, and reads its state.
    async fn finish(self, closing_seq: u64) -> Result<ServiceState, Error> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while summary(&self.database, CLOSED_AT)? != closing_seq {
            if self.applier.is_finished() {
                let reason = match self.applier.await {
                    Ok(Err(error)) => error.to_string(),
                    Ok(Ok(())) => "its subscription ended".to_string(),
                    Err(error) => error.to_string(),
                };
                let name = self.name;
                return Err(
                    format!("the {name} service stopped before the close: {reason}").into(),
                );
            }
            if Instant::now() > deadline {
                let position = self.position();
                return Err(format!(
                    "the {} service is at seq {position}, not at the closing batch (seq \
                     {closing_seq}), after {SETTLE_TIMEOUT:?}",
                    self.name
                )
                .into());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        self.applier.abort();
        let _ = self.applier.await;
        read_state(self.name, &self.database)
    }
}

/// A fresh database: the service's tables, and the applier's cursor just before the opening
/// batch. The cluster's history before it belongs to other programs, and the `Applier`
/// resumes after the cursor it finds in `CURSOR_TABLE`.
fn initialize(database: &Database, opening_seq: u64) -> Result<(), Error> {
    let transaction = database.begin_write()?;
    transaction.open_table(BALANCES)?;
    transaction.open_table(DEBIT_OFFSETS)?;
    transaction.open_table(APPLIED)?;
    transaction.open_table(SUMMARY)?;
    transaction
        .open_table(CURSOR_TABLE)?
        .insert(APPLIER_NAME, opening_seq - 1)?;
    transaction.commit()?;
    Ok(())
}

/// The accounts service: balances and the debit topics' offsets, in the applier's transaction.
fn apply_to_accounts(
    bank: &Bank,
    transaction: &WriteTransaction,
    batch: &CommittedBatch,
) -> Result<(), HandlerError> {
    for message in &batch.messages {
        if message.topic == bank.accounts_topic {
            match Record::parse(&message.payload)? {
                Record::Open { account, amount } => {
                    transaction
                        .open_table(BALANCES)?
                        .insert(account.as_str(), amount)?;
                }
                Record::Transfer(transfer) => {
                    move_money(transaction, &transfer)?;
                    record_transfer(transaction, batch, &transfer)?;
                }
                Record::Close => set(transaction, CLOSED_AT, batch.seq)?,
            }
        } else if let Some(account) = bank.debit_account(&message.topic) {
            let mut offsets = transaction.open_table(DEBIT_OFFSETS)?;
            let offset = offsets.get(account)?.map_or(0, |value| value.value());
            offsets.insert(account, offset + 1)?;
        }
    }
    set(transaction, POSITION, batch.seq)
}

/// Debit, then credit. The precondition, not this handler, keeps balances from going negative:
/// an overdraft is counted, for the checker to report.
fn move_money(transaction: &WriteTransaction, transfer: &Transfer) -> Result<(), HandlerError> {
    let overflow = || format!("{transfer:?} overflows a balance");
    let mut balances = transaction.open_table(BALANCES)?;
    let paying = balances
        .get(transfer.from.as_str())?
        .map_or(0, |v| v.value());
    let paying = paying.checked_sub(transfer.amount).ok_or_else(overflow)?;
    balances.insert(transfer.from.as_str(), paying)?;
    let receiving = balances.get(transfer.to.as_str())?.map_or(0, |v| v.value());
    let receiving = receiving
        .checked_add(transfer.amount)
        .ok_or_else(overflow)?;
    balances.insert(transfer.to.as_str(), receiving)?;
    drop(balances);
    if paying < 0 {
        add(transaction, OVERDRAFTS, 1)?;
    }
    Ok(())
}

/// The audit service: which transfers it recorded, at which seq.
fn apply_to_audit(
    bank: &Bank,
    transaction: &WriteTransaction,
    batch: &CommittedBatch,
) -> Result<(), HandlerError> {
    for message in batch
        .messages
        .iter()
        .filter(|m| m.topic == bank.audit_topic)
    {
        match Record::parse(&message.payload)? {
            Record::Open { .. } => {}
            Record::Transfer(transfer) => record_transfer(transaction, batch, &transfer)?,
            Record::Close => set(transaction, CLOSED_AT, batch.seq)?,
        }
    }
    set(transaction, POSITION, batch.seq)
}

/// Both services: the transfer's seq under its batch id (a second sighting is a duplicate), and
/// the hash chain over every transfer applied.
fn record_transfer(
    transaction: &WriteTransaction,
    batch: &CommittedBatch,
    transfer: &Transfer,
) -> Result<(), HandlerError> {
    let seen_before = transaction
        .open_table(APPLIED)?
        .insert(batch.id.0.as_slice(), batch.seq)?
        .is_some();
    if seen_before {
        add(transaction, DUPLICATES, 1)?;
    }
    let previous = transaction
        .open_table(SUMMARY)?
        .get(TRANSFERS_HASH)?
        .map_or(0, |value| value.value());
    let record = Record::Transfer(transfer.clone()).encode();
    set(
        transaction,
        TRANSFERS_HASH,
        chain(previous, batch.seq, &batch.id, &record),
    )?;
    set(transaction, LAST_TRANSFER_SEQ, batch.seq)
}

/// FNV-1a over the previous hash, the seq, the batch id and the record.
fn chain(previous: u64, seq: u64, id: &BatchId, record: &str) -> u64 {
    let bytes = previous.to_le_bytes().into_iter().chain(seq.to_le_bytes());
    let bytes = bytes.chain(id.0).chain(record.bytes());
    bytes.fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn set(transaction: &WriteTransaction, key: &str, value: u64) -> Result<(), HandlerError> {
    transaction.open_table(SUMMARY)?.insert(key, value)?;
    Ok(())
}

fn add(transaction: &WriteTransaction, key: &str, amount: u64) -> Result<(), HandlerError> {
    let mut table = transaction.open_table(SUMMARY)?;
    let value = table.get(key)?.map_or(0, |value| value.value());
    table.insert(key, value + amount)?;
    Ok(())
}

fn summary(database: &Database, key: &str) -> Result<u64, Error> {
    let table = database.begin_read()?.open_table(SUMMARY)?;
    Ok(table.get(key)?.map_or(0, |value| value.value()))
}

fn read_state(name: &'static str, database: &Database) -> Result<ServiceState, Error> {
    let read = database.begin_read()?;
    let summary = read.open_table(SUMMARY)?;
    let value = |key| -> Result<u64, Error> { Ok(summary.get(key)?.map_or(0, |v| v.value())) };
    let mut applied = BTreeMap::new();
    for row in read.open_table(APPLIED)?.iter()? {
        let (id, seq) = row?;
        applied.insert(BatchId(id.value().try_into()?), seq.value());
    }
    let mut balances = BTreeMap::new();
    for row in read.open_table(BALANCES)?.iter()? {
        let (account, balance) = row?;
        balances.insert(account.value().to_string(), balance.value());
    }
    Ok(ServiceState {
        name,
        last_transfer_seq: value(LAST_TRANSFER_SEQ)?,
        transfers_hash: value(TRANSFERS_HASH)?,
        duplicates: value(DUPLICATES)?,
        overdrafts: value(OVERDRAFTS)?,
        closed_at: value(CLOSED_AT)?,
        applied,
        balances,
    })
}

// ----- producers -----

/// What the producers were told, by batch id.
#[derive(Default)]
struct Ledger {
    /// Committed, at this seq.
    acknowledged: BTreeMap<BatchId, u64>,
    /// Rejected by the precondition: must never be applied.
    /// Rejected, and who said so: must never be applied.
    rejected: BTreeMap<BatchId, String>,
    /// No definite outcome before the producer gave up.
    unknown: BTreeSet<BatchId>,
    /// Transfers dropped because a fresh view showed too little money.
    declined: u64,
}

/// A producer's view: the accounts service's state as of one seq.
struct View {
    position: u64,
    accounts: BTreeMap<String, (i64, u64)>,
}

impl View {
    fn read(database: &Database) -> Result<View, Error> {
        let read = database.begin_read()?;
        let balances = read.open_table(BALANCES)?;
        let offsets = read.open_table(DEBIT_OFFSETS)?;
        let mut accounts = BTreeMap::new();
        for account in ACCOUNTS {
            let balance = balances.get(account)?.map_or(0, |value| value.value());
            let offset = offsets.get(account)?.map_or(0, |value| value.value());
            accounts.insert(account.to_string(), (balance, offset));
        }
        let position = read.open_table(SUMMARY)?.get(POSITION)?;
        let position = position.map_or(0, |value| value.value());
        Ok(View { position, accounts })
    }

    /// Waits (up to [`VIEW_WAIT`]) for a view that satisfies `fresh`; returns the last read.
    async fn wait(database: &Database, fresh: impl Fn(&View) -> bool) -> Result<View, Error> {
        let deadline = Instant::now() + VIEW_WAIT;
        loop {
            let view = View::read(database)?;
            if fresh(&view) || Instant::now() > deadline {
                return Ok(view);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn balance(&self, account: &str) -> i64 {
        self.accounts
            .get(account)
            .map_or(0, |(balance, _)| *balance)
    }

    fn debit_offset(&self, account: &str) -> u64 {
        self.accounts.get(account).map_or(0, |(_, offset)| *offset)
    }
}

struct Producer {
    bank: Arc<Bank>,
    client: Client,
    /// The accounts service's database, read as this producer's view.
    view: Arc<Database>,
    ledger: Arc<Mutex<Ledger>>,
    random: Prng,
}

/// A submit's definite outcome, or none.
enum Settled {
    Committed(u64),
    /// Why, and who said so (the submit itself, or a status query after a lost answer).
    Rejected(RejectReason, &'static str),
    Unknown,
}

impl Producer {
    /// Transfers random amounts between random accounts until `deadline`.
    async fn produce(mut self, opening_seq: u64, deadline: Instant) -> Result<(), Error> {
        // The last seq this producer saw commit: its next view must include it.
        let mut seen_seq = opening_seq;
        while Instant::now() < deadline {
            let view = View::wait(&self.view, |view| view.position >= seen_seq).await?;
            let Some(transfer) = self.choose(&view) else {
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            };
            if let Some(seq) = self.transfer(transfer, view, deadline).await? {
                seen_seq = seq;
            }
        }
        Ok(())
    }

    /// Up to the whole balance of a random account with money (at most [`OPENING_BALANCE`]),
    /// to another account: racing transfers from one account would often overdraw it without
    /// the precondition.
    fn choose(&mut self, view: &View) -> Option<Transfer> {
        let count = ACCOUNTS.len() as u64;
        let from = self.random.below(count) as usize;
        let to = (from + 1 + self.random.below(count - 1) as usize) % ACCOUNTS.len();
        let most = view.balance(ACCOUNTS[from]).min(OPENING_BALANCE);
        (most > 0).then(|| Transfer {
            from: ACCOUNTS[from].to_string(),
            to: ACCOUNTS[to].to_string(),
            amount: 1 + self.random.below(most as u64) as i64,
        })
    }

    /// Submits one transfer until it commits, is declined, or its outcome stays unknown. A
    /// rejection means another transfer from the same account committed first: wait for the
    /// view to show it, then try again if the money is still there.
    async fn transfer(
        &mut self,
        transfer: Transfer,
        mut view: View,
        deadline: Instant,
    ) -> Result<Option<u64>, Error> {
        loop {
            let batch = self
                .bank
                .transfer_batch(&transfer, view.debit_offset(&transfer.from));
            let id = batch.id;
            let settled = settle(&self.client, batch, deadline + RESOLVE_TIMEOUT).await?;
            let actual = {
                let mut ledger = self.ledger.lock().expect("ledger lock");
                match settled {
                    Settled::Committed(seq) => {
                        ledger.acknowledged.insert(id, seq);
                        return Ok(Some(seq));
                    }
                    Settled::Unknown => {
                        ledger.unknown.insert(id);
                        return Ok(None);
                    }
                    Settled::Rejected(reason, told_by) => {
                        let RejectReason::TopicOffset { actual, .. } = reason else {
                            return Err(format!("rejected: {reason}").into());
                        };
                        ledger.rejected.insert(id, format!("{told_by}: {reason}"));
                        actual
                    }
                }
            };
            view = View::wait(&self.view, |view| {
                view.debit_offset(&transfer.from) >= actual
            })
            .await?;
            if view.balance(&transfer.from) < transfer.amount {
                self.ledger.lock().expect("ledger lock").declined += 1;
                return Ok(None);
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}

/// Submits `batch` until its outcome is definite or `give_up_at` passes. After a timeout or a
/// lost leader the batch may or may not have committed: ask the registry, and if it knows
/// nothing yet, submit again with the same id, which can never commit a second copy.
async fn settle(client: &Client, batch: Batch, give_up_at: Instant) -> Result<Settled, Error> {
    loop {
        let problem = match client.submit(batch.clone()).await {
            Ok(committed) => return Ok(Settled::Committed(committed.seq)),
            Err(SubmitError::Rejected { reason }) => {
                return Ok(Settled::Rejected(reason, "submit"));
            }
            Err(error @ (SubmitError::Timeout { .. } | SubmitError::Unavailable { .. })) => error,
            Err(error) => return Err(format!("batch {}: {error}", batch.id).into()),
        };
        match client.status(batch.id).await {
            Ok(BatchStatus::Committed { seq, .. }) => return Ok(Settled::Committed(seq)),
            Ok(BatchStatus::Rejected { reason }) => {
                return Ok(Settled::Rejected(reason, "status"));
            }
            // Its id aged out of the registry: it may have committed, and never will now.
            Ok(BatchStatus::BeyondHorizon { .. }) => return Ok(Settled::Unknown),
            Ok(BatchStatus::Unknown) | Err(_) => {}
        }
        if Instant::now() >= give_up_at {
            eprintln!(
                "bank_transfer: batch {}: outcome unknown: {problem}",
                batch.id
            );
            return Ok(Settled::Unknown);
        }
    }
}

/// After the closing batch an outcome the registry still does not know can never commit.
async fn resolve_unknown(client: &Client, ledger: &Mutex<Ledger>) -> Ledger {
    let mut ledger = std::mem::take(&mut *ledger.lock().expect("ledger lock"));
    for id in std::mem::take(&mut ledger.unknown) {
        match client.status(id).await {
            Ok(BatchStatus::Committed { seq, .. }) => {
                ledger.acknowledged.insert(id, seq);
            }
            Ok(BatchStatus::Rejected { reason }) => {
                ledger
                    .rejected
                    .insert(id, format!("status after the close: {reason}"));
            }
            Ok(BatchStatus::Unknown | BatchStatus::BeyondHorizon { .. }) | Err(_) => {
                ledger.unknown.insert(id);
            }
        }
    }
    ledger
}

// ----- the report -----

/// One line a second while the producers run.
async fn report_progress(
    started: Instant,
    deadline: Instant,
    ledger: &Mutex<Ledger>,
    accounts: &Service,
    audit: &Service,
) {
    while Instant::now() < deadline {
        let next = Instant::now() + Duration::from_secs(1);
        tokio::time::sleep_until(next.min(deadline).into()).await;
        let (acknowledged, rejected) = {
            let ledger = ledger.lock().expect("ledger lock");
            (ledger.acknowledged.len(), ledger.rejected.len())
        };
        println!(
            "bank_transfer: {:>4.1} s: {acknowledged} transfers acknowledged, {rejected} \
             rejected | accounts at seq {}, audit at seq {}",
            started.elapsed().as_secs_f64(),
            accounts.position(),
            audit.position()
        );
    }
}

fn print_totals(ledger: &Ledger, elapsed: Duration) {
    let acknowledged = ledger.acknowledged.len();
    let rate = acknowledged as f64 / elapsed.as_secs_f64();
    println!("bank_transfer: transfers in {:.1} s", elapsed.as_secs_f64());
    println!("  acknowledged: {acknowledged} ({rate:.0}/s)");
    println!(
        "  rejected:     {} (a racing transfer moved the account first; retried with a fresh view)",
        ledger.rejected.len()
    );
    println!(
        "  declined:     {} (the fresh view showed too little money)",
        ledger.declined
    );
    println!(
        "  unknown:      {} (no outcome; never committed)",
        ledger.unknown.len()
    );
}

/// Prints one line per check and returns whether every check held.
fn check(ledger: &Ledger, accounts: &ServiceState, audit: &ServiceState, closing_seq: u64) -> bool {
    let results = [
        check_conserved(accounts),
        check_not_negative(accounts),
        check_agree(accounts, audit, closing_seq),
        check_exactly_once(ledger, &[accounts, audit]),
        check_rejected_not_applied(ledger, &[accounts, audit]),
    ];
    println!("bank_transfer: checks");
    for (name, result) in &results {
        match result {
            Ok(detail) => println!("  [ok] {name}: {detail}"),
            Err(detail) => println!("  [VIOLATED] {name}: {detail}"),
        }
    }
    let violated = results.iter().filter(|(_, result)| result.is_err()).count();
    if violated == 0 {
        println!("bank_transfer: PASS: every check held");
    } else {
        println!(
            "bank_transfer: FAIL: {violated} of {} checks violated",
            results.len()
        );
    }
    violated == 0
}

type CheckResult = (&'static str, Result<String, String>);

fn check_conserved(accounts: &ServiceState) -> CheckResult {
    let total: i128 = accounts.balances.values().map(|b| i128::from(*b)).sum();
    let opening = i128::from(OPENING_BALANCE) * ACCOUNTS.len() as i128;
    let result = if total == opening {
        Ok(format!(
            "the balances sum to {total}, as they did at the opening"
        ))
    } else {
        Err(format!(
            "the balances sum to {total}, but the opening total was {opening}"
        ))
    };
    ("money conserved", result)
}

fn check_not_negative(accounts: &ServiceState) -> CheckResult {
    let negative: Vec<String> = accounts
        .balances
        .iter()
        .filter(|(_, balance)| **balance < 0)
        .map(|(account, balance)| format!("{account} at {balance}"))
        .collect();
    let lowest = accounts.balances.values().min().copied().unwrap_or(0);
    let overdrafts = accounts.overdrafts;
    let result = if negative.is_empty() && overdrafts == 0 {
        Ok(format!(
            "the lowest balance is {lowest}; no transfer ever overdrew"
        ))
    } else {
        Err(format!(
            "{overdrafts} transfers overdrew the paying account when applied; negative final \
             balances: {}",
            if negative.is_empty() {
                "none".to_string()
            } else {
                negative.join(", ")
            }
        ))
    };
    ("no negative balance", result)
}

fn check_agree(accounts: &ServiceState, audit: &ServiceState, closing_seq: u64) -> CheckResult {
    let describe = |state: &ServiceState| {
        format!(
            "{} applied {} transfers, the last at seq {}, hash {:016x}, closed at seq {}",
            state.name,
            state.applied.len(),
            state.last_transfer_seq,
            state.transfers_hash,
            state.closed_at
        )
    };
    let same = accounts.applied == audit.applied
        && accounts.last_transfer_seq == audit.last_transfer_seq
        && accounts.transfers_hash == audit.transfers_hash
        && accounts.closed_at == closing_seq
        && audit.closed_at == closing_seq;
    let result = if same {
        Ok(format!(
            "both applied {} transfers, the last at seq {}, hash {:016x}",
            accounts.applied.len(),
            accounts.last_transfer_seq,
            accounts.transfers_hash
        ))
    } else {
        Err(format!("{}; but {}", describe(accounts), describe(audit)))
    };
    ("services agree", result)
}

fn check_exactly_once(ledger: &Ledger, services: &[&ServiceState]) -> CheckResult {
    let mut problems = Vec::new();
    for service in services {
        if service.duplicates > 0 {
            problems.push(format!(
                "{} applied {} transfers twice",
                service.name, service.duplicates
            ));
        }
        for (id, seq) in &ledger.acknowledged {
            match service.applied.get(id) {
                None => problems.push(format!(
                    "{} never applied transfer {id}, acknowledged at seq {seq}",
                    service.name
                )),
                Some(applied) if applied != seq => problems.push(format!(
                    "{} applied transfer {id} at seq {applied}, acknowledged at seq {seq}",
                    service.name
                )),
                Some(_) => {}
            }
        }
        let submitted =
            |id| ledger.acknowledged.contains_key(id) || ledger.rejected.contains_key(id);
        let strangers = service.applied.keys().filter(|id| !submitted(id)).count();
        if strangers > 0 {
            problems.push(format!(
                "{} applied {strangers} transfers that were never acknowledged",
                service.name
            ));
        }
    }
    let result = if problems.is_empty() {
        Ok(format!(
            "all {} acknowledged transfers applied once each, at their acknowledged seq, by both \
             services",
            ledger.acknowledged.len()
        ))
    } else {
        Err(summarize(problems))
    };
    ("every acknowledged transfer applied exactly once", result)
}

fn check_rejected_not_applied(ledger: &Ledger, services: &[&ServiceState]) -> CheckResult {
    let mut problems = Vec::new();
    for service in services {
        for (id, why) in &ledger.rejected {
            if let Some(seq) = service.applied.get(id) {
                problems.push(format!(
                    "{} applied transfer {id} at seq {seq}, but it was rejected ({why})",
                    service.name
                ));
            }
        }
    }
    let result = if problems.is_empty() {
        Ok(format!(
            "none of {} rejected transfers applied",
            ledger.rejected.len()
        ))
    } else {
        Err(summarize(problems))
    };
    ("rejected transfers never applied", result)
}

/// The first few problems and how many there were.
fn summarize(problems: Vec<String>) -> String {
    const SHOWN: usize = 3;
    let count = problems.len();
    let mut text = problems
        .into_iter()
        .take(SHOWN)
        .collect::<Vec<_>>()
        .join("; ");
    if count > SHOWN {
        text.push_str(&format!("; and {} more", count - SHOWN));
    }
    text
}
