//! The mailserver across real nodes: history for an offline reader, bad requests, the ingest
//! rules, acknowledged inserts, restarts, retention, the CLI, kill -9 and a full disk.
//!
//! The tests of what the store promises whatever its engine (paging, filters, hash lookups,
//! rules, acknowledgements, restarts, kill -9) run on both archives: `…_on_rocksdb` and
//! `…_on_postgres` (a private PostgreSQL cluster per test). Faults and retention that differ by
//! engine have their PostgreSQL versions in `store_postgres.rs`.

use std::{collections::HashSet, time::Duration};

use libp2p::Multiaddr;
use roost_node::{
    client::Client,
    message::{now_nanos, MessageHash, WakuMessage},
    store::{
        self,
        rpc::{Entry, StoreQueryRequest, StoreQueryResponse},
        InsertOutcome, RejectReason,
    },
    swarm::ReqResProtocol,
};
use roost_tests::{
    init_tracing, metric_sum, missing_from_store, postgres::Engine, process::roost_command,
    process::NodeProcess, wait_until, TestNode, UNTHROTTLED_ARGS, WAIT,
};

const TOPIC: &str = "/waku/2/rs/1/0";

/// Runs an engine-independent test on both engines.
macro_rules! on_both_engines {
    ($test:ident: $on_rocksdb:ident, $on_postgres:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $on_rocksdb() {
            $test(Engine::rocksdb()).await
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $on_postgres() {
            $test(Engine::postgres()).await
        }
    };
}

async fn query(
    client: &Client,
    addr: &Multiaddr,
    request: &StoreQueryRequest,
) -> StoreQueryResponse {
    client
        .store_query(addr, request)
        .await
        .expect("the store node answers")
}

/// Follows cursors to the end; every page must be a 200.
async fn pages(client: &Client, addr: &Multiaddr, request: StoreQueryRequest) -> Vec<Vec<Entry>> {
    let mut out = Vec::new();
    let mut request = request;
    loop {
        let response = query(client, addr, &request).await;
        assert_eq!(response.code(), 200, "{}", response.desc());
        assert_eq!(response.request_id, request.request_id, "request id echoed");
        out.push(response.entries().expect("entries decode"));
        match response.cursor() {
            Some(c) => request = request.cursor(Some(c)),
            None => return out,
        }
        assert!(out.len() < 1000, "paging does not end");
    }
}

fn hashes(entries: &[Entry]) -> Vec<MessageHash> {
    entries.iter().map(|e| e.hash).collect()
}

/// Forward pages in order, backward pages newest first: both give the ascending sequence.
fn flatten(pages: Vec<Vec<Entry>>, forward: bool) -> Vec<MessageHash> {
    if forward {
        pages.iter().flat_map(|p| hashes(p)).collect()
    } else {
        pages.iter().rev().flat_map(|p| hashes(p)).collect()
    }
}

struct Published {
    hash: MessageHash,
    message: WakuMessage,
}

/// Sorted as the store sorts: (timestamp, hash).
fn in_store_order<'a>(items: impl IntoIterator<Item = &'a Published>) -> Vec<MessageHash> {
    let mut v: Vec<(i64, MessageHash)> = items
        .into_iter()
        .map(|p| (p.message.timestamp.unwrap_or(0), p.hash))
        .collect();
    v.sort();
    v.into_iter().map(|(_, h)| h).collect()
}

/// `roost_tests::UNTHROTTLED_ARGS` for in-process test nodes.
fn unthrottled(c: &mut roost_node::Config) {
    c.throttle.relay = roost_node::throttle::quota::QuotaSpec::unlimited();
    c.throttle.relay_bytes = roost_node::throttle::quota::QuotaSpec::unlimited();
    c.throttle.store = roost_node::throttle::quota::QuotaSpec::unlimited();
}

async fn archived(node: &TestNode) -> u64 {
    node.handle
        .store()
        .expect("a store node")
        .summary()
        .await
        .expect("summary")
        .messages
}

on_both_engines!(
    offline_reader_gets_every_missed_message_from_the_store:
    offline_reader_gets_every_missed_message_from_the_store_on_rocksdb,
    offline_reader_gets_every_missed_message_from_the_store_on_postgres
);

