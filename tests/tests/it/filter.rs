//! Filter against real nodes: pushes of relayed messages to subscribers, every status code,
//! the per-node and per-peer caps, lapsing subscriptions and subscribers' connections kept open.

use std::time::Duration;

use roost_node::{
    client::Client,
    filter::{self, RequestType, Status},
    lightpush::Version,
    message::WakuMessage,
    swarm::ReqResProtocol,
};
use roost_tests::{init_tracing, metric_sum, wait_until, TestNode, WAIT};

use crate::lightpush::{autoshard, pair};

fn topics(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// A client subscribed at B receives, with the same hash, what another client light-pushed at
/// A; after unsubscribing one content topic it receives only the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_receive_messages_pushed_elsewhere_in_the_network() {
    init_tracing();
    let chat = "/roost/1/chat/proto";
    let news = "/roost/1/news/proto";
    let topic = autoshard(chat);
    assert_eq!(topic, autoshard(news), "same app and version: same shard");
    let (a, b) = pair(&topic).await;
    let subscriber = Client::start(1).await.unwrap();
    let publisher = Client::start(1).await.unwrap();
    let mut pushes = subscriber.handle().filter_pushes();

    let reply = subscriber
        .filter(
            &b.tcp_addr(),
            RequestType::Subscribe,
            Some(&topic),
            &topics(&[chat, news]),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, Status::OK, "{reply:?}");

    let message = WakuMessage::new(chat, b"hello subscribers".to_vec());
    let pushed = publisher
        .light_push(&a.tcp_addr(), Version::V3, None, &message)
        .await
        .unwrap();
    assert!(pushed.is_success(), "{pushed:?}");
    let got = tokio::time::timeout(WAIT, pushes.recv())
        .await
        .expect("push arrives")
        .unwrap();
    assert_eq!(got.peer, b.handle.peer_id());
    assert_eq!(got.pubsub_topic, topic);
    assert_eq!(got.message, message);
    assert_eq!(got.hash, message.hash(&topic));

    let reply = subscriber
        .filter(
            &b.tcp_addr(),
            RequestType::Unsubscribe,
            Some(&topic),
            &topics(&[chat]),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, Status::OK);
    let unwanted = WakuMessage::new(chat, b"not for you".to_vec());
    let wanted = WakuMessage::new(news, b"news".to_vec());
    for m in [&unwanted, &wanted] {
        let r = publisher
            .light_push(&a.tcp_addr(), Version::V3, None, m)
            .await
            .unwrap();
        assert!(r.is_success());
    }
    let got = tokio::time::timeout(WAIT, pushes.recv())
        .await
        .expect("news arrives")
        .unwrap();
    // The filter task handles messages in order: the unsubscribed one matched no one.
    assert_eq!(
        got.message, wanted,
        "only the still-subscribed topic is pushed"
    );

    // The service counts a push once its stream is written and closed, which may be just
    // after the subscriber saw the message.
    wait_until(WAIT, || async {
        metric_sum(&b.metrics().await, "roost_filter_pushes_total", &[]) == 2.0
    })
    .await
    .expect("two pushes counted");
    let m = b.metrics().await;
    assert_eq!(metric_sum(&m, "roost_filter_subscribed_peers", &[]), 1.0);
    assert_eq!(metric_sum(&m, "roost_filter_criteria", &[]), 1.0);
    assert_eq!(
        metric_sum(
            &m,
            "roost_filter_requests_total",
            &[("type", "subscribe"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "roost_filter_push_duration_seconds_count", &[]),
        2.0
    );
    subscriber.stop().await;
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_get_the_documented_status_codes() {
    init_tracing();
    let node = TestNode::start().await;
    let client = Client::start(1).await.unwrap();
    let addr = node.tcp_addr();
    let topic = "/waku/2/rs/1/0";
    let ask = |kind: RequestType, pubsub: Option<&'static str>, contents: Vec<String>| {
        let client = &client;
        let addr = addr.clone();
        async move {
            client
                .filter(&addr, kind, pubsub, &contents)
                .await
                .expect("answered")
        }
    };
    let one = topics(&["/roost/1/a/proto"]);

    // 404: nothing to ping, unsubscribe or unsubscribe from.
    assert_eq!(
        ask(RequestType::Ping, None, vec![]).await.status,
        Status::NOT_FOUND
    );
    assert_eq!(
        ask(RequestType::UnsubscribeAll, None, vec![]).await.status,
        Status::NOT_FOUND
    );
    assert_eq!(
        ask(RequestType::Unsubscribe, Some(topic), one.clone())
            .await
            .status,
        Status::NOT_FOUND
    );
    // 400: missing pubsub topic, no content topics, 101 content topics, a topic not relayed.
    assert_eq!(
        ask(RequestType::Subscribe, None, one.clone()).await.status,
        Status::BAD_REQUEST
    );
    assert_eq!(
        ask(RequestType::Subscribe, Some(topic), vec![])
            .await
            .status,
        Status::BAD_REQUEST
    );
    let many: Vec<String> = (0..=filter::MAX_CONTENT_TOPICS_PER_REQUEST)
        .map(|i| format!("/roost/1/t{i}/proto"))
        .collect();
    let reply = ask(RequestType::Subscribe, Some(topic), many).await;
    assert_eq!(reply.status, Status::BAD_REQUEST);
    assert!(reply.description.unwrap_or_default().contains("101"));
    // A topic no relay could carry (not /waku/2/rs/<cluster>/<shard>) is refused; a shard
    // this node does not relay yet is taken, as nwaku takes it (a REST relay subscription can
    // join it later).
    let reply = ask(
        RequestType::Subscribe,
        Some("/waku/2/default-waku/proto"),
        one.clone(),
    )
    .await;
    assert_eq!(reply.status, Status::BAD_REQUEST);
    let reply = ask(
        RequestType::Subscribe,
        Some("/waku/2/rs/1/500"),
        one.clone(),
    )
    .await;
    assert_eq!(reply.status, Status::OK, "{reply:?}");
    let reply = ask(
        RequestType::Unsubscribe,
        Some("/waku/2/rs/1/500"),
        one.clone(),
    )
    .await;
    assert_eq!(reply.status, Status::OK, "{reply:?}");
    // 400: garbage and an unknown request type, answered with what could be read.
    let raw = client
        .request(ReqResProtocol::FilterSubscribe, &addr, vec![0xff, 0xff])
        .await
        .unwrap();
    let reply = filter::decode_subscribe_response(&raw).unwrap();
    assert_eq!(
        (reply.status, reply.request_id.as_str()),
        (Status::BAD_REQUEST, "N/A")
    );
    let unknown = filter::FilterSubscribeRequest {
        request_id: Some("t9".into()),
        filter_subscribe_type: Some(9),
        ..Default::default()
    };
    let raw = client
        .request(
            ReqResProtocol::FilterSubscribe,
            &addr,
            prost::Message::encode_to_vec(&unknown),
        )
        .await
        .unwrap();
    let reply = filter::decode_subscribe_response(&raw).unwrap();
    assert_eq!(
        (reply.status, reply.request_id.as_str()),
        (Status::BAD_REQUEST, "t9")
    );
    // 200: subscribe, ping, unsubscribe; then the subscription is gone.
    assert_eq!(
        ask(RequestType::Subscribe, Some(topic), one.clone())
            .await
            .status,
        Status::OK
    );
    assert_eq!(
        ask(RequestType::Ping, None, vec![]).await.status,
        Status::OK
    );
    assert_eq!(
        ask(RequestType::Unsubscribe, Some(topic), one.clone())
            .await
            .status,
        Status::OK
    );
    assert_eq!(
        ask(RequestType::Ping, None, vec![]).await.status,
        Status::NOT_FOUND
    );

    let m = node.metrics().await;
    for (kind, outcome, n) in [
        ("ping", "not_found", 2.0),
        ("ping", "ok", 1.0),
        ("unsubscribe_all", "not_found", 1.0),
        ("unsubscribe", "not_found", 1.0),
        ("unsubscribe", "ok", 2.0),
        ("subscribe", "bad_request", 4.0),
        ("subscribe", "ok", 2.0),
        ("unknown", "bad_request", 2.0),
    ] {
        assert_eq!(
            metric_sum(
                &m,
                "roost_filter_requests_total",
                &[("type", kind), ("outcome", outcome)]
            ),
            n,
            "{kind}/{outcome}:\n{m}"
        );
    }
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_and_criteria_caps_answer_503() {
    init_tracing();
    let node = TestNode::start_with(|c| {
        c.filter.max_peers = 1;
        c.filter.max_criteria_per_peer = 2;
    })
    .await;
    let first = Client::start(1).await.unwrap();
    let second = Client::start(1).await.unwrap();
    let topic = "/waku/2/rs/1/0";
    let addr = node.tcp_addr();
    let reply = first
        .filter(
            &addr,
            RequestType::Subscribe,
            Some(topic),
            &topics(&["/r/1/a/p", "/r/1/b/p"]),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, Status::OK);
    let reply = first
        .filter(
            &addr,
            RequestType::Subscribe,
            Some(topic),
            &topics(&["/r/1/c/p"]),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, Status::SERVICE_UNAVAILABLE, "{reply:?}");
    let reply = second
        .filter(
            &addr,
            RequestType::Subscribe,
            Some(topic),
            &topics(&["/r/1/a/p"]),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, Status::SERVICE_UNAVAILABLE, "{reply:?}");
    // Once the first leaves, the second fits.
    let reply = first
        .filter(&addr, RequestType::UnsubscribeAll, None, &[])
        .await
        .unwrap();
    assert_eq!(reply.status, Status::OK);
    let reply = second
        .filter(
            &addr,
            RequestType::Subscribe,
            Some(topic),
            &topics(&["/r/1/a/p"]),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, Status::OK);
    let m = node.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_filter_requests_total",
            &[("type", "subscribe"), ("outcome", "unavailable")]
        ),
        2.0
    );
    first.stop().await;
    second.stop().await;
}

/// Without a ping or subscribe the subscription lapses: it is swept, counted as expired, and a
/// late ping gets 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_lapse_without_refresh() {
    init_tracing();
    let node =
        TestNode::start_with(|c| c.filter.subscription_timeout = Duration::from_secs(1)).await;
    let client = Client::start(1).await.unwrap();
    let addr = node.tcp_addr();
    let reply = client
        .filter(
            &addr,
            RequestType::Subscribe,
            Some("/waku/2/rs/1/0"),
            &topics(&["/r/1/a/p"]),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, Status::OK);
    wait_until(WAIT, || async {
        metric_sum(
            &node.metrics().await,
            "roost_filter_subscriptions_removed_total",
            &[("reason", "expired")],
        ) == 1.0
    })
    .await
    .expect("the subscription lapses and is swept");
    let reply = client
        .filter(&addr, RequestType::Ping, None, &[])
        .await
        .unwrap();
    assert_eq!(reply.status, Status::NOT_FOUND);
    assert_eq!(
        metric_sum(&node.metrics().await, "roost_filter_subscribed_peers", &[]),
        0.0
    );
    client.stop().await;
}

