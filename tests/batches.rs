//! Issue 5's "done when", against real 3-node clusters of `ordo serve` processes, through the
//! participant SDK (and, for the limits, below it):
//!
//! - submitters racing with `TopicOffset` preconditions: exactly one batch wins each offset;
//! - submits retried across kill -9s of the leader commit once, and a re-submit of the same id
//!   answers the original seq; a dead endpoint costs a client one request timeout, not one per
//!   submit;
//! - subscribers on different nodes, and one whose node is killed and restarted under it, see
//!   one identical sequence across a leader change; a topic filter keeps exactly its batches;
//! - the Applier, SIGKILLed at seeded random moments in a child process (this test binary,
//!   re-executed), ends with the state of applying every committed batch exactly once;
//! - every batch limit is refused with an error naming it, by the SDK and by every node itself,
//!   an oversized request frame is refused with the frame limit, and a batch at each limit
//!   commits whole.
//!
//! Each test checks the committed sequence itself (a subscription from seq 1), not only what the
//! submitters were told. `ORDO_TEST_SEED` replays a test's random choices (kill moments, batch
//! shapes); `ORDO_TEST_APPLIER_CYCLES` sets the Applier crash test's kill cycles (default 50).
//!

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_common::NodeId;
use ordo_common::batch::{
    BATCH_ENCODING_OVERHEAD_BYTES, MESSAGE_ENCODING_OVERHEAD_BYTES, bytes_counted,
};

/// What a batch of one message to topic `big` with an empty payload counts against
/// `BATCH_BYTES_MAX` (the topic plus the encoding overhead).
const ONE_MESSAGE_BATCH_BYTES: u64 =
    3 + MESSAGE_ENCODING_OVERHEAD_BYTES + BATCH_ENCODING_OVERHEAD_BYTES;
use ordo_common::client::{CLIENT_REQUEST_BYTES_MAX, ClientRequest, ClientResponse, RefusedCode};
use ordo_common::limits::{
    BATCH_BYTES_MAX, BATCH_MESSAGES_MAX, BATCH_PRECONDITIONS_MAX, BATCH_TOPICS_MAX,
    MESSAGE_HEADERS_MAX, MESSAGE_KEY_BYTES_MAX, TOPIC_NAME_BYTES_MAX,
};
use ordo_participant::applier::CURSOR_TABLE;
use ordo_participant::{
    Applier, Batch, BatchError, BatchId, BatchStatus, Client, ClientConfig, Committed,
    CommittedBatch, HandlerError, Message, NodeConnection, Precondition, RejectReason, SubmitError,
    new_batch_id,
};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use support::{CLIENT_NAME, ClusterOptions, TestCluster, wait_until};

/// Time for a fresh cluster's processes to start and elect a leader, on a busy machine.
const STARTUP: Duration = Duration::from_secs(30);
/// Time for a subscription to deliver everything up to a known seq, or a child to finish.
const CATCH_UP: Duration = Duration::from_secs(60);
/// The SDK's per-request timeout in these tests: short, so that a request to a killed node
/// fails (and is retried with the same batch id) well within the test's time.
const SDK_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

// ----- 1. racing preconditions -----

/// Submitters racing for the same topic.
const RACERS: u64 = 8;
/// Offsets they race for: the race ends when the topic holds this many messages.
const RACE_OFFSETS: u64 = 100;
const RACE_TOPIC: &str = "race";
/// A second topic in every racing batch: a rejected batch must leave no trace in it either.
const RACE_AUDIT_TOPIC: &str = "race-audit";

/// One racing submit and what the submitter was told.
struct RaceAttempt {
    racer: u64,
    batch: Batch,
    /// The offset the batch's precondition expected.
    expected: u64,
    result: Result<Committed, u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_submitters_with_topic_offset_preconditions_commit_exactly_one_batch_per_offset() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP).await;
    // Each racer has its own client (own connections), as separate services would.
    let mut racers = Vec::new();
    for racer in 0..RACERS {
        let client = connect(&cluster, endpoints(&cluster, &cluster.ids())).await;
        racers.push(tokio::spawn(race(client, racer)));
    }
    let mut attempts = Vec::new();
    for racer in racers {
        attempts.extend(racer.await.expect("a racer panicked"));
    }
    let client = connect(&cluster, endpoints(&cluster, &cluster.ids())).await;

    // Exactly one winner per offset, and the winner at offset o committed at seq o + 1: every
    // committed batch in this cluster is a winner.
    let mut winners: BTreeMap<u64, Vec<&RaceAttempt>> = BTreeMap::new();
    for attempt in attempts.iter().filter(|attempt| attempt.result.is_ok()) {
        winners.entry(attempt.expected).or_default().push(attempt);
    }
    let offsets: Vec<u64> = winners.keys().copied().collect();
    assert_eq!(
        offsets,
        (0..RACE_OFFSETS).collect::<Vec<_>>(),
        "offsets that had a winner"
    );
    for (offset, won) in &winners {
        let ids: Vec<String> = won.iter().map(|w| w.batch.id.to_string()).collect();
        assert_eq!(won.len(), 1, "offset {offset} was won by {ids:?}");
        let committed = won[0].result.expect("a winner");
        assert_eq!(committed.seq, offset + 1, "the winner of offset {offset}");
    }
    let losers = attempts.len() as u64 - RACE_OFFSETS;
    eprintln!(
        "{RACERS} racers: {} submits, {RACE_OFFSETS} won (one per offset), {losers} rejected",
        attempts.len()
    );
    assert!(
        losers > 0,
        "the racers never collided: the test raced nothing"
    );

    // The committed sequence is exactly the winners, in offset order, whole.
    let sequence = committed_sequence(&client, RACE_OFFSETS).await;
    for (batch, (offset, won)) in sequence.iter().zip(&winners) {
        let winner = &won[0].batch;
        assert_eq!(
            (batch.id, &batch.messages),
            (winner.id, &winner.messages),
            "seq {} is not the winner of offset {offset} (racer {})",
            batch.seq,
            won[0].racer
        );
    }

    // Both topics hold exactly the winners' messages: nothing of a rejected batch is visible.
    for topic in [RACE_TOPIC, RACE_AUDIT_TOPIC] {
        assert_eq!(topic_offset(&client, topic).await, RACE_OFFSETS, "{topic}");
    }
    // The registry recorded each outcome as its submitter was told it.
    for attempt in &attempts {
        let recorded = client.status(attempt.batch.id).await.expect("status");
        let told = match attempt.result {
            Ok(committed) => BatchStatus::Committed {
                seq: committed.seq,
                index: committed.index,
            },
            Err(actual) => BatchStatus::Rejected {
                reason: RejectReason::TopicOffset {
                    topic: RACE_TOPIC.into(),
                    expected: attempt.expected,
                    actual,
                },
            },
        };
        assert_eq!(recorded, told, "batch {}", attempt.batch.id);
    }
    // No rejected batch (nor the offset probes) took a seq.
    let marker = submit_marker(&client).await;
    assert_eq!(marker.seq, RACE_OFFSETS + 1, "the next seq after the race");
}

/// Submits at the offset it believes the topic is at, until the topic holds
/// [`RACE_OFFSETS`] messages. A rejection tells it the actual offset.
async fn race(client: Client, racer: u64) -> Vec<RaceAttempt> {
    let mut believed = 0;
    let mut attempts = Vec::new();
    while believed < RACE_OFFSETS {
        let n = attempts.len() as u64;
        let text = format!("racer {racer} attempt {n} at offset {believed}");
        let batch = Batch {
            id: test_batch_id(1, racer, n),
            messages: vec![
                Message::new(RACE_TOPIC, text.clone()),
                Message::new(RACE_AUDIT_TOPIC, text),
            ],
            preconditions: vec![Precondition::TopicOffset {
                topic: RACE_TOPIC.into(),
                offset: believed,
            }],
        };
        let result = match client.submit(batch.clone()).await {
            Ok(committed) => {
                assert_eq!(committed.id, batch.id);
                Ok(committed)
            }
            Err(SubmitError::Rejected {
                reason:
                    RejectReason::TopicOffset {
                        topic,
                        expected,
                        actual,
                    },
            }) => {
                assert_eq!((topic.as_str(), expected), (RACE_TOPIC, believed));
                assert!(
                    actual > believed,
                    "racer {racer}: rejected at offset {believed}, but the topic is at {actual}: \
                     a topic offset went back, or a failed precondition was reported"
                );
                Err(actual)
            }
            Err(error) => panic!("racer {racer}: submit at offset {believed} failed: {error}"),
        };
        attempts.push(RaceAttempt {
            racer,
            batch,
            expected: believed,
            result,
        });
        believed = match result {
            Ok(_) => believed + 1,
            Err(actual) => actual,
        };
    }
    attempts
}

