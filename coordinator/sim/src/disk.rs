//! The simulated disk: the real in-memory store ([`MemLogStore`], with the rules and checked
//! records every store uses) behind a queue of writes in progress, and a queue of the storage
//! reports the node has yet to hear.
//!
//! - A write completes after a random latency, in the order it was asked for, and then lands in
//!   the store whole. A crash lands an arbitrary prefix of the writes in progress (a write can be
//!   durable without its report having arrived) and loses the rest.
//! - Reports reach the node late, several writes at once, and sometimes twice — everything the
//!   runtime's group-commit writer may do within its contract (in order, cumulative).

use std::collections::VecDeque;

use ordo_common::{EngineKind, Entry, HardState, LogId, LogIndex, NodeId, Term};
use ordo_core::rng::Prng;
use ordo_node::storage::{LogRead, LogStore, MemDisk, MemLogStore, Retention, WriteBatch};
use ordo_node::{Durable, Recovered, WriteId, recovered_tables};

use crate::checker::Violation;

#[derive(Debug)]
struct Pending {
    write: WriteId,
    batch: WriteBatch,
    complete_at: u64,
}

#[derive(Debug)]
pub struct Disk {
    /// What survives a crash.
    media: MemDisk,
    /// The open store; `None` while the node is down.
    store: Option<MemLogStore>,
    /// The consensus engine whose log the disk holds.
    engine: EngineKind,
    pending: VecDeque<Pending>,
    /// Reports not yet delivered: (deliver at, report).
    reports: VecDeque<(u64, Durable)>,
    /// The durable log's entry ids, index 1 first (for the checker, cheaper than decoding);
    /// entries purged by retention stay here, as the committed history the node had.
    pub durable_ids: Vec<LogId>,
    installed: Vec<LogId>,
    /// Reads in progress: (completes at, for follower, low, high).
    reads: VecDeque<(u64, NodeId, LogIndex, LogIndex)>,
    latency_ticks_max: u64,
    report_delay_ticks_max: u64,
}

impl Disk {
    pub fn new(latency_ticks_max: u64, report_delay_ticks_max: u64, engine: EngineKind) -> Self {
        Self {
            engine,
            media: MemDisk::new(),
            store: None,
            pending: VecDeque::new(),
            reports: VecDeque::new(),
            durable_ids: Vec::new(),
            installed: Vec::new(),
            reads: VecDeque::new(),
            latency_ticks_max,
            report_delay_ticks_max,
        }
    }

    /// A new, empty disk with this one's timing: what a node restarts on after its disk died.
    pub fn replacement(&self) -> Self {
        Self::new(
            self.latency_ticks_max,
            self.report_delay_ticks_max,
            self.engine,
        )
    }

    /// Opens the store after a (re)start and reads what the node recovers from: the state
    /// as of the applied entry, and the entries after it.
    pub fn open(&mut self, retention: Retention) -> Result<Recovered, Violation> {
        let mut store = MemLogStore::open(&self.media, retention)
            .map_err(|error| Violation(format!("the store does not reopen: {error}")))?;
        store
            .set_engine(self.engine)
            .map_err(|error| Violation(format!("the store refuses its engine: {error}")))?;
        let state = store.store_state().map_err(storage_violation)?;
        let applied = state.progress.applied.unwrap_or_default();
        let entries = store
            .entries(applied.index + 1, state.log.last_index() + 1, u64::MAX)
            .map_err(storage_violation)?;
        let stored = store.tables().map_err(storage_violation)?;
        let tables = recovered_tables(&state, stored)
            .map_err(|fault| Violation(format!("the stored state does not decode: {fault}")))?;
        self.store = Some(store);
        Ok(Recovered {
            hard_state: state.hard_state,
            applied,
            entries,
            first_index: state.log.first_index,
            tables,
        })
    }

    /// The open store (to read what is durable).
    pub fn store(&self) -> &MemLogStore {
        self.store
            .as_ref()
            .expect("the disk is open while its node is up")
    }

    pub fn hard_state(&self) -> HardState {
        self.store()
            .store_state()
            .map_or_else(|_| HardState::default(), |s| s.hard_state)
    }

    /// Queues a write; a `sync` one lands at once, with everything before it, and its report
    /// is returned for the node to hear before its next output.
    pub fn write(
        &mut self,
        now: u64,
        write: WriteId,
        batch: WriteBatch,
        sync: bool,
        rng: &mut Prng,
    ) -> Result<Option<Durable>, Violation> {
        let earliest = self
            .pending
            .back()
            .map_or(now, |pending| pending.complete_at);
        let complete_at = earliest.max(now + rng.range_inclusive(0, self.latency_ticks_max));
        self.pending.push_back(Pending {
            write,
            batch,
            complete_at,
        });
        if !sync {
            return Ok(None);
        }
        while let Some(pending) = self.pending.pop_front() {
            self.land(pending.batch)?;
        }
        self.reports.clear();
        Ok(Some(self.report(write)))
    }

