//! Dashboards, alerts and runbooks, tested against the real thing.
//!
//! - The alert rules pass `promtool check rules`; every alert has `promtool test rules` unit
//!   tests (firing and not firing) and a runbook with the four sections operators need.
//! - Both Grafana dashboards are importable as they are (datasource input, no datasource uid,
//!   unique panel ids, the fleet/dc/instance variables, every `$variable` defined).
//! - A real Prometheus (Debian's) scrapes the staging fleet brought up locally with
//!   `roost-fleet`, under light load (light push, store queries, a filter subscription, peer
//!   exchange). Every panel expression of both dashboards must parse and return data; every
//!   metric name they use must exist on a live node's `/metrics`; every variable must resolve;
//!   and no alert may fire once the fleet has settled. Then faults: a store node killed, a
//!   bare peer flooding invalid messages, messages with a stale clock, bad requests, a
//!   subscriber gone, a peer of another cluster, impostors with self-signed attestations, an
//!   attestation renewed for two days only, and finally the fleet collapsing around one node.
//!   Every incident panel must then show data and the alerts these faults stand for must have
//!   fired (the live copy of the rules has its `for:` and range windows shortened; promtool's
//!   unit tests cover the real ones).
//! - The run draws the main panels into PNG charts (`target/dashboards/`; with
//!   `DASHBOARDS_UPDATE_DOCS=1`, also into `docs/dashboards/` for the README; not a `ROOST_*`
//!   name, as those set node config and the fleet's nodes would refuse it).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use libp2p::Multiaddr;
use roost_fleet::{
    local::{self, FleetState, NodeState},
    Fleet,
};
use roost_node::{
    client::Client,
    filter::RequestType,
    lightpush::Version,
    message::{now_nanos, MessageHash, WakuMessage},
    operator::{
        attestation::unix, signer::file::FileSigner, Claims, OperatorKey, Role, Signer as _,
    },
    peer_exchange,
    store::rpc::StoreQueryRequest,
    swarm::ReqResProtocol,
};
use roost_tests::{
    bare::{BareOptions, BarePeer},
    charts::{self, Chart, Line, Marker},
    dashboards::{self, Dashboard, Target},
    fleet_bin, init_tracing,
    prometheus::{promtool, Prometheus},
    roost_bin, wait_until, TestNode,
};

/// The alerts the issue asks for; each has a runbook and a promtool test file of its name.
const ALERTS: [&str; 13] = [
    "NodeDown",
    "NoRelayPeers",
    "MeshDegraded",
    "StoreNotIngesting",
    "StoreQueryLatencyHigh",
    "StoreNearSizeLimit",
    "StoreOutOfSync",
    "AttestationExpiresSoon",
    "AttestationInvalid",
    "SpamSurge",
    "BansSpiking",
    "RendezvousEmpty",
    "HighMemory",
];

/// The sections every runbook has.
const RUNBOOK_SECTIONS: [&str; 4] = ["## What it means", "## Confirm", "## Fix", "## Escalate"];

/// How long the live test waits for data, alerts or targets before failing (the machine may be
/// loaded; nothing here is a speed goal).
const PATIENCE: Duration = Duration::from_secs(180);

/// `$__rate_interval` for evaluation: a few scrapes of the test Prometheus (1 s).
const RATE_INTERVAL: &str = "10s";

const STAGING: &str = "staging";
const CONTENT_TOPIC: &str = "/dashboards/1/load/proto";

