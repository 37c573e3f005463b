//! The lock oracle: a reference model of sessions, locks and elections, written apart from the
//! one in `ordo-core` and fed the committed log in index order with the batch oracle. It checks:
//!
//! - **mutual exclusion and fencing tokens**: the model grants each lock to one session at a
//!   time, with the grant's index as its token, so tokens (epochs) strictly increase per name;
//!   a client told it holds a lock with a token must hold exactly that grant in the model, and
//!   the model's grants never overlap;
//! - **expiry by the leader's clock**: an expiry takes effect only if the session was not renewed
//!   since the renewal it names, and only after a whole TTL since that renewal was proposed,
//!   measured in real (simulated) time from the proposals;
//! - **fencing at commit**: a batch fenced on a lock or an election commits only while the model
//!   holds it with that token (the batch oracle asks [`LockModel::token`]).
//!
//! That every node holds the same sessions and locks is checked with the rest of the state
//! when the nodes converge.

use std::collections::{BTreeMap, HashMap, VecDeque};

use ordo_common::client::ClientResponse;
use ordo_common::coord::{MutexKind, SessionId};
use ordo_common::{Entry, EntryPayload, LogIndex};
use ordo_core::state::CoordOp;

use crate::checker::Violation;

macro_rules! violation {
    ($($arg:tt)*) => { return Err(Violation(format!($($arg)*))) };
}

#[derive(Debug)]
struct ModelSession {
    ttl_ms: u64,
    renewed_index: LogIndex,
    /// When the latest renewal (or the open) was proposed, in simulated ms.
    renewed_proposed_ms: u64,
    held: Vec<(MutexKind, String)>,
}

#[derive(Debug, Default)]
struct ModelMutex {
    holder: Option<(SessionId, u64)>,
    waiters: VecDeque<(SessionId, u64)>,
    free_at_ms: u64,
}

#[derive(Debug, Default)]
pub struct LockModel {
    sessions: BTreeMap<SessionId, ModelSession>,
    mutexes: BTreeMap<(MutexKind, String), ModelMutex>,
    /// The last token granted per name, ever.
    last_token: HashMap<(MutexKind, String), u64>,
    /// Every grant: (kind, name, token) → session.
    grants: HashMap<(MutexKind, String, u64), SessionId>,
    /// The lock-delay each grant asked for.
    delays: HashMap<((MutexKind, String), u64), u64>,
    /// When each entry was first proposed (simulated ms), as the cluster saw its leader append
    /// it, by index and value (see [`proposal_key`]): a Multi-Paxos leader proposes again, at
    /// its own ballot, values an earlier leader proposed.
    proposed_ms: HashMap<(LogIndex, u64), u64>,
    pub granted: u64,
    pub expired: u64,
    pub held_answers: u64,
}

/// An entry's index and a hash of its value: what names one proposal under either engine (a
/// coordination command carries its leader's clock stamp, so two proposals never share a value).
fn proposal_key(entry: &Entry) -> (LogIndex, u64) {
    let value = match &entry.payload {
        EntryPayload::Normal(bytes) => bytes.chunks(8).fold(bytes.len() as u64, |hash, chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            crate::checker::mix(hash, u64::from_le_bytes(word))
        }),
        EntryPayload::Noop | EntryPayload::Config(_) => 0,
    };
    (entry.index, value)
}

impl LockModel {
    /// A leader appended its own entry at simulated time `now_ms`.
    pub fn on_proposed(&mut self, entry: &Entry, now_ms: u64) {
        self.proposed_ms
            .entry(proposal_key(entry))
            .or_insert(now_ms);
    }

    /// The holder's token of a lock or election, as the model has it now.
    pub fn token(&self, kind: MutexKind, name: &str) -> Option<u64> {
        self.mutexes
            .get(&(kind, name.to_string()))
            .and_then(|m| m.holder.map(|(_, token)| token))
    }

