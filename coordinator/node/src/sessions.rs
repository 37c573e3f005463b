//! The node's bookkeeping for sessions, locks and elections: what only a leader does (measure
//! each session's TTL on its own clock and propose expiries and wakes) and the clients waiting
//! on something (keep-alives to gather, acquires waiting for a grant, observers waiting for a
//! leadership change). The replicated state itself is `ordo_core::state::coord`.
//!
//! **Time.** The leader measures TTLs in ticks of its own clock, from the moment it applied a
//! renewal: a session expires only after a full TTL with no renewal committed, measured on the
//! leader that proposes the expiry. A new leader inherits what remains of each TTL as the log's
//! time tells it (the last renewal's stamp against the newest stamp), counted from when it became
//! leader, so the election gap extends every session instead of ending it. A deposed leader's
//! expiry that still commits is harmless: it names the renewal it measured from, and apply
//! ignores it if a renewal committed since.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ordo_common::LogIndex;
use ordo_common::client::ClientResponse;
use ordo_common::coord::{LeaderChange, MutexKind, SessionId};
use ordo_core::ProposalId;
use ordo_core::state::{BatchState, CoordEvents};

use crate::node::RequestId;

/// Most keep-alives waiting to be proposed at the next tick.
pub const KEEPALIVES_PENDING_MAX: usize = 16 * 1024;
/// Most acquires waiting for a grant on one node.
pub const LOCK_WAITS_MAX: usize = 16 * 1024;
/// Most observers waiting for a leadership change on one node.
pub const OBSERVERS_MAX: usize = 16 * 1024;
/// Most expiries a leader proposes in one tick (the rest wait for the next: no expiry storm).
pub const EXPIRES_PER_TICK_MAX: usize = 64;

/// A waiting acquire's key.
pub type WaitKey = (MutexKind, String, SessionId);

#[derive(Debug, Default)]
pub struct Sessions {
    /// Leader only: each session's deadline in ticks, and the renewal it counts from.
    clock: HashMap<SessionId, (u64, LogIndex)>,
    deadlines: BTreeSet<(u64, SessionId)>,
    /// Keep-alives to propose at the next tick.
    pub keepalives: Vec<(RequestId, SessionId)>,
    /// Keep-alive entries proposed, with the requests each answers.
    pub keepalive_proposals: HashMap<ProposalId, Vec<(RequestId, SessionId)>>,
    /// Acquires waiting for their grant.
    pub waits: BTreeMap<WaitKey, RequestId>,
    /// Observers waiting for an election's change after a revision.
    pub observers: Vec<(RequestId, String, u64)>,
    /// Expiries proposed and not yet decided, by proposal: a session is not proposed again
    /// while its expiry is in flight (re-proposing on a slow log would flood it).
    expiring: HashMap<ProposalId, SessionId>,
    /// The wake in flight, if any.
    pub wake_in_flight: Option<ProposalId>,
}

/// Ticks that cover `ms` milliseconds, rounded up.
fn ticks_for(ms: u64, tick_ms: u64) -> u64 {
    ms.div_ceil(tick_ms.max(1))
}

impl Sessions {
    /// This node became leader at tick `now`: every open session gets what remains of its TTL
    /// by the log's time, plus the clocks' allowed skew (`skew_ms`: the log's times come from
    /// other leaders' clocks), counted from now.
    pub fn lead(&mut self, state: &BatchState, now: u64, tick_ms: u64, skew_ms: u64) {
        self.clock.clear();
        self.deadlines.clear();
        self.expiring.clear();
        self.wake_in_flight = None;
        let log_time = state.log_time_ms();
        for (id, session) in state.coord().sessions() {
            let end = session
                .renewed_ms
                .saturating_add(session.ttl_ms)
                .saturating_add(skew_ms);
            let remaining = end.saturating_sub(log_time).min(session.ttl_ms);
            self.set(
                *id,
                now + ticks_for(remaining, tick_ms),
                session.renewed_index,
            );
        }
    }

    /// This node no longer leads: it measures nothing, and everyone waiting here is answered
    /// with `response` (they retry at the new leader).
    pub fn follow(&mut self, response: &ClientResponse) -> Vec<(RequestId, ClientResponse)> {
        self.clock.clear();
        self.deadlines.clear();
        self.expiring.clear();
        self.wake_in_flight = None;
        let mut replies: Vec<(RequestId, ClientResponse)> = Vec::new();
        replies.extend(
            self.keepalives
                .drain(..)
                .map(|(r, _)| (r, response.clone())),
        );
        replies.extend(
            std::mem::take(&mut self.waits)
                .into_values()
                .map(|r| (r, response.clone())),
        );
        replies.extend(
            self.observers
                .drain(..)
                .map(|(r, _, _)| (r, response.clone())),
        );
        replies.sort_by_key(|(r, _)| *r);
        replies
    }

