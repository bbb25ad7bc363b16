//! Spam throttling across real nodes: per-IP connection limits against many identities,
//! bans (admin CLI, persistence, expiry) and the flood test.

use std::{collections::HashSet, time::Duration};

use libp2p::PeerId;
use roost_node::message::WakuMessage;
use roost_tests::{
    bare::{BareOptions, BarePeer},
    http_get, init_tracing, metric_sum, metric_value,
    process::{run_roost, NodeProcess},
    wait_until, TestNode, WAIT,
};

const TOPIC: &str = "/waku/2/rs/1/0";

/// Runs `roost ban <args> --http-address <node>` and returns (success, stdout, stderr).
fn roost_ban(http: &str, args: &[&str]) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut full = vec!["ban"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--http-address", http]);
    let out = run_roost(&full, dir.path());
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn http_addr(node: &TestNode) -> String {
    node.handle
        .info()
        .http_address
        .expect("HTTP endpoint")
        .to_string()
}

async fn ban_list(node: &TestNode) -> Vec<serde_json::Value> {
    let (status, body) = http_get(&format!("{}/admin/v1/bans", node.http_url())).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn bare_peer() -> BarePeer {
    BarePeer::start(BareOptions::default())
        .await
        .expect("bare peer starts")
}

/// One IP opening connections with 200 fresh peer ids: the node keeps at most
/// `max_connections_per_ip` of them, refuses the rest before the Noise handshake, and bans the
/// IP once the refusals add up, closing the connections it had let in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_identities_from_one_ip_hit_the_per_ip_limits() {
    init_tracing();
    let node = TestNode::start_with(|c| {
        c.throttle.exempt_ips.clear();
        c.throttle.max_connections_per_ip = 20;
        c.throttle.connections = "1000/1h per-ip".parse().unwrap();
        c.throttle.ban_threshold = 100;
        c.network.max_pending_connections = 300;
    })
    .await;
    let address = node.tcp_addr();
    let mut kept = Vec::new();
    let mut refused = 0usize;
    for _ in 0..200 {
        let peer = bare_peer().await;
        match peer.connect(address.clone()).await {
            Ok(_) => kept.push(peer),
            Err(_) => refused += 1,
        }
        let connected = node
            .handle
            .network_status()
            .await
            .map(|s| s.connected_peers.len())
            .unwrap_or(0);
        assert!(connected <= 20, "{connected} connections from one IP");
    }
    assert!(kept.len() <= 20, "{} identities got in", kept.len());
    assert!(refused >= 180, "only {refused} refused");
    let metrics = node.metrics().await;
    let by_count = metric_sum(
        &metrics,
        "roost_throttle_connections_refused_total",
        &[("reason", "ip_connections")],
    );
    assert!(by_count >= 1.0, "refusals by the per-IP count: {by_count}");
    // 100 refusals are 100 offence points: the IP is banned and its connections closed.
    wait_until(WAIT, || async {
        ban_list(&node)
            .await
            .iter()
            .any(|b| b["target"] == "127.0.0.1" && b["kind"] == "ip")
    })
    .await
    .expect("the IP is banned");
    wait_until(WAIT, || async {
        node.handle
            .network_status()
            .await
            .map(|s| s.connected_peers.is_empty())
            .unwrap_or(false)
    })
    .await
    .expect("connections from the banned IP are closed");
    assert!(bare_peer().await.connect(address).await.is_err());
    let metrics = node.metrics().await;
    assert!(
        metric_sum(
            &metrics,
            "roost_throttle_connections_refused_total",
            &[("reason", "banned_ip")]
        ) >= 1.0
    );
    assert_eq!(
        metric_value(&metrics, "roost_throttle_bans_active{kind=\"ip\"}"),
        Some(1.0)
    );
}

/// The new-connection rate per IP: with a burst of 30 and no refill within the test, exactly
/// 30 of 80 short-lived connections from one IP get in, the rest are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_from_one_ip_are_rate_limited() {
    init_tracing();
    let node = TestNode::start_with(|c| {
        c.throttle.exempt_ips.clear();
        c.throttle.max_connections_per_ip = 0;
        c.throttle.connections = "30/1h per-ip".parse().unwrap();
        c.throttle.ban_threshold = 0;
    })
    .await;
    let address = node.tcp_addr();
    let mut admitted = 0;
    for _ in 0..80 {
        // Each identity disconnects (is dropped) right away: only the rate counts.
        if bare_peer().await.connect(address.clone()).await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 30);
    let metrics = node.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "roost_throttle_connections_refused_total",
            &[("reason", "ip_rate")]
        ),
        50.0
    );
    assert!(
        ban_list(&node).await.is_empty(),
        "ban_threshold 0 never bans"
    );
}

