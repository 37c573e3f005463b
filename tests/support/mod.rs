//! The harness for end-to-end tests with real `ordo` processes on loopback.
//!
//! A [`TestCluster`] owns a temporary directory (certificates from the real `ordo certs`, one
//! data directory and one log file per node), picks free loopback UDP ports, and starts one
//! `ordo serve` child per node. Each node's stdout and stderr go to `node-N.log` in that
//! directory (appended across restarts, with a marker line per start), so a test can look for
//! the reason a node logged. Faults are process-level: [`TestCluster::kill9`],
//! [`TestCluster::sigterm`], [`TestCluster::restart`].
//!
//! [`raw`] speaks to a node below the SDK (no client certificate, the peer protocol, raw bytes),
//! for tests of what a node refuses.
//!
//! Never sleep to "wait for things": [`wait_until`] polls a condition with short sleeps inside a
//! deadline and, on timeout, fails with what it was waiting for and the last reason the
//! condition gave.
//!
//! Safety is checked on the way: every status the harness reads is remembered, and two nodes
//! claiming leadership of the same term fail the test at once.
//!
//! Every child is killed when the cluster is dropped; the kernel also kills them if the thread
//! that started them ends (`PR_SET_PDEATHSIG`), so a test binary stopped with Ctrl-C leaves no
//! node behind. Start nodes from the test's own thread (not from a spawned blocking task, whose
//! thread may end before the test does). When a test fails, the directory is kept and its path
//! and the tail of every node's log are printed; `ORDO_TEST_KEEP=1` keeps it in any case.

// Each test crate uses part of the harness.
#![allow(dead_code)]

pub mod floods;
pub mod history;
pub mod http;
pub mod locks;
pub mod members;
pub mod netfault;
pub mod raw;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_common::client::{ClientRequest, ClientResponse, NodeRole, NodeStatus};
use ordo_common::{Entry, EntryPayload, LogIndex, NodeId, Term};
use ordo_coordinator::storage::{LogRead, RedbLogStore, RedbOptions, StoreState};
use ordo_participant::{ClientConfig, ClientTls, ConnectError, NodeConnection};

/// The `ordo` binary under test.
pub const ORDO: &str = env!("CARGO_BIN_EXE_ordo");
/// The client identity every cluster's certificates include.
pub const CLIENT_NAME: &str = "cli";
/// How often [`wait_until`] re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The consensus engine the test clusters run: `ORDO_TEST_ENGINE` if set, else Multi-Paxos in
/// the test binaries named `paxos_*` (each runs a whole suite on it), else Raft.
pub fn test_engine() -> ordo_common::EngineKind {
    match std::env::var("ORDO_TEST_ENGINE") {
        Ok(name) => ordo_common::EngineKind::parse(&name)
            .unwrap_or_else(|| panic!("ORDO_TEST_ENGINE={name:?} names no consensus engine")),
        Err(_) if env!("CARGO_CRATE_NAME").starts_with("paxos_") => {
            ordo_common::EngineKind::MultiPaxos
        }
        Err(_) => ordo_common::EngineKind::Raft,
    }
}

/// The engine that is not `engine`.
pub fn other_engine(engine: ordo_common::EngineKind) -> ordo_common::EngineKind {
    match engine {
        ordo_common::EngineKind::Raft => ordo_common::EngineKind::MultiPaxos,
        ordo_common::EngineKind::MultiPaxos => ordo_common::EngineKind::Raft,
    }
}

/// How many elections lie between leading in `old` and leading in `new`: Raft counts terms,
/// Multi-Paxos the rounds of its ballots.
pub fn elections_between(old: ordo_common::Term, new: ordo_common::Term) -> u64 {
    match test_engine() {
        ordo_common::EngineKind::Raft => new - old,
        ordo_common::EngineKind::MultiPaxos => {
            ordo_core::paxos::ballot_round(new) - ordo_core::paxos::ballot_round(old)
        }
    }
}

/// How long one status or proposal request may take before the node counts as unresponsive.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Timing and shape of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub nodes: u64,
    pub election_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub tick_interval: Duration,
    /// Extra environment for every node (e.g. `ORDO_TRANSPORT_...`).
    pub environment: Vec<(String, String)>,
    /// `RUST_LOG` for the nodes; `ORDO_TEST_RUST_LOG` overrides it.
    pub log_filter: String,
    /// Give each node its own loopback address (127.A.B.id, with A.B unique to the cluster), so
    /// that firewall rules can cut the links between two nodes and nothing else.
    pub distinct_hosts: bool,
    /// A TOML configuration file every node is started with (`ordo serve --config`); the
    /// harness's flags and environment still override it.
    pub config_file: Option<String>,
    /// The consensus engine the nodes start with: the one under test unless a test asks for
    /// the other (every status the harness sees must report it).
    pub engine: ordo_common::EngineKind,
}

