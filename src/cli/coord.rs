//! `ordo lock`, `ordo elect`, `ordo lease list` and `ordo lock list`.

use std::process::ExitCode;
use std::time::Duration;

use ordo_common::client::COORD_LIST_ROWS_MAX;
use ordo_participant::{CoordError, MutexKind, Session};

use super::ClientArguments;
use super::batches::client;

/// Exit code when the session was lost while holding (the lock may already be someone else's).
pub const EXIT_SESSION_LOST: u8 = 4;

/// How to hold what was acquired: the session's TTL, and the command to run while holding (none:
/// hold until a signal or the end of stdin).
pub struct Hold {
    pub ttl: Duration,
    pub command: Vec<String>,
}

pub async fn lock(
    arguments: &ClientArguments,
    name: &str,
    lock_delay: Duration,
    hold: Hold,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = client(arguments).await?;
    let session = Session::open(&client, hold.ttl).await?;
    let guard = match session.lock_with_delay(name, lock_delay).await {
        Ok(guard) => guard,
        Err(error) => return failed(&session, error).await,
    };
    let token = guard.token();
    let line = serde_json::json!({ "lock": name, "token": token });
    let env = [
        ("ORDO_LOCK_NAME", name.to_string()),
        ("ORDO_LOCK_TOKEN", token.to_string()),
    ];
    let code = run_holding(&session, &hold.command, &line, &env).await?;
    if !session.is_lost() {
        // Closing the session releases the lock (without lock-delay) in one round trip.
        let _ = session.close().await;
    }
    Ok(code)
}

pub async fn elect(
    arguments: &ClientArguments,
    name: &str,
    value: &str,
    hold: Hold,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = client(arguments).await?;
    let session = Session::open(&client, hold.ttl).await?;
    let leadership = match session.campaign(name, value.as_bytes()).await {
        Ok(leadership) => leadership,
        Err(error) => return failed(&session, error).await,
    };
    let epoch = leadership.epoch();
    let line = serde_json::json!({ "election": name, "leader": value, "epoch": epoch });
    let env = [
        ("ORDO_ELECTION_NAME", name.to_string()),
        ("ORDO_ELECTION_EPOCH", epoch.to_string()),
    ];
    let code = run_holding(&session, &hold.command, &line, &env).await?;
    if !session.is_lost() {
        // Closing the session resigns in the same step.
        let _ = session.close().await;
    }
    Ok(code)
}

pub async fn observe(
    arguments: &ClientArguments,
    name: &str,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = client(arguments).await?;
    let mut observer = client.observe(name);
    loop {
        let change = observer.next().await?;
        let line = match change.leader {
            Some((epoch, value)) => serde_json::json!({
                "election": name,
                "leader": String::from_utf8_lossy(&value),
                "epoch": epoch,
            }),
            None => serde_json::json!({ "election": name, "leader": null, "epoch": null }),
        };
        println!("{line}");
    }
}

pub async fn list_leases(
    arguments: &ClientArguments,
    json: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = client(arguments).await?;
    let (sessions, _) = client.coord_list().await?;
    warn_if_capped(sessions.len(), "sessions");
    for session in &sessions {
        let mutexes: Vec<String> = session
            .mutexes
            .iter()
            .map(|(kind, name)| format!("{}:{name}", kind.noun()))
            .collect();
        if json {
            let line = serde_json::json!({
                "session": session.id.to_string(),
                "owner": session.owner,
                "ttl_ms": session.ttl_ms,
                "renewed_ms": session.renewed_ms,
                "holds_or_waits": mutexes,
            });
            println!("{line}");
        } else {
            println!(
                "{}  owner {}  ttl {} ms  {}",
                session.id,
                session.owner,
                session.ttl_ms,
                mutexes.join(" ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn list_locks(
    arguments: &ClientArguments,
    json: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = client(arguments).await?;
    let (_, mutexes) = client.coord_list().await?;
    warn_if_capped(mutexes.len(), "locks and elections");
    for mutex in &mutexes {
        let holder = mutex.holder.as_ref();
        let waiters: Vec<String> = mutex.waiters.iter().map(ToString::to_string).collect();
        if json {
            let mut line = serde_json::json!({
                "kind": mutex.kind.noun(),
                "name": mutex.name,
                "holder": holder.map(|(session, _, _)| session.to_string()),
                "token": holder.map(|(_, token, _)| token),
                "waiters": waiters,
            });
            if mutex.kind == MutexKind::Election {
                line["value"] = holder
                    .map(|(_, _, value)| String::from_utf8_lossy(value).into_owned())
                    .into();
            }
            println!("{line}");
        } else {
            let holder = match holder {
                Some((session, token, _)) => format!("held by {session} with token {token}"),
                None => "free".to_string(),
            };
            println!(
                "{} {}: {holder}; {} waiting",
                mutex.kind.noun(),
                mutex.name,
                waiters.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One answer carries at most [`COORD_LIST_ROWS_MAX`] rows of each kind: says so (on stderr, so
/// the listing itself stays one row per line) when a listing may have been cut there.
fn warn_if_capped(rows: usize, what: &str) {
    if rows >= COORD_LIST_ROWS_MAX {
        eprintln!(
            "ordo: showing the first {COORD_LIST_ROWS_MAX} {what} (the most one answer carries); \
             there may be more"
        );
    }
}

/// Prints `line`, then runs `command` with `env` (or holds until SIGINT, SIGTERM or the end of
/// stdin) while the session lives. Returns the command's exit code, 0 after a hold, or
/// [`EXIT_SESSION_LOST`] if the session was lost first (the command is then sent SIGTERM).
async fn run_holding(
    session: &Session,
    command: &[String],
    line: &serde_json::Value,
    env: &[(&str, String)],
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    println!("{line}");
    let Some((program, arguments)) = command.split_first() else {
        tokio::select! {
            () = session.lost() => return Ok(lost(session)),
            () = until_stop_or_eof() => return Ok(ExitCode::SUCCESS),
        }
    };
    let mut child = tokio::process::Command::new(program)
        .args(arguments)
        .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
        .spawn()
        .map_err(|error| format!("cannot run {program:?}: {error}"))?;
    tokio::select! {
        status = child.wait() => {
            let status = status?;
            Ok(ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8))
        }
        () = session.lost() => {
            if let Some(pid) = child.id() {
                // SAFETY: kill(2) with a pid this process spawned and still owns.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            let _ = child.wait().await;
            Ok(lost(session))
        }
    }
}

fn lost(session: &Session) -> ExitCode {
    eprintln!(
        "error: session {} was lost (expired); what it held may be someone else's now",
        session.id()
    );
    ExitCode::from(EXIT_SESSION_LOST)
}

async fn failed(
    session: &Session,
    error: CoordError,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if matches!(error, CoordError::SessionLost(_)) {
        return Ok(lost(session));
    }
    let _ = session.close().await;
    Err(error.into())
}

/// Resolves on SIGINT, SIGTERM or the end of stdin.
async fn until_stop_or_eof() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    // A plain thread reads stdin: the runtime would wait at exit for a blocking read in its
    // own pool, and this one may never finish.
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = [0u8; 256];
        while let Ok(read) = std::io::Read::read(&mut stdin, &mut buffer) {
            if read == 0 {
                break;
            }
        }
        let _ = eof_tx.send(());
    });
    let eof = async {
        let _ = eof_rx.await;
    };
    let term = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
        () = eof => {}
    }
}
