//! `ordo dev`: a local cluster for newcomers. Creates certificates if missing, starts one
//! `ordo serve` process per node on loopback, prints the endpoints and console URLs, writes each
//! node's log to `DIR/node-N.log` (or streams them, prefixed by the node's id, with
//! `--stream-logs`), and stops them all (SIGTERM, so leaders hand over) on Ctrl-C.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub fn run(
    nodes: u64,
    dir: &Path,
    base_port: u16,
    demo: Option<std::time::Duration>,
    stream_logs: bool,
    engine: ordo_common::EngineKind,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if ![1, 3, 5].contains(&nodes) {
        return Err(format!("--nodes must be 1, 3 or 5, not {nodes}").into());
    }
    let tls_dir = dir.join("tls");
    ordo_coordinator::certs::generate(&tls_dir, nodes, &["cli".to_string(), "demo".to_string()])?;
    let address = |id: u64| format!("127.0.0.1:{}", base_port as u64 + id - 1);
    let peers: Vec<String> = (1..=nodes)
        .map(|id| format!("{id}={}", address(id)))
        .collect();
    let peers = peers.join(",");
    let executable = std::env::current_exe()?;
    std::fs::create_dir_all(dir)?;
    // Each node's process id, for the demo's kill -9 of the leader.
    let pids: Arc<std::sync::Mutex<std::collections::BTreeMap<u64, u32>>> = Arc::default();
    let log_path = |id: u64| dir.join(format!("node-{id}.log"));
    let spawn = |id: u64| -> std::io::Result<Child> {
        let mut command = Command::new(&executable);
        // If `ordo dev` dies without stopping its nodes, the kernel stops them.
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = command
            .args([
                "serve",
                "--id",
                &id.to_string(),
                "--listen",
                &address(id),
                "--peers",
                &peers,
                "--consensus-engine",
                engine.name(),
            ])
            .arg("--data-dir")
            .arg(dir.join(format!("node-{id}")))
            .arg("--tls-dir")
            .arg(&tls_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        pids.lock().expect("pids lock").insert(id, child.id());
        let file = if stream_logs {
            None
        } else {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_path(id))?;
            Some(Arc::new(std::sync::Mutex::new(file)))
        };
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let file = file.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    match &file {
                        Some(file) => {
                            use std::io::Write;
                            let _ = writeln!(file.lock().expect("log file lock"), "{line}");
                        }
                        None => println!("[node {id}] {line}"),
                    }
                }
            });
        }
        Ok(child)
    };
    let mut children: Vec<(u64, Child)> = Vec::new();
    for id in 1..=nodes {
        children.push((id, spawn(id)?));
    }
    let endpoints: Vec<String> = (1..=nodes).map(address).collect();
    println!("ordo dev: {nodes} nodes running");
    println!("  endpoints: {}", endpoints.join(","));
    println!("  client TLS dir: {}", tls_dir.display());
    for id in 1..=nodes {
        println!(
            "  node {id}: console and /metrics at http://{}/",
            address(id)
        );
    }
    if !stream_logs {
        println!(
            "  node logs: {} (--stream-logs prints them here)",
            dir.join("node-N.log").display()
        );
    }
    println!(
        "  try: ordo status --endpoints {} --tls-dir {}",
        endpoints.join(","),
        tls_dir.display()
    );
    println!("  a node killed by a signal (say, kill -9) is restarted after {RESTART_DELAY:?}");
    println!("  Ctrl-C stops every node");

    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    on_stop_signal(move || flag.store(true, Ordering::SeqCst))?;
    let demo_passed = Arc::new(AtomicBool::new(true));
    if let Some(duration) = demo {
        let (stop, passed) = (stop.clone(), demo_passed.clone());
        let addresses: Vec<std::net::SocketAddr> = (1..=nodes)
            .filter_map(|id| address(id).parse().ok())
            .collect();
        let dir = dir.to_path_buf();
        // With one node, killing it would end the demo rather than show a failover.
        let kill: Option<super::demo::KillNode> = (nodes > 1).then(|| {
            let pids = pids.clone();
            Box::new(move |id: u64| {
                let pid = pids.lock().expect("pids lock").get(&id).copied();
                let pid = pid.ok_or_else(|| std::io::Error::other(format!("no node {id}")))?;
                // SAFETY: kill(2) with a child's pid and a valid signal has no memory effects.
                match unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            }) as super::demo::KillNode
        });
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build();
            let outcome = runtime.map_err(|e| e.to_string()).and_then(|runtime| {
                runtime
                    .block_on(super::demo::run(addresses, &dir, duration, kill))
                    .map_err(|e| e.to_string())
            });
            match outcome {
                Ok(ok) => passed.store(ok, Ordering::SeqCst),
                Err(error) => {
                    eprintln!("demo: failed: {error}");
                    passed.store(false, Ordering::SeqCst);
                }
            }
            stop.store(true, Ordering::SeqCst);
        });
    }
    // Like a supervisor: a node killed by a signal is started again, so that killing one (the
    // leader, say) shows the cluster carrying on and the node catching up. A node that exits by
    // itself (a bad configuration, a port in use) would only fail again: stop the others.
    let mut restarts: Vec<(u64, std::time::Instant)> = Vec::new();
    'supervise: while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        for (id, child) in children.iter_mut() {
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            if restarts.iter().any(|(waiting, _)| waiting == id) {
                continue;
            }
            if status.code().is_some() {
                eprintln!("ordo dev: node {id} exited ({status}); stopping the others");
                if !stream_logs {
                    // Its last words are in its log file: show them here.
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    let log = std::fs::read_to_string(log_path(*id)).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    for line in &lines[lines.len().saturating_sub(LAST_WORDS_LINES)..] {
                        eprintln!("[node {id}] {line}");
                    }
                }
                break 'supervise;
            }
            eprintln!(
                "ordo dev: node {id} was killed ({status}); restarting it in {RESTART_DELAY:?}"
            );
            restarts.push((*id, std::time::Instant::now() + RESTART_DELAY));
        }
        let now = std::time::Instant::now();
        for (id, _) in restarts.extract_if(.., |(_, at)| *at <= now) {
            let slot = children.iter_mut().find(|(node, _)| *node == id);
            let (_, child) = slot.expect("every restarted node has a slot");
            *child = spawn(id)?;
            eprintln!("ordo dev: node {id} restarted");
        }
    }
    for (_, child) in &children {
        terminate(child);
    }
    let mut code = if demo_passed.load(Ordering::SeqCst) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    for (id, mut child) in children {
        let status = child.wait()?;
        if !status.success() && status.code() != Some(0) {
            eprintln!("ordo dev: node {id} ended with {status}");
            code = ExitCode::FAILURE;
        }
    }
    Ok(code)
}

/// Lines of a node's log `ordo dev` prints when the node exits by itself.
const LAST_WORDS_LINES: usize = 5;

/// How long `ordo dev` waits before it starts a node that exited.
const RESTART_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// SIGTERM: the node stops gracefully (a leader hands over first).
fn terminate(child: &Child) {
    // SAFETY: kill(2) with a child's pid and a valid signal number has no memory effects.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
}

fn on_stop_signal(on_signal: impl Fn() + Send + 'static) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        });
        on_signal();
    });
    Ok(())
}
