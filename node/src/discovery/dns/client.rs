//! The DNS discovery task: reads each configured tree (`discovery.dns_urls`) through
//! hickory-resolver (the system resolver, or `discovery.dns_name_servers`), verifies it
//! ([`super::tree::sync`]: root signature against the URL's key, every hash), dials the nodes of
//! this node's cluster it lists through [`NodeHandle::dial`], and reads it again when the root's
//! TTL has passed (at most every `dns_refresh_interval`), following the trees they link to. A
//! tree that fails verification is logged with the reason, counted and not used; the last good
//! one stays in use.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use hickory_resolver::{
    config::{ConnectionConfig, NameServerConfig, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
    proto::rr::RData,
    TokioResolver,
};
use tokio::sync::watch;

use super::{
    metrics::Metrics,
    seen::SeenSeqs,
    tree::{self, Limits, TreeUrl, TxtAnswer, TxtSource},
};
use crate::{
    handle::NodeHandle,
    health::{Health, Status},
    units, waku_enr,
};

/// Most trees one node reads: the configured ones and those they link to.
pub const MAX_TREES: usize = 16;

/// The health component this task reports.
pub const HEALTH_COMPONENT: &str = "dns_discovery";

/// `[discovery]`: how this node finds peers beyond `network.peers`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// EIP-1459 trees to bootstrap from (`enrtree://<base32 key>@<domain>`). Default: none.
    pub dns_urls: Vec<TreeUrl>,
    /// Name servers to ask (`ip` or `ip:port`, UDP then TCP). Default: none, the system
    /// resolver (`/etc/resolv.conf`).
    pub dns_name_servers: Vec<NameServer>,
    /// Longest time between two readings of a tree (at least 10 s); sooner when the root's TTL
    /// says so, never sooner than 10 s. Default `30m`.
    #[serde(with = "units::duration")]
    pub dns_refresh_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dns_urls: Vec::new(),
            dns_name_servers: Vec::new(),
            dns_refresh_interval: Duration::from_secs(30 * 60),
        }
    }
}

/// A name server address: `1.1.1.1` (port 53) or `127.0.0.1:5353`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameServer(pub SocketAddr);

impl FromStr for NameServer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(NameServer(addr));
        }
        s.parse::<IpAddr>()
            .map(|ip| NameServer(SocketAddr::new(ip, 53)))
            .map_err(|_| format!("`{s}` is not a name server address (ip or ip:port)"))
    }
}

impl std::fmt::Display for NameServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl serde::Serialize for NameServer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NameServer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// TXT lookups through hickory.
pub struct Resolver(TokioResolver);

impl Resolver {
    pub fn new(name_servers: &[NameServer]) -> Result<Resolver, Error> {
        let builder = if name_servers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| Error::Resolver(e.to_string()))?
        } else {
            let mut config = ResolverConfig::default();
            for server in name_servers {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.0.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.0.port();
                let mut ns = NameServerConfig::udp_and_tcp(server.0.ip());
                ns.connections = vec![udp, tcp];
                config.add_name_server(ns);
            }
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        };
        builder
            .build()
            .map(Resolver)
            .map_err(|e| Error::Resolver(e.to_string()))
    }
}

impl TxtSource for Resolver {
    async fn txt(&self, name: &str) -> Result<TxtAnswer, String> {
        // Fully qualified: no search domains.
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.0.txt_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                let texts = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::TXT(txt) => Some(
                            txt.txt_data
                                .iter()
                                .map(|part| String::from_utf8_lossy(part))
                                .collect::<String>(),
                        ),
                        _ => None,
                    })
                    .collect();
                Ok(TxtAnswer {
                    texts,
                    ttl: Some(ttl),
                })
            }
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(TxtAnswer::default()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// One tree's state, for `/health`.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct TreeState {
    seq: Option<u64>,
    nodes: usize,
    in_cluster: usize,
    links: Vec<String>,
    last_success: Option<u64>,
    last_error: Option<String>,
}

pub struct DnsDiscovery {
    pub config: Config,
    pub cluster_id: u16,
    /// Where the highest `seq` seen per tree is kept ([`super::seen`]).
    pub data_dir: std::path::PathBuf,
    pub handle: NodeHandle,
    pub metrics: Metrics,
    pub health: Health,
}