impl ClusterOptions {
    /// Short timeouts, so that elections in tests take a fraction of a second.
    pub fn fast(nodes: u64) -> Self {
        Self {
            nodes,
            election_timeout: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            tick_interval: Duration::from_millis(10),
            environment: Vec::new(),
            log_filter: "info".into(),
            distinct_hosts: false,
            config_file: None,
            engine: test_engine(),
        }
    }

    /// The shipped defaults (1 s election timeout): for tests that assert that nothing changed,
    /// where a spurious election on a busy machine would be a false failure.
    pub fn shipped_defaults(nodes: u64) -> Self {
        Self {
            election_timeout: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(100),
            ..Self::fast(nodes)
        }
    }

    /// The environment that carries these options to `ordo serve`.
    fn node_environment(&self) -> Vec<(String, String)> {
        let millis = |duration: Duration| format!("{}ms", duration.as_millis());
        let mut environment = vec![
            (
                "ORDO_RAFT_ELECTION_TIMEOUT".to_string(),
                millis(self.election_timeout),
            ),
            (
                "ORDO_RAFT_HEARTBEAT_INTERVAL".to_string(),
                millis(self.heartbeat_interval),
            ),
            (
                "ORDO_RAFT_TICK_INTERVAL".to_string(),
                millis(self.tick_interval),
            ),
            // A small emergency ballast: the shipped 128MiB, for every node of every test
            // cluster, would only cost disk writes (tests/bounded.rs checks the ballast).
            ("ORDO_STORAGE_BALLAST".to_string(), "4MiB".to_string()),
            // The consensus engine under test: `ORDO_TEST_ENGINE` (raft by default) runs a
            // whole suite on the other engine.
            (
                "ORDO_CONSENSUS_ENGINE".to_string(),
                self.engine.name().to_string(),
            ),
        ];
        environment.extend(self.environment.iter().cloned());
        environment
    }
}

/// A proposal the cluster acknowledged as committed: it must never be lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub index: LogIndex,
    pub term: Term,
    pub payload: Bytes,
}

/// A background proposer; see [`TestCluster::spawn_proposer`].
pub struct Proposer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<(Vec<Ack>, String)>,
}

impl Proposer {
    /// Proposals acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Stops the proposer (if it is still going) and returns its acknowledgements and why it
    /// ended.
    pub async fn finish(self) -> (Vec<Ack>, String) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the proposer task")
    }
}

/// A position in a node's log file; [`TestCluster::log_since`] reads what came after it.
#[derive(Clone, Copy, Debug)]
pub struct LogMark(u64);

/// The parts of a node's state that change only when the cluster does something.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateView {
    pub role: String,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub last_index: LogIndex,
    pub commit_index: LogIndex,
}

impl From<&NodeStatus> for StateView {
    fn from(status: &NodeStatus) -> Self {
        Self {
            role: status.role.to_string(),
            term: status.term,
            leader: status.leader,
            last_index: status.last_index,
            commit_index: status.commit_index,
        }
    }
}

struct Node {
    address: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// A node added to the running cluster starts with `--join` these addresses; the nodes
    /// the cluster was bootstrapped with start with `--peers` (`None`).
    join: Option<String>,
    /// Removed from the cluster and left out of [`TestCluster::ids`] (see
    /// [`TestCluster::forget`]).
    forgotten: bool,
}

/// Real `ordo serve` processes on loopback. See the module documentation.
pub struct TestCluster {
    dir: Option<tempfile::TempDir>,
    tls_dir: PathBuf,
    options: ClusterOptions,
    nodes: BTreeMap<NodeId, Node>,
    /// Where the other nodes send to reach a node, when not its own address (a proxy).
    peer_routes: BTreeMap<NodeId, SocketAddr>,
    client_tls: ClientTls,
    /// Every leader seen, by term: Raft allows at most one per term.
    leaders_by_term: Mutex<BTreeMap<Term, NodeId>>,
}

impl TestCluster {
    /// Starts `nodes` nodes with [`ClusterOptions::fast`] timing. Does not wait for a leader.
    pub fn start(nodes: u64) -> Self {
        Self::start_with(ClusterOptions::fast(nodes))
    }

    pub fn start_with(options: ClusterOptions) -> Self {
        let mut cluster = Self::prepare(options);
        for id in cluster.ids() {
            cluster.spawn(id);
        }
        cluster
    }

