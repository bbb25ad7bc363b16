//! DNS discovery end to end: `roost-fleet dns` (and its library) publishes a fleet's EIP-1459
//! tree, a real authoritative DNS server (hickory-server) serves the zone file it wrote on
//! 127.0.0.1 (UDP and TCP, one port), and nodes that know nothing but the `enrtree://` URL and
//! that name server find each other and relay. Trees signed on SoftHSM2 and on the emulated
//! Keycard (through pcscd) verify through the same resolver the node uses.

use std::{path::Path, sync::Arc, time::Duration};

use hickory_server::{
    proto::rr::{LowerName, Name},
    store::file::{FileConfig, FileZoneHandler},
    zone_handler::{AxfrPolicy, Catalog, ZoneType},
    Server,
};
use roost_fleet::{
    check::Target,
    local::{FleetState, NodeState},
};
use roost_node::{
    discovery::dns::{
        client::Resolver,
        tree::{self, Limits},
        NameServer, TreeUrl,
    },
    message::WakuMessage,
    operator::{
        profile::{BackendKind, FileConfig as KeyFileConfig, Profile},
        signer::{file, Signer},
    },
};
use roost_tests::{
    init_tracing,
    process::fleet_bin,
    rig::{Card, PcscRig, Readers, SoftHsm, CARD_PIN, SOFTHSM_MODULE},
    wait_until, TestNode, WAIT,
};

const TOPIC: &str = "/waku/2/rs/1/0";
const DOMAIN: &str = "nodes.roost.test";

/// UDP and TCP sockets on one loopback port, bound before anything is served there (the nodes
/// must know the address before the zone holding their own ENRs exists).
struct Reserved {
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
}

impl Reserved {
    async fn bind() -> Reserved {
        for _ in 0..50 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                return Reserved { udp, tcp };
            }
        }
        panic!("no loopback port free for both UDP and TCP");
    }

    fn name_server(&self) -> NameServer {
        NameServer(self.udp.local_addr().unwrap())
    }

    /// Serves each zone file (what `roost-fleet dns` wrote) as the zone of its domain, with the
    /// SOA and NS records a zone of its own needs.
    fn serve(self, zones: &[(&str, &Path)]) -> Server<Catalog> {
        let mut catalog = Catalog::new();
        for (domain, zone_file) in zones {
            let mut text = std::fs::read_to_string(zone_file).expect("zone file");
            text.push_str(&format!(
                "@ 3600 IN SOA ns.{domain}. hostmaster.{domain}. 1 3600 600 86400 60\n@ 3600 IN NS ns.{domain}.\n"
            ));
            let served = zone_file.with_file_name("served.zone");
            std::fs::write(&served, text).unwrap();
            let origin = Name::from_ascii(format!("{domain}.")).unwrap();
            let handler = FileZoneHandler::try_from_config(
                origin.clone(),
                ZoneType::Primary,
                AxfrPolicy::Deny,
                None,
                &FileConfig { zone_path: served },
            )
            .expect("hickory loads the zone file");
            catalog.upsert(LowerName::from(origin), vec![Arc::new(handler)]);
        }
        let mut server = Server::new(catalog);
        server.register_socket(self.udp);
        server.register_listener(self.tcp, Duration::from_secs(5), 64);
        server
    }
}

/// A file-key operator profile in `dir` (what `roost operator init --backend file` writes).
fn file_profile(dir: &Path, domain: &str) -> (std::path::PathBuf, TreeUrl) {
    let (signer, _) =
        file::FileSigner::open_or_create(&dir.join("op.key"), file::Algorithm::Secp256k1).unwrap();
    let path = dir.join("roost-operator.toml");
    Profile {
        backend: BackendKind::File,
        public_key: signer.public_key().clone(),
        file: Some(KeyFileConfig {
            key_file: "op.key".into(),
        }),
        pkcs11: None,
        keycard: None,
    }
    .save(&path)
    .unwrap();
    let key = signer.public_key().secp256k1().unwrap();
    (path, TreeUrl::new(key, domain).unwrap())
}