impl DnsDiscovery {
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let resolver = match Resolver::new(&self.config.dns_name_servers) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "DNS discovery is off");
                self.health.set(
                    HEALTH_COMPONENT,
                    Status::Degraded,
                    serde_json::json!({ "error": e.to_string() }),
                );
                return;
            }
        };
        let mut seen = match SeenSeqs::load(&self.data_dir) {
            Ok(seen) => seen,
            Err(e) => {
                // Rewritten at the next good reading; until then only this run's seqs count.
                tracing::error!(error = %e, "the DNS trees' last seqs are lost; starting afresh");
                SeenSeqs::empty(&self.data_dir)
            }
        };
        let mut states: HashMap<String, TreeState> = HashMap::new();
        // The configured trees, then the trees they link to (EIP-1459's link subtree), up to
        // MAX_TREES in all; a linked tree is verified against the key its link names.
        let mut urls: Vec<TreeUrl> = self.config.dns_urls.clone();
        let mut next: HashMap<String, Instant> = urls
            .iter()
            .map(|u| (u.to_string(), Instant::now()))
            .collect();
        let mut failures: HashMap<String, u32> = HashMap::new();
        // Never busier than one reading per tree every 10 s, whatever the config or the TTL say.
        let floor = Duration::from_secs(10);
        let ceiling = self.config.dns_refresh_interval.max(floor);
        loop {
            let now = Instant::now();
            for url in urls.clone() {
                let key = url.to_string();
                if next.get(&key).is_some_and(|t| *t > now) {
                    continue;
                }
                let state = states.entry(key.clone()).or_default();
                let wait = match self.read(&resolver, &url, state, &mut seen).await {
                    Ok((ttl, links)) => {
                        failures.remove(&key);
                        for link in links {
                            if urls.len() < MAX_TREES && !urls.contains(&link) {
                                tracing::info!(tree = %url, link = %link, "following a linked DNS tree");
                                next.insert(link.to_string(), Instant::now());
                                urls.push(link);
                            }
                        }
                        ttl.unwrap_or(ceiling).clamp(floor, ceiling)
                    }
                    Err(()) => {
                        let n = failures.entry(key.clone()).or_default();
                        *n = n.saturating_add(1);
                        (Duration::from_secs(1) * 2u32.saturating_pow((*n).min(11))).min(ceiling)
                    }
                };
                next.insert(key, Instant::now() + wait);
            }
            self.report(&states);
            let until = next
                .values()
                .min()
                .copied()
                .unwrap_or(now + Duration::from_secs(60));
            tokio::select! {
                biased;
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep_until(until.into()) => {}
            }
        }
    }

    /// Reads, verifies and uses one tree; returns the root's TTL and the tree's links.
    async fn read(
        &self,
        resolver: &Resolver,
        url: &TreeUrl,
        state: &mut TreeState,
        persisted: &mut SeenSeqs,
    ) -> Result<(Option<Duration>, Vec<TreeUrl>), ()> {
        let domain = url.domain().to_owned();
        let synced = match tree::sync(resolver, url, Limits::default()).await {
            Ok(synced) => synced,
            Err(e) => {
                tracing::warn!(tree = %url, error = %e, "DNS tree refused; not using it");
                self.metrics.syncs.get_or_create(&reason(e.reason())).inc();
                state.last_error = Some(e.to_string());
                return Err(());
            }
        };
        // The highest seq of this run or of any earlier one (the data dir's file).
        if let Some(seen) = state.seq.max(persisted.get(url)) {
            if synced.root.seq < seen {
                let e = tree::TreeError::Rollback {
                    domain,
                    got: synced.root.seq,
                    seen,
                };
                tracing::warn!(tree = %url, error = %e, "DNS tree refused; not using it");
                self.metrics.syncs.get_or_create(&reason(e.reason())).inc();
                state.last_error = Some(e.to_string());
                return Err(());
            }
        }
        self.metrics.syncs.get_or_create(&reason("ok")).inc();
        let connected = self
            .handle
            .network_status()
            .await
            .map(|s| s.connected_peers)
            .unwrap_or_default();
        let mut in_cluster = 0;
        for enr in &synced.enrs {
            match waku_enr::shards(enr) {
                Some((cluster, _)) if cluster == self.cluster_id => {}
                _ => continue,
            }
            in_cluster += 1;
            // Every address the record carries (ip/tcp, ip6/tcp6, `multiaddrs`): the first may
            // be unreachable from here while another is not.
            let Ok(addresses) = waku_enr::addresses(enr) else {
                continue;
            };
            if addresses.is_empty() {
                continue;
            }
            let Ok(peer) = waku_enr::peer_id(enr) else {
                continue;
            };
            if peer == self.handle.info.peer_id {
                continue;
            }
            if connected.contains(&peer) {
                continue;
            }
            let outcome = match self.handle.dial_peer(peer, addresses.clone()).await {
                Ok(()) => "ok",
                Err(e) => {
                    tracing::debug!(%peer, ?addresses, error = %e, "DNS discovery dial failed");
                    "failed"
                }
            };
            self.metrics.dials.get_or_create(&reason(outcome)).inc();
        }
        if state.seq != Some(synced.root.seq) {
            tracing::info!(
                tree = %url,
                seq = synced.root.seq,
                nodes = synced.enrs.len(),
                in_cluster,
                links = synced.links.len(),
                "DNS tree read"
            );
        }
        self.metrics
            .tree_nodes
            .get_or_create(&super::metrics::TreeLabels {
                domain: domain.clone(),
            })
            .set(in_cluster as i64);
        self.metrics
            .tree_seq
            .get_or_create(&super::metrics::TreeLabels { domain })
            .set(synced.root.seq as i64);
        if let Err(e) = persisted.record(url, synced.root.seq) {
            tracing::warn!(tree = %url, error = %e, "cannot keep the DNS tree's seq across restarts");
        }
        state.seq = Some(synced.root.seq);
        state.nodes = synced.enrs.len();
        state.in_cluster = in_cluster;
        state.links = synced.links.iter().map(ToString::to_string).collect();
        state.last_success = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs());
        state.last_error = None;
        Ok((synced.root_ttl, synced.links))
    }

    fn report(&self, states: &HashMap<String, TreeState>) {
        let trees: serde_json::Map<String, serde_json::Value> = states
            .iter()
            .map(|(url, s)| (url.clone(), serde_json::json!(s)))
            .collect();
        let any_good = states.values().any(|s| s.last_success.is_some());
        let any_bad = states.values().any(|s| s.last_error.is_some());
        let status = match (any_good, any_bad) {
            (true, false) => Status::Ok,
            _ if states.is_empty() => Status::Ok,
            _ => Status::Degraded,
        };
        self.health
            .set(HEALTH_COMPONENT, status, serde_json::Value::Object(trees));
    }
}

