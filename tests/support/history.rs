//! A recorded workload and its history checker, for fault-injection runs.
//!
//! [`Workload::start`] runs producers that submit atomic batches through the SDK and record
//! every operation (invoke and complete times, outcome), and subscribers (each preferring a
//! different node) that record every committed batch they are given. [`Workload::finish`]
//! stops the producers, resolves unknown outcomes, submits a fence batch and waits until every
//! subscriber has it; [`check`] then looks for:
//!
//! - **lost**: acknowledged at seq s, but not applied at s;
//! - **duplicate**: one batch id at two seqs, or a seq seen twice or skipped by a subscriber;
//! - **torn**: applied messages differ from the submitted ones, or a precondition did not hold
//!   against the offsets recomputed from the applied order;
//! - **divergent**: two subscribers disagree at a seq;
//! - **real-time order**: acknowledged before another batch was submitted, yet ordered after it;
//! - **visible but refused**: a batch rejected (or failed definitely) yet applied, or a batch
//!   applied that nobody submitted.
//!
//! Operations with unknown outcome may appear at most once; when the cluster later answers a
//! status query about one, the answer must match what was applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_core::rng::Prng;
use ordo_participant::{
    Batch, BatchId, BatchStatus, Client, ClientConfig, Committed, CommittedBatch, Message, Outcome,
    Precondition, SubmitError, new_batch_id,
};

use super::{CLIENT_NAME, TestCluster};

/// Topics every producer writes to (shared, so preconditions race).
pub const TOPICS: [&str; 4] = ["orders", "payments", "stock", "audit"];
/// The topic of the fence batch that ends a run.
pub const FENCE_TOPIC: &str = "fence";

/// How a submit ended, as the producer saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Committed {
        seq: u64,
    },
    /// Definite: a precondition failed.
    Rejected,
    /// Definite per the SDK: the batch never reached a log.
    Unavailable,
    /// Maybe committed, maybe not.
    Unknown {
        detail: String,
    },
}

/// One submit, from invocation to completion.
#[derive(Clone, Debug)]
pub struct Operation {
    pub batch: Batch,
    pub invoked: Instant,
    pub completed: Instant,
    pub seen: Seen,
    /// For unknown outcomes: what a status query said after the run (`None`: no outcome
    /// registered; not asked: not present).
    pub resolved: Option<Option<Outcome>>,
}

/// The shape of the load.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    pub producers: usize,
    pub subscribers: usize,
    /// Pause between one producer's submits, so the machine keeps time for the cluster.
    pub pause: Duration,
    /// Percent of batches that carry a topic-offset precondition.
    pub precondition_percent: u64,
    /// How long the SDK retries one submit before it reports an unknown outcome.
    pub retry_timeout: Duration,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        Self {
            producers: 6,
            subscribers: 3,
            pause: Duration::from_millis(4),
            precondition_percent: 30,
            retry_timeout: Duration::from_secs(10),
        }
    }
}

/// A running workload. See the module documentation.
pub struct Workload {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
    producers: Vec<tokio::task::JoinHandle<Vec<Operation>>>,
    subscribers: Vec<SubscriberHandle>,
    client: Client,
}

struct SubscriberHandle {
    applied: Arc<Mutex<Vec<CommittedBatch>>>,
    /// Why the subscription ended, if it did (it should not before the run ends).
    ended: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Everything a run recorded.
pub struct History {
    pub operations: Vec<Operation>,
    /// Per subscriber, every batch in the order it was given.
    pub applied: Vec<Vec<CommittedBatch>>,
    pub fence: (BatchId, u64),
}

impl History {
    pub fn count(&self, matches: impl Fn(&Seen) -> bool) -> usize {
        self.operations
            .iter()
            .filter(|op| matches(&op.seen))
            .count()
    }

