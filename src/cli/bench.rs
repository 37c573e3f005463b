//! `ordo bench`: C concurrent clients, each waiting for its answer, for a duration; reports
//! throughput and latency.
//!
//! - By default each client submits atomic batches of K messages of S bytes.
//! - `--lock uncontended`: each client takes and releases a lock of its own, over and over
//!   (the latency of one acquire + release, as a service that guards its own resource pays).
//! - `--lock contended`: every client takes and releases one lock, so each acquisition is a
//!   hand-off from the previous holder (FIFO); throughput is hand-offs per second.
//!
//! Lock clients each open one session first (outside the measured time) and keep it alive in
//! the background, as services do.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use ordo_participant::{Batch, Message, Session, new_batch_id};

use super::ClientArguments;

/// The session TTL of the lock clients.
const LOCK_SESSION_TTL: Duration = Duration::from_secs(10);

pub struct BenchArguments {
    pub clients: usize,
    pub batch: usize,
    pub size: usize,
    pub duration: Duration,
    pub json: bool,
    pub lock: Option<LockLoad>,
}

/// Which lock load `--lock` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LockLoad {
    /// Each client its own lock.
    Uncontended,
    /// Every client the same lock.
    Contended,
}

/// One timed operation of worker `n`: `true` when it succeeded.
type Operation = Arc<dyn Fn(usize) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// What a run measured.
struct Measured {
    /// Latencies of the operations that succeeded, sorted.
    latencies: Vec<Duration>,
    errors: u64,
    seconds: f64,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    /// `fields` with the duration, the latency quantiles and the error count added.
    fn report(&self, mut fields: serde_json::Value) -> serde_json::Value {
        let common = serde_json::json!({
            "seconds": self.seconds,
            "latency_ms_p50": self.quantile_ms(0.50),
            "latency_ms_p99": self.quantile_ms(0.99),
            "latency_ms_p999": self.quantile_ms(0.999),
            "errors": self.errors,
        });
        if let (Some(fields), serde_json::Value::Object(common)) = (fields.as_object_mut(), common)
        {
            fields.extend(common);
        }
        fields
    }

    /// The `q` quantile of the latencies, in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let last = self.latencies.len().saturating_sub(1);
        self.latencies
            .get(((self.latencies.len() as f64 * q) as usize).min(last))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }
}

pub async fn run(
    client: &ClientArguments,
    bench: BenchArguments,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let cluster = super::batches::client(client).await?;
    if let Some(load) = bench.lock {
        return run_locks(&cluster, &bench, load).await;
    }
    let payload = bytes::Bytes::from(vec![b'x'; bench.size]);
    let messages = bench.batch;
    let operation: Operation = Arc::new(move |worker| {
        let (cluster, payload) = (cluster.clone(), payload.clone());
        Box::pin(async move {
            let topic = format!("bench-{}", worker % 8);
            let batch = Batch {
                id: new_batch_id(),
                messages: (0..messages)
                    .map(|_| Message::new(topic.clone(), payload.clone()))
                    .collect(),
                preconditions: Vec::new(),
            };
            cluster.submit(batch).await.is_ok()
        })
    });
    let measured = drive(bench.clients, bench.duration, "batches", operation).await?;
    let batches = measured.latencies.len() as f64;
    let report = measured.report(serde_json::json!({
        "clients": bench.clients,
        "batch": bench.batch,
        "size": bench.size,
        "batches_per_second": measured.per_second(),
        "messages_per_second": batches * bench.batch as f64 / measured.seconds,
        "megabytes_per_second": batches * (bench.batch * bench.size) as f64 / measured.seconds / 1e6,
    }));
    if bench.json {
        println!("{report}");
    } else {
        println!(
            "{} clients x batches of {} x {} B for {:.1}s\n  {:.0} batches/s, {:.0} messages/s, {:.2} MB/s\n  latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms\n  errors {}",
            bench.clients,
            bench.batch,
            bench.size,
            measured.seconds,
            measured.per_second(),
            report["messages_per_second"].as_f64().unwrap_or(0.0),
            report["megabytes_per_second"].as_f64().unwrap_or(0.0),
            measured.quantile_ms(0.50),
            measured.quantile_ms(0.99),
            measured.quantile_ms(0.999),
            measured.errors
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_locks(
    cluster: &ordo_participant::Client,
    bench: &BenchArguments,
    load: LockLoad,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut sessions = Vec::with_capacity(bench.clients);
    for _ in 0..bench.clients {
        sessions.push(Session::open(cluster, LOCK_SESSION_TTL).await?);
    }
    let sessions = Arc::new(sessions);
    let run = new_batch_id().to_string();
    let names: Arc<Vec<String>> = Arc::new(
        (0..bench.clients)
            .map(|worker| match load {
                LockLoad::Uncontended => format!("bench-{}-{worker}", &run[24..]),
                LockLoad::Contended => format!("bench-{}", &run[24..]),
            })
            .collect(),
    );
    let operation: Operation = {
        let sessions = sessions.clone();
        Arc::new(move |worker| {
            let (sessions, names) = (sessions.clone(), names.clone());
            Box::pin(async move {
                let session = &sessions[worker];
                match session.lock(&names[worker]).await {
                    Ok(guard) => guard.release().await.is_ok(),
                    Err(_) => false,
                }
            })
        })
    };
    let measured = drive(bench.clients, bench.duration, "acquisitions", operation).await?;
    for session in sessions.iter() {
        let _ = session.close().await;
    }
    let mode = match load {
        LockLoad::Uncontended => "uncontended",
        LockLoad::Contended => "contended",
    };
    let report = measured.report(serde_json::json!({
        "lock": mode,
        "clients": bench.clients,
        "acquisitions_per_second": measured.per_second(),
    }));
    if bench.json {
        println!("{report}");
    } else {
        println!(
            "{} clients, {mode} lock, acquire + release for {:.1}s\n  {:.0} acquisitions/s\n  latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms\n  errors {}",
            bench.clients,
            measured.seconds,
            measured.per_second(),
            measured.quantile_ms(0.50),
            measured.quantile_ms(0.99),
            measured.quantile_ms(0.999),
            measured.errors
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `clients` workers, each repeating `operation` until `duration` has passed, with a
/// progress bar counting `unit` per second.
async fn drive(
    clients: usize,
    duration: Duration,
    unit: &'static str,
    operation: Operation,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let deadline = Instant::now() + duration;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let progress = indicatif::ProgressBar::new(duration.as_secs().max(1));
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len}s {msg}").expect("template"),
    );
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..clients {
        let (operation, done, errors) = (operation.clone(), done.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                if operation(worker).await {
                    latencies.push(sent.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        }));
    }
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let elapsed = started.elapsed().as_secs_f64();
        progress.set_position(elapsed as u64);
        progress.set_message(format!(
            "{:.0} {unit}/s",
            done.load(Ordering::Relaxed) as f64 / elapsed
        ));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await?);
    }
    progress.finish_and_clear();
    latencies.sort();
    Ok(Measured {
        latencies,
        errors: errors.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}