// ----- 2. idempotent retry across a leader kill -----

const RETRY_SUBMITTERS: u64 = 12;
/// Acknowledged batches before the first leader kill, and between each later step (new leader
/// → restart → next kill → ...; after the last restart → stop).
const RETRY_KILL_AFTER_ACKS: u64 = 100;
const RETRY_STEP_ACKS: u64 = 60;
/// Leader kills in the run.
const RETRY_KILLS: usize = 2;

/// What the submitters of the retry test count together.
#[derive(Default)]
struct SubmitCounts {
    acknowledged: AtomicU64,
    /// Submits that took longer than one request timeout, and the slowest, in milliseconds.
    slow: AtomicU64,
    slowest_millis: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_retried_across_a_leader_kill_commit_once_and_a_resubmit_answers_the_same_seq() {
    let mut cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP).await;
    let timeline = Timeline::start("retry");
    let client = connect(&cluster, endpoints(&cluster, &cluster.ids())).await;
    let counts = Arc::new(SubmitCounts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut submitters = Vec::new();
    for submitter in 0..RETRY_SUBMITTERS {
        let (client, counts, stop) = (client.clone(), counts.clone(), stop.clone());
        submitters.push(tokio::spawn(submit_until_stopped(
            client, submitter, counts, stop,
        )));
    }

    // Kill the leader while every submitter has a batch in flight, let a new leader take
    // over under load, then bring the old leader back; again, soon after the restart.
    let acknowledged = &counts.acknowledged;
    let mut killed = Vec::new();
    let mut target = RETRY_KILL_AFTER_ACKS;
    for _ in 0..RETRY_KILLS {
        let leader = cluster.wait_for_leader(STARTUP).await.id;
        wait_for_count(acknowledged, target, "acknowledgements before a kill").await;
        cluster.kill9(leader);
        let killed_at = acknowledged.load(Ordering::SeqCst);
        timeline.note(format!(
            "killed leader {leader} (kill -9) after {killed_at} acks"
        ));
        let new_leader = cluster.wait_for_leader(STARTUP).await.id;
        timeline.note(format!("node {new_leader} leads"));
        target = killed_at + RETRY_STEP_ACKS;
        wait_for_count(acknowledged, target, "acknowledgements from the new leader").await;
        cluster.restart(leader);
        timeline.note(format!("restarted node {leader}"));
        killed.push(leader);
        target += RETRY_STEP_ACKS;
    }
    wait_for_count(acknowledged, target, "acknowledgements after the restarts").await;
    stop.store(true, Ordering::SeqCst);

    let mut results = Vec::new();
    for submitter in submitters {
        results.push(submitter.await.expect("a submitter panicked"));
    }
    let unresolved = results.iter().flatten().filter(|(_, r)| r.is_err()).count();
    timeline.note(format!(
        "{} batches submitted; {unresolved} without a definite outcome (settled by re-submit); \
         {} submits took over {SDK_REQUEST_TIMEOUT:?}, the slowest {} ms",
        results.iter().flatten().count(),
        counts.slow.load(Ordering::SeqCst),
        counts.slowest_millis.load(Ordering::SeqCst)
    ));

    // Within one submitter, a batch acknowledged before the next was submitted has a lower seq.
    for (submitter, results) in results.iter().enumerate() {
        let seqs: Vec<u64> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok().map(|c| c.seq))
            .collect();
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "submitter {submitter}'s acknowledged seqs are not increasing: {seqs:?}"
        );
    }

    // Re-submit every batch (each submitter's again, concurrently): the first answer stands;
    // an unknown outcome becomes definite.
    let mut resubmitters = Vec::new();
    for results in results {
        let client = client.clone();
        resubmitters.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for (batch, first) in results {
                let again = client.submit(batch.clone()).await;
                answers.push((batch, first, again));
            }
            answers
        }));
    }
    let mut committed: HashMap<BatchId, (Committed, Batch)> = HashMap::new();
    for resubmitter in resubmitters {
        for (batch, first, again) in resubmitter.await.expect("a re-submitter panicked") {
            let again =
                again.unwrap_or_else(|error| panic!("re-submit of batch {}: {error}", batch.id));
            if let Ok(first) = first {
                assert_eq!(again, first, "re-submit of batch {}", batch.id);
            }
            committed.insert(batch.id, (again, batch));
        }
    }
    timeline.note("every batch re-submitted");

    // The committed sequence holds each batch exactly once, at its acknowledged seq, whole,
    // and nothing else.
    let total = committed.len() as u64;
    let last_seq = committed
        .values()
        .map(|(c, _)| c.seq)
        .max()
        .expect("batches");
    assert_eq!(
        last_seq, total,
        "the last seq, with {total} distinct batches"
    );
    let sequence = committed_sequence(&client, last_seq).await;
    let mut seen = HashMap::new();
    for batch in &sequence {
        if let Some(earlier) = seen.insert(batch.id, batch.seq) {
            panic!(
                "batch {} committed twice: seqs {earlier} and {}",
                batch.id, batch.seq
            );
        }
        let (acknowledged, submitted) = committed
            .get(&batch.id)
            .unwrap_or_else(|| panic!("seq {} holds unknown batch {}", batch.seq, batch.id));
        assert_eq!(batch.seq, acknowledged.seq, "batch {}", batch.id);
        assert_eq!(batch.messages, submitted.messages, "batch {}", batch.id);
    }
    assert_eq!(seen.len(), committed.len(), "acknowledged batches missing");

    // Each restarted node serves the very same sequence from its own log.
    for node in killed {
        let restarted = connect(&cluster, endpoints(&cluster, &[node])).await;
        let replayed = committed_sequence(&restarted, last_seq).await;
        assert!(
            replayed == sequence,
            "the restarted node {node} serves another sequence"
        );
    }
}

/// Submits its own batches one after another until told to stop; returns each with what the
/// first submit answered.
async fn submit_until_stopped(
    client: Client,
    submitter: u64,
    counts: Arc<SubmitCounts>,
    stop: Arc<AtomicBool>,
) -> Vec<(Batch, Result<Committed, SubmitError>)> {
    let mut results = Vec::new();
    for n in 0.. {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let batch = retry_batch(submitter, n);
        let sent = Instant::now();
        let result = client.submit(batch.clone()).await;
        let took = sent.elapsed();
        counts
            .slowest_millis
            .fetch_max(took.as_millis() as u64, Ordering::SeqCst);
        counts
            .slow
            .fetch_add(u64::from(took > SDK_REQUEST_TIMEOUT), Ordering::SeqCst);
        match &result {
            Ok(_) => {
                counts.acknowledged.fetch_add(1, Ordering::SeqCst);
            }
            // Outcome unknown or never appended: the re-submit settles it.
            Err(SubmitError::Timeout { .. } | SubmitError::Unavailable { .. }) => {}
            Err(error) => panic!("batch {}: {error}", batch.id),
        }
        results.push((batch, result));
    }
    results
}

/// A client that once found the leader goes straight to it: a dead node among its endpoints
/// costs one request timeout, not one per submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_costs_one_timeout_not_one_per_submit() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    let followers = cluster.others(leader);
    // While it does not know the leader, the SDK tries the endpoints in turn: in one of the two
    // orders it meets the dead follower first, whichever endpoint it starts with.
    let dead = followers[0];
    let orders = [[dead, leader], [leader, dead]];
    let mut clients = Vec::new();
    for order in orders {
        clients.push(connect(&cluster, endpoints(&cluster, &order)).await);
    }
    cluster.kill9(dead);
    for (client, order) in clients.iter().zip(orders) {
        let mut took = Vec::new();
        for n in 0..5 {
            let sent = Instant::now();
            client
                .submit(retry_batch(order[0], n))
                .await
                .unwrap_or_else(|error| panic!("submit {n} with node {dead} down: {error}"));
            took.push(sent.elapsed());
        }
        let after_first: Duration = took[1..].iter().sum();
        // Without the leader remembered, each of the four costs a whole request timeout.
        assert!(
            after_first < 2 * SDK_REQUEST_TIMEOUT,
            "endpoints {order:?} with node {dead} down: submits took {took:?}; the client keeps \
             trying the dead node"
        );
    }
}