/// `roost ban add` on a connected peer: it is disconnected, refused while banned, and let in
/// again after `roost ban remove`; bad targets get a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_peers_are_disconnected_and_refused_until_unbanned() {
    init_tracing();
    let node = TestNode::start().await;
    let http = http_addr(&node);
    let peer = bare_peer().await;
    let id = peer.peer_id;
    peer.connect(node.tcp_addr()).await.expect("connects");
    wait_until(WAIT, || async { node.connected_to(id).await })
        .await
        .expect("the node sees the peer");

    let (ok, out, err) = {
        let (http, target) = (http.clone(), id.to_string());
        tokio::task::spawn_blocking(move || roost_ban(&http, &["add", &target, "--duration", "1h"]))
            .await
            .unwrap()
    };
    assert!(ok, "ban add failed: {err}");
    assert!(out.contains(&id.to_string()), "{out}");
    wait_until(WAIT, || async { !node.connected_to(id).await })
        .await
        .expect("banned peer is disconnected");
    assert!(
        peer.connect(node.tcp_addr()).await.is_err() || {
            // The handshake may complete before the node closes the connection.
            wait_until(WAIT, || async { !node.connected_to(id).await })
                .await
                .is_ok()
        }
    );
    wait_until(WAIT, || async {
        metric_sum(
            &node.metrics().await,
            "roost_throttle_connections_refused_total",
            &[("reason", "banned_peer")],
        ) >= 1.0
    })
    .await
    .expect("reconnection refused as banned");

    let (ok, list, _) = {
        let http = http.clone();
        tokio::task::spawn_blocking(move || roost_ban(&http, &["list"]))
            .await
            .unwrap()
    };
    assert!(ok);
    assert!(
        list.contains(&id.to_string()) && list.contains("manual"),
        "{list}"
    );

    let (ok, _, err) = {
        let (http, target) = (http.clone(), id.to_string());
        tokio::task::spawn_blocking(move || roost_ban(&http, &["remove", &target]))
            .await
            .unwrap()
    };
    assert!(ok, "{err}");
    peer.connect(node.tcp_addr())
        .await
        .expect("connects again once unbanned");

    let (ok, _, err) = {
        let http = http.clone();
        tokio::task::spawn_blocking(move || roost_ban(&http, &["add", "not-a-peer"]))
            .await
            .unwrap()
    };
    assert!(!ok);
    assert!(err.contains("neither a peer id"), "{err}");
    let (ok, _, err) = {
        let (http, target) = (http.clone(), PeerId::random().to_string());
        tokio::task::spawn_blocking(move || roost_ban(&http, &["remove", &target]))
            .await
            .unwrap()
    };
    assert!(!ok);
    assert!(err.contains("is not banned"), "{err}");
}

