//! The Multi-Paxos engine under a seeded cluster model: a lossy, reordering, duplicating
//! network with partitions, nodes that crash (losing every write not yet durable) and restart
//! from what their disk holds, and clients proposing at whoever leads. Checkers run on every
//! step: agreement and validity of what nodes apply, a contiguous apply order, one leader per
//! ballot, promises durable before they are sent, no accept below a promise; and at the end,
//! after the faults stop, the cluster must decide again.
//!
//! The disk and network here are in-memory doubles by design: this test isolates the engine.
//! The node-level simulator (`ordo-sim`) runs the engine inside real nodes.
//!
//! Every failure prints its seed; `PAXOS_SEED=<seed> cargo test -p ordo-core --test paxos
//! one_seed -- --nocapture` replays it, and `PAXOS_SEEDS=<n>` widens the sweep.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use ordo_common::{Entry, EntryPayload, HardState, LogId, LogIndex, NodeId};
use ordo_core::paxos::{PlantedBug, ballot_node};
use ordo_core::rng::Prng;
use ordo_core::{Body, Config, Message, MultiPaxos, Output, ProposalId, ReadId, Restored, Role};

#[derive(Default, Clone)]
struct Disk {
    hard_state: HardState,
    entries: Vec<Entry>,
    applied: LogIndex,
}

enum Write {
    HardState(HardState),
    Entries(Vec<Entry>),
}

struct Node {
    engine: Option<MultiPaxos>,
    disk: Disk,
    /// Writes asked for and not yet on disk, in order, with the engine's write number.
    unsynced: VecDeque<(u64, Write)>,
    /// Persist outputs carried out since the engine started (the engine numbers them alike).
    writes: u64,
    /// What this node applied, by slot (survives restarts: the state machine is durable).
    applied: Vec<Bytes>,
    down_until: u64,
    /// Percent of ticks this node's clock misses.
    slow_percent: u64,
}

struct InFlight {
    at: u64,
    from: NodeId,
    to: NodeId,
    message: Message,
}

struct Cluster {
    rng: Prng,
    plant: Option<PlantedBug>,
    ids: Vec<NodeId>,
    nodes: BTreeMap<NodeId, Node>,
    network: Vec<InFlight>,
    /// Nodes cut off from everyone until the given step.
    cut_until: BTreeMap<NodeId, u64>,
    /// Nodes cut off until a test lets them back (healing leaves them cut), from the step given.
    silenced: BTreeMap<NodeId, u64>,
    /// Messages sent to silenced nodes by a leader that has not heard from them for an election
    /// timeout (it took over, or they fell silent, that long ago): accepts carrying values, and
    /// heartbeats.
    values_to_silenced: u64,
    heartbeats_to_silenced: u64,
    now: u64,
    proposed: BTreeSet<Bytes>,
    chosen: BTreeMap<LogIndex, Bytes>,
    leaders: BTreeMap<u64, NodeId>,
    /// The step each ballot's leader took over at.
    led_since: BTreeMap<u64, u64>,
    next_proposal: u64,
    /// Each proposal's payload, by id.
    proposals: BTreeMap<u64, Bytes>,
    /// Each read in progress: the slots chosen anywhere when it started.
    reads: BTreeMap<u64, u64>,
}

type Check = Result<(), String>;

fn payload_of(entry: &Entry) -> Bytes {
    match &entry.payload {
        EntryPayload::Normal(bytes) => bytes.clone(),
        EntryPayload::Noop => Bytes::from_static(b"<noop>"),
        EntryPayload::Config(_) => Bytes::from_static(b"<config>"),
    }
}

