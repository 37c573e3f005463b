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
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|error| format!("connect to {address}: {error}"))?;
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
