//! `roost-fleet check`: connect to every node of a fleet and report what works — reachability,
//! version, attestation, peers, the relay connectivity matrix between fleet nodes, store
//! answering, a canary message published at one node and found by store query on every store
//! node, the rendezvous points listing the fleet, and store divergence (the messages of the last
//! hour each store node holds against the union of all of them). Any failure makes the exit code
//! non-zero; warnings (messages missing that may still be in flight) do not.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use libp2p::Multiaddr;
use prost::Message as _;
use roost_node::{
    client::Client,
    lightpush::{self, Version},
    message::{now_nanos, MessageHash, ShardTopic, WakuMessage},
    store::rpc::{StoreQueryRequest, StoreQueryResponse},
    swarm::ReqResProtocol,
};
use serde::Serialize;

use crate::{
    local::FleetState,
    model::{Fleet, Role},
    render,
};

/// How long every store node gets to show the canary.
const CANARY_TIMEOUT: Duration = Duration::from_secs(20);
/// HTTP timeout per request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// The content topic of canary messages.
pub const CANARY_TOPIC: &str = "/roost-fleet/1/canary/proto";
/// How far back store divergence compares the store nodes' messages (by message timestamp).
pub const DIVERGENCE_WINDOW: Duration = Duration::from_secs(3600);
/// Messages newer than this may still be in flight to a store node: missing them is a warning,
/// missing older ones a failure.
pub const DIVERGENCE_GRACE: Duration = Duration::from_secs(120);
/// Page size of the divergence queries (the store's maximum).
const DIVERGENCE_PAGE_SIZE: u64 = 100;
/// At most this many pages per node and time range (200,000 message hashes).
const DIVERGENCE_MAX_PAGES: usize = 2000;
/// A throttled divergence query (429) is retried this many times per node, a second apart.
const DIVERGENCE_RETRIES: usize = 120;

/// A node to check: where its HTTP endpoint is and what it should be.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub roles: Vec<Role>,
    pub http_url: String,
}

/// Targets of a fleet running locally (`fleet.json`).
pub fn targets_from_state(state: &FleetState) -> Vec<Target> {
    state
        .nodes
        .iter()
        .map(|n| Target {
            name: n.name.clone(),
            roles: n.roles.clone(),
            http_url: n.http_url.clone(),
        })
        .collect()
}

/// Targets of a deployed fleet: each host's address (or its `ansible_host` from an inventory)
/// and HTTP port.
pub fn targets_from_fleet(fleet: &Fleet, addresses: &BTreeMap<String, String>) -> Vec<Target> {
    fleet
        .hosts
        .iter()
        .map(|h| {
            let address = addresses
                .get(&h.name)
                .cloned()
                .unwrap_or_else(|| h.address.to_string());
            Target {
                name: h.name.clone(),
                roles: h.roles.clone(),
                http_url: format!("http://{address}:{}", fleet.ports_of(h).http),
            }
        })
        .collect()
}

/// Reads `ansible_host` of each host from a rendered inventory (`hosts.yml`).
pub fn inventory_addresses(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(value) = trimmed.strip_prefix("ansible_host:") {
            if let Some(host) = current.take() {
                map.insert(host, value.trim().trim_matches('"').to_owned());
            }
        } else if let Some(name) = trimmed.strip_suffix(':') {
            if name.contains('.') {
                current = Some(name.to_owned());
            }
        }
    }
    map
}

/// What the check found on one node.
#[derive(Debug, Clone, Serialize, Default)]
pub struct NodeReport {
    pub name: String,
    pub roles: Vec<Role>,
    pub reachable: bool,
    pub error: Option<String>,
    pub status: Option<String>,
    pub version: Option<String>,
    pub version_ok: bool,
    pub peer_id: Option<String>,
    pub tcp: Option<String>,
    pub peers: u64,
    /// Days until the node's attestation expires; `None` when it has none.
    pub attestation_days: Option<f64>,
    pub attestation_ok: Option<bool>,
    /// Fleet nodes this one has a connection to.
    pub fleet_links: Vec<String>,
    pub store_ok: Option<bool>,
    pub canary_found: Option<bool>,
    pub rendezvous_ok: Option<bool>,
    /// Store nodes: how many of the fleet's messages of the divergence window this node holds.
    pub store_held: Option<u64>,
    /// Store nodes: the union of the messages every store node holds in that window.
    pub store_union: Option<u64>,
    /// Store nodes: messages of the union this node does not hold (`union - held`).
    pub store_missing: Option<u64>,
    /// Of those, the ones older than the grace period (a failure).
    pub store_missing_settled: Option<u64>,
    /// Why this node's messages could not be collected (it is left out of the union).
    pub divergence_error: Option<String>,
}

