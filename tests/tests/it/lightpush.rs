//! Light push (v3 and legacy) against real nodes: relaying with autosharding, and every status
//! code a client can provoke, counted on /metrics by outcome.

use roost_node::{
    client::Client,
    lightpush::{self, Status, Version},
    message::WakuMessage,
    store::StoreQueryRequest,
    swarm::ReqResProtocol,
};
use roost_tests::{init_tracing, metric_sum, process::NodeProcess, TestNode, WAIT};

/// The pubsub topic a content topic autoshards to with the default config (cluster 1, 8 shards).
pub fn autoshard(content_topic: &str) -> String {
    roost_node::Config::default()
        .relay
        .autoshard(content_topic)
        .expect("valid content topic")
        .to_string()
}

/// Two connected nodes with a mesh on `topic`.
pub async fn pair(topic: &str) -> (TestNode, TestNode) {
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    a.connect(&b).await;
    a.wait_for_mesh(topic, 1).await;
    b.wait_for_mesh(topic, 1).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_push_without_topic_is_autosharded_relayed_and_reports_relay_peers() {
    init_tracing();
    let content_topic = "/roost/1/lightpush/proto";
    let topic = autoshard(content_topic);
    let (a, b) = pair(&topic).await;
    let mut at_b = b.handle.subscribe();
    let client = Client::start(1).await.unwrap();
    let message = WakuMessage::new(content_topic, b"pushed".to_vec());

    let reply = client
        .light_push(&a.tcp_addr(), Version::V3, None, &message)
        .await
        .expect("light push answered");
    assert_eq!(reply.status, Status::SUCCESS, "{reply:?}");
    assert_eq!(reply.relay_peer_count, Some(1));
    assert!(reply.is_success());

    let got = tokio::time::timeout(WAIT, at_b.recv())
        .await
        .expect("B receives the pushed message")
        .unwrap();
    assert_eq!(got.message, message);
    assert_eq!(&*got.pubsub_topic, topic.as_str());
    assert_eq!(got.hash, message.hash(&topic));

    let m = a.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_lightpush_requests_total",
            &[("version", "v3"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "roost_lightpush_request_duration_seconds_count",
            &[("version", "v3")]
        ),
        1.0
    );
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_push_is_relayed_and_refusals_carry_the_reason() {
    init_tracing();
    let content_topic = "/roost/1/legacy/proto";
    let topic = autoshard(content_topic);
    let (a, b) = pair(&topic).await;
    let mut at_b = b.handle.subscribe();
    let client = Client::start(1).await.unwrap();
    let message = WakuMessage::new(content_topic, b"legacy".to_vec());

    let reply = client
        .light_push(&a.tcp_addr(), Version::Legacy, Some(&topic), &message)
        .await
        .unwrap();
    assert!(reply.is_success(), "{reply:?}");
    let got = tokio::time::timeout(WAIT, at_b.recv())
        .await
        .expect("B receives")
        .unwrap();
    assert_eq!(got.hash, message.hash(&topic));

    let unserved = client
        .light_push(
            &a.tcp_addr(),
            Version::Legacy,
            Some("/waku/2/rs/1/99"),
            &WakuMessage::new(content_topic, b"x".to_vec()),
        )
        .await
        .unwrap();
    assert!(!unserved.is_success());
    assert!(
        unserved
            .description
            .as_deref()
            .unwrap_or_default()
            .contains("/waku/2/rs/1/99"),
        "{unserved:?}"
    );
    let m = a.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_lightpush_requests_total",
            &[("version", "legacy"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "roost_lightpush_requests_total",
            &[("version", "legacy"), ("outcome", "unsupported_topic")]
        ),
        1.0
    );
    client.stop().await;
}

/// Every refusal a client can provoke, with its v3 code and metric outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_refusals_have_the_documented_status_codes() {
    init_tracing();
    let content_topic = "/roost/1/codes/proto";
    let topic = autoshard(content_topic);
    let (a, _b) = pair(&topic).await;
    let client = Client::start(1).await.unwrap();
    let addr = a.tcp_addr();
    let push = |topic: Option<String>, message: WakuMessage| {
        let client = &client;
        let addr = addr.clone();
        async move {
            client
                .light_push(&addr, Version::V3, topic.as_deref(), &message)
                .await
                .expect("answered")
        }
    };

    // 400: not protobuf at all; the request id is unknown.
    let raw = client
        .request(ReqResProtocol::LightPush, &addr, vec![0xff, 0xff, 0xff])
        .await
        .unwrap();
    let reply = lightpush::decode_response(Version::V3, &raw).unwrap();
    assert_eq!(
        (reply.status, reply.request_id.as_str()),
        (Status::BAD_REQUEST, "N/A")
    );
    // 400: no message.
    let no_message = lightpush::LightPushRequestV3 {
        request_id: Some("nomsg".into()),
        pubsub_topic: Some(topic.clone()),
        message: None,
    };
    let raw = client
        .request(
            ReqResProtocol::LightPush,
            &addr,
            prost::Message::encode_to_vec(&no_message),
        )
        .await
        .unwrap();
    let reply = lightpush::decode_response(Version::V3, &raw).unwrap();
    assert_eq!(
        (reply.status, reply.request_id.as_str()),
        (Status::BAD_REQUEST, "nomsg")
    );
    // 400: an empty pubsub topic.
    let reply = push(
        Some(" ".into()),
        WakuMessage::new(content_topic, b"e".to_vec()),
    )
    .await;
    assert_eq!(reply.status, Status::BAD_REQUEST);
    // 421: a shard this node does not relay, and another cluster.
    for other in ["/waku/2/rs/1/100", "/waku/2/rs/2/0"] {
        let reply = push(
            Some(other.into()),
            WakuMessage::new(content_topic, b"u".to_vec()),
        )
        .await;
        assert_eq!(reply.status, Status::UNSUPPORTED_PUBSUB_TOPIC, "{other}");
    }
    // 413: one byte over relay.max_message_size.
    let big = WakuMessage::new(content_topic, vec![1u8; 150 * 1024]);
    let reply = push(Some(topic.clone()), big).await;
    assert_eq!(reply.status, Status::PAYLOAD_TOO_LARGE, "{reply:?}");
    // 420: a content topic that cannot be autosharded, or none at all on a named topic. (A
    // free-form content topic on a named topic is relayed, as nwaku relays it.)
    let reply = push(None, WakuMessage::new("no-slashes", b"t".to_vec())).await;
    assert_eq!(reply.status, Status::INVALID_MESSAGE);
    let reply = push(Some(topic.clone()), WakuMessage::new("", b"t".to_vec())).await;
    assert_eq!(reply.status, Status::INVALID_MESSAGE);
    // 420: meta over 64 bytes.
    let mut meta = WakuMessage::new(content_topic, b"m".to_vec());
    meta.meta = Some(vec![0u8; 65]);
    assert_eq!(
        push(Some(topic.clone()), meta).await.status,
        Status::INVALID_MESSAGE
    );
    // 505: the same message twice reaches no one, in nwaku's words.
    let once = WakuMessage::new(content_topic, b"once".to_vec());
    assert_eq!(push(None, once.clone()).await.status, Status::SUCCESS);
    let twice = push(None, once).await;
    assert_eq!(twice.status, Status::NO_PEERS_TO_RELAY, "{twice:?}");
    assert!(
        twice
            .description
            .as_deref()
            .is_some_and(|d| d.starts_with("not_published_to_any_peer")),
        "{twice:?}"
    );

    let m = a.metrics().await;
    for (outcome, n) in [
        ("bad_request", 3.0),
        ("unsupported_topic", 2.0),
        ("too_large", 1.0),
        ("invalid", 3.0),
        ("no_peers", 1.0),
        ("ok", 1.0),
    ] {
        assert_eq!(
            metric_sum(
                &m,
                "roost_lightpush_requests_total",
                &[("version", "v3"), ("outcome", outcome)]
            ),
            n,
            "outcome {outcome}:\n{m}"
        );
    }
    client.stop().await;
}

/// A node with no relay peers accepts the message locally but answers 505: it reached no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_relay_peers_answers_505() {
    init_tracing();
    let a = TestNode::start().await;
    let client = Client::start(1).await.unwrap();
    let message = WakuMessage::new("/roost/1/alone/proto", b"alone".to_vec());
    let reply = client
        .light_push(&a.tcp_addr(), Version::V3, None, &message)
        .await
        .unwrap();
    assert_eq!(reply.status, Status::NO_PEERS_TO_RELAY, "{reply:?}");
    assert!(!reply.is_success());
    let legacy = client
        .light_push(
            &a.tcp_addr(),
            Version::Legacy,
            None,
            &WakuMessage::new("/roost/1/alone/proto", b"again".to_vec()),
        )
        .await
        .unwrap();
    assert!(!legacy.is_success());
    let m = a.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_lightpush_requests_total",
            &[("outcome", "no_peers")]
        ),
        2.0
    );
    client.stop().await;
}

