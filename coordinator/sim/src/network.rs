//! The simulated network: loss, duplication, delay (and so reordering), and partitions, all
//! drawn from the simulation's seeded generator.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use ordo_common::NodeId;

use ordo_core::Message;
use ordo_core::rng::Prng;

/// Fault rates for the network, drawn per seed.
#[derive(Clone, Debug, Default)]
pub struct NetworkFaults {
    pub drop_percent: u64,
    pub duplicate_percent: u64,
    /// Each message takes 1..=delay_ticks_max ticks.
    pub delay_ticks_max: u64,
    /// Chance that a message is held back much longer than usual (strong reordering).
    pub long_delay_percent: u64,
    /// Keep each link's messages in send order (like one ordered stream per peer).
    pub fifo: bool,
}

/// A decision by a test about a message being sent (made once per message): true drops it.
pub type MessageFilter = Box<dyn Fn(NodeId, NodeId, &Message) -> bool>;

#[derive(Debug)]
struct InFlight {
    deliver_at: u64,
    order: u64,
    from: NodeId,
    to: NodeId,
    message: Message,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_at, self.order) == (other.deliver_at, other.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deliver_at, self.order).cmp(&(other.deliver_at, other.order))
    }
}

pub struct Network {
    pub faults: NetworkFaults,
    rng: Prng,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    /// Directed links that are cut: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    filter: Option<MessageFilter>,
    link_last_delivery: std::collections::BTreeMap<(NodeId, NodeId), u64>,
    sequence: u64,
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
}

impl Network {
    pub fn new(faults: NetworkFaults, rng: Prng) -> Self {
        Self {
            faults,
            rng,
            in_flight: BinaryHeap::new(),
            cut: BTreeSet::new(),
            filter: None,
            link_last_delivery: std::collections::BTreeMap::new(),
            sequence: 0,
            sent: 0,
            delivered: 0,
            dropped: 0,
        }
    }

    pub fn send(&mut self, now: u64, from: NodeId, to: NodeId, message: Message) {
        self.sent += 1;
        if self.blocked(from, to, &message) || self.rng.chance_percent(self.faults.drop_percent) {
            self.dropped += 1;
            return;
        }
        if self.rng.chance_percent(self.faults.duplicate_percent) {
            self.enqueue(now, from, to, message.clone());
        }
        self.enqueue(now, from, to, message);
    }

    fn enqueue(&mut self, now: u64, from: NodeId, to: NodeId, message: Message) {
        let mut delay = self
            .rng
            .range_inclusive(1, self.faults.delay_ticks_max.max(1));
        if self.rng.chance_percent(self.faults.long_delay_percent) {
            delay += self.rng.range_inclusive(5, 40);
        }
        // The random order key shuffles messages that arrive in the same tick; a FIFO network
        // keeps each link in send order instead.
        let order = if self.faults.fifo {
            let last = self.link_last_delivery.entry((from, to)).or_default();
            delay = delay.max(last.saturating_sub(now));
            *last = now + delay;
            self.sequence += 1;
            self.sequence
        } else {
            self.rng.next_u64()
        };
        self.in_flight.push(Reverse(InFlight {
            deliver_at: now + delay,
            order,
            from,
            to,
            message,
        }));
    }

    /// The next message due at or before `now`, skipping those a partition now blocks.
    pub fn next_due(&mut self, now: u64) -> Option<(NodeId, NodeId, Message)> {
        while self
            .in_flight
            .peek()
            .is_some_and(|Reverse(head)| head.deliver_at <= now)
        {
            let Reverse(head) = self.in_flight.pop().expect("peeked");
            // Partitions also swallow messages already on the wire; the filter decided at send.
            if self.cut.contains(&(head.from, head.to)) {
                self.dropped += 1;
                continue;
            }
            self.delivered += 1;
            return Some((head.from, head.to, head.message));
        }
        None
    }

    fn blocked(&self, from: NodeId, to: NodeId, message: &Message) -> bool {
        self.cut.contains(&(from, to))
            || self
                .filter
                .as_ref()
                .is_some_and(|filter| filter(from, to, message))
    }

    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    pub fn cut_both_ways(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.filter = None;
    }

    pub fn set_filter(&mut self, filter: Option<MessageFilter>) {
        self.filter = filter;
    }

    /// Removes the random faults (used by the liveness phase).
    pub fn calm(&mut self) {
        self.faults = NetworkFaults {
            delay_ticks_max: 1,
            fifo: true,
            ..NetworkFaults::default()
        };
    }
}