/// The offline user: A relays, B relays and stores; 500 messages on 3 content topics go out
/// through A while the reader is away; the reader then gets all of them from B, in order,
/// with pagination both ways across page boundaries, by content topic, by time, and by hash.
async fn offline_reader_gets_every_missed_message_from_the_store(engine: Engine) {
    init_tracing();
    let a = TestNode::start_with(|c| c.store.enabled = false).await;
    // A publishes 500 messages at once and the reader pages through them all.
    let b = TestNode::start_with(|c| {
        unthrottled(c);
        engine.configure(c, "roost");
    })
    .await;
    assert!(a.handle.store().is_none());
    a.connect(&b).await;
    a.wait_for_mesh(TOPIC, 1).await;
    b.wait_for_mesh(TOPIC, 1).await;

    let topics = [
        "/roost/1/alpha/proto",
        "/roost/1/beta/proto",
        "/roost/1/gamma/proto",
    ];
    let base = now_nanos();
    let mut published = Vec::new();
    for i in 0..500usize {
        // Pairs share a timestamp, so the hash decides their order (and page boundaries
        // fall between equal timestamps).
        let message = WakuMessage {
            payload: format!("missed message {i}").into_bytes(),
            content_topic: topics[i % 3].to_owned(),
            timestamp: Some(base + (i as i64 / 2) * 1_000_000),
            ..Default::default()
        };
        let receipt = a
            .handle
            .publish(TOPIC, message.clone())
            .await
            .expect("publish");
        published.push(Published {
            hash: receipt.hash,
            message,
        });
    }
    wait_until(WAIT, || async { archived(&b).await == 500 })
        .await
        .expect("B archives all 500");

    // The reader comes online.
    let reader = Client::start(1).await.expect("client");
    let addr = b.tcp_addr();
    let all = in_store_order(&published);

    // Everything, default page size (20), forwards: 25 full pages, no gaps, no duplicates.
    let fwd = pages(&reader, &addr, StoreQueryRequest::new("fwd").forward(true)).await;
    assert_eq!(fwd.len(), 25);
    assert!(fwd.iter().all(|p| p.len() == 20));
    assert_eq!(flatten(fwd, true), all);

    // Backwards with an odd page size: newest page first, each page ascending.
    let back = pages(&reader, &addr, StoreQueryRequest::new("back").limit(33)).await;
    assert_eq!(back.len(), 16);
    assert_eq!(back[0].last().map(|e| e.hash), all.last().copied());
    assert_eq!(flatten(back, false), all);

    // The messages themselves come back intact, with their pubsub topic.
    let page = query(
        &reader,
        &addr,
        &StoreQueryRequest::new("data").forward(true).limit(5),
    )
    .await;
    for entry in page.entries().unwrap() {
        let original = published.iter().find(|p| p.hash == entry.hash).unwrap();
        assert_eq!(
            entry.data,
            Some((TOPIC.to_owned(), original.message.clone()))
        );
    }

    // By content topic: one topic, then two, both directions.
    for (wanted, forward) in [(vec![topics[1]], true), (vec![topics[0], topics[2]], false)] {
        let request = StoreQueryRequest::new("ct")
            .content(TOPIC, wanted.clone())
            .forward(forward)
            .limit(17);
        let got = flatten(pages(&reader, &addr, request).await, forward);
        let expected = in_store_order(
            published
                .iter()
                .filter(|p| wanted.contains(&p.message.content_topic.as_str())),
        );
        assert_eq!(got, expected, "{wanted:?}");
    }

    // By time: start inclusive, end exclusive (messages 100..300), alone and with a topic.
    let start = published[100].message.timestamp;
    let end = published[300].message.timestamp;
    let in_range = |p: &&Published| {
        let ts = p.message.timestamp.unwrap();
        ts >= start.unwrap() && ts < end.unwrap()
    };
    let got = flatten(
        pages(
            &reader,
            &addr,
            StoreQueryRequest::new("time")
                .time_range(start, end)
                .forward(true),
        )
        .await,
        true,
    );
    assert_eq!(got, in_store_order(published.iter().filter(in_range)));
    assert_eq!(got.len(), 200);
    let got = flatten(
        pages(
            &reader,
            &addr,
            StoreQueryRequest::new("time-ct")
                .content(TOPIC, [topics[2]])
                .time_range(start, end),
        )
        .await,
        false,
    );
    assert_eq!(
        got,
        in_store_order(
            published
                .iter()
                .filter(in_range)
                .filter(|p| p.message.content_topic == topics[2])
        )
    );

    // Hash lookups find them; a presence query names exactly the present ones.
    let wanted: Vec<MessageHash> = published.iter().step_by(50).map(|p| p.hash).collect();
    let got = flatten(
        pages(
            &reader,
            &addr,
            StoreQueryRequest::new("lookup").hashes(wanted.clone()),
        )
        .await,
        false,
    );
    assert_eq!(
        got,
        in_store_order(published.iter().filter(|p| wanted.contains(&p.hash)))
    );
    let unknown: Vec<MessageHash> = (1..=5u8).map(|i| MessageHash([i; 32])).collect();
    let presence = query(
        &reader,
        &addr,
        &StoreQueryRequest::new("presence")
            .hashes(wanted.iter().copied().take(5).chain(unknown))
            .include_data(false),
    )
    .await;
    let present: HashSet<MessageHash> = hashes(&presence.entries().unwrap()).into_iter().collect();
    assert_eq!(present, wanted.iter().copied().take(5).collect());
    assert!(presence.entries().unwrap().iter().all(|e| e.data.is_none()));

    let metrics = b.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "roost_store_messages_stored_total", &[]),
        500.0
    );
    assert!(
        metric_sum(
            &metrics,
            "roost_store_queries_total",
            &[("kind", "content"), ("status", "200")]
        ) >= 2.0
    );
    assert_eq!(
        metric_sum(&metrics, "roost_store_archive_messages", &[]),
        500.0
    );
    // Health is refreshed every second.
    let health = || async {
        let (_, body) = roost_tests::http_get(&format!("{}/health", b.http_url())).await;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    wait_until(WAIT, || async {
        health().await["components"]["store"]["detail"]["messages"] == 500
    })
    .await
    .expect("health shows the archive");
    let health = health().await;
    assert_eq!(health["components"]["store"]["status"], "ok");
    assert_eq!(
        health["components"]["store"]["detail"]["newest"],
        published[499].message.timestamp.unwrap()
    );
    assert!(b
        .handle
        .info()
        .protocols
        .contains(&"/vac/waku/store-query/3.0.0".to_owned()));
    reader.stop().await;
}

