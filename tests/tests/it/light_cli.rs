//! `roost publish` and `roost subscribe` as an operator runs them, against two real nodes.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use roost_tests::{init_tracing, process::roost_command, RoostProcess, TestNode, WAIT};

use crate::lightpush::{autoshard, pair};

/// Forwards each line a child writes to a channel.
fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (off the async runtime) for a line matching `pred`; returns every line seen.
async fn wait_for_line(
    rx: mpsc::Receiver<String>,
    pred: impl Fn(&str) -> bool + Send + 'static,
) -> (mpsc::Receiver<String>, Option<String>, Vec<String>) {
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + WAIT;
        let mut seen = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                if pred(&line) {
                    return (rx, Some(line), seen);
                }
                seen.push(line);
            }
        }
        (rx, None, seen)
    })
    .await
    .unwrap()
}

async fn run(args: Vec<String>) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        roost_command(&args, dir.path()).output().unwrap()
    })
    .await
    .unwrap()
}

/// `roost subscribe` at B prints, as JSON, the message `roost publish` pushed at A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_at_one_node_reaches_subscribe_at_the_other() {
    init_tracing();
    let content_topic = "/roost/1/cli/proto";
    let topic = autoshard(content_topic);
    let (a, b) = pair(&topic).await;

    let dir = tempfile::tempdir().unwrap();
    let mut child = roost_command(
        &[
            "subscribe",
            "--peer",
            &b.tcp_addr().to_string(),
            "--content-topic",
            content_topic,
            "--json",
            "--count",
            "1",
        ],
        dir.path(),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn roost subscribe");
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    let mut subscriber = RoostProcess { child };
    let (_stderr, ready, seen) = wait_for_line(stderr, |l| l.starts_with("subscribed to")).await;
    assert!(
        ready.is_some(),
        "roost subscribe did not subscribe: {seen:?}"
    );

    let out = run(vec![
        "publish".into(),
        "--peer".into(),
        a.tcp_addr().to_string(),
        "--content-topic".into(),
        content_topic.into(),
        "--payload".into(),
        "hello from the CLI".into(),
    ])
    .await;
    let published = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "publish failed: {published} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        published.starts_with("published 0x") && published.contains(&topic),
        "{published}"
    );
    assert!(published.contains("relayed to 1 peer(s)"), "{published}");
    let hash = published.split_whitespace().nth(1).unwrap().to_owned();

    let (_stdout, line, seen) = wait_for_line(stdout, |l| l.starts_with('{')).await;
    let line = line.unwrap_or_else(|| panic!("no message printed: {seen:?}"));
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["hash"], hash.as_str());
    assert_eq!(json["payload"], "hello from the CLI");
    assert_eq!(json["content_topic"], content_topic);
    assert_eq!(json["pubsub_topic"], topic.as_str());
    let status = tokio::task::spawn_blocking(move || {
        let status = subscriber.wait_timeout(Duration::from_secs(30));
        (status, subscriber)
    })
    .await
    .unwrap()
    .0
    .expect("subscribe exits after --count 1");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reports_refusals_and_usage_errors_in_one_line() {
    init_tracing();
    let alone = TestNode::start().await;
    // No relay peers: the node answers 505 and publish exits 1 naming the code.
    let out = run(vec![
        "publish".into(),
        "--peer".into(),
        alone.tcp_addr().to_string(),
        "--content-topic".into(),
        "/roost/1/cli/proto".into(),
        "--payload".into(),
        "x".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("505 NO_PEERS_TO_RELAY"), "{stderr}");

    // A node of another cluster: either it drops the client first (the error names the flag to
    // check) or it refuses the topic first (the error names the topics it relays).
    let other = TestNode::start_with(|c| {
        c.relay.cluster_id = 16;
        c.relay.shards = vec![32];
    })
    .await;
    let out = run(vec![
        "publish".into(),
        "--peer".into(),
        other.tcp_addr().to_string(),
        "--content-topic".into(),
        "/roost/1/cli/proto".into(),
        "--payload".into(),
        "x".into(),
        "--timeout".into(),
        "20s".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--cluster-id") || stderr.contains("/waku/2/rs/16/32"),
        "{stderr}"
    );

    // Usage errors exit 2: no peer id in the address, a bad content topic.
    let mut no_id = alone.tcp_addr();
    no_id.pop();
    for args in [
        vec![
            "--peer".to_string(),
            no_id.to_string(),
            "--content-topic".into(),
            "/a/1/b/c".into(),
        ],
        vec![
            "--peer".to_string(),
            alone.tcp_addr().to_string(),
            "--content-topic".into(),
            "not-a-topic".into(),
        ],
    ] {
        let mut full = vec!["publish".to_string()];
        full.extend(args);
        full.extend(["--payload".to_string(), "x".to_string()]);
        let out = run(full).await;
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim().lines().count(),
            1
        );
    }
}
