//! Sessions, locks and elections as a deterministic state machine: part of the replicated state,
//! carried in snapshots, the same on every node for the same applied index.
//!
//! Time here is the **log time** the batch state keeps (the newest leader stamp applied), and it
//! is used for two things only: recording when a session was last renewed (so that a new leader
//! can tell how much of a TTL remains) and ending a lock-delay. Whether a session expired is never
//! decided here: the leader decides it on its own monotonic clock and proposes
//! [`CoordOp::Expire`], which takes effect only if the session was not renewed since the renewal
//! the leader measured from. Followers therefore never expire anything, and an expiry proposed by
//! a deposed leader that still commits is harmless.
//!
//! A grant's **token** is the log index of the entry whose apply made it: strictly increasing per
//! name over every grant ever made, with nothing to persist or reuse across restarts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ordo_common::codec::{self, DecodeError};
use ordo_common::coord::{
    CoordRefusal, ELECTION_HISTORY_MAX, ELECTION_TOMBSTONES_MAX, ELECTION_VALUE_BYTES_MAX,
    KEEPALIVE_SESSIONS_MAX, LOCK_DELAY_MS_MAX, LeaderChange, MUTEX_NAME_BYTES_MAX,
    MUTEX_WAITERS_MAX, MutexInfo, MutexKind, SESSION_MUTEXES_MAX, SESSION_OWNER_BYTES_MAX,
    SESSION_TTL_MS_MAX, SESSION_TTL_MS_MIN, SESSIONS_MAX, SESSIONS_PER_OWNER_MAX, SessionId,
    SessionInfo,
};
use ordo_common::{LogIndex, Membership};
use serde::{Deserialize, Serialize};

/// Most bytes of sessions, holders and waiters the coordination state counts (names, values,
/// owners, plus a fixed overhead per record): what clients can make every node hold.
pub const COORD_STATE_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Bytes counted per session and per holder or waiter beyond its names and values.
const RECORD_OVERHEAD_BYTES: u64 = 64;
/// Largest stored row of the coordination state (a session naming its mutexes, or a mutex with
/// its waiters and history).
pub const COORD_ROW_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// A change to sessions, locks or elections, as a log entry carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordOp {
    /// Opens `session` for `owner` (the client's authenticated identity), or renews it if it is
    /// open already (a retried open).
    Open {
        session: SessionId,
        owner: String,
        ttl_ms: u64,
    },
    /// Renews every listed session that is still open (the leader gathers keep-alives).
    KeepAlive { sessions: Vec<SessionId> },
    /// Ends `session`, proposed only by a leader that saw no renewal for a TTL since the one at
    /// `renewed_index`; without effect if the session was renewed since.
    Expire {
        session: SessionId,
        renewed_index: LogIndex,
    },
    /// Ends `session` at its client's request: what it held is released without lock-delay.
    Close { session: SessionId },
    /// Asks for a lock (or campaigns in an election, publishing `value`): granted now if free,
    /// else queued. Asking again is answered with the current state.
    Acquire {
        kind: MutexKind,
        name: String,
        session: SessionId,
        value: Vec<u8>,
        lock_delay_ms: u64,
    },
    /// Releases a held lock (resigns), or leaves its queue.
    Release {
        kind: MutexKind,
        name: String,
        session: SessionId,
    },
    /// An election's leader publishes a new value.
    Proclaim {
        name: String,
        session: SessionId,
        epoch: u64,
        value: Vec<u8>,
    },
    /// Grants what waited for a lock-delay that has ended (a leader proposes it when its clock
    /// passes the end).
    Wake { mutexes: Vec<(MutexKind, String)> },
}

/// What applying one operation answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordAnswer {
    /// The session is open with this TTL.
    Opened {
        ttl_ms: u64,
    },
    /// The keep-alive renewed every listed session except `gone`.
    Renewed {
        gone: Vec<SessionId>,
    },
    /// Whether an expiry took effect.
    Expired(bool),
    /// The session is closed (or was already gone).
    Closed,
    /// The session holds the lock with this token (epoch).
    Held {
        token: u64,
    },
    /// The session waits, `ahead` others before it (or behind a lock-delay when `ahead` is 0).
    Queued {
        ahead: u64,
    },
    /// Whether the session held or waited for the mutex.
    Released(bool),
    Proclaimed,
    Woken,
    Refused(CoordRefusal),
}

/// What changed for the sessions' clients, for the node to tell them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoordEvents {
    /// Grants made by this apply, including to waiters promoted by a release.
    pub grants: Vec<(MutexKind, String, SessionId, u64)>,
    /// Sessions that ended (expired or closed).
    pub ended: Vec<SessionId>,
    /// Leadership changes of elections, in order.
    pub elections: Vec<(String, LeaderChange)>,
    /// Sessions renewed or opened (the leader restarts their clocks).
    pub renewed: Vec<(SessionId, LogIndex, u64)>,
    /// Waiters that left a queue without a grant (their session ended).
    pub dequeued: Vec<(MutexKind, String, SessionId)>,
}

/// One open session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub owner: String,
    pub ttl_ms: u64,
    /// Index and log time of the latest renewal (or the open).
    pub renewed_index: LogIndex,
    pub renewed_ms: u64,
    /// Mutexes it holds or waits for.
    pub mutexes: BTreeSet<(MutexKind, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub session: SessionId,
    pub token: u64,
    pub value: Vec<u8>,
    pub lock_delay_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub session: SessionId,
    pub value: Vec<u8>,
    pub lock_delay_ms: u64,
}

