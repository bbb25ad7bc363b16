//! The Ansible playbooks against real hosts: the staging fleet's hosts as network namespaces,
//! each with its own address and sshd (`ansible/tests/netns-hosts`), deployed over SSH with
//! `deploy.yml`, checked green by `roost-fleet check`, deployed again with nothing changed,
//! scraped by a real Prometheus with the generated scrape config, upgraded host by host with
//! `upgrade.yml` to another build while a client publishes and queries without losing a
//! message, and their nftables rules shown to cut off a connection flood and close the admin
//! port. And a fleet whose store nodes share an existing PostgreSQL database: the password from
//! Ansible Vault into a 0600 file on each store host, the role's checks refusing a host without
//! it and one whose database does not answer. Needs root; everything it makes is removed
//! afterwards, also when it fails.

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
        ansible_playbook_with_args, recap_text, repo_root, require_root_and_tools, CreatedAccount,
        MachineLock, PlaybookRun, TestHosts,
    },
    fleet_bin, init_tracing,
    postgres::PgCluster,
    roost_bin, wait_until,
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
    staging_adjusted_with_identities(dir, secrets, |_| {})
}

/// [`staging_with_identities`] with the fleet definition changed by `adjust` first.
fn staging_adjusted_with_identities(
    dir: &Path,
    secrets: &Path,
    adjust: impl FnOnce(&mut toml::Table),
) -> (PathBuf, BTreeMap<String, String>) {
    let text = std::fs::read_to_string(repo_root().join("fleet").join("staging.toml")).unwrap();
    let mut fleet: toml::Table = toml::from_str(&text).unwrap();
    adjust(&mut fleet);
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
    let run = playbook_run(work, inventory, name, vars, &[]).await;
    assert!(run.success, "{name} failed:\n{}", run.output);
    run
}

/// Runs a playbook with further arguments; its recap printed, success not required.
async fn playbook_run(
    work: &Path,
    inventory: &Path,
    name: &str,
    vars: &[&Path],
    args: &[&str],
) -> PlaybookRun {
    let started = Instant::now();
    let run = tokio::time::timeout(
        PLAYBOOK_TIMEOUT,
        ansible_playbook_with_args(work, inventory, name, vars, args),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} did not finish within {PLAYBOOK_TIMEOUT:?}"));
    println!(
        "== ansible-playbook {name} {}: {:.0}s\n{}",
        args.join(" "),
        started.elapsed().as_secs_f64(),
        recap_text(&run.output)
    );
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

/// How Ansible reaches the test hosts, and what an operator's group vars and vault would give:
/// every path under `<work>/root/<host>`, node keys looked up in `secrets`, `binary` deployed.
fn test_vars(work: &Path, hosts: &TestHosts, secrets: &Path, binary: &Path) -> PathBuf {
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
roost_node_binary_src: "{binary}"
roost_node_monitoring_networks: ["{CONTROLLER}/32"]
"#,
            key = hosts.ssh_key().display(),
            root = work.join("root").display(),
            secrets = secrets.display(),
            binary = binary.display(),
        ),
    )
    .unwrap();
    vars
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

    let vars = test_vars(work, &hosts, &secrets, &v1);
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

/// A TCP relay from the controller's address on the hosts' bridge to the test's PostgreSQL
/// cluster, which listens on loopback only: the "existing database" the hosts are pointed at.
/// Dropping it closes the listener and every relayed connection.
struct DatabaseRelay(tokio::task::JoinHandle<()>);

impl DatabaseRelay {
    async fn start(listen: &str, cluster_port: u16) -> DatabaseRelay {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("bind the database relay on {listen}: {e}"));
        DatabaseRelay(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", cluster_port)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        }))
    }
}

impl Drop for DatabaseRelay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What `ansible-playbook` printed for one task (from its `TASK [...]` line to the next).
fn task_output<'a>(output: &'a str, task: &str) -> &'a str {
    let header = format!("TASK [roost_node : {task}]");
    let Some(start) = output.find(&header) else {
        return "";
    };
    let rest = &output[start + header.len()..];
    &rest[..rest.find("TASK [").unwrap_or(rest.len())]
}

/// Every file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

const STORE_HOSTS: [&str; 2] = ["store-01.do-ams3.staging", "store-02.do-ams3.staging"];

