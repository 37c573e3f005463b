//! The node's HTTP listener on real 3-node clusters: `/metrics` parses as Prometheus text and
//! counts commits, `/readyz` follows whether a node is cut off, and the console works in a real
//! browser (headless Chromium) with a chart that moves under load.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ordo_participant::{Batch, Client, Message, new_batch_id};
use support::{TestCluster, http, poll_until};

const STARTUP: Duration = Duration::from_secs(30);
/// Long enough for any election or catch-up on a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);

fn batch(i: usize) -> Batch {
    Batch {
        id: new_batch_id(),
        messages: vec![
            Message::new("orders", Bytes::from(format!("order-{i}"))),
            Message::new("audit", Bytes::from(format!("placed-{i}"))),
        ],
        preconditions: Vec::new(),
    }
}

/// Node `id`'s `/metrics`, parsed with a Prometheus text parser.
async fn scrape(cluster: &TestCluster, id: u64) -> prometheus_parse::Scrape {
    let answer = http::get(cluster.http_address(id), "/metrics")
        .await
        .expect("GET /metrics");
    assert_eq!(answer.status, 200, "/metrics answered {answer:?}");
    assert!(
        answer.content_type.starts_with("text/plain; version=0.0.4"),
        "/metrics content type {:?}",
        answer.content_type
    );
    let lines = answer.body.lines().map(|line| Ok(line.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("/metrics parses as Prometheus text")
}

/// The value of an unlabelled counter or gauge (0 when absent).
fn scalar(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .map(|sample| match &sample.value {
            prometheus_parse::Value::Counter(value)
            | prometheus_parse::Value::Gauge(value)
            | prometheus_parse::Value::Untyped(value) => *value,
            other => panic!("{name} is not a scalar: {other:?}"),
        })
        .sum()
}

/// The observations a histogram holds (its `+Inf` bucket; 0 when absent).
fn histogram_count(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name)
        .map(|sample| match &sample.value {
            prometheus_parse::Value::Histogram(buckets) => buckets
                .iter()
                .map(|bucket| bucket.count)
                .fold(0.0, f64::max),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_count_commits() {
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    let client = Client::connect(cluster.client_config())
        .await
        .expect("connect");
    client.submit(batch(0)).await.expect("first batch");
    let before = scrape(&cluster, leader).await;
    let committed_before = scalar(&before, "ordo_batches_committed_total");
    let latencies_before = histogram_count(&before, "ordo_commit_latency_seconds");
    assert!(
        latencies_before >= 1.0,
        "the leader recorded the first batch's commit latency"
    );
    const BATCHES: usize = 40;
    for i in 1..=BATCHES {
        client.submit(batch(i)).await.expect("batch");
    }
    // Each batch's latency is recorded before its outcome is sent: all are in by now. The
    // committed counter moves when the applied state is written, a moment later.
    let after = scrape(&cluster, leader).await;
    assert_eq!(
        histogram_count(&after, "ordo_commit_latency_seconds") - latencies_before,
        BATCHES as f64,
        "the commit latency histogram counts every acknowledged batch once"
    );
    let moved = poll_until(SETTLE, async || {
        let now = scalar(
            &scrape(&cluster, leader).await,
            "ordo_batches_committed_total",
        );
        if now - committed_before >= BATCHES as f64 {
            Ok(now)
        } else {
            Err(format!("{now} committed, {committed_before} before"))
        }
    })
    .await;
    let now = moved.expect("ordo_batches_committed_total moves with the batches");
    assert_eq!(
        now - committed_before,
        BATCHES as f64,
        "ordo_batches_committed_total counts each batch once"
    );
    // Followers count the batches they apply too, and every node reports its role and the
    // durable writes' latency.
    for id in cluster.ids() {
        let scraped = scrape(&cluster, id).await;
        assert!(
            histogram_count(&scraped, "ordo_disk_write_seconds") > 0.0,
            "node {id} timed its durable writes"
        );
        let leading = scraped
            .samples
            .iter()
            .find(|sample| {
                sample.metric == "ordo_role" && sample.labels.get("role") == Some("leader")
            })
            .map(|sample| matches!(sample.value, prometheus_parse::Value::Gauge(v) if v == 1.0));
        assert_eq!(
            leading,
            Some(id == leader),
            "node {id}'s ordo_role{{role=\"leader\"}}"
        );
        poll_until(SETTLE, async || {
            let rtt = histogram_count(
                &scrape(&cluster, id).await,
                "ordo_peer_round_trip_time_seconds",
            );
            (rtt > 0.0)
                .then_some(())
                .ok_or(format!("{rtt} round trips"))
        })
        .await
        .unwrap_or_else(|last| panic!("node {id} sampled no peer round trip: {last}"));
        let names: Vec<&str> = scraped.samples.iter().map(|s| s.metric.as_str()).collect();
        assert!(
            names.iter().all(|name| name.starts_with("ordo_")),
            "every metric is Ordo's: {names:?}"
        );
    }
}

/// What a node records while it starts reaches `/metrics`: its recorder is installed before
/// the store opens and before any peer can connect. (It was installed with the HTTP listener,
/// after both: a handle taken earlier stayed a no-op for good, so a checkpoint made while
/// opening went unrecorded, and so did the round trips to a peer that connected at once.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_node_records_while_it_starts_reaches_its_metrics() {
    let mut cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    let client = Client::connect(cluster.client_config())
        .await
        .expect("connect");
    for i in 0..20 {
        client.submit(batch(i)).await.expect("batch");
    }
    // A node killed with writes in its write-ahead file replays them when it opens its store,
    // and checkpoints: the first thing a restarted node records.
    let node = cluster.others(leader)[0];
    cluster.wait_for_commit_everywhere(SETTLE).await;
    cluster.kill9(node);
    let mark = cluster.log_mark(node);
    cluster.restart(node);
    cluster
        .wait_for_log(
            node,
            mark,
            &["replayed the write-ahead file into the store"],
            STARTUP,
        )
        .await;
    poll_until(SETTLE, async || {
        match http::get(cluster.http_address(node), "/metrics").await {
            Ok(answer) if answer.status == 200 => Ok(()),
            other => Err(format!("/metrics answered {other:?}")),
        }
    })
    .await
    .expect("the restarted node serves /metrics");
    let checkpoints = histogram_count(
        &scrape(&cluster, node).await,
        "ordo_store_checkpoint_seconds",
    );
    assert!(
        checkpoints >= 1.0,
        "node {node} checkpointed while opening (its log says so) but /metrics shows \
         {checkpoints} checkpoints"
    );
}

/// `/readyz` of node `id`: its status code and JSON body.
async fn readyz(cluster: &TestCluster, id: u64) -> Result<(u16, serde_json::Value), String> {
    let answer = http::get(cluster.http_address(id), "/readyz").await?;
    let body = serde_json::from_str(&answer.body)
        .map_err(|error| format!("/readyz body {:?}: {error}", answer.body))?;
    Ok((answer.status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_on_a_cut_off_node_and_200_after_healing() {
    let cluster = TestCluster::start_with(support::ClusterOptions::fast(3));
    let leader = cluster.wait_for_leader(STARTUP).await.id;
    for id in cluster.ids() {
        poll_until(SETTLE, async || match readyz(&cluster, id).await? {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        })
        .await
        .unwrap_or_else(|last| panic!("node {id} never became ready: {last}"));
    }
    // Cut one follower off by stopping both other nodes.
    let cut_off = cluster.others(leader)[0];
    let others = cluster.others(cut_off);
    for id in &others {
        cluster.sigstop(*id);
    }
    let refused = poll_until(SETTLE, async || match readyz(&cluster, cut_off).await? {
        (503, body) => Ok(body),
        other => Err(format!("{other:?}")),
    })
    .await;
    for id in &others {
        cluster.sigcont(*id);
    }
    let refused = refused.unwrap_or_else(|last| {
        panic!("node {cut_off} stayed ready while cut off from {others:?}: {last}")
    });
    assert_eq!(refused["ready"], false);
    let code = refused["code"].as_str().unwrap_or_default();
    assert!(
        ["no_leader", "leader_unreachable"].contains(&code),
        "a stable code names why: {refused}"
    );
    assert!(
        refused["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a reason in words: {refused}"
    );
    let live = http::get(cluster.http_address(cut_off), "/livez")
        .await
        .expect("/livez");
    assert_eq!(live.status, 200, "the process serves while not ready");
    poll_until(SETTLE, async || match readyz(&cluster, cut_off).await? {
        (200, _) => Ok(()),
        other => Err(format!("{other:?}")),
    })
    .await
    .unwrap_or_else(|last| panic!("node {cut_off} did not become ready after healing: {last}"));
}

/// The Chromium binary: `ORDO_TEST_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium() -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("ORDO_TEST_CHROMIUM") {
        return Some(path.into());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// Where the screenshot goes: `target/console-screenshot.png` (or under `CARGO_TARGET_DIR`).
fn screenshot_path() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshot.png")
}

#[test]
fn the_console_shows_members_and_a_moving_commit_chart_in_chromium() {
    let Some(chromium) = chromium() else {
        assert!(
            std::env::var_os("ORDO_TEST_REQUIRE_BROWSER").is_none(),
            "ORDO_TEST_REQUIRE_BROWSER is set and no chromium was found (apt install chromium)"
        );
        eprintln!("skipped: no chromium on PATH (apt install chromium, or set ORDO_TEST_CHROMIUM)");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = TestCluster::start(3);
    let leader = runtime.block_on(cluster.wait_for_leader(STARTUP)).id;
    let url = format!("http://{}/", cluster.http_address(leader));

    let profile = tempfile::tempdir().expect("browser profile directory");
    let options = headless_chrome::LaunchOptions {
        path: Some(chromium),
        headless: true,
        // CI runs as root, where Chromium's sandbox cannot start.
        sandbox: false,
        window_size: Some((1400, 1100)),
        user_data_dir: Some(profile.path().to_path_buf()),
        idle_browser_timeout: Duration::from_secs(120),
        ..headless_chrome::LaunchOptions::default()
    };
    let browser = headless_chrome::Browser::new(options).expect("start chromium");
    let tab = browser.new_tab().expect("a tab");
    let problems: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = problems.clone();
    tab.add_event_listener(Arc::new(
        move |event: &headless_chrome::protocol::cdp::types::Event| {
            use headless_chrome::protocol::cdp::types::Event;
            use headless_chrome::protocol::cdp::{Log, Runtime};
            let problem = match event {
                Event::RuntimeExceptionThrown(thrown) => Some(format!(
                    "exception: {:?}",
                    thrown.params.exception_details.text
                )),
                Event::RuntimeConsoleAPICalled(call)
                    if matches!(
                        call.params.Type,
                        Runtime::ConsoleAPICalledEventTypeOption::Error
                    ) =>
                {
                    Some(format!("console.error: {:?}", call.params.args))
                }
                Event::LogEntryAdded(entry)
                    if matches!(entry.params.entry.level, Log::LogEntryLevel::Error) =>
                {
                    Some(format!("log error: {}", entry.params.entry.text))
                }
                _ => None,
            };
            if let Some(problem) = problem {
                seen.lock().expect("problems lock").push(problem);
            }
        },
    ))
    .expect("listen to the page's console");
    tab.enable_runtime().expect("runtime events");
    tab.enable_log().expect("log events");
    tab.navigate_to(&url).expect("navigate");
    tab.wait_until_navigated().expect("page loads");

    let evaluate = |expression: &str| -> serde_json::Value {
        tab.evaluate(expression, false)
            .expect("evaluate")
            .value
            .unwrap_or(serde_json::Value::Null)
    };
    let wait_for = |what: &str, expression: &str| {
        let deadline = std::time::Instant::now() + SETTLE;
        loop {
            if evaluate(expression) == serde_json::Value::Bool(true) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the console never showed {what} ({expression})"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    wait_for(
        "three members",
        "document.querySelectorAll('#members tbody tr').length === 3",
    );
    wait_for(
        "one leader",
        "document.querySelectorAll('#members tbody tr[data-role=\"leader\"]').length === 1",
    );
    assert_eq!(
        evaluate("document.getElementById('node-id').textContent"),
        serde_json::json!(leader.to_string()),
        "the page is the leader's"
    );
    wait_for(
        "a chart with points",
        "Number(document.getElementById('commits-chart').dataset.points) >= 2",
    );
    let before = evaluate("Number(document.getElementById('commits-chart').dataset.total)")
        .as_f64()
        .expect("the chart's total");

    // Load: 8 submitters, each pausing 10 ms between batches.
    let client = runtime
        .block_on(Client::connect(cluster.client_config()))
        .expect("connect");
    let client = Arc::new(client);
    let load = runtime.spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let client = client.clone();
            tasks.spawn(async move {
                // About 3 s of load, so that the chart has several points to draw.
                for i in 0..300 {
                    client
                        .submit(batch(worker * 1000 + i))
                        .await
                        .expect("a batch under load");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a submitter");
        }
    });
    wait_for(
        "the commit chart move under load",
        &format!(
            "Number(document.getElementById('commits-chart').dataset.total) >= {before} + 100"
        ),
    );
    wait_for(
        "commit latencies on its chart",
        "Number(document.getElementById('latency-chart').dataset.measured) >= 1",
    );
    wait_for(
        "the latest batches",
        "document.querySelectorAll('#batches tbody tr').length >= 5",
    );
    runtime.block_on(load).expect("the load ran");
    let png = tab
        .capture_screenshot(
            headless_chrome::protocol::cdp::Page::CaptureScreenshotFormatOption::Png,
            None,
            None,
            true,
        )
        .expect("a screenshot");
    let path = screenshot_path();
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("target directory");
    std::fs::write(&path, png).expect("write the screenshot");
    eprintln!("screenshot: {}", path.display());
    let text: BTreeMap<&str, serde_json::Value> = BTreeMap::from([
        (
            "verdict",
            evaluate("document.getElementById('verdict').textContent"),
        ),
        (
            "error",
            evaluate("document.getElementById('error').style.display"),
        ),
    ]);
    assert_eq!(text["verdict"], serde_json::json!("ready"), "{text:?}");
    assert_ne!(text["error"], serde_json::json!("block"), "{text:?}");
    let problems = problems.lock().expect("problems lock").clone();
    assert!(problems.is_empty(), "the page logged errors: {problems:?}");
}

/// `cli` administers; `viewer` has a rule that grants no topic and no lock.
const VIEWER_ACL: &str = r#"
[auth]
admins = ["cli"]
[[auth.acl]]
identity = "viewer"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_the_listener_wants_a_client_certificate_of_the_ca() {
    // 0.0.0.0 is not loopback: the listener speaks HTTPS and checks client certificates.
    let port = support::free_loopback_ports(1)[0];
    let mut options = support::ClusterOptions::fast(1);
    options.config_file = Some(VIEWER_ACL.to_string());
    let mut cluster = TestCluster::prepare(options);
    support::floods::issue_client(&cluster, "viewer");
    let crl = cluster.tls_dir().join("crl.pem");
    cluster.options_mut().environment.extend([
        ("ORDO_HTTP_LISTEN".to_string(), format!("0.0.0.0:{port}")),
        (
            "ORDO_TRANSPORT_CRL_FILES".to_string(),
            support::path_str(&crl).to_string(),
        ),
    ]);
    cluster.restart(1);
    cluster.wait_for_leader(STARTUP).await;
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let tls = cluster.tls_dir().to_path_buf();
    let get = async |path: &str, stem: Option<&str>| http::get_tls(address, path, &tls, stem).await;
    let answer = poll_until(SETTLE, async || get("/livez", Some("client-cli")).await)
        .await
        .expect("a client certificate of the CA is served");
    assert_eq!(answer.status, 200, "{answer:?}");
    // The pages read the view the driver publishes every 100 ms: readiness may lag the
    // election by that much.
    let ready = poll_until(SETTLE, async || {
        match get("/readyz", Some("client-cli")).await {
            Ok(answer) if answer.status == 200 => Ok(answer),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .expect("/readyz answers 200 once the node leads");
    assert_eq!(ready.status, 200, "{ready:?}");
    // Plain HTTP, no certificate, or a node's certificate: no answer.
    let plain = http::get(address, "/livez").await;
    assert!(
        plain.as_ref().map_or(true, |answer| answer.status != 200),
        "plain HTTP was served beyond loopback: {plain:?}"
    );
    let anonymous = get("/livez", None).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate was served: {anonymous:?}"
    );
    let node = get("/livez", Some("node-1")).await;
    assert!(
        node.is_err(),
        "a node certificate was served as a client: {node:?}"
    );

    // Each page is authorized for the certificate's identity, as its client request would be:
    // the viewer may see the status, not the lock table nor the latest batches' topics.
    for (path, viewer_status) in [
        ("/api/status", 200),
        ("/api/coord", 403),
        ("/api/batches", 403),
    ] {
        let viewer = get(path, Some("client-viewer"))
            .await
            .expect("the viewer is answered");
        assert_eq!(
            viewer.status, viewer_status,
            "{path} for viewer: {viewer:?}"
        );
        if viewer_status == 403 {
            assert!(viewer.body.contains("\"forbidden\""), "{path}: {viewer:?}");
        }
        let admin = get(path, Some("client-cli"))
            .await
            .expect("the admin is answered");
        assert_eq!(admin.status, 200, "{path} for cli: {admin:?}");
    }

    // Revoked, then SIGHUP: the listener's next connections check the reloaded list.
    support::run_ordo_checked(&[
        "certs",
        "--dir",
        support::path_str(cluster.tls_dir()),
        "--revoke",
        "client-viewer",
    ]);
    let mark = cluster.log_mark(1);
    cluster.sighup(1);
    cluster
        .wait_for_log(1, mark, &["reloaded certificates"], SETTLE)
        .await;
    let revoked = get("/api/status", Some("client-viewer")).await;
    assert!(
        revoked.is_err(),
        "a revoked certificate was served after SIGHUP: {revoked:?}"
    );
    let admin = get("/api/status", Some("client-cli"))
        .await
        .expect("cli after SIGHUP");
    assert_eq!(admin.status, 200, "{admin:?}");
}