fn target(name: &str, node: &TestNode) -> Target {
    Target {
        name: name.into(),
        roles: Vec::new(),
        http_url: node.http_url(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_know_only_an_enrtree_url_find_each_other_and_relay() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (profile, url) = file_profile(dir.path(), DOMAIN);
    let reserved = Reserved::bind().await;
    let name_server = reserved.name_server();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let url = url.clone();
        nodes.push(
            TestNode::start_with(move |c| {
                c.discovery.dns_urls = vec![url];
                c.discovery.dns_name_servers = vec![name_server];
            })
            .await,
        );
    }
    // The fleet tool's path: ENRs from /debug/v1/info, the root signed with the operator key,
    // zone.txt and records.json written.
    let targets: Vec<Target> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| target(&format!("node-{i}"), n))
        .collect();
    let enrs = roost_fleet::dns::fetch_enrs(&targets).await.unwrap();
    let out = dir.path().join("dns");
    let published = tokio::task::block_in_place(|| {
        roost_fleet::dns::publish(DOMAIN, &enrs, &[], &profile, &out)
    })
    .unwrap();
    println!(
        "published {} seq {}: {} nodes, {} TXT records",
        published.url, published.seq, published.nodes, published.records
    );
    assert_eq!(published.url, url.to_string());
    let _server = reserved.serve(&[(DOMAIN, &published.zone_file)]);

    let started = std::time::Instant::now();
    wait_until(Duration::from_secs(60), || async {
        for n in &nodes {
            let peers = n
                .handle
                .network_status()
                .await
                .map(|s| s.connected_peers.len())
                .unwrap_or(0);
            if peers < 2 {
                return false;
            }
        }
        true
    })
    .await
    .expect("every node finds the other two through the DNS tree");
    println!(
        "all three nodes connected {:.1}s after the zone was served",
        started.elapsed().as_secs_f64()
    );
    for n in &nodes {
        n.wait_for_mesh(TOPIC, 2).await;
    }
    let mut at_c = nodes[2].handle.subscribe();
    let message = WakuMessage::new("/roost/1/dns/proto", b"found through DNS".to_vec());
    nodes[0]
        .handle
        .publish(TOPIC, message.clone())
        .await
        .expect("publish at A");
    let got = tokio::time::timeout(WAIT, at_c.recv())
        .await
        .expect("C receives")
        .expect("channel open");
    assert_eq!(got.message, message);

    for n in &nodes {
        let health = n.health().await;
        let component = &health["components"]["dns_discovery"];
        assert_eq!(component["status"], "ok", "{health}");
        let tree = &component["detail"][url.to_string()];
        assert_eq!(tree["seq"], 1, "{component}");
        assert_eq!(tree["in_cluster"], 3, "{component}");
        assert!(n
            .metric("roost_discovery_dns_syncs_total{outcome=\"ok\"}")
            .await
            .is_some_and(|v| v >= 1.0));
    }
    println!(
        "health of node 0: {}",
        nodes[0].health().await["components"]["dns_discovery"]
    );
}

