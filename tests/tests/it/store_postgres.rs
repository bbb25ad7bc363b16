//! The PostgreSQL test rig the store's PostgreSQL archive is tested on: a private cluster in a
//! temp dir, durable settings, password auth over loopback, a database per test, stop/restart
//! for connection-loss tests, and nothing left behind.

use std::path::PathBuf;

use roost_tests::postgres::PgCluster;

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
    let data = cluster.dir().join("data");
    let pid: u32 = std::fs::read_to_string(data.join("postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
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
    assert!(
        !PathBuf::from(format!("/proc/{pid}")).exists(),
        "server {pid} still running"
    );
}
