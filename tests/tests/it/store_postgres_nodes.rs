//! Store nodes on a PostgreSQL archive, as operators run them: several nodes sharing one
//! database behind a relay (each message stored once, identical answers, kill -9 of one mid
//! ingest), a database that goes away and comes back, retention of each kind by dropping
//! partitions, `roost store migrate` both ways, and the config's handling of the password.

use std::{collections::HashSet, time::Duration};

use libp2p::Multiaddr;
use roost_node::{
    client::Client,
    lightpush::Status,
    message::{now_nanos, MessageHash, WakuMessage},
    store::{
        postgres,
        rpc::{Entry, StoreQueryRequest},
        Incoming,
    },
};
use roost_tests::{
    init_tracing, light_push_v3, metric_sum, missing_from_store,
    postgres::{Engine, PgCluster},
    process::{run_roost, NodeProcess},
    wait_until, TestNode, UNTHROTTLED_ARGS, WAIT,
};

const TOPIC: &str = "/waku/2/rs/1/0";
const CONTENT: &str = "/roost/1/pg/proto";

/// Every page of `request`, followed to the end.
async fn all_pages(client: &Client, addr: &Multiaddr, request: StoreQueryRequest) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut request = request;
    for _ in 0..1000 {
        let response = client
            .store_query(addr, &request)
            .await
            .expect("the store node answers");
        assert_eq!(response.code(), 200, "{}", response.desc());
        out.extend(response.entries().expect("entries"));
        match response.cursor() {
            Some(c) => request = request.cursor(Some(c)),
            None => return out,
        }
    }
    panic!("paging does not end");
}

/// An unthrottled store node on `engine`'s database `database`.
async fn store_node(engine: &Engine, database: &str) -> TestNode {
    TestNode::start_with(|c| {
        unthrottled(c);
        engine.configure(c, database);
    })
    .await
}

fn unthrottled(c: &mut roost_node::Config) {
    c.throttle.relay = roost_node::throttle::quota::QuotaSpec::unlimited();
    c.throttle.relay_bytes = roost_node::throttle::quota::QuotaSpec::unlimited();
    c.throttle.store = roost_node::throttle::quota::QuotaSpec::unlimited();
}