on_both_engines!(
    bad_requests_get_a_400_with_a_reason_and_the_node_keeps_serving:
    bad_requests_get_a_400_with_a_reason_and_the_node_keeps_serving_on_rocksdb,
    bad_requests_get_a_400_with_a_reason_and_the_node_keeps_serving_on_postgres
);

/// Each kind of bad request gets a 400 that says what is wrong, with the request id echoed;
/// the node keeps serving.
async fn bad_requests_get_a_400_with_a_reason_and_the_node_keeps_serving(engine: Engine) {
    init_tracing();
    let b = TestNode::start_with(|c| engine.configure(c, "roost")).await;
    let message = WakuMessage::new("/roost/1/bad/proto", b"keep me".to_vec());
    let store = b.handle.store().unwrap();
    assert_eq!(
        store.insert(TOPIC, message.clone()).await,
        Ok(InsertOutcome::Stored)
    );
    let reader = Client::start(1).await.unwrap();
    let addr = b.tcp_addr();
    let raw = |bytes: Vec<u8>| {
        let reader = &reader;
        let addr = addr.clone();
        async move {
            let bytes = reader
                .request(ReqResProtocol::Store, &addr, bytes)
                .await
                .expect("a response");
            StoreQueryResponse::decode_bytes(&bytes).expect("a store response")
        }
    };
    use prost::Message as _;

    let r = raw(vec![0xff, 0xff, 0xff]).await;
    assert_eq!((r.code(), r.request_id.as_deref()), (400, Some("N/A")));
    assert!(r.desc().contains("malformed"), "{}", r.desc());

    let mut oversize = StoreQueryRequest::new("big");
    oversize.content_topics = vec!["x".repeat(70 * 1024)];
    oversize.pubsub_topic = Some(TOPIC.into());
    let r = raw(oversize.encode_to_vec()).await;
    assert_eq!((r.code(), r.request_id.as_deref()), (400, Some("big")));
    assert!(r.desc().contains("exceeds"), "{}", r.desc());

    let eleven: Vec<String> = (0..11).map(|i| format!("/roost/1/t{i}/proto")).collect();
    let mut cursor_31 = StoreQueryRequest::new("c31");
    cursor_31.pagination_cursor = Some(vec![1; 31]);
    let cases = [
        (
            StoreQueryRequest::new("eleven").content(TOPIC, eleven),
            "limit is 10",
        ),
        (cursor_31, "32-byte"),
        (
            StoreQueryRequest::new("unknown-cursor").cursor(Some(MessageHash([9; 32]))),
            "not a message in this archive",
        ),
        (
            StoreQueryRequest::new("backwards")
                .hashes([message.hash(TOPIC)])
                .time_range(Some(2), Some(1)),
            "after time_end",
        ),
    ];
    for (request, needle) in cases {
        let r = query(&reader, &addr, &request).await;
        assert_eq!(r.code(), 400, "{request:?}");
        assert_eq!(r.request_id, request.request_id);
        assert!(r.desc().contains(needle), "{}: {}", needle, r.desc());
        assert!(r.messages.is_empty() && r.pagination_cursor.is_none());
    }

    // A frame beyond what the node reads at all: the stream is reset unread.
    let too_big = vec![0u8; 2 * 1024 * 1024];
    assert!(reader
        .request(ReqResProtocol::Store, &addr, too_big)
        .await
        .is_err());

    // A shard this node does not archive is no error: nothing matches (200, empty), as nwaku.
    let elsewhere = query(
        &reader,
        &addr,
        &StoreQueryRequest::new("shard").content("/waku/2/rs/1/99", ["/a/1/b/proto"]),
    )
    .await;
    assert_eq!(elsewhere.code(), 200, "{}", elsewhere.desc());
    assert!(elsewhere.messages.is_empty());

    // Still serving.
    let ok = query(&reader, &addr, &StoreQueryRequest::new("fine")).await;
    assert_eq!((ok.code(), ok.desc()), (200, "OK"));
    assert_eq!(hashes(&ok.entries().unwrap()), vec![message.hash(TOPIC)]);
    let metrics = b.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "roost_store_queries_total", &[("status", "400")]),
        6.0
    );
    reader.stop().await;
}

