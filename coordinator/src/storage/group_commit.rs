//! Group commit: one writer thread owns the store and turns every request pending when it is
//! free into one transaction, so that one fsync makes many requests durable.
//!
//! # Calling order
//!
//! 1. [`GroupCommitWriter::start`] moves a store onto a new thread, with a sink for its reports.
//! 2. Callers [`submit`](GroupCommitWriter::submit) [`WriteBatch`]es. Each gets a
//!    [`RequestId`], increasing in submission order; requests take effect strictly in that order.
//! 3. The thread drains the queue, checks each request against the state the earlier requests
//!    leave (with the same rules the store applies), merges the valid ones (later suffix
//!    replacement wins, the last hard state wins, table updates accumulate), writes the merged
//!    batch in one transaction and then calls the sink with [`WriterEvent::Durable`] for the
//!    whole group. A group of state writes alone first waits up to [`STATE_WRITE_LINGER`] for
//!    another request to share its fsync. A request that breaks the store's rules is refused alone
//!    ([`WriterEvent::Refused`]) and changes nothing; the requests around it still go through.
//! 4. After a fatal error ([`WriterEvent::Failed`]) the thread stops: no request that was not
//!    reported durable is durable, and the node must restart.
//! 5. [`close`](GroupCommitWriter::close) writes everything already submitted, stops the thread
//!    and hands the store back; dropping the writer does the same and drops the store.
//!
//! The sink runs on the writer thread: it must be quick, and if it blocks (say, on a full
//! bounded channel) it holds up the writer, which is the back-pressure we want. Reads go
//! through [`reader`](GroupCommitWriter::reader), concurrently with writing; they see committed
//! data, possibly a moment before its fsync ends (see [`LogRead`](ordo_node::storage::LogRead)).

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ordo_common::{HardState, LogId, LogIndex, Term};

use ordo_node::storage::rules::plan_write;
use ordo_node::storage::{LogRead, LogStore, Result, StorageError, StoreState, WriteBatch};

/// Most requests waiting for the writer. A submitter blocks (or `try_submit` answers `Full`)
/// beyond it.
pub const WRITE_QUEUE_REQUESTS_MAX: usize = 4096;

/// Most bytes (see [`WriteBatch::queued_bytes`]) waiting for the writer or being written. A
/// single request larger than this is still accepted when the queue is empty.
pub const WRITE_QUEUE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Most requests merged into one transaction.
pub const GROUP_REQUESTS_MAX: usize = WRITE_QUEUE_REQUESTS_MAX;

/// Most bytes merged into one transaction; a single larger request makes a group of its own.
pub const GROUP_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Longest a group of state writes alone (an apply's progress and table changes: no entries, no
/// term or vote, no install) waits for another request to share its fsync. Under load the next
/// append arrives well within it, so a node pays one fsync per round instead of two; on an idle
/// node it only delays when subscribers may read the newly applied seqs. Nobody waits for a
/// state write to answer a client (the entry was durable on a majority before it applied).
pub const STATE_WRITE_LINGER: Duration = Duration::from_millis(1);

const _: () = assert!(GROUP_BYTES_MAX <= WRITE_QUEUE_BYTES_MAX);
const _: () = assert!(GROUP_REQUESTS_MAX <= WRITE_QUEUE_REQUESTS_MAX);

/// A request's place in submission order, starting at 1.
pub type RequestId = u64;

/// What the writer tells the sink.
#[derive(Debug)]
pub enum WriterEvent {
    /// These requests are durable, all of them.
    Durable(DurableReport),
    /// These requests broke the store's rules and changed nothing. The writer goes on.
    Refused {
        requests: RangeInclusive<RequestId>,
        error: StorageError,
    },
    /// The file system is full: these requests are not durable yet. The writer keeps trying
    /// them (releasing the store's reserve and reopening it, then waiting for space) and
    /// reports them `Durable` once they are; nothing after them is written before.
    NoSpace {
        requests: RangeInclusive<RequestId>,
        error: StorageError,
    },
    /// Writing failed fatally; these requests, and any submitted after them, are not durable.
    /// The writer has stopped.
    Failed {
        requests: RangeInclusive<RequestId>,
        error: StorageError,
    },
}

/// One group's outcome: everything in `requests` is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableReport {
    pub requests: RangeInclusive<RequestId>,
    /// The log's last entry after the group; entries up to it are durable.
    pub last_log_id: Option<LogId>,
    /// The hard state the group saved, if any request in it carried one.
    pub hard_state: Option<HardState>,
    /// The log's first index after the group (retention may have purged below it).
    pub first_index: LogIndex,
}