    fn set(&mut self, id: SessionId, deadline: u64, renewed: LogIndex) {
        if let Some((old, _)) = self.clock.insert(id, (deadline, renewed)) {
            self.deadlines.remove(&(old, id));
        }
        self.deadlines.insert((deadline, id));
    }

    fn forget(&mut self, id: &SessionId) {
        if let Some((old, _)) = self.clock.remove(id) {
            self.deadlines.remove(&(old, *id));
        }
    }

    /// Sessions whose TTL ran out on this leader's clock by tick `now`, with the renewal each
    /// counts from. Each is taken off the clock until [`Sessions::expiry_proposed`] says what
    /// became of its expiry.
    pub fn due(&mut self, now: u64) -> Vec<(SessionId, LogIndex)> {
        let due: Vec<(u64, SessionId)> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(EXPIRES_PER_TICK_MAX)
            .copied()
            .collect();
        due.into_iter()
            .map(|(deadline, id)| {
                self.deadlines.remove(&(deadline, id));
                (id, self.clock[&id].1)
            })
            .collect()
    }

    /// The expiry of `session` was proposed as `proposal` (`None`: it could not be, so it is
    /// tried again at tick `retry_at`).
    pub fn expiry_proposed(
        &mut self,
        session: SessionId,
        renewed: LogIndex,
        proposal: Option<ProposalId>,
        retry_at: u64,
    ) {
        match proposal {
            Some(proposal) => {
                self.expiring.insert(proposal, session);
            }
            None => self.set(session, retry_at, renewed),
        }
    }

    /// What became of one of this leader's own proposals: an expiry that did not commit is tried
    /// again at tick `now` (one that did took effect, or a renewal it lost to reset the clock).
    pub fn own_result(&mut self, proposal: ProposalId, committed: bool, now: u64) {
        if self.wake_in_flight == Some(proposal) {
            self.wake_in_flight = None;
        }
        if let Some(session) = self.expiring.remove(&proposal)
            && !committed
            && let Some(&(deadline, renewed)) = self.clock.get(&session)
            && !self.deadlines.contains(&(deadline, session))
        {
            self.set(session, now, renewed);
        }
    }

    /// What the latest applies changed, as a leader sees it at tick `now`; returns the replies
    /// for acquires granted or ended and for observers.
    pub fn applied(
        &mut self,
        events: &CoordEvents,
        leader: bool,
        now: u64,
        tick_ms: u64,
    ) -> Vec<(RequestId, ClientResponse)> {
        let mut replies = Vec::new();
        if leader {
            for (id, index, ttl_ms) in &events.renewed {
                self.set(*id, now + ticks_for(*ttl_ms, tick_ms), *index);
            }
        }
        for id in &events.ended {
            self.forget(id);
        }
        for (kind, name, session, token) in &events.grants {
            if let Some(request) = self.waits.remove(&(*kind, name.clone(), *session)) {
                replies.push((request, ClientResponse::Held { token: *token }));
            }
        }
        for (kind, name, session) in &events.dequeued {
            if let Some(request) = self.waits.remove(&(*kind, name.clone(), *session)) {
                replies.push((request, ClientResponse::SessionGone { session: *session }));
            }
        }
        if !events.elections.is_empty() {
            let observers = std::mem::take(&mut self.observers);
            for (request, name, after) in observers {
                let changes: Vec<LeaderChange> = events
                    .elections
                    .iter()
                    .filter(|(n, change)| *n == name && change.revision > after)
                    .map(|(_, change)| change.clone())
                    .collect();
                if changes.is_empty() {
                    self.observers.push((request, name, after));
                } else {
                    let gap = false;
                    replies.push((request, ClientResponse::LeaderChanges { changes, gap }));
                }
            }
        }
        replies
    }

    /// Every request still waiting, to answer when the node stops.
    pub fn drain(&mut self) -> Vec<RequestId> {
        let mut requests: Vec<RequestId> = self.keepalives.drain(..).map(|(r, _)| r).collect();
        requests.extend(
            self.keepalive_proposals
                .drain()
                .flat_map(|(_, batch)| batch.into_iter().map(|(r, _)| r)),
        );
        requests.extend(std::mem::take(&mut self.waits).into_values());
        requests.extend(self.observers.drain(..).map(|(r, _, _)| r));
        requests.sort();
        requests
    }
}
