//! Lock holders for fault runs, and the checker of what they recorded.
//!
//! [`Lockers::start`] runs holders that each open a session, take one lock ([`LOCK_NAME`]) and,
//! holding it, submit two batches fenced on its token to [`LOCK_TOPIC`], then release it. Now
//! and then a holder plays a paused process instead: it drops its session without closing it
//! (so its renewals stop), waits past the TTL, and then submits with its old token, which the
//! cluster must refuse as `Fenced` once the lock has moved. Every fenced submit is recorded as
//! an [`Operation`] of the run's history (so the batch checker covers it too), and every hold
//! with the moments it began and stopped being legitimate.
//!
//! [`check`] then looks for:
//!
//! - **token reused**: two grants acknowledged with one token;
//! - **overlap**: a grant acknowledged while an earlier holder still legitimately held the lock
//!   (it had not begun to release it, had not abandoned it, and its SDK had not reported the
//!   session lost); tokens are grant log indexes, so the earlier holder is the smaller token;
//! - **fence broken**: a batch fenced on token `t` committed at log index `i` although a grant
//!   with a token in `(t, i)` was acknowledged, i.e. the lock had moved before it applied.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ordo_core::rng::Prng;
use ordo_participant::{
    Batch, BatchId, Client, CommittedBatch, Message, Precondition, RejectReason, Session,
    SubmitError, new_batch_id,
};

use super::TestCluster;
use super::history::{Operation, client_preferring, seen_of};

/// The one lock the holders contend for.
pub const LOCK_NAME: &str = "fault-lock";
/// The topic of their fenced batches.
pub const LOCK_TOPIC: &str = "locked";
/// One hold in this many is abandoned, as by a paused process.
const ABANDON_ONE_IN: u64 = 5;
/// How long the SDK retries one call before it gives up.
const RETRY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an abandoned holder waits beyond its TTL before its stale submit: longer than the
/// leader's allowance for clock skew, so that the session has expired by then.
const STALE_AFTER_TTL: Duration = Duration::from_millis(1_500);

/// How a hold stopped being legitimate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The holder began to release it.
    Released,
    /// The SDK reported the session lost first.
    Lost,
    /// The holder dropped its session without closing it.
    Abandoned,
}

/// One grant, as its holder saw it.
#[derive(Clone, Debug)]
pub struct Hold {
    pub locker: usize,
    pub token: u64,
    /// When `lock` returned.
    pub acquired: Instant,
    /// When the hold stopped being legitimate, and how.
    pub ended: Instant,
    pub end: End,
}

/// What the holders recorded.
#[derive(Default)]
pub struct LockHistory {
    pub holds: Vec<Hold>,
    /// Every fenced submit, for the run's history.
    pub operations: Vec<Operation>,
    /// The token each fenced batch carried.
    pub tokens: BTreeMap<BatchId, u64>,
    /// How the stale submits (after abandoning) ended.
    pub stale: StaleSubmits,
}

/// How abandoned holders' late submits ended.
#[derive(Clone, Copy, Debug, Default)]
pub struct StaleSubmits {
    /// Refused as `Fenced`: what must happen once the lock has moved.
    pub fenced: u64,
    pub committed: u64,
    /// Any other error (unavailable, unknown, another rejection).
    pub other: u64,
}

impl LockHistory {
    pub fn summary(&self) -> String {
        let count = |end| self.holds.iter().filter(|h| h.end == end).count();
        format!(
            "{} grants ({} released, {} lost, {} abandoned); {} fenced submits; stale submits: \
             {} fenced, {} committed, {} otherwise ended",
            self.holds.len(),
            count(End::Released),
            count(End::Lost),
            count(End::Abandoned),
            self.operations.len(),
            self.stale.fenced,
            self.stale.committed,
            self.stale.other,
        )
    }
}

/// Running lock holders. See the module documentation.
pub struct Lockers {
    stop: Arc<AtomicBool>,
    grants: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<LockHistory>>,
}

impl Lockers {
    pub async fn start(cluster: &TestCluster, count: usize, ttl: Duration, seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let grants = Arc::new(AtomicU64::new(0));
        let mut random = Prng::new(seed);
        let mut tasks = Vec::new();
        for locker in 0..count {
            let client = client_preferring(cluster, locker, RETRY_TIMEOUT).await;
            let (stop, grants, random) = (stop.clone(), grants.clone(), random.fork());
            tasks.push(tokio::spawn(async move {
                hold_repeatedly(locker, client, ttl, random, stop, grants).await
            }));
        }
        Self {
            stop,
            grants,
            tasks,
        }
    }

    /// Grants acknowledged so far.
    pub fn grants(&self) -> u64 {
        self.grants.load(Ordering::SeqCst)
    }