    /// Lands every write due by `now` and queues their reports.
    pub fn complete_due(&mut self, now: u64, rng: &mut Prng) -> Result<(), Violation> {
        while self
            .pending
            .front()
            .is_some_and(|pending| pending.complete_at <= now)
        {
            let pending = self.pending.pop_front().expect("peeked");
            self.land(pending.batch)?;
            let report = self.report(pending.write);
            let earliest = self.reports.back().map_or(now, |(at, _)| *at);
            let at = earliest.max(now + rng.range_inclusive(0, self.report_delay_ticks_max));
            self.reports.push_back((at, report));
            if rng.chance_percent(5) {
                self.reports.push_back((at, report));
            }
        }
        Ok(())
    }

    /// The report to deliver now, if any: the latest of those due (earlier ones are folded
    /// into it, as one group commit covers many writes).
    pub fn due_report(&mut self, now: u64, rng: &mut Prng) -> Option<Durable> {
        let mut latest = None;
        while self.reports.front().is_some_and(|(at, _)| *at <= now) {
            latest = self.reports.pop_front().map(|(_, report)| report);
            if rng.chance_percent(50) {
                break;
            }
        }
        latest
    }

    fn report(&self, write: WriteId) -> Durable {
        let log = self.store().log_state().unwrap_or_default();
        Durable {
            write,
            last_log_id: log.last_log_id,
            first_index: log.first_index,
        }
    }

    fn land(&mut self, batch: WriteBatch) -> Result<(), Violation> {
        let store = self.store.as_mut().expect("open");
        store.write(&batch).map_err(|error| {
            Violation(format!(
                "the node asked for a write the store refuses: {error}"
            ))
        })?;
        if let Some(first) = batch.entries.first() {
            self.durable_ids.truncate(first.index as usize - 1);
            self.durable_ids
                .extend(batch.entries.iter().map(Entry::log_id));
        }
        if let Some(install) = &batch.install {
            self.installed.push(install.last_included);
        }
        Ok(())
    }

    /// Snapshots installed since the last call (the cluster rewrites `durable_ids` for them).
    pub fn take_installed(&mut self) -> Vec<LogId> {
        std::mem::take(&mut self.installed)
    }

    /// Queues a read of entries `[low, high)` for follower `to`, done when it completes (so that
    /// a purge in between shows).
    pub fn read(&mut self, now: u64, to: NodeId, low: LogIndex, high: LogIndex, rng: &mut Prng) {
        let complete_at = now + rng.range_inclusive(0, self.latency_ticks_max);
        self.reads.push_back((complete_at, to, low, high));
    }

    /// Completes one due read: the entries, or the first index when they were purged.
    #[allow(clippy::type_complexity)]
    pub fn due_read(
        &mut self,
        now: u64,
        bytes_max: u64,
    ) -> Option<(NodeId, LogIndex, Result<(Term, Vec<Entry>), LogIndex>)> {
        let position = self.reads.iter().position(|(at, ..)| *at <= now)?;
        let (_, to, low, high) = self.reads.remove(position).expect("found");
        let store = self.store();
        let read = (|| {
            let term = store.term_at(low - 1)?;
            let entries = store.entries(low, high, bytes_max)?;
            Ok::<_, ordo_node::storage::StorageError>((term, entries))
        })();
        let first = store.log_state().map_or(1, |log| log.first_index);
        Some((to, low, read.map_err(|_| first)))
    }

    /// A crash: an arbitrary prefix of the writes in progress lands, the rest are lost, and so
    /// is every report not yet delivered.
    pub fn crash(&mut self, rng: &mut Prng) -> Result<(), Violation> {
        let landed = rng.below(self.pending.len() as u64 + 1) as usize;
        let writes: Vec<_> = self.pending.drain(..).collect();
        for pending in writes.into_iter().take(landed) {
            self.land(pending.batch)?;
        }
        self.reports.clear();
        self.reads.clear();
        self.store = None;
        Ok(())
    }

    /// The index of the last durable log entry.
    pub fn last_index(&self) -> LogIndex {
        self.store()
            .store_state()
            .map_or(0, |state| state.log.last_index())
    }

    /// The index of the durable apply progress.
    pub fn applied_index(&self) -> LogIndex {
        self.store()
            .store_state()
            .ok()
            .and_then(|state| state.progress.applied)
            .map_or(0, |applied| applied.index)
    }
}

fn storage_violation(error: ordo_node::storage::StorageError) -> Violation {
    Violation(format!("the store fails a read: {error}"))
}
