//! `ordo bench`: C concurrent submitters, each waiting for its acknowledgement, submitting
//! atomic batches of K messages of S bytes for a duration; reports throughput and latency.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ordo_participant::{Batch, Message, new_batch_id};

use super::ClientArguments;

pub struct BenchArguments {
    pub clients: usize,
    pub batch: usize,
    pub size: usize,
    pub duration: Duration,
    pub json: bool,
}

pub async fn run(
    client: &ClientArguments,
    bench: BenchArguments,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let cluster = super::batches::client(client).await?;
    let payload = bytes::Bytes::from(vec![b'x'; bench.size]);
    let deadline = Instant::now() + bench.duration;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let progress = indicatif::ProgressBar::new(bench.duration.as_secs().max(1));
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len}s {msg}").expect("template"),
    );
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..bench.clients {
        let (cluster, payload, done, errors) = (
            cluster.clone(),
            payload.clone(),
            done.clone(),
            errors.clone(),
        );
        let (messages, topic) = (bench.batch, format!("bench-{}", worker % 8));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let batch = Batch {
                    id: new_batch_id(),
                    messages: (0..messages)
                        .map(|_| Message::new(topic.clone(), payload.clone()))
                        .collect(),
                    preconditions: Vec::new(),
                };
                let sent = Instant::now();
                match cluster.submit(batch).await {
                    Ok(_) => {
                        latencies.push(sent.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
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
            "{:.0} batches/s",
            done.load(Ordering::Relaxed) as f64 / elapsed
        ));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await?);
    }
    progress.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let batches = latencies.len() as f64;
    let report = serde_json::json!({
        "clients": bench.clients,
        "batch": bench.batch,
        "size": bench.size,
        "seconds": elapsed,
        "batches_per_second": batches / elapsed,
        "messages_per_second": batches * bench.batch as f64 / elapsed,
        "megabytes_per_second": batches * (bench.batch * bench.size) as f64 / elapsed / 1e6,
        "latency_ms_p50": quantile(0.50),
        "latency_ms_p99": quantile(0.99),
        "latency_ms_p999": quantile(0.999),
        "errors": errors.load(Ordering::Relaxed),
    });
    if bench.json {
        println!("{report}");
    } else {
        println!(
            "{} clients x batches of {} x {} B for {:.1}s\n  {:.0} batches/s, {:.0} messages/s, {:.2} MB/s\n  latency p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms\n  errors {}",
            bench.clients,
            bench.batch,
            bench.size,
            elapsed,
            report["batches_per_second"].as_f64().unwrap_or(0.0),
            report["messages_per_second"].as_f64().unwrap_or(0.0),
            report["megabytes_per_second"].as_f64().unwrap_or(0.0),
            quantile(0.50),
            quantile(0.99),
            quantile(0.999),
            errors.load(Ordering::Relaxed)
        );
    }
    Ok(ExitCode::SUCCESS)
}
