//! One QUIC connection to one coordinator, with mutual TLS and an application-level hello: a
//! server that refuses the client certificate is only noticed on the first stream, so
//! [`NodeConnection::connect`] does not return until a hello round trip succeeded.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ordo_common::NodeId;
use ordo_common::client::{CLIENT_RESPONSE_BYTES_MAX, ClientRequest, ClientResponse};
use ordo_net::tls::{self, CLUSTER_SERVER_NAME, Identity, TlsError};
use ordo_net::wire::{CLIENT_ALPN, FrameError, read_frame, write_frame};
use quinn::crypto::rustls::QuicClientConfig;

/// How often an idle client connection proves it is alive.
pub const CLIENT_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// A connection that hears nothing for this long is closed: a subscription on a node that
/// died (kill -9, power loss, cut off) moves to another node after this, instead of after the
/// node's own idle timeout (10 s). Four keep-alives fit in it, so a live node is never dropped.
pub const CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Why a connection or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("TLS files: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot open a local UDP socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot connect to {address}: {detail}")]
    Connect { address: SocketAddr, detail: String },
    #[error("{address} did not answer within {timeout:?}")]
    Timeout {
        address: SocketAddr,
        timeout: Duration,
    },
    #[error("connection to {address} failed: {detail}")]
    Connection { address: SocketAddr, detail: String },
    /// A request to `address` went unanswered while another node was elected leader: the
    /// request may or may not have reached the old leader's log.
    #[error("{address} did not answer, and leadership moved: {detail}")]
    LeaderMoved { address: SocketAddr, detail: String },
    #[error("bad response from {address}: {source}")]
    Frame {
        address: SocketAddr,
        source: FrameError,
    },
}

/// The client side's TLS material: the cluster CA and one client identity.
#[derive(Clone)]
pub struct ClientTls {
    config: quinn::ClientConfig,
}

impl ClientTls {
    /// Loads `ca.pem` and the client identity `client-NAME` (or the first `client-*` found when
    /// `name` is `None`) from `dir`.
    pub fn load(dir: &Path, name: Option<&str>) -> Result<Self, ConnectError> {
        let identity = match name {
            Some(name) => Identity::load(dir, &format!("client-{name}"))?,
            None => Identity::first_client(dir)?,
        };
        Self::from_identity(dir, identity)
    }

    /// Uses an explicit identity (tests use node or foreign certificates through this).
    pub fn from_identity(dir: &Path, identity: Identity) -> Result<Self, ConnectError> {
        let tls = tls::client_config(tls::root_store(dir)?, identity, CLIENT_ALPN)?;
        let crypto = QuicClientConfig::try_from(tls)
            .map_err(|error| ConnectError::Tls(TlsError::Config(error.to_string())))?;
        let tls = Self {
            config: quinn::ClientConfig::new(Arc::new(crypto)),
        };
        tls.with_idle_timeout(CLIENT_IDLE_TIMEOUT)
    }

    /// The same identity, for connections closed after `idle` without a packet from the node
    /// (keep-alives go four times as often, at most every [`CLIENT_KEEP_ALIVE_INTERVAL`]).
    pub fn with_idle_timeout(mut self, idle: Duration) -> Result<Self, ConnectError> {
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(CLIENT_KEEP_ALIVE_INTERVAL.min(idle / 4)));
        let idle = quinn::IdleTimeout::try_from(idle)
            .map_err(|error| ConnectError::Tls(TlsError::Config(error.to_string())))?;
        transport.max_idle_timeout(Some(idle));
        self.config.transport_config(Arc::new(transport));
        Ok(self)
    }
}

/// A live, greeted connection to one coordinator.
#[derive(Clone)]
pub struct NodeConnection {
    address: SocketAddr,
    /// The node's id, from its hello answer.
    node: NodeId,
    connection: quinn::Connection,
    // Keeps the local endpoint alive as long as the connection.
    _endpoint: quinn::Endpoint,
    timeout: Duration,
}

impl NodeConnection {
    /// Connects to `address`, completes the TLS handshake and a hello round trip.
    pub async fn connect(
        address: SocketAddr,
        tls: &ClientTls,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let local = ordo_net::client_bind_address(address);
        let mut endpoint = quinn::Endpoint::client(local).map_err(ConnectError::Socket)?;
        endpoint.set_default_client_config(tls.config.clone());
        let connecting = endpoint
            .connect(address, CLUSTER_SERVER_NAME)
            .map_err(|error| ConnectError::Connect {
                address,
                detail: error.to_string(),
            })?;
        let connection = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| ConnectError::Timeout { address, timeout })?
            .map_err(|error| ConnectError::Connect {
                address,
                detail: error.to_string(),
            })?;
        let mut node = Self {
            address,
            node: 0,
            connection,
            _endpoint: endpoint,
            timeout,
        };
        match node.request(&ClientRequest::Hello).await? {
            ClientResponse::Welcome { node: id } => {
                node.node = id;
                Ok(node)
            }
            other => Err(ConnectError::Connection {
                address,
                detail: format!("unexpected hello answer {other:?}"),
            }),
        }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The id of the node at the other end.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Sends one request on its own stream and waits for the response.
    pub async fn request(&self, request: &ClientRequest) -> Result<ClientResponse, ConnectError> {
        self.request_within(request, self.timeout).await
    }

    /// [`Self::request`] with its own timeout (a request the node answers only when something
    /// happens, such as a lock grant, waits longer than others).
    pub async fn request_within(
        &self,
        request: &ClientRequest,
        timeout: Duration,
    ) -> Result<ClientResponse, ConnectError> {
        let address = self.address;
        let exchange = async {
            let (mut send, mut receive) =
                self.connection
                    .open_bi()
                    .await
                    .map_err(|error| ConnectError::Connection {
                        address,
                        detail: error.to_string(),
                    })?;
            // A node that refuses a request part-way (a frame over its limit) stops reading it
            // and says why on the response stream: read that answer before giving up, or the
            // caller would retry a request that can never succeed.
            let written = write_frame(&mut send, request).await;
            let _ = send.finish();
            let answer = read_frame(&mut receive, CLIENT_RESPONSE_BYTES_MAX).await;
            if let (Err(source), Ok(None) | Err(_)) = (written, &answer) {
                return Err(ConnectError::Frame { address, source });
            }
            match answer {
                Ok(Some(response)) => Ok(response),
                Ok(None) => Err(ConnectError::Connection {
                    address,
                    detail: match self.connection.close_reason() {
                        Some(reason) => reason.to_string(),
                        None => "stream closed without a response".into(),
                    },
                }),
                Err(FrameError::Io(error)) => Err(ConnectError::Connection {
                    address,
                    detail: match self.connection.close_reason() {
                        Some(reason) => reason.to_string(),
                        None => error.to_string(),
                    },
                }),
                Err(source) => Err(ConnectError::Frame { address, source }),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ConnectError::Timeout { address, timeout })?
    }

    /// The underlying connection (for tests that speak raw frames).
    pub fn raw(&self) -> &quinn::Connection {
        &self.connection
    }
}