/// Bans survive a restart; one that expired while the node was down is gone after it, and an
/// expired ban lets the peer back in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_persist_across_restarts_and_expire() {
    init_tracing();
    let node = TestNode::start().await;
    let long = PeerId::random();
    let short = PeerId::random();
    let ip = "203.0.113.7";
    let http = http_addr(&node);
    for (target, duration) in [
        (long.to_string(), "1d"),
        (short.to_string(), "3s"),
        (ip.to_owned(), "1d"),
    ] {
        let http = http.clone();
        let (ok, _, err) = tokio::task::spawn_blocking(move || {
            roost_ban(&http, &["add", &target, "--duration", duration])
        })
        .await
        .unwrap();
        assert!(ok, "{err}");
    }
    assert_eq!(ban_list(&node).await.len(), 3);
    let dir = node.stop().await;
    // Wait (polling the clock, not sleeping blindly) until the short ban has expired.
    let expired_at = std::time::Instant::now() + Duration::from_secs(3);
    wait_until(WAIT, || async { std::time::Instant::now() > expired_at })
        .await
        .unwrap();

    let node = TestNode::start_in(dir, |_| {}).await;
    let list = ban_list(&node).await;
    let targets: HashSet<String> = list
        .iter()
        .map(|b| b["target"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        targets,
        HashSet::from([long.to_string(), ip.to_owned()]),
        "the long bans survive the restart, the expired one does not apply"
    );

    // An automatic ban that expires lets the peer back in.
    let peer = bare_peer().await;
    let id = peer.peer_id;
    peer.connect(node.tcp_addr()).await.unwrap();
    wait_until(WAIT, || async { node.connected_to(id).await })
        .await
        .expect("the node sees the peer");
    let http = http_addr(&node);
    let (ok, _, err) = {
        let target = id.to_string();
        tokio::task::spawn_blocking(move || roost_ban(&http, &["add", &target, "--duration", "2s"]))
            .await
            .unwrap()
    };
    assert!(ok, "{err}");
    wait_until(WAIT, || async { !node.connected_to(id).await })
        .await
        .expect("disconnected while banned");
    wait_until(WAIT, || async {
        !ban_list(&node)
            .await
            .iter()
            .any(|b| b["target"] == id.to_string().as_str())
    })
    .await
    .expect("the ban expires");
    peer.connect(node.tcp_addr())
        .await
        .expect("an expired ban lets the peer in");
}

/// A peer flooding relay messages at 100x its quota while ten honest peers publish at a
/// normal rate: every honest message is relayed, the flood is dropped (Ignored, then
/// Rejected), the flooder is disconnected and banned, and the node's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_flooder_is_throttled_then_banned_while_honest_traffic_flows() {
    init_tracing();
    const QUOTA_PER_S: u32 = 20;
    const HONEST: usize = 10;
    const HONEST_MESSAGES: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[throttle]