    /// Waits until `more` grants beyond the current count are acknowledged.
    pub async fn wait_for_grants(&self, more: u64, timeout: Duration) {
        let target = self.grants() + more;
        let what = format!("{target} lock grants");
        super::wait_until(timeout, &what, async || {
            let grants = self.grants();
            if grants >= target {
                Ok(())
            } else {
                Err(format!("{grants} grants"))
            }
        })
        .await;
    }

    /// Stops the holders (each releases what it holds) and returns what they recorded.
    pub async fn finish(self, timeout: Duration) -> LockHistory {
        self.stop.store(true, Ordering::SeqCst);
        let mut history = LockHistory::default();
        for task in self.tasks {
            let recorded = tokio::time::timeout(timeout, task)
                .await
                .unwrap_or_else(|_| panic!("a lock holder did not stop within {timeout:?}"))
                .expect("a lock holder task");
            history.holds.extend(recorded.holds);
            history.operations.extend(recorded.operations);
            history.tokens.extend(recorded.tokens);
            history.stale.fenced += recorded.stale.fenced;
            history.stale.committed += recorded.stale.committed;
            history.stale.other += recorded.stale.other;
        }
        history
    }
}

/// One holder: sessions, one after another, each holding the lock repeatedly until it is lost
/// or abandoned.
async fn hold_repeatedly(
    locker: usize,
    client: Client,
    ttl: Duration,
    mut random: Prng,
    stop: Arc<AtomicBool>,
    grants: Arc<AtomicU64>,
) -> LockHistory {
    let mut history = LockHistory::default();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let session = match Session::open(&client, ttl).await {
            Ok(session) => session,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // When the SDK reports the session lost. The watcher holds a clone of the session;
        // it is stopped before the session is abandoned, or the renewals would go on.
        let lost_at = Arc::new(Mutex::new(None::<Instant>));
        let watcher = {
            let (session, lost_at) = (session.clone(), lost_at.clone());
            tokio::spawn(async move {
                session.lost().await;
                *lost_at.lock().expect("lost_at") = Some(Instant::now());
            })
        };
        // When a hold stopped being legitimate: at `at`, as `end`, unless the SDK reported the
        // session lost before.
        let ended_by = |at: Instant, end: End| match *lost_at.lock().expect("lost_at") {
            Some(lost) if lost < at => (lost, End::Lost),
            _ => (at, end),
        };
        let mut abandoned = None;
        while !stop.load(Ordering::SeqCst) && !session.is_lost() {
            let guard = match session.lock(LOCK_NAME).await {
                Ok(guard) => guard,
                Err(_) if session.is_lost() => break,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acquired = Instant::now();
            let token = guard.token();
            grants.fetch_add(1, Ordering::SeqCst);
            if !stop.load(Ordering::SeqCst) && random.below(ABANDON_ONE_IN) == 0 {
                abandoned = Some((guard, acquired));
                break;
            }
            for step in ["enter", "exit"] {
                let batch = fenced_batch(locker, n, step, token);
                n += 1;
                let fenced = record(&client, batch, token, &mut history).await;
                if fenced.is_err() && session.is_lost() {
                    break;
                }
            }
            let (ended, end) = ended_by(Instant::now(), End::Released);
            let _ = guard.release().await;
            history.holds.push(Hold {
                locker,
                token,
                acquired,
                ended,
                end,
            });
            tokio::time::sleep(Duration::from_millis(random.range_inclusive(0, 20))).await;
        }
        watcher.abort();
        let _ = watcher.await;
        let Some((guard, acquired)) = abandoned else {
            if !session.is_lost() {
                let _ = session.close().await;
            }
            continue;
        };
        // A paused process: its renewals stop; it wakes after the TTL and writes.
        let token = guard.token();
        let (ended, end) = ended_by(Instant::now(), End::Abandoned);
        drop(guard);
        drop(session);
        history.holds.push(Hold {
            locker,
            token,
            acquired,
            ended,
            end,
        });
        tokio::time::sleep(ttl + STALE_AFTER_TTL).await;
        let batch = fenced_batch(locker, n, "stale", token);
        n += 1;
        match record(&client, batch, token, &mut history).await {
            Err(SubmitError::Rejected {
                reason: RejectReason::Fenced { .. },
            }) => history.stale.fenced += 1,
            Ok(_) => history.stale.committed += 1,
            Err(_) => history.stale.other += 1,
        }
    }
    history
}

fn fenced_batch(locker: usize, n: u64, step: &str, token: u64) -> Batch {
    let text = format!("locker {locker} #{n} {step} token {token}");
    Batch {
        id: new_batch_id(),
        messages: vec![Message::new(LOCK_TOPIC, Bytes::from(text))],
        preconditions: vec![Precondition::LockHeld {
            name: LOCK_NAME.to_string(),
            token,
        }],
    }
}

/// Submits a fenced batch and records it.
async fn record(
    client: &Client,
    batch: Batch,
    token: u64,
    history: &mut LockHistory,
) -> Result<ordo_participant::Committed, SubmitError> {
    let invoked = Instant::now();
    let result = client.submit(batch.clone()).await;
    history.tokens.insert(batch.id, token);
    history.operations.push(Operation {
        batch,
        invoked,
        completed: Instant::now(),
        seen: seen_of(&result),
        resolved: None,
    });
    result
}

/// Every violation of the lock's guarantees (empty when clean), given the batches one
/// subscriber applied. See the module documentation.
pub fn check(history: &LockHistory, applied: &[CommittedBatch]) -> Vec<String> {
    let mut violations = Vec::new();
    let mut holds = history.holds.clone();
    holds.sort_by_key(|hold| hold.token);
    for pair in holds.windows(2) {
        if pair[0].token == pair[1].token {
            violations.push(format!(
                "token reused: lockers {} and {} were both granted token {}",
                pair[0].locker, pair[1].locker, pair[0].token
            ));
        }
    }
    // Overlap: each hold against every later grant (the latest legitimate end so far).
    let mut latest: Option<&Hold> = None;
    for hold in &holds {
        if let Some(earlier) = latest
            && earlier.token < hold.token
            && hold.acquired < earlier.ended
        {
            violations.push(format!(
                "overlap: locker {} was granted token {} {:.3}s before locker {} stopped \
                 holding token {} ({:?})",
                hold.locker,
                hold.token,
                earlier.ended.duration_since(hold.acquired).as_secs_f64(),
                earlier.locker,
                earlier.token,
                earlier.end
            ));
        }
        if latest.is_none_or(|earlier| hold.ended > earlier.ended) {
            latest = Some(hold);
        }
    }
    // Fencing: no fenced batch applied after a later grant of its lock.
    let grants: Vec<u64> = holds.iter().map(|hold| hold.token).collect();
    for batch in applied {
        let Some(&token) = history.tokens.get(&batch.id) else {
            continue;
        };
        let later = grants.partition_point(|&grant| grant <= token);
        if let Some(&moved) = grants.get(later)
            && moved < batch.index
        {
            violations.push(format!(
                "fence broken: batch {} fenced on token {token} committed at index {} (seq {}), \
                 after the lock was granted again with token {moved}",
                batch.id, batch.index, batch.seq
            ));
        }
    }
    violations.truncate(20);
    violations
}

/// Plants each kind of violation in a small clean lock history and fails unless [`check`]
/// reports it (and reports nothing for the clean one).
pub fn self_test() {
    let start = Instant::now();
    let at = |millis: u64| start + Duration::from_millis(millis);
    let hold = |locker, token, from, to, end| Hold {
        locker,
        token,
        acquired: at(from),
        ended: at(to),
        end,
    };
    let fenced = |n: u8, token: u64, index: u64, history: &mut LockHistory| {
        let id = BatchId([n; 16]);
        history.tokens.insert(id, token);
        CommittedBatch {
            seq: u64::from(n),
            index,
            id,
            messages: vec![Message::new(LOCK_TOPIC, Bytes::from(vec![n]))],
        }
    };
    let mut clean = LockHistory {
        holds: vec![
            hold(0, 10, 0, 100, End::Released),
            hold(1, 20, 110, 150, End::Abandoned),
            hold(2, 30, 160, 300, End::Lost),
            hold(0, 40, 300, 400, End::Released),
        ],
        ..LockHistory::default()
    };
    let applied = vec![
        fenced(1, 10, 11, &mut clean),
        fenced(2, 10, 12, &mut clean),
        fenced(3, 20, 25, &mut clean),
        fenced(4, 30, 31, &mut clean),
        fenced(5, 40, 41, &mut clean),
    ];
    let found = check(&clean, &applied);
    assert!(found.is_empty(), "the clean lock history: {found:?}");

    let mut reused = LockHistory {
        holds: clean.holds.clone(),
        tokens: clean.tokens.clone(),
        ..LockHistory::default()
    };
    reused.holds[3].token = 30;
    let mut overlap = LockHistory {
        holds: clean.holds.clone(),
        tokens: clean.tokens.clone(),
        ..LockHistory::default()
    };
    overlap.holds[3].acquired = at(250);
    let mut broken = LockHistory {
        holds: clean.holds.clone(),
        tokens: clean.tokens.clone(),
        ..LockHistory::default()
    };
    let mut broken_applied = applied.clone();
    broken_applied.push(fenced(6, 20, 35, &mut broken));
    for (name, history, applied, expected) in [
        ("token reused", &reused, &applied, "token reused"),
        ("overlap", &overlap, &applied, "overlap"),
        ("fence broken", &broken, &broken_applied, "fence broken"),
    ] {
        let found = check(history, applied);
        assert!(
            found
                .iter()
                .any(|violation| violation.starts_with(expected)),
            "the lock checker missed a planted {name}: {found:?}"
        );
    }
}
