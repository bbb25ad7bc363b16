//! The PostgreSQL test rig the store's PostgreSQL archive is tested on: a private cluster in a
//! temp dir, durable settings, password auth over loopback, a database per test, stop/restart
//! for connection-loss tests, and nothing left behind; and the archive's schema on it: versioned
//! migrations and time partitions, safe when several nodes start at once.

use std::path::PathBuf;

use roost_node::{message::now_nanos, store::postgres};
use roost_tests::postgres::{process_alive, PgCluster};

#[test]
fn store_postgres_rig_private_cluster_is_durable_isolated_and_cleaned_up() {
    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
    assert!(cluster.is_ready(), "pg_isready after start");
    assert_ne!(cluster.port, 0);

    // Durable settings: an acknowledged commit is on disk.
    assert_eq!(cluster.psql("postgres", "SHOW fsync").unwrap(), "on");
    assert_eq!(
        cluster.psql("postgres", "SHOW synchronous_commit").unwrap(),
        "on"
    );
    assert_eq!(
        cluster.psql("postgres", "SHOW listen_addresses").unwrap(),
        "127.0.0.1"
    );
    // TCP clients must give the password, as against a production server.
    let host_auth = cluster
        .psql(
            "postgres",
            "SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'",
        )
        .unwrap();
    assert_eq!(host_auth, "scram-sha-256");
    assert!(cluster
        .url("x")
        .starts_with("postgresql://roost@127.0.0.1:"));
    assert!(!cluster.url("x").contains(cluster.password()));

    // A database per test: what one holds, another does not see.
    let a = cluster.create_database("test_a").unwrap();
    assert!(a.ends_with("/test_a"), "{a}");
    cluster.create_database("test_b").unwrap();
    cluster
        .psql("test_a", "CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
        .unwrap();
    assert!(cluster.psql("test_b", "SELECT v FROM t").is_err());

    // Stop (fast) drops clients; a restart on the same port keeps what was committed.
    cluster.stop().unwrap();
    assert!(!cluster.is_ready(), "pg_isready after stop");
    assert!(cluster.psql("test_a", "SELECT 1").is_err());
    cluster.restart().unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(cluster.psql("test_a", "SELECT v FROM t").unwrap(), "7");

    // The server never runs as root (initdb refuses it).
    let pid = cluster.server_pid().expect("the server's pid file");
    assert!(process_alive(pid));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.split_whitespace().nth(2) != Some("0"),
        "server runs as root: {uid_line}"
    );

    // Dropping the cluster stops the server and removes its files.
    let dir: PathBuf = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(!process_alive(pid), "server {pid} still running");
}

/// Several nodes starting at once on one database: the migrations are applied exactly once
/// (advisory lock + one transaction), a second start changes nothing, and a database with a
/// newer schema than the node knows is refused.
#[tokio::test]
async fn store_postgres_migrations_apply_once_under_concurrent_starts() {
    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = cluster.create_database("archive").unwrap();
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(
            postgres::connect(&url, Some(cluster.password()))
                .await
                .unwrap(),
        );
    }
    let versions = futures::future::join_all(clients.iter_mut().map(postgres::migrate)).await;
    let known = postgres::MIGRATIONS.last().unwrap().0;
    for v in versions {
        assert_eq!(v.unwrap(), known);
    }
    let applied = cluster
        .psql(
            "archive",
            "SELECT string_agg(version::text || ':' || name, ',' ORDER BY version) FROM roost_schema_migrations",
        )
        .unwrap();
    assert_eq!(applied, "1:messages,2:archive_state,3:partition_counts");
    // messages is partitioned by range on the timestamp; the hash lookup table is not.
    assert_eq!(
        cluster
            .psql(
                "archive",
                "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'messages'::regclass"
            )
            .unwrap(),
        "r"
    );
    assert_eq!(
        cluster
            .psql(
                "archive",
                "SELECT to_regclass('messages_lookup') IS NOT NULL"
            )
            .unwrap(),
        "t"
    );

    // A restart: nothing to do, nothing changes.
    assert_eq!(postgres::migrate(&mut clients[0]).await.unwrap(), known);
    assert_eq!(
        cluster
            .psql("archive", "SELECT count(*) FROM roost_schema_migrations")
            .unwrap(),
        known.to_string()
    );

    // A newer node migrated this database: an older node must not touch it.
    cluster
        .psql(
            "archive",
            "INSERT INTO roost_schema_migrations (version, name) VALUES (99, 'future')",
        )
        .unwrap();
    match postgres::migrate(&mut clients[1]).await {
        Err(postgres::PgError::NewerSchema {
            found: 99,
            known: k,
        }) => assert_eq!(k, known),
        other => panic!("expected NewerSchema, got {other:?}"),
    }

    // The password is required: a wrong one is a connect error.
    let err = postgres::connect(&url, Some("wrong")).await.unwrap_err();
    assert!(matches!(err, postgres::PgError::Connect(_)), "{err}");
}

