//! Spam throttling across real nodes: per-IP connection limits against many identities,
//! bans (admin CLI, persistence, expiry), 429s before decoding, and the flood test.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use libp2p::PeerId;
use roost_node::{
    client::Client,
    message::{MessageHash, WakuMessage},
    store::rpc::StoreQueryRequest,
};
use roost_tests::{
    bare::{BareOptions, BarePeer},
    http_get, init_tracing, metric_sum, metric_value,
    process::{run_roost, NodeProcess},
    profiles, wait_until, TestNode, WAIT,
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
    // The client's side of every refused dial, shown if the node's count disagrees.
    let mut refused = Vec::new();
    for _ in 0..80 {
        // Each identity disconnects (is dropped) right away: only the rate counts.
        match bare_peer().await.connect(address.clone()).await {
            Ok(_) => admitted += 1,
            Err(error) => refused.push(error),
        }
    }
    assert_eq!(admitted, 30, "{refused:#?}");
    // On a busy machine a dial can fail on its side before the node has looked at the
    // connection at all (the full suite has shown one in 80, now and then): what the node
    // judged is what it saw, and every one of those past the first 30 is an ip_rate refusal.
    let seen_by_node = || async {
        metric_sum(
            &node.metrics().await,
            "roost_throttle_requests_total",
            &[("service", "connections")],
        )
    };
    let _ = wait_until(Duration::from_secs(5), || async {
        seen_by_node().await >= 80.0
    })
    .await;
    let seen = seen_by_node().await;
    assert!(seen >= 75.0, "the node saw only {seen} of 80 dials");
    let metrics = node.metrics().await;
    assert_eq!(
        metric_sum(
            &metrics,
            "roost_throttle_requests_total",
            &[("service", "connections"), ("outcome", "admitted")]
        ),
        30.0
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "roost_throttle_connections_refused_total",
            &[("reason", "ip_rate")]
        ),
        seen - 30.0,
        "the dials' errors: {refused:#?}\n{metrics}"
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

/// The flood test. Ten honest peers publish at a normal rate while one peer floods relay
/// messages at 100x its quota and a light client hammers store queries at 100x its quota:
/// every honest message is relayed and stored, the relay flood is dropped (Ignored, then
/// Rejected) and the store flood answered 429 without being served, both attackers end up
/// disconnected and banned, `/health` reports the heavy throttling, and the node's memory
/// stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooders_are_throttled_and_banned_while_honest_traffic_is_relayed_and_stored() {
    init_tracing();
    const RELAY_PER_S: u64 = 20;
    const STORE_PER_MIN: u64 = 30;
    const HONEST: usize = 10;
    const HONEST_ROUNDS: usize = 10;
    let flood_for = Duration::from_secs(HONEST_ROUNDS as u64 + 2);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
[throttle]
relay = "{RELAY_PER_S}/1s per-peer"
store = "{STORE_PER_MIN}/1m per-peer; 300/1s global"
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
        .expect("relay attacker connects");
    let store_attacker = Client::start(1).await.expect("store attacker starts");
    let store_attacker_id = store_attacker.handle().peer_id();
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

    // Relay flood: 100x the quota for the whole honest publishing phase.
    let relay_flood = async {
        let per_tick = RELAY_PER_S; // 100x the quota per second, in 100 ticks of 10 ms
        let mut sent = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let started = std::time::Instant::now();
        let mut i = 0u64;
        while started.elapsed() < flood_for {
            tick.tick().await;
            for _ in 0..per_tick {
                i += 1;
                let m = WakuMessage::new("/flood/1/spam/proto", format!("spam-{i}").into_bytes());
                if attacker.publish(TOPIC, m.encode_to_vec()).await.is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    };
    // Store flood: 100x the per-peer quota (30/min → 50/s).
    let store_flood = async {
        let (mut ok, mut throttled, mut failed) = (0u64, 0u64, 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let started = std::time::Instant::now();
        while started.elapsed() < flood_for {
            tick.tick().await;
            let request = StoreQueryRequest::new("hammer")
                .content(TOPIC, ["/honest/1/chat/proto"])
                .limit(100);
            match store_attacker.store_query(&node_addr, &request).await {
                Ok(r) if r.code() == 200 => ok += 1,
                Ok(r) if r.code() == 429 => throttled += 1,
                Ok(r) => panic!("unexpected store answer {} {}", r.code(), r.desc()),
                // Banned: the node refuses the connection.
                Err(_) => failed += 1,
            }
        }
        (ok, throttled, failed)
    };
    // The health component, read while the floods run.
    let health_seen = async {
        let mut heavy = false;
        let started = std::time::Instant::now();
        while started.elapsed() < flood_for && !heavy {
            let (_, body) = http_get(&format!("{http}/health")).await;
            let health: serde_json::Value = serde_json::from_str(&body).unwrap();
            heavy = health["components"]["throttle"]["detail"]["heavy_throttling"] == true
                && health["components"]["throttle"]["status"] == "degraded";
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        heavy
    };
    let publish_honest = async {
        let mut expected = HashMap::new();
        for round in 0..HONEST_ROUNDS {
            for (i, p) in honest.iter().enumerate() {
                let payload = format!("honest-{i}-{round}");
                let m = WakuMessage::new("/honest/1/chat/proto", payload.clone().into_bytes());
                p.publish(TOPIC, m.encode_to_vec())
                    .await
                    .expect("honest publish");
                expected.insert(payload, m.hash(TOPIC));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        expected
    };
    let (sent, (store_ok, store_429, store_failed), heavy, expected) =
        tokio::join!(relay_flood, store_flood, health_seen, publish_honest);
    assert!(
        sent >= 1000,
        "the relay attacker managed to send only {sent} messages"
    );
    assert!(heavy, "/health reported heavy throttling during the flood");

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
    let missing: Vec<_> = expected
        .keys()
        .filter(|p| !honest_seen.contains(*p))
        .collect();
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
    let allowed = RELAY_PER_S * (flood_for.as_secs() + 1);
    assert!(
        spam_seen <= allowed,
        "{spam_seen} of {sent} flood messages relayed (quota allows {allowed})"
    );

    // Every honest message is in the node's store (one honest reader, two hash queries).
    let reader = Client::start(1).await.expect("reader starts");
    let wanted: Vec<MessageHash> = expected.values().copied().collect();
    for chunk in wanted.chunks(100) {
        let request = StoreQueryRequest::new("check")
            .hashes(chunk.iter().copied())
            .include_data(false)
            .limit(100);
        let r = reader
            .store_query(&node_addr, &request)
            .await
            .expect("the store answers the honest reader");
        assert_eq!(r.code(), 200, "{}", r.desc());
        let found: HashSet<MessageHash> = r.entries().unwrap().iter().map(|e| e.hash).collect();
        let missing = chunk.iter().filter(|h| !found.contains(h)).count();
        assert_eq!(missing, 0, "honest messages missing from the store");
    }
    reader.stop().await;

    // The store flood got its burst and then 429s (unread), until it was banned.
    let store_allowed = STORE_PER_MIN + flood_for.as_secs() * STORE_PER_MIN / 60 + 1;
    assert!(
        store_ok <= store_allowed,
        "{store_ok} store queries served (quota allows {store_allowed})"
    );
    assert!(store_429 >= 1, "no 429 for the store flood");
    eprintln!(
        "relay flood: {sent} sent, {spam_seen} relayed; store flood: {store_ok} served, {store_429} × 429, {store_failed} refused"
    );

    // Both flooders are banned and disconnected; honest peers are not.
    let (_, bans) = http_get(&format!("{http}/admin/v1/bans")).await;
    let bans: Vec<serde_json::Value> = serde_json::from_str(&bans).unwrap();
    let banned: HashMap<String, String> = bans
        .iter()
        .map(|b| {
            (
                b["target"].as_str().unwrap().to_owned(),
                b["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(banned.len(), 2, "{bans:?}");
    // The relay flooder is banned by its offence score, or by gossipsub's once its Rejected
    // messages graylisted it; the store flooder by its offence score.
    let relay_reason = &banned[&attacker.peer_id.to_string()];
    assert!(
        relay_reason == "quota" || relay_reason == "score",
        "{bans:?}"
    );
    assert_eq!(banned[&store_attacker_id.to_string()], "quota", "{bans:?}");
    wait_until(WAIT, || async {
        !attacker.connected_peers().await.contains(&node_id)
    })
    .await
    .expect("relay flooder disconnected");
    wait_until(WAIT, || async {
        !store_attacker
            .handle()
            .network_status()
            .await
            .is_some_and(|s| s.connected_peers.contains(&node_id))
    })
    .await
    .expect("store flooder disconnected");
    for p in &honest {
        assert!(p.connected_peers().await.contains(&node_id));
    }
    assert!(
        store_attacker
            .store_query(
                &node_addr,
                &StoreQueryRequest::new("again").content(TOPIC, ["/honest/1/chat/proto"])
            )
            .await
            .is_err(),
        "the banned store flooder cannot reconnect"
    );
    store_attacker.stop().await;

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
    for (service, key) in [("relay", "peer"), ("store", "peer")] {
        assert!(
            metric_sum(
                &metrics,
                "roost_throttle_throttled_total",
                &[("service", service), ("key", key)]
            ) >= 1.0,
            "{service} throttled by {key}"
        );
    }
    assert!(
        metric_sum(
            &metrics,
            "roost_store_queries_total",
            &[("kind", "throttled")]
        ) >= 1.0
    );
    assert!(
        metric_sum(&metrics, "roost_throttle_peer_scores", &[]) >= HONEST as f64,
        "the score distribution covers the connected relay peers"
    );
    assert_eq!(
        metric_value(&metrics, "roost_throttle_bans_active{kind=\"peer\"}"),
        Some(2.0)
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

/// The shipped throttle defaults, with nothing spared: not even the harness's loopback
/// exemption, so every client here counts against one IP's limits like clients behind a NAT.
fn shipped_defaults(c: &mut roost_node::Config) {
    c.throttle = roost_node::throttle::Config::default();
}

/// Honest light clients against the shipped defaults (see README "Spam throttling and bans"
/// for the profiles): a history sync of 50 store pages back to back, a filter subscription to
/// 100 content topics re-subscribed every minute (two minutes of it back to back, which leaves
/// the buckets less time to refill than real minutes would), the same subscribed one topic per
/// call, a group message fanned out as 50 pushes in 2 s, then 20 clients behind one IP doing
/// all but the per-topic calls at once. Nothing is refused, nobody is banned (20 clients on
/// one IP put gossipsub's colocation penalty below graylist, which must not ban light
/// clients), and the peer the pushes are relayed to does not throttle them either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_client_profiles_pass_the_shipped_defaults() {
    init_tracing();
    const NAT_CLIENTS: usize = 20;
    const PAGES: usize = 50;
    const PAGE_SIZE: u64 = 2;
    let push_topic = "/roost-honest/1/group/proto";
    let history_topic = "/roost-honest/1/history/proto";
    let push_shard = crate::lightpush::autoshard(push_topic);
    let history_shard = crate::lightpush::autoshard(history_topic);
    let a = TestNode::start_with(shipped_defaults).await;
    // The relay peer is elsewhere, not behind the clients' NAT: gossipsub's IP colocation
    // penalty would rightly count it among the 20.
    let b = TestNode::start_with(|c| {
        shipped_defaults(c);
        c.network.listen_ip = [127, 0, 0, 2].into();
    })
    .await;
    a.connect(&b).await;
    a.wait_for_mesh(&push_shard, 1).await;
    let store = a.handle.store().expect("store node");
    let base = roost_node::message::now_nanos() - 60_000_000_000;
    for i in 0..(PAGES as i64 * PAGE_SIZE as i64) {
        let mut m = WakuMessage::new(history_topic, format!("history {i}").into_bytes());
        m.timestamp = Some(base + i * 1_000_000);
        store.insert(&history_shard, m).await.expect("stored");
    }
    let addr = a.tcp_addr();
    let shards = profiles::topics_by_shard("roost-honest", 100);

    // One client of each profile, one after another.
    let mut runs: Vec<(&str, profiles::ProfileRun)> = Vec::new();
    let client = Client::start(1).await.expect("client starts");
    let run = profiles::store_pages(
        &client,
        &addr,
        &history_shard,
        history_topic,
        PAGES,
        PAGE_SIZE,
    )
    .await;
    runs.push(("history sync, 50 pages", run));
    client.stop().await;
    let client = Client::start(1).await.expect("client starts");
    let run =
        profiles::filter_resubscribes(&client, &addr, &shards, false, 2, Duration::ZERO).await;
    runs.push(("filter, 100 topics re-subscribed", run));
    client.stop().await;
    let client = Client::start(1).await.expect("client starts");
    let run = profiles::filter_resubscribes(&client, &addr, &shards, true, 2, Duration::ZERO).await;
    runs.push(("filter, 100 topics one call each", run));
    client.stop().await;
    let client = Client::start(1).await.expect("client starts");
    let run =
        profiles::light_pushes(&client, &addr, push_topic, 50, Duration::from_millis(40)).await;
    runs.push(("fan-out, 50 pushes in 2 s", run));
    client.stop().await;

    // 20 clients behind one IP, all profiles at once.
    let mut nat = Vec::new();
    for _ in 0..NAT_CLIENTS {
        nat.push(Client::start(1).await.expect("client starts"));
    }
    let per_client = nat.iter().map(|client| {
        let (addr, shards, history_shard) = (&addr, &shards, &history_shard);
        async move {
            let mut run =
                profiles::light_pushes(client, addr, push_topic, 50, Duration::from_millis(40))
                    .await;
            run.merge(
                profiles::store_pages(client, addr, history_shard, history_topic, PAGES, PAGE_SIZE)
                    .await,
            );
            run.merge(
                profiles::filter_resubscribes(client, addr, shards, false, 1, Duration::ZERO).await,
            );
            run
        }
    });
    let mut run = profiles::ProfileRun::default();
    for r in futures::future::join_all(per_client).await {
        run.merge(r);
    }
    runs.push(("20 clients behind one IP", run));
    for client in nat {
        client.stop().await;
    }

    for (name, run) in &runs {
        eprintln!(
            "{name}: {} requests, {} refused, {} failed, p99 {:.1} ms",
            run.requests,
            run.refused,
            run.failed,
            run.quantile_ms(0.99)
        );
        assert!(run.requests > 0, "{name}: no requests");
        assert!(
            run.problems.is_empty(),
            "{name}: {} refused, {} failed: {:?}",
            run.refused,
            run.failed,
            &run.problems[..run.problems.len().min(10)]
        );
    }
    for (node, name) in [(&a, "service node"), (&b, "its relay peer")] {
        let m = node.metrics().await;
        assert_eq!(
            metric_sum(&m, "roost_throttle_throttled_total", &[]),
            0.0,
            "{name} throttled honest traffic"
        );
        assert_eq!(
            metric_sum(&m, "roost_throttle_connections_refused_total", &[]),
            0.0,
            "{name} refused honest connections"
        );
        assert!(ban_list(node).await.is_empty(), "{name} banned someone");
    }
}

/// nwaku's `--rate-limit` flag is accepted (repeatable) and lands in `throttle.rate_limit`;
/// a bad entry stops the node with one line naming the key and the syntax.
#[test]
fn nwaku_rate_limit_flags_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_roost(
        &[
            "config",
            "dump",
            "--rate-limit=store:100/1m",
            "--rate-limit",
            "30/1s",
            "--throttle-relay",
            "50/1s per-peer; 2000/1s global",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dumped: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    let throttle = dumped["throttle"].as_table().unwrap();
    assert_eq!(
        throttle["rate_limit"],
        toml::Value::Array(vec!["store:100/1m".into(), "30/1s".into()])
    );
    assert_eq!(
        throttle["relay"].as_str(),
        Some("50/1s per-peer; 2000/1s global")
    );

    let out = run_roost(
        &["config", "dump", "--rate-limit", "relay:5/1s"],
        dir.path(),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("throttle.rate_limit") && err.contains("unknown service `relay`"),
        "{err}"
    );
}
