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

/// `RequestOp`: a oneof of range (1), put (2), delete_range (3) and txn (4).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestOp {
    #[prost(oneof = "request_op::Request", tags = "1, 2, 3")]
    pub request: Option<request_op::Request>,
}

pub mod request_op {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Request {
        #[prost(message, tag = "1")]
        Range(super::RangeRequest),
        #[prost(message, tag = "2")]
        Put(super::PutRequest),
        #[prost(message, tag = "3")]
        DeleteRange(super::DeleteRangeRequest),
    }
}

/// `Compare` (omitted: the other target_union members, `range_end` = 64). `result`: EQUAL 0,
/// GREATER 1, LESS 2, NOT_EQUAL 3; `target`: VERSION 0, CREATE 1, MOD 2, VALUE 3, LEASE 4.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Compare {
    #[prost(int32, tag = "1")]
    pub result: i32,
    #[prost(int32, tag = "2")]
    pub target: i32,
    #[prost(bytes = "bytes", tag = "3")]
    pub key: Bytes,
    /// A member of the `target_union` oneof: encoded even when 0.
    #[prost(int64, optional, tag = "5")]
    pub create_revision: Option<i64>,
}

pub const COMPARE_EQUAL: i32 = 0;
pub const COMPARE_TARGET_CREATE: i32 = 1;

/// `TxnRequest`: if every `compare` holds, `success` runs, else `failure`; atomically, under
/// one revision.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnRequest {
    #[prost(message, repeated, tag = "1")]
    pub compare: Vec<Compare>,
    #[prost(message, repeated, tag = "2")]
    pub success: Vec<RequestOp>,
    #[prost(message, repeated, tag = "3")]
    pub failure: Vec<RequestOp>,
}

/// `TxnResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TxnResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(bool, tag = "2")]
    pub succeeded: bool,
    #[prost(message, repeated, tag = "3")]
    pub responses: Vec<ResponseOp>,
}

/// `ResponseOp`: a oneof of range (1), put (2), delete_range (3); only range is read here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseOp {
    #[prost(oneof = "response_op::Response", tags = "1")]
    pub response: Option<response_op::Response>,
}

pub mod response_op {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Response {
        #[prost(message, tag = "1")]
        Range(super::RangeResponse),
    }
}

/// `RangeRequest` (omitted: `revision` = 4, `serializable` = 7 (false: linearizable, as
/// clientv3's default Get), and the rest). `sort_order`: NONE 0, ASCEND 1, DESCEND 2;
/// `sort_target`: KEY 0, VERSION 1, CREATE 2, MOD 3, VALUE 4.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub range_end: Bytes,
    #[prost(int64, tag = "3")]
    pub limit: i64,
    #[prost(int32, tag = "5")]
    pub sort_order: i32,
    #[prost(int32, tag = "6")]
    pub sort_target: i32,
    #[prost(int64, tag = "13")]
    pub max_create_revision: i64,
}

pub const SORT_ASCEND: i32 = 1;
pub const SORT_DESCEND: i32 = 2;
pub const SORT_BY_CREATE: i32 = 2;

/// `RangeResponse` (omitted: `more` = 3, `count` = 4).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
}

/// `mvccpb.KeyValue` (omitted: `version` = 4, `value` = 5, `lease` = 6).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
}

/// `DeleteRangeRequest` (omitted: `prev_kv` = 3).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub range_end: Bytes,
}

/// `DeleteRangeResponse` (omitted: `prev_kvs` = 3).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub deleted: i64,
}

/// `LeaseGrantRequest`: `ttl` seconds; `id` 0 lets the server choose.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantRequest {
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    #[prost(int64, tag = "2")]
    pub id: i64,
}

/// `LeaseGrantResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    #[prost(string, tag = "4")]
    pub error: String,
}

/// `LeaseRevokeRequest` (its response is read as a bare header).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRevokeRequest {
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// Any response read only for its header.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderOnly {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `WatchRequest`: a oneof of create (1), cancel (2) and progress (3), declared as optional
/// fields (the same encoding when one is set); no progress here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRequest {
    #[prost(message, optional, tag = "1")]
    pub create_request: Option<WatchCreateRequest>,
    #[prost(message, optional, tag = "2")]
    pub cancel_request: Option<WatchCancelRequest>,
}

/// `WatchCancelRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchCancelRequest {
    #[prost(int64, tag = "1")]
    pub watch_id: i64,
}

/// `WatchCreateRequest` (omitted: `progress_notify` = 4 and on).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchCreateRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub range_end: Bytes,
    #[prost(int64, tag = "3")]
    pub start_revision: i64,
}

/// `WatchResponse` (omitted: `compact_revision` = 5, `fragment` = 7).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub watch_id: i64,
    #[prost(bool, tag = "3")]
    pub created: bool,
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    #[prost(string, tag = "6")]
    pub cancel_reason: String,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
}

/// `mvccpb.Event`: `kind` PUT 0, DELETE 1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(int32, tag = "1")]
    pub kind: i32,
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
}

pub const EVENT_DELETE: i32 = 1;

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
pub const RANGE_PATH: &str = "/etcdserverpb.KV/Range";
pub const DELETE_RANGE_PATH: &str = "/etcdserverpb.KV/DeleteRange";
pub const LEASE_GRANT_PATH: &str = "/etcdserverpb.Lease/LeaseGrant";
pub const LEASE_REVOKE_PATH: &str = "/etcdserverpb.Lease/LeaseRevoke";
pub const WATCH_PATH: &str = "/etcdserverpb.Watch/Watch";
pub const STATUS_PATH: &str = "/etcdserverpb.Maintenance/Status";