/// The highest seq a node has read survives its restart: after reading seq 2, a restarted node
/// refuses the older seq-1 tree as a rollback and dials nothing it lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_older_than_one_read_before_a_restart_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (profile, url) = file_profile(dir.path(), DOMAIN);
    let peer_a = TestNode::start().await;
    let peer_b = TestNode::start().await;
    let enrs = roost_fleet::dns::fetch_enrs(&[target("a", &peer_a), target("b", &peer_b)])
        .await
        .unwrap();
    let out = dir.path().join("dns");
    let old = tokio::task::block_in_place(|| {
        roost_fleet::dns::publish(DOMAIN, &enrs[..1], &[], &profile, &out)
    })
    .unwrap();
    let old_zone = dir.path().join("old").join("zone.txt");
    std::fs::create_dir_all(old_zone.parent().unwrap()).unwrap();
    std::fs::copy(&old.zone_file, &old_zone).unwrap();
    let new = tokio::task::block_in_place(|| {
        roost_fleet::dns::publish(DOMAIN, &enrs, &[], &profile, &out)
    })
    .unwrap();
    assert_eq!((old.seq, new.seq), (1, 2));

    let reserved = Reserved::bind().await;
    let name_server = reserved.name_server();
    let mut server = reserved.serve(&[(DOMAIN, &new.zone_file)]);
    let adjust = |name_server: NameServer, url: TreeUrl| {
        move |c: &mut roost_node::Config| {
            c.discovery.dns_urls = vec![url];
            c.discovery.dns_name_servers = vec![name_server];
        }
    };
    let node = TestNode::start_with(adjust(name_server, url.clone())).await;
    wait_until(WAIT, || async {
        node.metric("roost_discovery_dns_tree_seq{domain=\"nodes.roost.test\"}")
            .await
            == Some(2.0)
    })
    .await
    .expect("the node reads seq 2");
    let node_dir = node.stop().await;
    server.shutdown_gracefully().await.unwrap();
    let kept =
        std::fs::read_to_string(node_dir.path().join(roost_node::discovery::dns::seen::FILE))
            .unwrap();
    println!("kept across the restart: {kept}");
    assert!(
        kept.contains(&url.to_string()) && kept.contains(": 2"),
        "{kept}"
    );

    // Restarted on the same data dir, asking a server that has only the older tree.
    let reserved = Reserved::bind().await;
    let older_server = reserved.name_server();
    let _server = reserved.serve(&[(DOMAIN, &old_zone)]);
    let node = TestNode::start_in(node_dir, adjust(older_server, url.clone())).await;
    wait_until(WAIT, || async {
        node.metric("roost_discovery_dns_syncs_total{outcome=\"rollback\"}")
            .await
            .is_some_and(|v| v >= 1.0)
    })
    .await
    .expect("the older tree is refused as a rollback");
    let health = node.health().await;
    let tree = &health["components"]["dns_discovery"]["detail"][url.to_string()];
    println!("after the restart: {tree}");
    assert!(
        tree["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("seq 1 is lower than seq 2")),
        "{tree}"
    );
    assert!(!node.connected_to(peer_a.handle.peer_id()).await);
}

/// A tree whose root is signed by another key than the URL's is refused with the reason in
/// `/health` and the metric, and nothing is dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_signed_by_another_key_is_refused_and_not_used() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (profile, _) = file_profile(dir.path(), DOMAIN);
    let other = tempfile::tempdir().unwrap();
    let (_, wrong_url) = file_profile(other.path(), DOMAIN);
    let peer = TestNode::start().await;
    let reserved = Reserved::bind().await;
    let name_server = reserved.name_server();
    let enrs = roost_fleet::dns::fetch_enrs(&[target("peer", &peer)])
        .await
        .unwrap();
    let out = dir.path().join("dns");
    let published = tokio::task::block_in_place(|| {
        roost_fleet::dns::publish(DOMAIN, &enrs, &[], &profile, &out)
    })
    .unwrap();
    let _server = reserved.serve(&[(DOMAIN, &published.zone_file)]);
    let node = TestNode::start_with(move |c| {
        c.discovery.dns_urls = vec![wrong_url];
        c.discovery.dns_name_servers = vec![name_server];
    })
    .await;
    wait_until(WAIT, || async {
        node.metric("roost_discovery_dns_syncs_total{outcome=\"bad_signature\"}")
            .await
            .is_some_and(|v| v >= 1.0)
    })
    .await
    .expect("the tree is refused");
    let health = node.health().await;
    let component = &health["components"]["dns_discovery"];
    println!("refused tree: {component}");
    assert_eq!(component["status"], "degraded");
    assert!(
        component.to_string().contains("does not verify"),
        "{component}"
    );
    assert!(!node.connected_to(peer.handle.peer_id()).await);
}