/// Submitter `submitter`'s `n`th batch: its own id, two messages.
fn retry_batch(submitter: u64, n: u64) -> Batch {
    let topic = format!("retry-{}", submitter % 3);
    Batch {
        id: test_batch_id(2, submitter, n),
        messages: vec![
            Message::new(
                topic.clone(),
                format!("submitter {submitter} batch {n} part 1"),
            ),
            Message::new(topic, format!("submitter {submitter} batch {n} part 2")),
        ],
        preconditions: Vec::new(),
    }
}

// ----- 3. subscribers agree -----

const SUBSCRIBE_PRODUCERS: u64 = 3;
const SUBSCRIBE_TOPICS: [&str; 3] = ["a", "b", "c"];
/// The topic the filtered subscriber asks for.
const SUBSCRIBE_FILTER: &str = "b";
/// Acknowledged batches before the leader kill, before its restart, and before the end.
const SUBSCRIBE_PHASE_ACKS: [u64; 3] = [80, 160, 240];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_on_different_nodes_see_one_sequence_across_a_leader_change() {
    let mut seed = Seed::new("subscribers");
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    let followers = cluster.others(leader);
    // Each of the first three subscribers can reach only its own node: two followers (they
    // serve up to their own commit index, through the leader change), and the leader, which
    // is killed and restarted under its subscriber. The fourth, filtered, may use any node.
    let nodes = [followers[0], followers[1], leader];
    let mut subscribers = Vec::new();
    for node in nodes {
        let client = connect(&cluster, endpoints(&cluster, &[node])).await;
        subscribers.push(Collector::start(&client, Vec::new()));
    }
    let order = [followers[1], leader, followers[0]];
    let filtered_client = connect(&cluster, endpoints(&cluster, &order)).await;
    let filtered = Collector::start(&filtered_client, vec![SUBSCRIBE_FILTER.to_string()]);

    let producer_client = connect(&cluster, endpoints(&cluster, &cluster.ids())).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut producers = Vec::new();
    for producer in 0..SUBSCRIBE_PRODUCERS {
        let random = Random::new(seed.draw());
        let (client, stop) = (producer_client.clone(), stop.clone());
        let acknowledged = acknowledged.clone();
        producers.push(tokio::spawn(async move {
            produce_topic_mix(client, producer, random, stop, acknowledged).await
        }));
    }
    let timeline = Timeline::start("subscribers");
    let [kill_at, restart_at, stop_at] = SUBSCRIBE_PHASE_ACKS;
    wait_for_count(&acknowledged, kill_at, "acknowledgements before the kill").await;
    cluster.kill9(leader);
    timeline.note(format!(
        "killed leader {leader} (kill -9) after {kill_at} acks"
    ));
    let new_leader = cluster.wait_for_leader(STARTUP).await.id;
    timeline.note(format!("node {new_leader} leads"));
    wait_for_count(
        &acknowledged,
        restart_at,
        "acknowledgements from the new leader",
    )
    .await;
    cluster.restart(leader);
    timeline.note(format!("restarted node {leader}"));
    wait_for_count(&acknowledged, stop_at, "acknowledgements after the restart").await;
    stop.store(true, Ordering::SeqCst);
    let mut acknowledged_batches: BTreeMap<u64, Batch> = BTreeMap::new();
    for producer in producers {
        acknowledged_batches.extend(producer.await.expect("a producer panicked"));
    }
    // The marker has every topic, so every subscriber, filtered or not, ends on it.
    let marker = producer_client
        .submit(mixed_batch(
            SUBSCRIBE_TOPICS.iter().map(|t| t.to_string()),
            "marker",
        ))
        .await
        .expect("the marker batch");
    timeline.note(format!("the marker committed at seq {}", marker.seq));

    let mut sequences = Vec::new();
    for (subscriber, node) in subscribers.iter().zip(nodes) {
        let what = format!("the subscriber on node {node} to reach seq {}", marker.seq);
        sequences.push((node, subscriber.wait_for(marker.seq, &what).await));
        timeline.note(format!("the subscriber on node {node} reached the marker"));
    }
    let what = format!("the filtered subscriber to reach seq {}", marker.seq);
    let filtered_sequence = filtered.wait_for(marker.seq, &what).await;

    let (first_node, first) = &sequences[0];
    assert_eq!(first.len() as u64, marker.seq, "batches up to the marker");
    for (expected, batch) in (1..).zip(first) {
        assert_eq!(
            batch.seq, expected,
            "node {first_node}'s subscriber skipped or repeated"
        );
    }
    for (node, sequence) in &sequences[1..] {
        if let Some(at) = first.iter().zip(sequence).position(|(a, b)| a != b) {
            panic!(
                "the subscribers on nodes {first_node} and {node} disagree at seq {}:\n{:?}\n{:?}",
                at + 1,
                first[at],
                sequence[at]
            );
        }
        assert_eq!(sequence.len(), first.len(), "node {node}'s subscriber");
    }
    // Every acknowledged batch is at its seq, whole; the marker closes the sequence.
    acknowledged_batches.insert(marker.seq, first.last().map(as_batch).expect("a batch"));
    for batch in first {
        let submitted = acknowledged_batches
            .get(&batch.seq)
            .unwrap_or_else(|| panic!("seq {} holds an unacknowledged batch", batch.seq));
        assert_eq!(
            (batch.id, &batch.messages),
            (submitted.id, &submitted.messages)
        );
    }
    assert_eq!(
        acknowledged_batches.len(),
        first.len(),
        "acknowledged batches"
    );

    // The filtered subscription: exactly the batches with the topic, in order, with only the
    // topic's messages.
    let expected: Vec<CommittedBatch> = first
        .iter()
        .filter_map(|batch| {
            let mut batch = batch.clone();
            batch.messages.retain(|m| m.topic == SUBSCRIBE_FILTER);
            (!batch.messages.is_empty()).then_some(batch)
        })
        .collect();
    assert!(expected.len() < first.len(), "some batches lack the topic");
    assert!(
        filtered_sequence == expected,
        "the subscription filtered on {SUBSCRIBE_FILTER:?} saw {} batches, seqs {:?}; \
         expected {} batches, seqs {:?}",
        filtered_sequence.len(),
        seqs_of(&filtered_sequence),
        expected.len(),
        seqs_of(&expected)
    );
}

/// Batches committed while a subscriber's node is cut off from the rest of the cluster.
const CUT_OFF_BATCHES: u64 = 40;

