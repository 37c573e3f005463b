//! Sessions, locks and elections against real 3-node clusters of `ordo serve` processes, driven
//! through the `ordo lock` / `ordo elect` / `ordo submit --fence` CLI as scripts would:
//!
//! - 8 processes each run `ordo lock L -- <increment a shared counter file>` 20 times: the counter
//!   ends at 160 (no two holders overlapped) and the tokens increase in file order;
//! - a holder stopped with SIGSTOP for longer than its TTL loses the lock, the next holder's token
//!   is larger, and a batch fenced on the stale token is rejected while one fenced on the new
//!   token commits; the stopped holder, resumed, exits saying its session was lost;
//! - kill -9 of the coordinator leader while a lock is held: the holder keeps its session and the
//!   lock (same token), a waiter is not granted it meanwhile, and gets it with a larger token
//!   when the holder releases;
//! - killing the elected `ordo elect` process makes another campaigner leader within about one
//!   TTL, and `ordo elect --observe` sees each epoch once, in increasing order;
//! - an observer between two calls when the last leader resigns still gets the "no leader" change;
//! - `ordo submit --epoch` commits only while its epoch leads, and `ordo lease list [--json]`
//!   shows each campaigner's session;
//! - `ordo lock NAME -- CMD` / `ordo elect NAME -- CMD` give CMD the token or epoch, release when
//!   it exits, and exit with its code.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{ClusterOptions, ORDO, TestCluster};

/// Time for a fresh cluster to start and elect a leader on a busy machine.
const STARTUP: Duration = Duration::from_secs(30);
/// The sessions' TTL in these tests (the fast clusters' election timeout is 300 ms; the shortest
/// TTL a node accepts is three of them).
const TTL: &str = "2s";
const TTL_DURATION: Duration = Duration::from_secs(2);

fn ordo(cluster: &TestCluster) -> Command {
    let mut command = Command::new(ORDO);
    command
        .env("ORDO_ENDPOINTS", cluster.endpoints())
        .env("ORDO_TLS_DIR", cluster.tls_dir())
        .env("RUST_LOG", "warn");
    command
}