    pub fn summary(&self) -> String {
        format!(
            "{} submits: {} committed, {} rejected, {} unavailable, {} unknown; {} batches applied",
            self.operations.len(),
            self.count(|s| matches!(s, Seen::Committed { .. })),
            self.count(|s| matches!(s, Seen::Rejected)),
            self.count(|s| matches!(s, Seen::Unavailable)),
            self.count(|s| matches!(s, Seen::Unknown { .. })),
            self.fence.1,
        )
    }
}

/// A client of `cluster` that tries node `first` first.
pub async fn client_preferring(cluster: &TestCluster, first: usize, retry: Duration) -> Client {
    let mut endpoints: Vec<_> = cluster
        .ids()
        .iter()
        .map(|id| cluster.address(*id))
        .collect();
    let rotation = first % endpoints.len();
    endpoints.rotate_left(rotation);
    let mut config = ClientConfig::new(endpoints, cluster.tls_dir());
    config.client_name = Some(CLIENT_NAME.to_string());
    config.request_timeout = Duration::from_secs(2);
    config.retry_timeout = retry;
    // The cluster may have no leader yet; connect retries until some node answers.
    let what = "a node of the cluster to accept a client connection";
    super::wait_until(CONNECT_TIMEOUT, what, async || {
        Client::connect(config.clone())
            .await
            .map_err(|error| error.to_string())
    })
    .await
}

/// How long [`client_preferring`] waits for some node to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Workload {
    pub async fn start(cluster: &TestCluster, options: WorkloadOptions, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(AtomicU64::new(0));
        // The offsets the first subscriber has seen: producers base their preconditions on
        // them, so some hold and some lose the race.
        let offsets = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
        let mut subscribers = Vec::new();
        for n in 0..options.subscribers {
            let client = client_preferring(cluster, n, options.retry_timeout).await;
            let applied = Arc::new(Mutex::new(Vec::new()));
            let ended = Arc::new(Mutex::new(None));
            let (sink, offsets) = (applied.clone(), (n == 0).then(|| offsets.clone()));
            let why = ended.clone();
            let task = tokio::spawn(async move {
                let mut subscription = client.subscribe(1, Vec::new());
                loop {
                    let batch = match subscription.next().await {
                        Some(Ok(batch)) => batch,
                        Some(Err(error)) => {
                            *why.lock().expect("ended") = Some(error.to_string());
                            break;
                        }
                        None => {
                            *why.lock().expect("ended") = Some("the stream ended".into());
                            break;
                        }
                    };
                    if let Some(offsets) = &offsets {
                        let mut offsets = offsets.lock().expect("offsets");
                        for message in &batch.messages {
                            *offsets.entry(message.topic.clone()).or_default() += 1;
                        }
                    }
                    sink.lock().expect("applied").push(batch);
                }
            });
            subscribers.push(SubscriberHandle {
                applied,
                ended,
                task,
            });
        }
        let mut random = Prng::new(seed);
        let mut producers = Vec::new();
        for producer in 0..options.producers {
            let client = client_preferring(cluster, producer, options.retry_timeout).await;
            let (stop, acknowledged, offsets) =
                (stop.clone(), acknowledged.clone(), offsets.clone());
            let (mut random, options) = (random.fork(), options.clone());
            producers.push(tokio::spawn(async move {
                let mut operations = Vec::new();
                for n in 0u64.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let batch = make_batch(producer, n, &mut random, &options, &offsets);
                    let invoked = Instant::now();
                    let result = client.submit(batch.clone()).await;
                    let completed = Instant::now();
                    if result.is_ok() {
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    let seen = seen_of(&result);
                    operations.push(Operation {
                        batch,
                        invoked,
                        completed,
                        seen,
                        resolved: None,
                    });
                    tokio::time::sleep(options.pause).await;
                }
                operations
            }));
        }
        let client = client_preferring(cluster, 0, Duration::from_secs(30)).await;
        Self {
            stop,
            acknowledged,
            producers,
            subscribers,
            client,
        }
    }

