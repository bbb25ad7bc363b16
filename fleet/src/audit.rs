//! `roost-fleet audit`: deployed reality against the definition. Each node's effective config
//! (`/debug/v1/config`) is compared key by key with what `render` produces for its host, and
//! its version and attestation signer with what the fleet expects. Every difference is drift.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::{check::Target, model::Fleet, render};

/// Keys that differ by design when a fleet runs locally (loopback, free ports, temp dirs).
const LOCAL_ONLY: &[&str] = &[
    "node.data_dir",
    "network.listen_ip",
    "network.tcp_port",
    "network.ws_port",
    "network.peers",
    "network.external_addresses",
    "http.address",
    "rest.address",
    "rendezvous.points",
    "log.format",
    // A local fleet's attestations are signed with its own development (or given) key.
    "operator.attestation",
    "operator.trusted_keys",
];

/// One difference between definition and reality.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Drift {
    pub host: String,
    pub key: String,
    pub expected: String,
    pub actual: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub fleet: String,
    pub audited: Vec<String>,
    pub unreachable: Vec<String>,
    pub drift: Vec<Drift>,
}

impl AuditReport {
    pub fn ok(&self) -> bool {
        self.unreachable.is_empty() && self.drift.is_empty()
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Null => {}
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// Compares two flattened configs, skipping `ignore`d keys.
pub fn config_drift(
    host: &str,
    expected: &BTreeMap<String, String>,
    actual: &BTreeMap<String, String>,
    ignore: &[&str],
) -> Vec<Drift> {
    let keys: BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    keys.into_iter()
        .filter(|k| !ignore.contains(&k.as_str()))
        .filter_map(|k| {
            let (e, a) = (expected.get(k), actual.get(k));
            (e != a).then(|| Drift {
                host: host.to_owned(),
                key: k.clone(),
                expected: e.cloned().unwrap_or_else(|| "(absent)".into()),
                actual: a.cloned().unwrap_or_else(|| "(absent)".into()),
            })
        })
        .collect()
}

/// Audits every target against `fleet`; `local` skips the keys a local run changes on purpose.
pub async fn audit(fleet: &Fleet, targets: &[Target], local: bool) -> AuditReport {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let mut report = AuditReport {
        fleet: fleet.name().to_owned(),
        audited: Vec::new(),
        unreachable: Vec::new(),
        drift: Vec::new(),
    };
    let ignore: &[&str] = if local { LOCAL_ONLY } else { &[] };
    for target in targets {
        let Some(host) = fleet.host(&target.name) else {
            report.drift.push(Drift {
                host: target.name.clone(),
                key: "host".into(),
                expected: "(not in the definition)".into(),
                actual: "running".into(),
            });
            continue;
        };
        let fetch = |path: &'static str| {
            let client = client.clone();
            let url = format!("{}{path}", target.http_url);
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?
                    .json::<serde_json::Value>()
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        let (actual, info) = match (
            fetch("/debug/v1/config").await,
            fetch("/debug/v1/info").await,
        ) {
            (Ok(c), Ok(i)) => (c, i),
            (Err(e), _) | (_, Err(e)) => {
                report.unreachable.push(format!("{}: {e}", host.name));
                continue;
            }
        };
        report.audited.push(host.name.clone());
        let expected = match render::node_config(fleet, host).map(serde_json::to_value) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                report
                    .unreachable
                    .push(format!("{}: cannot render: {e}", host.name));
                continue;
            }
            Err(e) => {
                report
                    .unreachable
                    .push(format!("{}: cannot render: {e}", host.name));
                continue;
            }
        };
        let (mut e, mut a) = (BTreeMap::new(), BTreeMap::new());
        flatten("", &expected, &mut e);
        flatten("", &actual, &mut a);
        report
            .drift
            .extend(config_drift(&host.name, &e, &a, ignore));
        let version = info["version"].as_str().unwrap_or("(unknown)");
        if version != fleet.fleet.node_version {
            report.drift.push(Drift {
                host: host.name.clone(),
                key: "version".into(),
                expected: fleet.fleet.node_version.clone(),
                actual: version.to_owned(),
            });
        }
        if let Some(signer) = info["attestation"]["operator_key"].as_str() {
            if !fleet.fleet.trusted_operator_keys.is_empty()
                && !fleet
                    .fleet
                    .trusted_operator_keys
                    .iter()
                    .any(|k| k == signer)
            {
                report.drift.push(Drift {
                    host: host.name.clone(),
                    key: "attestation.signer".into(),
                    expected: format!("one of {:?}", fleet.fleet.trusted_operator_keys),
                    actual: signer.to_owned(),
                });
            }
        }
    }
    report
}

pub fn render_table(report: &AuditReport) -> String {
    use comfy_table::Table;
    let mut out = format!(
        "audit of fleet {}: {} nodes audited, {} unreachable, {} drifted settings\n",
        report.fleet,
        report.audited.len(),
        report.unreachable.len(),
        report.drift.len()
    );
    if !report.drift.is_empty() {
        let mut table = Table::new();
        table.set_header(vec!["host", "setting", "definition", "deployed"]);
        for d in &report.drift {
            table.add_row(vec![
                d.host.clone(),
                d.key.clone(),
                d.expected.clone(),
                d.actual.clone(),
            ]);
        }
        out.push_str(&format!("{table}\n"));
    }
    for u in &report.unreachable {
        out.push_str(&format!("unreachable: {u}\n"));
    }
    if report.ok() {
        out.push_str("audit: no drift\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_lists_changed_missing_and_extra_keys_but_not_ignored_ones() {
        let e: BTreeMap<String, String> = [("a", "1"), ("b", "2"), ("x", "9")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let a: BTreeMap<String, String> = [("a", "1"), ("b", "3"), ("c", "4"), ("x", "0")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let d = config_drift("h", &e, &a, &["x"]);
        let keys: Vec<&str> = d.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys, vec!["b", "c"]);
        assert_eq!(d[1].expected, "(absent)");
    }
}