/// Two store nodes on one database behind a relay: both archive every relayed message, the
/// database holds each once (one node stores it, the other finds it there), and the two
/// answer every query alike, page for page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_postgres_two_nodes_on_one_database_store_once_and_answer_alike() {
    init_tracing();
    let engine = Engine::postgres();
    let cluster = engine.cluster.as_ref().expect("a cluster");
    let relay = TestNode::start_with(|c| {
        c.store.enabled = false;
        unthrottled(c);
    })
    .await;
    let s1 = store_node(&engine, "shared").await;
    let s2 = store_node(&engine, "shared").await;
    s1.connect(&relay).await;
    s2.connect(&relay).await;
    relay.wait_for_mesh(TOPIC, 2).await;

    let base = now_nanos();
    let mut published = HashSet::new();
    for i in 0..300i64 {
        let message = WakuMessage {
            payload: format!("shared {i}").into_bytes(),
            content_topic: if i % 2 == 0 {
                CONTENT
            } else {
                "/roost/1/pg2/proto"
            }
            .into(),
            // Pairs share a timestamp: the hash orders them.
            timestamp: Some(base + (i / 2) * 1_000_000),
            ..Default::default()
        };
        published.insert(message.hash(TOPIC));
        relay.handle.publish(TOPIC, message).await.expect("publish");
    }
    let reader = Client::start(1).await.unwrap();
    for node in [&s1, &s2] {
        wait_until(WAIT, || async {
            missing_from_store(&reader, &node.tcp_addr(), &published)
                .await
                .is_empty()
        })
        .await
        .expect("both nodes answer for every message");
    }
    // Once in the database: the two nodes' "stored" add up to 300, the rest were duplicates.
    assert_eq!(
        cluster
            .psql(
                "shared",
                "SELECT count(*) || ' ' || count(DISTINCT hash) FROM messages"
            )
            .unwrap(),
        "300 300"
    );
    assert_eq!(
        cluster
            .psql("shared", "SELECT count(*) FROM messages_lookup")
            .unwrap(),
        "300"
    );
    let mut stored = 0.0;
    let mut duplicates = 0.0;
    for node in [&s1, &s2] {
        let m = node.metrics().await;
        stored += metric_sum(&m, "roost_store_messages_stored_total", &[]);
        duplicates += metric_sum(
            &m,
            "roost_store_messages_rejected_total",
            &[("reason", "duplicate")],
        );
    }
    assert_eq!(stored, 300.0, "each message stored by exactly one node");
    assert_eq!(duplicates, 300.0, "and found there by the other");

    // Identical answers, page for page.
    let queries = [
        StoreQueryRequest::new("content-back")
            .content(TOPIC, [CONTENT])
            .limit(17),
        StoreQueryRequest::new("content-fwd")
            .content(TOPIC, [CONTENT, "/roost/1/pg2/proto"])
            .forward(true)
            .limit(25),
        StoreQueryRequest::new("time")
            .time_range(Some(base + 20_000_000), Some(base + 90_000_000))
            .limit(9),
        StoreQueryRequest::new("pubsub")
            .content(TOPIC, Vec::<String>::new())
            .limit(100),
        StoreQueryRequest::new("hashes")
            .hashes(published.iter().take(40).copied())
            .limit(40),
    ];
    for request in queries {
        let one = all_pages(&reader, &s1.tcp_addr(), request.clone()).await;
        let two = all_pages(&reader, &s2.tcp_addr(), request.clone()).await;
        assert!(!one.is_empty(), "{request:?}");
        assert_eq!(one, two, "{request:?}");
    }
    reader.stop().await;
}

/// Two store node processes on one database; light pushes go to both while one is killed
/// with -9: every push either node acknowledged is in the database, and the survivor answers
/// for all of them (the killed node's acknowledgements included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_postgres_kill_9_of_one_of_two_nodes_on_one_database_loses_nothing_acknowledged() {
    init_tracing();
    let engine = Engine::postgres();
    let relay = TestNode::start_with(|c| {
        c.store.enabled = false;
        unthrottled(c);
    })
    .await;
    let mut args: Vec<&str> = UNTHROTTLED_ARGS.to_vec();
    let engine_args = engine.args("shared");
    args.extend(engine_args.iter().map(String::as_str));
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut victim = NodeProcess::start(d1.path(), &args).await;
    let survivor = NodeProcess::start(d2.path(), &args).await;
    for node in [&victim, &survivor] {
        relay.handle.dial(node.tcp_addr()).await.expect("dial");
    }
    relay.wait_for_mesh(TOPIC, 2).await;

    let client = Client::start(1).await.unwrap();
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    let pushers: Vec<_> = [victim.tcp_addr(), survivor.tcp_addr()]
        .into_iter()
        .enumerate()
        .map(|(k, addr)| {
            let handle = client.handle().clone();
            let acknowledged = acknowledged.clone();
            tokio::spawn(async move {
                for i in 0..400 {
                    let m = WakuMessage::new(CONTENT, format!("push {k} {i}").into_bytes());
                    if let Some(reply) = light_push_v3(&handle, &addr, TOPIC, &m).await {
                        if reply.status == Status::SUCCESS {
                            acknowledged.lock().unwrap().insert(m.hash(TOPIC));
                        }
                    }
                }
            })
        })
        .collect();
    // Kill once the victim has acknowledged a good share.
    wait_until(WAIT, || async { acknowledged.lock().unwrap().len() >= 300 })
        .await
        .expect("pushes are acknowledged");
    victim.kill9();
    for p in pushers {
        p.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 400,
        "the survivor acknowledged its 400 and the victim some: {}",
        acknowledged.len()
    );
    let missing = missing_from_store(&client, &survivor.tcp_addr(), &acknowledged).await;
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged pushes lost",
        missing.len(),
        acknowledged.len()
    );
    client.stop().await;
}