    /// Submits acknowledged so far.
    pub fn acknowledged(&self) -> u64 {
        self.acknowledged.load(Ordering::SeqCst)
    }

    /// Waits until `more` further submits are acknowledged (the cluster makes progress).
    pub async fn wait_for_progress(&self, more: u64, timeout: Duration) {
        let target = self.acknowledged() + more;
        super::wait_until(
            timeout,
            &format!("{more} more acknowledged submits"),
            async || {
                let now = self.acknowledged();
                if now >= target {
                    Ok(())
                } else {
                    Err(format!("{now} of {target} acknowledged"))
                }
            },
        )
        .await;
    }

    /// Stops the producers, asks the cluster about every unknown outcome, submits a fence
    /// batch, waits until every subscriber has applied it, and returns the history.
    pub async fn finish(self, timeout: Duration) -> History {
        self.stop.store(true, Ordering::SeqCst);
        let mut operations = Vec::new();
        for producer in self.producers {
            operations.extend(producer.await.expect("a producer task"));
        }
        for operation in &mut operations {
            if matches!(operation.seen, Seen::Unknown { .. }) {
                let status = self.client.status(operation.batch.id).await;
                let status = status.unwrap_or_else(|e| panic!("status of an unknown batch: {e}"));
                // Beyond the horizon the cluster no longer knows; that claims nothing.
                operation.resolved = match status {
                    BatchStatus::Committed { seq, index } => {
                        Some(Some(Outcome::Committed { seq, index }))
                    }
                    BatchStatus::Rejected { reason } => Some(Some(Outcome::Rejected { reason })),
                    BatchStatus::Unknown => Some(None),
                    BatchStatus::BeyondHorizon { .. } => None,
                };
            }
        }
        let fence = Batch {
            id: new_batch_id(),
            messages: vec![Message::new(FENCE_TOPIC, Bytes::from_static(b"end"))],
            preconditions: Vec::new(),
        };
        let committed = self
            .client
            .submit(fence.clone())
            .await
            .unwrap_or_else(|error| panic!("the fence batch did not commit: {error}"));
        let what = format!(
            "every subscriber to apply the fence at seq {}",
            committed.seq
        );
        super::wait_until(timeout, &what, async || {
            for (n, subscriber) in self.subscribers.iter().enumerate() {
                let applied = subscriber.applied.lock().expect("applied");
                let last = applied.last().map_or(0, |batch| batch.seq);
                if last < committed.seq {
                    let ended = subscriber.ended.lock().expect("ended");
                    return Err(match &*ended {
                        Some(why) => format!("subscriber {n} stopped at seq {last}: {why}"),
                        None => format!("subscriber {n} is at seq {last}"),
                    });
                }
            }
            Ok(())
        })
        .await;
        let mut applied = Vec::new();
        for subscriber in self.subscribers {
            subscriber.task.abort();
            let batches = std::mem::take(&mut *subscriber.applied.lock().expect("applied"));
            applied.push(batches);
        }
        History {
            operations,
            applied,
            fence: (fence.id, committed.seq),
        }
    }
}

/// What a submit's result tells about its batch.
pub fn seen_of(result: &Result<Committed, SubmitError>) -> Seen {
    match result {
        Ok(committed) => Seen::Committed { seq: committed.seq },
        Err(SubmitError::Rejected { .. }) => Seen::Rejected,
        Err(SubmitError::Unavailable { .. }) => Seen::Unavailable,
        Err(other) => Seen::Unknown {
            detail: other.to_string(),
        },
    }
}