    /// Lays out a cluster (certificates, addresses, directories) without starting a node: for
    /// tests that set up routes first. [`Self::restart`] starts each node.
    pub fn prepare(options: ClusterOptions) -> Self {
        assert!(options.nodes >= 1, "a cluster needs a node");
        let dir = tempfile::Builder::new()
            .prefix("ordo-test-")
            .tempdir()
            .expect("create a temporary directory");
        let tls_dir = dir.path().join("tls");
        run_ordo_checked(&[
            "certs",
            "--dir",
            path_str(&tls_dir),
            "--nodes",
            &options.nodes.to_string(),
            "--clients",
            CLIENT_NAME,
        ]);
        let ports = free_loopback_ports(options.nodes as usize);
        let host = if options.distinct_hosts {
            distinct_loopback_prefix()
        } else {
            [127, 0, 0]
        };
        let nodes = (1..=options.nodes)
            .zip(ports)
            .map(|(id, port)| {
                let last = if options.distinct_hosts { id as u8 } else { 1 };
                let node = Node {
                    address: SocketAddr::from(([host[0], host[1], host[2], last], port)),
                    data_dir: dir.path().join(format!("node-{id}")),
                    log_path: dir.path().join(format!("node-{id}.log")),
                    child: None,
                    starts: 0,
                    join: None,
                    forgotten: false,
                };
                (id, node)
            })
            .collect();
        let client_tls =
            ClientTls::load(&tls_dir, Some(CLIENT_NAME)).expect("load the client identity");
        Self {
            dir: Some(dir),
            tls_dir,
            options,
            nodes,
            peer_routes: BTreeMap::new(),
            client_tls,
            leaders_by_term: Mutex::new(BTreeMap::new()),
        }
    }

    /// Lays out one more node, with the next free id, a certificate from `ordo certs` run again
    /// on the cluster's directory, an empty data directory, and a loopback address; it starts
    /// (with [`Self::restart`]) with `--join` the addresses of the nodes running now. Add it to
    /// the membership with `ordo member add`. Returns its id.
    pub fn prepare_joining_node(&mut self) -> NodeId {
        let id = self.nodes.keys().max().copied().unwrap_or(0) + 1;
        run_ordo_checked(&[
            "certs",
            "--dir",
            path_str(&self.tls_dir),
            "--nodes",
            &id.to_string(),
            "--clients",
            CLIENT_NAME,
        ]);
        let port = free_loopback_ports(1)[0];
        let host = self
            .nodes
            .values()
            .next()
            .map_or([127, 0, 0, 1], |node| match node.address {
                SocketAddr::V4(address) => {
                    let [a, b, c, _] = address.ip().octets();
                    let last = if self.options.distinct_hosts {
                        id as u8
                    } else {
                        1
                    };
                    [a, b, c, last]
                }
                SocketAddr::V6(_) => [127, 0, 0, 1],
            });
        let join: Vec<String> = self
            .running()
            .iter()
            .map(|id| self.address(*id).to_string())
            .collect();
        let node = Node {
            address: SocketAddr::from((host, port)),
            data_dir: self.dir().join(format!("node-{id}")),
            log_path: self.dir().join(format!("node-{id}.log")),
            child: None,
            starts: 0,
            join: Some(join.join(",")),
            forgotten: false,
        };
        self.nodes.insert(id, node);
        id
    }

    /// Forgets node `id` (stopped first, and removed from the membership): it is no longer
    /// one of [`Self::ids`]; its data and log stay in the directory.
    pub fn forget(&mut self, id: NodeId) {
        assert!(!self.is_running(id), "stop node {id} before forgetting it");
        self.nodes.get_mut(&id).expect("known node").forgotten = true;
    }

    /// From the next start on, the other nodes reach node `id` at `address` (say, a proxy in
    /// front of it) instead of its own address. Clients still use its own address.
    pub fn route_peers_to(&mut self, id: NodeId, address: SocketAddr) {
        self.peer_routes.insert(id, address);
    }

    // ----- layout -----

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    pub fn election_timeout(&self) -> Duration {
        self.options.election_timeout
    }