/// The Ansible requirement of the PostgreSQL archive: an operator points a fleet's store nodes at
/// an existing database in the fleet file (`[role.store]` backend and URL, no password) and keeps
/// the password in Ansible Vault. Staging without its relay-only host, both store nodes on one
/// database: a host without the password, and then one whose database does not answer, is
/// refused before anything on it changes; with the vault the password is in a 0600 file of the
/// node's user and nowhere else (not in the fleet file, the inventory, the host's config or the
/// play's output), the nodes run on PostgreSQL and what is published lands in the database, and
/// a second deploy changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ansible_puts_the_store_nodes_on_an_existing_postgresql_database_with_the_password_from_vault(
) {
    require_root_and_tools(&[
        "ansible-playbook",
        "ansible-inventory",
        "ansible-vault",
        "sshd",
        "ssh",
        "ssh-keygen",
        "nft",
        "ip",
        "objcopy",
        "systemd-analyze",
        "start-stop-daemon",
        "pg_isready",
    ]);
    init_tracing();
    let started = Instant::now();
    let _lock = MachineLock::acquire();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let work = tmp.path();
    let _account = CreatedAccount::watch("roost");

    // The existing database, and the URL the fleet file gives (reached through the relay).
    let cluster = PgCluster::start().expect("a private PostgreSQL cluster");
    cluster.create_database("roost_staging").unwrap();
    let password = cluster.password().to_owned();
    let relay_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!(
        "postgresql://{}@{CONTROLLER}:{relay_port}/roost_staging",
        roost_tests::postgres::USER
    );

    let (binary, _) = release(&work.join("release"), "ansible-postgres");
    let secrets = work.join("secrets");
    let (fleet_file, peer_ids) =
        staging_adjusted_with_identities(&work.join("fleet"), &secrets, |fleet| {
            let hosts = fleet["hosts"].as_array_mut().unwrap();
            hosts.retain(|h| h["name"].as_str() != Some("relay-01.do-ams3.staging"));
            // What an operator writes under [role.store]:
            //   store.backend = "postgres"
            //   store.postgres_url = "postgresql://roost@<db host>:<port>/roost_staging"
            let store = fleet["role"]["store"]["store"].as_table_mut().unwrap();
            store.insert("backend".into(), "postgres".into());
            store.insert("postgres_url".into(), url.clone().into());
        });
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
    // The store hosts' configs name the database and the password file; the node's own loader
    // accepts them; the password is in nothing rendered.
    for name in STORE_HOSTS {
        let config = rendered.join("hosts").join(name).join("roost.toml");
        let dump = run_ok(
            Command::new(roost_bin())
                .args(["config", "dump", "--config"])
                .arg(&config),
            "roost config dump",
        );
        for line in [
            "backend = \"postgres\"".to_owned(),
            format!("postgres_url = \"{url}\""),
            "postgres_password_file = \"/var/lib/roost/postgres-password\"".to_owned(),
        ] {
            assert!(
                dump.lines().any(|l| l == line),
                "{name}: no `{line}` in\n{dump}"
            );
        }
    }
    for file in files_under(&rendered)
        .into_iter()
        .chain([fleet_file.clone()])
    {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains(&password),
            "{} holds the password",
            file.display()
        );
    }

    let hosts = TestHosts::up(&work.join("hosts"), &inventory, CONTROLLER, &[]);
    assert_eq!(hosts.hosts.len(), 4, "{:?}", hosts.hosts);
    let relay = DatabaseRelay::start(&format!("{CONTROLLER}:{relay_port}"), cluster.port).await;
    let vars = test_vars(work, &hosts, &secrets, &binary);

    // The operator's vault: the password encrypted with `ansible-vault encrypt_string`, typed
    // in with the newline that ends a line (the role drops it).
    let vault_password_file = work.join("vault-password");
    std::fs::write(
        &vault_password_file,
        format!(
            "vault-{}\n",
            hex::encode(Sha256::digest(format!(
                "{:?} {}",
                std::time::SystemTime::now(),
                std::process::id()
            )))
        ),
    )
    .unwrap();
    std::fs::set_permissions(&vault_password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let vault_vars = work.join("vault.yml");
    let mut encrypt = Command::new("ansible-vault");
    encrypt
        .args(["encrypt_string", "--vault-password-file"])
        .arg(&vault_password_file)
        .args([
            "--encrypt-vault-id",
            "default",
            "--stdin-name",
            "roost_node_store_postgres_password",
        ])
        .env("ANSIBLE_HOME", work.join("ansible-home"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = encrypt.spawn().expect("run ansible-vault");
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
    }
    let encrypted = child.wait_with_output().unwrap();
    assert!(
        encrypted.status.success(),
        "ansible-vault encrypt_string: {}",
        String::from_utf8_lossy(&encrypted.stderr)
    );
    let vault_text = String::from_utf8(encrypted.stdout).unwrap();
    assert!(
        vault_text.contains("$ANSIBLE_VAULT") && !vault_text.contains(&password),
        "{vault_text}"
    );
    std::fs::write(&vault_vars, vault_text).unwrap();
    let vault_file_arg = vault_password_file.display().to_string();
    let with_vault = ["--vault-password-file", vault_file_arg.as_str()];

    // 1. Without the password the store hosts are refused, before anything on them changes.
    let refused = playbook_run(
        work,
        &inventory,
        "deploy.yml",
        &[&vars],
        &["--limit", "store"],
    )
    .await;
    assert!(!refused.success, "deploy without the password succeeded");
    assert!(
        refused
            .output
            .contains("so roost_node_store_postgres_password must be set"),
        "{}",
        refused.output
    );
    for name in STORE_HOSTS {
        let r = refused.recap[name];
        assert!(r.failed == 1 && r.changed == 0, "{name}: {r:?}");
        assert!(
            !work.join("root").join(name).exists(),
            "{name} was touched before the check"
        );
    }

    // 2. With the vault: deployed; the password in a 0600 file of the node's user, only there.
    let deploy = playbook_run(
        work,
        &inventory,
        "deploy.yml",
        &[&vars, &vault_vars],
        &with_vault,
    )
    .await;
    assert!(deploy.success, "deploy failed:\n{}", deploy.output);
    assert_eq!(deploy.recap.len(), 4, "{}", recap_text(&deploy.output));
    for (host, r) in &deploy.recap {
        assert!(r.failed == 0 && r.changed > 0, "{host}: {r:?}");
    }
    assert!(
        !deploy.output.contains(&password),
        "the play printed the password"
    );
    let reachable = task_output(
        &deploy.output,
        "Checks | pg_isready against the store's database",
    );
    for name in STORE_HOSTS {
        assert!(
            reachable.contains(&format!("ok: [{name}]")),
            "pg_isready did not check {name}'s database:\n{reachable}"
        );
    }
    for host in &hosts.hosts {
        let root = work.join("root").join(&host.name);
        let data = root.join("var/lib/roost");
        let password_file = data.join("postgres-password");
        if !STORE_HOSTS.contains(&host.name.as_str()) {
            assert!(
                !password_file.exists(),
                "{}: a password file on a RocksDB host",
                host.name
            );
            continue;
        }
        let meta = std::fs::metadata(&password_file)
            .unwrap_or_else(|e| panic!("{}: {e}", password_file.display()));
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(meta.mode() & 0o777, 0o600, "{}", password_file.display());
        assert_eq!(
            meta.uid(),
            std::fs::metadata(&data).unwrap().uid(),
            "the password file belongs to the node's user, as its data dir"
        );
        assert_ne!(meta.uid(), 0);
        assert_eq!(
            std::fs::read_to_string(&password_file).unwrap(),
            format!("{password}\n")
        );
        for file in files_under(&root.join("etc/roost")) {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                !text.contains(&password),
                "{} holds the password",
                file.display()
            );
        }
        let health: serde_json::Value =
            reqwest::get(format!("http://{}:8008/health", host.address))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(
            health["components"]["store"]["detail"]["backend"], "postgres",
            "{}: {health}",
            host.name
        );
    }

    // What is published lands in the database both store nodes share.
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
    let client = Client::start(CLUSTER).await.expect("light client starts");
    let boot = address("boot-01.do-ams3.staging");
    let pushed = wait_until(Duration::from_secs(60), || async {
        let message = WakuMessage::new(TOPIC, b"seq 0".to_vec());
        matches!(
            tokio::time::timeout(
                Duration::from_secs(10),
                client.light_push(&boot, Version::V3, Some(&pubsub_topic), &message),
            )
            .await,
            Ok(Ok(r)) if r.is_success()
        ) || {
            tokio::time::sleep(CLIENT_PACE).await;
            false
        }
    })
    .await;
    assert!(pushed.is_ok(), "the boot node never acknowledged a push");
    for name in STORE_HOSTS {
        let store = address(name);
        let found = wait_until(Duration::from_secs(30), || async {
            let held = stored_seqs(&client, &store, &pubsub_topic)
                .await
                .contains(&0);
            if !held {
                tokio::time::sleep(CLIENT_PACE).await;
            }
            held
        })
        .await;
        assert!(found.is_ok(), "{name} does not return the message");
    }
    let rows: u64 = cluster
        .psql("roost_staging", "SELECT count(*) FROM messages")
        .unwrap()
        .parse()
        .unwrap();
    println!("== PostgreSQL: {rows} message(s) in the store nodes' shared database");
    assert!(rows >= 1, "the message is not in PostgreSQL");
    client.stop().await;

    // 3. A second deploy changes nothing (the password file included).
    let again = playbook_run(
        work,
        &inventory,
        "deploy.yml",
        &[&vars, &vault_vars],
        &with_vault,
    )
    .await;
    assert!(again.success, "{}", again.output);
    for (host, r) in &again.recap {
        assert_eq!(
            (r.changed, r.failed),
            (0, 0),
            "{host}: the second deploy must change nothing:\n{}",
            again.output
        );
    }

    // 4. The database stops answering: the store hosts are refused before they are touched.
    let pid = |name: &str| {
        std::fs::read_to_string(work.join("root").join(name).join("run/roost/roost.pid"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let before: Vec<String> = STORE_HOSTS.iter().map(|h| pid(h)).collect();
    drop(relay);
    let unreachable = playbook_run(
        work,
        &inventory,
        "deploy.yml",
        &[&vars, &vault_vars],
        &["--limit", "store", "--vault-password-file", &vault_file_arg],
    )
    .await;
    assert!(
        !unreachable.success,
        "deploy with the database down succeeded"
    );
    assert!(
        unreachable
            .output
            .contains("does not accept connections from this host"),
        "{}",
        unreachable.output
    );
    for name in STORE_HOSTS {
        let r = unreachable.recap[name];
        assert!(r.failed == 1 && r.changed == 0, "{name}: {r:?}");
    }
    let after: Vec<String> = STORE_HOSTS.iter().map(|h| pid(h)).collect();
    assert_eq!(before, after, "a store node was restarted");
    println!("== done in {:.0}s", started.elapsed().as_secs_f64());
}
