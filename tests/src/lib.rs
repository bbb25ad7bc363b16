//! The Roost test harness: real nodes on 127.0.0.1 with port 0 and temp dirs, started in-process
//! ([`TestNode`]) or as `roost` processes ([`RoostProcess`]), plus a bare rust-libp2p gossipsub
//! peer ([`bare::BarePeer`]) and a bare rendezvous client ([`rdv::RdvPeer`]) that can send what
//! a Roost node never would, a real Prometheus ([`prometheus::Prometheus`]) with the
//! dashboards' reader ([`dashboards`]) and PNG charts ([`charts`]), a private PostgreSQL cluster
//! ([`postgres::PgCluster`]), and real clients of other ecosystems run as child processes
//! ([`client_process::ClientProcess`]).
//!
//! Everything cleans up after itself: temp dirs are removed on drop, processes are killed.

pub mod ansible;
pub mod bare;
pub mod bench;
pub mod charts;
pub mod client_process;
pub mod dashboards;
pub mod postgres;
pub mod process;
pub mod profiles;
pub mod prometheus;
pub mod rdv;
pub mod rig;

use std::{future::Future, path::PathBuf, time::Duration};

use libp2p::{multiaddr::Protocol, Multiaddr};
use roost_node::{Config, Node, NodeHandle};
use tempfile::TempDir;

pub use process::{fleet_bin, roost_bin, RoostProcess};

/// Default time a test waits for a condition before failing.
pub const WAIT: Duration = Duration::from_secs(30);

/// `roost run` flags that take the throttle's quotas out of the way, for tests about
/// something else (faults, durability) that push far more than a real peer would.
pub const UNTHROTTLED_ARGS: [&str; 8] = [
    "--throttle-relay",
    "unlimited",
    "--throttle-relay-bytes",
    "unlimited",
    "--throttle-store",
    "unlimited",
    "--throttle-lightpush",
    "unlimited",
];

/// The hashes among `wanted` that hash lookups (presence only, 100 per query) at the store
/// node `addr` do not find. Panics if the node does not answer 200: a test asking this needs
/// the store up.
pub async fn missing_from_store(
    reader: &roost_node::client::Client,
    addr: &Multiaddr,
    wanted: &std::collections::HashSet<roost_node::message::MessageHash>,
) -> Vec<roost_node::message::MessageHash> {
    use roost_node::store::rpc::StoreQueryRequest;
    let wanted: Vec<_> = wanted.iter().copied().collect();
    let mut missing = Vec::new();
    for chunk in wanted.chunks(100) {
        let request = StoreQueryRequest::new("check")
            .hashes(chunk.iter().copied())
            .include_data(false)
            .limit(100);
        let r = reader
            .store_query(addr, &request)
            .await
            .expect("the store node answers");
        assert_eq!(r.code(), 200, "{}", r.desc());
        let found: std::collections::HashSet<_> = r
            .entries()
            .expect("a 200 answer has entries")
            .into_iter()
            .map(|e| e.hash)
            .collect();
        missing.extend(chunk.iter().filter(|h| !found.contains(h)));
    }
    missing
}

/// Installs a test log subscriber once (`RUST_LOG` decides what shows).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A config for a test node: loopback, free ports, data in `dir`.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.node.data_dir = dir.to_owned();
    c.network.listen_ip = [127, 0, 0, 1].into();
    c.network.tcp_port = 0;
    c.network.ws_port = 0;
    c.http.address = ([127, 0, 0, 1], 0).into();
    // The REST API is on by default (as nwaku's): never on its fixed port 8645 in tests.
    c.rest.address = ([127, 0, 0, 1], 0).into();
    c.node.shutdown_timeout = Duration::from_secs(3);
    // Every test peer connects from 127.0.0.1, which no production IP sees: spare it the
    // per-IP connection limits, IP bans and gossipsub's IP colocation penalty. Tests of those
    // limits clear this (or dial from another loopback address, e.g. 127.0.0.2).
    c.throttle.exempt_ips = vec![[127, 0, 0, 1].into()];
    c
}

/// A Roost node running in this process.
pub struct TestNode {
    node: Option<Node>,
    pub handle: NodeHandle,
    pub dir: TempDir,
}

impl TestNode {
    pub async fn start() -> TestNode {
        Self::start_with(|_| {}).await
    }