    /// Every node but `id` (say, the followers of leader `id`).
    pub fn others(&self, id: NodeId) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|other| *other != id)
            .collect()
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, node)| !node.forgotten)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives as long as the cluster")
            .path()
    }

    /// The cluster's TLS directory: `ca.pem`, `node-N.*`, `client-cli.*`.
    pub fn tls_dir(&self) -> &Path {
        &self.tls_dir
    }

    pub fn address(&self, id: NodeId) -> SocketAddr {
        self.node(id).address
    }

    /// Where node `id`'s HTTP listener is: by default, its address's port number over TCP.
    pub fn http_address(&self, id: NodeId) -> SocketAddr {
        self.node(id).address
    }

    /// Every node's address, comma-separated, as `--endpoints` takes them.
    /// An SDK configuration for every node of the cluster, with the SDK's defaults.
    pub fn client_config(&self) -> ClientConfig {
        let endpoints = self.ids().iter().map(|id| self.address(*id)).collect();
        ClientConfig::new(endpoints, self.tls_dir())
    }

    pub fn endpoints(&self) -> String {
        let addresses: Vec<String> = self
            .ids()
            .iter()
            .map(|id| self.address(*id).to_string())
            .collect();
        addresses.join(",")
    }

    pub fn data_dir(&self, id: NodeId) -> &Path {
        &self.node(id).data_dir
    }

    pub fn client_tls(&self) -> ClientTls {
        self.client_tls.clone()
    }

    // ----- processes -----

    pub fn is_running(&self, id: NodeId) -> bool {
        self.node(id).child.is_some()
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> Vec<NodeId> {
        self.ids()
            .into_iter()
            .filter(|id| self.is_running(*id))
            .collect()
    }

    /// SIGKILL: the node stops at once, without a word to its peers.
    pub fn kill9(&mut self, id: NodeId) {
        let mut child = self.take_child(id);
        child.kill().expect("SIGKILL a node");
        child.wait().expect("reap a killed node");
    }

    /// SIGTERM: asks the node to stop gracefully (a leader hands over first). Returns at once;
    /// [`Self::wait_exit`] waits for the process.
    pub fn sigterm(&mut self, id: NodeId) {
        signal(self.child(id), libc::SIGTERM);
    }

    /// Waits for the node's process to exit and returns how it ended.
    pub async fn wait_exit(&mut self, id: NodeId, timeout: Duration) -> ExitStatus {
        let what = format!("node {id} to exit");
        wait_until(timeout, &what, async || {
            let child = self.nodes.get_mut(&id).and_then(|node| node.child.as_mut());
            let child = child.ok_or("the node is not running")?;
            match child.try_wait().map_err(|error| error.to_string())? {
                Some(_) => Ok(()),
                None => Err("still running".to_string()),
            }
        })
        .await;
        // It has exited: this returns at once, with the status `try_wait` saw.
        self.take_child(id).wait().expect("reap an exited node")
    }

    /// SIGTERM, then waits for the exit.
    pub async fn stop(&mut self, id: NodeId, timeout: Duration) -> ExitStatus {
        self.sigterm(id);
        self.wait_exit(id, timeout).await
    }

    /// Stops every running node with SIGTERM, all at once.
    pub async fn stop_all(&mut self, timeout: Duration) -> BTreeMap<NodeId, ExitStatus> {
        let running = self.running();
        for &id in &running {
            self.sigterm(id);
        }
        let mut statuses = BTreeMap::new();
        for id in running {
            statuses.insert(id, self.wait_exit(id, timeout).await);
        }
        statuses
    }

    /// Starts a stopped node again with the same id, address, data directory and log file.
    pub fn restart(&mut self, id: NodeId) {
        assert!(!self.is_running(id), "node {id} is still running");
        self.spawn(id);
    }

    /// SIGSTOP: the node freezes (timers, sockets and all) until [`Self::sigcont`].
    pub fn sigstop(&self, id: NodeId) {
        signal(self.child(id), libc::SIGSTOP);
    }

    pub fn sigcont(&self, id: NodeId) {
        signal(self.child(id), libc::SIGCONT);
    }

    /// SIGHUP: the node reloads its certificates and revocation lists.
    pub fn sighup(&self, id: NodeId) {
        signal(self.child(id), libc::SIGHUP);
    }

    /// Changes the options for nodes started from now on (say, environment that names a file
    /// in the cluster's directory, known only once it is laid out).
    pub fn options_mut(&mut self) -> &mut ClusterOptions {
        &mut self.options
    }

    fn child(&self, id: NodeId) -> &Child {
        let child = self.node(id).child.as_ref();
        child.unwrap_or_else(|| panic!("node {id} is not running"))
    }

    fn spawn(&mut self, id: NodeId) {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.join.is_none())
            .map(|(peer, node)| {
                let route = self.peer_routes.get(peer).filter(|_| *peer != id);
                format!("{peer}={}", route.unwrap_or(&node.address))
            })
            .collect();
        let peers = peers.join(",");
        let environment = self.options.node_environment();
        let log_filter =
            std::env::var("ORDO_TEST_RUST_LOG").unwrap_or_else(|_| self.options.log_filter.clone());
        let tls_dir = self.tls_dir.clone();
        // One file for every node, replaced whole (a rename), and only when its text changes:
        // rewriting it in place would let a node started a moment earlier read it half
        // written, and start without its `[auth]` section.
        let config_file = self.options.config_file.as_ref().map(|text| {
            let path = self.dir().join("node-config.toml");
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                let staged = self.dir().join(format!("node-config.toml.{id}.new"));
                std::fs::write(&staged, text).expect("write the nodes' configuration file");
                std::fs::rename(&staged, &path).expect("replace the nodes' configuration file");
            }
            path
        });
        let node = self.nodes.get_mut(&id).expect("known node");
        node.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("open the node's log file");
        writeln!(log, "=== harness: start #{} of node {id} ===", node.starts)
            .expect("write the node's log file");
        let mut command = Command::new(ORDO);
        remove_ordo_environment(&mut command);
        let (members_flag, members) = match &node.join {
            Some(join) => ("--join", join.clone()),
            None => ("--peers", peers),
        };
        command
            .args(["serve", "--id", &id.to_string()])
            .args(["--listen", &node.address.to_string()])
            .args([members_flag, &members])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--tls-dir")
            .arg(&tls_dir)
            .args(
                config_file
                    .iter()
                    .flat_map(|path| [OsStr::new("--config"), path.as_os_str()]),
            )
            .env("RUST_LOG", log_filter)
            .envs(environment)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicate the log file handle"))
            .stderr(log);
        die_with_this_thread(&mut command);
        node.child = Some(command.spawn().expect("spawn `ordo serve`"));
    }

    // ----- asking the nodes -----

    /// A fresh, greeted client connection to node `id` (with the `cli` identity).
    pub async fn connect(&self, id: NodeId) -> Result<NodeConnection, ConnectError> {
        NodeConnection::connect(self.address(id), &self.client_tls, REQUEST_TIMEOUT).await
    }

    /// Node `id`'s own view, over a fresh connection. Every leader seen is checked against the
    /// others seen in the same term.
    pub async fn status(&self, id: NodeId) -> Result<NodeStatus, String> {
        let connection = self.connect(id).await.map_err(|e| e.to_string())?;
        match connection.request(&ClientRequest::Status).await {
            Ok(ClientResponse::Status(status)) => {
                self.observe(&status);
                Ok(*status)
            }
            Ok(other) => Err(format!("node {id} answered status with {other:?}")),
            Err(error) => Err(error.to_string()),
        }
    }

    /// The status of every running node; the first that does not answer is an error.
    pub async fn statuses(&self) -> Result<BTreeMap<NodeId, NodeStatus>, String> {
        let mut statuses = BTreeMap::new();
        for id in self.running() {
            let status = self
                .status(id)
                .await
                .map_err(|e| format!("node {id}: {e}"))?;
            statuses.insert(id, status);
        }
        Ok(statuses)
    }

    /// Waits until every running node answers, exactly one of them leads, and all agree on the
    /// leader and the term. Returns the leader's status.
    pub async fn wait_for_leader(&self, timeout: Duration) -> NodeStatus {
        wait_until(
            timeout,
            "one leader that every running node agrees on",
            async || {
                let statuses = self.statuses().await?;
                agreed_leader(&statuses).cloned()
            },
        )
        .await
    }

    /// Waits until there is an agreed leader and every running node has committed and durably
    /// stored everything the leader has, at least `index`. Returns every running node's status.
    pub async fn wait_for_caught_up(
        &self,
        index: LogIndex,
        timeout: Duration,
    ) -> BTreeMap<NodeId, NodeStatus> {
        let what = format!("every running node to commit the leader's whole log (≥ {index})");
        wait_until(timeout, &what, async || {
            let statuses = self.statuses().await?;
            let leader = agreed_leader(&statuses)?;
            for status in statuses.values() {
                let caught_up = status.commit_index == leader.last_index
                    && status.durable_index >= leader.last_index
                    && status.commit_index >= index;
                if !caught_up {
                    return Err(format!("not caught up: {}", describe(&statuses)));
                }
            }
            Ok(statuses)
        })
        .await
    }

    /// Waits until there is an agreed leader and every running node has committed what the
    /// leader had committed when the wait began: "caught up" for a cluster under load, where
    /// the leader's log keeps growing. Returns every running node's status.
    pub async fn wait_for_commit_everywhere(
        &self,
        timeout: Duration,
    ) -> BTreeMap<NodeId, NodeStatus> {
        let target = self.wait_for_leader(timeout).await.commit_index;
        let what = format!("every running node to commit up to the leader's {target}");
        wait_until(timeout, &what, async || {
            let statuses = self.statuses().await?;
            agreed_leader(&statuses)?;
            if statuses
                .values()
                .all(|status| status.commit_index >= target)
            {
                Ok(statuses)
            } else {
                Err(format!("not caught up: {}", describe(&statuses)))
            }
        })
        .await
    }

    /// Every running node's [`StateView`], for "nothing changed" assertions.
    pub async fn state_views(&self) -> BTreeMap<NodeId, StateView> {
        let statuses = self.statuses().await.expect("every running node answers");
        statuses
            .iter()
            .map(|(id, s)| (*id, StateView::from(s)))
            .collect()
    }

    /// Proposes `payload` to node `id` once (no retry: a retried proposal could commit twice).
    pub async fn propose(&self, id: NodeId, payload: Bytes) -> Result<ClientResponse, String> {
        let connection = self.connect(id).await.map_err(|e| e.to_string())?;
        let request = ClientRequest::Propose { payload };
        connection
            .request(&request)
            .await
            .map_err(|e| e.to_string())
    }

    /// Proposes `count` payloads named `{prefix}-{n}` to node `id`, one after another, and
    /// returns the acknowledgements. Every proposal must be acknowledged.
    pub async fn propose_many(&self, id: NodeId, prefix: &str, count: usize) -> Vec<Ack> {
        let connection = self.connect(id).await.expect("connect to propose");
        let mut acks = Vec::with_capacity(count);
        for n in 0..count {
            let payload = Bytes::from(format!("{prefix}-{n}"));
            let request = ClientRequest::Propose {
                payload: payload.clone(),
            };
            match connection.request(&request).await {
                Ok(ClientResponse::Committed { index, term }) => acks.push(Ack {
                    index,
                    term,
                    payload,
                }),
                other => panic!("proposal {prefix}-{n} to node {id} was not committed: {other:?}"),
            }
        }
        acks
    }

    /// Starts a task that proposes `{prefix}-{n}` to node `id` one after another, on one
    /// connection, until it is told to stop or the node stops acknowledging (a refusal, a
    /// redirect or a broken connection). For faults injected under load.
    pub async fn spawn_proposer(&self, id: NodeId, prefix: &str) -> Proposer {
        let connection = self.connect(id).await.expect("connect to propose");
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (task_stop, task_acked, prefix) = (stop.clone(), acked.clone(), prefix.to_string());
        let task = tokio::spawn(async move {
            let mut acks = Vec::new();
            for n in 0.. {
                if task_stop.load(Ordering::SeqCst) {
                    return (acks, "told to stop".to_string());
                }
                let payload = Bytes::from(format!("{prefix}-{n}"));
                let request = ClientRequest::Propose {
                    payload: payload.clone(),
                };
                match connection.request(&request).await {
                    Ok(ClientResponse::Committed { index, term }) => {
                        acks.push(Ack {
                            index,
                            term,
                            payload,
                        });
                        task_acked.fetch_add(1, Ordering::SeqCst);
                    }
                    other => return (acks, format!("{other:?}")),
                }
            }
            unreachable!("the loop only ends by returning")
        });
        Proposer { stop, acked, task }
    }

    fn observe(&self, status: &NodeStatus) {
        assert_eq!(
            status.engine, self.options.engine,
            "node {} runs another consensus engine than the test asked for",
            status.id
        );
        if status.role != NodeRole::Leader {
            return;
        }
        let mut leaders = self.leaders_by_term.lock().expect("leaders lock");
        let leader = *leaders.entry(status.term).or_insert(status.id);
        assert_eq!(
            leader, status.id,
            "two leaders in term {}: node {leader} and node {}",
            status.term, status.id
        );
    }

    // ----- logs -----

    pub fn log_path(&self, id: NodeId) -> &Path {
        &self.node(id).log_path
    }

    /// Everything node `id` logged, over all its starts.
    pub fn log(&self, id: NodeId) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// The current end of node `id`'s log.
    pub fn log_mark(&self, id: NodeId) -> LogMark {
        LogMark(std::fs::metadata(self.log_path(id)).map_or(0, |m| m.len()))
    }

    /// What node `id` logged after `mark`.
    pub fn log_since(&self, id: NodeId, mark: LogMark) -> String {
        let log = std::fs::read(self.log_path(id)).unwrap_or_default();
        let start = (mark.0 as usize).min(log.len());
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// Waits until node `id` logs, after `mark`, a line containing every one of `needles`;
    /// returns that line.
    pub async fn wait_for_log(
        &self,
        id: NodeId,
        mark: LogMark,
        needles: &[&str],
        timeout: Duration,
    ) -> String {
        let what = format!("node {id} to log a line with {needles:?}");
        wait_until(timeout, &what, async || {
            let text = self.log_since(id, mark);
            text.lines()
                .find(|line| needles.iter().all(|needle| line.contains(needle)))
                .map(str::to_string)
                .ok_or_else(|| format!("logged since the mark:\n{text}"))
        })
        .await
    }

    // ----- what the nodes stored -----

    /// The incarnation node `node` recorded for `peer` when it first heard from it.
    pub fn recorded_incarnation(&self, node: NodeId, peer: NodeId) -> Option<u64> {
        let path = self
            .data_dir(node)
            .join(ordo_coordinator::transport::PEER_INCARNATIONS_FILE);
        let text = std::fs::read_to_string(path).ok()?;
        text.lines().find_map(|line| {
            let (id, incarnation) = line.split_once(' ')?;
            (id.parse::<NodeId>().ok()? == peer).then(|| incarnation.parse().ok())?
        })
    }

    /// Opens a stopped node's log file and reads its state and every entry.
    pub fn read_stored_log(&self, id: NodeId) -> (StoreState, Vec<Entry>) {
        assert!(
            !self.is_running(id),
            "stop node {id} before reading its log"
        );
        let path = self
            .data_dir(id)
            .join(ordo_coordinator::node::LOG_FILE_NAME);
        let store = RedbLogStore::open(&path, RedbOptions::default())
            .unwrap_or_else(|error| panic!("open node {id}'s log {}: {error}", path.display()));
        let state = store.store_state().expect("read the stored state");
        let entries = store
            .entries(state.log.first_index, state.log.last_index() + 1, u64::MAX)
            .expect("read the stored entries");
        (state, entries)
    }

    /// With every node stopped: every acknowledged proposal is stored, with its term and
    /// payload, at its index, below the stored commit index, on every node; and the nodes'
    /// logs agree on every entry up to the lowest stored commit index.
    pub fn assert_acknowledged_writes_stored(&self, acks: &[Ack]) {
        let logs: BTreeMap<NodeId, (StoreState, Vec<Entry>)> = self
            .ids()
            .into_iter()
            .map(|id| (id, self.read_stored_log(id)))
            .collect();
        for (id, (state, entries)) in &logs {
            let at = |index: LogIndex| {
                entries
                    .iter()
                    .find(|entry| entry.index == index)
                    .unwrap_or_else(|| panic!("node {id} lost entry {index} (log {:?})", state.log))
            };
            for ack in acks {
                let entry = at(ack.index);
                // A Multi-Paxos slot holds the ballot its value was accepted at, which differs
                // between nodes: the value is what must agree.
                let term = |term| match self.options.engine {
                    ordo_common::EngineKind::Raft => term,
                    ordo_common::EngineKind::MultiPaxos => 0,
                };
                assert_eq!(
                    (term(entry.term), &entry.payload),
                    (term(ack.term), &stored_payload(&ack.payload)),
                    "node {id} holds another entry at acknowledged index {}",
                    ack.index
                );
                assert!(
                    ack.index <= state.progress.committed,
                    "node {id} stored commit index {} below acknowledged index {}",
                    state.progress.committed,
                    ack.index
                );
            }
        }
        let committed = logs
            .values()
            .map(|(state, _)| state.progress.committed)
            .min();
        let committed = committed.unwrap_or(0);
        let value = |entry: &Entry| match self.options.engine {
            ordo_common::EngineKind::Raft => (entry.term, entry.index, entry.payload.clone()),
            ordo_common::EngineKind::MultiPaxos => (0, entry.index, entry.payload.clone()),
        };
        let prefixes: BTreeMap<NodeId, Vec<_>> = logs
            .iter()
            .map(|(id, (_, entries))| {
                (
                    *id,
                    entries
                        .iter()
                        .filter(|e| e.index <= committed)
                        .map(value)
                        .collect(),
                )
            })
            .collect();
        let (first_id, first) = prefixes.iter().next().expect("a node");
        for (id, prefix) in &prefixes {
            assert!(
                prefix == first,
                "nodes {first_id} and {id} disagree below the commit index {committed}"
            );
        }
    }

    // ----- internals -----

    fn node(&self, id: NodeId) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn take_child(&mut self, id: NodeId) -> Child {
        let node = self
            .nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"));
        node.child
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let keep = std::env::var_os("ORDO_TEST_KEEP").is_some();
        if (std::thread::panicking() || keep)
            && let Some(dir) = self.dir.take()
        {
            let path = dir.keep();
            eprintln!("--- the cluster's directory is kept: {}", path.display());
            if !std::thread::panicking() {
                return;
            }
            for (id, node) in &self.nodes {
                let log = std::fs::read_to_string(&node.log_path).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!("--- last lines of node {id}'s log:\n{}", tail.join("\n"));
            }
        }
    }
}