on_both_engines!(
    ephemeral_and_out_of_window_messages_are_not_stored_and_are_counted:
    ephemeral_and_out_of_window_messages_are_not_stored_and_are_counted_on_rocksdb,
    ephemeral_and_out_of_window_messages_are_not_stored_and_are_counted_on_postgres
);

/// What a store node declines to archive, each counted by reason: ephemeral messages, missing,
/// old and future timestamps; the ordinary one is stored.
async fn ephemeral_and_out_of_window_messages_are_not_stored_and_are_counted(engine: Engine) {
    init_tracing();
    let a = TestNode::start_with(|c| c.store.enabled = false).await;
    let b = TestNode::start_with(|c| engine.configure(c, "roost")).await;
    a.connect(&b).await;
    a.wait_for_mesh(TOPIC, 1).await;
    let now = now_nanos();
    let minute = 60_000_000_000i64;
    let variants = [
        ("ephemeral", Some(now), Some(true)),
        ("old", Some(now - minute), None),
        ("future", Some(now + minute), None),
        ("no-time", None, None),
        ("fine", Some(now), None),
    ];
    for (payload, timestamp, ephemeral) in variants {
        let message = WakuMessage {
            payload: payload.as_bytes().to_vec(),
            content_topic: "/roost/1/rules/proto".into(),
            timestamp,
            ephemeral,
            ..Default::default()
        };
        a.handle.publish(TOPIC, message).await.expect("publish");
    }
    wait_until(WAIT, || async {
        let m = b.metrics().await;
        metric_sum(&m, "roost_store_messages_rejected_total", &[]) >= 4.0
            && metric_sum(&m, "roost_store_messages_stored_total", &[]) >= 1.0
    })
    .await
    .expect("all five are judged");
    let m = b.metrics().await;
    for (reason, n) in [("ephemeral", 1.0), ("too_old", 2.0), ("future", 1.0)] {
        assert_eq!(
            metric_sum(
                &m,
                "roost_store_messages_rejected_total",
                &[("reason", reason)]
            ),
            n,
            "{reason}"
        );
    }
    let store = b.handle.store().unwrap();
    let all = store.query(&StoreQueryRequest::new("all")).await;
    let entries = all.entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].data.as_ref().unwrap().1.payload, b"fine");
}

on_both_engines!(
    acknowledged_inserts_are_queryable_at_once_and_survive_a_restart:
    acknowledged_inserts_are_queryable_at_once_and_survive_a_restart_on_rocksdb,
    acknowledged_inserts_are_queryable_at_once_and_survive_a_restart_on_postgres
);

