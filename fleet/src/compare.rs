//! `roost-fleet compare A B`: what differs between two fleet definitions (fleet settings, hosts
//! per role and datacentre, the effective node config per role), and, with both fleets running,
//! a cross-fleet test: a client pushes through each fleet's boot node and must find the message
//! on the *other* fleet's store nodes — the protocol compatibility check before promotion.

use std::collections::{BTreeMap, BTreeSet};

use libp2p::Multiaddr;
use prost::Message as _;
use roost_node::{
    client::Client,
    lightpush::{self, Version},
    message::{now_nanos, ShardTopic, WakuMessage},
    store::rpc::{StoreQueryRequest, StoreQueryResponse},
    swarm::ReqResProtocol,
};
use serde::Serialize;
use toml::Value;

use crate::{
    local::FleetState,
    model::{Fleet, Role},
    render,
};

/// One setting that differs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Difference {
    pub key: String,
    pub a: String,
    pub b: String,
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// Keys that legitimately differ between any two fleets and say nothing about behaviour, or
/// that `ports.*` already shows.
fn is_identity_key(key: &str) -> bool {
    matches!(
        key,
        "network.peers"
            | "network.external_addresses"
            | "network.tcp_port"
            | "network.ws_port"
            | "http.address"
    )
}

fn settings(fleet: &Fleet) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let f = &fleet.fleet;
    out.insert("fleet.cluster_id".into(), f.cluster_id.to_string());
    out.insert("fleet.shards".into(), format!("{:?}", f.shards));
    out.insert("fleet.node_version".into(), f.node_version.clone());
    out.insert(
        "fleet.attestation_validity".into(),
        f.attestation_validity.clone(),
    );
    out.insert(
        "fleet.trusted_operator_keys".into(),
        format!("{:?}", f.trusted_operator_keys),
    );
    out.insert(
        "fleet.rendezvous_points".into(),
        f.rendezvous_points.len().to_string(),
    );
    out.insert("ports.tcp".into(), fleet.ports.tcp.to_string());
    out.insert("ports.ws".into(), fleet.ports.ws.to_string());
    out.insert("ports.http".into(), fleet.ports.http.to_string());
    for role in Role::ALL {
        let hosts: Vec<_> = fleet
            .hosts
            .iter()
            .filter(|h| h.roles.contains(&role))
            .collect();
        out.insert(format!("hosts.{role}"), hosts.len().to_string());
        let dcs: BTreeSet<&str> = hosts.iter().map(|h| h.dc.as_str()).collect();
        out.insert(format!("hosts.{role}.dcs"), dcs.len().to_string());
        // The effective config of the role's first host stands for the role.
        if let Some(host) = hosts.first() {
            if let Ok(table) = render::node_table(fleet, host) {
                if let Ok(config) = toml::Value::try_from(
                    roost_node::Config::from_toml_str(&toml::to_string(&table).unwrap_or_default())
                        .unwrap_or_default(),
                ) {
                    let mut flat = BTreeMap::new();
                    flatten("", &config, &mut flat);
                    for (k, v) in flat {
                        if !is_identity_key(&k) {
                            out.insert(format!("config[{role}].{k}"), v);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Every setting that differs between `a` and `b`.
pub fn diff(a: &Fleet, b: &Fleet) -> Vec<Difference> {
    let (sa, sb) = (settings(a), settings(b));
    let keys: BTreeSet<&String> = sa.keys().chain(sb.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (va, vb) = (sa.get(k), sb.get(k));
            (va != vb).then(|| Difference {
                key: k.clone(),
                a: va.cloned().unwrap_or_else(|| "-".into()),
                b: vb.cloned().unwrap_or_else(|| "-".into()),
            })
        })
        .collect()
}

/// One direction of the cross-fleet test.
#[derive(Debug, Clone, Serialize)]
pub struct CrossResult {
    /// "staging client -> beta".
    pub direction: String,
    pub pushed_via: Option<String>,
    pub hash: Option<String>,
    /// Store nodes of the target fleet that returned the message.
    pub found_on: Vec<String>,
    pub missing_on: Vec<String>,
    pub error: Option<String>,
}

impl CrossResult {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.missing_on.is_empty() && !self.found_on.is_empty()
    }
}

/// The full comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub differences: Vec<Difference>,
    pub cross: Vec<CrossResult>,
}

impl Comparison {
    pub fn ok(&self) -> bool {
        self.cross.iter().all(CrossResult::ok)
    }
}

/// Pushes a message through `target`'s boot node as a client of `client_fleet` and looks for it
/// on every store node of `target`.
pub async fn cross_test(client_fleet: &FleetState, target: &FleetState) -> CrossResult {
    let mut result = CrossResult {
        direction: format!("{} client -> {}", client_fleet.fleet, target.fleet),
        pushed_via: None,
        hash: None,
        found_on: Vec::new(),
        missing_on: Vec::new(),
        error: None,
    };
    // The client joins the target's cluster: a client of the other cluster would be refused,
    // which the definition diff already shows.
    let client = match Client::start(target.cluster_id).await {
        Ok(c) => c,
        Err(e) => {
            result.error = Some(format!("cannot start a client: {e}"));
            return result;
        }
    };
    let Some(boot) = target.nodes.iter().find(|n| n.roles.contains(&Role::Boot)) else {
        result.error = Some(format!("fleet {} has no boot node", target.fleet));
        client.stop().await;
        return result;
    };
    result.pushed_via = Some(boot.name.clone());
    let topic = ShardTopic::new(
        target.cluster_id,
        target.shards.first().copied().unwrap_or(0),
    )
    .to_string();
    let message = WakuMessage::new(
        "/roost-fleet/1/compare/proto",
        format!(
            "from {} v{} at {}",
            client_fleet.fleet,
            client_fleet.node_version,
            now_nanos()
        )
        .into_bytes(),
    );
    let hash = message.hash(&topic);
    result.hash = Some(hash.to_hex());
    let push = async {
        let address: Multiaddr = boot
            .tcp
            .parse()
            .map_err(|e| format!("bad address {}: {e}", boot.tcp))?;
        let bytes = client
            .request(
                Version::V3.reqres(),
                &address,
                lightpush::encode_request(Version::V3, "compare", Some(&topic), &message),
            )
            .await
            .map_err(|e| format!("light push to {} failed: {e}", boot.name))?;
        let reply = lightpush::decode_response(Version::V3, &bytes).map_err(|e| e.to_string())?;
        if !reply.is_success() {
            return Err(format!(
                "light push refused: {} {}",
                reply.status.0,
                reply.description.unwrap_or_default()
            ));
        }
        Ok::<_, String>(())
    };
    if let Err(e) = push.await {
        result.error = Some(e);
        client.stop().await;
        return result;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let stores: Vec<_> = target
        .nodes
        .iter()
        .filter(|n| n.roles.contains(&Role::Store))
        .collect();
    let mut pending: Vec<_> = stores.clone();
    while !pending.is_empty() && std::time::Instant::now() < deadline {
        let mut still = Vec::new();
        for node in pending {
            let found = match node.tcp.parse::<Multiaddr>() {
                Ok(addr) => {
                    let request = StoreQueryRequest {
                        request_id: Some("compare".into()),
                        include_data: true,
                        message_hashes: vec![hash.as_bytes().to_vec()],
                        ..Default::default()
                    };
                    match client
                        .request(ReqResProtocol::Store, &addr, request.encode_to_vec())
                        .await
                    {
                        Ok(bytes) => StoreQueryResponse::decode_bytes(&bytes)
                            .map(|r| r.status_code == Some(200) && !r.messages.is_empty())
                            .unwrap_or(false),
                        Err(_) => false,
                    }
                }
                Err(_) => false,
            };
            if found {
                result.found_on.push(node.name.clone());
            } else {
                still.push(node);
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
    result.missing_on = pending.into_iter().map(|n| n.name.clone()).collect();
    if stores.is_empty() {
        result.error = Some(format!("fleet {} has no store node to query", target.fleet));
    }
    client.stop().await;
    result
}

/// Compares two definitions and, when both run locally, tests them against each other.
pub async fn compare(
    a: &Fleet,
    b: &Fleet,
    running: Option<(&FleetState, &FleetState)>,
) -> Comparison {
    let mut cross = Vec::new();
    if let Some((sa, sb)) = running {
        cross.push(cross_test(sa, sb).await);
        cross.push(cross_test(sb, sa).await);
    }
    Comparison {
        a: a.name().to_owned(),
        b: b.name().to_owned(),
        differences: diff(a, b),
        cross,
    }
}

pub fn render_table(c: &Comparison) -> String {
    use comfy_table::Table;
    let mut table = Table::new();
    table.set_header(vec!["setting".to_owned(), c.a.clone(), c.b.clone()]);
    for d in &c.differences {
        table.add_row(vec![d.key.clone(), d.a.clone(), d.b.clone()]);
    }
    let mut out = format!(
        "{} vs {}: {} differences\n{table}\n",
        c.a,
        c.b,
        c.differences.len()
    );
    if c.cross.is_empty() {
        out.push_str("cross-fleet test: skipped (give --dir-a and --dir-b of running fleets)\n");
    }
    for r in &c.cross {
        out.push_str(&format!(
            "cross-fleet {}: {} (via {}, found on [{}], missing on [{}]{})\n",
            r.direction,
            if r.ok() { "ok" } else { "FAIL" },
            r.pushed_via.clone().unwrap_or_default(),
            r.found_on.join(", "),
            r.missing_on.join(", "),
            r.error
                .as_ref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_and_beta_differ_where_their_files_differ() {
        let load = |n: &str| {
            Fleet::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{n}.toml")))
                .unwrap()
        };
        let (s, b) = (load("staging"), load("beta"));
        let d = diff(&s, &b);
        let keys: Vec<&str> = d.iter().map(|d| d.key.as_str()).collect();
        assert!(keys.contains(&"ports.ws"), "{keys:?}");
        assert!(keys.contains(&"fleet.attestation_validity"), "{keys:?}");
        assert!(
            keys.contains(&"config[boot].network.max_connections"),
            "{keys:?}"
        );
        assert!(!keys.contains(&"fleet.cluster_id"), "{keys:?}");
        assert!(diff(&s, &s).is_empty());
    }
}
