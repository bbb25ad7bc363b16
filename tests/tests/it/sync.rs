//! Store sync between real node processes: a store node killed with -9 while messages flow
//! through the others gets every one of them back after its restart, by hash, without
//! duplicates and without anything it already had being sent again; two live nodes that
//! differ both ways converge both ways.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use libp2p::Multiaddr;
use roost_node::{
    client::Client,
    lightpush::{PushReply, Status},
    message::{MessageHash, WakuMessage},
    NodeHandle,
};
use roost_tests::{
    init_tracing, metric_sum, missing_from_store, postgres::Engine, process::NodeProcess,
    wait_until, TestNode, UNTHROTTLED_ARGS,
};

const TOPIC: &str = "/waku/2/rs/1/0";
const CONTENT: &str = "/roost/1/sync/proto";
/// Short, so the test shows "within one interval"; the first round after a start does not
/// wait for it anyway.
const INTERVAL: &str = "20s";

async fn light_push(handle: &NodeHandle, addr: &Multiaddr, m: &WakuMessage) -> Option<PushReply> {
    roost_tests::light_push_v3(handle, addr, TOPIC, m).await
}

fn store_args(peers: &[Multiaddr]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--store-sync-interval",
        INTERVAL,
        "--store-sync-relay-jitter",
        "1s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(UNTHROTTLED_ARGS.iter().map(|s| s.to_string()));
    for p in peers {
        args.push("--network-peers".into());
        args.push(p.to_string());
    }
    args
}

async fn start(dir: &std::path::Path, args: &[String]) -> NodeProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProcess::start(dir, &args).await
}

async fn sync_metric(node: &NodeProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sum(&node.metrics().await, name, labels)
}

/// Light-pushes `count` messages through `targets` in turn (8 in flight); returns the hashes
/// acknowledged (a 200 from a store node means committed there).
async fn push_many(
    client: &Client,
    targets: &[Multiaddr],
    count: usize,
    tag: &str,
) -> HashSet<MessageHash> {
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let next = Arc::new(Mutex::new(0usize));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (handle, targets, acked, next) = (
            client.handle().clone(),
            targets.to_vec(),
            acked.clone(),
            next.clone(),
        );
        let tag = tag.to_owned();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    if *n >= count {
                        return;
                    }
                    *n += 1;
                    *n - 1
                };
                let m = WakuMessage::new(CONTENT, format!("{tag} {i}").into_bytes());
                let target = &targets[i % targets.len()];
                for _ in 0..5 {
                    if let Some(reply) = light_push(&handle, target, &m).await {
                        if reply.status == Status::SUCCESS {
                            acked.lock().unwrap().insert(m.hash(TOPIC));
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_node_killed_during_5000_pushes_gets_them_all_back_by_sync() {
    init_tracing();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), &store_args(&[])).await;
    let b = start(dirs[1].path(), &store_args(&[a.tcp_addr()])).await;
    let peers = [a.tcp_addr(), b.tcp_addr()];
    let mut c = start(dirs[2].path(), &store_args(&peers)).await;
    let client = Client::start(1).await.unwrap();
    let reader = Client::start(1).await.unwrap();

    // Before the cut: C relays and stores like the others.
    wait_until(Duration::from_secs(30), || async {
        sync_metric(&c, "roost_relay_mesh_peers", &[]).await >= 2.0
    })
    .await
    .expect("C meshes with A and B");
    let before = push_many(&client, &peers, 100, "before").await;
    wait_until(Duration::from_secs(20), || async {
        missing_from_store(&reader, &c.tcp_addr(), &before)
            .await
            .is_empty()
    })
    .await
    .expect("C stores what is relayed while it is up");

    c.kill9();
    let started = Instant::now();
    let during = push_many(&client, &peers, 5000, "during").await;
    let pushed_in = started.elapsed();
    assert_eq!(during.len(), 5000, "every push is acknowledged by A or B");
    for node in [&a, &b] {
        let missing = missing_from_store(&reader, &node.tcp_addr(), &during).await;
        assert!(
            missing.is_empty(),
            "A and B relay to each other and hold all 5000"
        );
    }

    let restarted = Instant::now();
    let c = start(dirs[2].path(), &store_args(&peers)).await;
    let caught_up = wait_until(Duration::from_secs(30), || async {
        missing_from_store(&reader, &c.tcp_addr(), &during)
            .await
            .is_empty()
    })
    .await;
    let took = restarted.elapsed();
    let missing = missing_from_store(&reader, &c.tcp_addr(), &during).await;
    let gained = sync_metric(&c, "roost_store_sync_messages_gained_total", &[]).await;
    let received = sync_metric(&c, "roost_store_sync_received_messages_total", &[]).await;
    let duplicates = sync_metric(
        &c,
        "roost_store_sync_received_messages_total",
        &[("outcome", "duplicate")],
    )
    .await;
    let sent_by_peers = sync_metric(
        &a,
        "roost_store_sync_messages_total",
        &[("direction", "sent")],
    )
    .await
        + sync_metric(
            &b,
            "roost_store_sync_messages_total",
            &[("direction", "sent")],
        )
        .await;
    let bytes = sync_metric(&c, "roost_store_sync_bytes_total", &[]).await;
    eprintln!(
        "store sync after kill -9: 5000 pushed in {pushed_in:.1?}; C restarted and held {} of 5000 \
         {took:.1?} after its restart (interval {INTERVAL}); received {received}, gained {gained}, \
         duplicates {duplicates}, sent by A and B {sent_by_peers}; {bytes} bytes of sync frames at C",
        5000 - missing.len()
    );
    assert!(
        caught_up.is_ok(),
        "C holds {} of 5000 after 30 s; logs: {:?}",
        5000 - missing.len(),
        c.logs()
            .iter()
            .filter(|l| l.contains("sync"))
            .collect::<Vec<_>>()
    );
    assert_eq!(gained, 5000.0, "C gained exactly the messages it missed");
    assert_eq!(duplicates, 0.0, "nothing C had was sent again");
    assert_eq!(
        received, 5000.0,
        "nothing but the missing messages was transferred"
    );
    // What C had before the cut is still there, once.
    assert!(missing_from_store(&reader, &c.tcp_addr(), &before)
        .await
        .is_empty());
    let health = c.health().await;
    wait_until(Duration::from_secs(10), || async {
        c.health().await["components"]["store_sync"]["detail"]["in_sync"] == true
    })
    .await
    .unwrap_or_else(|_| panic!("C reports in sync: {health}"));
    client.stop().await;
    reader.stop().await;
}

/// Two in-process nodes, each holding messages the other lacks (stored while they were not
/// connected), converge both ways in one session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_that_differ_both_ways_converge_both_ways() {
    converge_both_ways(Engine::rocksdb(), Engine::rocksdb()).await;
}