/// A node cut off from the leader has nothing new to serve while the majority goes on
/// committing (and compacting behind the subscriber). After two election timeouts without a
/// leader it ends its subscriptions with `no_leader`, and the SDK resumes them on a node that
/// can serve: the subscriber sees every batch, in order, while the cut still holds. (Found by
/// the fault suite: a subscriber parked on a minority node fell behind retention.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_moves_off_a_node_cut_off_from_the_leader() {
    use support::netfault::{Firewall, REQUIRE_FIREWALL};
    if let Err(why) = Firewall::check() {
        let required = std::env::var_os(REQUIRE_FIREWALL).is_some_and(|v| v == "1");
        assert!(!required, "{REQUIRE_FIREWALL}=1 but {why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut options = ClusterOptions::fast(3);
    options.distinct_hosts = true;
    let cluster = TestCluster::start_with(options);
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    let others = cluster.others(leader);
    let (cut, kept) = (others[0], others[1]);
    // The SDK starts a subscription on its second endpoint: the node about to be cut off.
    let subscriber = connect(&cluster, endpoints(&cluster, &[kept, cut, leader])).await;
    let producer = connect(&cluster, endpoints(&cluster, &[leader, kept])).await;
    let first = submit_marker(&producer).await;
    let mut subscription = subscriber.subscribe(1, Vec::new());
    let mut next_seq = 1;
    receive_through(&mut subscription, &mut next_seq, first.seq).await;

    let mut firewall = Firewall::new();
    let host = |id: NodeId| cluster.address(id).ip();
    firewall.split(&[host(cut)], &[host(leader), host(kept)]);
    let mut last = first.seq;
    for _ in 0..CUT_OFF_BATCHES {
        last = submit_marker(&producer).await.seq;
    }
    receive_through(&mut subscription, &mut next_seq, last).await;
    let status = cluster
        .status(cut)
        .await
        .expect("the cut-off node answers its status");
    assert!(
        status.leader.is_none(),
        "node {cut} should still be cut off from the leader, and know none: {status:?}"
    );
    firewall.heal();
}

/// Receives seqs `next_seq..=last` from `subscription`, dense and in order.
async fn receive_through(
    subscription: &mut ordo_participant::Subscription,
    next_seq: &mut u64,
    last: u64,
) {
    while *next_seq <= last {
        let batch = match tokio::time::timeout(CATCH_UP, subscription.next()).await {
            Ok(Some(Ok(batch))) => batch,
            Ok(other) => panic!("waiting for seq {next_seq} of {last}: {other:?}"),
            Err(_) => panic!("no seq {next_seq} of {last} within {CATCH_UP:?}"),
        };
        assert_eq!(
            batch.seq, *next_seq,
            "the subscription skipped or repeated a seq"
        );
        *next_seq += 1;
    }
}

/// Submits batches of random topic mixes until told to stop; returns them by seq.
async fn produce_topic_mix(
    client: Client,
    producer: u64,
    mut random: Random,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
) -> Vec<(u64, Batch)> {
    let mut batches = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let topics = loop {
            let chosen: Vec<String> = SUBSCRIBE_TOPICS
                .iter()
                .filter(|_| random.below(2) == 1)
                .map(|t| t.to_string())
                .collect();
            if !chosen.is_empty() {
                break chosen;
            }
        };
        let batch = mixed_batch(
            topics.into_iter(),
            &format!("producer {producer} batch {}", batches.len()),
        );
        match client.submit(batch.clone()).await {
            Ok(committed) => {
                acknowledged.fetch_add(1, Ordering::SeqCst);
                batches.push((committed.seq, batch));
            }
            Err(error) => panic!("producer {producer}: batch {}: {error}", batch.id),
        }
    }
    batches
}

/// One message per topic (two for the first), all labelled.
fn mixed_batch(topics: impl Iterator<Item = String>, label: &str) -> Batch {
    let mut messages = Vec::new();
    for (n, topic) in topics.enumerate() {
        messages.push(Message::new(topic.clone(), format!("{label}: {topic} 1")));
        if n == 0 {
            messages.push(Message::new(topic.clone(), format!("{label}: {topic} 2")));
        }
    }
    Batch {
        id: new_batch_id(),
        messages,
        preconditions: Vec::new(),
    }
}