relay = "{QUOTA_PER_S}/1s per-peer"
# Every test peer connects from 127.0.0.1.
exempt_ips = ["127.0.0.1"]
"#
    );
    let config_path = dir.path().join("roost.toml");
    std::fs::write(&config_path, config).unwrap();
    let node = NodeProcess::start(
        &dir.path().join("data"),
        &["--config", config_path.to_str().unwrap()],
    )
    .await;
    let http = node.http.clone();
    let node_addr = node.tcp_addr();
    let node_id = node.peer_id();

    let mut sink = bare_peer().await;
    sink.connect(node_addr.clone())
        .await
        .expect("sink connects");
    let mut honest = Vec::new();
    for _ in 0..HONEST {
        let p = bare_peer().await;
        p.connect(node_addr.clone())
            .await
            .expect("honest peer connects");
        honest.push(p);
    }
    let attacker = bare_peer().await;
    attacker
        .connect(node_addr.clone())
        .await
        .expect("attacker connects");
    // Publishers flood-publish to the node whether or not it keeps them in its mesh; the sink
    // gets messages through the mesh or gossip. Wait until the node sees every subscription.
    let subscribed = format!("roost_relay_topic_peers{{shard=\"{TOPIC}\"}}");
    wait_until(WAIT, || async {
        let (_, metrics) = http_get(&format!("{http}/metrics")).await;
        metric_value(&metrics, &subscribed) >= Some((HONEST + 2) as f64)
    })
    .await
    .expect("the node sees every peer's subscription");
    let rss_before = node.rss_bytes().expect("rss");

    // The attacker floods at 100x its quota for the whole honest publishing phase.
    let flood = {
        let attacker_msgs = (0..u32::MAX).map(|i| {
            WakuMessage::new("/flood/1/spam/proto", format!("spam-{i}").into_bytes())
                .encode_to_vec()
        });
        let rate = QUOTA_PER_S as u64 * 100;
        async move {
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let started = std::time::Instant::now();
            let mut msgs = attacker_msgs;
            while started.elapsed() < Duration::from_secs(HONEST_MESSAGES as u64 + 2) {
                tick.tick().await;
                for _ in 0..rate / 100 {
                    let Some(m) = msgs.next() else { break };
                    if attacker.publish(TOPIC, m).await.is_ok() {
                        sent += 1;
                    }
                }
            }
            (attacker, sent)
        }
    };
    let publish_honest = async {
        let mut expected = HashSet::new();
        for round in 0..HONEST_MESSAGES {
            for (i, p) in honest.iter().enumerate() {
                let payload = format!("honest-{i}-{round}");
                let data = WakuMessage::new("/honest/1/chat/proto", payload.clone().into_bytes())
                    .encode_to_vec();
                p.publish(TOPIC, data).await.expect("honest publish");
                expected.insert(payload);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        expected
    };
    let ((attacker, sent), expected) = tokio::join!(flood, publish_honest);
    assert!(
        sent >= 1000,
        "the attacker managed to send only {sent} messages"
    );

    // Every honest message reaches the sink through the node; the flood mostly does not.
    let mut honest_seen = HashSet::new();
    let mut spam_seen = 0u64;
    let deadline = std::time::Instant::now() + WAIT;
    while honest_seen.len() < expected.len() && std::time::Instant::now() < deadline {
        if let Some(m) = sink.next_message(Duration::from_millis(500)).await {
            let payload = WakuMessage::decode(m.data.as_slice())
                .map(|w| String::from_utf8_lossy(&w.payload).into_owned())
                .unwrap_or_default();
            if payload.starts_with("honest-") {
                honest_seen.insert(payload);
            } else {
                spam_seen += 1;
            }
        }
    }
    let missing: Vec<_> = expected.difference(&honest_seen).collect();
    assert!(
        missing.is_empty(),
        "honest messages not relayed: {missing:?}"
    );
    while let Some(m) = sink.next_message(Duration::from_millis(200)).await {
        if !String::from_utf8_lossy(&m.data).contains("honest-") {
            spam_seen += 1;
        }
    }
    // At most the burst plus the quota rate over the flood passes.
    let allowed = QUOTA_PER_S as u64 * (HONEST_MESSAGES as u64 + 3);
    assert!(
        spam_seen <= allowed,
        "{spam_seen} of {sent} flood messages relayed (quota allows {allowed})"
    );

    // The flooder is banned and disconnected; honest peers are not.
    let (_, bans) = http_get(&format!("{http}/admin/v1/bans")).await;
    let bans: Vec<serde_json::Value> = serde_json::from_str(&bans).unwrap();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0]["target"], attacker.peer_id.to_string().as_str());
    // Banned by its offence score, or by gossipsub's once its Rejected messages graylisted it.
    assert!(
        bans[0]["reason"] == "quota" || bans[0]["reason"] == "score",
        "{bans:?}"
    );
    wait_until(WAIT, || async {
        !attacker.connected_peers().await.contains(&node_id)
    })
    .await
    .expect("flooder disconnected");
    for p in &honest {
        assert!(p.connected_peers().await.contains(&node_id));
    }
    assert!(
        attacker.connect(node_addr.clone()).await.is_err() || {
            wait_until(WAIT, || async {
                !attacker.connected_peers().await.contains(&node_id)
            })
            .await
            .is_ok()
        }
    );

    let (_, metrics) = http_get(&format!("{http}/metrics")).await;
    let verdict = |result: &str| {
        metric_sum(
            &metrics,
            "roost_relay_messages_validated_total",
            &[("result", result), ("reason", "throttled")],
        )
    };
    assert!(
        verdict("ignore") >= 1.0,
        "over-quota messages are Ignored first"
    );
    assert!(verdict("reject") >= 1.0, "then Rejected");
    assert!(
        metric_sum(
            &metrics,
            "roost_throttle_throttled_total",
            &[("service", "relay"), ("key", "peer")]
        ) >= 1.0
    );

    let rss_after = node.rss_bytes().expect("rss");
    let growth = rss_after.saturating_sub(rss_before);
    assert!(
        growth < 64 * 1024 * 1024,
        "RSS grew by {} MiB during the flood ({} → {} MiB)",
        growth >> 20,
        rss_before >> 20,
        rss_after >> 20
    );
}
