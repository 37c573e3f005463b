//! Sessions, locks with fencing tokens, and leader election.
//!
//! ```no_run
//! use std::time::Duration;
//! use ordo_participant::{Batch, Client, ClientConfig, Message, Session, new_batch_id};
//!
//! # async fn example(client: Client) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let session = Session::open(&client, Duration::from_secs(10)).await?;
//! let lock = session.lock("jobs").await?;
//! // Commits only while this session still holds "jobs" with this token.
//! let batch = Batch { id: new_batch_id(), messages: vec![Message::new("jobs", "job 7 done")],
//!                     preconditions: vec![] };
//! lock.submit(batch).await?;
//! lock.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! **What the guarantees are.** A [`Session`] is kept alive by renewals every third of its TTL.
//! The coordinator leader expires it only after a whole TTL with no renewal committed, measured
//! on the leader's clock (a leader change extends it by the election gap). The SDK reports the
//! session lost ([`Session::lost`]) as soon as the cluster says it expired, or when a TTL has
//! passed since the send of the last renewal that was answered, whichever comes first: the
//! client never believes in a session the cluster may already have expired, as long as clocks
//! run at the same rate.
//!
//! A lock's **fencing token** is the log index of its grant: strictly increasing per name over
//! every grant ever made. [`LockGuard::submit`] adds `LockHeld { name, token }` to the batch, so
//! the batch commits only if the lock is still held with that token *when it applies* — a holder
//! that was paused past its TTL, lost the lock and wakes up cannot commit. What fencing cannot
//! protect is a resource outside Ordo that does not check tokens: give it the token and have it
//! refuse any lower one ([`FenceCheck`]), or use a lock-delay.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ordo_common::batch::{Batch, Precondition};
use ordo_common::client::ClientResponse;
use ordo_common::coord::{
    CoordRefusal, LeaderChange, MutexInfo, MutexKind, SessionId, SessionInfo,
};
use std::time::Instant;
use tokio::sync::watch;

use crate::client::{Client, Committed, Patience, QueryError, SubmitError, new_batch_id};
use ordo_common::client::ClientRequest;

/// How long a waiting request (an acquire, an observe) waits for an answer before it is sent
/// again; the node keeps one wait per lock and session, so re-sending is safe.
const WAIT_POLL: Duration = Duration::from_secs(20);
/// Shortest time one keep-alive attempt (connect included) may take; otherwise a sixth of the TTL.
const KEEPALIVE_ATTEMPT_MIN: Duration = Duration::from_millis(100);
/// Pause before a keep-alive that found no leader tries again.
const KEEPALIVE_RETRY: Duration = Duration::from_millis(100);

/// Why a session, lock or election call failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The session expired or was closed: everything it held is released.
    #[error("session {0} is lost (it expired or was closed); open a new one")]
    SessionLost(SessionId),
    /// The cluster refused the request as it stands.
    #[error("refused: {0}")]
    Refused(CoordRefusal),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

struct SessionInner {
    client: Client,
    id: SessionId,
    ttl: Duration,
    lost_tx: watch::Sender<bool>,
    closed: AtomicBool,
    keeper: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A session (a lease): open while the SDK renews it. Cheap to clone. Dropping the last clone
/// stops the renewals; [`Session::close`] ends it at once.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.lock().expect("keeper lock").take() {
            keeper.abort();
        }
    }
}

impl Session {
    /// Opens a session with `ttl` (at least three of the cluster's election timeouts) and keeps
    /// it alive in the background.
    pub async fn open(client: &Client, ttl: Duration) -> Result<Self, CoordError> {
        let id = SessionId(new_batch_id().0);
        let request = ClientRequest::OpenSession {
            session: id,
            ttl_ms: ttl.as_millis() as u64,
            owner: String::new(),
        };
        let deadline = Instant::now() + client.retry_timeout();
        // The TTL runs from the attempt that opened the session (an open retried across a
        // leader change may take longer than the TTL).
        let (ttl, sent) = match client
            .leader_call_timed(&request, deadline, Patience::Normal)
            .await?
        {
            (ClientResponse::SessionOpened { ttl_ms }, sent) => {
                (Duration::from_millis(ttl_ms), sent)
            }
            (other, _) => return Err(unexpected(other)),
        };
        let (lost_tx, _) = watch::channel(false);
        let inner = Arc::new(SessionInner {
            client: client.clone(),
            id,
            ttl,
            lost_tx,
            closed: AtomicBool::new(false),
            keeper: std::sync::Mutex::new(None),
        });
        let keeper = tokio::spawn(keep_alive(Arc::downgrade(&inner), sent));
        *inner.keeper.lock().expect("keeper lock") = Some(keeper);
        Ok(Self { inner })
    }

    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// Whether the session is known lost (or closed).
    pub fn is_lost(&self) -> bool {
        *self.inner.lost_tx.borrow()
    }