/// One lock or election with a holder, waiters, a lock-delay running, or all three.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutex {
    pub holder: Option<Holder>,
    pub waiters: VecDeque<Waiter>,
    /// Log time before which nothing is granted (an expired holder's lock-delay).
    pub free_at_ms: u64,
    /// Recent leadership changes (elections only), oldest first.
    pub history: VecDeque<LeaderChange>,
}

impl Mutex {
    /// For an election kept only by its last change, "no leader" (left with neither a leader
    /// nor a candidate), that change's revision.
    fn tombstone_revision(&self, kind: MutexKind) -> Option<LogIndex> {
        if kind != MutexKind::Election || self.holder.is_some() || self.history.len() != 1 {
            return None;
        }
        let last = self.history.back()?;
        last.leader.is_none().then_some(last.revision)
    }
}

/// A row of the coordination state as storage keeps it: `s` + session id, or `l`/`e` + name.
pub type CoordRow = (Vec<u8>, Vec<u8>);

/// Sessions, locks and elections.
#[derive(Clone, Debug, Default)]
pub struct CoordState {
    sessions: BTreeMap<SessionId, Session>,
    mutexes: BTreeMap<(MutexKind, String), Mutex>,
    /// Derived: open sessions per owner.
    per_owner: BTreeMap<String, u64>,
    /// Derived: mutexes waiting for a lock-delay to end, by its end.
    delayed: BTreeSet<(u64, MutexKind, String)>,
    /// Derived: bytes counted against [`COORD_STATE_BYTES_MAX`].
    bytes: u64,
    /// Derived: elections kept only by their last change, "no leader" (see
    /// [`Mutex::tombstone_revision`]), by that change's revision.
    tombstones: BTreeSet<(LogIndex, String)>,
    /// The cluster's membership as of the applied index: the latest configuration entry
    /// applied (`None` before any: the bootstrap voters rule). Kept here so that it is stored
    /// with the state and travels in every snapshot.
    membership: Option<Membership>,
    /// Rows changed since [`CoordState::take_dirty`].
    dirty: BTreeSet<Vec<u8>>,
    events: CoordEvents,
}

/// The key of the membership row.
const MEMBERSHIP_KEY: &[u8] = b"m";

fn session_key(id: &SessionId) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.push(b's');
    key.extend_from_slice(&id.0);
    key
}

fn mutex_key(kind: MutexKind, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(match kind {
        MutexKind::Lock => b'l',
        MutexKind::Election => b'e',
    });
    key.extend_from_slice(name.as_bytes());
    key
}

fn membership_bytes(name: &str, value: &[u8]) -> u64 {
    name.len() as u64 + value.len() as u64 + RECORD_OVERHEAD_BYTES
}

fn limit(what: impl Into<String>, limit_name: &str, limit: u64) -> CoordRefusal {
    CoordRefusal::Limit {
        what: what.into(),
        limit_name: limit_name.into(),
        limit,
    }
}

/// Checks the sizes of an operation that any node would refuse the same way: the leader checks
/// before proposing, and apply checks again so that no entry can break a limit.
pub fn validate(op: &CoordOp) -> Result<(), CoordRefusal> {
    let name_ok = |name: &str| {
        if name.is_empty() || name.len() as u64 > MUTEX_NAME_BYTES_MAX {
            Err(limit(
                format!("a name of {} bytes", name.len()),
                "MUTEX_NAME_BYTES_MAX (and at least 1)",
                MUTEX_NAME_BYTES_MAX,
            ))
        } else {
            Ok(())
        }
    };
    let value_ok = |value: &[u8]| {
        if value.len() as u64 > ELECTION_VALUE_BYTES_MAX {
            Err(limit(
                format!("a value of {} bytes", value.len()),
                "ELECTION_VALUE_BYTES_MAX",
                ELECTION_VALUE_BYTES_MAX,
            ))
        } else {
            Ok(())
        }
    };
    match op {
        CoordOp::Open { owner, ttl_ms, .. } => {
            if owner.len() as u64 > SESSION_OWNER_BYTES_MAX {
                return Err(limit(
                    format!("an owner of {} bytes", owner.len()),
                    "SESSION_OWNER_BYTES_MAX",
                    SESSION_OWNER_BYTES_MAX,
                ));
            }
            if !(SESSION_TTL_MS_MIN..=SESSION_TTL_MS_MAX).contains(ttl_ms) {
                return Err(CoordRefusal::TtlOutOfRange {
                    ttl_ms: *ttl_ms,
                    min_ms: SESSION_TTL_MS_MIN,
                    max_ms: SESSION_TTL_MS_MAX,
                });
            }
            Ok(())
        }
        CoordOp::KeepAlive { sessions } if sessions.len() as u64 > KEEPALIVE_SESSIONS_MAX => {
            Err(limit(
                format!("{} sessions in one keep-alive", sessions.len()),
                "KEEPALIVE_SESSIONS_MAX",
                KEEPALIVE_SESSIONS_MAX,
            ))
        }
        CoordOp::Acquire {
            name,
            value,
            lock_delay_ms,
            ..
        } => {
            name_ok(name)?;
            value_ok(value)?;
            if *lock_delay_ms > LOCK_DELAY_MS_MAX {
                return Err(limit(
                    format!("a lock-delay of {lock_delay_ms} ms"),
                    "LOCK_DELAY_MS_MAX",
                    LOCK_DELAY_MS_MAX,
                ));
            }
            Ok(())
        }
        CoordOp::Release { name, .. } => name_ok(name),
        CoordOp::Proclaim { name, value, .. } => {
            name_ok(name)?;
            value_ok(value)
        }
        CoordOp::Wake { mutexes } => mutexes.iter().try_for_each(|(_, name)| name_ok(name)),
        _ => Ok(()),
    }
}