/// With a one-second idle timeout, a client that only pushed once is disconnected, while a
/// subscriber's connection stays open (the service could not push to a browser otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_connections_are_kept_open() {
    init_tracing();
    let node = TestNode::start_with(|c| {
        c.network.idle_connection_timeout = Duration::from_secs(1);
    })
    .await;
    let subscriber = Client::start(1).await.unwrap();
    let passer_by = Client::start(1).await.unwrap();
    let addr = node.tcp_addr();
    let reply = subscriber
        .filter(
            &addr,
            RequestType::Subscribe,
            Some("/waku/2/rs/1/0"),
            &topics(&["/r/1/a/p"]),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, Status::OK);
    let reply = passer_by
        .filter(&addr, RequestType::Ping, None, &[])
        .await
        .unwrap();
    assert_eq!(reply.status, Status::NOT_FOUND);
    assert!(node.connected_to(passer_by.handle().peer_id()).await);
    wait_until(WAIT, || async {
        !node.connected_to(passer_by.handle().peer_id()).await
    })
    .await
    .expect("the idle passer-by is disconnected");
    assert!(
        node.connected_to(subscriber.handle().peer_id()).await,
        "the subscriber's connection outlived the idle timeout"
    );
    // After unsubscribing, the subscriber is an ordinary idle peer again.
    let reply = subscriber
        .filter(&addr, RequestType::UnsubscribeAll, None, &[])
        .await
        .unwrap();
    assert_eq!(reply.status, Status::OK);
    wait_until(WAIT, || async {
        !node.connected_to(subscriber.handle().peer_id()).await
    })
    .await
    .expect("the former subscriber is disconnected when idle");
    subscriber.stop().await;
    passer_by.stop().await;
}

/// Over the per-peer quota a filter request gets 429 with request id "N/A", undecoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_requests_get_429() {
    init_tracing();
    let node = TestNode::start_with(|c| {
        c.throttle.filter = "2/1h per-peer".parse().unwrap();
        c.throttle.ban_threshold = 0;
    })
    .await;
    let client = Client::start(1).await.unwrap();
    let addr = node.tcp_addr();
    for _ in 0..2 {
        let reply = client
            .filter(&addr, RequestType::Ping, None, &[])
            .await
            .unwrap();
        assert_eq!(reply.status, Status::NOT_FOUND);
    }
    let reply = client
        .filter(&addr, RequestType::Ping, None, &[])
        .await
        .unwrap();
    assert_eq!(reply.status, Status::TOO_MANY_REQUESTS, "{reply:?}");
    assert_eq!(reply.request_id, filter::UNKNOWN_REQUEST_ID);
    let m = node.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_filter_requests_total",
            &[("outcome", "throttled")]
        ),
        1.0
    );
    client.stop().await;
}
