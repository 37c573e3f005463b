//! Issue 14's attacks, against real `ordo serve` processes: a client's certificate identity
//! bounds what it may do (`[auth]`), and what any client can make a node hold is bounded by a
//! named budget (`[transport]`). Each test makes one attack and checks that it is refused with a
//! stable code and that the cluster goes on serving everyone else.

mod support;

use std::time::Duration;

use bytes::Bytes;
use ordo_common::client::{ClientRequest, ClientResponse, RefusedCode};
use ordo_net::tls::Identity;
use ordo_participant::{
    Batch, Client, ClientConfig, ClientTls, MemberError, MembershipChange, Message, NodeConnection,
    QueryError, SubmitError, new_batch_id,
};
use support::{ClusterOptions, REQUEST_TIMEOUT, TestCluster, path_str};

const STARTUP: Duration = Duration::from_secs(30);
const SUBSCRIPTION_WAIT: Duration = Duration::from_secs(10);

/// `cli` (the harness's own identity) administers; `orders-svc` may write and read `orders`
/// and `audit.*` only.
const ORDERS_ACL: &str = r#"
[auth]
admins = ["cli"]
[[auth.acl]]
identity = "orders-svc"
write = ["orders", "audit.*"]
read = ["orders"]
locks = ["orders.*"]
"#;

fn with_config(nodes: u64, config: &str) -> ClusterOptions {
    ClusterOptions {
        config_file: Some(config.to_string()),
        ..ClusterOptions::fast(nodes)
    }
}

/// Issues a client certificate `name` in the cluster's TLS directory.
fn issue_client(cluster: &TestCluster, name: &str) {
    support::run_ordo_checked(&[
        "certs",
        "--dir",
        path_str(cluster.tls_dir()),
        "--nodes",
        "0",
        "--clients",
        name,
    ]);
}

async fn client_as(cluster: &TestCluster, name: &str) -> Client {
    let endpoints = cluster
        .ids()
        .iter()
        .map(|id| cluster.address(*id))
        .collect();
    let mut config = ClientConfig::new(endpoints, cluster.tls_dir());
    config.client_name = Some(name.to_string());
    config.request_timeout = Duration::from_secs(2);
    config.retry_timeout = Duration::from_secs(20);
    Client::connect(config).await.expect("connect")
}

fn batch(topic: &str, payload: &'static str) -> Batch {
    Batch {
        id: new_batch_id(),
        messages: vec![Message::new(topic, Bytes::from_static(payload.as_bytes()))],
        preconditions: Vec::new(),
    }
}