/// Where the writer sends its events.
pub type Sink = Box<dyn FnMut(WriterEvent) + Send>;

/// Why [`GroupCommitWriter::try_submit`] did not take a batch; the batch comes back.
#[derive(Debug)]
pub enum TrySubmitError {
    /// The queue is at one of its limits, or another submitter holds it; try again later.
    Full(Box<WriteBatch>),
    /// The writer has stopped.
    Stopped(Box<WriteBatch>),
}

/// Owns a [`LogStore`] on a dedicated thread and commits requests in groups. See the module
/// documentation for the calling order.
pub struct GroupCommitWriter<S: LogStore> {
    submitter: Mutex<Submitter>,
    budget: Arc<QueueBudget>,
    /// Set by `close`: a writer waiting for disk space gives up instead of waiting on.
    closing: Arc<AtomicBool>,
    reader: S::Reader,
    thread: Option<JoinHandle<S>>,
}

struct Submitter {
    next_request: RequestId,
    sender: Option<SyncSender<Request>>,
}

struct Request {
    id: RequestId,
    batch: WriteBatch,
    bytes: u64,
}

impl<S: LogStore> GroupCommitWriter<S> {
    /// Moves `store` onto a new writer thread that reports to `sink`.
    pub fn start(store: S, sink: impl FnMut(WriterEvent) + Send + 'static) -> Result<Self> {
        Self::start_lingering(store, STATE_WRITE_LINGER, sink)
    }

    /// [`start`](Self::start), with state writes lingering up to `linger` for company.
    pub fn start_lingering(
        store: S,
        linger: Duration,
        sink: impl FnMut(WriterEvent) + Send + 'static,
    ) -> Result<Self> {
        let (sender, receiver) = sync_channel(WRITE_QUEUE_REQUESTS_MAX);
        let budget = Arc::new(QueueBudget::default());
        let reader = store.reader();
        let thread_budget = budget.clone();
        let closing = Arc::new(AtomicBool::new(false));
        let thread_closing = closing.clone();
        let thread = std::thread::Builder::new()
            .name("ordo-log-writer".into())
            .spawn(move || {
                let mut writer = Writer {
                    store,
                    sink: Box::new(sink),
                    closing: thread_closing,
                };
                run(&mut writer, receiver, thread_budget, linger);
                writer.store
            })?;
        Ok(Self {
            submitter: Mutex::new(Submitter {
                next_request: 1,
                sender: Some(sender),
            }),
            budget,
            closing,
            reader,
            thread: Some(thread),
        })
    }

    /// Queues `batch`, blocking while the queue is full. Do not call it from an async task;
    /// use [`try_submit`](Self::try_submit) there.
    pub fn submit(&self, batch: WriteBatch) -> Result<RequestId> {
        let bytes = batch.queued_bytes();
        let mut submitter = self.lock_submitter();
        let id = submitter.next_request;
        let sender = submitter
            .sender
            .as_ref()
            .ok_or(StorageError::WriterStopped)?;
        self.budget.acquire(bytes)?;
        if sender.send(Request { id, batch, bytes }).is_err() {
            self.budget.release(bytes);
            return Err(StorageError::WriterStopped);
        }
        submitter.next_request += 1;
        Ok(id)
    }

