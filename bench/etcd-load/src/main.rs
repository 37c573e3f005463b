//! `etcd-load`: the etcd side of `bench/compare.sh`. The same load shape as `ordo bench`:
//! C concurrent submitters, each waiting for its acknowledgement before sending again; a batch
//! of K messages of S bytes is one etcd `Txn` of K puts to distinct keys (atomic, one
//! revision). Speaks etcd's gRPC API (`etcdserverpb.KV/Txn`) through tonic with hand-declared
//! prost messages (`proto.rs`), and prints the same JSON fields as `ordo bench --json`.
//!
//! Connections: `--connections N` HTTP/2 connections (default 4), shared by the workers
//! (worker w uses connection w mod N; each connection carries many concurrent streams). With
//! `--target leader` (the default) every connection goes to the member that leads when the run
//! starts, found with `Maintenance/Status`; with `--target all` connection j goes to endpoint
//! j mod 3 and followers forward the proposals to the leader.

mod mutex;
mod proto;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use proto::{PutRequest, RequestOp, StatusRequest, StatusResponse, TxnRequest, TxnResponse};

/// A request unanswered after this long counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the cluster to report a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A worker whose request failed waits this long before the next one, so a broken connection
/// does not turn into a busy loop that takes CPU from the servers.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

const USAGE: &str = "\
usage: etcd-load [--endpoints HOST:PORT,...] [--clients C] [--batch K] [--size BYTES]
                 [--duration 10s] [--connections N] [--target leader|all]
                 [--key-prefix PREFIX] [--lock uncontended|contended] [--json]

C concurrent submitters, each sending one Txn of K puts (distinct keys, values of BYTES
bytes) and waiting for its answer, for the duration. Defaults: endpoints
127.0.0.1:23790,127.0.0.1:23791,127.0.0.1:23792, 64 clients, batch 10, size 128, 10s,
4 connections to the leader, key prefix bench/<unix-ms>.

With --lock, each client instead takes and releases a lock with etcd's lock recipe
(clientv3/concurrency.Mutex), over and over: a lock of its own (uncontended), or one lock
for all (contended: every acquisition is a hand-off).";

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Leader,
    All,
}

struct Options {
    endpoints: Vec<String>,
    clients: usize,
    batch: usize,
    size: usize,
    duration: Duration,
    connections: usize,
    target: Target,
    key_prefix: String,
    json: bool,
    lock: Option<LockLoad>,
}

/// Which lock load `--lock` runs.
#[derive(Clone, Copy, PartialEq, Debug)]
enum LockLoad {
    Uncontended,
    Contended,
}

/// The options, or `None` for `--help`.
fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut options = Options {
        endpoints: split_endpoints("127.0.0.1:23790,127.0.0.1:23791,127.0.0.1:23792"),
        clients: 64,
        batch: 10,
        size: 128,
        duration: Duration::from_secs(10),
        connections: 4,
        target: Target::Leader,
        key_prefix: format!("bench/{millis}"),
        json: false,
        lock: None,
    };
    while let Some(flag) = args.next() {
        if flag == "--json" {
            options.json = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |name: &str| {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} must be a positive integer, not {value:?}"))
        };
        match flag.as_str() {
            "--endpoints" => options.endpoints = split_endpoints(&value),
            "--clients" => options.clients = number("--clients")?,
            "--batch" => options.batch = number("--batch")?,
            "--size" => options.size = number("--size")?,
            "--connections" => options.connections = number("--connections")?,
            "--duration" => options.duration = parse_duration(&value)?,
            "--key-prefix" => options.key_prefix = value,
            "--lock" => {
                options.lock = Some(match value.as_str() {
                    "uncontended" => LockLoad::Uncontended,
                    "contended" => LockLoad::Contended,
                    _ => return Err(format!("--lock is uncontended or contended, not {value:?}")),
                })
            }
            "--target" => {
                options.target = match value.as_str() {
                    "leader" => Target::Leader,
                    "all" => Target::All,
                    _ => return Err(format!("--target is leader or all, not {value:?}")),
                }
            }
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if options.endpoints.is_empty() {
        return Err("--endpoints is empty".to_string());
    }
    Ok(Some(options))
}

fn split_endpoints(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_start_matches("http://").to_string())
        .collect()
}

