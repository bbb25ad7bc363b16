//! The Ansible playbooks against real hosts: the staging fleet's hosts as network namespaces,
//! each with its own address and sshd (`ansible/tests/netns-hosts`), deployed over SSH with
//! `deploy.yml`, checked green by `roost-fleet check`, deployed again with nothing changed,
//! scraped by a real Prometheus with the generated scrape config, upgraded host by host with
//! `upgrade.yml` to another build while a client publishes and queries without losing a
//! message, and their nftables rules shown to cut off a connection flood and close the admin
//! port. Needs root; everything it makes is removed afterwards, also when it fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use libp2p::{identity, Multiaddr};
use prost::Message as _;
use roost_node::{
    client::Client,
    lightpush::Version,
    message::{now_nanos, ShardTopic, WakuMessage},
    store::rpc::{StoreQueryRequest, StoreQueryResponse},
    swarm::ReqResProtocol,
};
use roost_tests::{
    ansible::{
        ansible_playbook, recap_text, repo_root, require_root_and_tools, CreatedAccount,
        MachineLock, PlaybookRun, TestHosts,
    },
    fleet_bin, init_tracing, roost_bin, wait_until,
};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// This machine's address on the hosts' bridge: the Ansible controller, the monitoring network
/// and the client.
const CONTROLLER: &str = "10.20.0.1";
/// Another address of this machine on the bridge: a stranger, for the flood and the closed port.
const STRANGER: &str = "10.20.0.250";
const CLUSTER: u16 = 16;
const TOPIC: &str = "/roost-ansible-test/1/upgrade/proto";
/// Generous: the machine running the suite is busy, and upgrade.yml visits hosts one by one.
const PLAYBOOK_TIMEOUT: Duration = Duration::from_secs(1500);
/// The client is a well-behaved one: the fleet's per-peer quotas for light push and store
/// (`throttle.lightpush`/`throttle.store`, 300 and 200 a minute in the rendered staging config)
/// are what it stays far under, one request to each node every 2.5 s (24 a minute). A client that goes
/// over is refused and, if it keeps going, banned: the throttle's job, not this test's subject.
const CLIENT_PACE: Duration = Duration::from_millis(2500);

fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    hex::encode(Sha256::digest(&bytes))
}

/// A "release" of the node: the repo's roost binary without debug info, stamped with a build
/// id (an extra ELF section, as release pipelines stamp builds), and its `.sha256` file.
fn release(dir: &Path, build_id: &str) -> (PathBuf, String) {
    std::fs::create_dir_all(dir).unwrap();
    let id_file = dir.join("build-id");
    std::fs::write(&id_file, format!("roost build {build_id}\n")).unwrap();
    let bin = dir.join("roost");
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(format!(
            "--add-section=.roost_build_id={}",
            id_file.display()
        ))
        .arg("--set-section-flags=.roost_build_id=noload,readonly")
        .arg(roost_bin())
        .arg(&bin)
        .status()
        .expect("run objcopy");
    assert!(status.success(), "objcopy failed");
    let sha = sha256_file(&bin);
    std::fs::write(dir.join("roost.sha256"), format!("{sha}  roost\n")).unwrap();
    (bin, sha)
}