/// The database stops under a running store node: the node keeps relaying, reports the store
/// degraded with the reason, refuses light pushes it cannot store (never a false 200); when
/// the database is back it reconnects on its own, stores again and reports ok, a retried push
/// that got the 500 is stored, and what it acknowledged before is all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_postgres_a_lost_database_degrades_the_store_and_the_node_recovers() {
    init_tracing();
    let engine = Engine::postgres();
    let cluster = engine.cluster.as_ref().expect("a cluster");
    let store = store_node(&engine, "roost").await;
    let publisher = TestNode::start_with(|c| c.store.enabled = false).await;
    let listener = TestNode::start_with(|c| c.store.enabled = false).await;
    publisher.connect(&store).await;
    listener.connect(&store).await;
    publisher.wait_for_mesh(TOPIC, 1).await;
    listener.wait_for_mesh(TOPIC, 1).await;
    let mut heard = listener.handle.subscribe();
    let client = Client::start(1).await.unwrap();
    let addr = store.tcp_addr();

    let before = WakuMessage::new(CONTENT, b"before".to_vec());
    let reply = light_push_v3(client.handle(), &addr, TOPIC, &before)
        .await
        .expect("an answer");
    assert_eq!(reply.status, Status::SUCCESS);

    cluster.stop().expect("stop the database");
    // Relaying goes on: the listener hears what the publisher sends through the store node.
    let during = WakuMessage::new(CONTENT, b"during".to_vec());
    publisher
        .handle
        .publish(TOPIC, during.clone())
        .await
        .expect("publish");
    let during_hash = during.hash(TOPIC);
    tokio::time::timeout(WAIT, async {
        loop {
            match heard.recv().await {
                Ok(m) if m.hash == during_hash => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("listener stopped: {e}"),
            }
        }
    })
    .await
    .expect("the store node relays while its database is down");
    // A light push it cannot store is refused, with the reason.
    let refused = WakuMessage::new(CONTENT, b"refused".to_vec());
    let reply = light_push_v3(client.handle(), &addr, TOPIC, &refused)
        .await
        .expect("an answer");
    assert_ne!(reply.status, Status::SUCCESS, "{reply:?}");
    assert!(
        reply
            .description
            .as_deref()
            .is_some_and(|d| d.contains("PostgreSQL")),
        "{reply:?}"
    );
    let degraded = wait_until(WAIT, || async {
        let h = store.health().await;
        h["components"]["store"]["status"] == "degraded"
            && h["components"]["store"]["detail"]["database"] == "unreachable"
    })
    .await;
    assert!(degraded.is_ok(), "store degraded: {}", store.health().await);
    // Queries get a 503 that says why, not an empty page.
    let r = client
        .store_query(&addr, &StoreQueryRequest::new("down"))
        .await
        .expect("an answer");
    assert_eq!(r.code(), 503, "{}", r.desc());

    cluster.restart().expect("start the database again");
    let after = WakuMessage::new(CONTENT, b"after".to_vec());
    wait_until(Duration::from_secs(30), || async {
        light_push_v3(client.handle(), &addr, TOPIC, &after)
            .await
            .is_some_and(|r| r.status == Status::SUCCESS)
    })
    .await
    .expect("light push is stored again once the database is back");
    wait_until(WAIT, || async {
        store.health().await["components"]["store"]["detail"]["database"] == "connected"
    })
    .await
    .expect("health shows the database connected");
    // The client retries the push that got the 500: relay has seen it, the archive had not;
    // now it is stored and acknowledged.
    let retry = light_push_v3(client.handle(), &addr, TOPIC, &refused)
        .await
        .expect("an answer");
    assert_eq!(retry.status, Status::SUCCESS, "{retry:?}");
    let wanted: HashSet<MessageHash> =
        [before.hash(TOPIC), after.hash(TOPIC), refused.hash(TOPIC)].into();
    assert!(missing_from_store(&client, &addr, &wanted).await.is_empty());
    // A repeat of a push the archive has is nwaku's "relayed already".
    let again = light_push_v3(client.handle(), &addr, TOPIC, &refused)
        .await
        .expect("an answer");
    assert_eq!(again.status, Status::NO_PEERS_TO_RELAY, "{again:?}");
    assert!(
        metric_sum(
            &store.metrics().await,
            "roost_store_write_errors_total",
            &[]
        ) >= 1.0
    );
    client.stop().await;
}

