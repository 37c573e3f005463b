//! etcd's lock recipe (`clientv3/concurrency.Mutex`, as of etcd 3.5), spoken over gRPC, so
//! that the comparison with `ordo bench --lock` measures the lock etcd users actually take:
//!
//! - **Lock**: one Txn: if `PREFIX/LEASE` does not exist, put it (under the session's lease)
//!   and read the prefix's oldest key; else read both. The oldest key (lowest create revision)
//!   holds the lock. If it is not ours, wait until every key created before ours is deleted
//!   (read the newest of them, watch it until its delete, again), then read our own key to make
//!   sure the session still holds it.
//! - **Unlock**: delete our key.
//!
//! Reads are linearizable, as clientv3's default `Get`. Each client's session is a lease
//! granted once before the measured time and long enough to outlive the run (so no
//! keep-alives are needed while it is measured).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::PathAndQuery;
use tokio::sync::mpsc;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use crate::call;
use crate::proto::{
    self, Compare, DeleteRangeRequest, DeleteRangeResponse, HeaderOnly, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp,
    TxnRequest, TxnResponse, WatchCancelRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};

/// Grants a lease of `ttl_seconds`: a session.
pub async fn grant_lease(grpc: &mut Grpc<Channel>, ttl_seconds: i64) -> Result<i64, String> {
    let request = LeaseGrantRequest {
        ttl: ttl_seconds,
        id: 0,
    };
    let response: LeaseGrantResponse = call(grpc, proto::LEASE_GRANT_PATH, request)
        .await
        .map_err(|status| format!("LeaseGrant: {}", status.message()))?;
    if !response.error.is_empty() {
        return Err(format!("LeaseGrant: {}", response.error));
    }
    Ok(response.id)
}

/// Revokes a lease (deleting its keys).
pub async fn revoke_lease(grpc: &mut Grpc<Channel>, id: i64) -> Result<(), String> {
    call::<_, HeaderOnly>(grpc, proto::LEASE_REVOKE_PATH, LeaseRevokeRequest { id })
        .await
        .map(|_| ())
        .map_err(|status| format!("LeaseRevoke: {}", status.message()))
}

/// One session's mutex on a key prefix.
pub struct Mutex {
    grpc: Grpc<Channel>,
    prefix: Bytes,
    my_key: Bytes,
    watch: Option<WatchStream>,
}

impl Mutex {
    /// The mutex `prefix` (ending in `/`) for the session of `lease`.
    pub fn new(channel: Channel, prefix: &str, lease: i64) -> Self {
        Self {
            grpc: Grpc::new(channel),
            prefix: Bytes::from(prefix.to_string()),
            my_key: Bytes::from(format!("{prefix}{lease:x}")),
            watch: None,
        }
    }

    pub async fn lock(&mut self, lease: i64) -> Result<(), String> {
        let owner = RequestOp {
            request: Some(proto::request_op::Request::Range(self.top(0))),
        };
        let mine = RequestOp {
            request: Some(proto::request_op::Request::Range(key_range(&self.my_key))),
        };
        let put = RequestOp {
            request: Some(proto::request_op::Request::Put(PutRequest {
                key: self.my_key.clone(),
                value: Bytes::new(),
                lease,
            })),
        };
        let request = TxnRequest {
            compare: vec![Compare {
                result: proto::COMPARE_EQUAL,
                target: proto::COMPARE_TARGET_CREATE,
                key: self.my_key.clone(),
                create_revision: Some(0),
            }],
            success: vec![put, owner.clone()],
            failure: vec![mine, owner],
        };
        let response: TxnResponse = call(&mut self.grpc, proto::TXN_PATH, request)
            .await
            .map_err(|status| format!("Txn: {}", status.message()))?;
        let ranges: Vec<&RangeResponse> = response
            .responses
            .iter()
            .filter_map(|op| {
                let Some(proto::response_op::Response::Range(range)) = &op.response else {
                    return None;
                };
                Some(range)
            })
            .collect();
        let my_revision = if response.succeeded {
            response.header.as_ref().map_or(0, |h| h.revision)
        } else {
            ranges
                .first()
                .and_then(|range| range.kvs.first())
                .map_or(0, |kv| kv.create_revision)
        };
        let holder = ranges.last().and_then(|range| range.kvs.first());
        if holder.is_none_or(|kv| kv.create_revision == my_revision) {
            return Ok(());
        }
        self.wait_deletes(my_revision - 1).await?;
        let mine: RangeResponse = call(&mut self.grpc, proto::RANGE_PATH, key_range(&self.my_key))
            .await
            .map_err(|status| format!("Range: {}", status.message()))?;
        if mine.kvs.is_empty() {
            return Err("the session's key is gone (its lease expired)".to_string());
        }
        Ok(())
    }

    pub async fn unlock(&mut self) -> Result<(), String> {
        let request = DeleteRangeRequest {
            key: self.my_key.clone(),
            range_end: Bytes::new(),
        };
        call::<_, DeleteRangeResponse>(&mut self.grpc, proto::DELETE_RANGE_PATH, request)
            .await
            .map(|_| ())
            .map_err(|status| format!("DeleteRange: {status:?}"))
    }