    /// Queues `batch` if that needs no waiting.
    pub fn try_submit(&self, batch: WriteBatch) -> Result<RequestId, TrySubmitError> {
        let mut submitter = match self.submitter.try_lock() {
            Ok(submitter) => submitter,
            Err(TryLockError::WouldBlock) => return Err(TrySubmitError::Full(Box::new(batch))),
            Err(TryLockError::Poisoned(_)) => return Err(TrySubmitError::Stopped(Box::new(batch))),
        };
        let id = submitter.next_request;
        let Some(sender) = submitter.sender.as_ref() else {
            return Err(TrySubmitError::Stopped(Box::new(batch)));
        };
        let bytes = batch.queued_bytes();
        match self.budget.try_acquire(bytes) {
            Ok(true) => {}
            Ok(false) => return Err(TrySubmitError::Full(Box::new(batch))),
            Err(_) => return Err(TrySubmitError::Stopped(Box::new(batch))),
        }
        match sender.try_send(Request { id, batch, bytes }) {
            Ok(()) => {
                submitter.next_request += 1;
                Ok(id)
            }
            Err(TrySendError::Full(request)) => {
                self.budget.release(bytes);
                Err(TrySubmitError::Full(Box::new(request.batch)))
            }
            Err(TrySendError::Disconnected(request)) => {
                self.budget.release(bytes);
                Err(TrySubmitError::Stopped(Box::new(request.batch)))
            }
        }
    }

    /// A read handle on the store; it sees committed data (see [`LogRead`](ordo_node::storage::LogRead)).
    pub fn reader(&self) -> S::Reader {
        self.reader.clone()
    }

    /// Writes everything submitted so far, stops the thread and returns the store.
    pub fn close(mut self) -> Result<S> {
        match self.shutdown() {
            Some(Ok(store)) => Ok(store),
            _ => Err(StorageError::WriterStopped),
        }
    }

    fn shutdown(&mut self) -> Option<std::thread::Result<S>> {
        self.lock_submitter().sender = None;
        self.closing.store(true, Ordering::Relaxed);
        self.thread.take().map(JoinHandle::join)
    }