/// A private cluster with one migrated database and `n` connections to it, as `n` nodes
/// sharing it would have (the cluster stops when the first value is dropped).
async fn migrated_database_with_clients(n: usize) -> (PgCluster, Vec<postgres::Client>) {
    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = cluster.create_database("archive").unwrap();
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(
            postgres::connect(&url, Some(cluster.password()))
                .await
                .unwrap(),
        );
    }
    postgres::migrate(&mut clients[0]).await.unwrap();
    (cluster, clients)
}

/// Partitions are created ahead by several nodes at once without clashing, one per UTC hour,
/// contiguous, and a message lands in the partition of its timestamp.
#[tokio::test]
async fn store_postgres_partitions_created_ahead_once_and_contiguous() {
    let (cluster, mut clients) = migrated_database_with_clients(4).await;
    let now = now_nanos();
    let width = postgres::PARTITION_NANOS;
    let created = futures::future::join_all(
        clients
            .iter_mut()
            .map(|c| postgres::ensure_partitions(c, now - width, now + 2 * width)),
    )
    .await;
    let total: u32 = created.into_iter().map(|c| c.unwrap()).sum();
    assert_eq!(
        total, 4,
        "the last hour, this one and two ahead, each created once"
    );

    let parts = postgres::partitions(&clients[0]).await.unwrap();
    assert_eq!(parts.len(), 4, "{parts:?}");
    for pair in parts.windows(2) {
        assert_eq!(pair[0].2, pair[1].1, "contiguous: {parts:?}");
    }
    assert!(parts[0].1 <= now - width && now + 2 * width < parts[3].2);

    // A row goes to the partition of its hour; a time no partition covers is refused.
    let (expected, _, _) = postgres::partition_of(now);
    let sql = format!(
        "INSERT INTO messages VALUES ({now}, decode(repeat('ab', 32), 'hex'), 'p', 'c', ''::bytea) \
         RETURNING tableoid::regclass::text"
    );
    assert_eq!(cluster.psql("archive", &sql).unwrap(), expected);
    let far = now + 30 * width;
    let sql = format!(
        "INSERT INTO messages VALUES ({far}, decode(repeat('cd', 32), 'hex'), 'p', 'c', ''::bytea)"
    );
    assert!(cluster.psql("archive", &sql).is_err());

    // Negative timestamps (before 1970) get their own names.
    assert_eq!(
        postgres::partition_of(-1),
        ("messages_m3600000000000".to_owned(), -width, 0)
    );
}

fn incoming(n: u8, timestamp: i64) -> roost_node::store::Incoming {
    roost_node::store::Incoming {
        pubsub_topic: "/waku/2/rs/1/0".into(),
        hash: roost_node::message::MessageHash([n; 32]),
        timestamp,
        content_topic: format!("/app/1/t{}/proto", n % 3),
        bytes: vec![n; 10 + n as usize],
    }
}