/// The acknowledgement other capabilities (light push) rely on: `Stored` means queryable and
/// durable; repeats are `Duplicate`; the rules give `Rejected`.
async fn acknowledged_inserts_are_queryable_at_once_and_survive_a_restart(engine: Engine) {
    init_tracing();
    let b = TestNode::start_with(|c| engine.configure(c, "roost")).await;
    let store = b.handle.store().unwrap().clone();
    let messages: Vec<WakuMessage> = (0..100)
        .map(|i| WakuMessage::new("/roost/1/ack/proto", format!("ack {i}").into_bytes()))
        .collect();
    // Concurrent inserts share write batches (group commit); each is acknowledged.
    let outcomes =
        futures::future::join_all(messages.iter().map(|m| store.insert(TOPIC, m.clone()))).await;
    assert!(
        outcomes.iter().all(|o| *o == Ok(InsertOutcome::Stored)),
        "{outcomes:?}"
    );
    let hashes_in: Vec<MessageHash> = messages.iter().map(|m| m.hash(TOPIC)).collect();
    let found = store
        .query(
            &StoreQueryRequest::new("p")
                .hashes(hashes_in.clone())
                .include_data(false)
                .limit(100),
        )
        .await;
    assert_eq!(found.messages.len(), 100);

    assert_eq!(
        store.insert(TOPIC, messages[0].clone()).await,
        Ok(InsertOutcome::Duplicate)
    );
    let mut ephemeral = WakuMessage::new("/roost/1/ack/proto", b"e".to_vec());
    ephemeral.ephemeral = Some(true);
    assert_eq!(
        store.insert(TOPIC, ephemeral).await,
        Ok(InsertOutcome::Rejected(RejectReason::Ephemeral))
    );
    assert_eq!(
        store
            .insert(
                "/waku/2/rs/1/99",
                WakuMessage::new("/roost/1/ack/proto", b"x".to_vec())
            )
            .await,
        Ok(InsertOutcome::Rejected(RejectReason::PubsubTopic))
    );
    let mut old = WakuMessage::new("/roost/1/ack/proto", b"o".to_vec());
    old.timestamp = Some(now_nanos() - 3_600_000_000_000);
    assert_eq!(
        store.insert(TOPIC, old).await,
        Ok(InsertOutcome::Rejected(RejectReason::TooOld))
    );

    // A graceful restart on the same directory keeps everything.
    let dir = b.stop().await;
    let b = TestNode::start_in(dir, |c| engine.configure(c, "roost")).await;
    let store = b.handle.store().unwrap();
    let found = store
        .query(
            &StoreQueryRequest::new("p")
                .hashes(hashes_in)
                .include_data(false)
                .limit(100),
        )
        .await;
    assert_eq!(found.messages.len(), 100);
    assert_eq!(store.summary().await.unwrap().messages, 100);
    assert_eq!(
        store.insert(TOPIC, messages[1].clone()).await,
        Ok(InsertOutcome::Duplicate)
    );
}

// === retention ===

async fn insert_many(node: &TestNode, n: usize, payload: usize, tag: &str) -> Vec<MessageHash> {
    let store = node.handle.store().unwrap();
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let messages: Vec<WakuMessage> = chunk
            .iter()
            .map(|i| {
                WakuMessage::new(
                    "/roost/1/retention/proto",
                    noise(&format!("{tag} {i}"), payload),
                )
            })
            .collect();
        let outcomes =
            futures::future::join_all(messages.iter().map(|m| store.insert(TOPIC, m.clone())))
                .await;
        assert!(
            outcomes.iter().all(|o| *o == Ok(InsertOutcome::Stored)),
            "{outcomes:?}"
        );
        // Distinct timestamps for every message keep the expected order unambiguous.
        let mut sorted: Vec<(i64, MessageHash)> = messages
            .iter()
            .map(|m| (m.timestamp.unwrap(), m.hash(TOPIC)))
            .collect();
        sorted.sort();
        out.extend(sorted.into_iter().map(|(_, h)| h));
    }
    out
}

/// `len` incompressible bytes derived from `seed` (real payloads are mostly encrypted).
fn noise(seed: &str, len: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(len + 32);
    let mut block: [u8; 32] = Sha256::digest(seed.as_bytes()).into();
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block).into();
    }
    out.truncate(len);
    out
}

/// Which of `hashes` the node still has.
async fn present(node: &TestNode, hashes: &[MessageHash]) -> Vec<MessageHash> {
    let store = node.handle.store().unwrap();
    let mut out = Vec::new();
    for chunk in hashes.chunks(100) {
        let r = store
            .query(
                &StoreQueryRequest::new("present")
                    .hashes(chunk.iter().copied())
                    .include_data(false)
                    .forward(true)
                    .limit(100),
            )
            .await;
        assert_eq!(r.code(), 200, "{}", r.desc());
        out.extend(hashes_of(&r));
    }
    out
}

fn hashes_of(r: &StoreQueryResponse) -> Vec<MessageHash> {
    hashes(&r.entries().unwrap())
}