/// The staging fleet file with a freshly made node key per host (the keys stay in `secrets`,
/// as an operator's vault would keep them; the fleet file records only the peer ids).
fn staging_with_identities(dir: &Path, secrets: &Path) -> (PathBuf, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(repo_root().join("fleet").join("staging.toml")).unwrap();
    let mut fleet: toml::Table = toml::from_str(&text).unwrap();
    std::fs::create_dir_all(secrets).unwrap();
    std::fs::set_permissions(secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut peer_ids = BTreeMap::new();
    let list = fleet
        .get_mut("hosts")
        .and_then(|h| h.as_array_mut())
        .expect("staging.toml has [[hosts]]");
    for host in list {
        let host = host.as_table_mut().unwrap();
        let name = host["name"].as_str().unwrap().to_owned();
        let keypair = identity::secp256k1::Keypair::generate();
        let key_file = secrets.join(format!("{name}.key"));
        std::fs::write(&key_file, hex::encode(keypair.secret().to_bytes())).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let peer_id = identity::Keypair::from(keypair).public().to_peer_id();
        host.insert("peer_id".into(), toml::Value::String(peer_id.to_string()));
        peer_ids.insert(name, peer_id.to_string());
    }
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("staging.toml");
    std::fs::write(&path, toml::to_string(&fleet).unwrap()).unwrap();
    (path, peer_ids)
}

fn run_ok(cmd: &mut Command, what: &str) -> String {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn playbook(work: &Path, inventory: &Path, name: &str, vars: &[&Path]) -> PlaybookRun {
    let started = Instant::now();
    let run = tokio::time::timeout(
        PLAYBOOK_TIMEOUT,
        ansible_playbook(work, inventory, name, vars),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} did not finish within {PLAYBOOK_TIMEOUT:?}"));
    println!(
        "== ansible-playbook {name}: {:.0}s\n{}",
        started.elapsed().as_secs_f64(),
        recap_text(&run.output)
    );
    assert!(run.success, "{name} failed:\n{}", run.output);
    run
}

fn fleet_check(fleet_file: &Path, inventory: &Path) -> String {
    let table = run_ok(
        Command::new(fleet_bin())
            .arg("check")
            .arg(fleet_file)
            .arg("--inventory")
            .arg(inventory),
        "roost-fleet check",
    );
    println!("== roost-fleet check\n{table}");
    table
}

/// What the publishing client saw.
#[derive(Debug, Default)]
struct Published {
    /// Sequence numbers a light push acknowledged (200 with relay peers).
    acked: BTreeSet<u64>,
    refused_or_failed: u64,
}

/// Publishes `seq N` messages through `boot`'s light push, one attempt per [`CLIENT_PACE`],
/// until told to stop; a message that fails is sent again (freshly stamped) until acknowledged.
async fn publish_continuously(
    client: Arc<Client>,
    boot: Multiaddr,
    pubsub_topic: String,
    mut stop: watch::Receiver<bool>,
    log: Arc<Mutex<Published>>,
) {
    let mut seq = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        let message = WakuMessage::new(TOPIC, format!("seq {seq}").into_bytes());
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            client.light_push(&boot, Version::V3, Some(&pubsub_topic), &message),
        )
        .await;
        match reply {
            Ok(Ok(r)) if r.is_success() => {
                log.lock().unwrap().acked.insert(seq);
                seq += 1;
            }
            _ => log.lock().unwrap().refused_or_failed += 1,
        }
        let _ = tokio::time::timeout(CLIENT_PACE, stop.changed()).await;
    }
}

async fn store_query(
    client: &Client,
    store: &Multiaddr,
    request: StoreQueryRequest,
) -> Option<StoreQueryResponse> {
    let bytes = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(ReqResProtocol::Store, store, request.encode_to_vec()),
    )
    .await
    .ok()?
    .ok()?;
    let response = StoreQueryResponse::decode_bytes(&bytes).ok()?;
    (response.status_code == Some(200)).then_some(response)
}

/// Every `seq N` a store node holds on the test topic.
async fn stored_seqs(client: &Client, store: &Multiaddr, pubsub_topic: &str) -> BTreeSet<u64> {
    let mut seqs = BTreeSet::new();
    let mut cursor = None;
    loop {
        let request = StoreQueryRequest {
            request_id: Some(roost_node::client::request_id()),
            include_data: true,
            pubsub_topic: Some(pubsub_topic.to_owned()),
            content_topics: vec![TOPIC.into()],
            pagination_cursor: cursor.take(),
            pagination_forward: true,
            pagination_limit: Some(100),
            ..Default::default()
        };
        let response = store_query(client, store, request)
            .await
            .unwrap_or_else(|| panic!("store {store} does not answer"));
        for kv in &response.messages {
            if let Some(m) = kv
                .message
                .as_deref()
                .and_then(|b| WakuMessage::decode(b).ok())
            {
                if let Some(n) = String::from_utf8_lossy(&m.payload)
                    .strip_prefix("seq ")
                    .and_then(|n| n.parse().ok())
                {
                    seqs.insert(n);
                }
            }
        }
        match response.pagination_cursor {
            Some(c) if !response.messages.is_empty() => cursor = Some(c),
            _ => return seqs,
        }
    }
}

/// Queries every store node once per [`CLIENT_PACE`]; returns, per round, which answered.
async fn query_continuously(
    client: Arc<Client>,
    stores: Vec<Multiaddr>,
    pubsub_topic: String,
    mut stop: watch::Receiver<bool>,
) -> Vec<Vec<bool>> {
    let mut rounds = Vec::new();
    while !*stop.borrow() {
        let mut answered = Vec::new();
        for store in &stores {
            let request = StoreQueryRequest {
                request_id: Some(roost_node::client::request_id()),
                include_data: false,
                pubsub_topic: Some(pubsub_topic.clone()),
                content_topics: vec![TOPIC.into()],
                time_start: Some(now_nanos() - 60_000_000_000),
                pagination_limit: Some(20),
                ..Default::default()
            };
            answered.push(store_query(&client, store, request).await.is_some());
        }
        rounds.push(answered);
        let _ = tokio::time::timeout(CLIENT_PACE, stop.changed()).await;
    }
    rounds
}