impl Cluster {
    fn new(seed: u64, voters: usize, plant: Option<PlantedBug>) -> Self {
        let ids: Vec<NodeId> = (1..=voters as u64).collect();
        let mut cluster = Self {
            rng: Prng::new(seed),
            plant,
            ids: ids.clone(),
            nodes: BTreeMap::new(),
            network: Vec::new(),
            cut_until: BTreeMap::new(),
            silenced: BTreeMap::new(),
            values_to_silenced: 0,
            heartbeats_to_silenced: 0,
            now: 0,
            proposed: BTreeSet::new(),
            chosen: BTreeMap::new(),
            leaders: BTreeMap::new(),
            led_since: BTreeMap::new(),
            next_proposal: 0,
            proposals: BTreeMap::new(),
            reads: BTreeMap::new(),
        };
        for id in ids {
            cluster.nodes.insert(
                id,
                Node {
                    engine: None,
                    disk: Disk::default(),
                    unsynced: VecDeque::new(),
                    writes: 0,
                    applied: Vec::new(),
                    down_until: 0,
                    slow_percent: 0,
                },
            );
            cluster.start(id);
        }
        for node in cluster.nodes.values_mut() {
            node.slow_percent = [0, 0, 10, 60][cluster.rng.below(4) as usize];
        }
        cluster
    }

    fn config(&self, id: NodeId) -> Config {
        let mut config = Config::new(id, self.ids.clone());
        config.invariant_checks = true;
        config.plant_paxos = self.plant;
        // Small messages, so that promises and accepts come in parts.
        config.append_entries_max = 4;
        config.inflight_messages_max = 4;
        config
    }

    fn start(&mut self, id: NodeId) {
        let config = self.config(id);
        let seed = self.rng.next_u64();
        let node = self.nodes.get_mut(&id).expect("known node");
        let restored = Restored {
            hard_state: node.disk.hard_state,
            prev_log_id: LogId::default(),
            entries: node.disk.entries.clone(),
            applied: node.disk.applied,
            stored_first: 1,
            membership: None,
        };
        node.engine = Some(MultiPaxos::new(config, restored, seed).expect("restores"));
        node.unsynced.clear();
        node.writes = 0;
    }

    fn crash(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("known node");
        node.engine = None;
        node.unsynced.clear();
    }

    /// Lands the oldest unsynced write of `id` on its disk and tells the engine (the caller
    /// drains what it answers).
    fn land_one(&mut self, id: NodeId) -> Check {
        let node = self.nodes.get_mut(&id).expect("known node");
        let Some((number, write)) = node.unsynced.pop_front() else {
            return Ok(());
        };
        match write {
            Write::HardState(hard_state) => node.disk.hard_state = hard_state,
            Write::Entries(entries) => {
                let first = entries[0].index;
                if first > node.disk.entries.len() as u64 + 1 {
                    return Err(format!("node {id} wrote slot {first} past a hole"));
                }
                if let Some(entry) = entries
                    .iter()
                    .find(|entry| entry.term > node.disk.hard_state.term)
                {
                    return Err(format!(
                        "node {id} stored slot {} at ballot {}, above its durable promise {}",
                        entry.index, entry.term, node.disk.hard_state.term
                    ));
                }
                node.disk.entries.truncate(first as usize - 1);
                node.disk.entries.extend(entries);
            }
        }
        if let Some(engine) = node.engine.as_mut() {
            engine.handle_durable_writes(number);
        }
        Ok(())
    }

