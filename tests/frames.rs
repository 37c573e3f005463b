//! Issue 4: oversized and garbage frames, against real `ordo serve` processes. On the client
//! protocol each bad frame gets a `Refused` answer naming the problem, on that stream only; on a
//! peer link a bad frame closes that link with the reason. Either way the node keeps serving
//! everyone else and the cluster's state does not change.
//!
//! The random frames come from a seeded generator; the seed is printed, and
//! `ORDO_TEST_SEED=<seed>` replays it.

mod support;

use std::time::Duration;

use bytes::Bytes;
use ordo_common::client::{ClientRequest, ClientResponse, RefusedCode};
use ordo_common::limits::FRAME_BYTES_MAX;
use ordo_coordinator::transport::PeerFrame;
use ordo_core::rng::Prng;
use ordo_net::tls::{Identity, node_name};
use ordo_net::wire::{PEER_ALPN, WIRE_VERSION, encode_frame};
use support::{ClusterOptions, REQUEST_TIMEOUT, StateView, TestCluster, raw};

const STARTUP: Duration = Duration::from_secs(30);
const LOG_WAIT: Duration = Duration::from_secs(10);
const RANDOM_FRAMES: usize = 16;

#[tokio::test]
async fn bad_client_frames_are_refused_with_the_reason_and_the_node_serves_on() {
    let cluster = TestCluster::start_with(ClusterOptions::shipped_defaults(3));
    let statuses = cluster.wait_for_caught_up(1, STARTUP).await;
    let target = support::agreed_leader(&statuses).expect("a leader").id;
    let before = views(&statuses);
    let bystander = cluster
        .connect(target)
        .await
        .expect("a well-behaved client");
    let abuser = cluster
        .connect(target)
        .await
        .expect("the client that sends garbage");
    let mark = cluster.log_mark(target);

    let oversized = [0xFF, 0xFF, 0xFF, 0xFF, WIRE_VERSION];
    let length = |body: usize| ((body + 1) as u32).to_le_bytes();
    let mut wrong_version = encode_frame(&ClientRequest::Status);
    wrong_version[4] = WIRE_VERSION + 8;
    let garbage_body = [&length(8)[..], &[WIRE_VERSION], &[0xEE; 8]].concat();
    let hello = encode_frame(&ClientRequest::Hello);
    let trailing = [&length(hello.len() - 5 + 3)[..], &hello[4..], &[0, 0, 0]].concat();
    let truncated = [&length(100)[..], &[WIRE_VERSION, 0, 0]].concat();
    let cases: [(&str, &[u8], String); 6] = [
        (
            "length 0xFFFFFFFF",
            &oversized,
            format!("frame of 4294967295 bytes exceeds the limit of {FRAME_BYTES_MAX} bytes"),
        ),
        ("length 0", &[0, 0, 0, 0], "empty frame".into()),
        (
            "a wrong version byte",
            &wrong_version,
            format!("frame version {}", WIRE_VERSION + 8),
        ),
        ("a garbage body", &garbage_body, "malformed".into()),
        ("trailing bytes", &trailing, "3 trailing bytes".into()),
        (
            "a truncated frame",
            &truncated,
            "stream ended inside a frame".into(),
        ),
    ];
    for (case, bytes, expected) in cases {
        let reason = refusal(&abuser, bytes)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(
            reason.contains(&expected),
            "{case}: {reason:?} lacks {expected:?}"
        );
        eprintln!("{case}: refused with {reason:?}");
    }

    let seed = std::env::var("ORDO_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()) ^ nanos());
    eprintln!("random frames: ORDO_TEST_SEED={seed}");
    let mut rng = Prng::new(seed);
    for n in 0..RANDOM_FRAMES {
        let bytes: Vec<u8> = (0..rng.range_inclusive(1, 64))
            .map(|_| rng.next_u64() as u8)
            .collect();
        let outcome = refusal(&abuser, &bytes).await;
        assert!(
            outcome.is_ok(),
            "random frame {n} (seed {seed}) {bytes:02x?}: {outcome:?}"
        );
    }

    let line = cluster
        .wait_for_log(
            target,
            mark,
            &["refused a client request: bad frame"],
            LOG_WAIT,
        )
        .await;
    eprintln!("node logged, e.g.: {line}");
    let refusals = cluster
        .log_since(target, mark)
        .matches("refused a client request: bad frame")
        .count();
    assert_eq!(
        refusals,
        6 + RANDOM_FRAMES,
        "one logged refusal per bad frame"
    );

    // Both the abuser's connection and the bystander's still work, as does a new one.
    for connection in [
        &abuser,
        &bystander,
        &cluster.connect(target).await.expect("new"),
    ] {
        let answer = connection.request(&ClientRequest::Status).await;
        assert!(
            matches!(answer, Ok(ClientResponse::Status(_))),
            "{answer:?}"
        );
    }
    assert_eq!(views(&cluster.statuses().await.unwrap()), before);
    let answer = bystander
        .request(&ClientRequest::Propose {
            payload: Bytes::from_static(b"after the garbage"),
        })
        .await;
    assert!(
        matches!(answer, Ok(ClientResponse::Committed { .. })),
        "{answer:?}"
    );
}

#[tokio::test]
async fn a_bad_frame_on_a_peer_link_closes_that_link_only() {
    let cluster = TestCluster::start_with(ClusterOptions::shipped_defaults(3));
    let statuses = cluster.wait_for_caught_up(1, STARTUP).await;
    let target = support::agreed_leader(&statuses).expect("a leader").id;
    let before = views(&statuses);
    // A genuine peer link: node `peer`'s own certificate and a correct hello. The real node
    // `peer` keeps its own links; this one is an extra inbound link from it.
    let peer = cluster
        .ids()
        .into_iter()
        .find(|id| *id != target)
        .expect("a peer");
    let oversized = [0xFF, 0xFF, 0xFF, 0xFF, WIRE_VERSION].to_vec();
    let garbage_body = [&9u32.to_le_bytes()[..], &[WIRE_VERSION], &[0xEE; 8]].concat();
    let welcome_again = encode_frame(&PeerFrame::Welcome);
    let cases = [
        ("length 0xFFFFFFFF", oversized, "exceeds the limit"),
        ("a garbage body", garbage_body, "malformed"),
        (
            "a frame that is not a Raft message",
            welcome_again,
            "unexpected Welcome",
        ),
    ];
    for (case, bytes, expected) in cases {
        let mark = cluster.log_mark(target);
        let identity = Identity::load(cluster.tls_dir(), &format!("node-{peer}")).expect("node");
        let tls = raw::tls_config(cluster.tls_dir(), Some(identity), PEER_ALPN);
        let link = raw::connect(cluster.address(target), tls, &node_name(target))
            .await
            .expect("a peer connection");
        // The peer's real incarnation, as the target recorded it: anything else is refused as
        // a node that lost its data.
        let incarnation = cluster
            .recorded_incarnation(target, peer)
            .expect("the target heard from its peer");
        let cluster_id = ordo_common::ClusterId::initial(cluster.ids());
        let (answer, mut streams) =
            raw::peer_hello_as(&link.connection, peer, target, cluster_id, incarnation)
                .await
                .expect("an answer to the hello");
        assert!(matches!(answer, PeerFrame::Welcome), "{case}: {answer:?}");
        streams
            .send
            .write_all(&bytes)
            .await
            .expect("send the bad frame");
        let closed = tokio::time::timeout(REQUEST_TIMEOUT, link.connection.closed())
            .await
            .unwrap_or_else(|_| panic!("{case}: the node kept the link open"));
        let closed = closed.to_string();
        assert!(
            closed.contains("bad frame") && closed.contains(expected),
            "{case}: closed with {closed:?}"
        );
        let line = cluster
            .wait_for_log(target, mark, &["sent a bad frame", expected], LOG_WAIT)
            .await;
        eprintln!("{case}: link closed with {closed:?}; node logged: {line}");
    }

    assert_eq!(views(&cluster.statuses().await.unwrap()), before);
    // The real links still carry Raft: a proposal commits on every node.
    let acks = cluster.propose_many(target, "after-the-garbage", 3).await;
    cluster
        .wait_for_caught_up(support::highest_index(&acks), STARTUP)
        .await;
}

/// Sends `bytes` on a new stream and returns the reason of the `Refused` answer.
async fn refusal(
    connection: &ordo_participant::NodeConnection,
    bytes: &[u8],
) -> Result<String, String> {
    match raw::client_exchange(connection.raw(), bytes).await? {
        Some(ClientResponse::Refused {
            code: RefusedCode::BadFrame,
            reason,
        }) => Ok(reason),
        other => Err(format!("not refused: {other:?}")),
    }
}

fn views(
    statuses: &std::collections::BTreeMap<u64, ordo_common::client::NodeStatus>,
) -> std::collections::BTreeMap<u64, StateView> {
    statuses
        .iter()
        .map(|(id, s)| (*id, StateView::from(s)))
        .collect()
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

/// Connections are a bounded resource: past `transport.connections_max` a node refuses new
/// client connections (with the limit in its log) and keeps serving those it has; one closing
/// makes room again. Peers have slots of their own, so the cluster goes on meanwhile.
#[tokio::test]
async fn connections_beyond_the_limit_are_refused_and_room_comes_back() {
    // Two clients.
    let mut options = ClusterOptions::fast(3);
    options
        .environment
        .push(("ORDO_TRANSPORT_CONNECTIONS_MAX".into(), "2".into()));
    let cluster = TestCluster::start_with(options);
    cluster.wait_for_leader(Duration::from_secs(30)).await;
    let node = 1;
    // Earlier status queries may still be closing; wait until two clients fit.
    let (first, second) = support::wait_until(
        Duration::from_secs(10),
        "two client connections to fit under the limit",
        async || {
            let first = cluster.connect(node).await.map_err(|e| e.to_string())?;
            let second = cluster.connect(node).await.map_err(|e| e.to_string())?;
            Ok((first, second))
        },
    )
    .await;
    let mark = cluster.log_mark(node);
    let refused = cluster.connect(node).await;
    assert!(refused.is_err(), "a connection past the limit was accepted");
    cluster
        .wait_for_log(
            node,
            mark,
            &["transport.connections_max reached"],
            Duration::from_secs(10),
        )
        .await;
    let status = first.request(&ClientRequest::Status).await;
    assert!(
        matches!(status, Ok(ClientResponse::Status(_))),
        "{status:?}"
    );
    drop(second);
    support::wait_until(
        Duration::from_secs(10),
        "room for a new connection once one closed",
        async || {
            cluster
                .connect(node)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await;
}