fn assert_forbidden(error: &impl std::fmt::Display, code: Option<RefusedCode>, needle: &str) {
    assert_eq!(code, Some(RefusedCode::Forbidden), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(needle),
        "the refusal names {needle:?}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_write_acl_for_orders_cannot_submit_to_accounts_nor_subscribe_to_it() {
    let cluster = TestCluster::start_with(with_config(3, ORDERS_ACL));
    issue_client(&cluster, "orders-svc");
    cluster.wait_for_leader(STARTUP).await;
    let orders = client_as(&cluster, "orders-svc").await;

    let committed = orders.submit(batch("orders", "o-1")).await.expect("orders");
    let refused = orders
        .submit(batch("accounts", "credit eve 1000"))
        .await
        .unwrap_err();
    let code = match &refused {
        SubmitError::Refused { code, .. } => Some(*code),
        _ => None,
    };
    assert_forbidden(&refused, code, "\"accounts\"");
    assert_forbidden(&refused, code, "auth.acl[0].write");
    // One topic it may not write taints the whole batch: nothing of it commits.
    let mixed = Batch {
        messages: vec![
            Message::new("orders", Bytes::from_static(b"o-2")),
            Message::new("accounts", Bytes::from_static(b"debit")),
        ],
        ..batch("orders", "unused")
    };
    assert!(matches!(
        orders.submit(mixed).await,
        Err(SubmitError::Refused {
            code: RefusedCode::Forbidden,
            ..
        })
    ));

    for topics in [vec!["accounts".to_string()], Vec::new()] {
        let mut subscription = orders.subscribe(1, topics.clone());
        let first = tokio::time::timeout(SUBSCRIPTION_WAIT, subscription.next())
            .await
            .expect("the refusal arrives");
        match first {
            Some(Err(QueryError::Refused { code, reason })) => {
                assert_eq!(code, RefusedCode::Forbidden, "{reason}");
                assert!(reason.contains("auth.acl[0].read"), "{reason}");
            }
            other => panic!("subscribing to {topics:?} gave {other:?}"),
        }
    }

    // The admin sees the whole log: only what orders-svc was allowed to write is in it.
    let admin = client_as(&cluster, "cli").await;
    let mut all = admin.subscribe(1, Vec::new());
    let first = tokio::time::timeout(SUBSCRIPTION_WAIT, all.next())
        .await
        .expect("a batch")
        .expect("open")
        .expect("readable");
    assert_eq!(first.seq, committed.seq);
    let marker = admin
        .submit(batch("orders", "marker"))
        .await
        .expect("marker");
    let next = tokio::time::timeout(SUBSCRIPTION_WAIT, all.next())
        .await
        .expect("a batch")
        .expect("open")
        .expect("readable");
    assert_eq!(next.seq, marker.seq, "nothing was committed between them");
    assert!(
        next.messages
            .iter()
            .all(|message| message.topic == "orders"),
        "{next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_cannot_act_as_a_client() {
    // No [auth] section: every client certificate may do everything, but a node's may not.
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    let identity = Identity::load(cluster.tls_dir(), "node-2").expect("node 2's identity");
    let tls = ClientTls::from_identity(cluster.tls_dir(), identity).expect("TLS");
    let connection = NodeConnection::connect(cluster.address(leader), &tls, REQUEST_TIMEOUT)
        .await
        .expect("a node may greet (joining needs the member list)");
    let before = cluster.status(leader).await.expect("status");
    let requests = [
        ClientRequest::Submit {
            batch: batch("orders", "forged by a node certificate"),
        },
        ClientRequest::Propose {
            payload: Bytes::from_static(b"raw"),
        },
        ClientRequest::Subscribe {
            from_seq: 1,
            topics: Vec::new(),
        },
        ClientRequest::Status,
    ];
    for request in requests {
        let response = connection.request(&request).await.expect("an answer");
        match response {
            ClientResponse::Refused {
                code: RefusedCode::Forbidden,
                reason,
            } => assert!(reason.contains("cannot act as a client"), "{reason}"),
            other => panic!("{request:?} by a node certificate was answered {other:?}"),
        }
    }
    let members = connection
        .request(&ClientRequest::MemberList)
        .await
        .expect("an answer");
    assert!(
        matches!(members, ClientResponse::Members(_)),
        "the member list stays open to nodes: {members:?}"
    );
    let after = cluster.status(leader).await.expect("status");
    assert_eq!(after.last_index, before.last_index, "nothing was appended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_admin_cannot_change_membership_take_a_snapshot_or_propose_raw_bytes() {
    let cluster = TestCluster::start_with(with_config(3, ORDERS_ACL));
    issue_client(&cluster, "orders-svc");
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    let orders = client_as(&cluster, "orders-svc").await;
    let removal = orders
        .change_membership(MembershipChange::Remove { id: leader })
        .await
        .unwrap_err();
    match &removal {
        MemberError::Query(QueryError::Refused { code, reason }) => {
            assert_eq!(*code, RefusedCode::Forbidden, "{reason}");
            assert!(reason.contains("auth.admins"), "{reason}");
        }
        other => panic!("a membership change by a non-admin gave {other:?}"),
    }
    let tls = ClientTls::load(cluster.tls_dir(), Some("orders-svc")).expect("TLS");
    let connection = NodeConnection::connect(cluster.address(leader), &tls, REQUEST_TIMEOUT)
        .await
        .expect("connect");
    for request in [
        ClientRequest::SnapshotSave,
        ClientRequest::Propose {
            payload: Bytes::from_static(b"raw"),
        },
    ] {
        match connection.request(&request).await.expect("an answer") {
            ClientResponse::Refused {
                code: RefusedCode::Forbidden,
                reason,
            } => assert!(reason.contains("auth.admins"), "{reason}"),
            other => panic!("{request:?} by a non-admin was answered {other:?}"),
        }
    }
    // An identity with no rule at all is refused everything but a greeting.
    issue_client(&cluster, "eve");
    let tls = ClientTls::load(cluster.tls_dir(), Some("eve")).expect("TLS");
    let eve = NodeConnection::connect(cluster.address(leader), &tls, REQUEST_TIMEOUT)
        .await
        .expect("eve may greet");
    match eve.request(&ClientRequest::Status).await.expect("answer") {
        ClientResponse::Refused {
            code: RefusedCode::Forbidden,
            reason,
        } => assert!(reason.contains("\"eve\""), "{reason}"),
        other => panic!("status for an unknown identity: {other:?}"),
    }
    // The admin may do all of it, and the membership is as it was.
    let admin = client_as(&cluster, "cli").await;
    let members = admin.member_list().await.expect("member list");
    assert_eq!(members.members.len(), 3, "{members:?}");
}