    /// The prefix's oldest key (`max_create_revision` 0), or its newest key created at or
    /// below `max_create_revision`.
    fn top(&self, max_create_revision: i64) -> RangeRequest {
        RangeRequest {
            key: self.prefix.clone(),
            range_end: prefix_end(&self.prefix),
            limit: 1,
            sort_order: if max_create_revision > 0 {
                proto::SORT_DESCEND
            } else {
                proto::SORT_ASCEND
            },
            sort_target: proto::SORT_BY_CREATE,
            max_create_revision,
        }
    }

    /// Waits until no key of the prefix created at or below `max_create_revision` is left.
    async fn wait_deletes(&mut self, max_create_revision: i64) -> Result<(), String> {
        loop {
            let request = self.top(max_create_revision);
            let newest: RangeResponse = call(&mut self.grpc, proto::RANGE_PATH, request)
                .await
                .map_err(|status| format!("Range: {}", status.message()))?;
            let Some(last) = newest.kvs.first() else {
                return Ok(());
            };
            let revision = newest.header.as_ref().map_or(0, |h| h.revision);
            self.wait_delete(last.key.clone(), revision).await?;
        }
    }

    /// Watches `key` from `revision` until it is deleted. Like clientv3, one watch stream per
    /// client carries its watches one after another: each is created, waited on, then
    /// cancelled (opening and dropping a stream per wait makes the HTTP/2 connection refuse
    /// the churn).
    async fn wait_delete(&mut self, key: Bytes, revision: i64) -> Result<(), String> {
        let create = WatchRequest {
            create_request: Some(WatchCreateRequest {
                key,
                range_end: Bytes::new(),
                start_revision: revision,
            }),
            cancel_request: None,
        };
        match self.watch.as_mut() {
            Some(watch) => watch
                .requests
                .send(create)
                .map_err(|_| "the watch stream closed")?,
            // The server answers a new stream's headers only once it has a request.
            None => self.watch = Some(self.open_watch(create).await?),
        }
        let watch = self.watch.as_mut().expect("opened above");
        let mut watch_id = None;
        let deleted = loop {
            let message = match watch.responses.message().await {
                Ok(Some(message)) => message,
                Ok(None) => break Err("the watch stream ended".to_string()),
                Err(status) => break Err(format!("Watch: {}", status.message())),
            };
            if message.created && watch_id.is_none() {
                watch_id = Some(message.watch_id);
            }
            if Some(message.watch_id) != watch_id {
                continue; // an earlier watch's cancellation
            }
            if message.canceled {
                break Err(format!("the watch was canceled: {}", message.cancel_reason));
            }
            if message
                .events
                .iter()
                .any(|event| event.kind == proto::EVENT_DELETE)
            {
                break Ok(());
            }
        };
        match (&deleted, watch_id) {
            (Ok(()), Some(watch_id)) => {
                let cancel = WatchRequest {
                    create_request: None,
                    cancel_request: Some(WatchCancelRequest { watch_id }),
                };
                let _ = watch.requests.send(cancel);
            }
            // A broken stream is opened afresh next time.
            _ => self.watch = None,
        }
        deleted
    }

    async fn open_watch(&mut self, first: WatchRequest) -> Result<WatchStream, String> {
        self.grpc
            .ready()
            .await
            .map_err(|error| format!("connection not ready: {error}"))?;
        let (requests, receiver) = mpsc::unbounded_channel();
        requests.send(first).expect("the receiver is here");
        let response = self
            .grpc
            .streaming(
                tonic::Request::new(Requests(receiver)),
                PathAndQuery::from_static(proto::WATCH_PATH),
                ProstCodec::<WatchRequest, WatchResponse>::default(),
            )
            .await
            .map_err(|status| format!("Watch: {}", status.message()))?;
        Ok(WatchStream {
            requests,
            responses: response.into_inner(),
        })
    }
}

/// A client's watch stream: requests in, responses out.
struct WatchStream {
    requests: mpsc::UnboundedSender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
}

/// A range of exactly `key`.
fn key_range(key: &Bytes) -> RangeRequest {
    RangeRequest {
        key: key.clone(),
        range_end: Bytes::new(),
        limit: 0,
        sort_order: 0,
        sort_target: 0,
        max_create_revision: 0,
    }
}

/// The end of the range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    // Every byte was 0xff: to the end of the keyspace.
    Bytes::from_static(&[0])
}

/// A watch stream's requests, as the stream tonic sends.
struct Requests(mpsc::UnboundedReceiver<WatchRequest>);

impl futures_core::Stream for Requests {
    type Item = WatchRequest;

    fn poll_next(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<WatchRequest>> {
        self.0.poll_recv(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"lock/"), Bytes::from_static(b"lock0"));
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff"), Bytes::from_static(&[0]));
    }
}