/// Sum of the packet counters of the rules commented `comment` in `host`'s table.
fn nft_counter(hosts: &TestHosts, host: &str, comment: &str) -> u64 {
    let chain = hosts.exec(
        hosts.host(host),
        &["nft", "list", "chain", "inet", "roost", "input"],
    );
    chain
        .lines()
        .filter(|l| l.contains(&format!("comment \"{comment}\"")))
        .filter_map(|l| {
            let after = l.split("counter packets ").nth(1)?;
            after.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

async fn connect_from(
    source: &str,
    target: &str,
    timeout: Duration,
) -> Option<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket
        .bind(format!("{source}:0").parse().unwrap())
        .expect("bind to a test address on the bridge");
    tokio::time::timeout(timeout, socket.connect(target.parse().unwrap()))
        .await
        .ok()?
        .ok()
}

/// Runs Prometheus with the scrape config `roost-fleet render` wrote and returns once every
/// fleet host is a healthy target with the dashboards' labels.
struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_prometheus(work: &Path, rendered: &Path) -> (Prometheus, String) {
    let dir = work.join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    for file in ["staging.yml", "staging.json"] {
        std::fs::copy(rendered.join("prometheus").join(file), dir.join(file)).unwrap();
    }
    run_ok(
        Command::new("promtool")
            .args(["check", "config"])
            .arg(dir.join("staging.yml")),
        "promtool check config",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("staging.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    (Prometheus(child), format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ansible_deploys_upgrades_and_hardens_the_staging_fleet_on_namespace_hosts() {
    require_root_and_tools(&[
        "ansible-playbook",
        "ansible-inventory",
        "sshd",
        "ssh",
        "ssh-keygen",
        "nft",
        "ip",
        "objcopy",
        "systemd-analyze",
        "start-stop-daemon",
        "prometheus",
        "promtool",
    ]);
    init_tracing();
    let started = Instant::now();
    let _lock = MachineLock::acquire();
    let tmp = tempfile::tempdir().unwrap();
    // The node runs as the `roost` user: it must be able to reach its files under the prefix.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = tmp.path();
    let _account = CreatedAccount::watch("roost");

    // Two builds of the node, identities, and the rendered inventory.
    let (v1, v1_sha) = release(&work.join("release-1"), "ansible-test-1");
    let (v2, v2_sha) = release(&work.join("release-2"), "ansible-test-2");
    assert_ne!(v1_sha, v2_sha);
    let secrets = work.join("secrets");
    let (fleet_file, peer_ids) = staging_with_identities(&work.join("fleet"), &secrets);
    let rendered = work.join("inventory");
    run_ok(
        Command::new(fleet_bin())
            .arg("render")
            .arg(&fleet_file)
            .arg("--out")
            .arg(&rendered),
        "roost-fleet render",
    );
    let inventory = rendered.join("hosts.yml");

    let hosts = TestHosts::up(&work.join("hosts"), &inventory, CONTROLLER, &[STRANGER]);
    assert_eq!(hosts.hosts.len(), 5, "{:?}", hosts.hosts);

    // How Ansible reaches the hosts, and what an operator's group vars and vault would give.
    let vars = work.join("test-vars.yml");
    std::fs::write(
        &vars,
        format!(
            r#"ansible_user: root
ansible_ssh_private_key_file: "{key}"
ansible_ssh_common_args: "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
ansible_python_interpreter: /usr/bin/python3
ansible_become: false
roost_node_test_prefix: "{root}/{{{{ inventory_hostname }}}}"
roost_node_key: "{{{{ lookup('ansible.builtin.file', '{secrets}/' ~ inventory_hostname ~ '.key') }}}}"
roost_node_binary_src: "{v1}"
roost_node_monitoring_networks: ["{CONTROLLER}/32"]
"#,
            key = hosts.ssh_key().display(),
            root = work.join("root").display(),
            secrets = secrets.display(),
            v1 = v1.display(),
        ),
    )
    .unwrap();
    let upgrade_vars = work.join("upgrade-vars.yml");
    std::fs::write(
        &upgrade_vars,
        format!("roost_node_binary_src: \"{}\"\n", v2.display()),
    )
    .unwrap();

    // 1. Deploy; the fleet checks green.
    let deploy = playbook(work, &inventory, "deploy.yml", &[&vars]).await;
    assert_eq!(deploy.recap.len(), 5, "{}", recap_text(&deploy.output));
    for (host, r) in &deploy.recap {
        assert!(
            r.failed == 0 && r.unreachable == 0 && r.changed > 0,
            "{host}: {r:?}"
        );
    }
    let (_prometheus, prometheus_url) = start_prometheus(work, &rendered);
    let table = fleet_check(&fleet_file, &inventory);
    assert!(table.contains("check: all green"), "{table}");

    // 2. A second deploy changes nothing.
    let again = playbook(work, &inventory, "deploy.yml", &[&vars]).await;
    assert_eq!(again.recap.len(), 5);
    for (host, r) in &again.recap {
        assert_eq!(
            (r.changed, r.failed, r.unreachable),
            (0, 0, 0),
            "{host}: the second deploy must change nothing:\n{}",
            again.output
        );
    }

    // 3. Prometheus scrapes every host through its firewall, with the dashboards' labels.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let targets = loop {
        let targets = match http
            .get(format!("{prometheus_url}/api/v1/targets?state=active"))
            .send()
            .await
        {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .map(|v| v["data"]["activeTargets"].clone())
                .unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let all_up = targets
            .as_array()
            .is_some_and(|a| a.len() == 5 && a.iter().all(|t| t["health"] == "up"));
        if all_up {
            break targets;
        }
        assert!(
            Instant::now() < deadline,
            "not every host is up in Prometheus: {targets:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for t in targets.as_array().unwrap() {
        let labels = &t["labels"];
        let instance = labels["instance"].as_str().unwrap();
        assert!(peer_ids.contains_key(instance), "{labels}");
        assert_eq!(labels["fleet"], "staging", "{labels}");
        assert_eq!(labels["dc"], "do-ams3", "{labels}");
        assert!(
            instance.starts_with(labels["role"].as_str().unwrap()),
            "{labels}"
        );
    }
    println!("== prometheus: 5 targets up with fleet/dc/role/instance labels");

    // 4. Rolling upgrade to the other build while a client publishes and queries.
    let pubsub_topic = ShardTopic::new(CLUSTER, 32).to_string();
    let address = |name: &str| -> Multiaddr {
        format!(
            "/ip4/{}/tcp/30303/p2p/{}",
            hosts.host(name).address,
            peer_ids[name]
        )
        .parse()
        .unwrap()
    };
    let boot = address("boot-01.do-ams3.staging");
    let stores = vec![
        address("store-01.do-ams3.staging"),
        address("store-02.do-ams3.staging"),
    ];
    let client = Arc::new(Client::start(CLUSTER).await.expect("light client starts"));
    let published = Arc::new(Mutex::new(Published::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let publisher = tokio::spawn(publish_continuously(
        client.clone(),
        boot.clone(),
        pubsub_topic.clone(),
        stop_rx.clone(),
        published.clone(),
    ));
    let querier = tokio::spawn(query_continuously(
        client.clone(),
        stores.clone(),
        pubsub_topic.clone(),
        stop_rx.clone(),
    ));
    wait_until(Duration::from_secs(60), || async {
        published.lock().unwrap().acked.len() >= 5
    })
    .await
    .expect("the client publishes through the boot node before the upgrade");
    let upgrade = playbook(work, &inventory, "upgrade.yml", &[&vars, &upgrade_vars]).await;
    for (host, r) in &upgrade.recap {
        assert!(r.failed == 0 && r.unreachable == 0, "{host}: {r:?}");
    }
    // Publishing goes on after the last host (the boot node) is back.
    let after_upgrade = published.lock().unwrap().acked.len() + 5;
    wait_until(Duration::from_secs(60), || async {
        published.lock().unwrap().acked.len() >= after_upgrade
    })
    .await
    .expect("the client publishes through the upgraded boot node");
    stop_tx.send(true).unwrap();
    publisher.await.unwrap();
    let rounds = querier.await.unwrap();

    // No acknowledged message is lost: each is in the fleet's store.
    let mut union = BTreeSet::new();
    let mut per_store = Vec::new();
    for store in &stores {
        let seqs = stored_seqs(&client, store, &pubsub_topic).await;
        per_store.push(seqs.len());
        union.extend(seqs);
    }
    let published = std::mem::take(&mut *published.lock().unwrap());
    let lost: Vec<&u64> = published.acked.difference(&union).collect();
    let no_store = rounds.iter().filter(|r| !r.iter().any(|a| *a)).count();
    println!(
        "== upgrade traffic: {} messages acknowledged ({} pushes refused or failed and retried), stores hold {per_store:?} (union {}), lost {}; {} query rounds, {} with no store answering",
        published.acked.len(),
        published.refused_or_failed,
        union.len(),
        lost.len(),
        rounds.len(),
        no_store
    );
    assert!(lost.is_empty(), "acknowledged messages lost: {lost:?}");
    // And not just the union: store sync gives each store node what it missed while it was
    // restarted (upgrade.yml waited for each to report in sync before moving on).
    let holds = Arc::new(Mutex::new(Vec::new()));
    let everywhere = wait_until(Duration::from_secs(120), || async {
        // Gently: this client's store quota was spent by the querier during the upgrade.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut now = Vec::new();
        for store in &stores {
            let seqs = stored_seqs(&client, store, &pubsub_topic).await;
            now.push(published.acked.iter().filter(|s| seqs.contains(s)).count());
        }
        let done = now.iter().all(|n| *n == published.acked.len());
        *holds.lock().unwrap() = now;
        done
    })
    .await;
    let holds = holds.lock().unwrap().clone();
    println!(
        "== after the upgrade, with store sync: each store node holds {holds:?} of the {} acknowledged messages",
        published.acked.len()
    );
    assert!(
        everywhere.is_ok(),
        "a store node misses acknowledged messages: holds {holds:?} of {}",
        published.acked.len()
    );
    assert!(rounds.len() >= 10, "the client queried during the upgrade");
    assert_eq!(
        no_store, 0,
        "a query round found no store node answering: {rounds:?}"
    );
    match Arc::try_unwrap(client) {
        Ok(client) => client.stop().await,
        Err(_) => panic!("client still shared"),
    }

    // Every host runs the new build, and the fleet is green.
    for host in &hosts.hosts {
        let running: Vec<String> = hosts
            .pids(host)
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "roost")
            })
            .map(|pid| sha256_file(Path::new(&format!("/proc/{pid}/exe"))))
            .collect();
        assert_eq!(running, vec![v2_sha.clone()], "{}", host.name);
    }
    let table = fleet_check(&fleet_file, &inventory);
    assert!(table.contains("check: all green"), "{table}");
    // The drain cut the client off the boot node before it stopped.
    let drained = nft_counter(&hosts, "boot-01.do-ams3.staging", "roost: drained");
    println!("== boot-01 drain rule: {drained} client packets refused");
    assert!(drained > 0, "upgrade.yml's drain never refused the client");

    // 5. Firewall: rules in every namespace; admin port closed to strangers; a flood cut off.
    for host in &hosts.hosts {
        let table = hosts.exec(host, &["nft", "list", "table", "inet", "roost"]);
        for needle in [
            "roost: new-connection flood",
            "limit rate over 20/second burst 40 packets",
            "roost: admin port closed",
            "10.20.0.1",
        ] {
            assert!(
                table.contains(needle),
                "{}: no `{needle}` in\n{table}",
                host.name
            );
        }
    }
    let relay = hosts.host("relay-01.do-ams3.staging");
    let admin = format!("{}:8008", relay.address);
    assert!(
        connect_from(STRANGER, &admin, Duration::from_secs(3))
            .await
            .is_none(),
        "the admin port answers a stranger"
    );
    assert!(
        connect_from(CONTROLLER, &admin, Duration::from_secs(10))
            .await
            .is_some(),
        "the admin port refuses the monitoring network"
    );
    let p2p = format!("{}:30303", relay.address);
    let flood_before = nft_counter(&hosts, &relay.name, "roost: new-connection flood");
    let attempts = 200;
    let flood = futures::future::join_all(
        (0..attempts).map(|_| connect_from(STRANGER, &p2p, Duration::from_secs(3))),
    )
    .await;
    let through = flood.iter().filter(|c| c.is_some()).count();
    let dropped = nft_counter(&hosts, &relay.name, "roost: new-connection flood") - flood_before;
    // Another source is not affected by the stranger's flood.
    let other = connect_from(CONTROLLER, &p2p, Duration::from_secs(10)).await;
    println!(
        "== flood: {attempts} connections from {STRANGER} to {p2p}: {through} accepted, {dropped} SYNs dropped by the rate limit; {CONTROLLER} meanwhile {}",
        if other.is_some() { "connects" } else { "is refused" }
    );
    assert!(
        through > 0,
        "the first connections of a source are accepted"
    );
    assert!(
        through < attempts && dropped > 0,
        "the flood was not cut off ({through} of {attempts} accepted)"
    );
    assert!(
        other.is_some(),
        "another source is cut off by the stranger's flood"
    );
    drop(flood);
    println!("== done in {:.0}s", started.elapsed().as_secs_f64());
}