/// A request frame beyond the protocol's read limit is not read at all: the stream is reset and
/// the client sees an error, and the node goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_over_the_read_limit_are_dropped_without_harm() {
    init_tracing();
    let a = TestNode::start().await;
    let client = Client::start(1).await.unwrap();
    let huge = vec![0u8; 2 * 150 * 1024 + 64 * 1024 + 1];
    let result = client
        .request(ReqResProtocol::LightPush, &a.tcp_addr(), huge)
        .await;
    assert!(result.is_err(), "{result:?}");
    let reply = client
        .light_push(
            &a.tcp_addr(),
            Version::V3,
            None,
            &WakuMessage::new("/roost/1/after/proto", b"still here".to_vec()),
        )
        .await
        .expect("the node still answers");
    assert_eq!(reply.status, Status::NO_PEERS_TO_RELAY);
    client.stop().await;
}

/// On a store node a 200 means "stored": the message is in the archive the moment the answer
/// arrives, counted once. Messages the store does not keep (ephemeral) are answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_node_answers_200_only_once_the_message_is_stored() {
    init_tracing();
    let content_topic = "/roost/1/stored/proto";
    let topic = autoshard(content_topic);
    let a = TestNode::start().await;
    let b = TestNode::start_with(|c| c.store.enabled = false).await;
    a.connect(&b).await;
    a.wait_for_mesh(&topic, 1).await;
    let store = a.handle.store().expect("A is a store node").clone();
    let client = Client::start(1).await.unwrap();

    for (version, text) in [(Version::V3, "v3"), (Version::Legacy, "legacy")] {
        let message = WakuMessage::new(content_topic, text.as_bytes().to_vec());
        let reply = client
            .light_push(&a.tcp_addr(), version, Some(&topic), &message)
            .await
            .unwrap();
        assert!(reply.is_success(), "{reply:?}");
        let found = store
            .query(
                &StoreQueryRequest::new("check")
                    .hashes([message.hash(&topic)])
                    .include_data(true),
            )
            .await;
        assert_eq!(found.code(), 200);
        let entries = found.entries().unwrap();
        assert_eq!(entries.len(), 1, "{text}: stored before the answer");
        assert_eq!(entries[0].data.as_ref().unwrap().1, message);
    }

    let mut ephemeral = WakuMessage::new(content_topic, b"gone".to_vec());
    ephemeral.ephemeral = Some(true);
    let reply = client
        .light_push(&a.tcp_addr(), Version::V3, Some(&topic), &ephemeral)
        .await
        .unwrap();
    assert!(reply.is_success());
    let found = store
        .query(&StoreQueryRequest::new("eph").hashes([ephemeral.hash(&topic)]))
        .await;
    assert!(found.entries().unwrap().is_empty());

    let m = a.metrics().await;
    assert_eq!(
        metric_sum(&m, "roost_store_messages_stored_total", &[]),
        2.0,
        "{m}"
    );
    assert_eq!(
        metric_sum(
            &m,
            "roost_store_messages_rejected_total",
            &[("reason", "duplicate")]
        ),
        0.0,
        "the acknowledged insert is not a second copy"
    );
    client.stop().await;
}