impl CoordState {
    /// The state from its stored rows (any order).
    pub fn restore(rows: &[CoordRow]) -> Result<Self, DecodeError> {
        let mut state = Self::default();
        for (key, value) in rows {
            match key.split_first() {
                Some((b's', id)) if id.len() == 16 => {
                    let session: Session = codec::decode(value, COORD_ROW_BYTES_MAX)?;
                    let id = SessionId(id.try_into().expect("16 bytes"));
                    state.sessions.insert(id, session);
                }
                Some((tag @ (b'l' | b'e'), name)) => {
                    let kind = if *tag == b'l' {
                        MutexKind::Lock
                    } else {
                        MutexKind::Election
                    };
                    let name = String::from_utf8(name.to_vec())
                        .map_err(|_| DecodeError::Malformed("a mutex name is not UTF-8".into()))?;
                    let mutex: Mutex = codec::decode(value, COORD_ROW_BYTES_MAX)?;
                    state.mutexes.insert((kind, name), mutex);
                }
                Some((b'm', [])) => {
                    state.membership = Some(codec::decode(value, COORD_ROW_BYTES_MAX)?);
                }
                _ => return Err(DecodeError::Malformed("an unknown coordination row".into())),
            }
        }
        for session in state.sessions.values() {
            *state.per_owner.entry(session.owner.clone()).or_insert(0) += 1;
            state.bytes += session.owner.len() as u64 + RECORD_OVERHEAD_BYTES;
        }
        for ((kind, name), mutex) in &state.mutexes {
            if let Some(revision) = mutex.tombstone_revision(*kind)
                && mutex.waiters.is_empty()
            {
                state.tombstones.insert((revision, name.clone()));
            } else if mutex.holder.is_none() {
                state
                    .delayed
                    .insert((mutex.free_at_ms, *kind, name.clone()));
            }
            for value in mutex
                .holder
                .iter()
                .map(|h| &h.value)
                .chain(mutex.waiters.iter().map(|w| &w.value))
            {
                state.bytes += membership_bytes(name, value);
            }
        }
        Ok(state)
    }

    /// Every row, in key order: what a snapshot carries.
    pub fn rows(&self) -> Vec<CoordRow> {
        let mut rows: Vec<CoordRow> = self
            .sessions
            .keys()
            .map(|id| self.row(&session_key(id)).expect("a session's row"))
            .chain(
                self.mutexes
                    .keys()
                    .map(|(kind, name)| self.row(&mutex_key(*kind, name)).expect("a mutex's row")),
            )
            .chain(self.row(MEMBERSHIP_KEY))
            .collect();
        rows.sort();
        rows
    }

    /// The row under `key` now, or `None` if it is gone.
    fn row(&self, key: &[u8]) -> Option<CoordRow> {
        let (tag, rest) = key.split_first()?;
        let value = match tag {
            b's' => codec::encode(self.sessions.get(&SessionId(rest.try_into().ok()?))?),
            b'l' | b'e' => {
                let kind = if *tag == b'l' {
                    MutexKind::Lock
                } else {
                    MutexKind::Election
                };
                let name = std::str::from_utf8(rest).ok()?.to_string();
                codec::encode(self.mutexes.get(&(kind, name))?)
            }
            b'm' if rest.is_empty() => codec::encode(self.membership.as_ref()?),
            _ => return None,
        };
        Some((key.to_vec(), value))
    }