/// A held `ordo lock` / `ordo elect` process: its stdin kept open (closing it releases), and the
/// lines it prints, read on a thread.
struct Holder {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Holder {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn ordo");
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    fn line(&self, timeout: Duration) -> Option<serde_json::Value> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line:?}")))
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on a child this test spawned and has not reaped.
        unsafe { libc::kill(self.pid(), signal) };
    }

    /// Closes stdin (the holder releases and exits) and waits for the exit.
    fn release(mut self, timeout: Duration) -> ExitStatus {
        drop(self.child.stdin.take());
        wait_exit(&mut self.child, timeout)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn token_of(line: &serde_json::Value, field: &str) -> u64 {
    line[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {line}"))
}

async fn started() -> TestCluster {
    let cluster = TestCluster::start_with(ClusterOptions::fast(3));
    cluster.wait_for_leader(STARTUP).await;
    cluster
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_processes_increment_a_counter_under_one_lock() {
    let cluster = started().await;
    let dir = cluster.dir().join("counter");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("counter"), "0\n").expect("counter");
    // Read, pause, write: without mutual exclusion, increments are lost.
    let script = "c=$(cat counter); sleep 0.02; echo $((c + 1)) > counter; \
                  echo $ORDO_LOCK_TOKEN >> tokens";
    let workers: Vec<std::thread::JoinHandle<()>> = (0..8)
        .map(|_| {
            let mut command = ordo(&cluster);
            command
                .args(["lock", "L", "--ttl", TTL, "--", "sh", "-c", script])
                .current_dir(&dir)
                .stdin(Stdio::null());
            let mut command = Some(command);
            std::thread::spawn(move || {
                let command = command.as_mut().expect("once");
                for round in 0..20 {
                    let status = command.status().expect("run ordo lock");
                    assert!(status.success(), "round {round}: ordo lock exited {status}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    let counter = std::fs::read_to_string(dir.join("counter")).expect("counter");
    assert_eq!(
        counter.trim(),
        "160",
        "increments were lost: holders overlapped"
    );
    let tokens: Vec<u64> = std::fs::read_to_string(dir.join("tokens"))
        .expect("tokens")
        .lines()
        .map(|line| line.parse().expect("a token"))
        .collect();
    assert_eq!(tokens.len(), 160);
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "tokens do not increase in file order: {tokens:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_holder_loses_the_lock_and_its_fenced_submit_is_rejected() {
    let cluster = started().await;
    let first = Holder::spawn({
        let mut command = ordo(&cluster);
        command.args(["lock", "F", "--ttl", TTL]);
        command
    });
    let line = first
        .line(STARTUP)
        .expect("the first holder prints its grant");
    assert_eq!(line["lock"], "F");
    let stale = token_of(&line, "token");
    first.signal(libc::SIGSTOP);
    let started = Instant::now();
    let second = Holder::spawn({
        let mut command = ordo(&cluster);
        command.args(["lock", "F", "--ttl", TTL]);
        command
    });
    let line = second
        .line(TTL_DURATION * 10)
        .expect("the lock moves on once the stopped holder's TTL ran out");
    let waited = started.elapsed();
    let fresh = token_of(&line, "token");
    assert!(
        fresh > stale,
        "token {fresh} is not above the stale {stale}"
    );
    assert!(
        waited >= TTL_DURATION / 2,
        "granted after {waited:?}, before the stopped holder's TTL could run out"
    );
    let submit = |token: u64| {
        ordo(&cluster)
            .args(["submit", "--fence", &format!("F={token}"), "fenced=write"])
            .output()
            .expect("ordo submit")
    };
    let rejected = submit(stale);
    assert_eq!(rejected.status.code(), Some(3), "{rejected:?}");
    let answer: serde_json::Value = serde_json::from_slice(&rejected.stdout).expect("a JSON line");
    assert_eq!(answer["fenced"], true, "{answer}");
    let committed = submit(fresh);
    assert!(committed.status.success(), "{committed:?}");
    // Resumed, the stale holder learns its session is gone and says so.
    first.signal(libc::SIGCONT);
    let mut first = first;
    let status = wait_exit(&mut first.child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(4), "the stale holder exited {status}");
    assert!(second.release(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_survives_a_leader_kill_and_is_never_granted_twice() {
    let mut cluster = started().await;
    let holder = Holder::spawn({
        let mut command = ordo(&cluster);
        command.args(["lock", "K", "--ttl", "3s"]);
        command
    });
    let token = token_of(&holder.line(STARTUP).expect("granted"), "token");
    let waiter = Holder::spawn({
        let mut command = ordo(&cluster);
        command.args(["lock", "K", "--ttl", "3s"]);
        command
    });
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    cluster.kill9(leader);
    // Several TTLs with a new leader: the holder keeps renewing, so nothing moves.
    assert!(
        waiter.line(Duration::from_secs(9)).is_none(),
        "the waiter was granted a lock whose holder kept its session"
    );
    let listed = ordo(&cluster)
        .args(["lock", "list", "--json"])
        .output()
        .expect("ordo lock list");
    assert!(listed.status.success(), "{listed:?}");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let row: serde_json::Value = listed
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("JSON"))
        .find(|row| row["name"] == "K")
        .unwrap_or_else(|| panic!("lock K not listed: {listed}"));
    assert_eq!(row["token"], token, "{row}");
    assert_eq!(row["waiters"].as_array().map(Vec::len), Some(1), "{row}");
    assert!(holder.release(Duration::from_secs(30)).success());
    let next = token_of(
        &waiter.line(Duration::from_secs(30)).expect("handed over"),
        "token",
    );
    assert!(next > token);
    assert!(waiter.release(Duration::from_secs(30)).success());
    cluster.restart(leader);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_elected_process_elects_another_and_observers_see_each_epoch_once() {
    let cluster = started().await;
    let observer = Holder::spawn({
        let mut command = ordo(&cluster);
        command.args(["elect", "E", "--observe"]);
        command
    });
    let campaigners: Vec<Holder> = (1..=3)
        .map(|n| {
            Holder::spawn({
                let mut command = ordo(&cluster);
                command.args(["elect", "E", "--value", &format!("w{n}"), "--ttl", TTL]);
                command
            })
        })
        .collect();
    let mut campaigners: Vec<Option<Holder>> = campaigners.into_iter().map(Some).collect();
    let mut epochs = Vec::new();
    let mut killed_at: Option<Instant> = None;
    for round in 0..3 {
        // Exactly one campaigner announces itself elected.
        let deadline = Instant::now() + STARTUP;
        let (index, line) = loop {
            assert!(Instant::now() < deadline, "round {round}: nobody elected");
            let found = campaigners.iter().enumerate().find_map(|(index, holder)| {
                let holder = holder.as_ref()?;
                holder
                    .line(Duration::from_millis(50))
                    .map(|line| (index, line))
            });
            if let Some(found) = found {
                break found;
            }
        };
        if let Some(killed_at) = killed_at {
            // Reported, not asserted: about one TTL (the killed process's session expiring).
            eprintln!(
                "round {round}: a new leader {:?} after the kill (TTL {TTL})",
                killed_at.elapsed()
            );
        }
        let epoch = token_of(&line, "epoch");
        assert_eq!(line["leader"], format!("w{}", index + 1));
        epochs.push(epoch);
        let mut elected = campaigners[index].take().expect("running");
        let _ = elected.child.kill();
        let _ = elected.child.wait();
        killed_at = Some(Instant::now());
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 && Instant::now() < deadline {
        if let Some(line) = observer.line(Duration::from_millis(200))
            && let Some(epoch) = line["epoch"].as_u64()
        {
            seen.push(epoch);
        }
    }
    assert_eq!(
        seen, epochs,
        "the observer saw {seen:?}, the campaigners {epochs:?}"
    );
    assert!(epochs.windows(2).all(|pair| pair[0] < pair[1]));
}

/// An observer that was not waiting when the last leader resigned, leaving no candidate, still
/// gets that "no leader" change when it asks again (the election is kept by its last change):
/// before, the election was forgotten at once and the observer waited, believing the old leader
/// still led.
#[tokio::test(flavor = "multi_thread")]
async fn an_observer_between_calls_sees_the_last_leader_resign() {
    let cluster = started().await;
    let mut config = ordo_participant::ClientConfig::new(
        cluster
            .ids()
            .iter()
            .map(|id| cluster.address(*id))
            .collect(),
        cluster.tls_dir(),
    );
    config.client_name = Some(support::CLIENT_NAME.into());
    let client = ordo_participant::Client::connect(config)
        .await
        .expect("connect");
    let session = ordo_participant::Session::open(&client, TTL_DURATION)
        .await
        .expect("a session");
    let leadership = session.campaign("R", b"only").await.expect("elected");
    let epoch = leadership.epoch();
    let mut observer = client.observe("R");
    let first = observer.next().await.expect("the current leader");
    assert_eq!(first.leader, Some((epoch, b"only".to_vec())));
    // The observer is between calls: nothing is waiting on the node when the leader resigns.
    leadership.resign().await.expect("resign");
    let next = tokio::time::timeout(Duration::from_secs(10), observer.next())
        .await
        .expect("the resignation reaches an observer that asks after it")
        .expect("an answer");
    assert_eq!(next.leader, None, "the last change is 'no leader'");
    assert!(next.revision > first.revision);
    assert!(!observer.skipped);
    session.close().await.expect("close");
}

/// Runs `ordo lease list --json` and returns its rows.
fn lease_rows(cluster: &TestCluster) -> Vec<serde_json::Value> {
    let listed = ordo(cluster)
        .args(["lease", "list", "--json"])
        .output()
        .expect("ordo lease list");
    assert!(listed.status.success(), "{listed:?}");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?}")))
        .collect()
}

/// `ordo submit --epoch NAME=EPOCH` commits only while that epoch leads, and `ordo lease list`
/// shows each campaigner's session with what it holds, in both its forms.
#[tokio::test(flavor = "multi_thread")]
async fn an_epoch_fenced_submit_commits_only_while_its_epoch_leads() {
    let cluster = started().await;
    let campaign = |value: &str| {
        Holder::spawn({
            let mut command = ordo(&cluster);
            command.args(["elect", "P", "--value", value, "--ttl", TTL]);
            command
        })
    };
    let first = campaign("one");
    let old = token_of(&first.line(STARTUP).expect("elected"), "epoch");
    let second = campaign("two");
    // Both sessions are listed: the leader's and the waiting campaigner's, each on election P.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = lease_rows(&cluster);
        // A campaigner's session is listed as soon as it opens, before its campaign commits.
        let both_campaigning = rows.len() == 2
            && rows
                .iter()
                .all(|row| row["holds_or_waits"] == serde_json::json!(["election:P"]));
        if both_campaigning || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in &rows {
        assert_eq!(row["ttl_ms"], 2000, "{row}");
        assert_eq!(
            row["holds_or_waits"],
            serde_json::json!(["election:P"]),
            "{row}"
        );
        assert!(!row["owner"].as_str().unwrap_or("").is_empty(), "{row}");
    }
    let text = ordo(&cluster)
        .args(["lease", "list"])
        .output()
        .expect("ordo lease list");
    assert!(text.status.success(), "{text:?}");
    let text = String::from_utf8_lossy(&text.stdout);
    for row in &rows {
        let id = row["session"].as_str().expect("a session id");
        assert!(
            text.lines()
                .any(|line| line.starts_with(id) && line.contains("election:P")),
            "{id} missing from:\n{text}"
        );
    }
    let submit = |epoch: u64, payload: &str| {
        ordo(&cluster)
            .args([
                "submit",
                "--epoch",
                &format!("P={epoch}"),
                &format!("led={payload}"),
            ])
            .output()
            .expect("ordo submit")
    };
    let committed = submit(old, "first");
    assert!(committed.status.success(), "{committed:?}");
    // The first leader resigns; the second campaigner leads at a larger epoch.
    assert!(first.release(Duration::from_secs(30)).success());
    let new = token_of(&second.line(STARTUP).expect("elected next"), "epoch");
    assert!(new > old, "epoch {new} is not above {old}");
    let rejected = submit(old, "deposed");
    assert_eq!(rejected.status.code(), Some(3), "{rejected:?}");
    let answer: serde_json::Value = serde_json::from_slice(&rejected.stdout).expect("a JSON line");
    assert_eq!(answer["fenced"], true, "{answer}");
    let committed = submit(new, "second");
    assert!(committed.status.success(), "{committed:?}");
    // The resigned leader's session is gone from the listing; the new leader's remains.
    let rows = lease_rows(&cluster);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(second.release(Duration::from_secs(30)).success());
    assert!(lease_rows(&cluster).is_empty());
}

/// `ordo lock NAME -- CMD` and `ordo elect NAME --value V -- CMD` run CMD with the name and token
/// (or the epoch) in its environment, exit with CMD's exit code, and release when it exits.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_under_a_lock_or_leadership_gets_its_token_and_passes_its_exit_code() {
    let cluster = started().await;
    let run = |args: &[&str]| {
        let output = ordo(&cluster)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ordo");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code(), stdout)
    };
    let script = r#"echo "$ORDO_LOCK_NAME $ORDO_LOCK_TOKEN"; exit 7"#;
    let (code, stdout) = run(&["lock", "X", "--ttl", TTL, "--", "sh", "-c", script]);
    assert_eq!(code, Some(7), "{stdout}");
    let line = stdout.lines().last().unwrap_or_default();
    let (name, token) = line.split_once(' ').unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(name, "X");
    let first: u64 = token.parse().unwrap_or_else(|_| panic!("{stdout}"));
    // Released when the command exited, its session closed rather than left to expire: nothing
    // holds X, and no session is listed.
    let (code, locks) = run(&["lock", "list", "--json"]);
    assert_eq!(code, Some(0));
    assert!(
        !locks.lines().any(|line| {
            let row: serde_json::Value = serde_json::from_str(line).expect("JSON");
            row["name"] == "X" && !row["holder"].is_null()
        }),
        "X is still held: {locks}"
    );
    assert!(
        lease_rows(&cluster).is_empty(),
        "the session outlived the command"
    );
    // The next holder gets a larger token.
    let (code, stdout) = run(&["lock", "X", "--ttl", TTL, "--", "sh", "-c", script]);
    assert_eq!(code, Some(7), "{stdout}");
    let second: u64 = stdout
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("X "))
        .and_then(|token| token.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(second > first, "token {second} is not above {first}");
    let script = r#"echo "epoch=$ORDO_ELECTION_EPOCH"; exit 5"#;
    let (code, stdout) = run(&[
        "elect", "E", "--value", "v", "--ttl", TTL, "--", "sh", "-c", script,
    ]);
    assert_eq!(code, Some(5), "{stdout}");
    let announced: serde_json::Value = stdout
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no JSON line in {stdout}"));
    assert_eq!(announced["election"], "E");
    assert_eq!(announced["leader"], "v");
    let epoch = token_of(&announced, "epoch");
    assert!(
        stdout.lines().any(|line| line == format!("epoch={epoch}")),
        "the command did not see epoch {epoch}: {stdout}"
    );
}