/// A subscription drained into a vector by a background task.
struct Collector {
    received: Arc<Mutex<Result<Vec<CommittedBatch>, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    fn start(client: &Client, topics: Vec<String>) -> Self {
        let mut subscription = client.subscribe(1, topics);
        let received = Arc::new(Mutex::new(Ok(Vec::new())));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let next = subscription.next().await;
                let mut sink = sink.lock().expect("collector lock");
                match (next, sink.as_mut()) {
                    (Some(Ok(batch)), Ok(batches)) => batches.push(batch),
                    (Some(Err(error)), _) => *sink = Err(error.to_string()),
                    (None, _) => *sink = Err("the subscription ended".into()),
                    (_, Err(_)) => return,
                }
            }
        });
        Self { received, task }
    }

    /// Waits until a batch at or past `seq` arrived; returns everything received.
    async fn wait_for(&self, seq: u64, what: &str) -> Vec<CommittedBatch> {
        wait_until(CATCH_UP, what, async || {
            let received = self.received.lock().expect("collector lock");
            let batches = received.as_ref().map_err(|error| error.clone())?;
            match batches.last() {
                Some(last) if last.seq >= seq => Ok(batches.clone()),
                last => Err(format!("at seq {:?}", last.map(|b| b.seq))),
            }
        })
        .await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn as_batch(committed: &CommittedBatch) -> Batch {
    Batch {
        id: committed.id,
        messages: committed.messages.clone(),
        preconditions: Vec::new(),
    }
}

fn seqs_of(batches: &[CommittedBatch]) -> Vec<u64> {
    batches.iter().map(|b| b.seq).collect()
}

// ----- 4. the Applier under SIGKILL -----

/// Kill cycles by default; `ORDO_TEST_APPLIER_CYCLES` changes it.
const APPLIER_CYCLES_DEFAULT: u64 = 50;
/// The longest the child runs after saying it is ready, before its SIGKILL.
const APPLIER_KILL_WITHIN_MILLIS: u64 = 150;
/// Batches committed before the first child starts, so that it starts behind.
const APPLIER_BACKLOG_BATCHES: u64 = 100;
/// The producer's pause between submits: the child keeps up on average, so that kills land
/// both while it catches up and while it applies batches as they commit.
const APPLIER_PRODUCER_PAUSE: Duration = Duration::from_millis(3);
const APPLIER_TOPICS: [&str; 3] = ["x", "y", "z"];
const APPLIER_NAME: &str = "crash-test";
/// The child's tables: per-topic sums of the payload numbers, and every seq it applied, in
/// the order applied (position → seq), so a repeated or skipped seq stays visible.
const SUMS_TABLE: TableDefinition<&str, u64> = TableDefinition::new("sums");
const APPLIED_TABLE: TableDefinition<u64, u64> = TableDefinition::new("applied_seqs");

const CHILD_TEST_NAME: &str = "applier_child_process";

/// The child test's full name in this binary: its module path without the crate, then the name
/// (the suite also runs as a module of `tests/paxos_batches.rs`).
fn child_test_name() -> String {
    match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::{CHILD_TEST_NAME}"),
        None => CHILD_TEST_NAME.to_string(),
    }
}
const CHILD_DATABASE_ENV: &str = "ORDO_TEST_APPLIER_DATABASE";
const CHILD_ENDPOINTS_ENV: &str = "ORDO_TEST_APPLIER_ENDPOINTS";
const CHILD_TLS_DIR_ENV: &str = "ORDO_TEST_APPLIER_TLS_DIR";
const CHILD_UNTIL_ENV: &str = "ORDO_TEST_APPLIER_UNTIL";
const CHILD_READY: &str = "applier child ready at cursor";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applier_killed_at_random_moments_applies_every_batch_exactly_once() {
    let mut seed = Seed::new("applier crash");
    let cycles = std::env::var("ORDO_TEST_APPLIER_CYCLES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(APPLIER_CYCLES_DEFAULT);
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP).await;
    let client = connect(&cluster, endpoints(&cluster, &cluster.ids())).await;
    let work = tempfile::Builder::new()
        .prefix("ordo-applier-")
        .tempdir()
        .expect("a temporary directory");
    let child = ChildSetup {
        database: work.path().join("service.redb"),
        endpoints: cluster.endpoints(),
        tls_dir: cluster.tls_dir().to_path_buf(),
        stderr: work.path().join("child-stderr.log"),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let producer = tokio::spawn(produce_numbers(
        client.clone(),
        Random::new(seed.draw()),
        stop.clone(),
        acknowledged.clone(),
    ));
    wait_for_count(&acknowledged, APPLIER_BACKLOG_BATCHES, "the backlog").await;

    let mut kills = Random::new(seed.draw());
    let mut snapshots = Vec::new();
    let started = Instant::now();
    for cycle in 0..cycles {
        let mut running = child.spawn(None);
        if let Err(problem) = running.wait_ready(STARTUP) {
            panic!(
                "cycle {cycle}: the child did not start: {problem}\n{}",
                child.stderr_tail()
            );
        }
        let delay = Duration::from_millis(kills.below(APPLIER_KILL_WITHIN_MILLIS));
        tokio::time::sleep(delay).await;
        running.kill9();
        // Inspect a copy: the child must find its own file as the crash left it.
        let state = child.inspect(&work.path().join("inspect.redb"));
        state.assert_applied_each_seq_once(&format!("after the SIGKILL of cycle {cycle}"));
        snapshots.push((cycle, delay, state));
    }
    stop.store(true, Ordering::SeqCst);
    let produced = producer.await.expect("the producer panicked");
    let last_seq = produced.last().map(|(seq, _)| *seq).expect("batches");

    // Let the child catch up to the last committed seq and exit on its own.
    let mut finishing = child.spawn(Some(last_seq));
    let exit = finishing.wait_exit(CATCH_UP);
    assert!(
        exit.as_ref().is_ok_and(|status| status.success()),
        "the final child run failed: {exit:?}\n{}",
        child.stderr_tail()
    );
    let fin = child.inspect(&work.path().join("inspect.redb"));
    fin.assert_applied_each_seq_once("after the final run");

    // The reference: the full committed sequence, applied once.
    let sequence = committed_sequence(&client, last_seq).await;
    for ((seq, batch), committed) in produced.iter().zip(&sequence) {
        assert_eq!(
            (*seq, batch.id),
            (committed.seq, committed.id),
            "the sequence"
        );
    }
    let reference = reference_sums(&sequence);
    assert_eq!(fin.cursor, last_seq, "the final cursor");
    assert_eq!(fin.sums, reference[last_seq as usize], "the final sums");

    // Every state a crash left was the state of an exact prefix of the sequence, and the cursor
    // never went back.
    let mut previous = 0;
    let mut advanced = 0;
    for (cycle, delay, state) in &snapshots {
        assert_eq!(
            state.sums, reference[state.cursor as usize],
            "after the SIGKILL of cycle {cycle} ({delay:?} after ready), the sums are not those \
             of seqs 1..={}",
            state.cursor
        );
        assert!(
            state.cursor >= previous,
            "cycle {cycle}: the cursor went back"
        );
        advanced += u64::from(state.cursor > previous);
        previous = state.cursor;
    }
    eprintln!(
        "{cycles} SIGKILL cycles in {:?}; the cursor advanced in {advanced} of them; \
         {last_seq} batches applied exactly once",
        started.elapsed()
    );
    assert!(
        advanced >= cycles / 5,
        "the child applied something in only {advanced} of {cycles} cycles: the kills did not \
         land while it worked"
    );
}

/// The child: runs an Applier into the service database until killed (or, with
/// `ORDO_TEST_APPLIER_UNTIL`, up to that seq). Started by the test above; returns at once when
/// run without its environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the applier crash test, which starts it"]
async fn applier_child_process() {
    let Ok(database) = std::env::var(CHILD_DATABASE_ENV) else {
        return;
    };
    let endpoints = parse_endpoints(&std::env::var(CHILD_ENDPOINTS_ENV).expect("endpoints"));
    let tls_dir = std::env::var(CHILD_TLS_DIR_ENV).expect("the TLS directory");
    let until = std::env::var(CHILD_UNTIL_ENV).ok().map(|text| {
        text.parse::<u64>()
            .expect("ORDO_TEST_APPLIER_UNTIL is a seq")
    });
    let client = connect_config(client_config(endpoints, Path::new(&tls_dir))).await;
    let database = Arc::new(redb::Database::create(&database).expect("open the database"));
    let applier = Applier::new(client, database, APPLIER_NAME, Vec::new());
    println!("{CHILD_READY} {}", applier.cursor().expect("the cursor"));
    let result = match until {
        Some(seq) => applier.run_until(seq, apply_numbers).await,
        None => applier.run(apply_numbers).await,
    };
    result.expect("the applier failed");
}

/// The service's handler: adds each message's number to its topic's sum and appends the seq.
fn apply_numbers(
    transaction: &redb::WriteTransaction,
    batch: &CommittedBatch,
) -> Result<(), HandlerError> {
    let mut sums = transaction.open_table(SUMS_TABLE)?;
    for message in &batch.messages {
        let number: u64 = std::str::from_utf8(&message.payload)?.parse()?;
        let sum = sums.get(message.topic.as_str())?.map_or(0, |v| v.value());
        sums.insert(message.topic.as_str(), sum + number)?;
    }
    let mut applied = transaction.open_table(APPLIED_TABLE)?;
    let position = applied.len()?;
    applied.insert(position, batch.seq)?;
    Ok(())
}

/// Per-topic sums after each prefix of the sequence: `[k]` is the state after seqs 1..=k.
fn reference_sums(sequence: &[CommittedBatch]) -> Vec<BTreeMap<String, u64>> {
    let mut sums = BTreeMap::new();
    let mut prefixes = vec![sums.clone()];
    for batch in sequence {
        for message in &batch.messages {
            let number: u64 = std::str::from_utf8(&message.payload)
                .expect("UTF-8")
                .parse()
                .expect("a number");
            *sums.entry(message.topic.clone()).or_insert(0) += number;
        }
        prefixes.push(sums.clone());
    }
    prefixes
}

/// An applier with a topic filter reaches a seq whose batch lacks its topics (its position moves
/// over batches without its topics, so `run_until(seq)` does not wait for a later match).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_applier_runs_until_a_seq_without_its_topics() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP).await;
    let client = connect(&cluster, endpoints(&cluster, &cluster.ids())).await;
    for topic in ["x", "y"] {
        let batch = Batch {
            id: new_batch_id(),
            messages: vec![Message::new(topic, "1")],
            preconditions: Vec::new(),
        };
        client.submit(batch).await.expect("submit");
    }
    let work = tempfile::tempdir().expect("a temporary directory");
    let database = Arc::new(redb::Database::create(work.path().join("db.redb")).expect("db"));
    let applier = Applier::new(client, database, "filtered", vec!["x".into()]);
    let run = applier.run_until(2, apply_numbers);
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(result) => result.expect("the applier"),
        Err(_) => panic!("run_until(2) did not return; cursor {:?}", applier.cursor()),
    }
}

/// The Applier works on a current-thread runtime, the `#[tokio::test]` default (it used
/// `block_in_place` unconditionally, which panics there).
#[tokio::test]
async fn an_applier_on_a_current_thread_runtime_applies_batches() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP).await;
    let client = connect(&cluster, endpoints(&cluster, &cluster.ids())).await;
    for number in 1..=3 {
        let batch = Batch {
            id: new_batch_id(),
            messages: vec![Message::new("x", number.to_string())],
            preconditions: Vec::new(),
        };
        client.submit(batch).await.expect("submit");
    }
    let work = tempfile::tempdir().expect("a temporary directory");
    let database = Arc::new(redb::Database::create(work.path().join("db.redb")).expect("db"));
    let applier = Applier::new(client, database, "current-thread", Vec::new());
    let run = applier.run_until(3, apply_numbers);
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(result) => result.expect("the applier"),
        Err(_) => panic!("run_until(3) did not return; cursor {:?}", applier.cursor()),
    }
    assert_eq!(applier.cursor().expect("cursor"), 3);
}

/// Submits batches of 1–3 numbered messages, pausing between them, until told to stop.
async fn produce_numbers(
    client: Client,
    mut random: Random,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
) -> Vec<(u64, Batch)> {
    let mut produced = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let messages = (0..1 + random.below(3))
            .map(|_| {
                let topic = APPLIER_TOPICS[random.below(3) as usize];
                Message::new(topic, random.below(1_000_000).to_string())
            })
            .collect();
        let batch = Batch {
            id: new_batch_id(),
            messages,
            preconditions: Vec::new(),
        };
        let committed = client
            .submit(batch.clone())
            .await
            .unwrap_or_else(|error| panic!("the producer's batch {}: {error}", batch.id));
        acknowledged.fetch_add(1, Ordering::SeqCst);
        produced.push((committed.seq, batch));
        tokio::time::sleep(APPLIER_PRODUCER_PAUSE).await;
    }
    produced
}

/// What the child process needs, and where it writes.
struct ChildSetup {
    database: PathBuf,
    endpoints: String,
    tls_dir: PathBuf,
    stderr: PathBuf,
}