    /// Carries out the outputs of node `id`, in order, checking what they say.
    fn drain(&mut self, id: NodeId) -> Check {
        loop {
            let node = self.nodes.get_mut(&id).expect("known node");
            let Some(engine) = node.engine.as_mut() else {
                return Ok(());
            };
            let Some(output) = engine.poll_output() else {
                return Ok(());
            };
            match output {
                Output::PersistHardState(hard_state) => {
                    node.writes += 1;
                    node.unsynced
                        .push_back((node.writes, Write::HardState(hard_state)));
                    // Durable before anything after it: every write up to it lands now.
                    while !self.nodes[&id].unsynced.is_empty() {
                        self.land_one(id)?;
                    }
                }
                Output::PersistEntries(entries) => {
                    node.writes += 1;
                    node.unsynced
                        .push_back((node.writes, Write::Entries(entries)));
                }
                Output::Send { to, message } => self.send(id, to, message)?,
                Output::Apply(entries) => self.apply(id, entries)?,
                Output::ProposalResult {
                    id: proposal,
                    result,
                } => {
                    if let Ok(log_id) = result {
                        let payload = &self.proposals[&proposal.0];
                        if self.chosen.get(&log_id.index) != Some(payload) {
                            return Err(format!(
                                "node {id} acknowledged proposal {} at slot {}, which holds {:?}",
                                proposal.0,
                                log_id.index,
                                self.chosen.get(&log_id.index)
                            ));
                        }
                    }
                }
                Output::ReadResult { id: read, result } => {
                    let started = self.reads.remove(&read.0).expect("a read was started");
                    if let Ok(index) = result
                        && index < started
                    {
                        return Err(format!(
                            "node {id} served read {} at slot {index}, but {started} slots were \
                             chosen when it started",
                            read.0
                        ));
                    }
                }
                Output::RoleChanged { role, term, .. } => {
                    if role == Role::Leader {
                        if ballot_node(term) != id {
                            return Err(format!("node {id} leads in ballot {term} of another"));
                        }
                        self.led_since.entry(term).or_insert(self.now);
                        if let Some(other) = self.leaders.insert(term, id)
                            && other != id
                        {
                            return Err(format!("two leaders in ballot {term}"));
                        }
                    }
                }
                Output::ReadEntries { .. }
                | Output::SendSnapshot { .. }
                | Output::InstallSnapshot { .. } => {
                    return Err(format!("node {id} asked for storage reads or snapshots"));
                }
            }
        }
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) -> Check {
        let node = &self.nodes[&from];
        match &message.body {
            Body::Promise { .. } if node.disk.hard_state.term < message.term => {
                return Err(format!(
                    "node {from} sent a promise for ballot {} while its durable promise is {}",
                    message.term, node.disk.hard_state.term
                ));
            }
            Body::Accepted { .. } if node.disk.hard_state.term > message.term => {
                return Err(format!(
                    "node {from} accepted ballot {} below its durable promise {}",
                    message.term, node.disk.hard_state.term
                ));
            }
            _ => {}
        }
        let silent_since = self.silenced.get(&to).map(|since| {
            let led_since = self.led_since.get(&message.term).copied().unwrap_or(0);
            (*since).max(led_since)
        });
        let election_timeout = u64::from(self.config(from).election_timeout_ticks);
        if silent_since.is_some_and(|since| self.now > since + election_timeout)
            && let Body::Accept { entries, .. } = &message.body
        {
            if entries.is_empty() {
                self.heartbeats_to_silenced += 1;
            } else {
                self.values_to_silenced += 1;
            }
        }
        if self.rng.chance_percent(5) {
            return Ok(());
        }
        let copies = if self.rng.chance_percent(2) { 2 } else { 1 };
        for _ in 0..copies {
            // Now and then a message is held up for longer than an election takes.
            let delay = if self.rng.chance_percent(1) {
                self.rng.range_inclusive(20, 80)
            } else {
                self.rng.range_inclusive(0, 3)
            };
            let at = self.now + delay;
            self.network.push(InFlight {
                at,
                from,
                to,
                message: message.clone(),
            });
        }
        Ok(())
    }

    fn apply(&mut self, id: NodeId, entries: Vec<Entry>) -> Check {
        let node = self.nodes.get_mut(&id).expect("known node");
        for entry in entries {
            let expected = node.applied.len() as u64 + 1;
            if entry.index != expected {
                return Err(format!(
                    "node {id} applied slot {} after {}",
                    entry.index,
                    expected - 1
                ));
            }
            let value = payload_of(&entry);
            if let EntryPayload::Normal(bytes) = &entry.payload
                && !self.proposed.contains(bytes)
            {
                return Err(format!("node {id} applied a value nobody proposed"));
            }
            match self.chosen.get(&entry.index) {
                Some(chosen) if *chosen != value => {
                    return Err(format!(
                        "node {id} applied {:?} at slot {}, another node {:?}",
                        value, entry.index, chosen
                    ));
                }
                Some(_) => {}
                None => {
                    self.chosen.insert(entry.index, value.clone());
                }
            }
            node.applied.push(value);
            node.disk.applied = entry.index;
        }
        Ok(())
    }

    fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        let cut = |id: &NodeId| {
            self.cut_until
                .get(id)
                .is_some_and(|until| *until > self.now)
        };
        !cut(&from)
            && !cut(&to)
            && !self.silenced.contains_key(&from)
            && !self.silenced.contains_key(&to)
    }

    fn up(&self, id: NodeId) -> bool {
        self.nodes[&id].engine.is_some()
    }

    /// One step: faults, clients, ticks, deliveries, disk progress.
    fn step(&mut self, faults: bool) -> Check {
        self.now += 1;
        if std::env::var_os("PAXOS_TRACE").is_some() {
            eprintln!(
                "step {} network {} unsynced {:?} roles {:?}",
                self.now,
                self.network.len(),
                self.nodes
                    .values()
                    .map(|n| n.unsynced.len())
                    .collect::<Vec<_>>(),
                self.nodes
                    .values()
                    .map(|n| n.engine.as_ref().map(|e| (
                        e.role(),
                        e.commit_index(),
                        e.last_log_id().index,
                        (1..=5).filter_map(|p| e.replication(p)).collect::<Vec<_>>()
                    )))
                    .collect::<Vec<_>>()
            );
        }
        let ids = self.ids.clone();
        if faults {
            let down = ids.iter().filter(|id| !self.up(**id)).count();
            for id in &ids {
                let minority = (ids.len() - 1) / 2;
                if self.up(*id) && down < minority && self.rng.chance_percent(1) {
                    self.crash(*id);
                    let until = self.now + self.rng.range_inclusive(5, 60);
                    self.nodes.get_mut(id).expect("known").down_until = until;
                } else if !self.up(*id) && self.nodes[id].down_until <= self.now {
                    self.start(*id);
                    self.drain(*id)?;
                }
            }
            if self.rng.chance_percent(1) {
                let id = ids[self.rng.below(ids.len() as u64) as usize];
                let until = self.now + self.rng.range_inclusive(5, 80);
                self.cut_until.insert(id, until);
            }
        } else {
            for id in &ids {
                if !self.up(*id) {
                    self.start(*id);
                    self.drain(*id)?;
                }
            }
            self.cut_until.clear();
        }
        // Clients propose at leaders (and now and then at a follower, which refuses).
        for id in &ids {
            if !self.up(*id) || !self.rng.chance_percent(40) {
                continue;
            }
            self.next_proposal += 1;
            let payload = Bytes::from(format!("v{}", self.next_proposal));
            self.proposed.insert(payload.clone());
            self.proposals.insert(self.next_proposal, payload.clone());
            let engine = self.nodes.get_mut(id).expect("known").engine.as_mut();
            let engine = engine.expect("up");
            let _ = engine.propose(ProposalId(self.next_proposal), payload);
            if self.rng.chance_percent(25) && engine.read_index(ReadId(self.next_proposal)).is_ok()
            {
                self.reads
                    .insert(self.next_proposal, self.chosen.len() as u64);
            }
            self.drain(*id)?;
        }
        // Now and then a leader hands over (as on SIGTERM).
        for id in &ids {
            if let Some(engine) = self.nodes.get_mut(id).expect("known").engine.as_mut()
                && engine.role() == Role::Leader
                && self.rng.chance_percent(1)
            {
                let _ = engine.transfer_leadership(None);
                self.drain(*id)?;
            }
        }
        // The clock: a node whose clock runs slow misses ticks (while the faults last), so
        // that a deposed leader may go on believing it leads.
        for id in &ids {
            if faults && self.rng.chance_percent(self.nodes[id].slow_percent) {
                continue;
            }
            if let Some(engine) = self.nodes.get_mut(id).expect("known").engine.as_mut() {
                engine.tick();
                self.drain(*id)?;
            }
        }
        // Messages due now, in a shuffled order.
        let mut due = Vec::new();
        let mut kept = Vec::new();
        for message in std::mem::take(&mut self.network) {
            if message.at <= self.now {
                due.push(message);
            } else {
                kept.push(message);
            }
        }
        self.network = kept;
        while !due.is_empty() {
            let message = due.swap_remove(self.rng.below(due.len() as u64) as usize);
            if !self.reachable(message.from, message.to) {
                continue;
            }
            let to = message.to;
            if let Some(engine) = self.nodes.get_mut(&to).expect("known").engine.as_mut() {
                engine
                    .handle_message(message.from, message.message)
                    .map_err(|error| format!("node {to} refused a message: {error}"))?;
                self.drain(to)?;
            }
        }
        // Disks make progress at their own pace.
        for id in &ids {
            if self.up(*id) && self.rng.chance_percent(70) {
                let writes = self.rng.range_inclusive(1, 3);
                for _ in 0..writes {
                    self.land_one(*id)?;
                }
                self.drain(*id)?;
            }
        }
        Ok(())
    }

    /// The node that believes it leads, if any (the lowest id if several do).
    fn leader(&self) -> Option<NodeId> {
        self.nodes.iter().find_map(|(id, node)| {
            node.engine
                .as_ref()
                .filter(|engine| engine.role() == Role::Leader)
                .map(|_| *id)
        })
    }

    /// Steps without faults until a node leads; its id.
    fn elect(&mut self) -> NodeId {
        for _ in 0..500 {
            if let Some(leader) = self.leader() {
                return leader;
            }
            self.step(false).unwrap();
        }
        panic!("no leader within 500 steps");
    }

    /// Runs `steps` steps with faults, then heals everything and requires a new value to be
    /// decided and applied everywhere.
    fn run(&mut self, steps: u64) -> Check {
        for _ in 0..steps {
            self.step(true)?;
        }
        let before = self.chosen.len();
        for _ in 0..2_000 {
            self.step(false)?;
            let everyone = self
                .nodes
                .values()
                .map(|node| node.applied.len())
                .min()
                .unwrap_or(0);
            if everyone > before && everyone >= self.chosen.len().min(before + 1) {
                return Ok(());
            }
        }
        Err(format!(
            "no progress after the faults stopped: {} slots chosen before, applied {:?}",
            before,
            self.nodes
                .iter()
                .map(|(id, node)| (*id, node.applied.len()))
                .collect::<Vec<_>>()
        ))
    }
}