/// kill -9 right after light-push 200s: after the restart every acknowledged message is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_push_200s_survive_kill_9() {
    init_tracing();
    let content_topic = "/roost/1/crash/proto";
    let topic = autoshard(content_topic);
    let data = tempfile::tempdir().unwrap();
    let relay = TestNode::start_with(|c| c.store.enabled = false).await;
    let client = Client::start(1).await.unwrap();
    let mut acknowledged = Vec::new();
    for cycle in 0..3 {
        let mut node = NodeProcess::start(data.path(), &["--store-sync", "true"]).await;
        let addr = node.tcp_addr();
        relay.handle.dial(addr.clone()).await.expect("dial");
        relay.wait_for_mesh(&topic, 1).await;
        for i in 0..30 {
            let message = WakuMessage::new(content_topic, format!("{cycle}/{i}").into_bytes());
            let reply = client
                .light_push(&addr, Version::V3, Some(&topic), &message)
                .await
                .expect("answered");
            assert!(reply.is_success(), "{reply:?}");
            acknowledged.push(message.hash(&topic));
        }
        node.kill9();
    }
    let node = NodeProcess::start(data.path(), &[]).await;
    let mut missing = Vec::new();
    for chunk in acknowledged.chunks(50) {
        let r = client
            .store_query(
                &node.tcp_addr(),
                &StoreQueryRequest::new("after")
                    .hashes(chunk.to_vec())
                    .limit(50),
            )
            .await
            .expect("the restarted node answers");
        let found: Vec<_> = r.entries().unwrap().iter().map(|e| e.hash).collect();
        missing.extend(chunk.iter().filter(|h| !found.contains(h)).copied());
    }
    assert!(
        missing.is_empty(),
        "{} of {} lost",
        missing.len(),
        acknowledged.len()
    );
    client.stop().await;
}