impl ChildSetup {
    /// Re-executes this test binary, running only [`applier_child_process`].
    fn spawn(&self, until: Option<u64>) -> RunningChild {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .expect("open the child's stderr file");
        let mut command = Command::new(std::env::current_exe().expect("this test binary"));
        command
            .args([&child_test_name(), "--exact", "--ignored", "--nocapture"])
            .env(CHILD_DATABASE_ENV, &self.database)
            .env(CHILD_ENDPOINTS_ENV, &self.endpoints)
            .env(CHILD_TLS_DIR_ENV, &self.tls_dir)
            .env_remove(CHILD_UNTIL_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if let Some(seq) = until {
            command.env(CHILD_UNTIL_ENV, seq.to_string());
        }
        die_with_this_thread(&mut command);
        let mut child = command.spawn().expect("spawn the child");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        RunningChild { child, lines }
    }

    /// Opens a copy of the child's database (the child's file stays exactly as it was left)
    /// and reads the applier's state.
    fn inspect(&self, copy: &Path) -> ApplierState {
        std::fs::copy(&self.database, copy).expect("copy the child's database");
        let database = redb::Database::create(copy).expect("open the copy");
        let read = database.begin_read().expect("a read transaction");
        let cursor = match read.open_table(CURSOR_TABLE) {
            Ok(table) => table
                .get(APPLIER_NAME)
                .expect("read the cursor")
                .map_or(0, |v| v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(error) => panic!("the cursor table: {error}"),
        };
        let mut applied = Vec::new();
        if let Ok(table) = read.open_table(APPLIED_TABLE) {
            for row in table.iter().expect("iterate") {
                applied.push(row.expect("a row").1.value());
            }
        }
        let mut sums = BTreeMap::new();
        if let Ok(table) = read.open_table(SUMS_TABLE) {
            for row in table.iter().expect("iterate") {
                let (topic, sum) = row.expect("a row");
                sums.insert(topic.value().to_string(), sum.value());
            }
        }
        ApplierState {
            cursor,
            applied,
            sums,
        }
    }

    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("--- the child's stderr, last lines:\n{tail}")
    }
}

struct RunningChild {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl RunningChild {
    /// Waits for the child's ready line (it has its client and database, and starts applying).
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(CHILD_READY) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(format!("no ready line: {error}")),
            }
        }
    }

    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the child");
        self.child.wait().expect("reap the child");
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            std::thread::sleep(support::POLL_INTERVAL);
        }
        self.kill9();
        Err(format!("still running after {timeout:?}"))
    }
}

impl Drop for RunningChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The applier's state in the child's database.
#[derive(Debug)]
struct ApplierState {
    cursor: u64,
    /// Seqs in the order the handler applied them.
    applied: Vec<u64>,
    sums: BTreeMap<String, u64>,
}

impl ApplierState {
    /// The handler ran exactly for seqs 1..=cursor, each once, in order.
    fn assert_applied_each_seq_once(&self, when: &str) {
        let mut seen = BTreeSet::new();
        for (position, seq) in self.applied.iter().enumerate() {
            assert!(
                seen.insert(*seq),
                "{when}: seq {seq} was applied twice (again at position {position}; cursor {})",
                self.cursor
            );
        }
        let expected: Vec<u64> = (1..=self.cursor).collect();
        if self.applied.len() > expected.len() && self.applied.starts_with(&expected) {
            panic!(
                "{when}: the handler's changes for seqs {:?} are durable but the cursor is {}: \
                 a restart applies them again",
                &self.applied[expected.len()..],
                self.cursor
            );
        }
        if self.applied != expected {
            let missing: Vec<u64> = expected
                .iter()
                .filter(|s| !seen.contains(s))
                .copied()
                .collect();
            panic!(
                "{when}: the cursor is {} but the handler applied {} batches (missing {:?}, \
                 last applied {:?})",
                self.cursor,
                self.applied.len(),
                &missing[..missing.len().min(10)],
                self.applied.last()
            );
        }
    }
}

fn parse_endpoints(text: &str) -> Vec<SocketAddr> {
    text.split(',')
        .map(|address| address.parse().expect("an endpoint"))
        .collect()
}

/// The kernel kills the child if the thread that spawned it ends.
fn die_with_this_thread(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

// ----- 5. limits -----

/// A batch that breaks a limit, and the error every check must give for it.
struct Invalid {
    batch: Batch,
    error: BatchError,
    /// The name the error's message must give (the limit's constant), if it has one.
    names: Option<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_limit_is_refused_naming_it_by_the_sdk_and_by_every_node() {
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP).await;
    let mut config = client_config(endpoints(&cluster, &cluster.ids()), cluster.tls_dir());
    // Room for a batch at the byte limit.
    config.request_timeout = Duration::from_secs(30);
    let client = connect_config(config).await;

    let invalid = invalid_batches();
    for case in &invalid {
        let expected = match &case.error {
            BatchError::TooManyMessages { limit, .. } | BatchError::TooLarge { limit, .. } => {
                format!(
                    "{:?}",
                    SubmitError::TooLarge {
                        limit: *limit,
                        error: case.error.clone()
                    }
                )
            }
            other => format!("{:?}", SubmitError::Invalid(other.clone())),
        };
        let error = client
            .submit(case.batch.clone())
            .await
            .expect_err("the SDK submitted an invalid batch");
        assert_eq!(format!("{error:?}"), expected, "the SDK's error");
        if let Some(name) = case.names {
            assert!(
                error.to_string().contains(name),
                "{error} does not name {name}"
            );
        }
    }

    // Below the SDK: every node validates what it receives, leader or not; and a request frame
    // over the node's limit is refused before it is read, with the limit.
    let oversized = ClientRequest::Submit {
        batch: Batch {
            id: test_batch_id(5, 3, 0),
            messages: vec![Message::new(
                "huge",
                vec![0u8; CLIENT_REQUEST_BYTES_MAX as usize],
            )],
            preconditions: Vec::new(),
        },
    };
    for id in cluster.ids() {
        let tls = cluster.client_tls();
        let address = cluster.address(id);
        let connection = NodeConnection::connect(address, &tls, Duration::from_secs(30))
            .await
            .unwrap_or_else(|error| panic!("connect to node {id}: {error}"));
        for case in &invalid {
            let request = ClientRequest::Submit {
                batch: case.batch.clone(),
            };
            let response = connection.request(&request).await;
            match response {
                Ok(ClientResponse::Invalid(error)) => {
                    assert_eq!(error, case.error, "node {id}");
                    if let Some(name) = case.names {
                        assert!(error.to_string().contains(name), "node {id}: {error}");
                    }
                }
                other => panic!(
                    "node {id} answered {other:?} to a batch with {}",
                    case.error
                ),
            }
        }
        match connection.request(&oversized).await {
            Ok(ClientResponse::Refused {
                code: RefusedCode::BadFrame,
                reason,
            }) => assert!(
                reason.contains(&CLIENT_REQUEST_BYTES_MAX.to_string()),
                "node {id} refused an oversized frame without naming the limit: {reason}"
            ),
            other => panic!("node {id} answered {other:?} to a frame over its limit"),
        }
    }

    // A batch at each limit commits, whole.
    let mut accepted = Vec::new();
    for batch in batches_at_the_limits() {
        let committed = client
            .submit(batch.clone())
            .await
            .unwrap_or_else(|error| panic!("a batch at the limits was refused: {error}"));
        accepted.push((committed, batch));
    }
    let marker = submit_marker(&client).await;
    assert_eq!(
        marker.seq,
        accepted.len() as u64 + 1,
        "only the valid batches took seqs"
    );

    let sequence = committed_sequence(&client, marker.seq).await;
    for ((committed, batch), stored) in accepted.iter().zip(&sequence) {
        assert_eq!(stored.seq, committed.seq);
        assert!(
            stored.id == batch.id && stored.messages == batch.messages,
            "seq {} is not the batch submitted ({} messages)",
            stored.seq,
            batch.messages.len()
        );
    }
    for case in &invalid {
        let status = client.status(case.batch.id).await.expect("status");
        assert_eq!(
            status,
            BatchStatus::Unknown,
            "a batch with {} has an outcome",
            case.error
        );
    }
}

/// A batch with every count at its maximum (messages, topics, headers, preconditions) and its
/// payloads sized so that content plus encoding is exactly `BATCH_BYTES_MAX` commits whole; the
/// encoding counts against the limit, so a valid batch always fits in a log entry and a frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_at_every_limit_at_once_commits() {
    let batch = batch_at_every_limit();
    assert_eq!(batch.validate(), Ok(()), "the batch is within every limit");
    assert_eq!(bytes_counted(&batch), BATCH_BYTES_MAX);
    let cluster = TestCluster::start(3);
    cluster.wait_for_leader(STARTUP).await;
    let mut config = client_config(endpoints(&cluster, &cluster.ids()), cluster.tls_dir());
    config.request_timeout = Duration::from_secs(30);
    let client = connect_config(config).await;
    let committed = client
        .submit(batch.clone())
        .await
        .unwrap_or_else(|error| panic!("a batch within every limit was not committed: {error}"));
    let sequence = committed_sequence(&client, committed.seq).await;
    let stored = sequence.last().expect("the batch");
    assert!(stored.id == batch.id && stored.messages == batch.messages);
}

