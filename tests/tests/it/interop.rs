//! js-waku (`@waku/sdk`, pinned in tests/interop/package-lock.json) as a real light client of
//! Roost nodes. It connects with nothing but a node's WebSocket multiaddr, then light pushes
//! (v3 and legacy) and reads back from the store with the same message hashes, receives through
//! filter what another client pushed, pages through history both ways, and finds a second node
//! through peer exchange over secure WebSocket.
//!
//! The client is installed from npm by `scripts/interop-setup` (which `scripts/test` runs; these
//! tests run it too if the client is missing).

use std::collections::BTreeSet;

use libp2p::{Multiaddr, PeerId};
use roost_node::{
    client::Client, lightpush::Version, message::WakuMessage, store::StoreQueryRequest,
};
use roost_tests::{init_tracing, metric_sum, TestNode};
use serde_json::{json, Value};

use crate::{
    js::{hashes, hex, Js},
    lightpush::{autoshard, pair},
    peer_exchange::self_signed_cert,
};

/// js-waku light pushes five messages over v3 and three over legacy to a store node, then
/// queries that node's store: every push succeeded, and the store returns exactly those
/// messages with the hashes @waku/message-hash computed. Roost's own store query agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_waku_light_pushes_and_finds_its_messages_in_the_store() {
    init_tracing();
    let content_topic = "/roost-interop/1/push/proto";
    let topic = autoshard(content_topic);
    let a = TestNode::start().await;
    let b = TestNode::start_with(|c| c.store.enabled = false).await;
    a.connect(&b).await;
    a.wait_for_mesh(&topic, 1).await;

    let js = Js::start(
        "push-and-store",
        json!({"peer": a.ws_addr().to_string(), "contentTopic": content_topic, "count": 5, "legacyCount": 3}),
        &[],
    );
    let (_js, result) = js.event("result").await;
    assert_eq!(result["pubsubTopic"], topic.as_str(), "same autosharding");
    assert_eq!(result["failures"], json!([]), "{result}");
    let pushed: BTreeSet<String> = hashes(&result["pushed"]).into_iter().collect();
    let stored: BTreeSet<String> = hashes(&result["stored"]).into_iter().collect();
    assert_eq!(pushed.len(), 8);
    assert_eq!(
        stored, pushed,
        "the store returns what was pushed, same hashes"
    );

    let ours = a
        .handle
        .store()
        .expect("store node")
        .query(
            &StoreQueryRequest::new("roost")
                .content(topic.clone(), [content_topic])
                .limit(100),
        )
        .await;
    let ours: BTreeSet<String> = ours
        .entries()
        .unwrap()
        .iter()
        .map(|e| hex(&e.hash))
        .collect();
    assert_eq!(ours, pushed, "Roost's hashes are js-waku's");
    let m = a.metrics().await;
    for (version, n) in [("v3", 5.0), ("legacy", 3.0)] {
        assert_eq!(
            metric_sum(
                &m,
                "roost_lightpush_requests_total",
                &[("version", version), ("outcome", "ok")]
            ),
            n,
            "{version}"
        );
    }
}

/// js-waku checks that its messages were stored the way apps and reliability layers do:
/// `store.queryGenerator([decoder], { messageHashes })`, which sends the decoder's pubsub topic
/// along with the hashes. With data it gets every message it pushed back (and nothing for a
/// hash nobody pushed); without data (`includeData: false`) it counts them present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_waku_finds_its_messages_by_hash() {
    init_tracing();
    let content_topic = "/roost-interop/1/lookup/proto";
    let topic = autoshard(content_topic);
    let (a, _b) = pair(&topic).await;
    let js = Js::start(
        "hash-lookup",
        json!({"peer": a.ws_addr().to_string(), "contentTopic": content_topic, "count": 5}),
        &[],
    );
    let (js, result) = js.event("result").await;
    assert_eq!(result["pubsubTopic"], topic.as_str());
    let pushed: BTreeSet<String> = hashes(&result["pushed"]).into_iter().collect();
    let found: BTreeSet<String> = hashes(&result["found"]).into_iter().collect();
    assert_eq!(pushed.len(), 5);
    assert_eq!(found, pushed, "{}", js.logs());
    assert_eq!(result["present"], 5, "presence check without data");
    let m = a.metrics().await;
    let queries = |kind: &str, status: &str| {
        metric_sum(
            &m,
            "roost_store_queries_total",
            &[("kind", kind), ("status", status)],
        )
    };
    assert!(queries("lookup", "200") >= 1.0, "{m}");
    assert!(queries("presence", "200") >= 1.0, "{m}");
    assert_eq!(queries("invalid", "400"), 0.0, "no lookup was refused");
}