fn dir() -> PathBuf {
    dashboards::dashboards_dir()
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `- alert: Name` lines of the rule file, in order.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_every_alert_has_unit_tests_and_a_runbook() {
    let prometheus_dir = dir().join("prometheus");
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"], &prometheus_dir).unwrap();
    assert!(ok, "promtool check rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");

    let rules = std::fs::read_to_string(prometheus_dir.join("alerts.yml")).unwrap();
    let names = alert_names(&rules);
    assert_eq!(
        names.iter().collect::<BTreeSet<_>>(),
        ALERTS
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .iter()
            .collect(),
        "alerts.yml defines exactly the alerts in ALERTS"
    );

    let mut test_files = Vec::new();
    for alert in ALERTS {
        // Each alert's runbook link points at its runbook, which exists and is complete.
        let link = format!("dashboards/runbooks/{alert}.md");
        let block_start = rules
            .find(&format!("- alert: {alert}\n"))
            .unwrap_or_else(|| panic!("{alert} missing"));
        let block_end = rules[block_start + 1..]
            .find("- alert:")
            .map_or(rules.len(), |i| block_start + 1 + i);
        let block = &rules[block_start..block_end];
        assert!(
            block.contains("runbook_url: https://") && block.contains(&link),
            "{alert}: runbook_url must link {link}"
        );
        for field in ["expr:", "for:", "severity:", "summary:", "description:"] {
            assert!(block.contains(field), "{alert} has no {field}");
        }
        let runbook = std::fs::read_to_string(dir().join("runbooks").join(format!("{alert}.md")))
            .unwrap_or_else(|e| panic!("runbook of {alert}: {e}"));
        assert!(
            runbook.starts_with(&format!("# {alert}\n")),
            "{alert}.md title"
        );
        for section in RUNBOOK_SECTIONS {
            assert!(runbook.contains(section), "{alert}.md has no `{section}`");
        }
        assert!(
            runbook.contains("roost"),
            "{alert}.md shows how to confirm with roost/roost-fleet commands"
        );

        // Its promtool test file checks it both firing and not firing.
        let file = format!("tests/{alert}.yml");
        let test = std::fs::read_to_string(prometheus_dir.join(&file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(test.contains(&format!("alertname: {alert}")), "{file}");
        assert!(
            test.contains("exp_alerts: []"),
            "{file} has no not-firing case"
        );
        assert!(
            test.contains("exp_labels:") && test.contains("exp_annotations:"),
            "{file} has no firing case"
        );
        test_files.push(file);
    }
    let mut args = vec!["test", "rules"];
    args.extend(test_files.iter().map(String::as_str));
    let (ok, out) = promtool(&args, &prometheus_dir).unwrap();
    assert!(ok, "promtool test rules:\n{out}");
    assert_eq!(
        out.matches("SUCCESS").count(),
        ALERTS.len(),
        "every test file passes:\n{out}"
    );
}

#[test]
fn dashboards_are_importable_grafana_json() {
    for name in ["roost-fleet", "roost-node"] {
        let path = dir().join("grafana").join(format!("{name}.json"));
        let dashboard = Dashboard::load(&path).unwrap();
        let problems = dashboard.structure_problems(&["fleet", "dc", "instance"]);
        assert!(problems.is_empty(), "{name}.json:\n{}", problems.join("\n"));
        assert!(
            dashboard.targets().len() >= 20,
            "{name}: {} queries",
            dashboard.targets().len()
        );
        // Variables chain fleet -> dc -> instance, so choosing a fleet narrows the others.
        let variables = dashboard.variables();
        let dc = variables.iter().find(|v| v.name == "dc").unwrap();
        let instance = variables.iter().find(|v| v.name == "instance").unwrap();
        assert!(dc.query.contains("$fleet"), "{name}: {:?}", dc.query);
        assert!(
            instance.query.contains("$fleet") && instance.query.contains("$dc"),
            "{name}: {:?}",
            instance.query
        );
        // Every query is scoped by the three variables.
        for target in dashboard.targets() {
            for var in ["$fleet", "$dc", "$instance"] {
                assert!(
                    target.expr.contains(var),
                    "{name}: `{}` ({}) does not use {var}",
                    target.panel_title,
                    target.ref_id
                );
            }
        }
    }
    // The fleet dashboard can show all nodes; the node dashboard is about one.
    let fleet = Dashboard::load(&dir().join("grafana/roost-fleet.json")).unwrap();
    let node = Dashboard::load(&dir().join("grafana/roost-node.json")).unwrap();
    let instance = |d: &Dashboard| {
        d.variables()
            .into_iter()
            .find(|v| v.name == "instance")
            .unwrap()
    };
    assert!(instance(&fleet).include_all && instance(&fleet).multi);
    assert!(!instance(&node).include_all && !instance(&node).multi);
}

// === the live fleet ===

/// Stops a local fleet even when the test fails half-way.
struct Running(PathBuf);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new(fleet_bin())
            .args(["down", "--dir"])
            .arg(&self.0)
            .output();
    }
}

/// The shipped staging fleet, as it runs on one machine: every node shares 127.0.0.1, so
/// loopback is exempt from the throttle's per-IP limits and IP bans (otherwise the fleet's
/// own connections count as one host's, and one banned test client would cut every node off).
/// The light push quota is the old low one (30 a minute), so the flood below gets each flooder
/// banned within its 400 requests; the shipped quota admits a 300-push burst. Bans and
/// everything else stay as shipped.
/// Gives the DNS discovery panels a source: the fleet's tree as `roost-fleet dns` publishes it,
/// served on loopback, and boot-01 restarted with it in `discovery.dns_urls` (its static peers
/// stay). Returns the new state and the server, which serves while it lives.
async fn boot_node_reads_the_tree(
    staging: &Path,
    fleet_dir: &Path,
    state: FleetState,
) -> (FleetState, local::DnsServer) {
    const DOMAIN: &str = "nodes.staging.roost.test";
    let out = fleet_dir.join("dns");
    let published = Command::new(fleet_bin())
        .arg("dns")
        .arg(staging)
        .arg("--dir")
        .arg(fleet_dir)
        .args(["--domain", DOMAIN, "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "roost-fleet dns: {}",
        String::from_utf8_lossy(&published.stderr)
    );
    let published: serde_json::Value = serde_json::from_slice(&published.stdout).unwrap();
    let url = published["url"].as_str().unwrap().to_owned();
    let server = roost_fleet::dns::LocalServer::bind(None).await.unwrap();
    let name_server = server.address().unwrap();
    let server = server.serve(DOMAIN, &out.join("zone.txt")).unwrap();
    let boot = node(&state, "boot-01");
    let run = |args: &[&str]| {
        let out = Command::new(fleet_bin())
            .args(args)
            .arg("--dir")
            .arg(fleet_dir)
            .arg(&boot.name)
            .args(if args[0] == "start-node" {
                vec!["--roost-bin".to_owned(), roost_bin().display().to_string()]
            } else {
                vec![]
            })
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "roost-fleet {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["stop-node"]);
    let text = std::fs::read_to_string(&boot.config).unwrap();
    let mut config: toml::Table = toml::from_str(&text).unwrap();
    let discovery = config
        .entry("discovery")
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .unwrap();
    discovery.insert("dns_urls".into(), vec![toml::Value::String(url)].into());
    discovery.insert(
        "dns_name_servers".into(),
        vec![toml::Value::String(name_server.to_string())].into(),
    );
    std::fs::write(&boot.config, toml::to_string(&config).unwrap()).unwrap();
    run(&["start-node"]);
    let state = FleetState::load(fleet_dir).unwrap();
    let boot = node(&state, "boot-01");
    wait_until(PATIENCE, || async {
        let text = reqwest::get(&boot.metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        dashboards::exposed_names(&text).contains("roost_discovery_dns_dials_total")
    })
    .await
    .expect("boot-01 reads the tree and dials its nodes");
    (state, server)
}

fn local_staging(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fleet/staging.toml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    assert!(
        text.contains("\n[node]\n"),
        "staging.toml has a [node] section"
    );
    let text = text.replacen(
        "\n[node]\n",
        "\n[node]\nthrottle.exempt_ips = [\"127.0.0.1\"]\nthrottle.lightpush = \"30/1m per-peer; 300/1s global\"\n",
        1,
    );
    let path = dir.join("staging.toml");
    std::fs::write(&path, text).unwrap();
    Fleet::load(&path).unwrap_or_else(|e| panic!("staging: {e}"));
    path
}

fn node<'a>(state: &'a FleetState, prefix: &str) -> &'a NodeState {
    state
        .nodes
        .iter()
        .find(|n| n.name.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} node in the fleet"))
}

fn addr(node: &NodeState) -> Multiaddr {
    node.tcp.parse().expect("multiaddr in fleet.json")
}

/// The shipped rules with their time constants shortened for a test that lasts minutes:
/// `for:` becomes 3 s and every range window 20 s (20 scrapes). Thresholds and expressions
/// stay as they are.
fn live_rules(rules: &str) -> String {
    let mut out = String::new();
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("for:") {
            let indent = &line[..line.len() - trimmed.len()];
            assert!(!rest.trim().is_empty());
            out.push_str(&format!("{indent}for: 3s\n"));
            continue;
        }
        let mut rewritten = String::new();
        let mut rest = line;
        while let Some(open) = rest.find('[') {
            let Some(close) = rest[open..].find(']') else {
                break;
            };
            let inside = &rest[open + 1..open + close];
            rewritten.push_str(&rest[..open]);
            if inside.ends_with('m') || inside.ends_with('h') {
                rewritten.push_str("[20s]");
            } else {
                rewritten.push_str(&rest[open..=open + close]);
            }
            rest = &rest[open + close + 1..];
        }
        rewritten.push_str(rest);
        out.push_str(&rewritten);
        out.push('\n');
    }
    out
}

/// What the load generator did, for the report.
#[derive(Default, Debug)]
struct LoadReport {
    pushed: u64,
    push_failed: u64,
    queries: u64,
    query_failed: u64,
    exchanges: u64,
}

/// Light load on the fleet, within the per-peer quotas (30 light pushes a minute, as set in
/// `local_staging`; the shipped 200 store queries and 10 peer exchanges a minute): three light clients take turns, one light
/// push a second through the boot node (alternating shards), a store query to every store node
/// a second, a peer exchange every 10 s, and a filter subscription on the boot node. `stale`
/// switches the pushes to timestamps an hour old (publishers, or a store, with a wrong clock).
struct Load {
    stop: Arc<AtomicBool>,
    stale: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

/// One light push through the boot node.
fn message(i: u64, stale: bool) -> WakuMessage {
    let mut message = WakuMessage::new(CONTENT_TOPIC, format!("load {i}").into_bytes());
    if stale {
        message.timestamp = Some(now_nanos() - 3600 * 1_000_000_000);
    }
    message
}

fn shard_topics(state: &FleetState) -> Vec<String> {
    state
        .shards
        .iter()
        .map(|s| format!("/waku/2/rs/{}/{s}", state.cluster_id))
        .collect()
}

impl Load {
    async fn start(state: &FleetState) -> Load {
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(Client::start(state.cluster_id).await.expect("light client"));
        }
        let boot = addr(node(state, "boot-"));
        let stores: Vec<Multiaddr> = state
            .nodes
            .iter()
            .filter(|n| n.name.starts_with("store-"))
            .map(addr)
            .collect();
        let topics = shard_topics(state);
        let subscribed = clients[0]
            .filter(
                &boot,
                RequestType::Subscribe,
                Some(&topics[0]),
                &[CONTENT_TOPIC.to_owned()],
            )
            .await
            .expect("filter subscribe");
        assert_eq!(subscribed.status.0, 200, "{subscribed:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let stale = Arc::new(AtomicBool::new(false));
        let task = {
            let (stop, stale) = (stop.clone(), stale.clone());
            tokio::spawn(async move {
                let mut report = LoadReport::default();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                let mut i: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    i += 1;
                    let client = &clients[(i as usize) % clients.len()];
                    let topic = &topics[(i as usize) % topics.len()];
                    let pushed = client
                        .light_push(
                            &boot,
                            Version::V3,
                            Some(topic),
                            &message(i, stale.load(Ordering::Relaxed)),
                        )
                        .await;
                    match pushed {
                        Ok(reply) if reply.status.0 == 200 => report.pushed += 1,
                        _ => report.push_failed += 1,
                    }
                    for store_addr in &stores {
                        let request = StoreQueryRequest::new(format!("load-{i}"))
                            .content(topics[0].clone(), [CONTENT_TOPIC])
                            .limit(10);
                        // A stopped store node makes this fail: that is part of the test.
                        let answered = tokio::time::timeout(
                            Duration::from_secs(2),
                            client.store_query(store_addr, &request),
                        )
                        .await;
                        match answered {
                            Ok(Ok(r)) if r.code() == 200 => report.queries += 1,
                            _ => report.query_failed += 1,
                        }
                    }
                    if i.is_multiple_of(10) {
                        let asked = client
                            .request(
                                ReqResProtocol::PeerExchange,
                                &boot,
                                peer_exchange::encode_request(5),
                            )
                            .await;
                        if asked.is_ok() {
                            report.exchanges += 1;
                        }
                    }
                }
                for client in clients {
                    client.stop().await;
                }
                report
            })
        };
        Load { stop, stale, task }
    }

    async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task")
    }
}

