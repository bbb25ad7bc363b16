//! Running a whole fleet on this machine (`roost-fleet up --local`): every host becomes a `roost`
//! process on 127.0.0.1 with free ports and its own data dir under `DIR/<host>/`, started in
//! dependency order (rendezvous points, then boot nodes, then the rest), and `DIR/fleet.json`
//! lists what runs where. `down` stops it; `stop-node`/`start-node` stop and restart one node
//! on the same identity and ports.
//!
//! With `--dns` the nodes get no static peers: `up` serves the fleet's EIP-1459 tree (signed with
//! the operator key) from a DNS server on 127.0.0.1 and every node bootstraps from its
//! `enrtree://` URL alone. The tree needs the nodes' ENRs, which need their ports: the server's
//! sockets are bound first (so every node is told where to ask), the nodes started, their ENRs
//! read from `/debug/v1/info`, then the tree signed and served; the nodes retry until it answers.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Seek, SeekFrom},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};
use toml::{Table, Value};

use crate::{
    model::{Fleet, Host, Role},
    render,
};

/// Name of the state file in the fleet directory.
pub const STATE_FILE: &str = "fleet.json";
/// How long one node may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the fleet may take to become healthy and meshed.
const MESH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a node gets to drain on SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One running node, as `fleet.json` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeState {
    pub name: String,
    pub dc: String,
    pub roles: Vec<Role>,
    pub peer_id: String,
    /// Full TCP multiaddr with `/p2p/<peer id>`.
    pub tcp: String,
    /// Full WebSocket multiaddr with `/p2p/<peer id>`.
    pub ws: String,
    pub metrics_url: String,
    /// Base URL of the node's HTTP endpoint (`/health`, `/debug/v1/info`).
    pub http_url: String,
    pub pid: u32,
    pub data_dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// `fleet.json`: the running local fleet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FleetState {
    pub fleet: String,
    pub cluster_id: u16,
    pub shards: Vec<u16>,
    pub node_version: String,
    pub nodes: Vec<NodeState>,
    /// The DNS tree the nodes bootstrap from (`up --local --dns`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsState>,
}

/// A local fleet's DNS tree, as `fleet.json` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DnsState {
    /// `enrtree://<operator key>@<domain>`.
    pub url: String,
    /// Where the tree is served (UDP and TCP).
    pub name_server: std::net::SocketAddr,
    pub seq: u64,
    pub zone_file: PathBuf,
    pub records_file: PathBuf,
    /// The `roost-fleet up` process serving it (`down` stops it too).
    pub server_pid: u32,
}

/// `up --local --dns`: serve the fleet's tree on loopback instead of giving nodes static peers.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    /// The tree's domain.
    pub domain: String,
    /// The server's port on 127.0.0.1 (UDP and TCP); a free one when `None`.
    pub port: Option<u16>,
}

/// How the nodes find each other.
enum Bootstrap {
    /// Every boot node and rendezvous point already running, as static peers.
    Static,
    /// Only this tree, through this name server.
    Dns {
        url: String,
        name_server: std::net::SocketAddr,
    },
}

impl FleetState {
    pub fn load(dir: &Path) -> anyhow::Result<FleetState> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}; is a fleet running there (`roost-fleet up --local --dir ...`)?",
                path.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a fleet state file", path.display()))
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Reports progress while the fleet starts (a progress bar on a terminal, nothing otherwise).
pub trait Progress {
    fn step(&self, message: String);
    fn done(&self, message: String);
}

/// Progress that prints nothing.
pub struct Quiet;
impl Progress for Quiet {
    fn step(&self, _: String) {}
    fn done(&self, _: String) {}
}

/// Where the `roost` binary is: `--roost-bin`, else beside this executable, else on `PATH`.
pub fn find_roost_bin(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(path) = explicit {
        return path;
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            for candidate in [dir.join("roost"), dir.join("..").join("roost")] {
                if candidate.is_file() {
                    return candidate;
                }
            }
        }
    }
    PathBuf::from("roost")
}

fn start_order(fleet: &Fleet) -> Vec<&Host> {
    let rank = |h: &Host| {
        if h.roles.contains(&Role::Rendezvous) {
            0
        } else if h.roles.contains(&Role::Boot) {
            1
        } else {
            2
        }
    };
    let mut hosts: Vec<&Host> = fleet.hosts.iter().collect();
    hosts.sort_by_key(|h| rank(h));
    hosts
}