fn reason(outcome: &'static str) -> super::metrics::OutcomeLabels {
    super::metrics::OutcomeLabels { outcome }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str =
        "enrtree://AM5FCQLWIZX2QFPNJAP7VUERCCRNGRHWZG3YYHIUV7BVDQ5FDPRT2@nodes.example.org";

    #[test]
    fn discovery_keys_parse_and_bad_values_name_the_key() {
        let config = crate::Config::from_toml_str(&format!(
            "[discovery]\ndns_urls = [\"{URL}\"]\ndns_name_servers = [\"127.0.0.1:5353\", \"1.1.1.1\"]\ndns_refresh_interval = \"5m\"\n"
        ))
        .unwrap();
        let d = &config.discovery;
        assert_eq!(d.dns_urls[0].to_string(), URL);
        assert_eq!(d.dns_name_servers[0].0, "127.0.0.1:5353".parse().unwrap());
        assert_eq!(d.dns_name_servers[1].0, "1.1.1.1:53".parse().unwrap());
        assert_eq!(d.dns_refresh_interval, Duration::from_secs(300));
        for (bad, why) in [
            ("dns_urls = [\"https://nodes.example.org\"]", "enrtree://"),
            (
                "dns_name_servers = [\"resolver.local\"]",
                "not a name server",
            ),
        ] {
            let err = crate::Config::from_toml_str(&format!("[discovery]\n{bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("discovery") && err.contains(why), "{err}");
        }
    }
}