/// A light client that floods the boot node with light pushes (stale messages, so the stores
/// keep declining them) until the node stops answering it (banned) or `limit` requests.
/// Returns (admitted, throttled).
async fn flood(cluster_id: u16, boot: Multiaddr, topic: String, limit: u64) -> (u64, u64) {
    let client = Client::start(cluster_id).await.expect("flooder");
    let (mut admitted, mut throttled) = (0, 0);
    for i in 0..limit {
        match client
            .light_push(&boot, Version::V3, Some(&topic), &message(i, true))
            .await
        {
            Ok(reply) if reply.status.0 == 200 => admitted += 1,
            Ok(reply) if reply.status.0 == 429 => throttled += 1,
            // Banned: the node closed the connection and refuses new ones.
            _ => break,
        }
    }
    // Come back a few times, as flooders do (refused as a banned peer).
    for i in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = client
            .light_push(&boot, Version::V3, Some(&topic), &message(i, true))
            .await;
    }
    client.stop().await;
    (admitted, throttled)
}

/// Renews `n`'s attestation with the local fleet's development operator key for only `valid`
/// (an operator who signed too short a renewal): the node re-reads the file within 10 s.
fn reattest(fleet_dir: &Path, n: &NodeState, valid: &str) {
    let node_dir = n
        .data_dir
        .parent()
        .expect("a node's data dir is in its own dir");
    let roles = roost_fleet::render::attestation_roles(&n.roles).join(",");
    let fresh = node_dir.join("node.attestation.new");
    let out = Command::new(roost_bin())
        .args(["operator", "attest", "--node"])
        .arg(&n.data_dir)
        .args([
            "--fleet", STAGING, "--roles", &roles, "--valid", valid, "--out",
        ])
        .arg(&fresh)
        .arg("--profile")
        .arg(fleet_dir.join("operator").join("roost-operator.toml"))
        .output()
        .expect("run roost operator attest");
    assert!(
        out.status.success(),
        "roost operator attest: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Replaced in one step, so the node never reads half a file.
    std::fs::rename(&fresh, node_dir.join("node.attestation")).unwrap();
}

/// An impostor: a node claiming staging membership with an attestation signed by its own
/// operator key, which the fleet does not trust. It connects to `relay` and registers at the
/// rendezvous point `point` under the fleet's namespace; the fleet refuses its attestation
/// (`untrusted_key`) and the registration.
async fn impostor(state: &FleetState, relay: Multiaddr, point: Multiaddr) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let key = roost_node::identity::load_or_create(dir.path()).unwrap();
    let mut signer =
        FileSigner::from_keypair(libp2p::identity::Keypair::generate_ed25519()).unwrap();
    let now = unix(SystemTime::now());
    let attestation = Claims {
        fleet: STAGING.into(),
        node: key.public().to_peer_id(),
        roles: vec![Role::Relay],
        issued_at: now,
        expires_at: now + 30 * 86400,
        seq: 1,
    }
    .sign(&mut signer)
    .unwrap();
    let file = dir.path().join("node.attestation");
    std::fs::write(&file, attestation.to_file_text()).unwrap();
    let own = OperatorKey::new(signer.public_key().public_key().clone()).unwrap();
    let (cluster_id, shards) = (state.cluster_id, state.shards.clone());
    let node = TestNode::start_in(dir, move |c| {
        c.relay.cluster_id = cluster_id;
        c.relay.shards = shards;
        c.operator.attestation = Some(file);
        c.operator.trusted_keys = vec![own];
        c.rendezvous.points = vec![point];
        c.rendezvous.register_interval = Duration::from_secs(1);
    })
    .await;
    let _ = node.handle.dial(relay).await;
    node
}

