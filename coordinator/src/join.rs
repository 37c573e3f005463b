//! Asking a running cluster who its members are, before this node starts: how a node started
//! with `--join` learns the cluster's identity and its peers' addresses, and how a node whose
//! data directory is empty finds out that the cluster already counts on it (it lost its data).
//!
//! The question is an ordinary client request ([`ClientRequest::MemberList`]) made with this
//! node's own certificate, following `NotLeader` hints to the leader.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ordo_common::NodeId;
use ordo_common::client::{CLIENT_RESPONSE_BYTES_MAX, ClientRequest, ClientResponse, MemberList};
use ordo_net::tls::{self, CLUSTER_SERVER_NAME, Identity};
use ordo_net::wire::{CLIENT_ALPN, read_frame, write_frame};
use quinn::crypto::rustls::QuicClientConfig;
use tracing::warn;

use crate::driver::resolve;

/// How long one question to one node may take.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Most `NotLeader` hints followed before giving up on one address.
const REDIRECTS_MAX: usize = 4;

/// How long a node with nothing stored keeps asking before it gives up: it cannot start
/// without an answer, and a cluster electing a leader (a member just died or restarted)
/// answers only `NotLeader` with no hint until the election ends.
pub const JOIN_PATIENCE: Duration = Duration::from_secs(30);

/// The pause between two rounds over the addresses.
const ROUND_PAUSE: Duration = Duration::from_millis(250);

/// Why the cluster could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("TLS material in {dir}: {detail}")]
    Tls { dir: String, detail: String },
    #[error(
        "no node of the cluster answered at {addresses:?} (last error: {last}); check the \
         addresses and that a majority of the cluster is up"
    )]
    Unreachable {
        addresses: Vec<String>,
        last: String,
    },
}

/// Asks the nodes at `addresses` (the first that answers, following leader hints) for the
/// member list, as node `id` with the certificate in `tls_dir`; asks them again, round after
/// round, for up to `patience` (zero: one round).
pub async fn ask_members(
    id: NodeId,
    tls_dir: &Path,
    addresses: &[String],
    patience: Duration,
) -> Result<MemberList, JoinError> {
    let tls_error = |detail: String| JoinError::Tls {
        dir: tls_dir.display().to_string(),
        detail,
    };
    let identity = Identity::load(tls_dir, &format!("node-{id}"))
        .map_err(|error| tls_error(error.to_string()))?;
    let roots = tls::root_store(tls_dir).map_err(|error| tls_error(error.to_string()))?;
    let crypto = tls::client_config(roots, identity, CLIENT_ALPN)
        .map_err(|error| tls_error(error.to_string()))?;
    let crypto =
        QuicClientConfig::try_from(crypto).map_err(|error| tls_error(error.to_string()))?;
    let client = quinn::ClientConfig::new(Arc::new(crypto));
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match ask_round(&client, addresses).await {
            Ok(list) => return Ok(list),
            Err(last) if tokio::time::Instant::now() >= deadline => {
                return Err(JoinError::Unreachable {
                    addresses: addresses.to_vec(),
                    last,
                });
            }
            Err(last) => {
                warn!(%last, "no member list yet (the cluster may be electing a leader); asking again");
                tokio::time::sleep(ROUND_PAUSE).await;
            }
        }
    }
}

/// One round over `addresses`; the last problem when none answered with the list.
async fn ask_round(
    client: &quinn::ClientConfig,
    addresses: &[String],
) -> Result<MemberList, String> {
    let mut last = String::from("no address given");
    for address in addresses {
        let mut target = resolve(address);
        for _ in 0..REDIRECTS_MAX {
            let Some(socket) = target else {
                last = format!("{address} does not resolve");
                break;
            };
            match tokio::time::timeout(ASK_TIMEOUT, ask_one(socket, client)).await {
                Ok(Ok(ClientResponse::Members(list))) => return Ok(*list),
                Ok(Ok(ClientResponse::NotLeader {
                    leader_address: Some(leader),
                    ..
                })) => target = resolve(&leader),
                Ok(Ok(other)) => {
                    last = format!("{socket} answered {other:?}");
                    break;
                }
                Ok(Err(error)) => {
                    last = format!("{socket}: {error}");
                    break;
                }
                Err(_) => {
                    last = format!("{socket} did not answer within {ASK_TIMEOUT:?}");
                    break;
                }
            }
        }
    }
    Err(last)
}

async fn ask_one(
    address: SocketAddr,
    client: &quinn::ClientConfig,
) -> Result<ClientResponse, String> {
    let local = ordo_net::client_bind_address(address);
    let endpoint = quinn::Endpoint::client(local).map_err(|error| error.to_string())?;
    let connection = endpoint
        .connect_with(client.clone(), address, CLUSTER_SERVER_NAME)
        .map_err(|error| error.to_string())?
        .await
        .map_err(|error| error.to_string())?;
    let ask = |request: ClientRequest| {
        let connection = connection.clone();
        async move {
            let (mut send, mut receive) = connection.open_bi().await.map_err(|e| e.to_string())?;
            write_frame(&mut send, &request)
                .await
                .map_err(|error| error.to_string())?;
            let _ = send.finish();
            read_frame::<ClientResponse, _>(&mut receive, CLIENT_RESPONSE_BYTES_MAX)
                .await
                .map_err(|error| error.to_string())?
                .ok_or_else(|| "the stream ended without an answer".to_string())
        }
    };
    // The application-level hello first: a refused certificate surfaces here.
    match ask(ClientRequest::Hello).await? {
        ClientResponse::Welcome { .. } => {}
        other => return Err(format!("no welcome: {other:?}")),
    }
    let answer = ask(ClientRequest::MemberList).await;
    connection.close(quinn::VarInt::from_u32(0), b"done");
    endpoint.wait_idle().await;
    answer
}