/// Several nodes inserting overlapping batches (in different orders, with repeats inside a
/// batch) into one database at once: every message is stored once, exactly one insert reports
/// it new, and what is stored is what was sent. A batch with a message no partition covers
/// stores nothing at all (one transaction).
#[tokio::test]
async fn store_postgres_batches_from_several_nodes_store_each_message_once() {
    let (cluster, mut clients) = migrated_database_with_clients(4).await;
    let now = now_nanos();
    let width = postgres::PARTITION_NANOS;
    postgres::ensure_partitions(&mut clients[0], now - 2 * width, now)
        .await
        .unwrap();

    // Messages 1..=60 over the last partition and this one; node k sends them rotated by k, twice over
    // (rounds), and message 1 twice within each batch.
    let all: Vec<_> = (1..=60u8)
        // Around the start of the current partition: half of them before it, half after.
        .map(|n| {
            incoming(
                n,
                now.div_euclid(width) * width + (i64::from(n) - 30) * (width / 100),
            )
        })
        .collect();
    let fresh_counts =
        futures::future::join_all(clients.iter_mut().enumerate().map(|(k, client)| {
            let mut mine = all.clone();
            mine.rotate_left(k * 15);
            mine.push(all[0].clone());
            async move {
                let inserter = postgres::Inserter::prepare(client).await.unwrap();
                let mut fresh = 0;
                for _round in 0..2 {
                    for chunk in mine.chunks(16) {
                        let result = inserter.insert(client, chunk).await.unwrap();
                        assert_eq!(result.len(), chunk.len());
                        fresh += result.iter().filter(|f| **f).count();
                    }
                }
                fresh
            }
        }))
        .await;
    assert_eq!(
        fresh_counts.iter().sum::<usize>(),
        60,
        "each message new exactly once across nodes: {fresh_counts:?}"
    );
    let count = |sql: &str| cluster.psql("archive", sql).unwrap();
    assert_eq!(count("SELECT count(*) FROM messages"), "60");
    assert_eq!(count("SELECT count(*) FROM messages_lookup"), "60");
    // The per-partition counters kept by the inserts agree with the rows, per partition.
    assert_eq!(
        count(
            "SELECT string_agg(partition_start || ':' || messages || ':' || bytes, ',' \
             ORDER BY partition_start) FROM roost_partition_counts"
        ),
        count(
            "SELECT string_agg(s || ':' || n || ':' || b, ',' ORDER BY s) FROM \
             (SELECT timestamp - (((timestamp % 3600000000000) + 3600000000000) % 3600000000000) AS s, \
              count(*) AS n, sum(octet_length(message)) AS b FROM messages GROUP BY 1) t"
        )
    );
    // Both tables agree, and rows hold what was sent.
    assert_eq!(
        count(
            "SELECT count(*) FROM messages m JOIN messages_lookup l \
             ON l.hash = m.hash AND l.timestamp = m.timestamp"
        ),
        "60"
    );
    let m = &all[41];
    let row = count(&format!(
        "SELECT timestamp || ' ' || pubsub_topic || ' ' || content_topic || ' ' || \
         encode(message, 'hex') FROM messages WHERE hash = decode('{}', 'hex')",
        hex::encode(m.hash.0)
    ));
    assert_eq!(
        row,
        format!(
            "{} {} {} {}",
            m.timestamp,
            m.pubsub_topic,
            m.content_topic,
            hex::encode(&m.bytes)
        )
    );
    // Messages of both partitions, each in its own partition.
    assert_eq!(count("SELECT count(DISTINCT tableoid) FROM messages"), "2");

    let inserter = postgres::Inserter::prepare(&clients[0]).await.unwrap();
    // One message outside every partition: the whole batch fails and none of it is stored.
    let batch = vec![incoming(100, now), incoming(101, now + 30 * width)];
    assert!(inserter.insert(&mut clients[0], &batch).await.is_err());
    assert_eq!(count("SELECT count(*) FROM messages_lookup"), "60");
    // The connection is still usable, and the good message alone goes in.
    assert_eq!(
        inserter.insert(&mut clients[0], &batch[..1]).await.unwrap(),
        vec![true]
    );
    assert_eq!(count("SELECT count(*) FROM messages"), "61");
    assert!(inserter
        .insert(&mut clients[0], &[])
        .await
        .unwrap()
        .is_empty());
}

