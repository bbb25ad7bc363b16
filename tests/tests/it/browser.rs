//! js-waku (`@waku/sdk`, pinned in tests/interop/package-lock.json) in a real browser: a web page
//! bundled with esbuild, served from 127.0.0.1 and opened in headless Chromium (Debian's
//! `chromium`, driven by playwright-core; tests/interop/browser/). Given nothing but a Roost
//! node's WebSocket multiaddr, the page light pushes, receives through filter what a Roost
//! client published at another node, and pages through the store both ways.
//!
//! Chromium comes from `scripts/setup --test` (scripts/test-packages), the npm packages from
//! `scripts/interop-setup` (which this test runs too when they are missing). Without Chromium
//! the test fails at once, saying so.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use roost_node::{
    client::Client, lightpush::Version, message::WakuMessage, store::StoreQueryRequest,
};
use roost_tests::{init_tracing, metric_sum, TestNode};
use serde_json::json;

use crate::{
    js::{hashes, hex, Js},
    lightpush::autoshard,
};

/// Store pages as js-waku returns them for `hashes` (oldest first), `size` at a time: forward
/// from the oldest; backward from the newest, each page still oldest first.
fn expected_pages(hashes: &[String], size: usize, forward: bool) -> Vec<Vec<String>> {
    if forward {
        hashes.chunks(size).map(<[String]>::to_vec).collect()
    } else {
        hashes.rchunks(size).map(<[String]>::to_vec).collect()
    }
}

/// Nodes A and B, meshed on both topics. In Chromium, js-waku dials A over plain ws, subscribes
/// through filter, light pushes seven messages, waits for the three a Roost client pushes at B,
/// then pages through A's store three at a time both ways. Every push succeeded and is in A's
/// store with js-waku's hashes; the filter delivered exactly B's messages; the pages hold every
/// pushed message, in order, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_waku_in_chromium_pushes_receives_through_filter_and_pages_the_store() {
    init_tracing();
    let push_content = "/roost-browser/1/push/proto";
    let filter_content = "/roost-browser/1/filter/proto";
    let push_topic = autoshard(push_content);
    let filter_topic = autoshard(filter_content);
    let (push_count, filter_count, page_size) = (7, 3, 3);

    let a = TestNode::start().await;
    let b = TestNode::start().await;
    a.connect(&b).await;
    for topic in [&push_topic, &filter_topic] {
        a.wait_for_mesh(topic, 1).await;
        b.wait_for_mesh(topic, 1).await;
    }

    let started = Instant::now();
    let args = json!({
        "peer": a.ws_addr().to_string(),
        "pushTopic": push_content,
        "filterTopic": filter_content,
        "pushCount": push_count,
        "filterCount": filter_count,
        "pageSize": page_size,
        "timeoutMs": 45_000,
        "stepTimeoutMs": 20_000,
    });
    let js =
        Js::spawn(&["browser/run.mjs", &args.to_string()], &[]).timeout(Duration::from_secs(50));
    let (js, connected) = js.event("connected").await;
    let agent = connected["userAgent"].as_str().unwrap_or_default();
    assert!(agent.contains("HeadlessChrome"), "a browser: {connected}");
    let (js, _) = js.event("ready").await;

    let publisher = Client::start(1).await.unwrap();
    let mut sent = BTreeSet::new();
    for i in 0..filter_count {
        let payload = format!("to the browser {i}");
        let message = WakuMessage::new(filter_content, payload.clone().into_bytes());
        let reply = publisher
            .light_push(&b.tcp_addr(), Version::V3, None, &message)
            .await
            .unwrap();
        assert!(reply.is_success(), "{reply:?}");
        sent.insert((hex(&message.hash(&filter_topic)), payload));
    }

    let (js, result) = js.event("result").await;
    let elapsed = started.elapsed();
    eprintln!("browser scenario: {elapsed:?}\n{}", js.logs());

    assert_eq!(
        result["pubsubTopic"],
        push_topic.as_str(),
        "same autosharding"
    );
    assert_eq!(
        result["failures"],
        json!([]),
        "every push succeeded: {result}"
    );
    let pushed = hashes(&result["pushed"]);
    assert_eq!(pushed.len(), push_count, "{result}");

    let stored = a
        .handle
        .store()
        .expect("store node")
        .query(
            &StoreQueryRequest::new("roost")
                .content(push_topic.clone(), [push_content])
                .limit(100),
        )
        .await;
    let stored: Vec<String> = stored
        .entries()
        .unwrap()
        .iter()
        .map(|e| hex(&e.hash))
        .collect();
    assert_eq!(
        stored, pushed,
        "Roost's store holds the pushes, same hashes, in order"
    );

    let received: BTreeSet<(String, String)> = result["received"]
        .as_array()
        .expect("received messages")
        .iter()
        .map(|r| {
            (
                r["hash"].as_str().unwrap().to_owned(),
                r["payload"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(received, sent, "filter delivered what was pushed at B");

    for (key, forward) in [("forward", true), ("backward", false)] {
        let pages: Vec<Vec<String>> = result["pages"][key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} pages: {result}"))
            .iter()
            .map(hashes)
            .collect();
        assert_eq!(
            pages,
            expected_pages(&pushed, page_size, forward),
            "{key} store pages"
        );
    }

    let m = a.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_lightpush_requests_total",
            &[("version", "v3"), ("outcome", "ok")]
        ),
        push_count as f64
    );
    publisher.stop().await;
}
