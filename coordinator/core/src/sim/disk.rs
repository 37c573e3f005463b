//! The simulated disk: what a node has made durable, and writes still in progress. A crash
//! keeps an arbitrary prefix of the writes in progress (a write can land without its
//! completion being reported) and loses the rest.

use std::collections::VecDeque;

use ordo_common::{Entry, HardState, LogId};

use crate::rng::Prng;

#[derive(Debug)]
struct PendingWrite {
    entries: Vec<Entry>,
    complete_at: u64,
}

#[derive(Debug, Default)]
pub struct Disk {
    pub hard_state: HardState,
    /// The durable log, from index 1.
    pub log: Vec<Entry>,
    pending: VecDeque<PendingWrite>,
    /// How long a write may take, in ticks (0 = completes at the next step).
    pub latency_ticks_max: u64,
}

impl Disk {
    pub fn new(latency_ticks_max: u64) -> Self {
        Self {
            latency_ticks_max,
            ..Self::default()
        }
    }

    /// Queues an entries write. Writes complete in the order they were queued.
    pub fn write_entries(&mut self, now: u64, entries: Vec<Entry>, rng: &mut Prng) {
        let earliest = self.pending.back().map_or(now, |write| write.complete_at);
        let complete_at = earliest.max(now + rng.range_inclusive(0, self.latency_ticks_max));
        self.pending.push_back(PendingWrite {
            entries,
            complete_at,
        });
    }

    /// Completes every write due by `now`; returns the last entry id of each, to report.
    pub fn complete_due(&mut self, now: u64) -> Vec<LogId> {
        let mut completed = Vec::new();
        while self
            .pending
            .front()
            .is_some_and(|write| write.complete_at <= now)
        {
            let write = self.pending.pop_front().expect("peeked");
            if let Some(last) = write.entries.last() {
                completed.push(last.log_id());
            }
            self.land(write.entries);
        }
        completed
    }

    fn land(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        self.log.truncate(first.index as usize - 1);
        assert_eq!(
            self.log.len() as u64 + 1,
            first.index,
            "a write left a hole in the log"
        );
        self.log.extend(entries);
    }

    /// A crash: an arbitrary prefix of the writes in progress lands, the rest are lost.
    pub fn crash(&mut self, rng: &mut Prng) {
        let landed = rng.below(self.pending.len() as u64 + 1) as usize;
        let writes: Vec<_> = self.pending.drain(..).collect();
        for write in writes.into_iter().take(landed) {
            self.land(write.entries);
        }
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
