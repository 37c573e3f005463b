//! Issue 4's TLS negative matrix, against real `ordo serve` processes: no client certificate, a
//! certificate from another CA, an expired certificate, a client certificate on the peer
//! protocol, and a node certificate claiming another node's id. Each is refused, the node logs
//! a reason specific to the case, and nothing in the cluster changes (every node's role, term,
//! leader, last and commit index are as before).
//!
//! With TLS 1.3 a client finishes its handshake before the server has checked the client's
//! certificate, so a refused certificate may surface only on the first stream operation: each
//! attempt here goes as far as a request and its answer, and the refusal may show at any step.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use ordo_common::NodeId;
use ordo_common::client::{ClientRequest, ClientResponse};
use ordo_coordinator::transport::PeerFrame;
use ordo_net::tls::{Identity, node_name};
use ordo_net::wire::{CLIENT_ALPN, PEER_ALPN, encode_frame};
use ordo_participant::{ClientTls, NodeConnection};
use support::{ClusterOptions, REQUEST_TIMEOUT, StateView, TestCluster, path_str, raw};

const STARTUP: Duration = Duration::from_secs(30);
/// Time for a node to log a refusal it has already made.
const LOG_WAIT: Duration = Duration::from_secs(10);
const HANDSHAKE_FAILED: &str = "refused connection: TLS handshake failed";
const PEER_REFUSED: &str = "refused peer";

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let Settled {
        cluster,
        target,
        before,
    } = Settled::start().await;
    let mark = cluster.log_mark(target);
    let tls = raw::tls_config(cluster.tls_dir(), None, CLIENT_ALPN);
    let outcome = hello_with(&cluster, target, tls).await;
    assert!(
        outcome.is_err(),
        "a client without a certificate was served: {outcome:?}"
    );
    let line = cluster
        .wait_for_log(
            target,
            mark,
            &[HANDSHAKE_FAILED, "peer sent no certificates"],
            LOG_WAIT,
        )
        .await;
    eprintln!("client saw {outcome:?}; node logged: {line}");
    assert_nothing_changed(&cluster, &before).await;
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused() {
    let Settled {
        cluster,
        target,
        before,
    } = Settled::start().await;
    let other_ca = cluster.dir().join("other-ca");
    support::run_ordo_checked(&["certs", "--dir", path_str(&other_ca), "--nodes", "0"]);
    // Trusts the cluster's CA (so the client accepts the node) but presents the other CA's
    // client certificate, through the SDK's own path.
    let identity = Identity::load(&other_ca, "client-cli").expect("the other CA's client");
    let tls = ClientTls::from_identity(cluster.tls_dir(), identity).expect("client TLS");
    let mark = cluster.log_mark(target);
    let outcome = NodeConnection::connect(cluster.address(target), &tls, REQUEST_TIMEOUT).await;
    assert!(outcome.is_err(), "a foreign certificate was served");
    let line = cluster
        .wait_for_log(
            target,
            mark,
            &[HANDSHAKE_FAILED, "invalid peer certificate"],
            LOG_WAIT,
        )
        .await;
    eprintln!("client saw {:?}; node logged: {line}", outcome.err());
    // `ordo certs` names every CA alike, so the other CA looks like the issuer and its
    // signature fails to verify (BadSignature); a differently named CA is UnknownIssuer.
    assert!(
        line.contains("BadSignature") || line.contains("UnknownIssuer"),
        "not refused for its issuer: {line}"
    );
    assert_nothing_changed(&cluster, &before).await;
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let Settled {
        cluster,
        target,
        before,
    } = Settled::start().await;
    // Signed by the cluster's own CA, with every name a client has: only the dates are wrong.
    let now = time::OffsetDateTime::now_utc();
    ordo_coordinator::certs::issue_leaf(
        cluster.tls_dir(),
        "client-expired",
        vec!["client-expired.ordo".into()],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    )
    .expect("issue an expired certificate");
    let tls = ClientTls::load(cluster.tls_dir(), Some("expired")).expect("client TLS");
    let mark = cluster.log_mark(target);
    let outcome = NodeConnection::connect(cluster.address(target), &tls, REQUEST_TIMEOUT).await;
    assert!(outcome.is_err(), "an expired certificate was served");
    let line = cluster
        .wait_for_log(
            target,
            mark,
            &[HANDSHAKE_FAILED, "certificate expired"],
            LOG_WAIT,
        )
        .await;
    eprintln!("client saw {:?}; node logged: {line}", outcome.err());
    assert_nothing_changed(&cluster, &before).await;
}

