//! Speaking to a node below the SDK: QUIC connections with a TLS configuration of the test's
//! choosing (no client certificate, a foreign one, the peer ALPN), raw bytes on a stream, and
//! the peer hello. For tests that check what a node refuses.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ordo_common::NodeId;
use ordo_common::client::{CLIENT_RESPONSE_BYTES_MAX, ClientResponse};
use ordo_coordinator::transport::{PEER_FRAME_BYTES_MAX, PeerFrame};
use ordo_net::tls::{self, Identity};
use ordo_net::wire::{read_frame, write_frame};
use quinn::crypto::rustls::QuicClientConfig;

use super::REQUEST_TIMEOUT;

/// A client TLS configuration trusting the CA in `trust_dir`, presenting `identity` (or no
/// certificate at all), offering `alpn`.
pub fn tls_config(
    trust_dir: &Path,
    identity: Option<Identity>,
    alpn: &[u8],
) -> rustls::ClientConfig {
    let roots = tls::root_store(trust_dir).expect("read the CA");
    match identity {
        Some(identity) => tls::client_config(roots, identity, alpn).expect("client TLS config"),
        None => {
            let mut config = rustls::ClientConfig::builder_with_provider(tls::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("TLS 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            config
        }
    }
}

/// A QUIC connection and the endpoint it lives on.
pub struct RawConnection {
    pub connection: quinn::Connection,
    // Keeps the local endpoint alive as long as the connection.
    _endpoint: quinn::Endpoint,
}

/// Connects to `address` with `tls`, dialling `server_name`. With TLS 1.3 the client finishes
/// its handshake before the server has checked the client certificate, so a refused certificate
/// usually surfaces on the first stream operation, not here.
pub async fn connect(
    address: SocketAddr,
    tls: rustls::ClientConfig,
    server_name: &str,
) -> Result<RawConnection, String> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("literal"))
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connecting = endpoint
        .connect(address, server_name)
        .map_err(|e| e.to_string())?;
    let connection = tokio::time::timeout(REQUEST_TIMEOUT, connecting)
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(RawConnection {
        connection,
        _endpoint: endpoint,
    })
}

/// Writes `bytes` on a new bidirectional stream of `connection`, finishes the stream, and reads
/// the one client response frame that comes back (`None`: the stream ended without one).
pub async fn client_exchange(
    connection: &quinn::Connection,
    bytes: &[u8],
) -> Result<Option<ClientResponse>, String> {
    let exchange = async {
        let (mut send, mut receive) = connection.open_bi().await.map_err(|e| e.to_string())?;
        // The node may stop reading once it has seen enough to refuse; that is not an error.
        let _ = send.write_all(bytes).await;
        let _ = send.finish();
        read_frame::<ClientResponse, _>(&mut receive, CLIENT_RESPONSE_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| "no answer in time".to_string())?
}

/// An open peer control stream, after the hello.
pub struct PeerStreams {
    pub send: quinn::SendStream,
    pub receive: quinn::RecvStream,
}

/// Opens the peer control stream, says `Hello { from, to }` and reads the answer: `Welcome` or
/// `Refused`. An `Err` means the connection or stream failed instead.
pub async fn peer_hello(
    connection: &quinn::Connection,
    from: NodeId,
    to: NodeId,
) -> Result<(PeerFrame, PeerStreams), String> {
    // The identity of a fresh cluster; the test clusters here have three voters.
    let cluster = ordo_common::ClusterId::initial([1, 2, 3]);
    peer_hello_as(connection, from, to, cluster, 0).await
}

/// [`peer_hello`], claiming to belong to `cluster` with data of `incarnation` (a node refuses
/// a peer whose incarnation differs from the one it recorded: see
/// [`super::TestCluster::recorded_incarnation`]).
pub async fn peer_hello_as(
    connection: &quinn::Connection,
    from: NodeId,
    to: NodeId,
    cluster: ordo_common::ClusterId,
    incarnation: u64,
) -> Result<(PeerFrame, PeerStreams), String> {
    let exchange = async {
        let (mut send, mut receive) = connection.open_bi().await.map_err(|e| e.to_string())?;
        let hello = PeerFrame::Hello {
            from,
            to,
            cluster,
            incarnation,
        };
        write_frame(&mut send, &hello)
            .await
            .map_err(|e| e.to_string())?;
        let answer = read_frame::<PeerFrame, _>(&mut receive, PEER_FRAME_BYTES_MAX)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the stream ended without an answer".to_string())?;
        Ok((answer, PeerStreams { send, receive }))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| "no answer to the hello in time".to_string())?
}