/// `10s`, `500ms`, `2m`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("--duration: {text:?} is not like 10s, 500ms or 2m");
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return Err(invalid()),
    };
    if seconds > 0.0 && seconds.is_finite() {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(invalid())
    }
}

async fn connect(address: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("{address}: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {address}: {e}"))
}

/// One unary gRPC call with the prost codec.
async fn call<Request, Response>(
    grpc: &mut Grpc<Channel>,
    path: &'static str,
    request: Request,
) -> Result<Response, tonic::Status>
where
    Request: prost::Message + Send + Sync + 'static,
    Response: prost::Message + Default + Send + Sync + 'static,
{
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connection not ready: {e}")))?;
    let response = grpc
        .unary(
            tonic::Request::new(request),
            PathAndQuery::from_static(path),
            ProstCodec::<Request, Response>::default(),
        )
        .await?;
    Ok(response.into_inner())
}

/// The endpoint of the member that leads: the one whose own id is the leader it reports.
async fn find_leader(endpoints: &[String]) -> Result<String, String> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let mut last_problem = String::from("no member answered");
    while Instant::now() < deadline {
        for address in endpoints {
            let status = async {
                let mut grpc = Grpc::new(connect(address).await?);
                call::<_, StatusResponse>(&mut grpc, proto::STATUS_PATH, StatusRequest {})
                    .await
                    .map_err(|e| format!("{address}: {}", e.message()))
            };
            match status.await {
                Ok(status) => {
                    let own = status.header.map_or(0, |h| h.member_id);
                    if status.leader != 0 && status.leader == own {
                        eprintln!(
                            "etcd-load: leader is {address} (member {own:x}, term {}, etcd {})",
                            status.raft_term, status.version
                        );
                        return Ok(address.clone());
                    }
                    last_problem = format!("{address} is not the leader");
                }
                Err(problem) => last_problem = problem,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "no leader within {LEADER_TIMEOUT:?}: {last_problem}"
    ))
}

/// The Txn for one batch: K puts to keys no other batch uses.
fn batch_request(
    prefix: &str,
    worker: usize,
    number: u64,
    batch: usize,
    payload: &Bytes,
) -> TxnRequest {
    TxnRequest {
        compare: Vec::new(),
        failure: Vec::new(),
        success: (0..batch)
            .map(|i| RequestOp {
                request: Some(proto::request_op::Request::Put(PutRequest {
                    key: Bytes::from(format!("{prefix}/{worker:05}/{number:012}/{i:05}")),
                    value: payload.clone(),
                    lease: 0,
                })),
            })
            .collect(),
    }
}

/// The p50, p99 and p999 of `latencies` in milliseconds, by the same rule as `ordo bench`
/// (src/cli/bench.rs), so both columns of the comparison are computed alike.
fn quantiles(latencies: &mut [Duration]) -> (f64, f64, f64) {
    latencies.sort();
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (quantile(0.50), quantile(0.99), quantile(0.999))
}

/// Counts a failed request, remembers the first problem, and pauses the worker a moment.
async fn failed(errors: &AtomicU64, first_error: &Mutex<Option<String>>, problem: String) {
    errors.fetch_add(1, Ordering::Relaxed);
    first_error
        .lock()
        .expect("first error lock")
        .get_or_insert(problem);
    tokio::time::sleep(ERROR_PAUSE).await;
}

/// The connections the workers share.
async fn channels(options: &Options) -> Result<Vec<Channel>, String> {
    let targets = match options.target {
        Target::Leader => vec![find_leader(&options.endpoints).await?],
        Target::All => options.endpoints.clone(),
    };
    let mut channels = Vec::new();
    for j in 0..options.connections {
        channels.push(connect(&targets[j % targets.len()]).await?);
    }
    Ok(channels)
}