/// Polls `probe` every [`POLL_INTERVAL`] until it returns `Ok`, and returns that value. Past
/// `timeout` the test fails, naming `what` it waited for and the last reason `probe` gave.
pub async fn wait_until<T>(
    timeout: Duration,
    what: &str,
    probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    poll_until(timeout, probe)
        .await
        .unwrap_or_else(|last| panic!("timed out after {timeout:?} waiting for {what}; {last}"))
}

/// [`wait_until`] without the panic: `Err` carries the last reason `probe` gave.
pub async fn poll_until<T>(
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(reason) if Instant::now() >= deadline => return Err(reason),
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// The leader, if every node in `statuses` agrees on one and exactly one of them is it.
pub fn agreed_leader(statuses: &BTreeMap<NodeId, NodeStatus>) -> Result<&NodeStatus, String> {
    let leaders: Vec<&NodeStatus> = statuses
        .values()
        .filter(|s| s.role == NodeRole::Leader)
        .collect();
    let [leader] = leaders[..] else {
        return Err(format!("{} leaders: {}", leaders.len(), describe(statuses)));
    };
    let agreed = statuses
        .values()
        .all(|s| s.term == leader.term && s.leader == Some(leader.id));
    if agreed {
        Ok(leader)
    } else {
        Err(format!("no agreement yet: {}", describe(statuses)))
    }
}

/// One line per node: role, term, leader, indexes.
pub fn describe(statuses: &BTreeMap<NodeId, NodeStatus>) -> String {
    let lines: Vec<String> = statuses
        .values()
        .map(|s| {
            format!(
                "node {} {} term {} leader {:?} last {} commit {} durable {}",
                s.id, s.role, s.term, s.leader, s.last_index, s.commit_index, s.durable_index
            )
        })
        .collect();
    lines.join("; ")
}

/// The highest acknowledged index, or 0.
pub fn highest_index(acks: &[Ack]) -> LogIndex {
    acks.iter().map(|ack| ack.index).max().unwrap_or(0)
}

/// Runs the `ordo` binary and returns its output.
pub fn run_ordo(args: &[&str]) -> Output {
    let mut command = Command::new(ORDO);
    command.args(args).stdin(Stdio::null());
    remove_ordo_environment(&mut command);
    command.output().expect("run the ordo binary")
}

/// Runs the `ordo` binary and fails the test unless it succeeds.
pub fn run_ordo_checked(args: &[&str]) -> Output {
    let output = run_ordo(args);
    assert!(
        output.status.success(),
        "`ordo {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// `count` loopback UDP ports that were free a moment ago.
///
/// They come from below the kernel's ephemeral range, so the client sockets tests open (which
/// bind port 0) cannot take a node's port while the node is down between a kill and a restart;
/// a process-wide counter keeps the clusters of tests running in parallel apart, and a trial
/// bind skips ports other processes hold.
pub fn free_loopback_ports(count: usize) -> Vec<u16> {
    const SPAN: u64 = 12_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(32_768);
    if ephemeral_low <= SPAN + 1024 {
        return (0..count).map(|_| os_assigned_port()).collect();
    }
    let low = ephemeral_low - SPAN;
    // Start somewhere different in each test process, so two test binaries rarely probe the
    // same ports.
    let offset = u64::from(std::process::id()).wrapping_mul(7919) % SPAN;
    let mut ports = Vec::with_capacity(count);
    let mut attempts = 0;
    while ports.len() < count {
        attempts += 1;
        assert!(
            attempts < SPAN,
            "no free loopback UDP port below {ephemeral_low}"
        );
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (offset + n) % SPAN) as u16;
        // The node's HTTP listener takes the same port number over TCP.
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            ports.push(port);
        }
    }
    ports
}

/// A loopback prefix 127.A.B no other cluster of this test process uses (nodes add `.id`).
fn distinct_loopback_prefix() -> [u8; 3] {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let a = 100 + (u64::from(std::process::id()) % 100) as u8;
    [127, a, (n % 250) as u8 + 1]
}

fn os_assigned_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a loopback UDP socket");
    socket.local_addr().expect("local address").port()
}