/// The canary's journey.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryReport {
    pub published_at: String,
    pub hash: String,
    pub relay_peers: Option<u32>,
    pub error: Option<String>,
    pub seconds_to_all_stores: Option<f64>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub fleet: String,
    pub expected_version: String,
    pub nodes: Vec<NodeReport>,
    /// `matrix[i][j]`: node i has a connection to node j.
    pub matrix: Vec<Vec<bool>>,
    pub relay_graph_connected: bool,
    pub canary: Option<CanaryReport>,
    pub divergence: Option<DivergenceReport>,
    pub failures: Vec<String>,
    /// Findings that do not fail the check (messages missing that may still be in flight).
    pub warnings: Vec<String>,
}

/// Store divergence: every store node's messages of the last hour against the union.
#[derive(Debug, Clone, Serialize)]
pub struct DivergenceReport {
    /// The compared range of message timestamps, Unix nanoseconds (start inclusive, end
    /// exclusive).
    pub from_ns: i64,
    pub until_ns: i64,
    /// Messages with a timestamp before this (`until - grace`) must be on every store node.
    pub settled_before_ns: i64,
    pub grace_seconds: u64,
    /// Distinct message hashes over all store nodes collected.
    pub union: u64,
    /// Of those, the ones older than the grace period.
    pub union_settled: u64,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// What the fleet says nodes should look like.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub fleet: String,
    pub cluster_id: u16,
    pub shards: Vec<u16>,
    pub node_version: String,
    pub requires_attestation: bool,
    /// Store nodes missing messages older than this fail the divergence check.
    pub divergence_grace: Duration,
}

impl Expectations {
    pub fn of(fleet: &Fleet) -> Self {
        Expectations {
            fleet: fleet.name().to_owned(),
            cluster_id: fleet.fleet.cluster_id,
            shards: fleet.fleet.shards.clone(),
            node_version: fleet.fleet.node_version.clone(),
            requires_attestation: !fleet.fleet.trusted_operator_keys.is_empty(),
            divergence_grace: DIVERGENCE_GRACE,
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<serde_json::Value, String> {
    let response = client.get(url).send().await.map_err(|e| e.to_string())?;
    response.json().await.map_err(|e| e.to_string())
}

/// The value of a gauge/counter without labels in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        (series == name || series.starts_with(&format!("{name}{{"))).then(|| value.parse().ok())?
    })
}

async fn probe(client: &reqwest::Client, target: &Target, expect: &Expectations) -> NodeReport {
    let mut report = NodeReport {
        name: target.name.clone(),
        roles: target.roles.clone(),
        ..Default::default()
    };
    let health = match get_json(client, &format!("{}/health", target.http_url)).await {
        Ok(h) => h,
        Err(e) => {
            report.error = Some(format!("unreachable: {e}"));
            return report;
        }
    };
    report.reachable = true;
    report.status = health["status"].as_str().map(str::to_owned);
    report.peers = health["peers"].as_u64().unwrap_or(0);
    match get_json(client, &format!("{}/debug/v1/info", target.http_url)).await {
        Ok(info) => {
            report.version = info["version"].as_str().map(str::to_owned);
            report.version_ok = report.version.as_deref() == Some(expect.node_version.as_str());
            report.peer_id = info["peer_id"].as_str().map(str::to_owned);
            report.tcp = info["tcp_addresses"]
                .as_array()
                .and_then(|a| {
                    // Prefer a routable address over loopback when a node lists both.
                    a.iter()
                        .filter_map(|v| v.as_str())
                        .find(|s| !s.starts_with("/ip4/127."))
                        .or_else(|| a.first().and_then(|v| v.as_str()))
                })
                .map(str::to_owned);
        }
        Err(e) => report.error = Some(format!("/debug/v1/info: {e}")),
    }
    if let Ok(text) = client
        .get(format!("{}/metrics", target.http_url))
        .send()
        .await
        .and_then(|r| r.error_for_status())
    {
        if let Ok(text) = text.text().await {
            report.attestation_days =
                metric(&text, "roost_operator_attestation_expiry_seconds").map(|s| s / 86_400.0);
        }
    }
    report.attestation_ok = match (expect.requires_attestation, report.attestation_days) {
        (_, Some(days)) => Some(days > 0.0),
        (true, None) => Some(false),
        (false, None) => None,
    };
    report
}