fn set(table: &mut Table, section: &str, key: &str, value: Value) {
    let entry = table
        .entry(section.to_owned())
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(t) = entry {
        t.insert(key.to_owned(), value);
    }
}

/// The operator key a local fleet's attestations are signed with.
#[derive(Debug, Clone)]
pub enum Operator {
    /// A development file key created in `DIR/operator/` (the default).
    Dev,
    /// An existing operator profile (`roost operator init`), e.g. a SoftHSM2 token; its PIN
    /// comes from `ROOST_PIN` as for `roost operator attest`.
    Profile(PathBuf),
    /// No attestations: nodes claim no fleet membership.
    None,
}

/// Makes sure an operator profile exists and returns (profile, public key).
fn operator_profile(
    operator: &Operator,
    dir: &Path,
    roost_bin: &Path,
) -> anyhow::Result<Option<(PathBuf, String)>> {
    let profile = match operator {
        Operator::None => return Ok(None),
        Operator::Profile(p) => p.clone(),
        Operator::Dev => {
            let op_dir = dir.join("operator");
            std::fs::create_dir_all(&op_dir)?;
            let profile = op_dir.join("roost-operator.toml");
            if !profile.exists() {
                run_roost(
                    roost_bin,
                    &["operator", "init", "--backend", "file", "--profile"],
                    &[&profile],
                )?;
            }
            profile
        }
    };
    let key = run_roost(roost_bin, &["operator", "pubkey", "--profile"], &[&profile])?;
    Ok(Some((profile, key.trim().to_owned())))
}

