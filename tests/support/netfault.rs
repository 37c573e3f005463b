//! Network faults between nodes on one machine.
//!
//! - [`Firewall`]: iptables rules that drop UDP from one node's loopback address to another's
//!   (the cluster runs with [`super::ClusterOptions::distinct_hosts`]). Needs root and the
//!   `iptables` command; every rule it adds is removed when it is healed or dropped.
//! - [`UdpProxy`]: a userspace proxy in front of a node that loses and delays datagrams per
//!   link, drawn from a seeded generator (this kernel has no netem).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ordo_common::NodeId;
use ordo_core::rng::Prng;
use tokio::net::UdpSocket;

/// Environment variable that makes a missing firewall a failure instead of a skip (CI sets it).
pub const REQUIRE_FIREWALL: &str = "ORDO_TEST_REQUIRE_IPTABLES";

/// One-way packet drops between loopback addresses, with iptables.
pub struct Firewall {
    /// The arguments after `-I`/`-D` of every rule in place.
    rules: Vec<Vec<String>>,
}

impl Firewall {
    /// Whether rules can be installed here: `Err` says why not (not root, no iptables).
    pub fn check() -> Result<(), String> {
        // SAFETY: geteuid has no preconditions and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return Err("the firewall faults need root".into());
        }
        let output = Command::new("iptables")
            .args(["-w", "-L", "OUTPUT", "-n"])
            .output()
            .map_err(|error| format!("cannot run iptables ({error}); apt-get install iptables"))?;
        if !output.status.success() {
            return Err(format!(
                "`iptables -L OUTPUT` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(())
    }

    pub fn new() -> Self {
        Self { rules: Vec::new() }
    }

    /// Drops every UDP datagram from `from` to `to` (one way) until [`Self::heal`].
    pub fn cut(&mut self, from: IpAddr, to: IpAddr) {
        let rule: Vec<String> = [
            "OUTPUT",
            "-p",
            "udp",
            "-s",
            &from.to_string(),
            "-d",
            &to.to_string(),
            "-j",
            "DROP",
        ]
        .iter()
        .map(|part| part.to_string())
        .collect();
        iptables("-I", &rule).unwrap_or_else(|error| panic!("add a firewall rule: {error}"));
        self.rules.push(rule);
    }

    /// Cuts both ways between every node of `left` and every node of `right`.
    pub fn split(&mut self, left: &[IpAddr], right: &[IpAddr]) {
        for &a in left {
            for &b in right {
                self.cut(a, b);
                self.cut(b, a);
            }
        }
    }

    /// Removes every rule this firewall added.
    pub fn heal(&mut self) {
        for rule in self.rules.drain(..) {
            iptables("-D", &rule).unwrap_or_else(|error| panic!("remove a firewall rule: {error}"));
        }
    }

    pub fn is_healed(&self) -> bool {
        self.rules.is_empty()
    }
}

impl Default for Firewall {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        for rule in self.rules.drain(..) {
            if let Err(error) = iptables("-D", &rule) {
                eprintln!("could not remove firewall rule {rule:?}: {error}");
            }
        }
    }
}

fn iptables(action: &str, rule: &[String]) -> Result<(), String> {
    let output = Command::new("iptables")
        .arg("-w")
        .arg(action)
        .args(rule)
        .output()
        .map_err(|error| error.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {action} {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// What happens to datagrams on one directed link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Chance, in percent, that a datagram is dropped (100 cuts the link).
    pub loss_percent: u64,
    /// Each datagram waits a time drawn uniformly from this range before it is sent on (so
    /// datagrams also reorder).
    pub delay_min: Duration,
    pub delay_max: Duration,
}

/// Faults by directed link `(from, to)`; links not listed are clean.
#[derive(Clone, Default)]
pub struct FaultTable {
    links: Arc<Mutex<BTreeMap<(NodeId, NodeId), LinkFaults>>>,
    counts: Arc<ProxyCounts>,
}

/// What the proxies did with the datagrams between nodes: proof that a run had its faults.
#[derive(Default, Debug)]
pub struct ProxyCounts {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub delayed: AtomicU64,
    /// Delayed datagrams not yet sent on (bounded by [`PROXY_DELAYED_MAX`]).
    waiting: Arc<AtomicU64>,
}

impl FaultTable {
    pub fn set(&self, from: NodeId, to: NodeId, faults: LinkFaults) {
        self.links
            .lock()
            .expect("fault table")
            .insert((from, to), faults);
    }

    /// The same faults on every link between two different nodes of `ids`.
    pub fn set_all(&self, ids: &[NodeId], faults: LinkFaults) {
        for &from in ids {
            for &to in ids {
                if from != to {
                    self.set(from, to, faults);
                }
            }
        }
    }

    pub fn counts(&self) -> (u64, u64, u64) {
        let counts = &self.counts;
        (
            counts.forwarded.load(Ordering::Relaxed),
            counts.dropped.load(Ordering::Relaxed),
            counts.delayed.load(Ordering::Relaxed),
        )
    }

    pub fn clear(&self) {
        self.links.lock().expect("fault table").clear();
    }

    fn get(&self, from: NodeId, to: NodeId) -> LinkFaults {
        let links = self.links.lock().expect("fault table");
        links.get(&(from, to)).copied().unwrap_or_default()
    }
}

/// The most senders one proxy keeps an upstream socket for (nodes and clients that followed a
/// leader hint); past it, datagrams from new senders are dropped.
pub const PROXY_SENDERS_MAX: usize = 64;
/// The largest datagram the proxy forwards (QUIC stays below 1,500 bytes on loopback).
pub const PROXY_DATAGRAM_BYTES_MAX: usize = 65_536;
/// Datagrams a proxy holds back for their delay at once; past it, more are dropped (and
/// counted as dropped).
pub const PROXY_DELAYED_MAX: u64 = 10_000;

/// A UDP proxy in front of node `to`. Each sender gets its own upstream socket, so the node
/// sees each sender as a distinct address and replies go back to the right one. Datagrams
/// between two nodes (known by their own addresses) suffer the [`FaultTable`]'s faults for
/// that direction; other senders (clients) pass clean.
pub struct UdpProxy {
    address: SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl UdpProxy {
    /// Starts a proxy on a free port of `host`, forwarding to `target` (node `to`), whose
    /// known peers are `nodes` (address → id).
    pub async fn start(
        host: IpAddr,
        to: NodeId,
        target: SocketAddr,
        nodes: BTreeMap<SocketAddr, NodeId>,
        faults: FaultTable,
        seed: u64,
    ) -> Self {
        let front = Arc::new(
            UdpSocket::bind(SocketAddr::new(host, 0))
                .await
                .expect("bind the proxy's socket"),
        );
        let address = front.local_addr().expect("the proxy's address");
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let random = Arc::new(Mutex::new(Prng::new(seed ^ u64::from(address.port()))));
        let link = Link { faults, random, to };
        let task = tokio::spawn(front_loop(front, target, nodes, link, tasks.clone()));
        tasks.lock().expect("proxy tasks").push(task);
        Self { address, tasks }
    }

    /// Where senders reach the node through this proxy.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("proxy tasks").drain(..) {
            task.abort();
        }
    }
}

#[derive(Clone)]
struct Link {
    faults: FaultTable,
    random: Arc<Mutex<Prng>>,
    to: NodeId,
}

impl Link {
    /// Sends `datagram` with `socket` to `destination` after the faults of `from → to`: maybe
    /// never, maybe later.
    fn forward(
        &self,
        from: Option<NodeId>,
        to: Option<NodeId>,
        socket: &Arc<UdpSocket>,
        datagram: &[u8],
        destination: SocketAddr,
    ) {
        let faults = match (from, to) {
            (Some(from), Some(to)) => self.faults.get(from, to),
            _ => LinkFaults::default(),
        };
        let (lost, delay) = {
            let mut random = self.random.lock().expect("proxy random");
            let lost = faults.loss_percent > 0 && random.chance_percent(faults.loss_percent);
            let spread = faults
                .delay_max
                .saturating_sub(faults.delay_min)
                .as_micros() as u64;
            let delay = faults.delay_min + Duration::from_micros(random.range_inclusive(0, spread));
            (lost, delay)
        };
        let counts = &self.faults.counts;
        let full = !delay.is_zero() && counts.waiting.load(Ordering::Relaxed) >= PROXY_DELAYED_MAX;
        if lost || full {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        counts.forwarded.fetch_add(1, Ordering::Relaxed);
        if delay.is_zero() {
            let _ = socket.try_send_to(datagram, destination);
            return;
        }
        counts.delayed.fetch_add(1, Ordering::Relaxed);
        counts.waiting.fetch_add(1, Ordering::Relaxed);
        let waiting = counts.waiting.clone();
        let (socket, datagram) = (socket.clone(), datagram.to_vec());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = socket.send_to(&datagram, destination).await;
            waiting.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn front_loop(
    front: Arc<UdpSocket>,
    target: SocketAddr,
    nodes: BTreeMap<SocketAddr, NodeId>,
    link: Link,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
) {
    let mut upstreams: BTreeMap<SocketAddr, Arc<UdpSocket>> = BTreeMap::new();
    let mut buffer = vec![0u8; PROXY_DATAGRAM_BYTES_MAX];
    let host = front.local_addr().expect("the proxy's address").ip();
    loop {
        let Ok((length, sender)) = front.recv_from(&mut buffer).await else {
            continue;
        };
        let from = nodes.get(&sender).copied();
        let upstream = match upstreams.get(&sender) {
            Some(upstream) => upstream.clone(),
            None if upstreams.len() >= PROXY_SENDERS_MAX => continue,
            None => {
                let Ok(socket) = UdpSocket::bind(SocketAddr::new(host, 0)).await else {
                    continue;
                };
                let socket = Arc::new(socket);
                upstreams.insert(sender, socket.clone());
                let back = tokio::spawn(back_loop(
                    socket.clone(),
                    front.clone(),
                    sender,
                    from,
                    link.clone(),
                ));
                tasks.lock().expect("proxy tasks").push(back);
                socket
            }
        };
        link.forward(from, Some(link.to), &upstream, &buffer[..length], target);
    }
}

/// Carries the node's replies to `sender` back through the front socket.
async fn back_loop(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    sender: SocketAddr,
    sender_node: Option<NodeId>,
    link: Link,
) {
    let mut buffer = vec![0u8; PROXY_DATAGRAM_BYTES_MAX];
    loop {
        let Ok((length, _)) = upstream.recv_from(&mut buffer).await else {
            continue;
        };
        link.forward(
            Some(link.to),
            sender_node,
            &front,
            &buffer[..length],
            sender,
        );
    }
}