/// js-waku subscribes through filter at B; a Roost client light pushes at A; js-waku receives
/// every message, with the hash Roost computed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_waku_filter_receives_what_another_client_pushed() {
    init_tracing();
    let content_topic = "/roost-interop/1/filter/proto";
    let topic = autoshard(content_topic);
    let (a, b) = pair(&topic).await;
    let js = Js::start(
        "filter",
        json!({"peer": b.ws_addr().to_string(), "contentTopic": content_topic, "count": 3}),
        &[],
    );
    let (js, _) = js.event("ready").await;
    let publisher = Client::start(1).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..3 {
        let message = WakuMessage::new(content_topic, format!("to js-waku {i}").into_bytes());
        let reply = publisher
            .light_push(&a.tcp_addr(), Version::V3, None, &message)
            .await
            .unwrap();
        assert!(reply.is_success(), "{reply:?}");
        sent.push((hex(&message.hash(&topic)), format!("to js-waku {i}")));
    }
    let (_js, result) = js.event("result").await;
    let received: BTreeSet<(String, String)> = result["received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["hash"].as_str().unwrap().to_owned(),
                r["payload"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(received, sent.into_iter().collect());
    // Counted once each push stream is written and closed, which may be just after js-waku
    // printed the messages.
    roost_tests::wait_until(roost_tests::WAIT, || async {
        metric_sum(&b.metrics().await, "roost_filter_pushes_total", &[]) == 3.0
    })
    .await
    .expect("three pushes counted");
    publisher.stop().await;
}

/// 25 stored messages, pages of 10: forward pages are oldest first; backward pages start at the
/// newest; each page is in ascending order, and both ways cover the same 25 messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_waku_pages_through_history_both_ways() {
    init_tracing();
    let content_topic = "/roost-interop/1/history/proto";
    let topic = autoshard(content_topic);
    let a = TestNode::start().await;
    let base = roost_node::message::now_nanos() - 10_000_000_000;
    let mut expected = Vec::new();
    for i in 0..25i64 {
        let mut message = WakuMessage::new(content_topic, format!("history {i}").into_bytes());
        message.timestamp = Some(base + i * 1_000_000);
        let outcome = a
            .handle
            .store()
            .unwrap()
            .insert(&topic, message.clone())
            .await
            .unwrap();
        assert_eq!(outcome, roost_node::store::InsertOutcome::Stored);
        expected.push(hex(&message.hash(&topic)));
    }
    let js = Js::start(
        "store-pages",
        json!({"peer": a.ws_addr().to_string(), "contentTopic": content_topic, "pageSize": 10}),
        &[],
    );
    let (_js, result) = js.event("result").await;
    let pages = |key: &str| -> Vec<Vec<String>> {
        result[key].as_array().unwrap().iter().map(hashes).collect()
    };
    let forward = pages("forward");
    assert_eq!(
        forward,
        vec![
            expected[0..10].to_vec(),
            expected[10..20].to_vec(),
            expected[20..25].to_vec()
        ]
    );
    let backward = pages("backward");
    assert_eq!(
        backward,
        vec![
            expected[15..25].to_vec(),
            expected[5..15].to_vec(),
            expected[0..5].to_vec()
        ]
    );
}

/// Two nodes serving secure WebSocket; js-waku, knowing only A's `/wss` address (and keeping its
/// browser default of dialling wss only), learns B's ENR from A by peer exchange and connects
/// to B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_waku_finds_a_second_node_by_peer_exchange_over_wss() {
    init_tracing();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_cert(certs.path());
    let tls = |c: &mut roost_node::Config| {
        c.network.ws_tls_cert = Some(cert.clone());
        c.network.ws_tls_key = Some(key.clone());
    };
    let b = TestNode::start_with(tls).await;
    let (_, info) = roost_tests::http_get(&format!("{}/debug/v1/info", b.http_url())).await;
    let b_enr = serde_json::from_str::<Value>(&info).unwrap()["enr"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = TestNode::start_with(|c| {
        tls(c);
        c.peer_exchange.enrs = vec![b_enr];
    })
    .await;
    let a_wss: Multiaddr = a.ws_addr();
    assert!(a_wss.to_string().contains("/wss/"), "{a_wss}");
    let b_id: PeerId = b.handle.peer_id();

    let cert_path = cert.display().to_string();
    let js = Js::start(
        "peer-exchange",
        json!({"peer": a_wss.to_string(), "expect": b_id.to_string(), "plainWs": false}),
        &[("NODE_EXTRA_CA_CERTS", &cert_path)],
    );
    let (_js, result) = js.event("result").await;
    let connected: Vec<String> = hashes(&result["connected"]);
    assert!(
        connected.contains(&a.handle.peer_id().to_string()),
        "{result}"
    );
    assert!(connected.contains(&b_id.to_string()), "{result}");
    let m = a.metrics().await;
    assert!(metric_sum(&m, "roost_peer_exchange_enrs_sent_total", &[]) >= 1.0);
}

/// js-waku, unmodified and with its default send options, light pushes the way an app does
/// after reconnecting: 35 messages at once (an outbox resent, a group message fanned out),
/// then 200 in a loop as fast as it goes, against nodes running the shipped throttle defaults
/// (not even the harness's loopback exemption). Every push succeeds: js-waku would report a
/// refusal as a plain failure. Nothing is throttled at the service node nor at the relay peer
/// it forwards the pushes to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_waku_push_bursts_pass_the_shipped_throttle_defaults() {
    init_tracing();
    let content_topic = "/roost-interop/1/burst/proto";
    let topic = autoshard(content_topic);
    let shipped = |c: &mut roost_node::Config| c.throttle = roost_node::throttle::Config::default();
    let a = TestNode::start_with(shipped).await;
    let b = TestNode::start_with(shipped).await;
    a.connect(&b).await;
    a.wait_for_mesh(&topic, 1).await;

    let js = Js::start(
        "push-burst",
        json!({"peer": a.ws_addr().to_string(), "contentTopic": content_topic, "burst": 35, "loop": 200}),
        &[],
    );
    let (_js, result) = js.event("result").await;
    let failures = result["failures"].as_array().cloned().unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} of 235 pushes failed in {} ms; the first: {:?}",
        failures.len(),
        result["elapsedMs"],
        &failures[..failures.len().min(5)]
    );
    assert_eq!(result["pushed"], 235, "{result}");
    let m = a.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_lightpush_requests_total",
            &[("outcome", "throttled")]
        ),
        0.0
    );
    for (node, name) in [(&a, "service node"), (&b, "relay peer")] {
        let m = node.metrics().await;
        assert_eq!(
            metric_sum(&m, "roost_throttle_throttled_total", &[]),
            0.0,
            "{name} throttled the pushes"
        );
    }
}
