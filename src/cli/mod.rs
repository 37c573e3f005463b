//! Argument parsing and dispatch for every `ordo` subcommand.

mod batches;
mod bench;
mod coord;
mod demo;
mod dev;
mod members;
mod snapshot;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ordo_coordinator::config::{NodeConfig, Overrides, default_config_text};
use ordo_participant::MembershipChange;

#[derive(Parser)]
#[command(
    name = "ordo",
    version,
    about = "Ordo: one agreed order of atomic batches, never lost"
)]
pub struct Arguments {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: text for people, json (one object per line) for
    /// log shippers.
    #[arg(
        long,
        global = true,
        env = "ORDO_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

/// See [`Arguments::log_format`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where a client command finds the cluster.
#[derive(clap::Args, Clone)]
pub struct ClientArguments {
    /// Coordinator addresses, comma-separated.
    #[arg(long, env = "ORDO_ENDPOINTS", default_value = ordo_participant::DEV_ENDPOINTS)]
    pub endpoints: String,
    /// Directory with ca.pem and a client-NAME.pem/.key pair.
    #[arg(long, env = "ORDO_TLS_DIR", default_value = ordo_participant::DEV_TLS_DIR)]
    pub tls_dir: PathBuf,
    /// Which client identity to use (client-NAME.pem); the first one found by default.
    #[arg(long, env = "ORDO_CLIENT")]
    pub client: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a development CA and node/client key pairs (existing files are kept).
    Certs {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Client names, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "cli")]
        clients: Vec<String>,
        /// Replace these pairs (node-N, client-NAME; comma-separated) with new keys and
        /// certificates, and revoke the old certificates in crl.pem; nodes load both on SIGHUP.
        #[arg(long, value_delimiter = ',')]
        renew: Vec<String>,
        /// Revoke these certificates (node-N, client-NAME; comma-separated) in crl.pem.
        #[arg(long, value_delimiter = ',')]
        revoke: Vec<String>,
    },
    /// Run a coordinator node.
    Serve(ServeArguments),
    /// Start a local cluster of `serve` processes, with certificates, and stream their logs.
    Dev {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long, default_value = "ordo-dev")]
        dir: PathBuf,
        /// Node N listens on 127.0.0.1:(base_port + N - 1).
        #[arg(long, default_value_t = 7001)]
        base_port: u16,
        /// Run the demo workload (producers and two participants), report, and stop.
        #[arg(long)]
        demo: bool,
        /// How long the demo submits batches.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        demo_duration: std::time::Duration,
        /// Print every node's log here, prefixed by its id, instead of to DIR/node-N.log.
        #[arg(long)]
        stream_logs: bool,
        /// The consensus engine of the local cluster ("raft" or "multi-paxos"). A data
        /// directory keeps the engine it was created with: use another --dir to switch.
        #[arg(long, env = "ORDO_CONSENSUS_ENGINE", default_value = "raft",
              value_parser = engine_argument)]
        consensus_engine: ordo_common::EngineKind,
    },
    /// Show every node's view: role, term, leader, log indexes, reachable peers.
    Status {
        #[command(flatten)]
        client: ClientArguments,
        #[arg(long)]
        json: bool,
    },
    /// Submit one atomic batch: `ordo submit orders=o1 audit=placed --expect orders=0`.
    Submit {
        #[command(flatten)]
        client: ClientArguments,
        /// The batch id (a UUID); a fresh UUID v7 by default. Reuse it to retry safely.
        #[arg(long)]
        id: Option<String>,
        /// Precondition: TOPIC=OFFSET (the topic must hold exactly OFFSET messages).
        #[arg(long)]
        expect: Vec<String>,
        /// Fencing: NAME=TOKEN (lock NAME must be held with TOKEN when the batch applies).
        #[arg(long)]
        fence: Vec<String>,
        /// Fencing: NAME=EPOCH (election NAME must be led at EPOCH when the batch applies).
        #[arg(long)]
        epoch: Vec<String>,
        /// Messages: TOPIC=PAYLOAD.
        #[arg(required = true)]
        messages: Vec<String>,
    },
    /// Print committed batches in order, following new ones.
    Tail {
        #[command(flatten)]
        client: ClientArguments,
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Only these topics (repeatable); all by default.
        #[arg(long)]
        topic: Vec<String>,
        #[arg(long)]
        json: bool,
        /// Stop after this many batches.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Hold lock NAME: run CMD while holding it (with ORDO_LOCK_NAME and ORDO_LOCK_TOKEN set),
    /// or print {"lock":NAME,"token":N} and hold until SIGINT, SIGTERM or the end of stdin.
    /// `ordo lock list` lists locks and elections.
    Lock {
        #[command(flatten)]
        client: ClientArguments,
        name: String,
        /// The session's TTL: how long the lock outlives this process if it stops renewing.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Keep the lock ungranted this long after this session expires while holding it.
        #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
        lock_delay: std::time::Duration,
        /// With `list`: print JSON.
        #[arg(long)]
        json: bool,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Campaign in election NAME with --value V: when elected print
    /// {"election":NAME,"leader":V,"epoch":N} and run CMD (with ORDO_ELECTION_EPOCH set) or hold;
    /// resign on exit. With --observe, print one such line per leadership change.
    Elect {
        #[command(flatten)]
        client: ClientArguments,
        name: String,
        #[arg(long)]
        value: Option<String>,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        #[arg(long)]
        observe: bool,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Sessions (leases), for operators.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// The cluster's coordinators: list them, add, promote and remove them one at a time.
    #[command(subcommand)]
    Member(MemberCommand),
    /// Back up the replicated state, or seed a new cluster from a backup.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Load the cluster: C clients, each waiting for its answer (batches, or locks).
    Bench {
        #[command(flatten)]
        client: ClientArguments,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Messages per batch.
        #[arg(long, default_value_t = 10)]
        batch: usize,
        /// Bytes per message payload.
        #[arg(long, default_value_t = 128)]
        size: usize,
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        #[arg(long)]
        json: bool,
        /// Instead of batches, acquire and release locks: each client its own
        /// (`uncontended`), or all one (`contended`: every acquisition is a hand-off).
        #[arg(long, value_enum)]
        lock: Option<bench::LockLoad>,
    },
}

#[derive(Subcommand)]
enum MemberCommand {
    /// Every member as the leader sees it: id, address, voter or learner, reachable, how far
    /// behind the leader's log.
    List {
        #[command(flatten)]
        client: ClientArguments,
        #[arg(long)]
        json: bool,
    },
    /// Add node ID, listening at ADDRESS, as a learner; it becomes a voter by itself once it
    /// has caught up, unless `--learner`. Start it with `ordo serve --id ID --join ...`.
    Add {
        #[command(flatten)]
        client: ClientArguments,
        id: u64,
        address: String,
        /// Keep it a learner (promote it later with `ordo member promote`).
        #[arg(long)]
        learner: bool,
    },
    /// Make learner ID a voter (refused until it has caught up).
    Promote {
        #[command(flatten)]
        client: ClientArguments,
        id: u64,
    },
    /// Remove node ID (a voter, the leader included, or a learner). Its id is never reused.
    Remove {
        #[command(flatten)]
        client: ClientArguments,
        id: u64,
    },
}

#[derive(Subcommand)]
enum LeaseCommand {
    /// List open sessions: id, owner, TTL, last renewal, what each holds or waits for.
    List {
        #[command(flatten)]
        client: ClientArguments,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Stream a consistent snapshot (seq, topic offsets, idempotency registry) from the
    /// cluster's leader into FILE.
    Save {
        #[command(flatten)]
        client: ClientArguments,
        file: PathBuf,
    },
    /// Seed an empty data directory from a snapshot, for a new cluster. Restore every node
    /// of the new cluster from the same file (with the same token); the new cluster gets its
    /// own identity and never mixes with the one the backup came from.
    Restore {
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        /// Tells apart two clusters restored from the same file.
        #[arg(long, default_value = "restored")]
        cluster_token: String,
        /// The consensus engine the new cluster will run ("raft" or "multi-paxos"): recorded
        /// with the data, so its nodes must start with the same `consensus.engine`. A backup
        /// is the state alone, so a cluster may change engines through save and restore.
        #[arg(long, env = "ORDO_CONSENSUS_ENGINE", default_value = "raft",
              value_parser = engine_argument)]
        consensus_engine: ordo_common::EngineKind,
    },
}

/// A `--consensus-engine` value, by the names `consensus.engine` takes.
fn engine_argument(name: &str) -> Result<ordo_common::EngineKind, String> {
    ordo_common::EngineKind::parse(name)
        .ok_or_else(|| format!("{name:?} names no consensus engine: \"raft\" or \"multi-paxos\""))
}

#[derive(clap::Args)]
struct ServeArguments {
    /// A TOML configuration file (see --print-default-config).
    #[arg(long, env = "ORDO_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    id: Option<u64>,
    #[arg(long)]
    listen: Option<String>,
    /// Every voter, this node included: 1=host:port,2=host:port,3=host:port
    #[arg(long, conflicts_with = "join")]
    peers: Option<String>,
    /// Join a running cluster instead: addresses of some of its members, comma-separated.
    /// The node learns the cluster from them and waits for `ordo member add`.
    #[arg(long)]
    join: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// TCP address for /metrics, /livez, /readyz and the console (`http.listen`; "off" for
    /// none). Default: 127.0.0.1 on the port number of --listen.
    #[arg(long)]
    http_listen: Option<String>,
    /// The consensus engine (`consensus.engine`): "raft" or "multi-paxos". Fixed when the
    /// cluster bootstraps.
    #[arg(long)]
    consensus_engine: Option<String>,
    /// Print every configuration key, commented, with its default, and exit.
    #[arg(long)]
    print_default_config: bool,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The stable code of an error the CLI ends with (see `ERRORS.md`).
pub fn error_code(error: &(dyn std::error::Error + 'static)) -> &'static str {
    use ordo_common::errors::ErrorCode;
    if let Some(code) = ordo_participant::error_code(error) {
        return code;
    }
    if error.is::<ordo_coordinator::config::ConfigError>() {
        return "config";
    }
    if let Some(error) = error.downcast_ref::<ordo_coordinator::node::NodeError>() {
        return error.code();
    }
    if error.is::<ordo_net::tls::TlsError>() {
        return "tls";
    }
    if error.is::<std::io::Error>() {
        return "io";
    }
    // The rest are the CLI's own checks of its arguments.
    "usage"
}

pub fn run(arguments: Arguments) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match arguments.command {
        Command::Certs {
            dir,
            nodes,
            clients,
            renew,
            revoke,
        } => {
            let mut written = Vec::new();
            if renew.is_empty() && revoke.is_empty() {
                written = ordo_coordinator::certs::generate(&dir, nodes, &clients)?;
            }
            for stem in &renew {
                written.extend(ordo_coordinator::certs::renew(&dir, stem)?);
            }
            for stem in &revoke {
                written.extend(ordo_coordinator::certs::revoke(&dir, stem)?);
            }
            for path in &written {
                println!("wrote {path}");
            }
            if written.is_empty() {
                println!("{} already holds every requested file", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(serve) => {
            if serve.print_default_config {
                print!("{}", default_config_text());
                return Ok(ExitCode::SUCCESS);
            }
            let overrides = Overrides {
                id: serve.id,
                listen: serve.listen,
                peers: serve.peers,
                join: serve.join,
                data_dir: serve.data_dir,
                tls_dir: serve.tls_dir,
                http_listen: serve.http_listen,
                consensus_engine: serve.consensus_engine,
            };
            let config = NodeConfig::load(serve.config.as_deref(), std::env::vars(), &overrides)?;
            if serve.check_config {
                if config.joining() {
                    println!(
                        "configuration is valid: node {} joining through {}",
                        config.id,
                        config.join.join(",")
                    );
                } else {
                    println!(
                        "configuration is valid: node {} of {} voters",
                        config.id,
                        config.peers.len()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.runtime.worker_threads())
                .enable_all()
                .build()?
                .block_on(ordo_coordinator::node::serve(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dev {
            nodes,
            dir,
            base_port,
            demo,
            demo_duration,
            stream_logs,
            consensus_engine,
        } => dev::run(
            nodes,
            &dir,
            base_port,
            demo.then_some(demo_duration),
            stream_logs,
            consensus_engine,
        ),
        Command::Status { client, json } => runtime()?.block_on(status::run(&client, json)),
        Command::Submit {
            client,
            id,
            expect,
            fence,
            epoch,
            messages,
        } => runtime()?.block_on(batches::submit(
            &client, id, &expect, &fence, &epoch, &messages,
        )),
        Command::Lock {
            client,
            name,
            ttl,
            lock_delay,
            json,
            command,
        } => {
            if name == "list" && command.is_empty() {
                return runtime()?.block_on(coord::list_locks(&client, json));
            }
            let hold = coord::Hold { ttl, command };
            runtime()?.block_on(coord::lock(&client, &name, lock_delay, hold))
        }
        Command::Elect {
            client,
            name,
            value,
            ttl,
            observe,
            command,
        } => {
            if observe {
                return runtime()?.block_on(coord::observe(&client, &name));
            }
            let value = value.ok_or("ordo elect needs --value V (or --observe)")?;
            let hold = coord::Hold { ttl, command };
            runtime()?.block_on(coord::elect(&client, &name, &value, hold))
        }
        Command::Member(command) => {
            let (client, change) = match command {
                MemberCommand::List { client, json } => {
                    return runtime()?.block_on(members::list(&client, json));
                }
                MemberCommand::Add {
                    client,
                    id,
                    address,
                    learner,
                } => (
                    client,
                    MembershipChange::AddLearner {
                        id,
                        address,
                        promote: !learner,
                    },
                ),
                MemberCommand::Promote { client, id } => (client, MembershipChange::Promote { id }),
                MemberCommand::Remove { client, id } => (client, MembershipChange::Remove { id }),
            };
            runtime()?.block_on(members::change(&client, change))
        }
        Command::Lease(LeaseCommand::List { client, json }) => {
            runtime()?.block_on(coord::list_leases(&client, json))
        }
        Command::Tail {
            client,
            from,
            topic,
            json,
            count,
        } => runtime()?.block_on(batches::tail(&client, from, topic, json, count)),
        Command::Snapshot(SnapshotCommand::Save { client, file }) => {
            runtime()?.block_on(snapshot::save(&client, &file))
        }
        Command::Snapshot(SnapshotCommand::Restore {
            file,
            data_dir,
            cluster_token,
            consensus_engine,
        }) => snapshot::restore(&file, &data_dir, &cluster_token, consensus_engine),
        Command::Bench {
            client,
            clients,
            batch,
            size,
            duration,
            json,
            lock,
        } => {
            let arguments = bench::BenchArguments {
                clients,
                batch,
                size,
                duration,
                json,
                lock,
            };
            runtime()?.block_on(bench::run(&client, arguments))
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