    /// Resolves when the session is lost: the cluster expired it, or no renewal was answered for
    /// a TTL. Whatever it held is then released (or about to be).
    pub async fn lost(&self) {
        let mut lost = self.inner.lost_tx.subscribe();
        let _ = lost.wait_for(|lost| *lost).await;
    }

    /// Ends the session: its locks are released and its elections resigned, without lock-delay.
    pub async fn close(&self) -> Result<(), CoordError> {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Some(keeper) = self.inner.keeper.lock().expect("keeper lock").take() {
            keeper.abort();
        }
        let request = ClientRequest::CloseSession {
            session: self.inner.id,
        };
        let result = self.call(&request, None).await;
        self.inner.lost_tx.send_replace(true);
        match result? {
            ClientResponse::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Waits for lock `name` (FIFO among waiters) and returns it with its fencing token.
    pub async fn lock(&self, name: &str) -> Result<LockGuard, CoordError> {
        self.lock_with_delay(name, Duration::ZERO).await
    }

    /// [`Session::lock`] with a lock-delay: if this session expires while holding the lock, the
    /// lock stays ungranted for `delay` (at most a minute), for resources that cannot check
    /// tokens.
    pub async fn lock_with_delay(
        &self,
        name: &str,
        delay: Duration,
    ) -> Result<LockGuard, CoordError> {
        let token = self
            .acquire(MutexKind::Lock, name, Vec::new(), delay)
            .await?;
        Ok(LockGuard {
            session: self.clone(),
            name: name.to_string(),
            token,
        })
    }

    /// Campaigns in election `name` with `value`; resolves when elected, with the epoch.
    pub async fn campaign(&self, name: &str, value: &[u8]) -> Result<Leadership, CoordError> {
        let epoch = self
            .acquire(MutexKind::Election, name, value.to_vec(), Duration::ZERO)
            .await?;
        Ok(Leadership {
            session: self.clone(),
            name: name.to_string(),
            epoch,
        })
    }

    async fn acquire(
        &self,
        kind: MutexKind,
        name: &str,
        value: Vec<u8>,
        delay: Duration,
    ) -> Result<u64, CoordError> {
        let request = ClientRequest::Acquire {
            kind,
            name: name.to_string(),
            session: self.inner.id,
            value,
            lock_delay_ms: delay.as_millis() as u64,
        };
        let lost = self.lost();
        tokio::pin!(lost);
        loop {
            let call = self.call(&request, Some(WAIT_POLL));
            let response = tokio::select! {
                response = call => response,
                () = &mut lost => return Err(CoordError::SessionLost(self.inner.id)),
            };
            match response {
                Ok(ClientResponse::Held { token }) => return Ok(token),
                // The waiting acquire was answered for a newer copy of itself: ask again.
                Ok(ClientResponse::Released { held: false }) => continue,
                Ok(other) => return Err(unexpected(other)),
                Err(CoordError::Query(QueryError::Unavailable { .. })) if !self.is_lost() => {
                    continue;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn release(&self, kind: MutexKind, name: &str) -> Result<bool, CoordError> {
        let request = ClientRequest::Release {
            kind,
            name: name.to_string(),
            session: self.inner.id,
        };
        match self.call(&request, None).await? {
            ClientResponse::Released { held } => Ok(held),
            other => Err(unexpected(other)),
        }
    }

    /// One call at the leader; a lost session and refusals become errors.
    async fn call(
        &self,
        request: &ClientRequest,
        wait: Option<Duration>,
    ) -> Result<ClientResponse, CoordError> {
        let client = &self.inner.client;
        let deadline = Instant::now() + client.retry_timeout();
        match client
            .leader_call(
                request,
                deadline,
                wait.map_or(Patience::Normal, Patience::Wait),
            )
            .await?
        {
            ClientResponse::SessionGone { session } => {
                self.inner.lost_tx.send_replace(true);
                Err(CoordError::SessionLost(session))
            }
            ClientResponse::CoordRefused(refusal) => Err(CoordError::Refused(refusal)),
            response => Ok(response),
        }
    }
}

/// Renews the session every third of its TTL until it is lost or dropped. Declares it lost when
/// the cluster says so, or when a TTL has passed since the send of the last answered renewal.
async fn keep_alive(session: std::sync::Weak<SessionInner>, mut acked_send: Instant) {
    loop {
        let Some(inner) = session.upgrade() else {
            return;
        };
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let ttl = inner.ttl;
        let local_deadline = acked_send + ttl;
        if Instant::now() >= local_deadline {
            inner.lost_tx.send_replace(true);
            return;
        }
        let request = ClientRequest::KeepAlive { session: inner.id };
        let sent = Instant::now();
        let client = inner.client.clone();
        drop(inner);
        // Short attempts: a dead leader must cost a fraction of the TTL, not a request timeout.
        let attempt = (ttl / 6).max(KEEPALIVE_ATTEMPT_MIN);
        let answer = client
            .leader_call(&request, local_deadline, Patience::Short(attempt))
            .await;
        let Some(inner) = session.upgrade() else {
            return;
        };
        match answer {
            Ok(ClientResponse::SessionRenewed) => {
                acked_send = sent;
                let next = sent + ttl / 3;
                tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
            }
            Ok(ClientResponse::SessionGone { .. }) => {
                inner.lost_tx.send_replace(true);
                return;
            }
            // Unavailable until the local deadline (or an odd answer): try again shortly; the
            // deadline check above declares the session lost when its time is up.
            _ => tokio::time::sleep(KEEPALIVE_RETRY).await,
        }
    }
}

/// A held lock. Dropping it does not release it (the session's end does); call
/// [`LockGuard::release`].
pub struct LockGuard {
    session: Session,
    name: String,
    token: u64,
}

impl LockGuard {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token: strictly larger than every earlier grant's of this lock.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The session holding the lock.
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The precondition that fences a batch on this grant.
    pub fn precondition(&self) -> Precondition {
        Precondition::LockHeld {
            name: self.name.clone(),
            token: self.token,
        }
    }

    /// Submits `batch` fenced on this grant: it commits only if the lock is still held with
    /// this token when it applies; otherwise it is rejected with `RejectReason::Fenced`.
    pub async fn submit(&self, mut batch: Batch) -> Result<Committed, SubmitError> {
        batch.preconditions.push(self.precondition());
        self.session.inner.client.submit(batch).await
    }

    /// Releases the lock; the next waiter is granted it.
    pub async fn release(self) -> Result<(), CoordError> {
        self.session
            .release(MutexKind::Lock, &self.name)
            .await
            .map(|_| ())
    }
}

/// Leadership of an election, won by [`Session::campaign`].
pub struct Leadership {
    session: Session,
    name: String,
    epoch: u64,
}

impl Leadership {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The epoch: strictly larger than every earlier leader's of this election.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The precondition that fences a batch on this leadership.
    pub fn precondition(&self) -> Precondition {
        Precondition::Leader {
            election: self.name.clone(),
            epoch: self.epoch,
        }
    }

    /// Submits `batch` fenced on this leadership: a deposed leader's batch is rejected.
    pub async fn submit(&self, mut batch: Batch) -> Result<Committed, SubmitError> {
        batch.preconditions.push(self.precondition());
        self.session.inner.client.submit(batch).await
    }

    /// Publishes a new value (observers see it as a change at the same epoch).
    pub async fn proclaim(&self, value: &[u8]) -> Result<(), CoordError> {
        let request = ClientRequest::Proclaim {
            name: self.name.clone(),
            session: self.session.id(),
            epoch: self.epoch,
            value: value.to_vec(),
        };
        match self.session.call(&request, None).await? {
            ClientResponse::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Gives up leadership; the next campaigner is elected.
    pub async fn resign(self) -> Result<(), CoordError> {
        self.session
            .release(MutexKind::Election, &self.name)
            .await
            .map(|_| ())
    }
}

/// Leadership changes of an election, in order (see [`Client::observe`]).
pub struct Observer {
    client: Client,
    name: String,
    revision: u64,
    pending: std::collections::VecDeque<LeaderChange>,
    /// Whether changes were skipped because the cluster no longer remembered them.
    pub skipped: bool,
}

impl Observer {
    /// The next change; waits for one. The first call returns the current leader (if any).
    pub async fn next(&mut self) -> Result<LeaderChange, CoordError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                self.revision = change.revision;
                return Ok(change);
            }
            let request = ClientRequest::Observe {
                name: self.name.clone(),
                after_revision: self.revision,
            };
            let deadline = Instant::now() + self.client.retry_timeout();
            match self
                .client
                .leader_call(&request, deadline, Patience::Wait(WAIT_POLL))
                .await
            {
                Ok(ClientResponse::LeaderChanges { changes, gap }) => {
                    self.skipped |= gap;
                    if changes.is_empty() && self.revision == 0 {
                        // No leader and nothing remembered: report that once, then wait.
                        self.revision = 1;
                        return Ok(LeaderChange {
                            revision: 0,
                            leader: None,
                        });
                    }
                    self.pending.extend(changes);
                }
                Ok(other) => return Err(unexpected(other)),
                Err(QueryError::Unavailable { .. }) => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }
}

impl Client {
    /// Every leadership change of election `name` from now on, in order, starting with the
    /// current leader. Resumes across leader changes and reconnects.
    pub fn observe(&self, name: &str) -> Observer {
        Observer {
            client: self.clone(),
            name: name.to_string(),
            revision: 0,
            pending: Default::default(),
            skipped: false,
        }
    }

    /// The current leader of election `name` (epoch and value), read linearizably.
    pub async fn leader(&self, name: &str) -> Result<Option<(u64, Vec<u8>)>, CoordError> {
        let request = ClientRequest::Observe {
            name: name.to_string(),
            after_revision: 0,
        };
        let deadline = Instant::now() + self.retry_timeout();
        match self
            .leader_call(&request, deadline, Patience::Normal)
            .await?
        {
            ClientResponse::LeaderChanges { changes, .. } => {
                Ok(changes.last().and_then(|change| change.leader.clone()))
            }
            other => Err(unexpected(other)),
        }
    }

    /// Sessions, locks and elections, for operators.
    pub async fn coord_list(&self) -> Result<(Vec<SessionInfo>, Vec<MutexInfo>), CoordError> {
        let deadline = Instant::now() + self.retry_timeout();
        match self
            .leader_call(&ClientRequest::CoordList, deadline, Patience::Normal)
            .await?
        {
            ClientResponse::CoordList { sessions, mutexes } => Ok((sessions, mutexes)),
            other => Err(unexpected(other)),
        }
    }
}

/// For a resource outside Ordo that a lock guards: remembers the highest token seen per lock and
/// refuses any lower one, so a stale holder's late write is refused there too. Keep it (or its
/// high-water mark) in the same transaction as the resource's own writes.
#[derive(Clone, Debug, Default)]
pub struct FenceCheck {
    highest: std::collections::BTreeMap<String, u64>,
}

impl FenceCheck {
    /// Accepts `token` for `lock` if no higher token was accepted before, and remembers it.
    pub fn admit(&mut self, lock: &str, token: u64) -> Result<(), u64> {
        let highest = self.highest.entry(lock.to_string()).or_insert(0);
        if token < *highest {
            return Err(*highest);
        }
        *highest = token;
        Ok(())
    }
}

fn unexpected(response: ClientResponse) -> CoordError {
    match response {
        ClientResponse::CoordRefused(refusal) => CoordError::Refused(refusal),
        ClientResponse::SessionGone { session } => CoordError::SessionLost(session),
        other => CoordError::Unexpected(format!("{other:?}")),
    }
}