/// `--lock`: each worker opens a session (a lease), then locks and unlocks until the end.
async fn run_locks(options: Options, load: LockLoad) -> Result<(), String> {
    let channels = channels(&options).await?;
    let ttl = (options.duration.as_secs() as i64 + 30).max(60);
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let mut sessions = Vec::new();
    for worker in 0..options.clients {
        let channel = channels[worker % channels.len()].clone();
        let lease = mutex::grant_lease(&mut Grpc::new(channel.clone()), ttl).await?;
        let prefix = match load {
            LockLoad::Uncontended => format!("{}/lock-{worker}/", options.key_prefix),
            LockLoad::Contended => format!("{}/lock/", options.key_prefix),
        };
        sessions.push((
            channel.clone(),
            lease,
            mutex::Mutex::new(channel, &prefix, lease),
        ));
    }
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut workers = Vec::new();
    for (channel, lease, mut lock) in sessions {
        let (errors, first_error) = (errors.clone(), first_error.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let cycle = async {
                    lock.lock(lease).await?;
                    lock.unlock().await
                };
                match tokio::time::timeout(REQUEST_TIMEOUT, cycle).await {
                    Ok(Ok(())) => latencies.push(sent.elapsed()),
                    outcome => {
                        let problem = match outcome {
                            Ok(Err(problem)) => problem,
                            _ => format!("no lock and unlock within {REQUEST_TIMEOUT:?}"),
                        };
                        failed(&errors, &first_error, problem).await;
                    }
                }
            }
            let _ = mutex::revoke_lease(&mut Grpc::new(channel), lease).await;
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.map_err(|e| format!("worker failed: {e}"))?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let per_second = latencies.len() as f64 / elapsed;
    let (p50, p99, p999) = quantiles(&mut latencies);
    let errors = errors.load(Ordering::Relaxed);
    if let Some(problem) = first_error.lock().expect("first error lock").as_ref() {
        eprintln!("etcd-load: {errors} errors, the first: {problem}");
    }
    let mode = match load {
        LockLoad::Uncontended => "uncontended",
        LockLoad::Contended => "contended",
    };
    let mut out = std::io::stdout().lock();
    let written = if options.json {
        writeln!(
            out,
            "{{\"lock\":\"{mode}\",\"clients\":{},\"seconds\":{elapsed},\"acquisitions_per_second\":{per_second},\"latency_ms_p50\":{p50},\"latency_ms_p99\":{p99},\"latency_ms_p999\":{p999},\"errors\":{errors}}}",
            options.clients,
        )
    } else {
        writeln!(
            out,
            "{} clients, {mode} lock, acquire + release for {elapsed:.1}s\n  {per_second:.0} acquisitions/s\n  latency p50 {p50:.2} ms, p99 {p99:.2} ms, p999 {p999:.2} ms\n  errors {errors}",
            options.clients,
        )
    };
    written.map_err(|e| format!("cannot write the report: {e}"))
}

async fn run(options: Options) -> Result<(), String> {
    if let Some(load) = options.lock {
        return run_locks(options, load).await;
    }
    let channels = channels(&options).await?;
    let payload = Bytes::from(vec![b'x'; options.size]);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut workers = Vec::new();
    for worker in 0..options.clients {
        let mut grpc = Grpc::new(channels[worker % channels.len()].clone());
        let (payload, done, errors, first_error) = (
            payload.clone(),
            done.clone(),
            errors.clone(),
            first_error.clone(),
        );
        let (prefix, batch) = (options.key_prefix.clone(), options.batch);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut number = 0u64;
            while Instant::now() < deadline {
                let request = batch_request(&prefix, worker, number, batch, &payload);
                number += 1;
                let sent = Instant::now();
                let outcome = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    call::<_, TxnResponse>(&mut grpc, proto::TXN_PATH, request),
                )
                .await;
                let problem = match outcome {
                    Ok(Ok(response)) if response.succeeded => {
                        latencies.push(sent.elapsed());
                        done.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(Ok(_)) => "a Txn without comparisons did not succeed".to_string(),
                    Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
                    Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
                };
                failed(&errors, &first_error, problem).await;
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.map_err(|e| format!("worker failed: {e}"))?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (p50, p99, p999) = quantiles(&mut latencies);
    let batches = latencies.len() as f64;
    let batches_per_second = batches / elapsed;
    let messages_per_second = batches * options.batch as f64 / elapsed;
    let megabytes_per_second = batches * (options.batch * options.size) as f64 / elapsed / 1e6;
    let errors = errors.load(Ordering::Relaxed);
    if let Some(problem) = first_error.lock().expect("first error lock").as_ref() {
        eprintln!("etcd-load: {errors} errors, the first: {problem}");
    }
    // Written with `writeln!`, not `println!`: a closed stdout (the reader was interrupted)
    // is an error to report, not a panic.
    let mut out = std::io::stdout().lock();
    let written = if options.json {
        writeln!(
            out,
            "{{\"clients\":{},\"batch\":{},\"size\":{},\"seconds\":{elapsed},\"batches_per_second\":{batches_per_second},\"messages_per_second\":{messages_per_second},\"megabytes_per_second\":{megabytes_per_second},\"latency_ms_p50\":{p50},\"latency_ms_p99\":{p99},\"latency_ms_p999\":{p999},\"errors\":{errors},\"connections\":{},\"target\":\"{}\"}}",
            options.clients,
            options.batch,
            options.size,
            options.connections,
            if options.target == Target::Leader {
                "leader"
            } else {
                "all"
            },
        )
    } else {
        writeln!(
            out,
            "{} clients x Txn of {} puts x {} B for {elapsed:.1}s\n  {batches_per_second:.0} batches/s, {messages_per_second:.0} messages/s, {megabytes_per_second:.2} MB/s\n  latency p50 {p50:.2} ms, p99 {p99:.2} ms, p999 {p999:.2} ms\n  errors {errors}",
            options.clients, options.batch, options.size,
        )
    };
    written.map_err(|e| format!("cannot write the report: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse_options(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("etcd-load: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("10h").is_err());
    }

    /// The encoding etcd expects: TxnRequest.success (field 2) holds RequestOps whose
    /// request_put (field 2) holds PutRequest.key (1) and .value (2).
    #[test]
    fn txn_wire_format() {
        let request = batch_request("p", 1, 2, 2, &Bytes::from_static(b"v"));
        let bytes = request.encode_to_vec();
        let put = |key: &str| {
            let mut put = vec![0x0a, key.len() as u8];
            put.extend_from_slice(key.as_bytes());
            put.extend_from_slice(&[0x12, 1, b'v']);
            let mut op = vec![0x12, put.len() as u8];
            op.extend(put);
            let mut field = vec![0x12, op.len() as u8];
            field.extend(op);
            field
        };
        let mut expected = put("p/00001/000000000002/00000");
        expected.extend(put("p/00001/000000000002/00001"));
        assert_eq!(bytes, expected);
        assert_eq!(TxnRequest::decode(&bytes[..]), Ok(request));
    }

    #[test]
    fn options() {
        let args = [
            "--clients",
            "8",
            "--batch",
            "100",
            "--target",
            "all",
            "--json",
        ];
        let options = parse_options(args.iter().map(|s| s.to_string()))
            .expect("valid")
            .expect("not --help");
        assert_eq!(
            (options.clients, options.batch, options.size),
            (8, 100, 128)
        );
        assert!(options.json && options.target == Target::All);
        assert!(parse_options(["--clients", "0"].iter().map(|s| s.to_string())).is_err());
        assert!(parse_options(["--bogus", "1"].iter().map(|s| s.to_string())).is_err());
    }
}