    /// Rows changed since the last call: `Some(value)` to write, `None` to delete.
    pub fn take_dirty(&mut self) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|key| {
                let value = self.row(&key).map(|(_, value)| value);
                (key, value)
            })
            .collect()
    }

    /// What the latest applies changed for clients.
    pub fn take_events(&mut self) -> CoordEvents {
        std::mem::take(&mut self.events)
    }

    /// The membership as of the applied index (`None`: the bootstrap voters).
    pub fn membership(&self) -> Option<&Membership> {
        self.membership.as_ref()
    }

    /// A configuration entry applied: `membership` rules from here on.
    pub fn set_membership(&mut self, membership: Membership) {
        self.membership = Some(membership);
        self.dirty.insert(MEMBERSHIP_KEY.to_vec());
    }

    pub fn session(&self, id: &SessionId) -> Option<&Session> {
        self.sessions.get(id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = (&SessionId, &Session)> {
        self.sessions.iter()
    }

    pub fn mutex(&self, kind: MutexKind, name: &str) -> Option<&Mutex> {
        self.mutexes.get(&(kind, name.to_string()))
    }

    /// The holder's token of a lock or election, if it has a holder.
    pub fn token(&self, kind: MutexKind, name: &str) -> Option<u64> {
        self.mutex(kind, name)?.holder.as_ref().map(|h| h.token)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// An election's remembered changes after `after` (oldest first), and whether some after it
    /// were forgotten. An election with no record has no leader and nothing remembered.
    pub fn changes_after(&self, name: &str, after: u64) -> (Vec<LeaderChange>, bool) {
        let Some(mutex) = self.mutex(MutexKind::Election, name) else {
            return (Vec::new(), false);
        };
        let changes: Vec<LeaderChange> = mutex
            .history
            .iter()
            .filter(|change| change.revision > after)
            .cloned()
            .collect();
        let forgot = mutex.history.len() as u64 == ELECTION_HISTORY_MAX
            && mutex
                .history
                .front()
                .is_some_and(|c| c.revision > after + 1)
            && changes.len() == mutex.history.len();
        (changes, forgot)
    }

    /// Mutexes whose waiters wait only for a lock-delay ending at or before `now_ms`.
    pub fn due(&self, now_ms: u64) -> Vec<(MutexKind, String)> {
        self.delayed
            .iter()
            .take_while(|(free_at, _, _)| *free_at <= now_ms)
            .map(|(_, kind, name)| (*kind, name.clone()))
            .collect()
    }

    /// Sessions as operators see them, in id order, at most `max`.
    pub fn session_infos(&self, max: usize) -> Vec<SessionInfo> {
        self.sessions
            .iter()
            .take(max)
            .map(|(id, s)| SessionInfo {
                id: *id,
                owner: s.owner.clone(),
                ttl_ms: s.ttl_ms,
                renewed_ms: s.renewed_ms,
                mutexes: s.mutexes.iter().cloned().collect(),
            })
            .collect()
    }

    /// Locks and elections as operators see them, in name order, at most `max`.
    pub fn mutex_infos(&self, max: usize) -> Vec<MutexInfo> {
        self.mutexes
            .iter()
            .filter(|((kind, _), m)| {
                !(m.waiters.is_empty() && m.tombstone_revision(*kind).is_some())
            })
            .take(max)
            .map(|((kind, name), m)| MutexInfo {
                kind: *kind,
                name: name.clone(),
                holder: m
                    .holder
                    .as_ref()
                    .map(|h| (h.session, h.token, h.value.clone())),
                waiters: m.waiters.iter().map(|w| w.session).collect(),
                free_at_ms: m.free_at_ms,
            })
            .collect()
    }

    /// Applies `op`, carried by the entry at `index`, with the log time after its stamp.
    pub fn apply(&mut self, index: LogIndex, op: &CoordOp, log_time_ms: u64) -> CoordAnswer {
        if let Err(refusal) = validate(op) {
            return CoordAnswer::Refused(refusal);
        }
        match op {
            CoordOp::Open {
                session,
                owner,
                ttl_ms,
            } => self.open(index, *session, owner, *ttl_ms, log_time_ms),
            CoordOp::KeepAlive { sessions } => {
                let mut gone = Vec::new();
                for id in sessions {
                    if !self.renew(index, id, log_time_ms) {
                        gone.push(*id);
                    }
                }
                CoordAnswer::Renewed { gone }
            }
            CoordOp::Expire {
                session,
                renewed_index,
            } => {
                let current = self.sessions.get(session).map(|s| s.renewed_index);
                let expired = current == Some(*renewed_index);
                if expired {
                    self.end(index, *session, true, log_time_ms);
                }
                CoordAnswer::Expired(expired)
            }
            CoordOp::Close { session } => {
                if self.sessions.contains_key(session) {
                    self.end(index, *session, false, log_time_ms);
                }
                CoordAnswer::Closed
            }
            CoordOp::Acquire {
                kind,
                name,
                session,
                value,
                lock_delay_ms,
            } => self.acquire(
                index,
                (*kind, name.clone()),
                Waiter {
                    session: *session,
                    value: value.clone(),
                    lock_delay_ms: *lock_delay_ms,
                },
                log_time_ms,
            ),
            CoordOp::Release {
                kind,
                name,
                session,
            } => {
                let released = self.leave(index, (*kind, name.clone()), *session, 0, log_time_ms);
                if let Some(s) = self.sessions.get_mut(session)
                    && s.mutexes.remove(&(*kind, name.clone()))
                {
                    self.dirty.insert(session_key(session));
                }
                CoordAnswer::Released(released)
            }
            CoordOp::Proclaim {
                name,
                session,
                epoch,
                value,
            } => self.proclaim(index, name, *session, *epoch, value),
            CoordOp::Wake { mutexes } => {
                for key in mutexes {
                    self.promote(index, key.clone(), log_time_ms);
                }
                CoordAnswer::Woken
            }
        }
    }

    fn open(
        &mut self,
        index: LogIndex,
        id: SessionId,
        owner: &str,
        ttl_ms: u64,
        log_time_ms: u64,
    ) -> CoordAnswer {
        if let Some(session) = self.sessions.get(&id) {
            if session.owner != owner {
                return CoordAnswer::Refused(CoordRefusal::NotOwner {
                    session: id,
                    owner: session.owner.clone(),
                });
            }
            let ttl_ms = session.ttl_ms;
            self.renew(index, &id, log_time_ms);
            return CoordAnswer::Opened { ttl_ms };
        }
        if self.sessions.len() as u64 >= SESSIONS_MAX {
            return CoordAnswer::Refused(limit("another session", "SESSIONS_MAX", SESSIONS_MAX));
        }
        let owned = self.per_owner.get(owner).copied().unwrap_or(0);
        if owned >= SESSIONS_PER_OWNER_MAX {
            return CoordAnswer::Refused(limit(
                format!("another session for {owner:?}"),
                "SESSIONS_PER_OWNER_MAX",
                SESSIONS_PER_OWNER_MAX,
            ));
        }
        let bytes = owner.len() as u64 + RECORD_OVERHEAD_BYTES;
        if self.bytes + bytes > COORD_STATE_BYTES_MAX {
            return CoordAnswer::Refused(limit(
                "another session",
                "COORD_STATE_BYTES_MAX",
                COORD_STATE_BYTES_MAX,
            ));
        }
        self.bytes += bytes;
        *self.per_owner.entry(owner.to_string()).or_insert(0) += 1;
        self.sessions.insert(
            id,
            Session {
                owner: owner.to_string(),
                ttl_ms,
                renewed_index: index,
                renewed_ms: log_time_ms,
                mutexes: BTreeSet::new(),
            },
        );
        self.dirty.insert(session_key(&id));
        self.events.renewed.push((id, index, ttl_ms));
        CoordAnswer::Opened { ttl_ms }
    }

    fn renew(&mut self, index: LogIndex, id: &SessionId, log_time_ms: u64) -> bool {
        let Some(session) = self.sessions.get_mut(id) else {
            return false;
        };
        session.renewed_index = index;
        session.renewed_ms = log_time_ms;
        self.dirty.insert(session_key(id));
        self.events.renewed.push((*id, index, session.ttl_ms));
        true
    }

    /// Ends a session: everything it held is released (with each grant's lock-delay if it
    /// `expired`), and it leaves every queue.
    fn end(&mut self, index: LogIndex, id: SessionId, expired: bool, log_time_ms: u64) {
        let session = self.sessions.remove(&id).expect("ending an open session");
        self.dirty.insert(session_key(&id));
        self.bytes -= session.owner.len() as u64 + RECORD_OVERHEAD_BYTES;
        if let Some(count) = self.per_owner.get_mut(&session.owner) {
            *count -= 1;
            if *count == 0 {
                self.per_owner.remove(&session.owner);
            }
        }
        for key in session.mutexes {
            let holder = self.mutexes.get(&key).and_then(|m| m.holder.as_ref());
            let held = holder.is_some_and(|h| h.session == id);
            let delay = match holder {
                Some(holder) if held && expired => holder.lock_delay_ms,
                _ => 0,
            };
            let (kind, name) = key.clone();
            if self.leave(index, key, id, delay, log_time_ms) && !held {
                self.events.dequeued.push((kind, name, id));
            }
        }
        self.events.ended.push(id);
    }

    fn acquire(
        &mut self,
        index: LogIndex,
        key: (MutexKind, String),
        waiter: Waiter,
        log_time_ms: u64,
    ) -> CoordAnswer {
        let id = waiter.session;
        if !self.sessions.contains_key(&id) {
            return CoordAnswer::Refused(CoordRefusal::SessionGone(id));
        }
        // Every acquire of a known lock first grants what is due (a lock-delay that ended).
        self.promote(index, key.clone(), log_time_ms);
        let session = &self.sessions[&id];
        if let Some(mutex) = self.mutexes.get(&key) {
            if let Some(holder) = mutex.holder.as_ref().filter(|h| h.session == id) {
                return CoordAnswer::Held {
                    token: holder.token,
                };
            }
            if let Some(ahead) = mutex.waiters.iter().position(|w| w.session == id) {
                return CoordAnswer::Queued {
                    ahead: ahead as u64 + u64::from(mutex.holder.is_some()),
                };
            }
            if mutex.waiters.len() as u64 >= MUTEX_WAITERS_MAX {
                return CoordAnswer::Refused(limit(
                    format!("another waiter on {} {:?}", key.0.noun(), key.1),
                    "MUTEX_WAITERS_MAX",
                    MUTEX_WAITERS_MAX,
                ));
            }
        }
        if session.mutexes.len() as u64 >= SESSION_MUTEXES_MAX {
            return CoordAnswer::Refused(limit(
                format!("another lock or election for session {id}"),
                "SESSION_MUTEXES_MAX",
                SESSION_MUTEXES_MAX,
            ));
        }
        let bytes = membership_bytes(&key.1, &waiter.value);
        if self.bytes + bytes > COORD_STATE_BYTES_MAX {
            return CoordAnswer::Refused(limit(
                format!("another waiter on {} {:?}", key.0.noun(), key.1),
                "COORD_STATE_BYTES_MAX",
                COORD_STATE_BYTES_MAX,
            ));
        }
        self.bytes += bytes;
        self.sessions
            .get_mut(&id)
            .expect("checked")
            .mutexes
            .insert(key.clone());
        self.dirty.insert(session_key(&id));
        let mutex = self.mutexes.entry(key.clone()).or_default();
        mutex.waiters.push_back(waiter);
        let ahead = mutex.waiters.len() as u64 - 1 + u64::from(mutex.holder.is_some());
        self.dirty.insert(mutex_key(key.0, &key.1));
        self.promote(index, key.clone(), log_time_ms);
        match self.mutexes.get(&key).and_then(|m| m.holder.as_ref()) {
            Some(holder) if holder.session == id => CoordAnswer::Held {
                token: holder.token,
            },
            _ => CoordAnswer::Queued { ahead },
        }
    }

    /// Takes `session` off `key` (as holder, with `delay` before the next grant, or as waiter)
    /// and grants to the next waiter if it may. Returns whether it held or waited.
    fn leave(
        &mut self,
        index: LogIndex,
        key: (MutexKind, String),
        session: SessionId,
        delay_ms: u64,
        log_time_ms: u64,
    ) -> bool {
        let Some(mutex) = self.mutexes.get_mut(&key) else {
            return false;
        };
        let mut left = None;
        if mutex.holder.as_ref().is_some_and(|h| h.session == session) {
            let holder = mutex.holder.take().expect("checked");
            mutex.free_at_ms = mutex.free_at_ms.max(log_time_ms.saturating_add(delay_ms));
            // An election left without a leader is a change; one handed straight to the next
            // campaigner is one change, the grant.
            let regranted = !mutex.waiters.is_empty() && log_time_ms >= mutex.free_at_ms;
            if key.0 == MutexKind::Election && !regranted {
                let change = push_history(&mut mutex.history, index, None);
                self.events.elections.push((key.1.clone(), change));
            }
            left = Some(holder.value);
        } else if let Some(at) = mutex.waiters.iter().position(|w| w.session == session) {
            left = mutex.waiters.remove(at).map(|w| w.value);
        }
        let Some(value) = left else {
            self.promote(index, key, log_time_ms);
            return false;
        };
        self.bytes -= membership_bytes(&key.1, &value);
        self.dirty.insert(mutex_key(key.0, &key.1));
        self.promote(index, key, log_time_ms);
        true
    }

    /// Grants `key` to its first waiter if it has no holder and no lock-delay runs; forgets it
    /// if nothing is left of it.
    fn promote(&mut self, index: LogIndex, key: (MutexKind, String), log_time_ms: u64) {
        let Some(mutex) = self.mutexes.get_mut(&key) else {
            return;
        };
        self.delayed
            .remove(&(mutex.free_at_ms, key.0, key.1.clone()));
        if let Some(revision) = mutex.tombstone_revision(key.0)
            && !mutex.waiters.is_empty()
        {
            // A campaigner for a remembered election: it is live again.
            self.tombstones.remove(&(revision, key.1.clone()));
        }
        if mutex.holder.is_none()
            && log_time_ms >= mutex.free_at_ms
            && let Some(waiter) = mutex.waiters.pop_front()
        {
            mutex.holder = Some(Holder {
                session: waiter.session,
                token: index,
                value: waiter.value.clone(),
                lock_delay_ms: waiter.lock_delay_ms,
            });
            if key.0 == MutexKind::Election {
                let change = push_history(&mut mutex.history, index, Some((index, waiter.value)));
                self.events.elections.push((key.1.clone(), change));
            }
            self.events
                .grants
                .push((key.0, key.1.clone(), waiter.session, index));
            self.dirty.insert(mutex_key(key.0, &key.1));
        }
        if mutex.holder.is_none() {
            if mutex.waiters.is_empty() && log_time_ms >= mutex.free_at_ms {
                self.dirty.insert(mutex_key(key.0, &key.1));
                let last = mutex.history.back().filter(|c| c.leader.is_none()).cloned();
                match last {
                    // An election is remembered by its last change, "no leader", so that an
                    // observer that was not waiting when it happened still sees it.
                    Some(last) if key.0 == MutexKind::Election => {
                        mutex.history = VecDeque::from([last.clone()]);
                        self.tombstones.insert((last.revision, key.1.clone()));
                        while self.tombstones.len() as u64 > ELECTION_TOMBSTONES_MAX {
                            let (_, name) = self.tombstones.pop_first().expect("over the cap");
                            self.mutexes.remove(&(MutexKind::Election, name.clone()));
                            self.dirty.insert(mutex_key(MutexKind::Election, &name));
                        }
                    }
                    // Nothing left: forget it.
                    _ => {
                        self.mutexes.remove(&key);
                    }
                }
            } else {
                // A lock-delay runs: a leader's wake grants it, or forgets it, when it ends.
                self.delayed
                    .insert((mutex.free_at_ms, key.0, key.1.clone()));
            }
        }
    }

    fn proclaim(
        &mut self,
        index: LogIndex,
        name: &str,
        session: SessionId,
        epoch: u64,
        value: &[u8],
    ) -> CoordAnswer {
        let key = (MutexKind::Election, name.to_string());
        let holder = self
            .mutexes
            .get_mut(&key)
            .and_then(|m| m.holder.as_mut().map(|h| (h, &mut m.history)))
            .filter(|(h, _)| h.session == session && h.token == epoch);
        let Some((holder, history)) = holder else {
            return CoordAnswer::Refused(CoordRefusal::NotLeader {
                name: name.to_string(),
                session,
                epoch,
            });
        };
        let old = std::mem::replace(&mut holder.value, value.to_vec());
        self.bytes = self.bytes - old.len() as u64 + value.len() as u64;
        let change = push_history(history, index, Some((epoch, value.to_vec())));
        self.events.elections.push((name.to_string(), change));
        self.dirty.insert(mutex_key(MutexKind::Election, name));
        CoordAnswer::Proclaimed
    }
}

fn push_history(
    history: &mut VecDeque<LeaderChange>,
    revision: u64,
    leader: Option<(u64, Vec<u8>)>,
) -> LeaderChange {
    let change = LeaderChange { revision, leader };
    history.push_back(change.clone());
    while history.len() as u64 > ELECTION_HISTORY_MAX {
        history.pop_front();
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sid(n: u8) -> SessionId {
        SessionId([n; 16])
    }

    fn open(state: &mut CoordState, index: LogIndex, n: u8, time: u64) {
        let op = CoordOp::Open {
            session: sid(n),
            owner: format!("owner-{n}"),
            ttl_ms: 5_000,
        };
        assert_eq!(
            state.apply(index, &op, time),
            CoordAnswer::Opened { ttl_ms: 5_000 }
        );
    }

    fn acquire(
        state: &mut CoordState,
        index: LogIndex,
        n: u8,
        name: &str,
        delay: u64,
    ) -> CoordAnswer {
        let op = CoordOp::Acquire {
            kind: MutexKind::Lock,
            name: name.into(),
            session: sid(n),
            value: Vec::new(),
            lock_delay_ms: delay,
        };
        state.apply(index, &op, 100)
    }

    fn release(state: &mut CoordState, index: LogIndex, n: u8, name: &str) -> CoordAnswer {
        let op = CoordOp::Release {
            kind: MutexKind::Lock,
            name: name.into(),
            session: sid(n),
        };
        state.apply(index, &op, 100)
    }

    #[test]
    fn waiters_are_granted_in_order_with_increasing_tokens() {
        let mut state = CoordState::default();
        for n in 1..=3 {
            open(&mut state, n as u64, n, 100);
        }
        assert_eq!(
            acquire(&mut state, 10, 1, "L", 0),
            CoordAnswer::Held { token: 10 }
        );
        assert_eq!(
            acquire(&mut state, 11, 2, "L", 0),
            CoordAnswer::Queued { ahead: 1 }
        );
        assert_eq!(
            acquire(&mut state, 12, 3, "L", 0),
            CoordAnswer::Queued { ahead: 2 }
        );
        // Asking again is answered with the current state, and queues nothing twice.
        assert_eq!(
            acquire(&mut state, 13, 2, "L", 0),
            CoordAnswer::Queued { ahead: 1 }
        );
        assert_eq!(
            acquire(&mut state, 14, 1, "L", 0),
            CoordAnswer::Held { token: 10 }
        );
        state.take_events();
        assert_eq!(release(&mut state, 20, 1, "L"), CoordAnswer::Released(true));
        assert_eq!(state.token(MutexKind::Lock, "L"), Some(20));
        let events = state.take_events();
        assert_eq!(
            events.grants,
            vec![(MutexKind::Lock, "L".to_string(), sid(2), 20)]
        );
        // A waiter that leaves is not granted; the one after it is, at the next release.
        assert_eq!(release(&mut state, 21, 3, "L"), CoordAnswer::Released(true));
        assert_eq!(release(&mut state, 22, 2, "L"), CoordAnswer::Released(true));
        assert_eq!(state.token(MutexKind::Lock, "L"), None);
        assert!(
            state.mutex(MutexKind::Lock, "L").is_none(),
            "an empty lock is forgotten"
        );
        assert_eq!(
            release(&mut state, 23, 2, "L"),
            CoordAnswer::Released(false)
        );
    }

    #[test]
    fn an_expiry_takes_effect_only_if_no_renewal_committed_since() {
        let mut state = CoordState::default();
        open(&mut state, 1, 1, 100);
        open(&mut state, 2, 2, 100);
        acquire(&mut state, 3, 1, "L", 0);
        acquire(&mut state, 4, 2, "L", 0);
        let renew = CoordOp::KeepAlive {
            sessions: vec![sid(1), sid(9)],
        };
        assert_eq!(
            state.apply(5, &renew, 200),
            CoordAnswer::Renewed { gone: vec![sid(9)] }
        );
        // The leader measured from the open (index 1); the renewal at 5 wins.
        let stale = CoordOp::Expire {
            session: sid(1),
            renewed_index: 1,
        };
        assert_eq!(state.apply(6, &stale, 300), CoordAnswer::Expired(false));
        assert_eq!(state.token(MutexKind::Lock, "L"), Some(3));
        let due = CoordOp::Expire {
            session: sid(1),
            renewed_index: 5,
        };
        state.take_events();
        assert_eq!(state.apply(7, &due, 6_000), CoordAnswer::Expired(true));
        let events = state.take_events();
        assert_eq!(events.ended, vec![sid(1)]);
        assert_eq!(
            state.token(MutexKind::Lock, "L"),
            Some(7),
            "handed to the waiter"
        );
        assert_eq!(
            acquire(&mut state, 8, 1, "M", 0),
            CoordAnswer::Refused(CoordRefusal::SessionGone(sid(1)))
        );
    }

    #[test]
    fn a_lock_delay_keeps_an_expired_holders_lock_ungranted_until_it_ends() {
        let mut state = CoordState::default();
        open(&mut state, 1, 1, 1_000);
        open(&mut state, 2, 2, 1_000);
        assert_eq!(
            acquire(&mut state, 3, 1, "L", 500),
            CoordAnswer::Held { token: 3 }
        );
        let expire = CoordOp::Expire {
            session: sid(1),
            renewed_index: 1,
        };
        state.apply(4, &expire, 7_000);
        assert_eq!(state.token(MutexKind::Lock, "L"), None);
        assert_eq!(state.due(7_499), vec![]);
        assert_eq!(state.due(7_500), vec![(MutexKind::Lock, "L".to_string())]);
        // A waiter queues behind the delay, and a wake before its end grants nothing.
        let op = CoordOp::Acquire {
            kind: MutexKind::Lock,
            name: "L".into(),
            session: sid(2),
            value: Vec::new(),
            lock_delay_ms: 0,
        };
        assert_eq!(state.apply(5, &op, 7_100), CoordAnswer::Queued { ahead: 0 });
        let wake = CoordOp::Wake {
            mutexes: vec![(MutexKind::Lock, "L".into())],
        };
        state.apply(6, &wake, 7_200);
        assert_eq!(state.token(MutexKind::Lock, "L"), None);
        state.apply(7, &wake, 7_500);
        assert_eq!(state.token(MutexKind::Lock, "L"), Some(7));
        assert!(state.due(u64::MAX).is_empty());
    }

    #[test]
    fn elections_publish_values_and_remember_changes_for_observers() {
        let mut state = CoordState::default();
        open(&mut state, 1, 1, 100);
        open(&mut state, 2, 2, 100);
        let campaign = |n: u8| CoordOp::Acquire {
            kind: MutexKind::Election,
            name: "E".into(),
            session: sid(n),
            value: vec![n],
            lock_delay_ms: 0,
        };
        assert_eq!(
            state.apply(3, &campaign(1), 100),
            CoordAnswer::Held { token: 3 }
        );
        assert_eq!(
            state.apply(4, &campaign(2), 100),
            CoordAnswer::Queued { ahead: 1 }
        );
        let proclaim = CoordOp::Proclaim {
            name: "E".into(),
            session: sid(1),
            epoch: 3,
            value: b"new".to_vec(),
        };
        assert_eq!(state.apply(5, &proclaim, 100), CoordAnswer::Proclaimed);
        let stale = CoordOp::Proclaim {
            name: "E".into(),
            session: sid(2),
            epoch: 3,
            value: b"x".to_vec(),
        };
        assert!(matches!(
            state.apply(6, &stale, 100),
            CoordAnswer::Refused(CoordRefusal::NotLeader { .. })
        ));
        let resign = CoordOp::Release {
            kind: MutexKind::Election,
            name: "E".into(),
            session: sid(1),
        };
        state.apply(7, &resign, 100);
        let (changes, gap) = state.changes_after("E", 0);
        let leaders: Vec<_> = changes
            .iter()
            .map(|c| (c.revision, c.leader.clone()))
            .collect();
        assert_eq!(
            leaders,
            vec![
                (3, Some((3, vec![1]))),
                (5, Some((3, b"new".to_vec()))),
                (7, Some((7, vec![2]))),
            ]
        );
        assert!(!gap);
        assert_eq!(state.changes_after("E", 5).0.len(), 1);
    }

    #[test]
    fn an_emptied_election_keeps_its_last_change_for_observers_until_the_cap() {
        let mut state = CoordState::default();
        open(&mut state, 1, 1, 100);
        let campaign = |name: &str| CoordOp::Acquire {
            kind: MutexKind::Election,
            name: name.into(),
            session: sid(1),
            value: vec![1],
            lock_delay_ms: 0,
        };
        let resign = |name: &str| CoordOp::Release {
            kind: MutexKind::Election,
            name: name.into(),
            session: sid(1),
        };
        state.apply(2, &campaign("E"), 100);
        state.apply(3, &resign("E"), 100);
        // An observer that saw the grant at 2 but was not waiting when the leader resigned.
        let (changes, gap) = state.changes_after("E", 2);
        let leaders: Vec<_> = changes
            .iter()
            .map(|c| (c.revision, c.leader.clone()))
            .collect();
        assert_eq!(leaders, vec![(3, None)]);
        assert!(!gap);
        assert!(state.changes_after("E", 3).0.is_empty());
        assert!(
            state.mutex_infos(10).is_empty(),
            "operators are not shown tombstones"
        );
        // Restored from its rows, the state has the same tombstones.
        let restored = CoordState::restore(&state.rows()).expect("restore");
        assert_eq!(restored.tombstones, state.tombstones);
        assert!(restored.due(u64::MAX).is_empty());
        // A new campaign makes it live again, with its history going on.
        assert_eq!(
            state.apply(4, &campaign("E"), 100),
            CoordAnswer::Held { token: 4 }
        );
        assert!(state.tombstones.is_empty());
        assert_eq!(state.changes_after("E", 3).0.len(), 1);
        state.apply(5, &resign("E"), 100);
        // Beyond the cap the oldest tombstones are forgotten.
        let mut index = 6;
        for n in 0..ELECTION_TOMBSTONES_MAX {
            let name = format!("T{n}");
            state.apply(index, &campaign(&name), 100);
            state.apply(index + 1, &resign(&name), 100);
            index += 2;
        }
        assert_eq!(state.tombstones.len() as u64, ELECTION_TOMBSTONES_MAX);
        assert!(
            state.changes_after("E", 4).0.is_empty(),
            "E was the oldest: forgotten"
        );
        assert_eq!(state.changes_after("T0", 0).0.len(), 1);
    }

    #[test]
    fn rows_restore_the_same_state_and_dirty_rows_track_every_change() {
        let mut state = CoordState::default();
        open(&mut state, 1, 1, 100);
        open(&mut state, 2, 2, 100);
        acquire(&mut state, 3, 1, "L", 0);
        acquire(&mut state, 4, 2, "L", 0);
        let mut stored: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut persist = |state: &mut CoordState| {
            for (key, row) in state.take_dirty() {
                match row {
                    Some(row) => stored.insert(key, row),
                    None => stored.remove(&key),
                };
            }
            stored.clone().into_iter().collect::<Vec<_>>()
        };
        assert_eq!(persist(&mut state), state.rows());
        release(&mut state, 5, 1, "L");
        state.apply(6, &CoordOp::Close { session: sid(2) }, 100);
        assert_eq!(persist(&mut state), state.rows());
        let restored = CoordState::restore(&state.rows()).expect("rows decode");
        assert_eq!(restored.rows(), state.rows());
        assert_eq!(restored.bytes(), state.bytes());
        assert!(CoordState::restore(&[(b"x".to_vec(), vec![1])]).is_err());
    }

    #[test]
    fn limits_refuse_with_their_names() {
        let mut state = CoordState::default();
        for n in 0..SESSIONS_PER_OWNER_MAX {
            let op = CoordOp::Open {
                session: SessionId((n as u128).to_le_bytes()),
                owner: "one".into(),
                ttl_ms: 5_000,
            };
            assert!(matches!(
                state.apply(n + 1, &op, 0),
                CoordAnswer::Opened { .. }
            ));
        }
        let op = CoordOp::Open {
            session: sid(200),
            owner: "one".into(),
            ttl_ms: 5_000,
        };
        assert!(matches!(
            state.apply(1_000, &op, 0),
            CoordAnswer::Refused(CoordRefusal::Limit { limit_name, .. }) if limit_name == "SESSIONS_PER_OWNER_MAX"
        ));
        let short = CoordOp::Open {
            session: sid(201),
            owner: "two".into(),
            ttl_ms: 10,
        };
        assert!(matches!(
            state.apply(1_001, &short, 0),
            CoordAnswer::Refused(CoordRefusal::TtlOutOfRange { .. })
        ));
        let long_name = CoordOp::Acquire {
            kind: MutexKind::Lock,
            name: "x".repeat(300),
            session: SessionId(0u128.to_le_bytes()),
            value: Vec::new(),
            lock_delay_ms: 0,
        };
        assert!(matches!(
            state.apply(1_002, &long_name, 0),
            CoordAnswer::Refused(CoordRefusal::Limit { .. })
        ));
    }
}
