//! A minimal HTTP/1.1 GET for the node's HTTP listener (plain, on loopback): enough to read
//! `/metrics`, `/readyz` and `/api/*` without an HTTP client library.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most bytes a test reads from one answer.
const ANSWER_BYTES_MAX: usize = 16 << 20;

/// An answer: its status code and body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET path` from `address`, within 10 s.
pub async fn get(address: SocketAddr, path: &str) -> Result<Answer, String> {
    tokio::time::timeout(Duration::from_secs(10), get_now(address, path))
        .await
        .map_err(|_| format!("GET {path} from {address}: no answer within 10 s"))?
}

async fn get_now(address: SocketAddr, path: &str) -> Result<Answer, String> {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|error| format!("connect to {address}: {error}"))?;
    exchange(stream, address, path).await
}

/// `GET path` over HTTPS, trusting the cluster's CA in `tls_dir` and presenting the
/// certificate `stem` (`client-cli`, `node-1`, ...) or none, within 10 s.
pub async fn get_tls(
    address: SocketAddr,
    path: &str,
    tls_dir: &std::path::Path,
    stem: Option<&str>,
) -> Result<Answer, String> {
    use ordo_net::tls;
    let roots = tls::root_store(tls_dir).map_err(|error| error.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots);
    let mut config = match stem {
        Some(stem) => {
            let identity = tls::Identity::load(tls_dir, stem).map_err(|error| error.to_string())?;
            builder
                .with_client_auth_cert(identity.chain, identity.key)
                .map_err(|error| error.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name =
        rustls::pki_types::ServerName::try_from("localhost").map_err(|error| error.to_string())?;
    let exchanged = async {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|error| format!("connect to {address}: {error}"))?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|error| format!("TLS handshake with {address}: {error}"))?;
        exchange(stream, address, path).await
    };
    tokio::time::timeout(Duration::from_secs(10), exchanged)
        .await
        .map_err(|_| format!("GET {path} from {address}: no answer within 10 s"))?
}

async fn exchange<S>(mut stream: S, address: SocketAddr, path: &str) -> Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|error| format!("send GET {path}: {error}"))?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(ANSWER_BYTES_MAX as u64)
        .read_to_end(&mut raw)
        .await
        .map_err(|error| format!("read the answer to GET {path}: {error}"))?;
    let text = String::from_utf8(raw).map_err(|_| format!("GET {path}: not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no end of headers in {text:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("GET {path}: no status line in {head:?}"))?;
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_string())
        .unwrap_or_default();
    Ok(Answer {
        status,
        content_type,
        body: body.to_string(),
    })
}