/// Every count limit at its maximum in one batch, payloads filling the rest of
/// `BATCH_BYTES_MAX` (which counts the encoding too).
fn batch_at_every_limit() -> Batch {
    let topic_names: Vec<String> = (0..BATCH_TOPICS_MAX)
        .map(|n| format!("{n:0width$}", width = TOPIC_NAME_BYTES_MAX as usize))
        .collect();
    let count = BATCH_MESSAGES_MAX as usize;
    let mut messages: Vec<Message> = (0..count)
        .map(|n| {
            let mut message =
                Message::new(topic_names[n % topic_names.len()].clone(), Bytes::new());
            message.headers = (0..MESSAGE_HEADERS_MAX)
                .map(|_| (String::new(), Bytes::new()))
                .collect();
            message
        })
        .collect();
    let preconditions = topic_names
        .iter()
        .take(BATCH_PRECONDITIONS_MAX as usize)
        .map(|topic| Precondition::TopicOffset {
            topic: topic.clone(),
            offset: 0,
        })
        .collect();
    let mut batch = Batch {
        id: test_batch_id(5, 2, 0),
        messages: Vec::new(),
        preconditions,
    };
    batch.messages = messages.clone();
    let payload_bytes = BATCH_BYTES_MAX - bytes_counted(&batch);
    let (each, extra) = (payload_bytes / count as u64, payload_bytes % count as u64);
    for (n, message) in messages.iter_mut().enumerate() {
        let size = each + u64::from((n as u64) < extra);
        message.payload = Bytes::from(vec![b'p'; size as usize]);
    }
    batch.messages = messages;
    batch
}

/// One batch per limit broken (and the malformed batches), each with its own id.
fn invalid_batches() -> Vec<Invalid> {
    let id = |n: u64| test_batch_id(5, 0, n);
    let one = |topic: &str| vec![Message::new(topic, "payload")];
    let batch = |n, messages, preconditions| Batch {
        id: id(n),
        messages,
        preconditions,
    };
    let over = |limit: u64| limit + 1;
    let long_topic = "t".repeat(over(TOPIC_NAME_BYTES_MAX) as usize);
    let big_payload = vec![7u8; (over(BATCH_BYTES_MAX) - ONE_MESSAGE_BATCH_BYTES) as usize];
    let mut keyed = Message::new("keyed", "payload");
    keyed.key = Some(Bytes::from(vec![1u8; over(MESSAGE_KEY_BYTES_MAX) as usize]));
    let mut headed = Message::new("headed", "payload");
    headed.headers = (0..over(MESSAGE_HEADERS_MAX))
        .map(|n| (format!("h{n}"), Bytes::from_static(b"v")))
        .collect();
    let offset = |topic: &str| Precondition::TopicOffset {
        topic: topic.into(),
        offset: 0,
    };
    vec![
        Invalid {
            batch: batch(1, Vec::new(), Vec::new()),
            error: BatchError::Empty,
            names: None,
        },
        Invalid {
            batch: batch(
                2,
                vec![Message::new("m", "x"); over(BATCH_MESSAGES_MAX) as usize],
                Vec::new(),
            ),
            error: BatchError::TooManyMessages {
                count: over(BATCH_MESSAGES_MAX),
                limit: BATCH_MESSAGES_MAX,
            },
            names: Some("BATCH_MESSAGES_MAX"),
        },
        Invalid {
            batch: batch(3, vec![Message::new("big", big_payload)], Vec::new()),
            error: BatchError::TooLarge {
                bytes: over(BATCH_BYTES_MAX),
                limit: BATCH_BYTES_MAX,
            },
            names: Some("BATCH_BYTES_MAX"),
        },
        Invalid {
            batch: batch(4, one(&long_topic), Vec::new()),
            error: BatchError::TopicNameTooLong {
                bytes: over(TOPIC_NAME_BYTES_MAX),
                limit: TOPIC_NAME_BYTES_MAX,
            },
            names: Some("TOPIC_NAME_BYTES_MAX"),
        },
        Invalid {
            batch: batch(5, topics(over(BATCH_TOPICS_MAX)), Vec::new()),
            error: BatchError::TooManyTopics {
                count: over(BATCH_TOPICS_MAX),
                limit: BATCH_TOPICS_MAX,
            },
            names: Some("BATCH_TOPICS_MAX"),
        },
        Invalid {
            batch: batch(
                6,
                one("p"),
                vec![offset("p"); over(BATCH_PRECONDITIONS_MAX) as usize],
            ),
            error: BatchError::TooManyPreconditions {
                count: over(BATCH_PRECONDITIONS_MAX),
                limit: BATCH_PRECONDITIONS_MAX,
            },
            names: Some("BATCH_PRECONDITIONS_MAX"),
        },
        Invalid {
            batch: batch(7, one(""), Vec::new()),
            error: BatchError::EmptyTopicName,
            names: None,
        },
        Invalid {
            batch: batch(8, vec![keyed], Vec::new()),
            error: BatchError::KeyTooLong {
                bytes: over(MESSAGE_KEY_BYTES_MAX),
                limit: MESSAGE_KEY_BYTES_MAX,
            },
            names: Some("MESSAGE_KEY_BYTES_MAX"),
        },
        Invalid {
            batch: batch(9, vec![headed], Vec::new()),
            error: BatchError::TooManyHeaders {
                count: over(MESSAGE_HEADERS_MAX),
                limit: MESSAGE_HEADERS_MAX,
            },
            names: Some("MESSAGE_HEADERS_MAX"),
        },
        Invalid {
            batch: batch(10, one("p"), vec![offset(&long_topic)]),
            error: BatchError::TopicNameTooLong {
                bytes: over(TOPIC_NAME_BYTES_MAX),
                limit: TOPIC_NAME_BYTES_MAX,
            },
            names: Some("TOPIC_NAME_BYTES_MAX"),
        },
    ]
}

/// Batches exactly at each limit: all valid.
fn batches_at_the_limits() -> Vec<Batch> {
    let batch = |n, messages, preconditions| Batch {
        id: test_batch_id(5, 1, n),
        messages,
        preconditions,
    };
    let longest_topic = "t".repeat(TOPIC_NAME_BYTES_MAX as usize);
    let largest_payload = vec![7u8; (BATCH_BYTES_MAX - ONE_MESSAGE_BATCH_BYTES) as usize];
    let mut message = Message::new("keyed", "payload");
    message.key = Some(Bytes::from(vec![1u8; MESSAGE_KEY_BYTES_MAX as usize]));
    message.headers = (0..MESSAGE_HEADERS_MAX)
        .map(|n| (format!("h{n}"), Bytes::from_static(b"v")))
        .collect();
    // Holds: nothing was ever committed to this topic.
    let unwritten = Precondition::TopicOffset {
        topic: "unwritten".into(),
        offset: 0,
    };
    let messages = (0..BATCH_MESSAGES_MAX)
        .map(|n| Message::new("m", n.to_string()))
        .collect();
    vec![
        batch(1, messages, Vec::new()),
        batch(2, vec![Message::new("big", largest_payload)], Vec::new()),
        batch(3, vec![Message::new(longest_topic, "payload")], Vec::new()),
        batch(4, topics(BATCH_TOPICS_MAX), Vec::new()),
        batch(
            5,
            vec![Message::new("p", "payload")],
            vec![unwritten; BATCH_PRECONDITIONS_MAX as usize],
        ),
        batch(6, vec![message], Vec::new()),
    ]
}

/// One message to each of `count` distinct topics.
fn topics(count: u64) -> Vec<Message> {
    (0..count)
        .map(|n| Message::new(format!("topic-{n}"), "payload"))
        .collect()
}