    /// Folds the coordination op committed at `index`, with the log time after its stamp.
    pub fn fold(&mut self, entry: &Entry, op: &CoordOp, log_time_ms: u64) -> Result<(), Violation> {
        let index = entry.index;
        let proposed = self.proposed_ms.get(&proposal_key(entry)).copied();

        match op {
            CoordOp::Open {
                session, ttl_ms, ..
            } => {
                if let Some(s) = self.sessions.get_mut(session) {
                    s.renewed_index = index;
                    s.renewed_proposed_ms = proposed.unwrap_or(s.renewed_proposed_ms);
                } else if ordo_core::state::coord::validate(op).is_ok() {
                    self.sessions.insert(
                        *session,
                        ModelSession {
                            ttl_ms: *ttl_ms,
                            renewed_index: index,
                            renewed_proposed_ms: proposed.unwrap_or(0),
                            held: Vec::new(),
                        },
                    );
                }
            }
            CoordOp::KeepAlive { sessions } => {
                for id in sessions {
                    if let Some(s) = self.sessions.get_mut(id) {
                        s.renewed_index = index;
                        s.renewed_proposed_ms = proposed.unwrap_or(s.renewed_proposed_ms);
                    }
                }
            }
            CoordOp::Expire {
                session,
                renewed_index,
            } => {
                let Some(s) = self.sessions.get(session) else {
                    return Ok(());
                };
                if s.renewed_index != *renewed_index {
                    return Ok(());
                }
                if let Some(expire_ms) = proposed
                    && expire_ms < s.renewed_proposed_ms + s.ttl_ms
                {
                    violation!(
                        "session {session} expired at index {index}, proposed at {expire_ms} ms, \
                         only {} ms after its renewal at index {} was proposed (TTL {} ms)",
                        expire_ms - s.renewed_proposed_ms,
                        s.renewed_index,
                        s.ttl_ms
                    );
                }
                self.expired += 1;
                self.end(index, *session, true, log_time_ms);
            }
            CoordOp::Close { session } => {
                if self.sessions.contains_key(session) {
                    self.end(index, *session, false, log_time_ms);
                }
            }
            CoordOp::Acquire {
                kind,
                name,
                session,
                lock_delay_ms,
                ..
            } => {
                let key = (*kind, name.clone());
                let Some(s) = self.sessions.get_mut(session) else {
                    return Ok(());
                };
                let mutex = self.mutexes.entry(key.clone()).or_default();
                let member = mutex.holder.is_some_and(|(h, _)| h == *session)
                    || mutex.waiters.iter().any(|(w, _)| w == session);
                if !member && ordo_core::state::coord::validate(op).is_ok() {
                    mutex.waiters.push_back((*session, *lock_delay_ms));
                    s.held.push(key.clone());
                }
                self.promote(index, key, log_time_ms)?;
            }
            CoordOp::Release {
                kind,
                name,
                session,
            } => {
                let key = (*kind, name.clone());
                self.leave(index, &key, *session, 0, log_time_ms)?;
                if let Some(s) = self.sessions.get_mut(session) {
                    s.held.retain(|k| *k != key);
                }
            }
            CoordOp::Proclaim { .. } => {}
            CoordOp::Wake { mutexes } => {
                for key in mutexes {
                    self.promote(index, key.clone(), log_time_ms)?;
                }
            }
        }
        Ok(())
    }

    fn end(&mut self, index: LogIndex, id: SessionId, expired: bool, log_time_ms: u64) {
        let session = self.sessions.remove(&id).expect("an open session");
        for key in session.held {
            let delay = match self.mutexes.get(&key).and_then(|m| m.holder) {
                Some((holder, token)) if holder == id && expired => {
                    self.delays.get(&(key.clone(), token)).copied().unwrap_or(0)
                }
                _ => 0,
            };
            let _ = self.leave(index, &key, id, delay, log_time_ms);
        }
    }

    fn leave(
        &mut self,
        index: LogIndex,
        key: &(MutexKind, String),
        id: SessionId,
        delay_ms: u64,
        log_time_ms: u64,
    ) -> Result<(), Violation> {
        let Some(mutex) = self.mutexes.get_mut(key) else {
            return Ok(());
        };
        if mutex.holder.is_some_and(|(h, _)| h == id) {
            mutex.holder = None;
            mutex.free_at_ms = mutex.free_at_ms.max(log_time_ms + delay_ms);
        } else {
            mutex.waiters.retain(|(w, _)| *w != id);
        }
        self.promote(index, key.clone(), log_time_ms)
    }

    fn promote(
        &mut self,
        index: LogIndex,
        key: (MutexKind, String),
        log_time_ms: u64,
    ) -> Result<(), Violation> {
        let Some(mutex) = self.mutexes.get_mut(&key) else {
            return Ok(());
        };
        if mutex.holder.is_none()
            && log_time_ms >= mutex.free_at_ms
            && let Some((session, delay)) = mutex.waiters.pop_front()
        {
            if let Some(last) = self.last_token.get(&key)
                && *last >= index
            {
                violation!(
                    "{} {:?} granted at index {index}, not after its last grant at {last}",
                    key.0.noun(),
                    key.1
                );
            }
            mutex.holder = Some((session, index));
            self.last_token.insert(key.clone(), index);
            self.grants.insert((key.0, key.1.clone(), index), session);
            self.delays.insert((key.clone(), index), delay);
            self.granted += 1;
        }
        if mutex.holder.is_none() && mutex.waiters.is_empty() && log_time_ms >= mutex.free_at_ms {
            self.mutexes.remove(&key);
        }
        Ok(())
    }

    /// A node told a client of `session` that it holds `kind` `name` with `token`: the model must
    /// have made exactly that grant.
    pub fn on_held(
        &mut self,
        kind: MutexKind,
        name: &str,
        session: SessionId,
        response: &ClientResponse,
    ) -> Result<(), Violation> {
        let ClientResponse::Held { token } = response else {
            return Ok(());
        };
        self.held_answers += 1;
        match self.grants.get(&(kind, name.to_string(), *token)) {
            Some(granted) if *granted == session => Ok(()),
            Some(granted) => violation!(
                "session {session} was told it holds {} {name:?} with token {token}, \
                 which the model granted to session {granted}",
                kind.noun()
            ),
            None => violation!(
                "session {session} was told it holds {} {name:?} with token {token}, \
                 which the model never granted",
                kind.noun()
            ),
        }
    }
}
