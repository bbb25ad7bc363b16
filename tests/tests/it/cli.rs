//! The `roost` binary as an operator runs it: defaults, health, metrics, clean exit, and bad
//! configs that exit with one line naming the problem.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    time::{Duration, Instant},
};

use roost_tests::{
    http_get,
    process::{roost_command, run_roost},
    RoostProcess,
};

/// The last line the process wrote to stderr.
fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned()
}

/// `roost run` in an empty directory: defaults everywhere except the ports, which are taken
/// from the environment so parallel tests never collide.
#[test]
fn run_starts_serves_health_and_metrics_and_exits_cleanly_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = roost_command(&["run"], dir.path());
    cmd.env("ROOST_NETWORK_TCP_PORT", "0")
        .env("ROOST_NETWORK_WS_PORT", "0")
        .env("ROOST_NETWORK_LISTEN_IP", "127.0.0.1")
        .env("ROOST_HTTP_ADDRESS", "127.0.0.1:0")
        .env("ROOST_REST_ADDRESS", "127.0.0.1:0")
        .env("ROOST_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped());
    let mut process = RoostProcess {
        child: cmd.spawn().expect("spawn roost"),
    };
    let stderr = process.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut http = None;
    let mut peer_id = None;
    let mut logs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let json: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
            if json["message"] == "roost node started" {
                http = json["http"].as_str().map(|s| {
                    s.trim_start_matches("Some(")
                        .trim_end_matches(')')
                        .to_owned()
                });
                peer_id = json["peer_id"].as_str().map(str::to_owned);
            }
            logs.push(line);
        }
    }
    let http = http.unwrap_or_else(|| panic!("no start-up line; logs: {logs:#?}"));
    let peer_id = peer_id.unwrap();
    assert!(
        logs.iter()
            .any(|l| l.contains("listening on") && l.contains(&format!("/p2p/{peer_id}"))),
        "full multiaddrs are logged: {logs:#?}"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(http_get(&format!("http://{http}/health")));
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    let (_, metrics) = rt.block_on(http_get(&format!("http://{http}/metrics")));
    assert!(metrics.contains("libp2p_swarm_"), "libp2p metrics present");
    assert!(
        metrics.contains("roost_build_info"),
        "roost metrics present"
    );
    assert!(metrics.contains("roost_relay_"), "relay metrics present");
    let (_, info) = rt.block_on(http_get(&format!("http://{http}/debug/v1/info")));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["peer_id"], peer_id.as_str());
    assert_eq!(info["cluster_id"], 1);

    let key = dir.path().join("roost-data").join("node.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let started = Instant::now();
    process.signal("INT");
    let status = process
        .wait_timeout(Duration::from_secs(5))
        .expect("exits within 5 s");
    assert!(status.success(), "clean exit, got {status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn unknown_config_key_exits_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("roost.toml"), "[relay]\nclusterid = 16\n").unwrap();
    let out = run_roost(&["run", "--config", "roost.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("`relay.clusterid`"), "{stderr}");
    assert!(stderr.contains("roost.example.toml"), "{stderr}");
}

#[test]
fn bad_multiaddr_exits_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_roost(&["run", "--peer", "/ip4/1.2.3.4/tcpp/1"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("network.peers") && stderr.contains("--network-peers"),
        "{stderr}"
    );
}

#[test]
fn port_in_use_exits_with_one_line_naming_the_port_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run_roost(
        &[
            "run",
            "--network-listen-ip",
            "127.0.0.1",
            "--tcp-port",
            &port,
            "--ws-port",
            "0",
            "--http-address",
            "127.0.0.1:0",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let line = last_line(&out.stderr);
    assert!(line.starts_with("error: "), "{line}");
    assert!(
        line.contains(&format!("port {port} is already in use")),
        "{line}"
    );
    assert!(line.contains("--tcp-port"), "{line}");
}

#[test]
fn config_dump_shows_the_layers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("roost.toml"),
        "[relay]\ncluster_id = 16\nshards = [32]\n",
    )
    .unwrap();
    let out = roost_command(
        &["config", "dump", "-c", "roost.toml", "--ws-port", "9"],
        dir.path(),
    )
    .env("ROOST_RELAY_MAX_MESSAGE_SIZE", "1MiB")
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumped: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(dumped["relay"]["cluster_id"].as_integer(), Some(16));
    assert_eq!(dumped["relay"]["max_message_size"].as_str(), Some("1MiB"));
    assert_eq!(dumped["network"]["ws_port"].as_integer(), Some(9));
    assert_eq!(dumped["network"]["tcp_port"].as_integer(), Some(60000));
}