/// The nodes take their configuration from the harness only, not from the caller's shell.
pub fn remove_ordo_environment(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ORDO_") {
            command.env_remove(name);
        }
    }
}

/// The kernel kills the child if the thread that spawned it ends (e.g. the test binary was
/// stopped before `Drop` could run).
pub fn die_with_this_thread(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) with our own child's pid and a valid signal number has no memory effects.
    let result = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(result, 0, "kill({}, {signal})", child.id());
}

/// How a raw proposal's payload is stored: as the entry's one command.
fn stored_payload(payload: &Bytes) -> EntryPayload {
    EntryPayload::Normal(Bytes::from(
        ordo_core::state::Command::Raw(payload.clone()).encode(),
    ))
}

// ----- benchmarks -----

/// A count from the environment variable `name`, or `default` when unset, unparsable or 0.
pub fn count_from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|count| *count > 0)
        .unwrap_or(default)
}

/// One line on the machine a benchmark ran on: CPUs, CPU model, memory.
pub fn machine_description() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let field = |file: &str, key: &str| {
        std::fs::read_to_string(file).ok().and_then(|text| {
            text.lines()
                .find(|line| line.starts_with(key))
                .and_then(|line| line.split(':').nth(1))
                .map(|value| value.trim().to_string())
        })
    };
    let model = field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let memory = field("/proc/meminfo", "MemTotal")
        .and_then(|value| value.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or_else(
            || "unknown memory".into(),
            |kib| format!("{} GiB RAM", kib >> 20),
        );
    format!("{cpus} CPUs, {model}, {memory}")
}