#[tokio::test]
async fn a_client_certificate_cannot_speak_the_peer_protocol() {
    let Settled {
        cluster,
        target,
        before,
    } = Settled::start().await;
    let claimed = other_nodes(&cluster, target)[0];
    let identity = Identity::load(cluster.tls_dir(), "client-cli").expect("client identity");
    let reason = refused_peer_hello(&cluster, target, identity, claimed).await;
    assert!(
        reason.contains(&format!("certificate does not name node {claimed}")),
        "the refusal does not name the certificate: {reason}"
    );
    assert_nothing_changed(&cluster, &before).await;
}

#[tokio::test]
async fn a_node_certificate_cannot_claim_another_node_id() {
    let Settled {
        cluster,
        target,
        before,
    } = Settled::start().await;
    let [owner, claimed] = other_nodes(&cluster, target)[..] else {
        unreachable!("three nodes")
    };
    let identity = Identity::load(cluster.tls_dir(), &format!("node-{owner}")).expect("node");
    let reason = refused_peer_hello(&cluster, target, identity, claimed).await;
    assert!(
        reason.contains(&format!("certificate does not name node {claimed}")),
        "the refusal does not name the certificate: {reason}"
    );
    assert_nothing_changed(&cluster, &before).await;
}

/// A three-node cluster with the shipped timing, a leader, and every node caught up: the state
/// that each case must leave unchanged. The target of each case is the leader.
struct Settled {
    cluster: TestCluster,
    target: NodeId,
    before: BTreeMap<NodeId, StateView>,
}

impl Settled {
    async fn start() -> Self {
        let cluster = TestCluster::start_with(ClusterOptions::shipped_defaults(3));
        let statuses = cluster.wait_for_caught_up(1, STARTUP).await;
        let target = support::agreed_leader(&statuses).expect("a leader").id;
        let before = statuses
            .iter()
            .map(|(id, status)| (*id, StateView::from(status)))
            .collect();
        Self {
            cluster,
            target,
            before,
        }
    }
}

fn other_nodes(cluster: &TestCluster, target: NodeId) -> Vec<NodeId> {
    cluster
        .ids()
        .into_iter()
        .filter(|id| *id != target)
        .collect()
}

/// Connects with `tls` and says hello on the client protocol; the answer, or where it failed.
async fn hello_with(
    cluster: &TestCluster,
    target: NodeId,
    tls: rustls::ClientConfig,
) -> Result<ClientResponse, String> {
    let connection = raw::connect(cluster.address(target), tls, "ordo").await?;
    let hello = encode_frame(&ClientRequest::Hello);
    raw::client_exchange(&connection.connection, &hello)
        .await?
        .ok_or_else(|| "no answer to the hello".to_string())
}

/// Says `Hello { from: claimed, to: target }` on the peer protocol with `identity`; expects a
/// `Refused` answer, the node's log naming the same reason, and the connection closed. Returns
/// the reason.
async fn refused_peer_hello(
    cluster: &TestCluster,
    target: NodeId,
    identity: Identity,
    claimed: NodeId,
) -> String {
    let mark = cluster.log_mark(target);
    let tls = raw::tls_config(cluster.tls_dir(), Some(identity), PEER_ALPN);
    let connection = raw::connect(cluster.address(target), tls, &node_name(target))
        .await
        .expect("the certificate itself is valid, so the TLS handshake succeeds");
    let (answer, _streams) = raw::peer_hello(&connection.connection, claimed, target)
        .await
        .expect("an answer to the hello");
    let PeerFrame::Refused { reason } = answer else {
        panic!("node {target} accepted a hello claiming node {claimed}: {answer:?}");
    };
    let line = cluster
        .wait_for_log(target, mark, &[PEER_REFUSED, &reason], LOG_WAIT)
        .await;
    eprintln!("refused with {reason:?}; node logged: {line}");
    let closed = tokio::time::timeout(REQUEST_TIMEOUT, connection.connection.closed())
        .await
        .expect("the node closes a refused peer's connection");
    assert!(
        closed.to_string().contains(&reason),
        "the connection closed without the reason: {closed}"
    );
    reason
}