/// Runs `roost <args> <paths>` and returns its stdout, or its one-line error.
fn run_roost(roost_bin: &Path, args: &[&str], paths: &[&Path]) -> anyhow::Result<String> {
    let mut cmd = Command::new(roost_bin);
    cmd.args(args).args(paths);
    for (key, _) in std::env::vars() {
        if key.starts_with("ROOST_") && key != "ROOST_PIN" && key != "ROOST_PAIRING_PASSWORD" {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", roost_bin.display()))?;
    if !out.status.success() {
        bail!(
            "`roost {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the node's key (so its PeerId is known before it starts) and an attestation for it.
fn attest(
    fleet: &Fleet,
    host: &Host,
    node_dir: &Path,
    profile: &Path,
    roost_bin: &Path,
) -> anyhow::Result<PathBuf> {
    let data = node_dir.join("data");
    std::fs::create_dir_all(&data)?;
    roost_node::identity::load_or_create(&data)?;
    let out = node_dir.join("node.attestation");
    let roles = render::attestation_roles(&host.roles).join(",");
    let data_arg = data.display().to_string();
    let out_arg = out.display().to_string();
    run_roost(
        roost_bin,
        &[
            "operator",
            "attest",
            "--node",
            &data_arg,
            "--fleet",
            fleet.name(),
            "--roles",
            &roles,
            "--valid",
            &fleet.fleet.attestation_validity,
            "--out",
            &out_arg,
            "--profile",
        ],
        &[profile],
    )?;
    Ok(out)
}

/// The node config of `host` adjusted for this machine.
fn local_table(
    fleet: &Fleet,
    host: &Host,
    node_dir: &Path,
    started: &[NodeState],
    attestation: Option<(&Path, &str)>,
    bootstrap: &Bootstrap,
) -> anyhow::Result<Table> {
    let mut table = render::node_table(fleet, host)?;
    if let Some((file, key)) = attestation {
        let mut trusted: Vec<Value> = vec![Value::String(key.to_owned())];
        trusted.extend(
            fleet
                .fleet
                .trusted_operator_keys
                .iter()
                .cloned()
                .map(Value::String),
        );
        set(
            &mut table,
            "operator",
            "attestation",
            Value::String(file.display().to_string()),
        );
        set(
            &mut table,
            "operator",
            "trusted_keys",
            Value::Array(trusted),
        );
    }
    set(
        &mut table,
        "node",
        "data_dir",
        Value::String(node_dir.join("data").display().to_string()),
    );
    set(
        &mut table,
        "network",
        "listen_ip",
        Value::String("127.0.0.1".into()),
    );
    set(&mut table, "network", "tcp_port", Value::Integer(0));
    set(&mut table, "network", "ws_port", Value::Integer(0));
    set(
        &mut table,
        "network",
        "external_addresses",
        Value::Array(vec![]),
    );
    set(
        &mut table,
        "http",
        "address",
        Value::String("127.0.0.1:0".into()),
    );
    // Several nodes share this machine: none may take the REST API's fixed port.
    set(
        &mut table,
        "rest",
        "address",
        Value::String("127.0.0.1:0".into()),
    );
    let (boots, points): (Vec<Value>, Vec<Value>) = match bootstrap {
        // Static peers: every boot node and rendezvous point already running, so the fleet is
        // connected even before rendezvous discovery has run.
        Bootstrap::Static => (
            started
                .iter()
                .filter(|n| {
                    n.roles.contains(&Role::Boot) || fleet.fleet.rendezvous_points.contains(&n.name)
                })
                .map(|n| Value::String(n.tcp.clone()))
                .collect(),
            started
                .iter()
                .filter(|n| fleet.fleet.rendezvous_points.contains(&n.name))
                .map(|n| Value::String(n.tcp.clone()))
                .collect(),
        ),
        // No address at all but the tree's: the nodes find each other through DNS or not at all.
        Bootstrap::Dns { url, name_server } => {
            set(
                &mut table,
                "discovery",
                "dns_urls",
                Value::Array(vec![Value::String(url.clone())]),
            );
            set(
                &mut table,
                "discovery",
                "dns_name_servers",
                Value::Array(vec![Value::String(name_server.to_string())]),
            );
            (Vec::new(), Vec::new())
        }
    };
    set(&mut table, "network", "peers", Value::Array(boots));
    if roost_node::config::Schema::get()
        .keys
        .contains_key("rendezvous.points")
    {
        set(&mut table, "rendezvous", "points", Value::Array(points));
    }
    Ok(table)
}

/// Starts every node of `fleet` under `dir` and waits until the fleet is healthy and meshed.
pub async fn up(
    fleet: &Fleet,
    dir: &Path,
    roost_bin: &Path,
    operator: &Operator,
    progress: &dyn Progress,
) -> anyhow::Result<FleetState> {
    up_with(fleet, dir, roost_bin, operator, None, progress)
        .await
        .map(|(state, _)| state)
}

/// The DNS server of `up --local --dns`: it serves the tree until shut down or dropped.
pub type DnsServer = hickory_server::Server<hickory_server::zone_handler::Catalog>;

/// [`up`], optionally bootstrapping the nodes from a DNS tree served on loopback; the server
/// is returned to the caller, who keeps it running as long as the fleet should find it.
pub async fn up_with(
    fleet: &Fleet,
    dir: &Path,
    roost_bin: &Path,
    operator: &Operator,
    dns: Option<&DnsOptions>,
    progress: &dyn Progress,
) -> anyhow::Result<(FleetState, Option<DnsServer>)> {
    let result = start_all(fleet, dir, roost_bin, operator, dns, progress).await;
    if result.is_err() && dir.join(STATE_FILE).exists() {
        // Do not leave half a fleet running; the logs stay for the post-mortem.
        let _ = down(dir).await;
    }
    result
}

async fn start_all(
    fleet: &Fleet,
    dir: &Path,
    roost_bin: &Path,
    operator: &Operator,
    dns: Option<&DnsOptions>,
    progress: &dyn Progress,
) -> anyhow::Result<(FleetState, Option<DnsServer>)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Ok(existing) = FleetState::load(dir) {
        if existing.nodes.iter().any(|n| is_running(n.pid)) {
            bail!(
                "fleet `{}` is already running in {}; stop it with `roost-fleet down --dir {}`",
                existing.fleet,
                dir.display(),
                dir.display()
            );
        }
    }
    let mut state = FleetState {
        fleet: fleet.name().to_owned(),
        cluster_id: fleet.fleet.cluster_id,
        shards: fleet.fleet.shards.clone(),
        node_version: fleet.fleet.node_version.clone(),
        nodes: Vec::new(),
        dns: None,
    };
    let profile = operator_profile(operator, dir, roost_bin)?;
    // The tree's URL (the operator key and the domain) and the server's sockets come first:
    // every node is told both before it starts.
    let mut listener = None;
    let bootstrap = match dns {
        None => Bootstrap::Static,
        Some(options) => {
            let Some((profile_path, _)) = &profile else {
                bail!("--dns signs the tree with the operator key: drop --no-attestations");
            };
            let key = roost_node::operator::profile::Profile::load(profile_path)?
                .public_key
                .secp256k1()
                .context(
                    "DNS trees are signed with secp256k1; the operator profile's key is Ed25519",
                )?;
            let url = roost_node::discovery::dns::TreeUrl::new(key, &options.domain)
                .map_err(|e| anyhow::anyhow!("--dns-domain: {e}"))?;
            let server = crate::dns::LocalServer::bind(options.port).await?;
            let name_server = server.address()?;
            listener = Some(server);
            Bootstrap::Dns {
                url: url.to_string(),
                name_server,
            }
        }
    };
    for host in start_order(fleet) {
        progress.step(format!("starting {}", host.name));
        let node_dir = dir.join(&host.name);
        std::fs::create_dir_all(&node_dir)?;
        let attestation = match &profile {
            Some((profile, key)) => Some((
                attest(fleet, host, &node_dir, profile, roost_bin)?,
                key.clone(),
            )),
            None => None,
        };
        let table = local_table(
            fleet,
            host,
            &node_dir,
            &state.nodes,
            attestation.as_ref().map(|(f, k)| (f.as_path(), k.as_str())),
            &bootstrap,
        )?;
        let config_path = node_dir.join("roost.toml");
        std::fs::write(&config_path, toml::to_string(&table)?)?;
        let node = start_node(host, &node_dir, roost_bin).await?;
        // Pin the ports the node got, so a restart keeps its addresses.
        pin_ports(&config_path, &node)?;
        state.nodes.push(node);
        state.save(dir)?;
    }
    let mut server = None;
    if let (Some(options), Some(listener), Some((profile_path, _))) = (dns, listener, &profile) {
        progress.step(format!("publishing the DNS tree at {}", options.domain));
        let enrs = crate::dns::fetch_enrs(&crate::check::targets_from_state(&state)).await?;
        let out = dir.join("dns");
        let published = tokio::task::block_in_place(|| {
            crate::dns::publish(&options.domain, &enrs, &[], profile_path, &out)
        })?;
        let name_server = listener.address()?;
        server = Some(listener.serve(&options.domain, &published.zone_file)?);
        state.dns = Some(DnsState {
            url: published.url,
            name_server,
            seq: published.seq,
            zone_file: published.zone_file,
            records_file: published.records_file,
            server_pid: std::process::id(),
        });
        state.save(dir)?;
    }
    progress.step("waiting until every node is healthy and meshed".into());
    wait_meshed(&state).await?;
    state.save(dir)?;
    write_scrape_targets(&state, dir)?;
    progress.done(format!(
        "fleet {} is up: {} nodes",
        state.fleet,
        state.nodes.len()
    ));
    Ok((state, server))
}

/// Name of the Prometheus `file_sd` targets file a local fleet writes beside `fleet.json`.
pub const SCRAPE_TARGETS_FILE: &str = "prometheus-targets.json";

/// Writes `DIR/prometheus-targets.json` so a Prometheus can scrape the local fleet with the same
/// labels as a deployed one.
pub fn write_scrape_targets(state: &FleetState, dir: &Path) -> anyhow::Result<()> {
    let targets: Vec<render::ScrapeTarget> = state
        .nodes
        .iter()
        .map(|n| {
            render::ScrapeTarget::new(
                &state.fleet,
                &n.name,
                &n.dc,
                &n.roles,
                n.http_url.trim_start_matches("http://"),
            )
        })
        .collect();
    std::fs::write(
        dir.join(SCRAPE_TARGETS_FILE),
        serde_json::to_string_pretty(&targets)?,
    )?;
    Ok(())
}

/// Starts one node from its existing `DIR/<host>/roost.toml`.
async fn start_node(host: &Host, node_dir: &Path, roost_bin: &Path) -> anyhow::Result<NodeState> {
    let config = node_dir.join("roost.toml");
    let log = node_dir.join("roost.log");
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    let offset = log_file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(roost_bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--log-format")
        .arg("json")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        // Own process group: Ctrl-C on roost-fleet must not take the fleet down with it.
        .process_group(0);
    for (key, _) in std::env::vars() {
        if key.starts_with("ROOST_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot run {} (build it with `cargo build --bin roost` or pass --roost-bin)",
            roost_bin.display()
        )
    })?;
    let pid = child.id();
    let http = wait_for_start(&log, offset, &mut child)
        .await
        .with_context(|| format!("node {} did not start; see {}", host.name, log.display()))?;
    // The child runs on after we return (dropping a Child neither kills nor waits for it);
    // init reaps it once this tool has exited.
    drop(child);
    let http_url = format!("http://{http}");
    let info: serde_json::Value = reqwest::get(format!("{http_url}/debug/v1/info"))
        .await?
        .json()
        .await?;
    let first = |key: &str| -> String {
        info[key]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_owned()
    };
    Ok(NodeState {
        name: host.name.clone(),
        dc: host.dc.clone(),
        roles: host.roles.clone(),
        peer_id: info["peer_id"].as_str().unwrap_or("").to_owned(),
        tcp: first("tcp_addresses"),
        ws: first("ws_addresses"),
        metrics_url: format!("{http_url}/metrics"),
        http_url,
        pid,
        data_dir: node_dir.join("data"),
        config,
        log,
    })
}

/// Follows the node's JSON log from `offset` until its start-up line names the HTTP address.
async fn wait_for_start(
    log: &Path,
    offset: u64,
    child: &mut std::process::Child,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut position = offset;
    let mut last_lines: Vec<String> = Vec::new();
    loop {
        let mut file = std::fs::File::open(log)?;
        file.seek(SeekFrom::Start(position))?;
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            if !line.ends_with('\n') {
                break;
            }
            position += line.len() as u64;
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                if json["message"] == "roost node started" {
                    if let Some(http) = json["http"].as_str() {
                        return Ok(http
                            .trim_start_matches("Some(")
                            .trim_end_matches(')')
                            .to_owned());
                    }
                }
            }
            last_lines.push(line.trim_end().to_owned());
            if last_lines.len() > 5 {
                last_lines.remove(0);
            }
            line.clear();
        }
        if let Some(status) = child.try_wait()? {
            bail!("roost exited with {status}: {}", last_lines.join(" | "));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("no start-up line within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn port_of(multiaddr: &str) -> Option<u16> {
    let addr: libp2p::Multiaddr = multiaddr.parse().ok()?;
    addr.iter().find_map(|p| match p {
        libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
        _ => None,
    })
}

fn pin_ports(config_path: &Path, node: &NodeState) -> anyhow::Result<()> {
    let mut table: Table = toml::from_str(&std::fs::read_to_string(config_path)?)?;
    if let Some(p) = port_of(&node.tcp) {
        set(&mut table, "network", "tcp_port", Value::Integer(p.into()));
    }
    if let Some(p) = port_of(&node.ws) {
        set(&mut table, "network", "ws_port", Value::Integer(p.into()));
    }
    let http = node.http_url.trim_start_matches("http://").to_owned();
    set(&mut table, "http", "address", Value::String(http));
    std::fs::write(config_path, toml::to_string(&table)?)?;
    Ok(())
}

/// Polls `/health` and `/debug/v1/info`-level status until every node is healthy and every
/// relay node has a mesh peer on every shard (when the fleet has more than one relay node).
pub async fn wait_meshed(state: &FleetState) -> anyhow::Result<()> {
    let relay_nodes = state
        .nodes
        .iter()
        .filter(|n| render::relays(&n.roles))
        .count();
    let deadline = Instant::now() + MESH_TIMEOUT;
    loop {
        let mut waiting = Vec::new();
        for node in &state.nodes {
            match node_health(node).await {
                Ok(h)
                    if h.ok
                        && (!render::relays(&node.roles) || relay_nodes < 2 || h.min_mesh >= 1) => {
                }
                Ok(h) => waiting.push(format!(
                    "{} (status {}, mesh {})",
                    node.name, h.status, h.min_mesh
                )),
                Err(e) => waiting.push(format!("{} ({e})", node.name)),
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "fleet not healthy and meshed after {MESH_TIMEOUT:?}: {}",
                waiting.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What `/health` says about a node.
#[derive(Debug, Clone)]
pub struct NodeHealth {
    pub ok: bool,
    pub status: String,
    pub peers: u64,
    /// Smallest mesh size over the node's shards.
    pub min_mesh: u64,
    pub body: serde_json::Value,
}

pub async fn node_health(node: &NodeState) -> anyhow::Result<NodeHealth> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let response = client
        .get(format!("{}/health", node.http_url))
        .send()
        .await?;
    let body: serde_json::Value = response.json().await?;
    let status = body["status"].as_str().unwrap_or("unknown").to_owned();
    let peers = body["peers"].as_u64().unwrap_or(0);
    let mesh = client
        .get(format!("{}/debug/v1/peers", node.http_url))
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?;
    let min_mesh = mesh["shards"]
        .as_array()
        .map(|shards| {
            shards
                .iter()
                .map(|s| s["mesh_peers"].as_u64().unwrap_or(0))
                .min()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    Ok(NodeHealth {
        ok: status == "ok",
        status,
        peers,
        min_mesh,
        body,
    })
}

/// `true` if `pid` is a live `roost` process (guards against pid reuse).
pub fn is_running(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmd| {
            let first = cmd.split(|b| *b == 0).next().unwrap_or(&[]);
            String::from_utf8_lossy(first).ends_with("roost")
        })
        .unwrap_or(false)
        && !is_zombie(pid)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(true)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Stops one node: SIGTERM, then SIGKILL if it has not exited after the drain timeout.
pub async fn stop_pid(pid: u32, kill_now: bool) -> bool {
    if !is_running(pid) {
        return false;
    }
    signal(pid, if kill_now { "KILL" } else { "TERM" });
    let deadline = Instant::now() + STOP_TIMEOUT;
    while is_running(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if is_running(pid) {
        signal(pid, "KILL");
        while is_running(pid) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    true
}

/// `true` if `pid` is a live `roost-fleet` process other than this one.
fn is_fleet_tool(pid: u32) -> bool {
    pid != std::process::id()
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|cmd| {
                let first = cmd.split(|b| *b == 0).next().unwrap_or(&[]);
                String::from_utf8_lossy(first).ends_with("roost-fleet")
            })
            .unwrap_or(false)
        && !is_zombie(pid)
}

/// Stops every node of the fleet in `dir`, and the `up` serving its DNS tree; removes
/// `fleet.json` (data and logs stay).
pub async fn down(dir: &Path) -> anyhow::Result<usize> {
    let state = FleetState::load(dir)?;
    if let Some(dns) = &state.dns {
        if is_fleet_tool(dns.server_pid) {
            signal(dns.server_pid, "TERM");
            let deadline = Instant::now() + STOP_TIMEOUT;
            while is_fleet_tool(dns.server_pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let stops = state.nodes.iter().map(|n| stop_pid(n.pid, false));
    let stopped = futures::future::join_all(stops)
        .await
        .into_iter()
        .filter(|s| *s)
        .count();
    std::fs::remove_file(dir.join(STATE_FILE))?;
    Ok(stopped)
}

/// Stops one node of a local fleet (`kill` = SIGKILL, as a crash would).
pub async fn stop_node(dir: &Path, name: &str, kill: bool) -> anyhow::Result<()> {
    let state = FleetState::load(dir)?;
    let node = state
        .node(name)
        .with_context(|| format!("no node `{name}` in {}", dir.display()))?;
    if !stop_pid(node.pid, kill).await {
        bail!("node `{name}` (pid {}) is not running", node.pid);
    }
    Ok(())
}

/// Restarts a stopped node of a local fleet with its identity, data and ports.
pub async fn start_node_again(
    dir: &Path,
    name: &str,
    roost_bin: &Path,
) -> anyhow::Result<NodeState> {
    let mut state = FleetState::load(dir)?;
    let index = state
        .nodes
        .iter()
        .position(|n| n.name == name)
        .with_context(|| format!("no node `{name}` in {}", dir.display()))?;
    let old = &state.nodes[index];
    if is_running(old.pid) {
        bail!("node `{name}` is still running (pid {})", old.pid);
    }
    let host = Host {
        name: old.name.clone(),
        address: [127, 0, 0, 1].into(),
        dc: old.dc.clone(),
        roles: old.roles.clone(),
        peer_id: Some(old.peer_id.clone()),
        ports: Default::default(),
        node: Table::new(),
    };
    let node = start_node(&host, &dir.join(name), roost_bin).await?;
    state.nodes[index] = node.clone();
    state.save(dir)?;
    write_scrape_targets(&state, dir)?;
    Ok(node)
}

/// Node names by role, for reports.
pub fn by_role(state: &FleetState) -> BTreeMap<Role, Vec<String>> {
    let mut map: BTreeMap<Role, Vec<String>> = BTreeMap::new();
    for n in &state.nodes {
        for r in &n.roles {
            map.entry(*r).or_default().push(n.name.clone());
        }
    }
    map
}
