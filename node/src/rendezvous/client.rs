//! This node as a rendezvous client: registers at every configured point under each
//! namespace of its [`Plan`] (by default `rs/<cluster>/<shard>` for each relay shard),
//! refreshes every `register_interval` (well before the TTL runs out), and while a shard has
//! fewer than `target_relay_peers` relay peers asks the points for peers in that shard's
//! namespace and dials them. That is how fleet nodes that know only a point find each other.
//!
//! The task talks to the swarm only through [`NodeHandle`] (requests, dials, status). Records
//! it receives are verified like the server verifies them: a point cannot make this node
//! dial an address that its owner did not sign.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use libp2p::{identity::Keypair, multiaddr::Protocol, Multiaddr, PeerId};
use prost::Message as _;
use tokio::sync::watch;

use super::{
    metrics::OutcomeLabels,
    proto::{self, MessageType, Status},
    record::{self, Record, RecordError},
    shard_namespace, Metrics,
};
use crate::{
    handle::NodeHandle,
    health::{Health, Status as HealthStatus},
    reqres::Protocol as ReqResProtocol,
};

/// What this node registers under and discovers in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Namespaces registered at every point.
    pub register: Vec<String>,
    /// Namespaces searched for peers to dial, each with the shard whose relay peers it feeds.
    pub discover: Vec<Target>,
}

/// A namespace to discover peers in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    /// The pubsub topic whose relay peers count towards `target_relay_peers`; `None` counts
    /// all connected peers.
    pub pubsub_topic: Option<String>,
}

impl Plan {
    /// `rs/<cluster>/<shard>` for each relay shard (registered and discovered), plus the
    /// configured extra `rendezvous.namespaces` (registered only).
    pub fn from_config(relay: &crate::relay::Config, rendezvous: &super::Config) -> Plan {
        let mut plan = Plan::default();
        if relay.enabled {
            for topic in relay.pubsub_topics() {
                let ns = shard_namespace(topic.cluster, topic.shard);
                plan.register.push(ns.clone());
                plan.discover.push(Target {
                    namespace: ns,
                    pubsub_topic: Some(topic.to_string()),
                });
            }
        }
        for ns in &rendezvous.namespaces {
            plan.register_under(ns.clone());
        }
        plan
    }

    /// Also registers under `namespace` (e.g. a fleet's `/roost/<fleet>/<role>`).
    pub fn register_under(&mut self, namespace: impl Into<String>) {
        let namespace = namespace.into();
        if !self.register.contains(&namespace) {
            self.register.push(namespace);
        }
    }

    /// Also dials peers found in `namespace` while the node has fewer than
    /// `target_relay_peers` connected peers.
    pub fn discover_in(&mut self, namespace: impl Into<String>) {
        let namespace = namespace.into();
        if !self.discover.iter().any(|t| t.namespace == namespace) {
            self.discover.push(Target {
                namespace,
                pubsub_topic: None,
            });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.register.is_empty() && self.discover.is_empty()
    }
}

/// Why a point's response was not a success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the point refused: {status}{}", text.as_deref().map(|t| format!(": {t}")).unwrap_or_default())]
    Refused {
        status: Status,
        text: Option<String>,
    },
    #[error("the point's response is malformed: {0}")]
    Malformed(String),
}

impl ResponseError {
    fn label(&self) -> &'static str {
        match self {
            ResponseError::Refused { status, .. } => status.label(),
            ResponseError::Malformed(_) => "malformed",
        }
    }
}

fn status_of(status: Option<i32>) -> Result<Status, ResponseError> {
    status
        .and_then(Status::from_i32)
        .ok_or_else(|| ResponseError::Malformed(format!("unknown status {status:?}")))
}

fn body_of(bytes: &[u8], want: MessageType) -> Result<Vec<u8>, ResponseError> {
    let m = proto::Message::decode(bytes).map_err(|e| ResponseError::Malformed(e.to_string()))?;
    // proto3 writers leave out a zero `type`.
    if m.r#type.unwrap_or(0) != want as i32 {
        return Err(ResponseError::Malformed(format!(
            "expected a {want:?}, got type {:?}",
            m.r#type
        )));
    }
    let body = match want {
        MessageType::RegisterResponse => m.register_response,
        _ => m.discover_response,
    };
    // proto3 writers omit an empty body (status OK, nothing else): read it as empty.
    Ok(body.unwrap_or_default())
}