/// The same between a node on RocksDB and a node on PostgreSQL: store sync reads fingerprints
/// and ranges from either engine, and the two interoperate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rocksdb_node_and_a_postgres_node_that_differ_converge_both_ways() {
    converge_both_ways(Engine::rocksdb(), Engine::postgres()).await;
}

async fn converge_both_ways(engine_a: Engine, engine_b: Engine) {
    init_tracing();
    let configure = |c: &mut roost_node::config::Config| {
        c.store_sync.interval = Duration::from_secs(3600);
        c.store_sync.relay_jitter = Duration::from_secs(1);
        // The test polls the stores by hash far faster than any client would.
        c.throttle.store = "unlimited".parse().expect("a quota");
    };
    let a = TestNode::start_with(|c| {
        configure(c);
        engine_a.configure(c, "a");
    })
    .await;
    let b = TestNode::start_with(|c| {
        configure(c);
        engine_b.configure(c, "b");
    })
    .await;
    let client = Client::start(1).await.unwrap();
    // Each node alone: a relay peer for light push is needed, so give each a non-store relay.
    let mut only = Vec::new();
    for node in [&a, &b] {
        let relay = TestNode::start_with(|c| c.store.enabled = false).await;
        relay.connect(node).await;
        relay.wait_for_mesh(TOPIC, 1).await;
        let addr = node.tcp_addr();
        let mut hashes = HashSet::new();
        for i in 0..300 {
            let m = WakuMessage::new(
                CONTENT,
                format!("{} {i}", node.handle.info().peer_id).into_bytes(),
            );
            let reply = light_push(client.handle(), &addr, &m)
                .await
                .expect("an answer");
            assert_eq!(reply.status, Status::SUCCESS);
            hashes.insert(m.hash(TOPIC));
        }
        only.push(hashes);
        relay.stop().await;
    }
    let (only_a, only_b) = (&only[0], &only[1]);
    assert!(!missing_from_store(&client, &b.tcp_addr(), only_a)
        .await
        .is_empty());
    // Connect them: each one's first round starts once it has met the other.
    a.connect(&b).await;
    for (node, wanted) in [(&a, only_b), (&b, only_a)] {
        wait_until(Duration::from_secs(30), || async {
            missing_from_store(&client, &node.tcp_addr(), wanted)
                .await
                .is_empty()
        })
        .await
        .expect("each node gets the other's messages");
    }
    for node in [&a, &b] {
        assert_eq!(
            metric_sum(
                &node.metrics().await,
                "roost_store_sync_messages_gained_total",
                &[]
            ),
            300.0
        );
        assert_eq!(
            metric_sum(
                &node.metrics().await,
                "roost_store_sync_received_messages_total",
                &[("outcome", "duplicate")]
            ),
            0.0
        );
    }
    client.stop().await;
}

/// A store node without relay is a replica filled by store sync alone (nwaku's
/// `--relay=false --store-sync=true`): it gets what a relaying store node archived, and answers
/// store queries with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_node_without_relay_is_filled_by_sync_alone() {
    init_tracing();
    let configure = |c: &mut roost_node::config::Config| {
        c.store_sync.interval = Duration::from_secs(3600);
        c.store_sync.relay_jitter = Duration::from_secs(1);
        c.throttle.store = "unlimited".parse().expect("a quota");
    };
    let archive = TestNode::start_with(configure).await;
    let relay = TestNode::start_with(|c| c.store.enabled = false).await;
    relay.connect(&archive).await;
    relay.wait_for_mesh(TOPIC, 1).await;
    let client = Client::start(1).await.unwrap();
    let mut hashes = HashSet::new();
    for i in 0..50 {
        let m = WakuMessage::new(CONTENT, format!("replica {i}").into_bytes());
        let reply = light_push(client.handle(), &archive.tcp_addr(), &m)
            .await
            .expect("an answer");
        assert_eq!(reply.status, Status::SUCCESS);
        hashes.insert(m.hash(TOPIC));
    }
    let replica = TestNode::start_with(|c| {
        configure(c);
        c.relay.enabled = false;
        c.lightpush.enabled = false;
        c.filter.enabled = false;
    })
    .await;
    assert_eq!(
        replica.health().await["components"]["store"]["status"],
        "ok"
    );
    replica.connect(&archive).await;
    wait_until(Duration::from_secs(30), || async {
        missing_from_store(&client, &replica.tcp_addr(), &hashes)
            .await
            .is_empty()
    })
    .await
    .expect("the replica gets every archived message by sync");
    client.stop().await;
}