/// Runs every check against `targets`.
pub async fn check(targets: &[Target], expect: &Expectations) -> CheckReport {
    let client = http();
    let mut nodes = Vec::new();
    for t in targets {
        nodes.push(probe(&client, t, expect).await);
    }
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    for n in &nodes {
        if !n.reachable {
            failures.push(format!(
                "{}: {}",
                n.name,
                n.error.clone().unwrap_or_default()
            ));
            continue;
        }
        if n.status.as_deref() != Some("ok") {
            failures.push(format!(
                "{}: health is {}",
                n.name,
                n.status.clone().unwrap_or_default()
            ));
        }
        if !n.version_ok {
            failures.push(format!(
                "{}: runs version {} but the fleet expects {}",
                n.name,
                n.version.clone().unwrap_or_default(),
                expect.node_version
            ));
        }
        if n.attestation_ok == Some(false) {
            failures.push(format!("{}: no valid attestation", n.name));
        }
    }

    // Connectivity matrix from each node's view of its connections.
    let ids: Vec<Option<String>> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    let mut matrix = vec![vec![false; nodes.len()]; nodes.len()];
    for (i, t) in targets.iter().enumerate() {
        if !nodes[i].reachable {
            continue;
        }
        if let Ok(peers) = get_json(&client, &format!("{}/debug/v1/peers", t.http_url)).await {
            let connected: BTreeSet<String> = peers["connected_peers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            for (j, id) in ids.iter().enumerate() {
                if let Some(id) = id {
                    if connected.contains(id) {
                        matrix[i][j] = true;
                        let linked = nodes[j].name.clone();
                        nodes[i].fleet_links.push(linked);
                    }
                }
            }
        }
    }
    // Unreachable nodes are already failures; connectivity is judged among the rest.
    let relay_nodes: Vec<usize> = (0..nodes.len())
        .filter(|i| nodes[*i].reachable && render::relays(&nodes[*i].roles))
        .collect();
    let relay_graph_connected = graph_connected(&relay_nodes, &matrix);
    if !relay_graph_connected {
        failures.push("the relay nodes do not form one connected mesh (see the matrix)".into());
    }
    for i in &relay_nodes {
        if nodes[*i].reachable
            && relay_nodes.len() > 1
            && !relay_nodes
                .iter()
                .any(|j| j != i && (matrix[*i][*j] || matrix[*j][*i]))
        {
            failures.push(format!(
                "{}: connected to no other fleet relay node",
                nodes[*i].name
            ));
        }
    }

    // Store answering, then the canary, rendezvous and store divergence.
    let (canary, divergence) = match Client::start(expect.cluster_id).await {
        Ok(light) => {
            for n in nodes
                .iter_mut()
                .filter(|n| n.reachable && n.roles.contains(&Role::Store))
            {
                let ok = match store_address(n) {
                    Some(addr) => store_query(
                        &light,
                        &addr,
                        StoreQueryRequest {
                            request_id: Some("roost-fleet-check".into()),
                            include_data: false,
                            pubsub_topic: Some(
                                ShardTopic::new(
                                    expect.cluster_id,
                                    expect.shards.first().copied().unwrap_or(0),
                                )
                                .to_string(),
                            ),
                            content_topics: vec![CANARY_TOPIC.into()],
                            pagination_limit: Some(1),
                            ..Default::default()
                        },
                    )
                    .await
                    .map(|r| r.status_code == Some(200))
                    .unwrap_or(false),
                    None => false,
                };
                n.store_ok = Some(ok);
                if !ok {
                    failures.push(format!("{}: store does not answer queries", n.name));
                }
            }
            let report = canary(&light, &mut nodes, expect, &mut failures).await;
            rendezvous(&light, &client, targets, &mut nodes, expect, &mut failures).await;
            let divergence =
                divergence(&light, &mut nodes, expect, &mut failures, &mut warnings).await;
            light.stop().await;
            (Some(report), divergence)
        }
        Err(e) => {
            failures.push(format!(
                "cannot start a light client for store and canary checks: {e}"
            ));
            (None, None)
        }
    };

    CheckReport {
        fleet: expect.fleet.clone(),
        expected_version: expect.node_version.clone(),
        nodes,
        matrix,
        relay_graph_connected,
        canary,
        divergence,
        failures,
        warnings,
    }
}