fn make_batch(
    producer: usize,
    n: u64,
    random: &mut Prng,
    options: &WorkloadOptions,
    offsets: &Mutex<BTreeMap<String, u64>>,
) -> Batch {
    let count = random.range_inclusive(1, 4);
    let messages = (0..count)
        .map(|k| {
            let topic = TOPICS[random.below(TOPICS.len() as u64) as usize];
            Message::new(topic, Bytes::from(format!("p{producer}-{n}-{k}")))
        })
        .collect();
    let mut preconditions = Vec::new();
    if random.chance_percent(options.precondition_percent) {
        let topic = TOPICS[random.below(TOPICS.len() as u64) as usize];
        let offset = offsets.lock().expect("offsets").get(topic).copied();
        preconditions.push(Precondition::TopicOffset {
            topic: topic.to_string(),
            offset: offset.unwrap_or(0),
        });
    }
    Batch {
        id: new_batch_id(),
        messages,
        preconditions,
    }
}

/// Every violation of the guarantees in `history` (empty when it is clean). See the module
/// documentation for what each check means.
pub fn check(history: &History) -> Vec<String> {
    let mut violations = Vec::new();
    let last_seq = history.fence.1;
    // Each subscriber: seqs 1..=last, each once, in order.
    for (n, batches) in history.applied.iter().enumerate() {
        for (position, batch) in batches.iter().enumerate() {
            let expected = position as u64 + 1;
            if batch.seq != expected {
                violations.push(format!(
                    "subscriber {n}: the batch after seq {} has seq {} (a gap or a repeat)",
                    expected - 1,
                    batch.seq
                ));
                break;
            }
        }
        if batches.get(last_seq as usize - 1).map(|b| b.id) != Some(history.fence.0) {
            violations.push(format!(
                "subscriber {n}: the fence is not at seq {last_seq}"
            ));
        }
    }
    // Divergence: every subscriber holds the same batch at every seq.
    let reference = &history.applied[0];
    for (n, batches) in history.applied.iter().enumerate().skip(1) {
        for (a, b) in reference.iter().zip(batches) {
            if a != b {
                violations.push(format!(
                    "divergent: subscribers 0 and {n} disagree at seq {} (ids {} and {})",
                    a.seq, a.id, b.id
                ));
                break;
            }
        }
    }
    // Where each batch id was applied (by subscriber 0), and no id twice.
    let mut applied_at: BTreeMap<BatchId, u64> = BTreeMap::new();
    for batch in reference.iter().take(last_seq as usize) {
        if let Some(first) = applied_at.insert(batch.id, batch.seq) {
            violations.push(format!(
                "duplicate: batch {} applied at seqs {first} and {}",
                batch.id, batch.seq
            ));
        }
    }
    let submitted: BTreeMap<BatchId, &Operation> = history
        .operations
        .iter()
        .map(|op| (op.batch.id, op))
        .collect();
    for operation in &history.operations {
        let id = operation.batch.id;
        let at = applied_at.get(&id).copied();
        match (&operation.seen, at) {
            (Seen::Committed { seq }, Some(at)) if *seq != at => violations.push(format!(
                "lost: batch {id} was acknowledged at seq {seq} but applied at seq {at}"
            )),
            (Seen::Committed { seq }, None) => violations.push(format!(
                "lost: batch {id} was acknowledged at seq {seq} but never applied"
            )),
            (Seen::Rejected, Some(at)) => violations.push(format!(
                "visible but rejected: batch {id} was rejected but applied at seq {at}"
            )),
            (Seen::Unavailable, Some(at)) => violations.push(format!(
                "visible but failed: batch {id} was reported never appended but applied at seq {at}"
            )),
            _ => {}
        }
        match (&operation.resolved, at) {
            (Some(Some(Outcome::Committed { seq, .. })), at) if at != Some(*seq) => {
                violations.push(format!(
                    "unknown batch {id}: the cluster says seq {seq}, subscribers applied it at {at:?}"
                ))
            }
            (Some(None) | Some(Some(Outcome::Rejected { .. })), Some(at)) => {
                violations.push(format!(
                    "unknown batch {id}: the cluster says it did not commit, but it is at seq {at}"
                ))
            }
            _ => {}
        }
    }
    // Every applied batch was submitted, whole, and its preconditions held.
    let mut offsets: BTreeMap<&str, u64> = BTreeMap::new();
    for batch in reference.iter().take(last_seq as usize) {
        if batch.id == history.fence.0 {
            continue;
        }
        let Some(operation) = submitted.get(&batch.id) else {
            violations.push(format!(
                "phantom: batch {} at seq {} was never submitted",
                batch.id, batch.seq
            ));
            continue;
        };
        if batch.messages != operation.batch.messages {
            violations.push(format!(
                "torn: batch {} at seq {} holds {} messages that differ from the {} submitted",
                batch.id,
                batch.seq,
                batch.messages.len(),
                operation.batch.messages.len()
            ));
        }
        for precondition in &operation.batch.preconditions {
            if let Precondition::TopicOffset { topic, offset } = precondition {
                let actual = offsets.get(topic.as_str()).copied().unwrap_or(0);
                if actual != *offset {
                    violations.push(format!(
                        "torn: batch {} at seq {} required {topic:?} at offset {offset}, \
                         but the applied order puts it at {actual}",
                        batch.id, batch.seq
                    ));
                }
            }
        }
        for message in &batch.messages {
            *offsets.entry(message.topic.as_str()).or_default() += 1;
        }
    }
    violations.extend(check_real_time(history, &applied_at));
    violations
}