/// Fills a database with `per` messages of `payload` bytes in each of the `hours` hours
/// before the current one (through the archive's own inserter, as a node would have), and
/// returns their hashes, oldest hour first.
async fn fill_past_hours(
    cluster: &PgCluster,
    database: &str,
    hours: i64,
    per: usize,
    payload: usize,
) -> Vec<Vec<MessageHash>> {
    let url = cluster.create_database(database).unwrap();
    let mut client = postgres::connect(&url, Some(cluster.password()))
        .await
        .unwrap();
    postgres::migrate(&mut client).await.unwrap();
    let width = postgres::PARTITION_NANOS;
    let current = now_nanos().div_euclid(width) * width;
    postgres::ensure_partitions(&mut client, current - hours * width, current)
        .await
        .unwrap();
    let inserter = postgres::Inserter::prepare(&client).await.unwrap();
    let mut out = Vec::new();
    for h in (1..=hours).rev() {
        let start = current - h * width;
        let mut hashes = Vec::new();
        let batch: Vec<Incoming> = (0..per)
            .map(|i| {
                let mut message = WakuMessage::new(CONTENT, noise(h, i, payload));
                message.timestamp = Some(start + (i as i64 + 1) * (width / (per as i64 + 2)));
                let hash = message.hash(TOPIC);
                hashes.push(hash);
                Incoming {
                    pubsub_topic: TOPIC.into(),
                    hash,
                    timestamp: message.timestamp.unwrap(),
                    content_topic: CONTENT.into(),
                    bytes: message.encode_to_vec(),
                }
            })
            .collect();
        assert!(inserter
            .insert(&mut client, &batch)
            .await
            .unwrap()
            .iter()
            .all(|f| *f));
        out.push(hashes);
    }
    out
}

/// Incompressible bytes (real payloads are encrypted), distinct per (hour, index).
fn noise(hour: i64, i: usize, len: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut block: [u8; 32] = Sha256::digest(format!("{hour} {i}")).into();
    let mut out = Vec::with_capacity(len + 32);
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block).into();
    }
    out.truncate(len);
    out
}

/// Which hours (oldest first) still have all / none of their messages on `node`.
async fn hours_present(
    client: &Client,
    node: &TestNode,
    hours: &[Vec<MessageHash>],
) -> Vec<&'static str> {
    let mut out = Vec::new();
    for hashes in hours {
        let wanted: HashSet<MessageHash> = hashes.iter().copied().collect();
        let missing = missing_from_store(client, &node.tcp_addr(), &wanted).await;
        out.push(match missing.len() {
            0 => "kept",
            n if n == hashes.len() => "dropped",
            _ => "partial",
        });
    }
    out
}