/// The TTL granted by a REGISTER_RESPONSE.
pub fn read_register_response(bytes: &[u8]) -> Result<u64, ResponseError> {
    let body = body_of(bytes, MessageType::RegisterResponse)?;
    let r = proto::RegisterResponse::decode(&body[..])
        .map_err(|e| ResponseError::Malformed(e.to_string()))?;
    match status_of(r.status.or(Some(0)))? {
        Status::Ok => Ok(r.ttl.unwrap_or(0)),
        status => Err(ResponseError::Refused {
            status,
            text: r.status_text,
        }),
    }
}

/// One registration of a DISCOVER_RESPONSE, its record verified.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub namespace: String,
    pub ttl: Option<u64>,
    pub record: Result<Record, RecordError>,
}

/// The registrations and cookie of a DISCOVER_RESPONSE.
pub fn read_discover_response(
    bytes: &[u8],
) -> Result<(Vec<Discovered>, Option<Vec<u8>>), ResponseError> {
    let body = body_of(bytes, MessageType::DiscoverResponse)?;
    let r = proto::DiscoverResponse::decode(&body[..])
        .map_err(|e| ResponseError::Malformed(e.to_string()))?;
    match status_of(r.status.or(Some(0)))? {
        Status::Ok => {}
        status => {
            return Err(ResponseError::Refused {
                status,
                text: r.status_text,
            })
        }
    }
    let registrations = r
        .registrations
        .into_iter()
        .map(|reg| Discovered {
            namespace: String::from_utf8_lossy(reg.ns.as_deref().unwrap_or_default()).into_owned(),
            ttl: reg.ttl,
            record: record::verify(reg.signed_peer_record.as_deref().unwrap_or_default()),
        })
        .collect();
    Ok((registrations, r.cookie))
}

/// The address to dial of a discovered peer: plain TCP first (every Roost, nwaku and go-waku
/// node has it), then whatever else it announced.
pub fn dial_address(record: &Record) -> Option<Multiaddr> {
    let is_plain_tcp = |a: &Multiaddr| {
        a.iter().any(|p| matches!(p, Protocol::Tcp(_)))
            && !a
                .iter()
                .any(|p| matches!(p, Protocol::Ws(_) | Protocol::Wss(_)))
    };
    let chosen = record
        .addresses
        .iter()
        .find(|a| is_plain_tcp(a))
        .or_else(|| record.addresses.first())?;
    let mut address: Multiaddr = chosen
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    address.push(Protocol::P2p(record.peer));
    Some(address)
}

/// The addresses this node announces in its peer record: the configured external addresses
/// (`network.external_addresses`), or else every listen address (never an unspecified
/// 0.0.0.0), without `/p2p`.
pub fn announced_addresses(
    external_addresses: &[Multiaddr],
    handle: &NodeHandle,
) -> Vec<Multiaddr> {
    let strip = |a: &Multiaddr| -> Multiaddr {
        a.iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect()
    };
    if !external_addresses.is_empty() {
        return external_addresses.iter().map(strip).collect();
    }
    handle
        .info()
        .listen_addresses
        .iter()
        .filter(|a| {
            !a.iter().any(|p| match p {
                Protocol::Ip4(ip) => ip.is_unspecified(),
                Protocol::Ip6(ip) => ip.is_unspecified(),
                _ => false,
            })
        })
        .map(strip)
        .collect()
}

#[derive(Debug, Clone)]
struct Point {
    peer: PeerId,
    address: Multiaddr,
}

/// The client task.
pub struct ClientTask {
    handle: NodeHandle,
    keypair: Keypair,
    points: Vec<Point>,
    plan: Plan,
    addresses: Vec<Multiaddr>,
    ttl: u64,
    register_interval: Duration,
    discover_interval: Duration,
    limit: u64,
    target: usize,
    metrics: Metrics,
    health: Health,
    cookies: HashMap<(PeerId, String), Vec<u8>>,
    dialled: HashMap<PeerId, Instant>,
    /// (point, namespace) → when our registration there lapses.
    registered: HashMap<(PeerId, String), Instant>,
    last_error: Option<String>,
    started: Instant,
}

