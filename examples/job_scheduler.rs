//! A job scheduler made of worker processes that elect one scheduler, take a lock to work,
//! and write only fenced batches — and a checker that proves it held while the scheduler was
//! killed and a worker was frozen in the middle of a job.
//!
//! - Every worker (a process of its own: this binary with `--worker N`) opens a session and
//!   campaigns for the run's election. The one elected is the scheduler: it publishes jobs
//!   0, 1, 2, … to the jobs topic, each batch fenced on its epoch (`Precondition::Leader`) and
//!   on the topic's offset, so a deposed scheduler can never publish and no job number is
//!   published twice.
//! - Every worker, the scheduler included, does jobs: it takes the run's lock, finds the next
//!   job not done (the done topic's offset), works on it for a moment, and writes its result
//!   fenced on the lock's token (`Precondition::LockHeld`), then releases the lock.
//! - This program starts the workers, then plays two faults: it kills the scheduler with
//!   SIGKILL (a supervisor restarts it a second later), and it freezes with SIGSTOP a worker
//!   that just took the lock, for longer than the session TTL, then lets it go on. The frozen
//!   worker's session expires, the lock moves to the next worker, and when the frozen one wakes
//!   its late result is refused as `Fenced`.
//!
//! At the end the checker reads the committed log and confirms: every job was published once,
//! in order, by schedulers whose epochs never go back; a new scheduler took over after the kill
//! (the report says how long after); every job was done exactly once, in order, after it was
//! published, under tokens that never go back; the frozen worker's late write was fenced; and
//! the election's observers saw each epoch once, in order. It prints a report and exits 1 on
//! any violation (2 when the run itself failed).
//!
//! ```sh
//! cargo run --release -- dev                         # terminal 1: a local 3-node cluster
//! cargo run --release --example job_scheduler        # terminal 2: the workers, the faults, checks
//! ```
//!
//! Flags: `--workers 3`, `--jobs 40`, `--ttl 3s`, and like the CLI `--endpoints`, `--tls-dir`,
//! `--client` (or `ORDO_ENDPOINTS`, `ORDO_TLS_DIR`, `ORDO_CLIENT`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use clap::Parser;
use ordo_participant::{
    Batch, Client, ClientConfig, CommittedBatch, DEV_ENDPOINTS, DEV_TLS_DIR, Message, Precondition,
    RejectReason, Session, SubmitError, new_batch_id, parse_endpoints,
};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One SDK request: short, so that a request to a killed coordinator is retried elsewhere soon.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one call retries before it gives up.
const RETRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two jobs the scheduler publishes.
const PUBLISH_EVERY: Duration = Duration::from_millis(40);
/// How long a worker works on one job, holding the lock.
const WORK_TIME: Duration = Duration::from_millis(100);
/// How long a worker whose session is lost lets its work reach its next call.
const LATE_WORK_MAX: Duration = Duration::from_secs(2);
/// The scheduler is killed this long after it was first elected.
const KILL_AFTER: Duration = Duration::from_millis(800);
/// A supervisor restarts a killed worker after this long.
const RESTART_AFTER: Duration = Duration::from_secs(1);
/// The frozen worker stays frozen this long beyond the session TTL (the leader allows up to a
/// second of clock skew before it expires a session).
const FROZEN_BEYOND_TTL: Duration = Duration::from_secs(2);
/// How long the whole run may take before it is called failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Parser, Clone)]
#[command(about = "Workers elect a scheduler, do jobs under a lock, write only fenced batches")]
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
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: u64,
    /// Jobs to schedule and do.
    #[arg(long, default_value_t = 40)]
    jobs: u64,
    /// The workers' session TTL: how long a dead or frozen worker keeps the lock or the
    /// scheduler's place.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Internal: run as worker N of run RUN (started by this program).
    #[arg(long, hide = true, requires = "run")]
    worker: Option<u64>,
    #[arg(long, hide = true)]
    run: Option<String>,
}

/// The run's names: every one starts with the run's name, so runs never meet.
struct Names {
    election: String,
    lock: String,
    jobs: String,
    done: String,
}

impl Names {
    fn new(run: &str) -> Self {
        Self {
            election: format!("{run}.scheduler"),
            lock: format!("{run}.work"),
            jobs: format!("{run}.jobs"),
            done: format!("{run}.done"),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let arguments = Arguments::parse();
    if let (Some(number), Some(run)) = (arguments.worker, arguments.run.clone()) {
        return match worker(&arguments, number, &Names::new(&run)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                println!("worker {number}: error: {error}");
                ExitCode::from(2)
            }
        };
    }
    match orchestrate(&arguments).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("job_scheduler: error: {error}");
            ExitCode::from(2)
        }
    }
}