// ----- 6. the registry's horizon -----

/// The registry's horizon in the horizon test: short, so that it passes within the test.
const HORIZON: Duration = Duration::from_secs(2);

/// Within the horizon a retried id gets its original outcome and other content under the same
/// id is a conflict; past it the retry is refused (never committed twice) and status says so;
/// ids older than the horizon, or too far ahead, are refused on arrival. Nothing refused is
/// ever visible to a subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_id_beyond_the_horizon_is_refused_never_committed() {
    let mut options = ClusterOptions::fast(3);
    options.environment = vec![
        (
            "ORDO_REGISTRY_HORIZON".into(),
            format!("{}ms", HORIZON.as_millis()),
        ),
        ("ORDO_REGISTRY_FUTURE_SKEW".into(), "5s".into()),
    ];
    let cluster = TestCluster::start_with(options);
    cluster.wait_for_leader(STARTUP).await;
    let client = connect(&cluster, endpoints(&cluster, &cluster.ids())).await;
    let one = |id: BatchId, payload: &str| Batch {
        id,
        messages: vec![Message::new("horizon", payload.to_string())],
        preconditions: Vec::new(),
    };
    let first = one(new_batch_id(), "first");
    let committed = client
        .submit(first.clone())
        .await
        .expect("the first submit");
    let again = client
        .submit(first.clone())
        .await
        .expect("a retry within the horizon");
    assert_eq!(again.seq, committed.seq, "a retry gets the original seq");
    match client.submit(one(first.id, "other content")).await {
        Err(SubmitError::IdConflict { id }) => assert_eq!(id, first.id),
        other => panic!("other content under a registered id: {other:?}"),
    }
    // Past the horizon (the log's time moves with the next batch the leader stamps).
    tokio::time::sleep(HORIZON + Duration::from_millis(500)).await;
    let later = client
        .submit(one(new_batch_id(), "later"))
        .await
        .expect("a later batch");
    match client.submit(first.clone()).await {
        Err(SubmitError::BeyondHorizon { id, .. }) => assert_eq!(id, first.id),
        other => panic!("a retry past the horizon: {other:?}"),
    }
    assert!(matches!(
        client.status(first.id).await.expect("status"),
        BatchStatus::BeyondHorizon { floor_ms } if floor_ms >= id_time_ms(&first.id)
    ));
    let now_ms = id_time_ms(&new_batch_id());
    let stale = BatchId::v7(now_ms - 10 * HORIZON.as_millis() as u64, [7; 10]);
    let ahead = BatchId::v7(now_ms + 60_000, [8; 10]);
    for (id, what) in [
        (stale, "an id older than the horizon"),
        (ahead, "an id a minute ahead"),
    ] {
        match client.submit(one(id, what)).await {
            Err(SubmitError::BeyondHorizon { .. }) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
    assert_beyond(&client, stale).await;
    // Exactly the two accepted batches are visible, once each.
    let sequence = committed_sequence(&client, later.seq).await;
    let ids: Vec<BatchId> = sequence.iter().map(|batch| batch.id).collect();
    assert_eq!(ids.iter().filter(|id| **id == first.id).count(), 1);
    assert_eq!(topic_offset(&client, "horizon").await, 2);
}

/// The time a UUID v7 carries, in ms since the Unix epoch.
fn id_time_ms(id: &BatchId) -> u64 {
    let mut time = [0u8; 8];
    time[2..].copy_from_slice(&id.0[..6]);
    u64::from_be_bytes(time)
}

/// Status says `id` is beyond the registry's horizon.
async fn assert_beyond(client: &Client, id: BatchId) {
    let status = client.status(id).await.expect("status");
    assert!(
        matches!(status, BatchStatus::BeyondHorizon { .. }),
        "{id}: {status:?}"
    );
}

// ----- shared helpers -----

/// The addresses of `ids`, in that order.
fn endpoints(cluster: &TestCluster, ids: &[NodeId]) -> Vec<SocketAddr> {
    ids.iter().map(|id| cluster.address(*id)).collect()
}

fn client_config(endpoints: Vec<SocketAddr>, tls_dir: &Path) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints, tls_dir);
    config.client_name = Some(CLIENT_NAME.into());
    config.request_timeout = SDK_REQUEST_TIMEOUT;
    config
}

async fn connect(cluster: &TestCluster, endpoints: Vec<SocketAddr>) -> Client {
    connect_config(client_config(endpoints, cluster.tls_dir())).await
}

async fn connect_config(config: ClientConfig) -> Client {
    wait_until(STARTUP, "the SDK client to connect", async || {
        Client::connect(config.clone())
            .await
            .map_err(|error| error.to_string())
    })
    .await
}

/// Committed batches 1..=`last_seq`, from a subscription; fails unless they come dense and in
/// order.
async fn committed_sequence(client: &Client, last_seq: u64) -> Vec<CommittedBatch> {
    let mut subscription = client.subscribe(1, Vec::new());
    let mut batches = Vec::with_capacity(last_seq as usize);
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    while (batches.len() as u64) < last_seq {
        let expected = batches.len() as u64 + 1;
        let batch = match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(Some(Ok(batch))) => batch,
            Ok(Some(Err(error))) => {
                panic!("the subscription failed before seq {expected}: {error}")
            }
            Ok(None) => panic!("the subscription ended before seq {expected}"),
            Err(_) => panic!("no seq {expected} within {CATCH_UP:?} (last seq {last_seq})"),
        };
        assert_eq!(
            batch.seq, expected,
            "the subscription skipped or repeated a seq"
        );
        batches.push(batch);
    }
    batches
}

/// A fresh one-message batch; its seq is one past every batch acknowledged before.
async fn submit_marker(client: &Client) -> Committed {
    let batch = Batch {
        id: new_batch_id(),
        messages: vec![Message::new("marker", "marker")],
        preconditions: Vec::new(),
    };
    client.submit(batch).await.expect("the marker batch")
}

/// A topic's offset, read by submitting a batch whose precondition cannot hold: the rejection
/// carries the actual offset (and a rejected batch changes nothing).
async fn topic_offset(client: &Client, topic: &str) -> u64 {
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
        }) => actual,
        other => panic!("the offset probe of {topic:?} answered {other:?}"),
    }
}

/// Waits until `counter` reaches `target`.
async fn wait_for_count(counter: &AtomicU64, target: u64, what: &str) {
    let what = format!("{target} {what}");
    wait_until(CATCH_UP, &what, async || {
        let now = counter.load(Ordering::SeqCst);
        if now >= target {
            Ok(())
        } else {
            Err(format!("at {now}"))
        }
    })
    .await
}

/// A recognisable batch id: a UUID v7 of the test process's start whose random bits are the
/// test's number and two counters (`a` below 2^32, `b` below 2^24). The same arguments give
/// the same id, as a retry must.
fn test_batch_id(test: u8, a: u64, b: u64) -> BatchId {
    static START_MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let now_ms = *START_MS.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_millis() as u64
    });
    let mut random = [0u8; 10];
    random[1] = test;
    random[3..7].copy_from_slice(&(a as u32).to_be_bytes());
    random[7..].copy_from_slice(&(b as u32).to_be_bytes()[1..]);
    BatchId::v7(now_ms, random)
}

/// Prints what a test did when, for the reader of a slow or failed run.
struct Timeline {
    test: &'static str,
    started: Instant,
}

impl Timeline {
    fn start(test: &'static str) -> Self {
        Self {
            test,
            started: Instant::now(),
        }
    }

    fn note(&self, text: impl std::fmt::Display) {
        let seconds = self.started.elapsed().as_secs_f64();
        eprintln!("{}: [{seconds:6.2}s] {text}", self.test);
    }
}

/// The test's seed: `ORDO_TEST_SEED`, else the clock; printed so a run can be replayed.
struct Seed(Random);

impl Seed {
    fn new(test: &str) -> Self {
        let seed = std::env::var("ORDO_TEST_SEED")
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_nanos() as u64)
            });
        eprintln!("{test}: seed {seed} (ORDO_TEST_SEED={seed} draws the same choices)");
        Self(Random::new(seed))
    }

    /// A seed for one part of the test.
    fn draw(&mut self) -> u64 {
        self.0.next()
    }
}

/// SplitMix64: small, seeded, good enough to pick moments and shapes.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