impl ClientTask {
    pub fn new(
        rdv: &super::Config,
        external_addresses: &[Multiaddr],
        plan: Plan,
        handle: NodeHandle,
        keypair: Keypair,
        metrics: Metrics,
        health: Health,
    ) -> ClientTask {
        let points = rdv
            .points
            .iter()
            .filter_map(|address| {
                Some(Point {
                    peer: crate::addr::peer_id_of(address)?,
                    address: address.clone(),
                })
            })
            .collect();
        ClientTask {
            addresses: announced_addresses(external_addresses, &handle),
            handle,
            keypair,
            points,
            plan,
            ttl: rdv.register_ttl.as_secs(),
            register_interval: rdv.register_interval,
            discover_interval: rdv.discover_interval,
            limit: u64::from(rdv.discover_limit),
            target: rdv.target_relay_peers as usize,
            metrics,
            health,
            cookies: HashMap::new(),
            dialled: HashMap::new(),
            registered: HashMap::new(),
            last_error: None,
            started: Instant::now(),
        }
    }

    /// Registers and discovers until shutdown.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(
            points = self.points.len(),
            namespaces = ?self.plan.register,
            addresses = ?self.addresses,
            "rendezvous client started"
        );
        let mut register = tokio::time::interval(self.register_interval);
        let mut discover = tokio::time::interval(self.discover_interval);
        register.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        discover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                _ = register.tick() => self.register_all().await,
                _ = discover.tick() => self.discover_all().await,
            }
        }
    }

    async fn register_all(&mut self) {
        if self.plan.register.is_empty() {
            return;
        }
        let envelope = match record::standard_envelope(&self.keypair, self.addresses.clone()) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign this node's peer record");
                return;
            }
        };
        let mut requests = Vec::new();
        for point in &self.points {
            for ns in &self.plan.register {
                let request = proto::register_request(ns, envelope.clone(), Some(self.ttl));
                let handle = self.handle.clone();
                let point = point.clone();
                let ns = ns.clone();
                requests.push(async move {
                    let result = handle
                        .request(
                            ReqResProtocol::Rendezvous,
                            point.peer,
                            vec![point.address.clone()],
                            request,
                        )
                        .await;
                    (point, ns, result)
                });
            }
        }
        for (point, ns, result) in futures::future::join_all(requests).await {
            let outcome = match result {
                Ok(bytes) => match read_register_response(&bytes) {
                    Ok(ttl) => {
                        self.registered.insert(
                            (point.peer, ns.clone()),
                            Instant::now() + Duration::from_secs(ttl),
                        );
                        tracing::debug!(point = %point.peer, %ns, ttl, "registered");
                        "ok"
                    }
                    Err(e) => {
                        tracing::warn!(point = %point.address, %ns, error = %e, "rendezvous registration refused");
                        self.last_error = Some(e.to_string());
                        e.label()
                    }
                },
                Err(e) => {
                    tracing::debug!(point = %point.address, %ns, error = %e, "rendezvous point unreachable");
                    self.last_error = Some(format!("{}: {e}", point.address));
                    "unreachable"
                }
            };
            self.metrics
                .client_registrations
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        }
        self.update_health();
    }

    async fn discover_all(&mut self) {
        let Some(status) = self.handle.network_status().await else {
            return;
        };
        let me = self.handle.peer_id();
        let connected: HashSet<PeerId> = status.connected_peers.iter().copied().collect();
        let backoff = self.discover_interval.max(Duration::from_secs(10));
        self.dialled.retain(|_, at| at.elapsed() < backoff);
        for target in self.plan.discover.clone() {
            let have = match &target.pubsub_topic {
                Some(topic) => status
                    .shards
                    .iter()
                    .find(|s| &s.pubsub_topic == topic)
                    .map(|s| s.topic_peers)
                    .unwrap_or(0),
                None => connected.len(),
            };
            let mut need = self.target.saturating_sub(have);
            for point in self.points.clone() {
                if need == 0 {
                    break;
                }
                let key = (point.peer, target.namespace.clone());
                let request = proto::discover_request(
                    Some(&target.namespace),
                    Some(self.limit),
                    self.cookies.get(&key).cloned(),
                );
                let result = self
                    .handle
                    .request(
                        ReqResProtocol::Rendezvous,
                        point.peer,
                        vec![point.address.clone()],
                        request,
                    )
                    .await;
                let (registrations, cookie) = match result
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| read_discover_response(&bytes).map_err(|e| e.to_string()))
                {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::debug!(point = %point.address, ns = %target.namespace, %error, "rendezvous discovery failed");
                        // A stale cookie (the point lost its table) must not block discovery.
                        self.cookies.remove(&key);
                        continue;
                    }
                };
                // A short page means the end: start from the beginning next time, so peers
                // whose dials failed get another chance.
                match cookie {
                    Some(c) if registrations.len() as u64 >= self.limit => {
                        self.cookies.insert(key, c);
                    }
                    _ => {
                        self.cookies.remove(&key);
                    }
                }
                for reg in registrations {
                    let Ok(record) = reg.record else {
                        continue;
                    };
                    if record.peer == me {
                        continue;
                    }
                    self.metrics.client_discovered.inc();
                    if need == 0
                        || connected.contains(&record.peer)
                        || self.dialled.contains_key(&record.peer)
                    {
                        continue;
                    }
                    let Some(address) = dial_address(&record) else {
                        continue;
                    };
                    self.dialled.insert(record.peer, Instant::now());
                    let outcome = match self.handle.dial(address.clone()).await {
                        Ok(()) => {
                            need -= 1;
                            tracing::debug!(peer = %record.peer, %address, ns = %target.namespace, "dialling a peer found through rendezvous");
                            "started"
                        }
                        Err(error) => {
                            tracing::debug!(peer = %record.peer, %address, %error, "cannot dial a peer found through rendezvous");
                            "failed"
                        }
                    };
                    self.metrics
                        .client_dials
                        .get_or_create(&OutcomeLabels { outcome })
                        .inc();
                }
            }
        }
    }

    fn update_health(&mut self) {
        let now = Instant::now();
        self.registered.retain(|_, until| *until > now);
        let live = self.registered.len();
        let expected = self.points.len() * self.plan.register.len();
        // Degraded when no point holds a registration of ours once the first round had time.
        let status = if expected > 0 && live == 0 && self.started.elapsed() > self.register_interval
        {
            HealthStatus::Degraded
        } else {
            HealthStatus::Ok
        };
        self.health.set(
            "rendezvous_client",
            status,
            serde_json::json!({
                "points": self.points.len(),
                "registrations": live,
                "registrations_wanted": expected,
                "last_error": self.last_error,
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_each_shard_once_plus_extra_namespaces() {
        let mut config = crate::Config::default();
        config.relay.cluster_id = 16;
        config.relay.shards = vec![32, 64, 32];
        config.rendezvous.namespaces = vec!["/roost/f/relay".into()];
        let mut plan = Plan::from_config(&config.relay, &config.rendezvous);
        assert_eq!(
            plan.register,
            vec!["rs/16/32", "rs/16/64", "/roost/f/relay"]
        );
        assert_eq!(plan.discover.len(), 2);
        assert_eq!(
            plan.discover[0].pubsub_topic.as_deref(),
            Some("/waku/2/rs/16/32")
        );
        plan.register_under("/roost/f/relay");
        plan.discover_in("/roost/f/relay");
        assert_eq!(plan.register.len(), 3);
        assert_eq!(plan.discover.len(), 3);

        config.relay.enabled = false;
        config.rendezvous.namespaces.clear();
        assert!(Plan::from_config(&config.relay, &config.rendezvous).is_empty());
    }

    #[test]
    fn responses_are_read_with_their_status() {
        assert_eq!(
            read_register_response(&proto::register_response(Status::Ok, "", Some(60))),
            Ok(60)
        );
        let refused = read_register_response(&proto::register_response(
            Status::InvalidTtl,
            "too short",
            None,
        ))
        .unwrap_err();
        assert_eq!(refused.label(), "invalid_ttl");
        assert!(refused
            .to_string()
            .contains("E_INVALID_TTL (102): too short"));
        let wrong =
            read_register_response(&proto::discover_response(Status::Ok, "", Vec::new(), None));
        assert!(matches!(wrong, Err(ResponseError::Malformed(_))));

        let key = Keypair::generate_ed25519();
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/60000".parse().unwrap();
        let ws: Multiaddr = "/ip4/10.0.0.1/tcp/8000/ws".parse().unwrap();
        let reg = proto::Register {
            ns: Some(b"ns".to_vec()),
            signed_peer_record: Some(
                record::standard_envelope(&key, vec![ws.clone(), addr.clone()]).unwrap(),
            ),
            ttl: Some(5),
        };
        let bytes = proto::discover_response(Status::Ok, "", vec![reg], Some(vec![1; 8]));
        let (regs, cookie) = read_discover_response(&bytes).unwrap();
        assert_eq!(cookie, Some(vec![1; 8]));
        let record = regs[0].record.clone().unwrap();
        assert_eq!(record.peer, key.public().to_peer_id());
        assert_eq!(
            dial_address(&record).unwrap(),
            addr.with(Protocol::P2p(record.peer)),
            "plain TCP is preferred over WebSocket"
        );
    }
}
