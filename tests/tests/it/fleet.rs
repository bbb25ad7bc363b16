//! Fleets end to end: the staging fleet brought up locally with `roost-fleet`, checked green,
//! a store node killed and reported, messages published while it is down, restarted and green
//! again with the messages it missed reported as store divergence (a failure once they are
//! older than the grace period); then beta beside it, compared, and tested across fleets. Plus the CLI's render/validate/audit as an operator runs them.

use std::{collections::HashSet, process::Command, time::Duration};

use roost_fleet::{
    check::{self, Expectations},
    compare,
    local::{self, FleetState, Quiet},
    Fleet,
};
use roost_node::{
    client::Client,
    lightpush::Version,
    message::{ShardTopic, WakuMessage},
};
use roost_tests::{fleet_bin, init_tracing, missing_from_store, roost_bin, WAIT};

fn shipped(name: &str) -> Fleet {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fleet")
        .join(format!("{name}.toml"));
    Fleet::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Stops a local fleet even when the test fails half-way.
struct Running(std::path::PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new(fleet_bin())
            .args(["down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_checks_green_reports_a_dead_store_node_and_compares_with_beta() {
    init_tracing();
    let roost = roost_bin();
    let staging = shipped("staging");
    assert!(
        staging.hosts.len() >= 5,
        "at least 1 boot, 2 store, 1 rendezvous, 1 relay"
    );
    let dir = tempfile::tempdir().unwrap();
    let staging_dir = dir.path().join("staging");
    let _staging_guard = Running(staging_dir.clone());
    let state = local::up(
        &staging,
        &staging_dir,
        &roost,
        &local::Operator::Dev,
        &Quiet,
    )
    .await
    .expect("staging comes up");
    assert_eq!(state.nodes.len(), staging.hosts.len());
    let json: FleetState =
        serde_json::from_str(&std::fs::read_to_string(staging_dir.join("fleet.json")).unwrap())
            .unwrap();
    for n in &json.nodes {
        assert!(
            n.tcp.contains(&n.peer_id)
                && n.ws.contains("/ws/")
                && n.metrics_url.ends_with("/metrics")
                && n.pid > 0,
            "{n:?}"
        );
    }

    let expect = Expectations::of(&staging);
    let report = check::check(&check::targets_from_state(&state), &expect).await;
    assert!(report.ok(), "{}", check::render_table(&report));
    assert!(report
        .canary
        .as_ref()
        .and_then(|c| c.seconds_to_all_stores)
        .is_some());
    for n in &report.nodes {
        assert_eq!(
            n.attestation_ok,
            Some(true),
            "{} is attested by the dev operator key",
            n.name
        );
        assert!(n.attestation_days.unwrap_or(0.0) > 29.0, "{n:?}");
    }
    assert!(
        report
            .nodes
            .iter()
            .filter(|n| n.rendezvous_ok.is_some())
            .all(|n| n.rendezvous_ok == Some(true)),
        "rendezvous points list the fleet"
    );

    // A store node dies: check must say so.
    let victim = "store-02.do-ams3.staging";
    local::stop_node(&staging_dir, victim, true).await.unwrap();
    let report = check::check(&check::targets_from_state(&state), &expect).await;
    assert!(!report.ok());
    assert!(
        report.failures.iter().any(|f| f.starts_with(victim)),
        "{:?}",
        report.failures
    );

    // While it is down, messages go to the rest of the fleet (store-01 stores them).
    let node_addr = |name: &str| -> libp2p::Multiaddr {
        state
            .nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .tcp
            .parse()
            .unwrap()
    };
    let boot = state
        .nodes
        .iter()
        .find(|n| n.name.starts_with("boot-"))
        .unwrap()
        .name
        .clone();
    let store_01 = "store-01.do-ams3.staging";
    let pubsub_topic =
        ShardTopic::new(staging.fleet.cluster_id, staging.fleet.shards[0]).to_string();
    let client = Client::start(staging.fleet.cluster_id).await.unwrap();
    let mut published = HashSet::new();
    for i in 0..5 {
        let message = WakuMessage::new(
            "/roost-fleet-test/1/divergence/proto",
            format!("while store-02 is down {i}").into_bytes(),
        );
        let reply = client
            .light_push(
                &node_addr(&boot),
                Version::V3,
                Some(&pubsub_topic),
                &message,
            )
            .await
            .unwrap();
        assert!(reply.is_success(), "{reply:?}");
        published.insert(message.hash(&pubsub_topic));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while !missing_from_store(&client, &node_addr(store_01), &published)
        .await
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "store-01 did not store the messages"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Back on the same identity and ports: green again once it has rejoined the mesh. Every
    // message counts as still in flight here (grace = the whole window), so what the victim
    // missed is a warning, not a failure.
    local::start_node_again(&staging_dir, victim, &roost)
        .await
        .unwrap();
    let state = FleetState::load(&staging_dir).unwrap();
    let lenient = Expectations {
        divergence_grace: check::DIVERGENCE_WINDOW,
        ..expect.clone()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let green = loop {
        let report = check::check(&check::targets_from_state(&state), &lenient).await;
        if report.ok() {
            break report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "check did not turn green after the restart:\n{}",
            check::render_table(&report)
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };

    // Store divergence. Without store sync the victim never gets what it missed; a node with
    // store sync (the `store_sync` component in /health) may have fetched some of it already,
    // so the test compares the report with what the victim lacks after each check (anything
    // missing after the check was missing during it).
    let victim_url = &state
        .nodes
        .iter()
        .find(|n| n.name == victim)
        .unwrap()
        .http_url;
    let health: serde_json::Value = reqwest::get(format!("{victim_url}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let syncs = !health["components"]["store_sync"].is_null();
    let lacking = missing_from_store(&client, &node_addr(victim), &published).await;
    if !syncs {
        assert_eq!(
            lacking.len(),
            published.len(),
            "without store sync a restarted store node has none of what it missed"
        );
    }
    let divergence_of = |report: &check::CheckReport, name: &str| {
        report
            .nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| {
                (
                    n.store_held,
                    n.store_union,
                    n.store_missing,
                    n.store_missing_settled,
                )
            })
            .unwrap()
    };
    let (_, _, missing, settled) = divergence_of(&green, victim);
    assert!(
        missing.unwrap() as usize >= lacking.len() && settled == Some(0),
        "lenient check: {missing:?} missing ({settled:?} settled), victim lacks {}\n{}",
        lacking.len(),
        check::render_table(&green)
    );
    if !lacking.is_empty() {
        assert!(
            green.warnings.iter().any(|w| w.starts_with(victim)),
            "{:?}",
            green.warnings
        );
    }
    let (held, union, missing, _) = divergence_of(&green, store_01);
    assert_eq!(missing, Some(0), "store-01 holds everything");
    assert_eq!(held, union);
    assert!(union.unwrap() as usize >= published.len());

    // With no grace at all, what the victim misses is settled: a failure naming it.
    let strict = Expectations {
        divergence_grace: Duration::ZERO,
        ..expect.clone()
    };
    let report = check::check(&check::targets_from_state(&state), &strict).await;
    eprintln!(
        "store sync on {victim}: {syncs}\n{}",
        check::render_table(&report)
    );
    let lacking = missing_from_store(&client, &node_addr(victim), &published).await;
    let (held, union, missing, settled) = divergence_of(&report, victim);
    assert!(
        settled.unwrap() as usize >= lacking.len() && missing == settled,
        "strict check: {settled:?} settled missing, victim lacks {}\n{}",
        lacking.len(),
        check::render_table(&report)
    );
    assert_eq!(held.unwrap() + missing.unwrap(), union.unwrap());
    if !syncs {
        assert!(settled.unwrap() as usize >= published.len());
    }
    if !lacking.is_empty() {
        assert!(!report.ok());
        assert!(
            report
                .failures
                .iter()
                .any(|f| f.starts_with(victim) && f.contains("missing")),
            "{:?}",
            report.failures
        );
        let table = check::render_table(&report);
        assert!(
            table.contains("held/union") && table.contains("missing"),
            "{table}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["divergence"]["union"].as_u64().unwrap() >= published.len() as u64);
    }
    client.stop().await;

    // Beta beside it, then the comparison with the cross-fleet test.
    let beta = shipped("beta");
    let beta_dir = dir.path().join("beta");
    let _beta_guard = Running(beta_dir.clone());
    let beta_state = local::up(&beta, &beta_dir, &roost, &local::Operator::Dev, &Quiet)
        .await
        .expect("beta comes up");
    let comparison = compare::compare(&staging, &beta, Some((&state, &beta_state))).await;
    assert!(!comparison.differences.is_empty());
    assert_eq!(comparison.cross.len(), 2);
    assert!(comparison.ok(), "{}", compare::render_table(&comparison));

    assert_eq!(local::down(&beta_dir).await.unwrap(), beta.hosts.len());
    assert_eq!(
        local::down(&staging_dir).await.unwrap(),
        staging.hosts.len()
    );
    for n in state.nodes.iter().chain(&beta_state.nodes) {
        assert!(!local::is_running(n.pid), "{} still runs", n.name);
    }
}

/// The tool as operators run it: validate, render (every rendered roost.toml parses with the
/// node's own loader, via `roost config dump`), and a bad fleet file exits with one line.
#[test]
fn fleet_cli_validates_and_renders_configs_the_node_accepts() {
    let out = tempfile::tempdir().unwrap();
    for name in ["staging", "beta"] {
        let status = Command::new(fleet_bin())
            .args(["render", name, "--out"])
            .arg(out.path().join(name))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .unwrap();
        assert!(status.success());
        let fleet = shipped(name);
        for host in &fleet.hosts {
            let config = out
                .path()
                .join(name)
                .join("hosts")
                .join(&host.name)
                .join("roost.toml");
            let dump = Command::new(roost_bin())
                .args(["config", "dump", "--config"])
                .arg(&config)
                .output()
                .unwrap();
            assert!(
                dump.status.success(),
                "{}: {}",
                config.display(),
                String::from_utf8_lossy(&dump.stderr)
            );
        }
    }
    let bad = out.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fleet/staging.toml"
        ))
        .unwrap()
        .replace(
            "rendezvous_points = [\"rendezvous-01.do-ams3.staging\"]",
            "rendezvous_points = []",
        ),
    )
    .unwrap();
    let result = Command::new(fleet_bin())
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no rendezvous point"), "{stderr}");
}

/// Staging with the store on an existing PostgreSQL database, as its fleet file's comment shows
/// (those lines uncommented): `render` gives the store hosts' configs the backend, the URL and
/// the password file, which the node's own loader accepts (`roost config dump`), and the other
/// hosts' configs stay on RocksDB; a URL with a password is refused in one line that does not
/// print it.
#[test]
fn fleet_cli_renders_a_store_on_an_existing_postgresql_database_the_node_accepts() {
    let staging = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fleet/staging.toml"
    ))
    .unwrap();
    let url = "postgresql://roost@db-01.do-ams3.internal:5432/roost_staging";
    let example = format!("# store.backend = \"postgres\"\n# store.postgres_url = \"{url}\"\n");
    assert!(
        staging.contains(&example),
        "fleet/staging.toml no longer shows the PostgreSQL example"
    );
    let on_postgres = staging.replace(
        &example,
        &format!("store.backend = \"postgres\"\nstore.postgres_url = \"{url}\"\n"),
    );
    let out = tempfile::tempdir().unwrap();
    let fleet_file = out.path().join("staging.toml");
    std::fs::write(&fleet_file, &on_postgres).unwrap();
    let status = Command::new(fleet_bin())
        .arg("render")
        .arg(&fleet_file)
        .arg("--out")
        .arg(out.path().join("rendered"))
        .status()
        .unwrap();
    assert!(status.success());
    let fleet = Fleet::load(&fleet_file).unwrap();
    for host in &fleet.hosts {
        let config = out
            .path()
            .join("rendered")
            .join("hosts")
            .join(&host.name)
            .join("roost.toml");
        let dump = Command::new(roost_bin())
            .args(["config", "dump", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&dump.stdout);
        assert!(
            dump.status.success(),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&dump.stderr)
        );
        let store = host.roles.contains(&roost_fleet::Role::Store);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.contains(&"backend = \"postgres\""),
            store,
            "{}:\n{text}",
            host.name
        );
        assert_eq!(
            lines.contains(&"postgres_password_file = \"/var/lib/roost/postgres-password\""),
            store,
            "{}:\n{text}",
            host.name
        );
        let vars = std::fs::read_to_string(
            out.path()
                .join("rendered")
                .join("host_vars")
                .join(format!("{}.yml", host.name)),
        )
        .unwrap();
        assert_eq!(
            vars.contains("roost_node_store_backend: \"postgres\""),
            store,
            "{}",
            host.name
        );
    }

    let leaky = out.path().join("leaky.toml");
    std::fs::write(
        &leaky,
        on_postgres.replace("roost@db-01", "roost:hunter2@db-01"),
    )
    .unwrap();
    let result = Command::new(fleet_bin())
        .arg("validate")
        .arg(&leaky)
        .output()
        .unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("carries a password"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
