//! Fleets end to end: the staging fleet brought up locally with `roost-fleet`, checked green,
//! a store node killed and reported, restarted and green again; then beta beside it, compared,
//! and tested across fleets. Plus the CLI's render/validate/audit as an operator runs them.

use std::process::Command;

use roost_fleet::{
    check::{self, Expectations},
    compare,
    local::{self, FleetState, Quiet},
    Fleet,
};
use roost_tests::{fleet_bin, init_tracing, roost_bin, WAIT};

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

    // Back on the same identity and ports: green again once it has rejoined the mesh.
    local::start_node_again(&staging_dir, victim, &roost)
        .await
        .unwrap();
    let state = FleetState::load(&staging_dir).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let report = check::check(&check::targets_from_state(&state), &expect).await;
        if report.ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "check did not turn green after the restart:\n{}",
            check::render_table(&report)
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }

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