fn store_address(n: &NodeReport) -> Option<Multiaddr> {
    n.tcp.as_ref()?.parse().ok()
}

async fn store_query(
    light: &Client,
    address: &Multiaddr,
    request: StoreQueryRequest,
) -> Result<StoreQueryResponse, String> {
    let bytes = light
        .request(ReqResProtocol::Store, address, request.encode_to_vec())
        .await
        .map_err(|e| e.to_string())?;
    StoreQueryResponse::decode_bytes(&bytes).map_err(|e| e.to_string())
}

/// Publishes a canary through a boot node's light push and waits until every store node has it.
async fn canary(
    light: &Client,
    nodes: &mut [NodeReport],
    expect: &Expectations,
    failures: &mut Vec<String>,
) -> CanaryReport {
    let pubsub_topic = ShardTopic::new(
        expect.cluster_id,
        expect.shards.first().copied().unwrap_or(0),
    )
    .to_string();
    let message = WakuMessage::new(
        CANARY_TOPIC,
        format!("canary {} {}", expect.fleet, now_nanos()).into_bytes(),
    );
    let hash = message.hash(&pubsub_topic);
    let mut report = CanaryReport {
        published_at: String::new(),
        hash: hash.to_hex(),
        relay_peers: None,
        error: None,
        seconds_to_all_stores: None,
    };
    let publisher = nodes
        .iter()
        .find(|n| n.reachable && n.roles.contains(&Role::Boot) && n.tcp.is_some());
    let Some(publisher) = publisher else {
        report.error = Some("no reachable boot node to publish through".into());
        failures.push("canary: no reachable boot node to publish through".into());
        return report;
    };
    report.published_at = publisher.name.clone();
    let address: Multiaddr = match publisher.tcp.as_deref().map(str::parse) {
        Some(Ok(a)) => a,
        _ => {
            report.error = Some("publisher address unreadable".into());
            failures.push("canary: publisher address unreadable".into());
            return report;
        }
    };
    let request = lightpush::encode_request(
        Version::V3,
        "roost-fleet-canary",
        Some(&pubsub_topic),
        &message,
    );
    let started = Instant::now();
    match light.request(Version::V3.reqres(), &address, request).await {
        Ok(bytes) => match lightpush::decode_response(Version::V3, &bytes) {
            Ok(reply) if reply.is_success() => report.relay_peers = reply.relay_peer_count,
            Ok(reply) => {
                let why = format!(
                    "light push refused: {} {}",
                    reply.status.0,
                    reply.description.unwrap_or_default()
                );
                failures.push(format!("canary: {why}"));
                report.error = Some(why);
                return report;
            }
            Err(e) => {
                failures.push(format!("canary: unreadable light push reply: {e}"));
                report.error = Some(e.to_string());
                return report;
            }
        },
        Err(e) => {
            failures.push(format!(
                "canary: light push to {} failed: {e}",
                publisher.name
            ));
            report.error = Some(e.to_string());
            return report;
        }
    }
    let stores: Vec<usize> = (0..nodes.len())
        .filter(|i| nodes[*i].reachable && nodes[*i].roles.contains(&Role::Store))
        .collect();
    let deadline = Instant::now() + CANARY_TIMEOUT;
    let mut pending: BTreeSet<usize> = stores.iter().copied().collect();
    while !pending.is_empty() && Instant::now() < deadline {
        for i in pending.clone() {
            let Some(addr) = store_address(&nodes[i]) else {
                continue;
            };
            if has_hash(light, &addr, &hash).await {
                nodes[i].canary_found = Some(true);
                pending.remove(&i);
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    for i in &pending {
        nodes[*i].canary_found = Some(false);
        failures.push(format!(
            "{}: the canary never reached this store node",
            nodes[*i].name
        ));
    }
    if pending.is_empty() {
        report.seconds_to_all_stores = Some(started.elapsed().as_secs_f64());
    }
    report
}

/// How long registrations get to show up at a rendezvous point.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(20);

/// Every rendezvous point must list, under `rs/<cluster>/<shard>` for every shard, each
/// reachable relay node whose config names that point.
async fn rendezvous(
    light: &Client,
    http: &reqwest::Client,
    targets: &[Target],
    nodes: &mut [NodeReport],
    expect: &Expectations,
    failures: &mut Vec<String>,
) {
    use roost_node::rendezvous::{client::read_discover_response, proto::discover_request};
    // Which points each relay node registers with, from its effective config.
    let mut registers_with: Vec<Vec<String>> = vec![Vec::new(); nodes.len()];
    for (i, t) in targets.iter().enumerate() {
        if !nodes[i].reachable || !render::relays(&nodes[i].roles) {
            continue;
        }
        if let Ok(config) = get_json(http, &format!("{}/debug/v1/config", t.http_url)).await {
            registers_with[i] = config["rendezvous"]["points"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
        }
    }
    let points: Vec<usize> = (0..nodes.len())
        .filter(|i| nodes[*i].reachable && nodes[*i].roles.contains(&Role::Rendezvous))
        .collect();
    for p in points {
        let (Some(point_id), Some(address)) = (nodes[p].peer_id.clone(), store_address(&nodes[p]))
        else {
            continue;
        };
        let expected: BTreeSet<String> = (0..nodes.len())
            .filter(|i| registers_with[*i].iter().any(|a| a.ends_with(&point_id)))
            .filter_map(|i| nodes[i].peer_id.clone())
            .collect();
        let deadline = Instant::now() + RENDEZVOUS_TIMEOUT;
        let mut missing: Vec<String>;
        loop {
            missing = Vec::new();
            for shard in &expect.shards {
                let namespace = format!("rs/{}/{shard}", expect.cluster_id);
                let mut listed = BTreeSet::new();
                let mut cookie = None;
                for _page in 0..100 {
                    let request = discover_request(Some(&namespace), Some(1000), cookie.clone());
                    let Ok(bytes) = light
                        .request(ReqResProtocol::Rendezvous, &address, request)
                        .await
                    else {
                        break;
                    };
                    let Ok((registrations, next)) = read_discover_response(&bytes) else {
                        break;
                    };
                    let done = registrations.is_empty() || next.is_none() || next == cookie;
                    listed.extend(
                        registrations
                            .into_iter()
                            .filter_map(|r| r.record.ok())
                            .map(|r| r.peer.to_string()),
                    );
                    cookie = next;
                    if done {
                        break;
                    }
                }
                for id in expected.difference(&listed) {
                    let name = nodes
                        .iter()
                        .find(|n| n.peer_id.as_deref() == Some(id))
                        .map(|n| n.name.clone())
                        .unwrap_or_else(|| id.clone());
                    missing.push(format!("{name} in {namespace}"));
                }
            }
            if missing.is_empty() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        nodes[p].rendezvous_ok = Some(missing.is_empty());
        if !missing.is_empty() {
            failures.push(format!(
                "{}: rendezvous does not list {}",
                nodes[p].name,
                missing.join(", ")
            ));
        }
    }
}

/// A set of message hashes as a store answers them.
type Hashes = BTreeSet<Vec<u8>>;

/// The message hashes a store node holds with timestamps in `[from, until)`: store v3 queries
/// without content filter, `include_data = false`, paged by cursor 100 at a time. A throttled
/// page (429) is asked again a second later.
async fn stored_hashes(
    light: &Client,
    address: &Multiaddr,
    from: i64,
    until: i64,
) -> Result<Hashes, String> {
    let mut hashes = BTreeSet::new();
    let mut cursor: Option<Vec<u8>> = None;
    let mut retries = 0;
    let mut pages = 0;
    loop {
        let request = StoreQueryRequest {
            request_id: Some("roost-fleet-divergence".into()),
            include_data: false,
            time_start: Some(from),
            time_end: Some(until),
            pagination_cursor: cursor.clone(),
            pagination_forward: true,
            pagination_limit: Some(DIVERGENCE_PAGE_SIZE),
            ..Default::default()
        };
        let response = store_query(light, address, request).await?;
        match response.status_code {
            Some(200) => {}
            Some(429) if retries < DIVERGENCE_RETRIES => {
                retries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            code => {
                return Err(format!(
                    "store query answered {} {}",
                    code.map_or_else(|| "no status".to_owned(), |c| c.to_string()),
                    response.status_desc.unwrap_or_default()
                ))
            }
        }
        hashes.extend(response.messages.into_iter().filter_map(|m| m.message_hash));
        pages += 1;
        match response.pagination_cursor {
            Some(next) if Some(&next) != cursor.as_ref() => cursor = Some(next),
            _ => return Ok(hashes),
        }
        if pages >= DIVERGENCE_MAX_PAGES {
            return Err(format!(
                "more than {} messages in the window; not compared",
                DIVERGENCE_MAX_PAGES as u64 * DIVERGENCE_PAGE_SIZE
            ));
        }
    }
}

/// Store divergence: every reachable store node's message hashes of the last
/// [`DIVERGENCE_WINDOW`] against the union of all of them. A node missing messages older than
/// the grace period fails the check; missing only newer ones (still in flight) is a warning. A
/// node whose hashes cannot be collected is a warning and stays out of the union.
async fn divergence(
    light: &Client,
    nodes: &mut [NodeReport],
    expect: &Expectations,
    failures: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<DivergenceReport> {
    let stores: Vec<usize> = (0..nodes.len())
        .filter(|i| nodes[*i].reachable && nodes[*i].roles.contains(&Role::Store))
        .collect();
    if stores.is_empty() {
        return None;
    }
    // One fixed range for every node, so a message published while the check runs does not
    // count as missing on the nodes asked first.
    let until = now_nanos();
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let from = until.saturating_sub(nanos(DIVERGENCE_WINDOW));
    let settled_before = until
        .saturating_sub(nanos(expect.divergence_grace))
        .max(from);
    // Per node: (settled hashes, recent hashes).
    let mut held: BTreeMap<usize, (Hashes, Hashes)> = BTreeMap::new();
    for &i in &stores {
        let Some(address) = store_address(&nodes[i]) else {
            nodes[i].divergence_error = Some("no TCP address".into());
            continue;
        };
        let settled = stored_hashes(light, &address, from, settled_before).await;
        let recent = match settled {
            Ok(_) => stored_hashes(light, &address, settled_before, until).await,
            Err(_) => Ok(BTreeSet::new()),
        };
        match (settled, recent) {
            (Ok(settled), Ok(recent)) => {
                held.insert(i, (settled, recent));
            }
            (Err(e), _) | (_, Err(e)) => nodes[i].divergence_error = Some(e),
        }
    }
    for &i in &stores {
        if let Some(e) = &nodes[i].divergence_error {
            warnings.push(format!(
                "{}: store divergence not checked: {e}",
                nodes[i].name
            ));
        }
    }
    let union_settled: BTreeSet<&Vec<u8>> = held.values().flat_map(|(s, _)| s).collect();
    let union_recent: BTreeSet<&Vec<u8>> = held
        .values()
        .flat_map(|(_, r)| r)
        .filter(|h| !union_settled.contains(h))
        .collect();
    let union = (union_settled.len() + union_recent.len()) as u64;
    for (&i, (settled, recent)) in &held {
        let missing_settled = union_settled
            .iter()
            .filter(|h| !settled.contains(**h))
            .count() as u64;
        let missing_recent = union_recent
            .iter()
            .filter(|h| !recent.contains(**h) && !settled.contains(**h))
            .count() as u64;
        let missing = missing_settled + missing_recent;
        let n = &mut nodes[i];
        n.store_union = Some(union);
        n.store_held = Some(union - missing);
        n.store_missing = Some(missing);
        n.store_missing_settled = Some(missing_settled);
        if missing_settled > 0 {
            failures.push(format!(
                "{}: store holds {}/{union} messages of the last {}; {missing_settled} missing, older than the {}s grace period",
                n.name,
                union - missing,
                render_duration(DIVERGENCE_WINDOW),
                expect.divergence_grace.as_secs()
            ));
        } else if missing_recent > 0 {
            warnings.push(format!(
                "{}: store holds {}/{union} messages of the last {}; {missing_recent} missing, within the {}s grace period (may still be in flight)",
                n.name,
                union - missing,
                render_duration(DIVERGENCE_WINDOW),
                expect.divergence_grace.as_secs()
            ));
        }
    }
    Some(DivergenceReport {
        from_ns: from,
        until_ns: until,
        settled_before_ns: settled_before,
        grace_seconds: expect.divergence_grace.as_secs(),
        union,
        union_settled: union_settled.len() as u64,
    })
}

/// `1h`, `2m`, `90s`.
fn render_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s > 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

async fn has_hash(light: &Client, address: &Multiaddr, hash: &MessageHash) -> bool {
    store_query(
        light,
        address,
        StoreQueryRequest {
            request_id: Some("roost-fleet-canary".into()),
            include_data: false,
            message_hashes: vec![hash.as_bytes().to_vec()],
            ..Default::default()
        },
    )
    .await
    .map(|r| {
        r.status_code == Some(200)
            && r.messages
                .iter()
                .any(|m| m.message_hash.as_deref() == Some(hash.as_bytes().as_slice()))
    })
    .unwrap_or(false)
}

/// Whether `members` form one connected component (links count in either direction).
pub fn graph_connected(members: &[usize], matrix: &[Vec<bool>]) -> bool {
    let Some(&first) = members.first() else {
        return true;
    };
    let set: BTreeSet<usize> = members.iter().copied().collect();
    let mut seen = BTreeSet::from([first]);
    let mut queue = VecDeque::from([first]);
    while let Some(i) = queue.pop_front() {
        for &j in &set {
            let linked = matrix
                .get(i)
                .and_then(|r| r.get(j))
                .copied()
                .unwrap_or(false)
                || matrix
                    .get(j)
                    .and_then(|r| r.get(i))
                    .copied()
                    .unwrap_or(false);
            if linked && seen.insert(j) {
                queue.push_back(j);
            }
        }
    }
    seen.len() == set.len()
}

/// `held/union`, with what is missing; `-` for nodes without a store.
fn divergence_cell(n: &NodeReport) -> String {
    match (n.store_held, n.store_union, n.store_missing) {
        (Some(held), Some(union), Some(0)) => format!("{held}/{union}"),
        (Some(held), Some(union), Some(missing)) => format!(
            "{} {held}/{union} ({missing} missing, {} settled)",
            if n.store_missing_settled.unwrap_or(0) > 0 {
                "FAIL"
            } else {
                "warn"
            },
            n.store_missing_settled.unwrap_or(0)
        ),
        _ if n.divergence_error.is_some() => "?".into(),
        _ => "-".into(),
    }
}

/// The report as tables for a terminal.
pub fn render_table(report: &CheckReport) -> String {
    use comfy_table::Table;
    let mark = |b: Option<bool>| match b {
        Some(true) => "ok".to_owned(),
        Some(false) => "FAIL".to_owned(),
        None => "-".to_owned(),
    };
    let mut table = Table::new();
    table.set_header(vec![
        "#",
        "node",
        "roles",
        "reachable",
        "version",
        "attestation",
        "peers",
        "fleet links",
        "store",
        "canary",
        "rendezvous",
        "held/union",
    ]);
    for (i, n) in report.nodes.iter().enumerate() {
        table.add_row(vec![
            i.to_string(),
            n.name.clone(),
            n.roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(","),
            if n.reachable {
                "ok".into()
            } else {
                format!("FAIL {}", n.error.clone().unwrap_or_default())
            },
            match &n.version {
                Some(v) if n.version_ok => v.clone(),
                Some(v) => format!("{v} (want {})", report.expected_version),
                None => "-".into(),
            },
            match n.attestation_days {
                Some(d) => format!("{} ({d:.1} days)", mark(n.attestation_ok)),
                None => mark(n.attestation_ok),
            },
            n.peers.to_string(),
            n.fleet_links.len().to_string(),
            mark(n.store_ok),
            mark(n.canary_found),
            mark(n.rendezvous_ok),
            divergence_cell(n),
        ]);
    }
    let mut matrix = Table::new();
    let mut header = vec!["links".to_owned()];
    header.extend((0..report.nodes.len()).map(|i| i.to_string()));
    matrix.set_header(header);
    for (i, row) in report.matrix.iter().enumerate() {
        let mut cells = vec![i.to_string()];
        cells.extend(row.iter().enumerate().map(|(j, c)| {
            if i == j {
                "\\".into()
            } else if *c {
                "x".into()
            } else {
                ".".to_owned()
            }
        }));
        matrix.add_row(cells);
    }
    let mut out = format!("fleet {} (expects roost {})\n{table}\nrelay connectivity (x = connected; mesh {}):\n{matrix}\n",
        report.fleet,
        report.expected_version,
        if report.relay_graph_connected { "connected" } else { "SPLIT" });
    if let Some(c) = &report.canary {
        out.push_str(&format!(
            "canary {} via {}: {}\n",
            c.hash,
            c.published_at,
            match (c.seconds_to_all_stores, &c.error) {
                (Some(s), _) => format!("in every store node after {s:.2}s"),
                (None, Some(e)) => format!("FAILED: {e}"),
                (None, None) => "missing from some store node".into(),
            }
        ));
    }
    if let Some(d) = &report.divergence {
        out.push_str(&format!(
            "store divergence over the last {} (grace {}s): {} message(s) on the store nodes, {} older than the grace\n",
            render_duration(DIVERGENCE_WINDOW),
            d.grace_seconds,
            d.union,
            d.union_settled
        ));
    }
    for w in &report.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    if report.failures.is_empty() && report.warnings.is_empty() {
        out.push_str("check: all green\n");
    } else if report.failures.is_empty() {
        out.push_str(&format!(
            "check: green, {} warning(s)\n",
            report.warnings.len()
        ));
    } else {
        out.push_str(&format!("check: {} failure(s)\n", report.failures.len()));
        for f in &report.failures {
            out.push_str(&format!("  - {f}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connectivity_counts_links_either_way() {
        let m = vec![
            vec![false, true, false],
            vec![false, false, false],
            vec![false, true, false],
        ];
        assert!(graph_connected(&[0, 1, 2], &m));
        let split = vec![
            vec![false, true, false],
            vec![false, false, false],
            vec![false, false, false],
        ];
        assert!(!graph_connected(&[0, 1, 2], &split));
        assert!(graph_connected(&[], &split));
    }

    #[test]
    fn divergence_is_shown_as_held_over_union() {
        let mut n = NodeReport::default();
        assert_eq!(divergence_cell(&n), "-");
        n.divergence_error = Some("store query answered 503".into());
        assert_eq!(divergence_cell(&n), "?");
        n.divergence_error = None;
        (n.store_held, n.store_union, n.store_missing) = (Some(7), Some(7), Some(0));
        assert_eq!(divergence_cell(&n), "7/7");
        (n.store_held, n.store_missing, n.store_missing_settled) = (Some(4), Some(3), Some(0));
        assert_eq!(divergence_cell(&n), "warn 4/7 (3 missing, 0 settled)");
        n.store_missing_settled = Some(2);
        assert_eq!(divergence_cell(&n), "FAIL 4/7 (3 missing, 2 settled)");
        assert_eq!(render_duration(DIVERGENCE_WINDOW), "1h");
        assert_eq!(render_duration(DIVERGENCE_GRACE), "2m");
        assert_eq!(render_duration(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn inventory_addresses_are_read() {
        let inv = "all:\n  children:\n    s:\n      children:\n        boot:\n          hosts:\n            boot-01.dc.s:\n              ansible_host: \"10.9.0.2\"\n";
        let map = inventory_addresses(inv);
        assert_eq!(
            map.get("boot-01.dc.s").map(String::as_str),
            Some("10.9.0.2")
        );
    }
}