/// Over the per-peer quota a request gets 429 before it is decoded (the request id is unknown),
/// on both versions; another client still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_pushes_get_429_without_being_decoded() {
    init_tracing();
    let a = TestNode::start_with(|c| {
        c.throttle.lightpush = "2/1h per-peer".parse().unwrap();
        c.throttle.ban_threshold = 0;
    })
    .await;
    let client = Client::start(1).await.unwrap();
    let message = |n: u32| WakuMessage::new("/roost/1/quota/proto", n.to_be_bytes().to_vec());
    for n in 0..2 {
        let reply = client
            .light_push(&a.tcp_addr(), Version::V3, None, &message(n))
            .await
            .unwrap();
        assert_eq!(reply.status, Status::NO_PEERS_TO_RELAY, "served: {reply:?}");
    }
    let reply = client
        .light_push(&a.tcp_addr(), Version::V3, None, &message(2))
        .await
        .unwrap();
    assert_eq!(reply.status, Status::TOO_MANY_REQUESTS, "{reply:?}");
    assert_eq!(reply.request_id, lightpush::UNKNOWN_REQUEST_ID);
    // Garbage is not even looked at: still 429, not 400.
    let raw = client
        .request(ReqResProtocol::LightPush, &a.tcp_addr(), vec![0xff, 0xff])
        .await
        .unwrap();
    let reply = lightpush::decode_response(Version::V3, &raw).unwrap();
    assert_eq!(reply.status, Status::TOO_MANY_REQUESTS);
    let legacy = client
        .light_push(&a.tcp_addr(), Version::Legacy, None, &message(3))
        .await
        .unwrap();
    assert!(!legacy.is_success());
    assert_eq!(legacy.request_id, lightpush::UNKNOWN_REQUEST_ID);

    let other = Client::start(1).await.unwrap();
    let reply = other
        .light_push(&a.tcp_addr(), Version::V3, None, &message(4))
        .await
        .unwrap();
    assert_eq!(
        reply.status,
        Status::NO_PEERS_TO_RELAY,
        "another peer has its own quota"
    );
    let m = a.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_lightpush_requests_total",
            &[("outcome", "throttled")]
        ),
        3.0
    );
    client.stop().await;
    other.stop().await;
}