/// Time retention drops whole partitions (hours) that end before the cutoff, with their
/// hash-lookup rows; the partition holding the cutoff stays whole; a message of a dropped partition can be
/// stored again (its lookup row went too); running it again drops nothing.
#[tokio::test]
async fn store_postgres_time_retention_drops_whole_partitions_only() {
    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = cluster.create_database("archive").unwrap();
    let mut client = postgres::connect(&url, Some(cluster.password()))
        .await
        .unwrap();
    postgres::migrate(&mut client).await.unwrap();
    let width = postgres::PARTITION_NANOS;
    let now = now_nanos();
    let current = now.div_euclid(width) * width;
    postgres::ensure_partitions(&mut client, current - 4 * width, current)
        .await
        .unwrap();
    // Two messages in each of the five partitions: at the start and in the middle of the partition.
    let batch: Vec<_> = (0..5i64)
        .flat_map(|d| {
            let start = current - d * width;
            [
                incoming(1 + 2 * d as u8, start),
                incoming(2 + 2 * d as u8, start + width / 2),
            ]
        })
        .collect();
    let inserter = postgres::Inserter::prepare(&client).await.unwrap();
    inserter.insert(&mut client, &batch).await.unwrap();
    let count = |sql: &str| cluster.psql("archive", sql).unwrap();
    assert_eq!(count("SELECT count(*) FROM messages"), "10");

    // Cut in the middle of the partition three back: the two partitions before it go, that one stays.
    let cutoff = current - 3 * width + width / 4;
    let dropped = postgres::drop_partitions_before(&mut client, cutoff)
        .await
        .unwrap();
    assert_eq!(dropped, vec![postgres::partition_of(current - 4 * width).0]);
    assert_eq!(count("SELECT count(*) FROM messages"), "8");
    assert_eq!(count("SELECT count(*) FROM messages_lookup"), "8");
    assert_eq!(
        count("SELECT min(timestamp) FROM messages"),
        (current - 3 * width).to_string(),
        "the partition holding the cutoff is kept whole"
    );
    let parts = postgres::partitions(&client).await.unwrap();
    assert_eq!(parts.len(), 4);
    assert_eq!(parts[0].1, current - 3 * width);
    assert_eq!(
        postgres::cutoff(&client).await.unwrap(),
        Some(current - 3 * width),
        "the cutoff is on record for every node on the database"
    );
    // Again: nothing to drop.
    assert!(postgres::drop_partitions_before(&mut client, cutoff)
        .await
        .unwrap()
        .is_empty());
    // A message of a kept partition is still a duplicate; one of the dropped partition is new again once
    // its partition is back (its lookup row went with the partition).
    assert_eq!(
        inserter.insert(&mut client, &batch[2..3]).await.unwrap(),
        vec![false]
    );
    postgres::ensure_partitions(&mut client, current - 4 * width, current - 4 * width)
        .await
        .unwrap();
    assert_eq!(
        inserter.insert(&mut client, &batch[8..9]).await.unwrap(),
        vec![true]
    );
}