    /// Starts a node after letting the caller adjust its config.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, adjust).await
    }

    /// Starts a node in an existing directory (e.g. to restart on the same data).
    pub async fn start_in(dir: TempDir, adjust: impl FnOnce(&mut Config)) -> TestNode {
        let mut config = test_config(dir.path());
        adjust(&mut config);
        config.validate().expect("test config is valid");
        let node = Node::start(config).await.expect("node starts");
        TestNode {
            handle: node.handle(),
            node: Some(node),
            dir,
        }
    }

    /// The node's TCP address on 127.0.0.1, with `/p2p/<id>`.
    pub fn tcp_addr(&self) -> Multiaddr {
        loopback(&self.handle.info().tcp_addresses)
    }

    /// The node's WebSocket address on 127.0.0.1, with `/p2p/<id>`.
    pub fn ws_addr(&self) -> Multiaddr {
        loopback(&self.handle.info().ws_addresses)
    }

    pub fn http_url(&self) -> String {
        format!(
            "http://{}",
            self.handle
                .info()
                .http_address
                .expect("HTTP endpoint enabled")
        )
    }

    /// The base URL of the node's nwaku-compatible REST API (`[rest]`).
    pub fn rest_url(&self) -> String {
        format!(
            "http://{}",
            self.handle.info().rest_address.expect("REST API enabled")
        )
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        http_get(&format!("{}/metrics", self.http_url())).await.1
    }

    /// `GET /health` as JSON.
    pub async fn health(&self) -> serde_json::Value {
        let (_, body) = http_get(&format!("{}/health", self.http_url())).await;
        serde_json::from_str(&body).expect("health is JSON")
    }

    /// The value of one sample in `/metrics`, e.g. `roost_relay_messages_validated_total{result="reject",reason="meta_too_long"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        metric_value(&self.metrics().await, sample)
    }

    /// Dials `other` and waits until both see the connection.
    pub async fn connect(&self, other: &TestNode) {
        self.handle.dial(other.tcp_addr()).await.expect("dial");
        let (a, b) = (other.handle.peer_id(), self.handle.peer_id());
        wait_until(WAIT, || async {
            self.connected_to(a).await && other.connected_to(b).await
        })
        .await
        .expect("peers connect");
    }

    pub async fn connected_to(&self, peer: libp2p::PeerId) -> bool {
        self.handle
            .network_status()
            .await
            .map(|s| s.connected_peers.contains(&peer))
            .unwrap_or(false)
    }

    /// Waits until this node has at least `n` mesh peers on `pubsub_topic`.
    pub async fn wait_for_mesh(&self, pubsub_topic: &str, n: usize) {
        wait_until(WAIT, || async {
            self.handle
                .network_status()
                .await
                .map(|s| {
                    s.shards
                        .iter()
                        .any(|sh| sh.pubsub_topic == pubsub_topic && sh.mesh_peers >= n)
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or_else(|_| panic!("mesh of {n} on {pubsub_topic} did not form"));
    }

    /// Stops the node and waits for it; returns its directory for a restart.
    pub async fn stop(mut self) -> TempDir {
        if let Some(node) = self.node.take() {
            let _ = node.stop().await;
        }
        self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

/// The first address on 127.0.0.1 from a list.
pub fn loopback(addresses: &[Multiaddr]) -> Multiaddr {
    addresses
        .iter()
        .find(|a| a.iter().any(|p| p == Protocol::Ip4([127, 0, 0, 1].into())))
        .or_else(|| addresses.first())
        .cloned()
        .expect("node has a listen address")
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET url` → (status, body). Panics on transport errors: tests want to know.
pub async fn http_get(url: &str) -> (u16, String) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Finds `sample` (name with its exact label set) in Prometheus text and parses its value.
pub fn metric_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == sample).then(|| value.parse().ok()).flatten()
    })
}

/// Sums every sample of a metric family whose labels contain all `label_pairs`
/// (e.g. `[("reason", "oversize")]`).
pub fn metric_sum(text: &str, name: &str, label_pairs: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = label_pairs
                .iter()
                .all(|(k, v)| labels.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// A light push v3 of `message` on `pubsub_topic` through a client's handle (usable from
/// spawned tasks); `None` when there is no answer.
pub async fn light_push_v3(
    handle: &roost_node::NodeHandle,
    addr: &Multiaddr,
    pubsub_topic: &str,
    message: &roost_node::message::WakuMessage,
) -> Option<roost_node::lightpush::PushReply> {
    use roost_node::{client, lightpush};
    let request = lightpush::encode_request(
        lightpush::Version::V3,
        &client::request_id(),
        Some(pubsub_topic),
        message,
    );
    let peer = client::peer_id_of(addr)?;
    let response = handle
        .request(
            roost_node::swarm::ReqResProtocol::LightPush,
            peer,
            vec![addr.clone()],
            request,
        )
        .await
        .ok()?;
    lightpush::decode_response(lightpush::Version::V3, &response).ok()
}