    fn lock_submitter(&self) -> MutexGuard<'_, Submitter> {
        // Nothing panics while holding this lock (sending on a channel does not), so a poisoned
        // lock would be a bug here; recovering the guard is still correct, as the state is a
        // counter and a sender.
        self.submitter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<S: LogStore> Drop for GroupCommitWriter<S> {
    fn drop(&mut self) {
        // The result is the store (dropped here) or the writer thread's panic, which has already
        // been printed; neither needs more handling.
        let _ = self.shutdown();
    }
}

/// What the writer thread owns.
struct Writer<S> {
    store: S,
    sink: Sink,
    closing: Arc<AtomicBool>,
}

/// The writer thread's loop: drain a group, commit it, report, until the queue closes or a
/// write fails fatally. A group of state writes alone lingers up to [`STATE_WRITE_LINGER`] for
/// a request to share its transaction.
fn run<S: LogStore>(
    writer: &mut Writer<S>,
    receiver: Receiver<Request>,
    budget: Arc<QueueBudget>,
    linger: Duration,
) {
    let mut carried: Option<Request> = None;
    loop {
        let first = match carried.take() {
            Some(request) => request,
            None => match receiver.recv() {
                Ok(request) => request,
                Err(_) => return,
            },
        };
        let mut group_bytes = first.bytes;
        let mut state_only = is_state_only(&first.batch);
        let mut requests = vec![first];
        let mut linger_until: Option<Instant> = None;
        while requests.len() < GROUP_REQUESTS_MAX {
            let next = match receiver.try_recv() {
                Err(TryRecvError::Empty) if state_only => {
                    let until = *linger_until.get_or_insert_with(|| {
                        let now = Instant::now();
                        now.checked_add(linger)
                            .unwrap_or(now + Duration::from_secs(3600))
                    });
                    match receiver.recv_timeout(until.saturating_duration_since(Instant::now())) {
                        Ok(request) => request,
                        Err(_) => break,
                    }
                }
                Ok(request) => request,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            };
            if group_bytes + next.bytes > GROUP_BYTES_MAX {
                carried = Some(next);
                break;
            }
            group_bytes += next.bytes;
            state_only &= is_state_only(&next.batch);
            requests.push(next);
        }
        let queued_bytes: u64 = requests.iter().map(|r| r.bytes).sum();
        let healthy = commit_group(writer, requests);
        budget.release(queued_bytes);
        if !healthy {
            budget.close();
            return;
        }
    }
}

/// Whether `batch` only records an apply: nothing in it is waited for by the consensus (no
/// entries, term, vote or install), so it may wait for company.
fn is_state_only(batch: &WriteBatch) -> bool {
    batch.entries.is_empty() && batch.hard_state.is_none() && batch.install.is_none()
}

/// The requests merged so far, and the state they leave.
struct Group {
    first_request: RequestId,
    last_request: RequestId,
    batch: WriteBatch,
}

/// Checks, merges and commits `requests`. Returns false after a fatal failure.
fn commit_group<S: LogStore>(writer: &mut Writer<S>, requests: Vec<Request>) -> bool {
    let last_drained = requests.last().map_or(0, |r| r.id);
    let mut group: Option<Group> = None;
    let mut state: Option<StoreState> = None;
    for request in requests {
        // An install is written alone: what came before it first, then it.
        let install = request.batch.install.is_some();
        if install && let Some(error) = flush(writer, group.take()) {
            return fail(&mut writer.sink, error.0..=last_drained, error.1);
        }
        let before = match state.take() {
            Some(state) => state,
            None => match writer.store.store_state() {
                Ok(state) => state,
                Err(error) => return fail(&mut writer.sink, request.id..=last_drained, error),
            },
        };
        let pending = group.as_ref().map(|g| &g.batch);
        let planned = plan_write(&before, &request.batch, &mut |index| {
            term_after(pending, &writer.store, index)
        });
        match planned {
            Ok(after) => {
                state = Some(after);
                merge(&mut group, request);
                if install && let Some(error) = flush(writer, group.take()) {
                    return fail(&mut writer.sink, error.0..=last_drained, error.1);
                }
            }
            Err(error) if !error.is_fatal() => {
                // The request changes nothing; earlier ones are written first, so that events
                // stay in request order.
                if let Some(error) = flush(writer, group.take()) {
                    return fail(&mut writer.sink, error.0..=last_drained, error.1);
                }
                (writer.sink)(WriterEvent::Refused {
                    requests: request.id..=request.id,
                    error,
                });
            }
            Err(error) => {
                let from = group.as_ref().map_or(request.id, |g| g.first_request);
                return fail(&mut writer.sink, from..=last_drained, error);
            }
        }
    }
    match flush(writer, group) {
        Some((first, error)) => fail(&mut writer.sink, first..=last_drained, error),
        None => true,
    }
}

fn fail(sink: &mut Sink, requests: RangeInclusive<RequestId>, error: StorageError) -> bool {
    sink(WriterEvent::Failed { requests, error });
    false
}

/// The term of `index` in the log as it will be once the `pending` group is written.
fn term_after<S: LogRead>(
    pending: Option<&WriteBatch>,
    store: &S,
    index: LogIndex,
) -> Result<Term> {
    let entries = pending.map_or(&[][..], |batch| &batch.entries[..]);
    match entries.first() {
        Some(first) if index >= first.index => entries
            .get((index - first.index) as usize)
            .map(|entry| entry.term)
            .ok_or(StorageError::OutOfRange {
                index,
                last_index: first.index + entries.len() as u64 - 1,
            }),
        _ => store.term_at(index),
    }
}

/// Adds a checked request to the group, as if it were written after everything in it.
fn merge(group: &mut Option<Group>, request: Request) {
    let Some(group) = group else {
        *group = Some(Group {
            first_request: request.id,
            last_request: request.id,
            batch: request.batch,
        });
        return;
    };
    group.last_request = request.id;
    let into = &mut group.batch;
    let next = request.batch;
    if next.hard_state.is_some() {
        into.hard_state = next.hard_state;
    }
    if let Some(start) = next.entries.first().map(|entry| entry.index) {
        match into.entries.first().map(|entry| entry.index) {
            Some(into_start) if start > into_start => {
                into.entries.truncate((start - into_start) as usize);
            }
            _ => into.entries.clear(),
        }
        into.entries.extend(next.entries);
    }
    if next.committed.is_some() {
        into.committed = next.committed;
    }
    if let Some(next_state) = next.state {
        match &mut into.state {
            Some(state) => {
                state.applied = next_state.applied;
                state.seqs.extend(next_state.seqs);
                state.registry.extend(next_state.registry);
                // A store applies a write's insertions before its evictions; an evicted id is
                // never registered again, so evictions from later requests may follow all
                // insertions.
                state.registry_evicted.extend(next_state.registry_evicted);
                state.offsets.extend(next_state.offsets);
                // Rows are written (or deleted) in order, so a later write of a key wins.
                state.coord.extend(next_state.coord);
                state.log_time_ms = next_state.log_time_ms;
                state.registry_floor_ms = next_state.registry_floor_ms;
            }
            None => into.state = Some(next_state),
        }
    }
}

/// Writes the group and reports it. Returns the group's first request and the error, if the
/// error was fatal. A full disk is not: the group is tried again until it is written or the
/// writer closes.
fn flush<S: LogStore>(
    writer: &mut Writer<S>,
    group: Option<Group>,
) -> Option<(RequestId, StorageError)> {
    let group = group?;
    let requests = group.first_request..=group.last_request;
    loop {
        let started = Instant::now();
        match writer.store.write(&group.batch) {
            Ok(log) => {
                metrics::histogram!("ordo_disk_write_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("ordo_group_commit_requests")
                    .record((group.last_request - group.first_request + 1) as f64);
                metrics::histogram!("ordo_group_commit_entries")
                    .record(group.batch.entries.len() as f64);
                (writer.sink)(WriterEvent::Durable(DurableReport {
                    requests,
                    last_log_id: log.last_log_id,
                    hard_state: group.batch.hard_state,
                    first_index: log.first_index,
                }));
                return None;
            }
            Err(error @ StorageError::NoSpace { .. }) => {
                (writer.sink)(WriterEvent::NoSpace {
                    requests: requests.clone(),
                    error,
                });
                if let Err(error) = wait_for_space(writer) {
                    return Some((group.first_request, error));
                }
            }
            Err(error) if !error.is_fatal() => {
                // Each request was checked before it was merged, so this is a bug in the merge or
                // in the store; refusing the group is still the safe answer.
                (writer.sink)(WriterEvent::Refused { requests, error });
                return None;
            }
            Err(error) => return Some((group.first_request, error)),
        }
    }
}

/// First wait after a write found the disk full; it doubles up to [`NO_SPACE_RETRY_MAX`].
pub const NO_SPACE_RETRY_MIN: Duration = Duration::from_millis(100);

/// Longest wait between attempts to write on a full disk.
pub const NO_SPACE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Makes the store writable again after `NoSpace`: recovers it at once (which frees its
/// reserve), then, while there is still no room, waits and tries again. Fails only when the
/// writer closes or the store fails in another way.
fn wait_for_space<S: LogStore>(writer: &mut Writer<S>) -> Result<()> {
    let mut wait = NO_SPACE_RETRY_MIN;
    loop {
        match writer.store.recover() {
            Ok(()) => return Ok(()),
            Err(StorageError::NoSpace { .. }) => {}
            Err(error) => return Err(error),
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if writer.closing.load(Ordering::Relaxed) {
                return Err(StorageError::WriterStopped);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        wait = (wait * 2).min(NO_SPACE_RETRY_MAX);
    }
}

/// Bounds the bytes queued for the writer.
#[derive(Default)]
struct QueueBudget {
    state: Mutex<BudgetState>,
    freed: Condvar,
}

#[derive(Default)]
struct BudgetState {
    bytes: u64,
    closed: bool,
}

impl QueueBudget {
    fn lock(&self) -> MutexGuard<'_, BudgetState> {
        // The state is two plain fields updated without panicking; a poisoned lock still holds
        // a consistent value.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fits(state: &BudgetState, bytes: u64) -> bool {
        state.bytes == 0 || state.bytes + bytes <= WRITE_QUEUE_BYTES_MAX
    }

    fn acquire(&self, bytes: u64) -> Result<()> {
        let mut state = self.lock();
        loop {
            if state.closed {
                return Err(StorageError::WriterStopped);
            }
            if Self::fits(&state, bytes) {
                state.bytes += bytes;
                return Ok(());
            }
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    fn try_acquire(&self, bytes: u64) -> Result<bool> {
        let mut state = self.lock();
        if state.closed {
            return Err(StorageError::WriterStopped);
        }
        let fits = Self::fits(&state, bytes);
        if fits {
            state.bytes += bytes;
        }
        Ok(fits)
    }

    fn release(&self, bytes: u64) {
        let mut state = self.lock();
        state.bytes = state.bytes.saturating_sub(bytes);
        self.freed.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.freed.notify_all();
    }
}