/// A tree linking to another (EIP-1459's link subtree): a node that knows only the first URL
/// reads the second too, verified against the key the link names, and dials its nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_tree_is_followed_and_verified_with_its_own_key() {
    init_tracing();
    const LINKED: &str = "more.roost.test";
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let (profile_a, url_a) = file_profile(dir.path(), DOMAIN);
    let (profile_b, url_b) = file_profile(other.path(), LINKED);
    let in_a = TestNode::start().await;
    let in_b = TestNode::start().await;
    let enrs_a = roost_fleet::dns::fetch_enrs(&[target("a", &in_a)])
        .await
        .unwrap();
    let enrs_b = roost_fleet::dns::fetch_enrs(&[target("b", &in_b)])
        .await
        .unwrap();
    let (out_a, out_b) = (dir.path().join("dns"), other.path().join("dns"));
    let (a, b) = tokio::task::block_in_place(|| {
        (
            roost_fleet::dns::publish(
                DOMAIN,
                &enrs_a,
                std::slice::from_ref(&url_b),
                &profile_a,
                &out_a,
            )
            .unwrap(),
            roost_fleet::dns::publish(LINKED, &enrs_b, &[], &profile_b, &out_b).unwrap(),
        )
    });
    let reserved = Reserved::bind().await;
    let name_server = reserved.name_server();
    let _server = reserved.serve(&[(DOMAIN, &a.zone_file), (LINKED, &b.zone_file)]);
    let node = TestNode::start_with(move |c| {
        c.discovery.dns_urls = vec![url_a];
        c.discovery.dns_name_servers = vec![name_server];
    })
    .await;
    wait_until(WAIT, || async {
        node.connected_to(in_a.handle.peer_id()).await
            && node.connected_to(in_b.handle.peer_id()).await
    })
    .await
    .expect("the node reaches the nodes of both trees");
    let health = node.health().await;
    let detail = &health["components"]["dns_discovery"]["detail"];
    println!("linked trees: {detail}");
    assert_eq!(detail[a.url.as_str()]["links"][0], url_b.to_string());
    assert_eq!(detail[url_b.to_string()]["seq"], 1);
}

/// `fleet.json` naming one running node, for `roost-fleet dns --dir`.
fn fleet_dir(node: &TestNode) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    FleetState {
        fleet: "staging".into(),
        cluster_id: 1,
        shards: vec![0],
        node_version: "test".into(),
        dns: None,
        nodes: vec![NodeState {
            name: "boot-01.test.staging".into(),
            dc: "test".into(),
            roles: Vec::new(),
            peer_id: node.handle.peer_id().to_string(),
            tcp: node.tcp_addr().to_string(),
            ws: node.ws_addr().to_string(),
            metrics_url: format!("{}/metrics", node.http_url()),
            http_url: node.http_url(),
            pid: std::process::id(),
            data_dir: node.data_dir(),
            config: node.data_dir(),
            log: node.data_dir(),
        }],
    }
    .save(dir.path())
    .unwrap();
    dir
}

fn dns_args<'a>(fleet_dir: &'a str, out: &'a str, profile: &'a str) -> Vec<&'a str> {
    vec![
        "dns",
        "staging",
        "--domain",
        DOMAIN,
        "--dir",
        fleet_dir,
        "--out",
        out,
        "--operator-profile",
        profile,
        "--json",
    ]
}

/// Serves what `roost-fleet dns` wrote and reads it back through the node's resolver.
async fn verify_served(out: &Path, stdout: &str) -> tree::Synced {
    let published: serde_json::Value = serde_json::from_str(stdout).expect("--json output");
    let url: TreeUrl = published["url"].as_str().unwrap().parse().unwrap();
    let reserved = Reserved::bind().await;
    let resolver = Resolver::new(&[reserved.name_server()]).unwrap();
    let _server = reserved.serve(&[(DOMAIN, &out.join("zone.txt"))]);
    tree::sync(&resolver, &url, Limits::default())
        .await
        .expect("the served tree verifies")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_signed_on_softhsm_verifies() {
    init_tracing();
    let node = TestNode::start().await;
    let fleet = fleet_dir(&node);
    let hsm = SoftHsm::new("dns");
    let cwd = hsm.dir.path();
    let init = hsm.roost(
        &[
            "operator",
            "init",
            "--backend",
            "pkcs11",
            "--module",
            SOFTHSM_MODULE,
            "--token",
            &hsm.token,
            "--key-label",
            "tree",
            "--profile",
            "op.toml",
        ],
        cwd,
        &hsm.pin,
    );
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = cwd.join("dns");
    let run = tokio::task::block_in_place(|| {
        hsm.command(fleet_bin().to_str().unwrap())
            .args(dns_args(
                fleet.path().to_str().unwrap(),
                out.to_str().unwrap(),
                cwd.join("op.toml").to_str().unwrap(),
            ))
            .env("ROOST_PIN", &hsm.pin)
            .current_dir(cwd)
            .output()
            .expect("run roost-fleet")
    });
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    println!("roost-fleet dns (SoftHSM2): {stdout}");
    let synced = verify_served(&out, &stdout).await;
    assert_eq!(synced.root.seq, 1);
    assert_eq!(synced.enrs.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_signed_on_the_emulated_keycard_verifies() {
    init_tracing();
    let node = TestNode::start().await;
    let fleet = fleet_dir(&node);
    let mut rig = PcscRig::start(Readers::Vpcd);
    rig.insert(Card::default());
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let init = rig.roost(&["operator", "init", "--backend", "keycard"], cwd, CARD_PIN);
    assert!(
        init.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&init.stderr),
        rig.logs()
    );
    let out = cwd.join("dns");
    let profile = cwd.join("roost-operator.toml");
    let args = dns_args(
        fleet.path().to_str().unwrap(),
        out.to_str().unwrap(),
        profile.to_str().unwrap(),
    );
    let run = tokio::task::block_in_place(|| rig.run(&fleet_bin(), &args, cwd, CARD_PIN));
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stderr),
        rig.logs()
    );
    println!("roost-fleet dns (Keycard): {stdout}");
    let synced = verify_served(&out, &stdout).await;
    assert_eq!(synced.root.seq, 1);
    assert_eq!(synced.enrs.len(), 1);
}

