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

use ordo_common::{Entry, HardState, LogId, LogIndex};
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
    pending: VecDeque<Pending>,
    /// Reports not yet delivered: (deliver at, report).
    reports: VecDeque<(u64, Durable)>,
    /// The durable log's entry ids, index 1 first (for the checker, cheaper than decoding).
    pub durable_ids: Vec<LogId>,
    latency_ticks_max: u64,
    report_delay_ticks_max: u64,
}

impl Disk {
    pub fn new(latency_ticks_max: u64, report_delay_ticks_max: u64) -> Self {
        Self {
            media: MemDisk::new(),
            store: None,
            pending: VecDeque::new(),
            reports: VecDeque::new(),
            durable_ids: Vec::new(),
            latency_ticks_max,
            report_delay_ticks_max,
        }
    }

    /// Opens the store after a (re)start and reads what the node recovers from.
    pub fn open(&mut self) -> Result<Recovered, Violation> {
        let store = MemLogStore::open(&self.media, Retention::default())
            .map_err(|error| Violation(format!("the store does not reopen: {error}")))?;
        let state = store.store_state().map_err(storage_violation)?;
        let entries = store
            .entries(state.log.first_index, state.log.last_index() + 1, u64::MAX)
            .map_err(storage_violation)?;
        let stored = store.tables().map_err(storage_violation)?;
        let tables = recovered_tables(&state, stored)
            .map_err(|fault| Violation(format!("the stored state does not decode: {fault}")))?;
        self.store = Some(store);
        Ok(Recovered {
            hard_state: state.hard_state,
            entries,
            applied: state.progress.applied.map_or(0, |applied| applied.index),
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
        Durable {
            write,
            last_log_id: self.durable_ids.last().copied(),
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
        Ok(())
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
        self.store = None;
        Ok(())
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
