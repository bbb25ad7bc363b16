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
    assert_eq!(applied, "1:messages");
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
        "1"
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

/// Partitions are created ahead by several nodes at once without clashing, one per UTC day,
/// contiguous, and a message lands in the partition of its timestamp.
#[tokio::test]
async fn store_postgres_partitions_created_ahead_once_and_contiguous() {
    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("{e:#}"));
    let url = cluster.create_database("archive").unwrap();
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(
            postgres::connect(&url, Some(cluster.password()))
                .await
                .unwrap(),
        );
    }
    postgres::migrate(&mut clients[0]).await.unwrap();
    let now = now_nanos();
    let day = postgres::PARTITION_NANOS;
    let created = futures::future::join_all(
        clients
            .iter_mut()
            .map(|c| postgres::ensure_partitions(c, now - day, now + 2 * day)),
    )
    .await;
    let total: u32 = created.into_iter().map(|c| c.unwrap()).sum();
    assert_eq!(
        total, 4,
        "yesterday, today and two days ahead, each created once"
    );

    let parts = postgres::partitions(&clients[0]).await.unwrap();
    assert_eq!(parts.len(), 4, "{parts:?}");
    for pair in parts.windows(2) {
        assert_eq!(pair[0].2, pair[1].1, "contiguous: {parts:?}");
    }
    assert!(parts[0].1 <= now - day && now + 2 * day < parts[3].2);

    // A row goes to the partition of its day; a time no partition covers is refused.
    let (expected, _, _) = postgres::partition_of(now);
    let sql = format!(
        "INSERT INTO messages VALUES ({now}, decode(repeat('ab', 32), 'hex'), 'p', 'c', ''::bytea) \
         RETURNING tableoid::regclass::text"
    );
    assert_eq!(cluster.psql("archive", &sql).unwrap(), expected);
    let far = now + 30 * day;
    let sql = format!(
        "INSERT INTO messages VALUES ({far}, decode(repeat('cd', 32), 'hex'), 'p', 'c', ''::bytea)"
    );
    assert!(cluster.psql("archive", &sql).is_err());

    // Negative timestamps (before 1970) get their own names.
    assert_eq!(
        postgres::partition_of(-1),
        ("messages_m86400000000000".to_owned(), -day, 0)
    );
}