/// Stops `roost-fleet up --dns` and its fleet even when the test fails half-way.
struct Up {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = std::process::Command::new(fleet_bin())
            .args(["down", "--dir"])
            .arg(&self.dir)
            .output();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `roost-fleet up --local --dns`: the staging fleet's nodes get no static peer and no
/// rendezvous point, only the `enrtree://` URL and the loopback name server `up` serves the tree
/// from; they mesh and relay a message pushed at one node to the store nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_up_with_dns_bootstraps_every_node_from_the_tree_alone() {
    use std::io::BufRead as _;
    init_tracing();
    let staging = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fleet")
        .join("staging.toml");
    let fleet = roost_fleet::Fleet::load(&staging).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("staging");
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(fleet_bin())
        .args(["up", staging.to_str().unwrap(), "--local", "--dns", "--dir"])
        .arg(&dir)
        .arg("--roost-bin")
        .arg(roost_tests::roost_bin())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut up = Up {
        child,
        dir: dir.clone(),
    };
    // `up` prints the fleet, the tree, then keeps serving: read until it says so.
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let serving = line.starts_with("serving the tree");
            lines.push(line);
            if serving {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    println!("{}", lines.join("\n"));
    assert!(
        lines.last().is_some_and(|l| l.starts_with("serving")),
        "`up --dns` exited: {:?}",
        up.child.try_wait()
    );
    println!(
        "fleet up and meshed through DNS in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let state = FleetState::load(&dir).unwrap();
    let tree = state.dns.clone().expect("fleet.json names the tree");
    assert_eq!(state.nodes.len(), fleet.hosts.len());
    assert_eq!(tree.server_pid, up.child.id());
    assert!(tree.name_server.ip().is_loopback() && tree.name_server.port() != 0);
    let url: TreeUrl = tree.url.parse().unwrap();
    assert_eq!(url.domain(), "nodes.staging.roost.test");
    assert!(lines.iter().any(|l| l.contains(&tree.url)));

    // What the tree says, read through the node's own resolver from the server `up` runs.
    let resolver = Resolver::new(&[NameServer(tree.name_server)]).unwrap();
    let synced = tree::sync(&resolver, &url, Limits::default())
        .await
        .unwrap();
    assert_eq!(synced.root.seq, tree.seq);
    let mut in_tree: Vec<String> = synced
        .enrs
        .iter()
        .map(|e| roost_node::waku_enr::peer_id(e).unwrap().to_string())
        .collect();
    in_tree.sort();
    let mut running: Vec<String> = state.nodes.iter().map(|n| n.peer_id.clone()).collect();
    running.sort();
    assert_eq!(in_tree, running, "the tree lists every node");

    for node in &state.nodes {
        // Nothing but the tree: no static peer, no rendezvous point.
        let config: toml::Table =
            toml::from_str(&std::fs::read_to_string(&node.config).unwrap()).unwrap();
        assert_eq!(
            config["network"]["peers"].as_array().map(Vec::len),
            Some(0),
            "{}: {config}",
            node.name
        );
        if let Some(points) = config.get("rendezvous").and_then(|r| r.get("points")) {
            assert_eq!(points.as_array().map(Vec::len), Some(0), "{}", node.name);
        }
        assert_eq!(
            config["discovery"]["dns_urls"][0].as_str(),
            Some(tree.url.as_str())
        );
        assert_eq!(
            config["discovery"]["dns_name_servers"][0].as_str(),
            Some(tree.name_server.to_string().as_str())
        );
        let health: serde_json::Value = reqwest::get(format!("{}/health", node.http_url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let component = &health["components"]["dns_discovery"];
        assert_eq!(component["status"], "ok", "{}: {health}", node.name);
        assert_eq!(
            component["detail"][&tree.url]["in_cluster"],
            fleet.hosts.len(),
            "{}: {component}",
            node.name
        );
        let metrics = reqwest::get(&node.metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let dials = roost_tests::metric_sum(&metrics, "roost_discovery_dns_dials_total", &[]);
        println!(
            "{}: {} peers, {dials} DNS dials",
            node.name, health["peers"]
        );
    }

    // Relay: pushed at the boot node, stored by both store nodes.
    let boot = state
        .nodes
        .iter()
        .find(|n| n.name.starts_with("boot-"))
        .unwrap();
    let topic = roost_node::message::ShardTopic::new(state.cluster_id, state.shards[0]).to_string();
    let client = roost_node::client::Client::start(state.cluster_id)
        .await
        .unwrap();
    let message = WakuMessage::new(
        "/roost/1/fleet-dns/proto",
        b"bootstrapped from DNS".to_vec(),
    );
    let reply = client
        .light_push(
            &boot.tcp.parse().unwrap(),
            roost_node::lightpush::Version::V3,
            Some(&topic),
            &message,
        )
        .await
        .unwrap();
    assert!(reply.is_success(), "{reply:?}");
    let wanted: std::collections::HashSet<_> = [message.hash(&topic)].into();
    for store in state.nodes.iter().filter(|n| n.name.starts_with("store-")) {
        let addr: libp2p::Multiaddr = store.tcp.parse().unwrap();
        wait_until(WAIT, || async {
            roost_tests::missing_from_store(&client, &addr, &wanted)
                .await
                .is_empty()
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} stores the message relayed from the boot node",
                store.name
            )
        });
    }

    // `down` stops the nodes and the `up` serving the tree.
    let out = std::process::Command::new(fleet_bin())
        .args(["down", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !matches!(up.child.try_wait(), Ok(Some(_))) {
        assert!(
            std::time::Instant::now() < deadline,
            "`down` stops `up --dns`"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two Roost nodes published as a tree by the fleet tool's library, served by hickory-server on
/// loopback.
async fn two_nodes_in_a_served_tree(
    dir: &Path,
) -> (TestNode, TestNode, TreeUrl, NameServer, Server<Catalog>) {
    let (profile, url) = file_profile(dir, DOMAIN);
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    a.connect(&b).await;
    let enrs = roost_fleet::dns::fetch_enrs(&[target("a", &a), target("b", &b)])
        .await
        .unwrap();
    let out = dir.join("dns");
    let published = tokio::task::block_in_place(|| {
        roost_fleet::dns::publish(DOMAIN, &enrs, &[], &profile, &out)
    })
    .unwrap();
    let reserved = Reserved::bind().await;
    let name_server = reserved.name_server();
    let server = reserved.serve(&[(DOMAIN, &published.zone_file)]);
    (a, b, url, name_server, server)
}

/// Waits until the store of every node in `nodes` holds `hash` (hex, as js-waku prints it).
async fn stored_everywhere(nodes: &[&TestNode], topic: &str, content_topic: &str, hash: &str) {
    async fn stored(n: &TestNode, topic: &str, content_topic: &str) -> Vec<String> {
        let request = roost_node::store::StoreQueryRequest::new("dns")
            .content(topic.to_owned(), [content_topic])
            .limit(10);
        let page = n.handle.store().expect("store node").query(&request).await;
        page.entries()
            .map(|entries| entries.iter().map(|e| crate::js::hex(&e.hash)).collect())
            .unwrap_or_else(|e| vec![format!("error: {e:?}")])
    }
    let everywhere = wait_until(WAIT, || async {
        for n in nodes {
            if !stored(n, topic, content_topic)
                .await
                .iter()
                .any(|h| h == hash)
            {
                return false;
            }
        }
        true
    })
    .await;
    if everywhere.is_err() {
        let mut held = Vec::new();
        for n in nodes {
            held.push(stored(n, topic, content_topic).await);
        }
        panic!("both nodes store {hash}; they hold {held:?}");
    }
}

/// What js-waku found in the tree: only fleet nodes, each with its cluster and an address js-waku
/// can dial (ws); returns their peer ids.
fn check_discovered(result: &serde_json::Value, nodes: [&TestNode; 2]) -> Vec<String> {
    let ours = nodes.map(|n| n.handle.peer_id().to_string());
    let discovered = result["discovered"].as_array().expect("discovered nodes");
    assert!(!discovered.is_empty(), "js-waku found nothing: {result}");
    let mut ids = Vec::new();
    for node in discovered {
        let id = node["peerId"].as_str().unwrap().to_owned();
        assert!(ours.contains(&id), "a node not in the tree: {node}");
        assert_eq!(node["clusterId"], 1, "{node}");
        // What the ENR's waku2 flags tell js-waku these nodes serve.
        assert_eq!(
            node["waku2"],
            serde_json::json!({"relay": true, "store": true, "filter": true, "lightPush": true}),
            "{node}"
        );
        assert!(
            node["multiaddrs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m.as_str().is_some_and(|m| m.contains("/ws/"))),
            "a WebSocket address in the ENR: {node}"
        );
        ids.push(id);
    }
    ids
}

/// js-waku's light push went through: at least one node took it. js-waku pushes to up to two
/// peers; when the first has relayed the message to the second before the second push arrives,
/// the second answers that it was relayed already (as nwaku does), which js-waku counts as a
/// failure of that peer only.
fn check_pushed(result: &serde_json::Value) {
    let successes = result["successes"].as_array().unwrap();
    let failures = result["failures"].as_array().unwrap();
    assert!(!successes.is_empty(), "a node took the push: {result}");
    assert!(
        failures.is_empty() || successes.len() + failures.len() == 2,
        "a push fails only as the second of two: {result}"
    );
}

/// What a js-waku client that bootstrapped from the tree of `nodes` reports: it found only
/// those nodes, connected to one it found, and light pushed a message every node then stores.
async fn check_bootstrapped(
    result: &serde_json::Value,
    nodes: [&TestNode; 2],
    topic: &str,
    content_topic: &str,
) {
    let found = check_discovered(result, nodes);
    let connected = result["connected"].as_array().unwrap();
    assert!(
        connected
            .iter()
            .any(|c| found.iter().any(|f| c.as_str() == Some(f.as_str()))),
        "js-waku connected to a node it found: {result}"
    );
    check_pushed(result);
    let hash = result["hash"].as_str().unwrap();
    stored_everywhere(&nodes, topic, content_topic, hash).await;
}

/// js-waku's own DNS discovery reads a tree `roost-fleet dns` signed: `DnsNodeDiscovery` of
/// `@waku/discovery` (the walker and verifier behind `wakuDnsDiscovery`) verifies the root
/// against the URL's key and every record against its hash, and yields the Roost nodes' ENRs;
/// js-waku dials the addresses they carry (nothing else is given) and light pushes a message
/// both nodes then store. Its default DNS client asks public DoH servers, which cannot see a
/// zone on loopback: the script hands it one backed by Node's resolver pointed at the loopback
/// server, through the parameter js-waku has for that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_waku_in_node_bootstraps_from_the_tree() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, url, name_server, _server) = two_nodes_in_a_served_tree(dir.path()).await;
    let content_topic = "/roost-dns/1/js/proto";
    let topic = crate::lightpush::autoshard(content_topic);
    a.wait_for_mesh(&topic, 1).await;
    b.wait_for_mesh(&topic, 1).await;

    let js = crate::js::Js::start(
        "dns-discovery",
        serde_json::json!({
            "enrTree": url.to_string(),
            "nameServer": name_server.0.to_string(),
            "contentTopic": content_topic,
        }),
        &[],
    );
    let (_js, result) = js.event("result").await;
    println!("js-waku: {result}");
    check_bootstrapped(&result, [&a, &b], &topic, content_topic).await;
}

/// A DoH server in the JSON API shape js-waku's default DNS client (`dns-over-http-resolver`)
/// reads, as Cloudflare's and Google's answer it: `GET /resolve?name=<fqdn>&type=TXT` gives
/// `{"Status": 0, "Answer": [{"name", "type": 16, "TTL", "data": "\"<text>\""}]}`, with each
/// record's character-strings joined. It answers by asking the loopback DNS server through
/// hickory's resolver (the public DoH servers cannot see a zone on loopback), over plain HTTP,
/// with the CORS header a page on another origin needs.
struct DohJsonServer {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl DohJsonServer {
    async fn start(name_server: NameServer) -> DohJsonServer {
        use axum::{
            extract::{Query, State},
            http::header,
            response::IntoResponse,
            routing::get,
            Json, Router,
        };
        use roost_node::discovery::dns::tree::TxtSource as _;

        async fn resolve(
            State(resolver): State<Arc<Resolver>>,
            Query(query): Query<std::collections::HashMap<String, String>>,
        ) -> impl IntoResponse {
            let name = query.get("name").cloned().unwrap_or_default();
            let body = if query.get("type").map(String::as_str) != Some("TXT") {
                // NOTIMP: this server only has TXT records to give.
                serde_json::json!({"Status": 4})
            } else {
                match resolver.txt(&name).await {
                    Ok(answer) if answer.texts.is_empty() => serde_json::json!({"Status": 3}),
                    Ok(answer) => {
                        let ttl = answer.ttl.map(|t| t.as_secs()).unwrap_or(0);
                        let answers: Vec<_> = answer
                            .texts
                            .iter()
                            .map(|text| {
                                serde_json::json!({
                                    "name": format!("{}.", name.trim_end_matches('.')),
                                    "type": 16,
                                    "TTL": ttl,
                                    "data": format!("\"{text}\""),
                                })
                            })
                            .collect();
                        serde_json::json!({"Status": 0, "Answer": answers})
                    }
                    // SERVFAIL
                    Err(_) => serde_json::json!({"Status": 2}),
                }
            };
            (
                [
                    (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                    (header::CONTENT_TYPE, "application/dns-json"),
                ],
                Json(body),
            )
        }

        let resolver = Arc::new(Resolver::new(&[name_server]).unwrap());
        let app = Router::new()
            .route("/resolve", get(resolve))
            .with_state(resolver);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/resolve", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        DohJsonServer { url, task }
    }
}

impl Drop for DohJsonServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The same in Chromium: js-waku's DNS discovery in a web page, with its default DoH client
/// pointed at a DoH server on loopback (in front of the loopback DNS server), finds the Roost
/// nodes, dials their WebSocket addresses and light pushes a message both nodes store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_waku_in_chromium_bootstraps_from_the_tree() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, url, name_server, _server) = two_nodes_in_a_served_tree(dir.path()).await;
    let doh = DohJsonServer::start(name_server).await;
    let content_topic = "/roost-dns/1/browser/proto";
    let topic = crate::lightpush::autoshard(content_topic);
    a.wait_for_mesh(&topic, 1).await;
    b.wait_for_mesh(&topic, 1).await;

    let args = serde_json::json!({
        "enrTree": url.to_string(),
        "dohServer": doh.url,
        "contentTopic": content_topic,
        "timeoutMs": 45_000,
        "stepTimeoutMs": 20_000,
    });
    let js = crate::js::Js::spawn(&["browser/run.mjs", &args.to_string()], &[])
        .timeout(Duration::from_secs(50));
    let (js, result) = js.event("result").await;
    println!("js-waku in Chromium: {result}\n{}", js.logs());
    assert!(
        result["userAgent"]
            .as_str()
            .is_some_and(|a| a.contains("HeadlessChrome")),
        "a browser: {result}"
    );
    check_bootstrapped(&result, [&a, &b], &topic, content_topic).await;
}