/// A batch acknowledged before another was submitted must be ordered before it.
fn check_real_time(history: &History, applied_at: &BTreeMap<BatchId, u64>) -> Vec<String> {
    let mut acknowledged: Vec<(Instant, u64, BatchId)> = history
        .operations
        .iter()
        .filter_map(|op| match op.seen {
            Seen::Committed { seq } => Some((op.completed, seq, op.batch.id)),
            _ => None,
        })
        .collect();
    acknowledged.sort();
    // The highest seq acknowledged up to each position, and by which batch.
    let mut highest = Vec::with_capacity(acknowledged.len());
    let mut best: Option<(u64, BatchId)> = None;
    for &(_, seq, id) in &acknowledged {
        if best.is_none_or(|(top, _)| seq > top) {
            best = Some((seq, id));
        }
        highest.push(best.expect("set above"));
    }
    let mut violations = Vec::new();
    for operation in &history.operations {
        let Some(&seq) = applied_at.get(&operation.batch.id) else {
            continue;
        };
        let before = acknowledged.partition_point(|(at, ..)| *at < operation.invoked);
        if before == 0 {
            continue;
        }
        let (top, by) = highest[before - 1];
        if top >= seq {
            violations.push(format!(
                "real-time order: batch {by} was acknowledged at seq {top} before batch {} \
                 was submitted, which was ordered at seq {seq}",
                operation.batch.id
            ));
        }
    }
    violations.truncate(20);
    violations
}

/// Ids of every batch the subscribers applied, for anti-vacuity counts.
pub fn applied_ids(history: &History) -> BTreeSet<BatchId> {
    history.applied[0].iter().map(|batch| batch.id).collect()
}