/// Retention of each kind on PostgreSQL drops whole hour partitions, oldest first, never
/// rows: time drops the hours before the limit, capacity the oldest hours until at most one
/// partition over the count, size the oldest hours until the relations fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_postgres_retention_of_each_kind_drops_the_oldest_partitions() {
    init_tracing();
    let cluster = PgCluster::start().expect("a cluster");
    let client = Client::start(1).await.unwrap();
    let password_file = cluster.password_file().unwrap();
    let node_on = |database: &str, policy: &str| {
        let url = cluster.url(database);
        let password_file = password_file.clone();
        let policy = policy.to_owned();
        TestNode::start_with(move |c| {
            unthrottled(c);
            c.store.backend = roost_node::store::Backend::Postgres;
            c.store.postgres_url = url;
            c.store.postgres_password_file = Some(password_file);
            c.store.retention = policy.parse().expect("a policy");
            c.store.retention_interval = Duration::from_millis(200);
        })
    };
    let deleted = |m: &str, policy: &str| {
        metric_sum(
            m,
            "roost_store_retention_deleted_total",
            &[("policy", policy)],
        )
    };

    // Time: 5 hours of 10 messages; `time:3h` drops the hours that ended 3 h ago or earlier
    // (the 5th and 4th hours back; the 3rd back ends less than 3 h ago).
    let hours = fill_past_hours(&cluster, "time", 5, 10, 1000).await;
    let node = node_on("time", "time:3h").await;
    wait_until(WAIT, || async {
        deleted(&node.metrics().await, "time") >= 20.0
    })
    .await
    .expect("time retention ran");
    assert_eq!(
        hours_present(&client, &node, &hours).await,
        ["dropped", "dropped", "kept", "kept", "kept"]
    );
    assert_eq!(deleted(&node.metrics().await, "time"), 20.0);
    node.stop().await;

    // Capacity: 50 messages, `capacity:25`: the oldest hours go until at most 25 are left
    // in whole partitions: 3 hours (30 messages) go, 20 stay.
    let hours = fill_past_hours(&cluster, "capacity", 5, 10, 1000).await;
    let node = node_on("capacity", "capacity:25").await;
    wait_until(WAIT, || async {
        deleted(&node.metrics().await, "capacity") >= 30.0
    })
    .await
    .expect("capacity retention ran");
    assert_eq!(
        hours_present(&client, &node, &hours).await,
        ["dropped", "dropped", "dropped", "kept", "kept"]
    );
    assert_eq!(
        cluster
            .psql("capacity", "SELECT count(*) FROM messages")
            .unwrap(),
        "20"
    );
    node.stop().await;

    // Size: 5 hours of 8 × 128 KiB (about 1 MiB each in TOAST); `size:3MB` drops the oldest
    // hours until the relations fit in 3 MiB.
    let hours = fill_past_hours(&cluster, "size", 5, 8, 128 * 1024).await;
    let node = node_on("size", "size:3MB").await;
    wait_until(WAIT, || async {
        deleted(&node.metrics().await, "size") >= 16.0
    })
    .await
    .expect("size retention ran");
    let present = hours_present(&client, &node, &hours).await;
    let kept = present.iter().filter(|p| **p == "kept").count();
    assert!(
        (1..=3).contains(&kept) && present[5 - kept..].iter().all(|p| *p == "kept"),
        "the newest hours are kept, the oldest dropped: {present:?}"
    );
    assert!(present[..5 - kept].iter().all(|p| *p == "dropped"));
    let size: u64 = cluster
        .psql(
            "size",
            "SELECT COALESCE(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits \
             WHERE inhparent = 'messages'::regclass",
        )
        .unwrap()
        .parse()
        .unwrap();
    assert!(size <= 3 * 1024 * 1024, "{size} bytes left");
    node.stop().await;
    client.stop().await;
}

