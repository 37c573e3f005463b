//! The few etcd v3 messages this load generator sends and reads, declared by hand so no
//! `protoc` is needed. Field numbers follow etcd's `api/etcdserverpb/rpc.proto` (package
//! `etcdserverpb`). Fields this program never sets are left out: protobuf encodes an unset
//! field as nothing, and prost skips fields it does not know when decoding, so a subset of a
//! message is wire-compatible with the whole.

use bytes::Bytes;

/// `ResponseHeader`: carried by every response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `PutRequest` (omitted: `prev_kv` = 4, `ignore_value` = 5, `ignore_lease` = 6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    #[prost(int64, tag = "3")]
    pub lease: i64,
}

/// `RequestOp`: a oneof of range (1), put (2), delete_range (3) and txn (4); only put here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOp {
    #[prost(oneof = "request_op::Request", tags = "2")]
    pub request: Option<request_op::Request>,
}

pub mod request_op {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Request {
        #[prost(message, tag = "2")]
        RequestPut(super::PutRequest),
    }
}

/// `TxnRequest` without comparisons (`compare` = 1, so `success` always runs) and without
/// `failure` (3): the puts of one batch, applied atomically under one revision.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRequest {
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
}

/// `TxnResponse` (omitted: `responses` = 3).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
}

/// `StatusRequest` (Maintenance service): no fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

/// `StatusResponse` (omitted: `dbSize` = 3, `raftIndex` = 5 and the fields from 7 on).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub version: String,
    /// The member id the answering member believes leads.
    #[prost(uint64, tag = "4")]
    pub leader: u64,
    #[prost(uint64, tag = "6")]
    pub raft_term: u64,
}

pub const TXN_PATH: &str = "/etcdserverpb.KV/Txn";
pub const STATUS_PATH: &str = "/etcdserverpb.Maintenance/Status";