/// Store v3 queries answered from PostgreSQL are the RocksDB archive's answers for the same
/// messages, page by page (entries, records, cursors), paged through to the end: content
/// queries both ways with and without a time range, time-only and pubsub-topic-only queries,
/// hash lookups narrowed by pubsub topic and presence checks, across two partitions and
/// with timestamps shared by two messages (ties broken by hash). An unknown cursor is refused
/// by both.
#[tokio::test]
async fn store_postgres_queries_answer_as_the_rocksdb_archive_does() {
    use roost_node::{
        message::{MessageHash, WakuMessage},
        store::{rpc, Archive, Incoming, StoreQueryRequest, Tuning, Writer},
    };
    use std::sync::Arc;

    let (_cluster, mut clients) = migrated_database_with_clients(1).await;
    let client = &mut clients[0];
    let topics = ["/waku/2/rs/1/0", "/waku/2/rs/1/1"];
    let contents = ["/app/1/a/proto", "/app/1/b/proto", "/app/1/c/proto"];
    let width = postgres::PARTITION_NANOS;
    // Half a partition before a partition boundary to half one after: two partitions.
    let base = (now_nanos() / width) * width - width / 2;
    let messages: Vec<Incoming> = (0..240i64)
        .map(|i| {
            let pubsub = topics[(i % 2) as usize];
            let content = contents[(i % 3) as usize];
            // Two messages per timestamp.
            let ts = base + (i / 2) * (width / 120);
            let message = WakuMessage {
                payload: format!("message {i}").into_bytes(),
                content_topic: content.to_owned(),
                timestamp: Some(ts),
                ..Default::default()
            };
            Incoming {
                pubsub_topic: Arc::from(pubsub),
                hash: message.hash(pubsub),
                timestamp: ts,
                content_topic: content.to_owned(),
                bytes: message.encode_to_vec(),
            }
        })
        .collect();

    postgres::ensure_partitions(client, base, base + width)
        .await
        .unwrap();
    let inserter = postgres::Inserter::prepare(client).await.unwrap();
    for batch in messages.chunks(50) {
        let fresh = inserter.insert(client, batch).await.unwrap();
        assert!(fresh.iter().all(|f| *f));
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = Arc::new(Archive::open(&dir.path().join("store"), &Tuning::default()).unwrap());
    let mut writer = Writer::new(archive.clone(), false).unwrap();
    let written = writer.write(&messages).unwrap();
    assert!(
        written
            .iter()
            .all(|w| matches!(w, roost_node::store::Written::Stored)),
        "{written:?}"
    );

    let served = topics.iter().map(|t| t.to_string()).collect();
    let some_hashes: Vec<MessageHash> = messages
        .iter()
        .step_by(7)
        .map(|m| m.hash)
        .chain([MessageHash([7; 32])])
        .collect();
    let pubsub_only = |topic: &str| StoreQueryRequest {
        pubsub_topic: Some(topic.to_owned()),
        ..StoreQueryRequest::new("pubsub")
    };
    let requests = [
        StoreQueryRequest::new("content")
            .content(topics[0], [contents[0], contents[1]])
            .forward(true)
            .limit(7),
        StoreQueryRequest::new("content back")
            .content(topics[0], [contents[0], contents[1]])
            .limit(7),
        StoreQueryRequest::new("content range")
            .content(topics[1], contents)
            .time_range(Some(base + width / 4), Some(base + 3 * width / 4))
            .include_data(false)
            .forward(true)
            .limit(10),
        StoreQueryRequest::new("time only")
            .time_range(Some(base + width / 3), None)
            .limit(20),
        pubsub_only(topics[1])
            .include_data(false)
            .forward(true)
            .limit(25),
        StoreQueryRequest::new("lookup")
            .hashes(some_hashes.clone())
            .content(topics[0], Vec::<String>::new())
            .forward(true)
            .limit(5),
        StoreQueryRequest::new("presence")
            .hashes(some_hashes.clone())
            .include_data(false)
            .limit(100),
    ];
    let mut pages_compared = 0;
    for request in requests {
        let mut request = request;
        let mut pages = 0;
        loop {
            let query = rpc::parse_request(&prost::Message::encode_to_vec(&request), &served)
                .unwrap_or_else(|e| panic!("{request:?}: {e:?}"));
            let rocks = archive.query(&query).unwrap();
            let pg = postgres::query::query(client, &query).await.unwrap();
            assert_eq!(pg, rocks, "page {pages} of {:?}", request.request_id);
            pages += 1;
            pages_compared += 1;
            match rocks.cursor {
                Some(cursor) if pages < 100 => request = request.cursor(Some(cursor)),
                _ => break,
            }
        }
        assert!(
            pages > 1 || request.request_id.as_deref() == Some("presence"),
            "{:?} pages through more than one page",
            request.request_id
        );
    }
    println!("{pages_compared} pages equal on both engines");

    // A cursor neither archive has.
    let query = rpc::parse_request(
        &prost::Message::encode_to_vec(
            &StoreQueryRequest::new("bad cursor")
                .content(topics[0], [contents[0]])
                .cursor(Some(MessageHash([9; 32]))),
        ),
        &served,
    )
    .unwrap();
    let rocks = archive.query(&query).unwrap_err();
    let pg = postgres::query::query(client, &query).await.unwrap_err();
    assert_eq!(pg, rocks);
}

/// An archive made under schema 2 (before the per-partition counters) is upgraded in place:
/// migration 3 counts what is there, and inserts keep the counters from then on.
#[tokio::test]
async fn store_postgres_upgrade_counts_an_existing_archive() {
    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = cluster.create_database("old").unwrap();
    // Schema 2 as an older node left it, with messages in two partitions.
    for (version, name, sql) in &postgres::MIGRATIONS[..2] {
        cluster.psql("old", sql).unwrap();
        cluster
            .psql(
                "old",
                &format!(
                    "CREATE TABLE IF NOT EXISTS roost_schema_migrations (version INTEGER PRIMARY KEY, \
                     name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now()); \
                     INSERT INTO roost_schema_migrations (version, name) VALUES ({version}, '{name}')"
                ),
            )
            .unwrap();
    }
    let width = postgres::PARTITION_NANOS;
    let current = now_nanos().div_euclid(width) * width;
    let mut client = postgres::connect(&url, Some(cluster.password()))
        .await
        .unwrap();
    postgres::ensure_partitions(&mut client, current - width, current)
        .await
        .unwrap();
    for (n, ts, len) in [
        (1u8, current - 5, 10),
        (2, current - width, 20),
        (3, current + 7, 30),
    ] {
        cluster
            .psql(
                "old",
                &format!(
                    "INSERT INTO messages VALUES ({ts}, decode(repeat('{n:02x}', 32), 'hex'), 'p', 'c', \
                     decode(repeat('00', {len}), 'hex'))"
                ),
            )
            .unwrap();
    }
    assert_eq!(
        postgres::migrate(&mut client).await.unwrap(),
        postgres::MIGRATIONS.last().unwrap().0
    );
    let counts = postgres::partition_counts(&client).await.unwrap();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![(current - width, (2, 30)), (current, (1, 30))]
    );
}