/// Grafana's substitution for one evaluation: the fleet, every dc, and `instance`.
fn values(instance: &str) -> BTreeMap<String, String> {
    [
        ("fleet", STAGING),
        ("dc", ".*"),
        ("instance", instance),
        ("__rate_interval", RATE_INTERVAL),
        ("__interval", "1s"),
        ("__range", "5m"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A target returns data when, for at least one of `instances`, the query has a sample: now,
/// or with `during = Some((from, to))` at any second of that period (incidents are often
/// brief: a rate over 10 s of one bad request). `Err` for a query Prometheus refuses.
async fn returns_data(
    prom: &Prometheus,
    target: &Target,
    instances: &[String],
    during: Option<(f64, f64)>,
) -> Result<bool, String> {
    for instance in instances {
        let expr = dashboards::substitute(&target.expr, &values(instance));
        let result = match during {
            None => prom.query(&expr).await,
            Some((from, to)) => {
                prom.query_range(&expr, from, to, Duration::from_secs(1))
                    .await
            }
        }
        .map_err(|e| format!("`{expr}`: {e:#}"))?;
        if result.iter().any(|s| !s.samples.is_empty()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Waits until every target has returned data (now, or since `since`); returns the ones that
/// never did, with why.
async fn wait_for_data(
    prom: &Prometheus,
    targets: &[(String, Target, Vec<String>)],
    since: Option<f64>,
) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = vec![false; targets.len()];
    loop {
        let mut missing = Vec::new();
        for (i, (board, target, instances)) in targets.iter().enumerate() {
            if seen[i] {
                continue;
            }
            let during = since.map(|from| (from, now_unix()));
            match returns_data(prom, target, instances, during).await {
                Ok(true) => seen[i] = true,
                Ok(false) => missing.push(format!(
                    "{board} `{}` ({}): no data for `{}`",
                    target.panel_title, target.ref_id, target.expr
                )),
                Err(e) => missing.push(format!(
                    "{board} `{}` ({}): {e}",
                    target.panel_title, target.ref_id
                )),
            }
        }
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Alert name -> instances it fires for.
async fn firing(prom: &Prometheus) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, state, labels) in prom.alerts().await.unwrap_or_default() {
        if state == "firing" {
            let instance = labels
                .get("instance")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned();
            out.entry(name).or_default().insert(instance);
        }
    }
    out
}

/// The alerts that fired at any evaluation since `since` (Unix seconds), by instance: an
/// alert whose burst of evidence has already left its window still counts.
async fn fired_since(prom: &Prometheus, since: f64) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let series = prom
        .query_range(
            "ALERTS{alertstate=\"firing\"}",
            since,
            now_unix(),
            Duration::from_secs(1),
        )
        .await
        .unwrap_or_default();
    for s in series.iter().filter(|s| !s.samples.is_empty()) {
        out.entry(s.label("alertname").to_owned())
            .or_default()
            .insert(s.label("instance").to_owned());
    }
    out
}

/// Waits until each (alert, instance) in `expected` has fired since `since`; returns
/// everything that fired by then, and what did not.
async fn wait_for_alerts(
    prom: &Prometheus,
    since: f64,
    expected: &[(&str, &str)],
) -> (BTreeMap<String, BTreeSet<String>>, Vec<String>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let fired = fired_since(prom, since).await;
        let missing: Vec<String> = expected
            .iter()
            .filter(|(alert, instance)| !fired.get(*alert).is_some_and(|i| i.contains(*instance)))
            .map(|(alert, instance)| format!("{alert} on {instance}"))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            return (fired, missing);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Grafana's legend: `{{label}}` replaced by the series' label values.
fn legend(format: &str, series: &roost_tests::prometheus::Series) -> String {
    let mut out = format.to_owned();
    for (key, value) in &series.labels {
        out = out.replace(&format!("{{{{{key}}}}}"), value.as_str().unwrap_or(""));
    }
    out
}

/// The panels named in `titles`, as charts of the range [start, end] for `instance`.
async fn charts_of(
    prom: &Prometheus,
    board: &Dashboard,
    titles: &[&str],
    instance: &str,
    start: f64,
    end: f64,
) -> Vec<Chart> {
    let mut charts = Vec::new();
    for title in titles {
        let panel = board
            .panels()
            .into_iter()
            .find(|p| p["title"] == *title)
            .unwrap_or_else(|| panic!("no panel `{title}` in {}", board.title()));
        let unit = match panel["fieldConfig"]["defaults"]["unit"].as_str() {
            Some("bytes") => "B",
            Some("Bps") => "B/s",
            Some("s") => "s",
            Some("percentunit") => "",
            _ => "",
        };
        let mut lines = Vec::new();
        for target in board
            .targets()
            .into_iter()
            .filter(|t| t.panel_title == *title)
        {
            let expr = dashboards::substitute(&target.expr, &values(instance));
            let series = prom
                .query_range(&expr, start, end, Duration::from_secs(1))
                .await
                .unwrap_or_else(|e| panic!("{title}: {e:#}"));
            for s in &series {
                lines.push(Line {
                    label: legend(&target.legend, s),
                    points: s.samples.iter().map(|(t, v)| (t - start, *v)).collect(),
                });
            }
        }
        lines.sort_by(|a, b| a.label.cmp(&b.label));
        charts.push(Chart {
            title: (*title).to_owned(),
            unit: unit.to_owned(),
            lines,
        });
    }
    charts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_work_on_a_live_fleet() {
    init_tracing();
    let began = Instant::now();
    let boards: Vec<(String, Dashboard)> = ["roost-fleet", "roost-node"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                Dashboard::load(&dir().join("grafana").join(format!("{n}.json"))).unwrap(),
            )
        })
        .collect();

    // The staging fleet on this machine, and a Prometheus scraping it every second.
    let work = tempfile::tempdir().unwrap();
    let fleet_dir = work.path().join(STAGING);
    let _fleet_guard = Running(fleet_dir.clone());
    let staging = local_staging(work.path());
    // As an operator does it: `roost-fleet up <fleet> --local --dir DIR` (nodes attested with a
    // development operator key), which also writes DIR/prometheus-targets.json.
    let up = tokio::process::Command::new(fleet_bin())
        .arg("up")
        .arg(&staging)
        .arg("--local")
        .arg("--dir")
        .arg(&fleet_dir)
        .arg("--roost-bin")
        .arg(roost_bin())
        .output()
        .await
        .expect("run roost-fleet up");
    assert!(
        up.status.success(),
        "roost-fleet up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let state = FleetState::load(&fleet_dir).expect("roost-fleet up wrote fleet.json");
    eprintln!("[{:>6.1?}] fleet up", began.elapsed());
    let (state, _dns_server) = boot_node_reads_the_tree(&staging, &fleet_dir, state).await;
    eprintln!(
        "[{:>6.1?}] boot-01 restarted on the fleet's DNS tree",
        began.elapsed()
    );
    let rules_path = work.path().join("alerts-live.yml");
    let rules = std::fs::read_to_string(dir().join("prometheus/alerts.yml")).unwrap();
    std::fs::write(&rules_path, live_rules(&rules)).unwrap();
    let prom = Prometheus::start(&fleet_dir.join("prometheus-targets.json"), &[rules_path])
        .await
        .expect("prometheus starts");
    eprintln!("[{:>6.1?}] prometheus up", began.elapsed());
    let start = now_unix();
    let instances: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
    wait_until(PATIENCE, || async {
        let targets = prom.targets().await.unwrap_or_default();
        targets.len() == instances.len() && targets.iter().all(|(_, health)| health == "up")
    })
    .await
    .ok();
    let targets = prom.targets().await.unwrap();
    assert!(
        targets.len() == instances.len() && targets.iter().all(|(_, h)| h == "up"),
        "every node scraped: {targets:?}"
    );
    // Both rule groups loaded and evaluate without errors.
    let rule_groups = prom.rules().await.unwrap();
    let loaded: usize = rule_groups["groups"]
        .as_array()
        .map(|g| {
            g.iter()
                .map(|g| g["rules"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(loaded, ALERTS.len(), "{rule_groups}");

    let load = Load::start(&state).await;
    eprintln!("[{:>6.1?}] load started", began.elapsed());

    // Variables resolve to the fleet's labels.
    for (name, board) in &boards {
        for variable in board.variables() {
            let query = dashboards::substitute(&variable.query, &values(".*"));
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| {
                    panic!(
                        "{name}: variable {} is not label_values(...)",
                        variable.name
                    )
                });
            let (matcher, label) = inner.rsplit_once(',').unwrap();
            let got = prom
                .label_values(label.trim(), matcher.trim())
                .await
                .unwrap();
            assert!(
                !got.is_empty(),
                "{name}: variable {} resolves to nothing",
                variable.name
            );
            match variable.name.as_str() {
                "fleet" => assert_eq!(got, vec![STAGING.to_owned()]),
                "dc" => assert_eq!(got, vec!["do-ams3".to_owned()]),
                "instance" => assert_eq!(
                    got.iter().collect::<BTreeSet<_>>(),
                    instances.iter().collect::<BTreeSet<_>>()
                ),
                _ => {}
            }
        }
    }

    // Healthy under load: every panel that is not an incident panel returns data. The fleet
    // dashboard is evaluated for all nodes at once; the node dashboard node by node, and a
    // panel passes on the nodes it is about (store panels on store nodes).
    let all = vec![".*".to_owned()];
    let mut regular = Vec::new();
    let mut incident = Vec::new();
    for (name, board) in &boards {
        let scope = if name == "roost-fleet" {
            all.clone()
        } else {
            instances.clone()
        };
        for target in board.targets() {
            let entry = (name.clone(), target.clone(), scope.clone());
            if target.incident {
                incident.push(entry);
            } else {
                regular.push(entry);
            }
        }
    }
    let missing = wait_for_data(&prom, &regular, None).await;
    assert!(
        missing.is_empty(),
        "panels empty on a healthy fleet under load (mark them incident panels only if they \
         show errors):\n{}",
        missing.join("\n")
    );
    eprintln!("[{:>6.1?}] every regular panel has data", began.elapsed());
    // Incident panels parse and have been empty all along.
    let healthy_until = now_unix();
    for (name, target, scope) in &incident {
        let data = returns_data(&prom, target, scope, Some((start, healthy_until)))
            .await
            .unwrap_or_else(|e| panic!("{name} `{}`: {e}", target.panel_title));
        assert!(
            !data,
            "{name} `{}` ({}) is an incident panel but shows data on a healthy fleet",
            target.panel_title, target.ref_id
        );
    }
    // Nothing fires once the fleet has settled.
    let quiet = wait_until(PATIENCE, || async { firing(&prom).await.is_empty() }).await;
    assert!(
        quiet.is_ok(),
        "alerts fire on a healthy fleet: {:?}",
        firing(&prom).await
    );
    let healthy_for = began.elapsed();
    eprintln!(
        "[{:>6.1?}] healthy: regular panels have data, incident panels empty, no alert firing",
        began.elapsed()
    );

    // === Faults ===
    let fault_at = now_unix();
    let victim = node(&state, "store-02").name.clone();
    local::stop_node(&fleet_dir, &victim, true)
        .await
        .expect("kill -9 store-02");
    // Publishers' clocks go wrong: every message an hour old (relay accepts them, the stores
    // decline them as too old).
    load.stale.store(true, Ordering::Relaxed);
    // boot-01's attestation is renewed for two days only.
    reattest(&fleet_dir, node(&state, "boot-"), "2d");
    // A bare peer floods relay-01 with invalid messages (bad content topic, garbage) until
    // relay-01 bans it, then keeps dialling back.
    let relay = node(&state, "relay-01");
    let shard = format!("/waku/2/rs/{}/{}", state.cluster_id, state.shards[0]);
    let spammer = BarePeer::start(BareOptions {
        cluster_id: state.cluster_id,
        topics: vec![shard.clone()],
        forward_received: false,
        ..BareOptions::default()
    })
    .await
    .unwrap();
    spammer.dial(addr(relay)).await.unwrap();
    wait_until(PATIENCE, || async { spammer.mesh_peers(&shard).await >= 1 })
        .await
        .expect("the spammer joins relay-01's mesh");
    let faults_stop = Arc::new(AtomicBool::new(false));
    let spam_task = {
        let stop = faults_stop.clone();
        let shard = shard.clone();
        let relay_addr = addr(relay);
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if spammer.mesh_peers(&shard).await == 0 {
                    // Banned and disconnected: come back (refused as a banned peer).
                    let _ = spammer.dial(relay_addr.clone()).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                let bad =
                    WakuMessage::new("not a content topic", format!("spam {sent}").into_bytes());
                let _ = spammer.publish(&shard, bad.encode_to_vec()).await;
                let _ = spammer
                    .publish(&shard, vec![0xff, 0xff, 0x01, sent as u8])
                    .await;
                sent += 2;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent
        })
    };
    // A spam wave from many identities: twelve light clients flood the boot node's light push
    // until each is banned for going over its quota, then try again a few times.
    let boot = addr(node(&state, "boot-"));
    let flooders: Vec<_> = (0..12)
        .map(|_| tokio::spawn(flood(state.cluster_id, boot.clone(), shard.clone(), 400)))
        .collect();
    let mut flood_report = (0, 0);
    for flooder in flooders {
        let (admitted, throttled) = flooder.await.unwrap();
        flood_report.0 += admitted;
        flood_report.1 += throttled;
    }
    eprintln!(
        "[{:>6.1?}] faults: store-02 killed, clocks stale, spammer on, flooders banned \
         (admitted {}, throttled {})",
        began.elapsed(),
        flood_report.0,
        flood_report.1
    );
    // Broken clients, once a second until the faults end: an invalid light push, a store
    // query with a cursor the store never gave, a filter subscriber that vanishes without
    // unsubscribing, and a peer of another cluster dialling relay-01 (disconnected at once).
    let nuisance_task = {
        let stop = faults_stop.clone();
        let cluster = state.cluster_id;
        let (boot, store_01, relay_addr) =
            (boot.clone(), addr(node(&state, "store-01")), addr(relay));
        let shard = shard.clone();
        let state = state.clone();
        let point = addr(node(&state, "rendezvous-"));
        tokio::spawn(async move {
            let prober = Client::start(cluster).await.unwrap();
            let stranger = Client::start(cluster + 1).await.unwrap();
            let mut impostor_node: Option<TestNode> = None;
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rounds += 1;
                if rounds % 5 == 1 {
                    // A new impostor (a new identity) every few seconds: each is checked anew.
                    if let Some(old) = impostor_node.take() {
                        old.stop().await;
                    }
                    impostor_node = Some(impostor(&state, relay_addr.clone(), point.clone()).await);
                }
                // Within the per-peer quotas (30 a minute): one round in three.
                if rounds % 3 == 1 {
                    // Invalid: meta over 64 bytes (a free-form content topic is valid, as
                    // in nwaku).
                    let mut bad = WakuMessage::new(CONTENT_TOPIC, b"x".to_vec());
                    bad.meta = Some(vec![0u8; 65]);
                    let reply = prober
                        .light_push(&boot, Version::V3, Some(&shard), &bad)
                        .await
                        .unwrap();
                    assert_eq!(reply.status.0, 420, "{reply:?}");
                    let bad_cursor = StoreQueryRequest::new("bad-cursor")
                        .content(shard.clone(), [CONTENT_TOPIC])
                        .cursor(Some(MessageHash([7u8; 32])));
                    let answer = prober.store_query(&store_01, &bad_cursor).await.unwrap();
                    assert_eq!(answer.code(), 400, "{}", answer.desc());
                    let leaver = Client::start(cluster).await.unwrap();
                    let subscribed = leaver
                        .filter(
                            &boot,
                            RequestType::Subscribe,
                            Some(&shard),
                            &[CONTENT_TOPIC.to_owned()],
                        )
                        .await
                        .unwrap();
                    assert_eq!(subscribed.status.0, 200, "{subscribed:?}");
                    leaver.stop().await;
                }
                let _ = stranger.handle().dial(relay_addr.clone()).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            prober.stop().await;
            stranger.stop().await;
            if let Some(old) = impostor_node {
                old.stop().await;
            }
            rounds
        })
    };

    let missing = wait_for_data(&prom, &incident, Some(fault_at)).await;
    assert!(
        missing.is_empty(),
        "incident panels still empty during the faults:\n{}\n\nthe nodes' counters:\n{}",
        missing.join("\n"),
        counters(&state, &victim).await
    );
    // Every metric a panel uses exists on a live node (some families appear only once
    // something was counted, e.g. filter push failures: hence after the faults).
    let mut exposed = BTreeSet::new();
    for n in state.nodes.iter().filter(|n| n.name != victim) {
        let text = reqwest::get(&n.metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        exposed.extend(dashboards::exposed_names(&text));
    }
    let mut unknown = BTreeSet::new();
    for (name, board) in &boards {
        for target in board.targets() {
            for metric in dashboards::metric_names(&target.expr) {
                // `up` is Prometheus's own, per target.
                if metric != "up" && !exposed.contains(&metric) {
                    unknown.insert(format!("{name} `{}`: {metric}", target.panel_title));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics no node exports:\n{}",
        unknown.into_iter().collect::<Vec<_>>().join("\n")
    );
    let (fired, not_fired) = wait_for_alerts(
        &prom,
        fault_at,
        &[
            ("NodeDown", victim.as_str()),
            ("MeshDegraded", relay.name.as_str()),
            ("StoreNotIngesting", node(&state, "store-01").name.as_str()),
            ("SpamSurge", node(&state, "boot-").name.as_str()),
            ("BansSpiking", node(&state, "boot-").name.as_str()),
            ("AttestationInvalid", relay.name.as_str()),
            (
                "AttestationExpiresSoon",
                node(&state, "boot-").name.as_str(),
            ),
        ],
    )
    .await;
    assert!(
        not_fired.is_empty(),
        "alerts that did not fire: {not_fired:?}; firing: {fired:?}"
    );
    let fault_alerts = fired;
    eprintln!(
        "[{:>6.1?}] faults: incident panels have data, alerts fired",
        began.elapsed()
    );
    faults_stop.store(true, Ordering::Relaxed);
    let spam_sent = spam_task.await.unwrap();
    let nuisance_rounds = nuisance_task.await.unwrap();
    let report = load.stop().await;

    // === The fleet collapses around relay-01 ===
    let collapse_at = now_unix();
    for n in &state.nodes {
        if n.name != relay.name && n.name != victim {
            local::stop_node(&fleet_dir, &n.name, false).await.unwrap();
        }
    }
    let (collapse_alerts, not_fired) =
        wait_for_alerts(&prom, collapse_at, &[("NoRelayPeers", relay.name.as_str())]).await;
    assert!(
        not_fired.is_empty(),
        "alerts that did not fire: {not_fired:?}; firing: {collapse_alerts:?}"
    );
    let end = now_unix();
    eprintln!("[{:>6.1?}] collapse: NoRelayPeers fired", began.elapsed());

    // Pictures of the main panels, from this run's data.
    let fleet_board = &boards[0].1;
    let node_board = &boards[1].1;
    let markers = [
        Marker {
            at: fault_at - start,
            label: "faults".into(),
        },
        Marker {
            at: collapse_at - start,
            label: "collapse".into(),
        },
    ];
    let fleet_charts = charts_of(
        &prom,
        fleet_board,
        &[
            "Nodes up by role",
            "Connected peers",
            "Mesh peers per shard",
            "Messages relayed/s",
            "Messages stored/s",
            "Store queries/s",
            "Store query latency",
            "Light push requests/s",
            "Errors by reason",
        ],
        ".*",
        start,
        end,
    )
    .await;
    let store_name = node(&state, "store-01").name.clone();
    let node_charts = charts_of(
        &prom,
        node_board,
        &[
            "CPU",
            "Memory",
            "File descriptors",
            "Mesh and topic peers per shard",
            "Stored and declined",
            "Query latency",
            "Commit latency",
            "Memtables and block cache",
            "Queue depths",
        ],
        &store_name,
        start,
        end,
    )
    .await;
    for chart in fleet_charts.iter().chain(&node_charts) {
        assert!(
            !chart.lines.is_empty(),
            "chart `{}` has no data",
            chart.title
        );
    }
    let out = picture_dir();
    let fleet_png = out.join("roost-fleet.png");
    let node_png = out.join("roost-node.png");
    charts::render_grid(
        &fleet_png,
        "Roost fleet — local staging fleet under light load, then faults",
        &fleet_charts,
        &markers,
        3,
    )
    .unwrap();
    charts::render_grid(
        &node_png,
        &format!("Roost node — {store_name}"),
        &node_charts,
        &markers,
        3,
    )
    .unwrap();
    if std::env::var("DASHBOARDS_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboards");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(&fleet_png, docs.join("roost-fleet.png")).unwrap();
        std::fs::copy(&node_png, docs.join("roost-node.png")).unwrap();
    }

    eprintln!(
        "dashboards: healthy after {:.0?}; whole test {:.0?}; load: {report:?}; invalid relay messages sent: {spam_sent}; flood (admitted, throttled): {flood_report:?}; broken-client rounds: {nuisance_rounds}",
        healthy_for,
        began.elapsed()
    );
    eprintln!("alerts fired by the faults: {fault_alerts:?}");
    eprintln!("alerts fired by the collapse: {collapse_alerts:?}");
    eprintln!("pictures: {} {}", fleet_png.display(), node_png.display());
    local::down(&fleet_dir).await.unwrap();
}

/// The error and abuse counters of every live node, for failure messages.
async fn counters(state: &FleetState, dead: &str) -> String {
    let mut out = String::new();
    for n in state.nodes.iter().filter(|n| n.name != dead) {
        let Ok(response) = reqwest::get(&n.metrics_url).await else {
            continue;
        };
        let text = response.text().await.unwrap_or_default();
        for line in text.lines().filter(|l| {
            !l.starts_with('#')
                && !l.ends_with(" 0")
                && [
                    "roost_relay_messages_validated_total",
                    "roost_throttle_bans_total",
                    "roost_throttle_connections_refused_total",
                    "roost_throttle_throttled_total",
                    "roost_peer_disconnects_total",
                    "roost_filter_push_failures_total",
                    "roost_store_queries_total",
                ]
                .iter()
                .any(|m| l.starts_with(m))
        }) {
            out.push_str(&format!("{}: {line}\n", n.name));
        }
    }
    out
}

/// `target/dashboards/` beside the test executable's profile dir.
fn picture_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .and_then(|profile| profile.parent())
        .map(|target| target.join("dashboards"))
        .unwrap_or_else(|| std::env::temp_dir().join("roost-dashboards"))
}

#[test]
fn live_rules_shorten_time_constants_only() {
    let rules = "      - alert: X\n        expr: rate(a[10m]) > 1 and b[1h] > 0 and c{x=\"y\"} > 0.5\n        for: 15m\n";
    assert_eq!(
        live_rules(rules),
        "      - alert: X\n        expr: rate(a[20s]) > 1 and b[20s] > 0 and c{x=\"y\"} > 0.5\n        for: 3s\n"
    );
}