async fn connect(arguments: &Arguments) -> Result<Client, Error> {
    let mut config = ClientConfig::new(parse_endpoints(&arguments.endpoints)?, &arguments.tls_dir);
    config.client_name = Some(arguments.client.clone());
    config.request_timeout = REQUEST_TIMEOUT;
    config.retry_timeout = RETRY_TIMEOUT;
    Client::connect(config).await.map_err(|error| {
        format!("cannot reach the cluster ({error}); is `cargo run --release -- dev` running?")
            .into()
    })
}

/// A topic's offset, read by submitting a batch whose precondition cannot hold: the rejection
/// carries the actual offset, linearizably, and a rejected batch changes nothing.
async fn offset(client: &Client, topic: &str) -> Result<u64, Error> {
    let probe = Batch {
        id: new_batch_id(),
        messages: vec![Message::new(topic, "probe")],
        preconditions: vec![Precondition::TopicOffset {
            topic: topic.into(),
            offset: u64::MAX,
        }],
    };
    match client.submit(probe).await {
        Err(SubmitError::Rejected {
            reason: RejectReason::TopicOffset { actual, .. },
        }) => Ok(actual),
        other => Err(format!("the offset probe of {topic} answered {other:?}").into()),
    }
}

// ----- a worker process -----

/// A worker: sessions one after another (a frozen worker's session expires), each running the
/// campaign and the work until it is lost; ends when its stdin closes.
async fn worker(arguments: &Arguments, number: u64, names: &Names) -> Result<(), Error> {
    let client = connect(arguments).await?;
    let (quit_tx, mut quit) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = quit_tx.send(true);
    });
    while !*quit.borrow() {
        let session = match Session::open(&client, arguments.ttl).await {
            Ok(session) => session,
            Err(error) => {
                println!("worker {number}: cannot open a session: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        println!("worker {number}: session {} open", session.id());
        let me = Worker {
            client: &client,
            session: &session,
            number,
            names,
            jobs: arguments.jobs,
        };
        // A lost session ends both (their calls fail); the work goes on past a loss it has not
        // noticed yet, so that a frozen worker's late write reaches the cluster. When the
        // scheduler's task hears of the loss first, the work still gets to its next call (which
        // fails, or is fenced) before the session is replaced.
        let (schedule, work) = (me.schedule(), me.work());
        tokio::pin!(schedule, work);
        let ended = tokio::select! {
            result = &mut schedule => {
                if result.is_err() {
                    let _ = tokio::time::timeout(LATE_WORK_MAX, &mut work).await;
                }
                result
            }
            result = &mut work => result,
            _ = quit.wait_for(|quit| *quit) => {
                let _ = session.close().await;
                break;
            }
        };
        if let Err(error) = ended {
            println!("worker {number}: {error}; opening another session");
        }
    }
    Ok(())
}

/// One worker's session, with what its two tasks need.
#[derive(Clone, Copy)]
struct Worker<'a> {
    client: &'a Client,
    session: &'a Session,
    number: u64,
    names: &'a Names,
    jobs: u64,
}

impl Worker<'_> {
    /// Campaigns; once elected, publishes the jobs not yet published, fenced on the epoch and on
    /// the jobs topic's offset. Returns only when deposed, or on error.
    async fn schedule(self) -> Result<(), Error> {
        let Worker {
            client,
            session,
            number,
            names,
            jobs,
        } = self;
        let value = format!("worker {number}");
        let leadership = session.campaign(&names.election, value.as_bytes()).await?;
        let epoch = leadership.epoch();
        println!("worker {number}: elected scheduler, epoch {epoch}");
        let mut next = offset(client, &names.jobs).await?;
        while next < jobs {
            let record = format!("job {next} epoch {epoch} worker {number}");
            let batch = Batch {
                id: new_batch_id(),
                messages: vec![Message::new(&names.jobs, record)],
                preconditions: vec![Precondition::TopicOffset {
                    topic: names.jobs.clone(),
                    offset: next,
                }],
            };
            match leadership.submit(batch).await {
                Ok(_) => next += 1,
                Err(SubmitError::Rejected {
                    reason: RejectReason::TopicOffset { actual, .. },
                }) => next = actual,
                Err(SubmitError::Rejected {
                    reason: RejectReason::Fenced { .. },
                }) => return Err(format!("deposed: epoch {epoch} is fenced").into()),
                Err(error) => println!("worker {number}: publishing job {next}: {error}"),
            }
            tokio::time::sleep(PUBLISH_EVERY).await;
        }
        println!("worker {number}: every job is published");
        std::future::pending().await
    }

    /// Takes the lock, does the next job not yet done, writes its result fenced on the token,
    /// releases; over and over. Returns when its write was fenced, or on error.
    async fn work(self) -> Result<(), Error> {
        let Worker {
            client,
            session,
            number,
            names,
            jobs,
        } = self;
        loop {
            let guard = session.lock(&names.lock).await?;
            let token = guard.token();
            let (done, published) = (
                offset(client, &names.done).await?,
                offset(client, &names.jobs).await?,
            );
            if done >= published {
                guard.release().await?;
                let pause = if done >= jobs { 500 } else { 20 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
                continue;
            }
            println!("worker {number}: holding token {token} for job {done}");
            tokio::time::sleep(WORK_TIME).await;
            let record = format!("done {done} token {token} worker {number}");
            let batch = Batch {
                id: new_batch_id(),
                messages: vec![Message::new(&names.done, record)],
                // The token first: a stale holder is told `Fenced`, whatever else moved.
                preconditions: vec![
                    guard.precondition(),
                    Precondition::TopicOffset {
                        topic: names.done.clone(),
                        offset: done,
                    },
                ],
            };
            match client.submit(batch).await {
                Ok(committed) => {
                    println!("worker {number}: job {done} done at seq {}", committed.seq);
                }
                Err(SubmitError::Rejected {
                    reason: RejectReason::Fenced { current, .. },
                }) => {
                    println!(
                        "worker {number}: fenced: the late result of job {done} under token \
                     {token} was refused (the lock is now at {current:?})"
                    );
                    return Ok(());
                }
                Err(error) => println!("worker {number}: job {done}: {error}"),
            }
            guard.release().await?;
        }
    }
}

// ----- the program that runs the workers and the faults -----

/// What the workers print that this program acts on.
enum Event {
    Elected { worker: u64, epoch: u64 },
    Holding { worker: u64 },
    Fenced { worker: u64 },
}

fn parse_event(line: &str) -> Option<Event> {
    let rest = line.strip_prefix("worker ")?;
    let (worker, rest) = rest.split_once(": ")?;
    let worker = worker.parse().ok()?;
    if let Some(epoch) = rest.strip_prefix("elected scheduler, epoch ") {
        return Some(Event::Elected {
            worker,
            epoch: epoch.parse().ok()?,
        });
    }
    if rest.starts_with("holding token ") {
        return Some(Event::Holding { worker });
    }
    rest.starts_with("fenced: ")
        .then_some(Event::Fenced { worker })
}

/// The worker processes, with their output forwarded (prefixed) and parsed.
struct Workers {
    arguments: Arguments,
    run: String,
    children: BTreeMap<u64, Child>,
    events: mpsc::Sender<(Instant, Event)>,
}

impl Workers {
    fn start(&mut self, number: u64) -> Result<(), Error> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--worker", &number.to_string(), "--run", &self.run])
            .args(["--endpoints", &self.arguments.endpoints])
            .arg("--tls-dir")
            .arg(&self.arguments.tls_dir)
            .args(["--client", &self.arguments.client])
            .arg("--ttl")
            .arg(humantime::format_duration(self.arguments.ttl).to_string())
            .args(["--jobs", &self.arguments.jobs.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no worker stdout")?;
        let events = self.events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("  {line}");
                if let Some(event) = parse_event(&line) {
                    let _ = events.send((Instant::now(), event));
                }
            }
        });
        self.children.insert(number, child);
        Ok(())
    }

    fn signal(&self, number: u64, signal: i32) {
        if let Some(child) = self.children.get(&number) {
            // SAFETY: kill(2) with a pid of our own child and a valid signal touches no memory.
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    fn kill(&mut self, number: u64) {
        if let Some(mut child) = self.children.remove(&number) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Closes every worker's stdin (each closes its session and exits) and waits for them.
    fn stop(&mut self) {
        for child in self.children.values_mut() {
            drop(child.stdin.take());
        }
        for (_, mut child) in std::mem::take(&mut self.children) {
            let _ = child.wait();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What happened during the run, for the report.
#[derive(Default)]
struct Faults {
    killed: Option<(u64, u64, Instant)>,
    new_scheduler: Option<(u64, u64, Instant)>,
    frozen: Option<u64>,
    fenced: Vec<u64>,
}

async fn orchestrate(arguments: &Arguments) -> Result<bool, Error> {
    let client = connect(arguments).await?;
    let run = format!("jobs-{}", &new_batch_id().to_string()[24..]);
    let names = Names::new(&run);
    println!(
        "job_scheduler: run {run}: {} workers, {} jobs, session TTL {:?}",
        arguments.workers, arguments.jobs, arguments.ttl
    );
    // Every leadership change, as an operator's `ordo elect NAME --observe` would see it.
    let observed = Arc::new(Mutex::new(Vec::new()));
    let observing = {
        let (mut observer, observed) = (client.observe(&names.election), observed.clone());
        tokio::spawn(async move {
            while let Ok(change) = observer.next().await {
                if let Some((epoch, _)) = change.leader {
                    observed.lock().expect("observed").push(epoch);
                }
            }
        })
    };
    let (events_tx, events) = mpsc::channel();
    let mut workers = Workers {
        arguments: arguments.clone(),
        run: run.clone(),
        children: BTreeMap::new(),
        events: events_tx,
    };
    for number in 0..arguments.workers {
        workers.start(number)?;
    }
    let faults = play_faults(&client, &names, arguments, &mut workers, &events).await?;
    workers.stop();
    observing.abort();
    let observed_epochs = observed.lock().expect("observed").clone();
    let log = read_log(&client, &names, arguments.jobs).await?;
    Ok(check(arguments, &faults, &log, &observed_epochs))
}

/// Kills the first scheduler, restarts it, freezes the next worker seen taking the lock after
/// a new scheduler was elected, and waits until every job is done.
async fn play_faults(
    client: &Client,
    names: &Names,
    arguments: &Arguments,
    workers: &mut Workers,
    events: &mpsc::Receiver<(Instant, Event)>,
) -> Result<Faults, Error> {
    let started = Instant::now();
    let mut faults = Faults::default();
    let mut first_elected: Option<(u64, u64, Instant)> = None;
    let mut restart_at = None;
    let mut thaw_at = None;
    loop {
        if started.elapsed() > RUN_TIMEOUT {
            return Err(format!("the jobs were not all done within {RUN_TIMEOUT:?}").into());
        }
        while let Ok((at, event)) = events.try_recv() {
            match event {
                Event::Elected { worker, epoch } => {
                    if first_elected.is_none() {
                        first_elected = Some((worker, epoch, at));
                    } else if faults.killed.is_some() && faults.new_scheduler.is_none() {
                        faults.new_scheduler = Some((worker, epoch, at));
                    }
                }
                Event::Holding { worker } => {
                    if faults.new_scheduler.is_some() && faults.frozen.is_none() {
                        workers.signal(worker, libc::SIGSTOP);
                        faults.frozen = Some(worker);
                        thaw_at = Some(Instant::now() + arguments.ttl + FROZEN_BEYOND_TTL);
                        println!("job_scheduler: froze worker {worker} (SIGSTOP) holding the lock");
                    }
                }
                Event::Fenced { worker } => faults.fenced.push(worker),
            }
        }
        if let Some((worker, epoch, at)) = first_elected
            && faults.killed.is_none()
            && at.elapsed() >= KILL_AFTER
        {
            workers.kill(worker);
            faults.killed = Some((worker, epoch, Instant::now()));
            restart_at = Some(Instant::now() + RESTART_AFTER);
            println!("job_scheduler: killed the scheduler, worker {worker} (SIGKILL)");
        }
        if let Some(at) = restart_at
            && Instant::now() >= at
        {
            restart_at = None;
            let (worker, ..) = faults.killed.ok_or("restart without a kill")?;
            workers.start(worker)?;
            println!("job_scheduler: restarted worker {worker}");
        }
        if let (Some(at), Some(worker)) = (thaw_at, faults.frozen)
            && Instant::now() >= at
        {
            thaw_at = None;
            workers.signal(worker, libc::SIGCONT);
            println!("job_scheduler: thawed worker {worker} (SIGCONT)");
        }
        let thawed = faults.frozen.is_some() && thaw_at.is_none();
        if thawed && restart_at.is_none() && offset(client, &names.done).await? >= arguments.jobs {
            // Give the thawed worker a moment to report its fenced write.
            tokio::time::sleep(Duration::from_millis(500)).await;
            while let Ok((_, event)) = events.try_recv() {
                if let Event::Fenced { worker } = event {
                    faults.fenced.push(worker);
                }
            }
            return Ok(faults);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The run's committed batches, from seq 1, up to the last job done.
async fn read_log(client: &Client, names: &Names, jobs: u64) -> Result<Vec<CommittedBatch>, Error> {
    let topics = vec![names.jobs.clone(), names.done.clone()];
    let mut subscription = client.subscribe(1, topics);
    let mut batches = Vec::new();
    let mut done = 0;
    while done < jobs {
        let next = tokio::time::timeout(RETRY_TIMEOUT, subscription.next()).await;
        let batch = match next {
            Ok(Some(Ok(batch))) => batch,
            Ok(Some(Err(error))) => return Err(error.into()),
            Ok(None) => return Err("the subscription ended".into()),
            Err(_) => return Err(format!("no batch within {RETRY_TIMEOUT:?}").into()),
        };
        done += batch
            .messages
            .iter()
            .filter(|m| m.topic == names.done)
            .count() as u64;
        batches.push(batch);
    }
    Ok(batches)
}

/// `"job 3 epoch 17 worker 1"` → [3, 17, 1].
fn numbers(payload: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(payload)
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect()
}

fn check(arguments: &Arguments, faults: &Faults, log: &[CommittedBatch], observed: &[u64]) -> bool {
    let mut published = Vec::new(); // (job, epoch, worker, seq)
    let mut done = Vec::new(); // (job, token, worker, seq)
    for batch in log {
        for message in &batch.messages {
            let n = numbers(&message.payload);
            if message.topic.ends_with(".jobs") && n.len() == 3 {
                published.push((n[0], n[1], n[2], batch.seq));
            } else if message.topic.ends_with(".done") && n.len() == 3 {
                done.push((n[0], n[1], n[2], batch.seq));
            }
        }
    }
    let jobs = arguments.jobs;
    let mut checks: Vec<(&str, bool, String)> = Vec::new();
    let in_order = |records: &[(u64, u64, u64, u64)]| {
        records.len() as u64 >= jobs && records.iter().enumerate().all(|(k, r)| r.0 == k as u64)
    };
    checks.push((
        "every job published once, in order",
        in_order(&published),
        format!("{} publications", published.len()),
    ));
    let mut epoch_writer: BTreeMap<u64, u64> = BTreeMap::new();
    let epochs_monotonic = published.windows(2).all(|w| w[0].1 <= w[1].1)
        && published
            .iter()
            .all(|p| *epoch_writer.entry(p.1).or_insert(p.2) == p.2);
    checks.push((
        "scheduler epochs never go back, one writer each",
        epochs_monotonic,
        format!("epochs {:?}", epoch_writer),
    ));
    let takeover = match (faults.killed, faults.new_scheduler) {
        (Some((killed, old, at)), Some((worker, epoch, elected))) => (
            epoch > old && epoch_writer.contains_key(&epoch),
            format!(
                "worker {killed} (epoch {old}) killed; worker {worker} elected with epoch {epoch} \
                 {:.1} s later (TTL {:?})",
                elected.duration_since(at).as_secs_f64(),
                arguments.ttl
            ),
        ),
        _ => (false, "no kill and takeover happened".to_string()),
    };
    checks.push((
        "a new scheduler took over after the kill",
        takeover.0,
        takeover.1,
    ));
    let job_seq: BTreeMap<u64, u64> = published.iter().map(|p| (p.0, p.3)).collect();
    let done_after = done
        .iter()
        .all(|d| job_seq.get(&d.0).is_some_and(|seq| *seq < d.3));
    checks.push((
        "every job done exactly once, in order, after it was published",
        in_order(&done) && done_after && done.len() as u64 == jobs,
        format!("{} results", done.len()),
    ));
    checks.push((
        "lock tokens never go back",
        done.windows(2).all(|w| w[0].1 <= w[1].1),
        format!(
            "tokens {:?}..{:?}",
            done.first().map(|d| d.1),
            done.last().map(|d| d.1)
        ),
    ));
    let frozen_fenced = faults
        .frozen
        .is_some_and(|frozen| faults.fenced.contains(&frozen));
    checks.push((
        "the frozen worker's late result was fenced",
        frozen_fenced,
        format!("frozen {:?}, fenced {:?}", faults.frozen, faults.fenced),
    ));
    let observed_ok = observed.windows(2).all(|w| w[0] < w[1])
        && faults
            .killed
            .is_some_and(|(_, epoch, _)| observed.contains(&epoch))
        && faults
            .new_scheduler
            .is_some_and(|(_, epoch, _)| observed.contains(&epoch));
    checks.push((
        "observers see epochs once, in order",
        observed_ok,
        format!("{observed:?}"),
    ));
    println!("job_scheduler: report");
    let mut passed = true;
    for (name, ok, detail) in &checks {
        println!("  [{}] {name}: {detail}", if *ok { "ok" } else { "FAIL" });
        passed &= ok;
    }
    println!("job_scheduler: {}", if passed { "PASS" } else { "FAIL" });
    let _ = std::io::stdout().flush();
    passed
}