/// Plants each kind of violation in a small clean history and fails unless [`check`] reports
/// it (and reports nothing for the clean one): the checker is trusted only after it has been
/// seen to catch what it is for. Runs before every fault run; needs no cluster.
pub fn self_test() {
    let start = Instant::now();
    let at = |millis: u64| start + Duration::from_millis(millis);
    let batch = |n: u8, topic: &str, preconditions: Vec<Precondition>| Batch {
        id: BatchId([n; 16]),
        messages: vec![Message::new(topic, Bytes::from(vec![n]))],
        preconditions,
    };
    let a = batch(1, "orders", Vec::new());
    let offset_one = Precondition::TopicOffset {
        topic: "orders".into(),
        offset: 1,
    };
    let b = batch(2, "orders", vec![offset_one]);
    let c = batch(3, "stock", Vec::new());
    let fence = batch(9, FENCE_TOPIC, Vec::new());
    let operation = |batch: &Batch, invoked: u64, completed: u64, seen: Seen| Operation {
        batch: batch.clone(),
        invoked: at(invoked),
        completed: at(completed),
        seen,
        resolved: None,
    };
    let applied = |batches: &[&Batch]| -> Vec<CommittedBatch> {
        let numbered = batches.iter().enumerate();
        let committed = numbered.map(|(n, batch)| CommittedBatch {
            seq: n as u64 + 1,
            index: n as u64 + 2,
            id: batch.id,
            messages: batch.messages.clone(),
        });
        committed.collect()
    };
    let clean = || History {
        operations: vec![
            operation(&a, 0, 10, Seen::Committed { seq: 1 }),
            operation(&b, 20, 30, Seen::Committed { seq: 2 }),
            operation(&c, 20, 30, Seen::Rejected),
        ],
        applied: vec![applied(&[&a, &b, &fence]); 2],
        fence: (fence.id, 3),
    };
    let expect = |what: &str, history: History, needle: &str| {
        let violations = check(&history);
        assert!(
            violations.iter().any(|v| v.contains(needle)),
            "the history checker missed a planted {what} (looked for {needle:?}); it said: \
             {violations:?}"
        );
    };
    let violations = check(&clean());
    assert!(
        violations.is_empty(),
        "a clean history failed the checker: {violations:?}"
    );

    let mut lost = clean();
    lost.applied = vec![applied(&[&a, &fence]); 2];
    lost.fence.1 = 2;
    expect("lost batch", lost, "lost:");

    let mut duplicate = clean();
    duplicate.applied = vec![applied(&[&a, &b, &a, &fence]); 2];
    duplicate.fence.1 = 4;
    expect("duplicate", duplicate, "duplicate:");

    let mut torn = clean();
    for subscriber in &mut torn.applied {
        subscriber[1]
            .messages
            .push(Message::new("audit", Bytes::new()));
    }
    expect("torn batch", torn, "torn:");

    let mut divergent = clean();
    divergent.applied[1] = applied(&[&a, &c, &fence]);
    expect("divergence", divergent, "divergent:");

    let mut reordered = clean();
    reordered.operations[0].seen = Seen::Committed { seq: 2 };
    reordered.operations[1].seen = Seen::Committed { seq: 1 };
    reordered.operations[1].batch.preconditions.clear();
    let b_first = {
        let mut b = b.clone();
        b.preconditions.clear();
        b
    };
    reordered.applied = vec![applied(&[&b_first, &a, &fence]); 2];
    expect("real-time reordering", reordered, "real-time order:");

    let mut visible = clean();
    visible.applied = vec![applied(&[&a, &b, &c, &fence]); 2];
    visible.fence.1 = 4;
    expect(
        "rejected but visible batch",
        visible,
        "visible but rejected:",
    );

    let mut phantom = clean();
    let stranger = batch(7, "orders", Vec::new());
    phantom.applied = vec![applied(&[&a, &b, &stranger, &fence]); 2];
    phantom.fence.1 = 4;
    expect("phantom batch", phantom, "phantom:");

    let mut unknown = clean();
    unknown.operations[2].seen = Seen::Unknown {
        detail: "planted".into(),
    };
    unknown.operations[2].resolved = Some(None);
    unknown.applied = vec![applied(&[&a, &b, &c, &fence]); 2];
    unknown.fence.1 = 4;
    expect(
        "unknown outcome that contradicts the cluster",
        unknown,
        "unknown batch",
    );

    let mut precondition = clean();
    precondition.applied = vec![applied(&[&b, &a, &fence]); 2];
    precondition.operations[0].seen = Seen::Committed { seq: 2 };
    precondition.operations[1].seen = Seen::Committed { seq: 1 };
    precondition.operations[1].invoked = at(0);
    precondition.operations[0].invoked = at(20);
    precondition.operations[0].completed = at(30);
    expect(
        "broken precondition",
        precondition,
        "required \"orders\" at offset 1",
    );
}