async fn retention_node(policy: &str) -> TestNode {
    let policy = policy.to_owned();
    TestNode::start_with(move |c| {
        c.store.retention = policy.parse().expect("policy");
        c.store.retention_interval = Duration::from_millis(100);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_retention_keeps_the_newest_messages() {
    init_tracing();
    let node = retention_node("capacity:50").await;
    let hashes = insert_many(&node, 120, 100, "cap").await;
    wait_until(WAIT, || async { archived(&node).await <= 50 })
        .await
        .expect("cut to capacity");
    let kept = present(&node, &hashes).await;
    assert!(kept.len() <= 50 && kept.len() >= 40, "{}", kept.len());
    assert_eq!(
        kept,
        hashes[hashes.len() - kept.len()..].to_vec(),
        "the newest stay"
    );
    let m = node.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_store_retention_deleted_total",
            &[("policy", "capacity")]
        ),
        (120 - kept.len()) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_retention_deletes_what_is_older_than_the_limit() {
    init_tracing();
    let node = retention_node("time:2s").await;
    let old = insert_many(&node, 30, 100, "old").await;
    // Time retention drops whole 10 s buckets once they are older than the limit.
    wait_until(Duration::from_secs(60), || async {
        present(&node, &old).await.is_empty()
    })
    .await
    .expect("old messages expire");
    let new = insert_many(&node, 30, 100, "new").await;
    assert_eq!(present(&node, &new).await, new);
    let m = node.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "roost_store_retention_deleted_total",
            &[("policy", "time")]
        ),
        30.0
    );
    assert_eq!(archived(&node).await, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_retention_keeps_the_files_under_the_limit() {
    init_tracing();
    let limit: u64 = 8 << 20;
    let node = retention_node("size:8MB").await;
    let dir = store::store_path(&node.data_dir());
    let mut all = Vec::new();
    for round in 0..3 {
        all.extend(insert_many(&node, 800, 8 * 1024, &format!("size{round}")).await);
        wait_until(Duration::from_secs(60), || async {
            store::dir_size(&dir) <= limit
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: {} bytes on disk", store::dir_size(&dir)));
    }
    // 19 MB went in; what is left is the newest, with nothing missing in between.
    let kept = present(&node, &all).await;
    assert!(!kept.is_empty() && kept.len() < all.len());
    assert_eq!(kept, all[all.len() - kept.len()..].to_vec());
    let m = node.metrics().await;
    assert!(
        metric_sum(
            &m,
            "roost_store_retention_deleted_total",
            &[("policy", "size")]
        ) > 0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_retention_applies_every_rule() {
    init_tracing();
    let node = retention_node("capacity:100;time:2s").await;
    let first = insert_many(&node, 150, 100, "both").await;
    wait_until(WAIT, || async { archived(&node).await <= 100 })
        .await
        .expect("capacity applies");
    let kept = present(&node, &first).await;
    assert_eq!(kept, first[first.len() - kept.len()..].to_vec());
    wait_until(Duration::from_secs(60), || async {
        archived(&node).await == 0
    })
    .await
    .expect("time applies too");
    let fresh = insert_many(&node, 10, 100, "fresh").await;
    assert_eq!(present(&node, &fresh).await, fresh);
    let m = node.metrics().await;
    let by = |p: &str| metric_sum(&m, "roost_store_retention_deleted_total", &[("policy", p)]);
    assert!(by("capacity") >= 50.0 && by("time") > 0.0);
    assert_eq!(by("capacity") + by("time"), 150.0);
}

// === CLI ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_cli_queries_a_node_and_reads_stats_while_it_runs() {
    init_tracing();
    let node = TestNode::start().await;
    let store = node.handle.store().unwrap();
    let mut sent = Vec::new();
    for i in 0..30 {
        let m = WakuMessage::new("/roost/1/cli/proto", format!("hello {i}").into_bytes());
        assert_eq!(
            store.insert(TOPIC, m.clone()).await,
            Ok(InsertOutcome::Stored)
        );
        sent.push(m);
    }
    let addr = node.tcp_addr().to_string();
    let cwd = node.data_dir();
    let run = |args: Vec<String>| {
        let cwd = cwd.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            roost_command(&args, &cwd).output().expect("run roost")
        })
    };
    let out = run(vec![
        "store".into(),
        "query".into(),
        "--peer".into(),
        addr.clone(),
        "--pubsub-topic".into(),
        TOPIC.into(),
        "--content-topic".into(),
        "/roost/1/cli/proto".into(),
        "--forward".into(),
        "--all".into(),
        "--json".into(),
        "--limit".into(),
        "7".into(),
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    assert_eq!(lines.len(), 30);
    for (line, m) in lines.iter().zip(&sent) {
        assert_eq!(line["hash"], m.hash(TOPIC).to_hex());
        assert_eq!(line["text"], String::from_utf8_lossy(&m.payload).as_ref());
        assert_eq!(line["pubsub_topic"], TOPIC);
    }

    // One page of text, newest last, and a hint how to go on.
    let out = run(vec![
        "store".into(),
        "query".into(),
        "--peer".into(),
        addr.clone(),
        "--limit".into(),
        "5".into(),
    ])
    .await
    .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 5);
    assert!(text.lines().last().unwrap().contains("hello 29"), "{text}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cursor 0x"));

    // A node's refusal is an error exit with its reason.
    let out = run(vec![
        "store".into(),
        "query".into(),
        "--peer".into(),
        addr.clone(),
        "--cursor".into(),
        MessageHash([3; 32]).to_hex(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("answered 400"));

    // Stats from the node's own data dir, read-only, while it runs.
    let out = run(vec![
        "store".into(),
        "stats".into(),
        "--data-dir".into(),
        node.data_dir().display().to_string(),
        "--json".into(),
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["messages"], 30);
    assert_eq!(stats["topics"][0]["pubsub_topic"], TOPIC);
    assert_eq!(stats["topics"][0]["oldest"], sent[0].timestamp.unwrap());
    assert_eq!(stats["topics"][0]["newest"], sent[29].timestamp.unwrap());
    // The node is unaffected.
    assert_eq!(
        store
            .insert(
                TOPIC,
                WakuMessage::new("/roost/1/cli/proto", b"after".to_vec())
            )
            .await,
        Ok(InsertOutcome::Stored)
    );
}

// === faults ===

on_both_engines!(
    kill_9_during_ingest_loses_no_acknowledged_message:
    kill_9_during_ingest_loses_no_acknowledged_message_on_rocksdb,
    kill_9_during_ingest_loses_no_acknowledged_message_on_postgres
);

/// Kill -9 the storing node repeatedly while messages stream in. "Acknowledged" = returned by
/// a store query of that node before the kill: a query only sees committed batches (written
/// to the WAL, fsynced with `store.sync`). After each restart every one of them is there.
async fn kill_9_during_ingest_loses_no_acknowledged_message(engine: Engine) {
    init_tracing();
    let engine_args = engine.args("roost");
    let data = tempfile::tempdir().unwrap();
    let publisher = TestNode::start_with(|c| c.store.enabled = false).await;
    let reader = Client::start(1).await.unwrap();
    let mut acknowledged: HashSet<MessageHash> = HashSet::new();
    let mut sent_total = 0usize;
    for cycle in 0..5 {
        let mut args = vec!["--store-sync", "true"];
        args.extend(UNTHROTTLED_ARGS);
        args.extend(engine_args.iter().map(String::as_str));
        let mut node = NodeProcess::start(data.path(), &args).await;
        let addr = node.tcp_addr();
        // Everything acknowledged before earlier kills is there after the restart.
        let missing = missing_from_store(&reader, &addr, &acknowledged).await;
        assert!(
            missing.is_empty(),
            "cycle {cycle}: {} acknowledged messages lost",
            missing.len()
        );

        publisher.handle.dial(addr.clone()).await.expect("dial");
        publisher.wait_for_mesh(TOPIC, 1).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let streamer = {
            let handle = publisher.handle.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut sent = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let m = WakuMessage::new(
                        "/roost/1/crash/proto",
                        format!("cycle {cycle} message {sent}").into_bytes(),
                    );
                    let _ = handle.publish(TOPIC, m).await;
                    sent += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                sent
            })
        };
        // Acknowledgements accumulate while the stream runs; kill once this cycle has some.
        let before = acknowledged.len();
        let mut polls = 0;
        while acknowledged.len() < before + 200 {
            let r = query(
                &reader,
                &addr,
                &StoreQueryRequest::new("newest")
                    .include_data(false)
                    .limit(100),
            )
            .await;
            assert_eq!(r.code(), 200);
            acknowledged.extend(hashes_of(&r));
            polls += 1;
            assert!(polls < 3000, "ingest does not progress");
        }
        // One last acknowledgement right before the kill.
        let r = query(
            &reader,
            &addr,
            &StoreQueryRequest::new("last")
                .include_data(false)
                .limit(100),
        )
        .await;
        acknowledged.extend(hashes_of(&r));
        node.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sent_total += streamer.await.unwrap();
        eprintln!(
            "cycle {cycle}: {} acknowledged so far, {sent_total} sent",
            acknowledged.len()
        );
    }
    let mut args = UNTHROTTLED_ARGS.to_vec();
    args.extend(engine_args.iter().map(String::as_str));
    let node = NodeProcess::start(data.path(), &args).await;
    let missing = missing_from_store(&reader, &node.tcp_addr(), &acknowledged).await;
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost",
        missing.len()
    );
    assert!(acknowledged.len() >= 1000);
    reader.stop().await;
}

/// `/metrics` of a node process, or a panic with its exit status and logs if it died.
async fn alive_metrics(node: &NodeProcess) -> String {
    match reqwest::get(format!("{}/metrics", node.http)).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => {
            let logs = node.logs();
            panic!(
                "node unreachable ({e}); last log lines: {:#?}",
                &logs[logs.len().saturating_sub(30)..]
            )
        }
    }
}

/// A full disk: writes fail with a logged error and a counted metric, queries keep working,
/// and storing resumes once space is back. The node's data dir is a 160 MiB tmpfs mounted in
/// a private mount namespace (`unshare`, needs root), which the test fills through
/// `/proc/<pid>/root`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_keeps_queries_working_and_recovers() {
    init_tracing();
    let mount = tempfile::tempdir().unwrap();
    let mount_path = mount.path().display().to_string();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=160m roost-test-disk "$1" && shift && exec "$@""#)
        .arg("sh")
        .arg(&mount_path)
        .arg(roost_tests::roost_bin())
        .args(["run", "--data-dir", &mount_path])
        // A reserve that fits the small disk; the filler below leaves less than it.
        .args(["--store-min-free-space", "16MiB"])
        .args(UNTHROTTLED_ARGS);
    roost_tests::process::test_node_env(&mut cmd);
    let node = NodeProcess::start_command(cmd).await;
    let disk = std::path::PathBuf::from(format!("/proc/{}/root{mount_path}", node.process.pid()));
    assert!(
        disk.join("store").exists(),
        "the node's data dir must be the private tmpfs; logs: {:#?}",
        node.logs()
    );
    let publisher = TestNode::start_with(|c| c.store.enabled = false).await;
    publisher.handle.dial(node.tcp_addr()).await.unwrap();
    publisher.wait_for_mesh(TOPIC, 1).await;
    let reader = Client::start(1).await.unwrap();
    let addr = node.tcp_addr();
    let publish = |tag: String| {
        let handle = publisher.handle.clone();
        async move {
            let mut sent = Vec::new();
            for i in 0..20 {
                let m = WakuMessage::new(
                    "/roost/1/disk/proto",
                    noise(&format!("{tag} {i}"), 100 * 1024),
                );
                handle.publish(TOPIC, m.clone()).await.expect("publish");
                sent.push(m.hash(TOPIC));
            }
            sent
        }
    };
    let before: HashSet<MessageHash> = publish("before".into()).await.into_iter().collect();
    wait_until(WAIT, || async {
        missing_from_store(&reader, &addr, &before).await.is_empty()
    })
    .await
    .expect("stored while there is space");

    // Fill the disk.
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 20];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..4096]).is_ok() {}
        let _ = f.sync_all();
    }
    // The store refuses writes once free space is under its reserve; keep publishing until a
    // batch is refused (the first messages may still be in flight from before).
    let mut during = HashSet::new();
    let mut round = 0;
    while metric_sum(
        &alive_metrics(&node).await,
        "roost_store_write_errors_total",
        &[],
    ) < 1.0
    {
        during.extend(publish(format!("during {round}")).await);
        round += 1;
        assert!(
            round < 200,
            "no write failed after {round} rounds of 2 MB on a full disk"
        );
    }
    // The log line, the health component and the drop count follow the failed commit.
    wait_until(WAIT, || async {
        node.logs()
            .iter()
            .any(|l| l.contains("store write failed") && l.contains("ERROR"))
    })
    .await
    .expect("the failure is logged");
    wait_until(WAIT, || async {
        node.health().await["components"]["store"]["status"] == "degraded"
    })
    .await
    .expect("health shows the store degraded");
    wait_until(WAIT, || async {
        metric_sum(
            &node.metrics().await,
            "roost_store_messages_dropped_total",
            &[("reason", "write_failed")],
        ) >= 1.0
    })
    .await
    .expect("the lost messages are counted");
    // Queries keep working and still have everything stored before.
    assert!(missing_from_store(&reader, &addr, &before).await.is_empty());
    let r = query(
        &reader,
        &addr,
        &StoreQueryRequest::new("q").content(TOPIC, ["/roost/1/disk/proto"]),
    )
    .await;
    assert_eq!(r.code(), 200, "{}", r.desc());

    // Space comes back: new messages are stored again.
    std::fs::remove_file(&filler).unwrap();
    // The first batches may still meet the error while RocksDB recovers; a later one must be
    // stored completely.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut round = 0;
    loop {
        let after: HashSet<MessageHash> = publish(format!("after {round}"))
            .await
            .into_iter()
            .collect();
        let stored = wait_until(Duration::from_secs(10), || async {
            missing_from_store(&reader, &addr, &after).await.is_empty()
        })
        .await;
        if stored.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "storing did not resume; logs: {:#?}",
            node.logs()
        );
        round += 1;
    }
    eprintln!(
        "stored again after {round} failed rounds; {} of {} messages sent while full were stored",
        during.len() - missing_from_store(&reader, &addr, &during).await.len(),
        during.len()
    );
    reader.stop().await;
}