fn run_seed(seed: u64, plant: Option<PlantedBug>) -> Check {
    let voters = match seed % 8 {
        3 | 7 => 5,
        5 => 1,
        _ => 3,
    };
    let steps = 300 + seed % 300;
    Cluster::new(seed, voters, plant)
        .run(steps)
        .map_err(|error| format!("seed {seed} ({voters} voters): {error}"))
}

fn seeds(default: u64) -> u64 {
    std::env::var("PAXOS_SEEDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_seed_keeps_agreement_and_makes_progress() {
    let mut failures = Vec::new();
    for seed in 0..seeds(2_000) {
        if let Err(error) = run_seed(seed, None) {
            failures.push(error);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing seeds, first: {}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn one_seed() {
    let Some(seed) = std::env::var("PAXOS_SEED")
        .ok()
        .and_then(|value| value.parse().ok())
    else {
        return;
    };
    if let Err(error) = run_seed(seed, None) {
        panic!("{error}");
    }
}

/// The first seed under `plant` that a checker fails, among `limit`.
fn caught(plant: PlantedBug, limit: u64) -> Option<String> {
    (0..limit).find_map(|seed| run_seed(seed, Some(plant)).err())
}

#[test]
fn a_leader_ignoring_promised_values_is_caught() {
    let error = caught(PlantedBug::IgnorePromisedValues, 300).expect("caught");
    println!("{error}");
}

#[test]
fn accepting_below_a_promise_is_caught() {
    let error = caught(PlantedBug::AcceptBelowPromise, 300).expect("caught");
    assert!(error.contains("below its durable promise"), "{error}");
}

#[test]
fn deciding_across_ballots_is_caught() {
    let error = caught(PlantedBug::DecideAcrossBallots, 2000).expect("caught");
    println!("{error}");
}

#[test]
fn applying_past_a_hole_is_caught() {
    let error = caught(PlantedBug::ApplyPastHole, 300).expect("caught");
    println!("{error}");
}

#[test]
fn a_promise_sent_before_it_is_durable_is_caught() {
    let error = caught(PlantedBug::PromiseBeforeDurable, 300).expect("caught");
    assert!(error.contains("durable promise"), "{error}");
}

#[test]
fn a_leader_hands_over_to_the_node_it_names() {
    let mut cluster = Cluster::new(11, 3, None);
    let from = cluster.elect();
    let target = if from == 3 { 1 } else { from + 1 };
    let engine = cluster
        .nodes
        .get_mut(&from)
        .unwrap()
        .engine
        .as_mut()
        .unwrap();
    assert_eq!(engine.transfer_leadership(Some(target)), Ok(target));
    let applied_before = cluster.chosen.len();
    cluster.drain(from).unwrap();
    for _ in 0..200 {
        cluster.step(false).unwrap();
        if cluster.leader() == Some(target) && cluster.chosen.len() > applied_before + 5 {
            return;
        }
    }
    panic!(
        "node {target} did not take over from node {from}: leader {:?}",
        cluster.leader()
    );
}

#[test]
fn a_message_from_a_node_outside_the_voters_is_refused_not_followed() {
    let config = Config::new(1, vec![1, 2, 3]);
    let mut engine = MultiPaxos::new(config, Restored::default(), 1).unwrap();
    let accept = Message {
        term: ordo_core::paxos::ballot(5, 9),
        body: Body::Accept {
            first: 1,
            entries: Vec::new(),
            decided: 0,
            read_round: 0,
        },
    };
    assert_eq!(
        engine.handle_message(9, accept),
        Err(ordo_core::InvalidMessage::NotAVoter(9))
    );
    assert_eq!((engine.leader(), engine.term()), (None, 0));
}

/// A leader stops streaming values to an acceptor it has not heard from for an election
/// timeout (down, or cut off): they would only wait in its link's queue and arrive stale. It
/// keeps sending heartbeats, and replication resumes from the acceptor's answer. (Leaders
/// change now and then meanwhile: each new one may stream for its first election timeout.)
#[test]
fn a_silent_acceptor_gets_heartbeats_not_values_until_it_answers() {
    let mut cluster = Cluster::new(21, 3, None);
    let from = cluster.elect();
    let silent = if from == 3 { 1 } else { from + 1 };
    cluster.silenced.insert(silent, cluster.now);
    let election_timeout = cluster.config(from).election_timeout_ticks as u64;
    let decided_before = cluster.chosen.len();
    for _ in 0..10 * election_timeout {
        cluster.step(false).unwrap();
    }
    assert!(
        cluster.chosen.len() > decided_before + 10,
        "the majority kept deciding"
    );
    assert_eq!(
        cluster.values_to_silenced, 0,
        "values were streamed to an acceptor silent for an election timeout"
    );
    assert!(
        cluster.heartbeats_to_silenced > 0,
        "the silent acceptor got no heartbeats"
    );
    cluster.silenced.clear();
    let target = cluster.chosen.len() as u64;
    for _ in 0..500 {
        cluster.step(false).unwrap();
        let engine = cluster.nodes[&silent].engine.as_ref().expect("up");
        if engine.commit_index() >= target {
            return;
        }
    }
    panic!("the acceptor did not catch up once it answered");
}