/// `roost store migrate` copies a RocksDB archive into PostgreSQL and back: a node on the
/// copy answers exactly as the original did; a second run copies nothing and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_postgres_migrate_copies_an_archive_both_ways() {
    init_tracing();
    let cluster = PgCluster::start().expect("a cluster");
    let url = cluster.create_database("migrated").unwrap();
    let password_file = cluster.password_file().unwrap();
    let client = Client::start(1).await.unwrap();

    // A RocksDB store node with 250 messages on three content topics.
    let original = TestNode::start().await;
    let store = original.handle.store().unwrap().clone();
    let topics = [
        "/roost/1/m1/proto",
        "/roost/1/m2/proto",
        "/roost/1/m3/proto",
    ];
    for i in 0..250usize {
        let m = WakuMessage::new(topics[i % 3], format!("migrate {i}").into_bytes());
        assert_eq!(
            store.insert(TOPIC, m).await,
            Ok(roost_node::store::InsertOutcome::Stored)
        );
    }
    let queries = [
        StoreQueryRequest::new("all").limit(30),
        StoreQueryRequest::new("content")
            .content(TOPIC, [topics[1]])
            .forward(true)
            .limit(11),
    ];
    let mut expected = Vec::new();
    for q in &queries {
        expected.push(all_pages(&client, &original.tcp_addr(), q.clone()).await);
    }
    let rocks_dir = original.stop().await;

    let pg_flags = [
        "--store-postgres-url".to_owned(),
        url.clone(),
        "--store-postgres-password-file".to_owned(),
        password_file.display().to_string(),
    ];
    let migrate = |from: &str, to: &str, data_dir: &std::path::Path| {
        let mut args = vec!["store", "migrate", "--from", from, "--to", to, "--data-dir"];
        let data_dir = data_dir.display().to_string();
        let mut owned: Vec<String> = args.drain(..).map(str::to_owned).collect();
        owned.push(data_dir);
        owned.extend(pg_flags.iter().cloned());
        let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let out = run_roost(&refs, std::path::Path::new("."));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let out = migrate("rocksdb", "postgres", rocks_dir.path());
    assert!(out.contains("copied      250 messages"), "{out}");
    assert!(out.contains("target      250 messages now"), "{out}");
    // Again: everything is there already.
    let out = migrate("rocksdb", "postgres", rocks_dir.path());
    assert!(out.contains("copied      0 messages"), "{out}");
    assert!(out.contains("skipped     250"), "{out}");

    // A node on the PostgreSQL copy answers as the original did.
    let on_pg = TestNode::start_with(|c| {
        c.store.backend = roost_node::store::Backend::Postgres;
        c.store.postgres_url = url.clone();
        c.store.postgres_password_file = Some(password_file.clone());
    })
    .await;
    for (q, want) in queries.iter().zip(&expected) {
        assert_eq!(
            &all_pages(&client, &on_pg.tcp_addr(), q.clone()).await,
            want
        );
    }
    on_pg.stop().await;

    // And back into a fresh RocksDB archive.
    let back = tempfile::tempdir().unwrap();
    let out = migrate("postgres", "rocksdb", back.path());
    assert!(out.contains("copied      250 messages"), "{out}");
    let on_rocks = TestNode::start_in(back, |_| {}).await;
    for (q, want) in queries.iter().zip(&expected) {
        assert_eq!(
            &all_pages(&client, &on_rocks.tcp_addr(), q.clone()).await,
            want
        );
    }
    on_rocks.stop().await;

    // Same engine twice is a usage error that says so.
    let out = run_roost(
        &["store", "migrate", "--from", "postgres", "--to", "postgres"],
        std::path::Path::new("."),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("same engine"));
    client.stop().await;
}

/// The password never shows in `roost config dump`, from a URL or a file; a database that
/// cannot be reached stops the node at start with an error naming it (password masked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_postgres_config_keeps_the_password_out_of_sight_and_start_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_roost(
        &[
            "config",
            "dump",
            "--store-backend",
            "postgres",
            "--store-postgres-url",
            "postgres://roost:hunter2@db.invalid:5432/roost",
        ],
        dir.path(),
    );
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dump.contains("hunter2"), "{dump}");
    assert!(
        dump.contains("postgres://roost:***@db.invalid:5432/roost"),
        "{dump}"
    );

    // Nothing listens on this port: start-up fails and says which database.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://roost:hunter2@127.0.0.1:{port}/roost");
    let out = run_roost(
        &[
            "run",
            "--data-dir",
            &dir.path().display().to_string(),
            "--store-backend",
            "postgres",
            "--store-postgres-url",
            &url,
            "--tcp-port",
            "0",
            "--ws-port",
            "0",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("PostgreSQL archive at"), "{stderr}");
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    // An empty URL with the postgres backend is a config error with the fix.
    let out = run_roost(
        &["config", "dump", "--store-backend", "postgres"],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("store.postgres_url is empty"), "{stderr}");
}