async fn assert_nothing_changed(cluster: &TestCluster, before: &BTreeMap<NodeId, StateView>) {
    let after = cluster.state_views().await;
    assert_eq!(&after, before, "the cluster's state changed");
}

/// `ordo certs --dir DIR --nodes N` run again on an existing directory keeps the CA and every
/// existing file byte for byte, adds only what is missing, gives a key whose certificate was lost
/// a certificate for that same key, refuses a certificate whose key is gone, and creates keys
/// readable by their owner only. Everything it adds chains to the original CA.
#[test]
fn certs_run_again_keeps_every_file_and_adds_only_what_is_missing() {
    use rustls::client::danger::ServerCertVerifier;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("tls");
    let certs = |nodes: &str, clients: &[&str]| {
        let mut args = vec!["certs", "--dir", path_str(&dir), "--nodes", nodes];
        for client in clients {
            args.extend(["--clients", client]);
        }
        support::run_ordo(&args)
    };
    let files = || -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(&dir)
            .expect("read the directory")
            .map(|entry| {
                let path = entry.expect("entry").path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).expect("read"))
            })
            .collect()
    };
    assert!(certs("3", &["a"]).status.success());
    let first = files();
    // A lost certificate: its key is kept and certified again.
    std::fs::remove_file(dir.join("node-2.pem")).expect("remove");
    let second = certs("5", &["a", "b"]);
    assert!(second.status.success(), "{second:?}");
    let after = files();
    for (name, bytes) in &first {
        if name != "node-2.pem" {
            assert_eq!(after.get(name), Some(bytes), "{name} changed");
        }
    }
    let added: Vec<&String> = after.keys().filter(|n| !first.contains_key(*n)).collect();
    assert_eq!(
        added,
        [
            "client-b.key",
            "client-b.pem",
            "node-4.key",
            "node-4.pem",
            "node-5.key",
            "node-5.pem"
        ]
    );
    assert!(after.contains_key("node-2.pem"));
    for name in after.keys().filter(|name| name.ends_with(".key")) {
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} has mode {mode:o}");
    }
    // Every certificate chains to the original CA and matches its key.
    let provider = ordo_net::tls::provider();
    let roots = Arc::new(ordo_net::tls::root_store(&dir).expect("the CA"));
    let servers = rustls::client::WebPkiServerVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .expect("server verifier");
    let clients =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .expect("client verifier");
    let now = rustls::pki_types::UnixTime::now();
    for stem in ["node-2", "node-4", "node-5", "client-b"] {
        let chain = ordo_net::tls::load_certificates(&dir.join(format!("{stem}.pem"))).unwrap();
        let key = ordo_net::tls::load_key(&dir.join(format!("{stem}.key"))).unwrap();
        if let Some(id) = stem.strip_prefix("node-") {
            let name = rustls::pki_types::ServerName::try_from(node_name(id.parse().unwrap()))
                .expect("a server name");
            servers
                .verify_server_cert(&chain[0], &[], &name, &[], now)
                .unwrap_or_else(|error| panic!("{stem} does not chain to the CA: {error}"));
        } else {
            clients
                .verify_client_cert(&chain[0], &[], now)
                .unwrap_or_else(|error| panic!("{stem} does not chain to the CA: {error}"));
        }
        rustls::sign::CertifiedKey::from_der(chain, key, &provider)
            .unwrap_or_else(|error| panic!("{stem}'s certificate is not for its key: {error}"));
    }
    // A certificate whose key is gone is refused, and nothing is replaced.
    std::fs::remove_file(dir.join("node-3.key")).expect("remove");
    let before = files();
    let refused = certs("3", &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("node-3.pem exists without its key"),
        "{stderr}"
    );
    assert_eq!(files(), before);
}