/// The database takes the node's connections back and refuses writes (read-only, as a server
/// out of disk or a demoted primary does): the store fails writes with the database's reason,
/// reports `degraded`, keeps answering queries from what it has, and stores again once writes
/// are allowed; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_postgres_a_database_refusing_writes_keeps_queries_and_recovers() {
    init_tracing();
    let engine = Engine::postgres();
    let cluster = engine.cluster.as_ref().expect("a cluster");
    let store = store_node(&engine, "roost").await;
    let relay = TestNode::start_with(|c| c.store.enabled = false).await;
    relay.connect(&store).await;
    relay.wait_for_mesh(TOPIC, 1).await;
    let client = Client::start(1).await.unwrap();
    let addr = store.tcp_addr();
    let push = |m: WakuMessage| {
        let handle = client.handle().clone();
        let addr = addr.clone();
        async move {
            light_push_v3(&handle, &addr, TOPIC, &m)
                .await
                .expect("an answer")
        }
    };
    let kept = WakuMessage::new(CONTENT, b"kept".to_vec());
    assert_eq!(push(kept.clone()).await.status, Status::SUCCESS);

    // Read-only for new sessions, and the node's sessions ended so it reconnects into that.
    let end_sessions = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                        WHERE datname = 'roost' AND pid <> pg_backend_pid()";
    cluster
        .psql(
            "postgres",
            "ALTER DATABASE roost SET default_transaction_read_only = on",
        )
        .unwrap();
    cluster.psql("postgres", end_sessions).unwrap();
    let refused = WakuMessage::new(CONTENT, b"refused".to_vec());
    let mut reply = push(refused.clone()).await;
    // The first push may meet the ended session; the next one the read-only database.
    for _ in 0..20 {
        if reply
            .description
            .as_deref()
            .is_some_and(|d| d.contains("read-only"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        reply = push(WakuMessage::new(
            CONTENT,
            format!("{:?}", std::time::Instant::now()).into_bytes(),
        ))
        .await;
    }
    assert_eq!(reply.status, Status::INTERNAL_SERVER_ERROR, "{reply:?}");
    assert!(
        reply
            .description
            .as_deref()
            .is_some_and(|d| d.contains("read-only")),
        "the database's reason reaches the client: {reply:?}"
    );
    let degraded = wait_until(WAIT, || async {
        let h = store.health().await;
        h["components"]["store"]["status"] == "degraded"
            && h["components"]["store"]["detail"]["last_write_error"]
                .as_str()
                .is_some_and(|e| e.contains("read-only"))
    })
    .await;
    assert!(degraded.is_ok(), "{}", store.health().await);
    // Queries still work, from what is there.
    let wanted: HashSet<MessageHash> = [kept.hash(TOPIC)].into();
    assert!(missing_from_store(&client, &addr, &wanted).await.is_empty());

    cluster
        .psql(
            "postgres",
            "ALTER DATABASE roost RESET default_transaction_read_only",
        )
        .unwrap();
    cluster.psql("postgres", end_sessions).unwrap();
    let after = WakuMessage::new(CONTENT, b"after".to_vec());
    wait_until(Duration::from_secs(30), || async {
        push(after.clone()).await.status == Status::SUCCESS
    })
    .await
    .expect("writes resume once the database takes them");
    let wanted: HashSet<MessageHash> = [kept.hash(TOPIC), after.hash(TOPIC)].into();
    assert!(missing_from_store(&client, &addr, &wanted).await.is_empty());
    client.stop().await;
}
