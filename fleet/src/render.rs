//! Rendering a fleet: a `roost.toml` per host built through the node's own config loader (so a
//! rendered file always parses), and the Ansible inventory and host vars the playbooks consume.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use roost_node::{
    config::{Config, ConfigError, Schema},
    store::{masked_url, Backend},
};
use toml::{Table, Value};

use crate::model::{Fleet, Host, Role};

/// Keys the fleet computes from its own fields; setting them in `[node]` tables is an error.
const COMPUTED: &[(&str, &str)] = &[
    ("node.data_dir", "fleet.data_dir"),
    ("network.tcp_port", "[ports] tcp"),
    ("network.ws_port", "[ports] ws"),
    ("http.address", "[ports] http"),
    (
        "network.external_addresses",
        "the host's address and [ports]",
    ),
    ("relay.cluster_id", "fleet.cluster_id"),
    ("relay.shards", "fleet.shards"),
    (
        "store.postgres_password_file",
        "fleet.data_dir (the Ansible role writes the password there from roost_node_store_postgres_password)",
    ),
];

/// The file, in the data dir, holding the PostgreSQL password of a store host whose archive is
/// in PostgreSQL. The fleet points `store.postgres_password_file` at it; the Ansible role writes
/// it (mode 0600, the node's user) from the operator's vault. The password itself is never in
/// the fleet file or anything rendered from it.
pub const POSTGRES_PASSWORD_FILE: &str = "postgres-password";

/// Roles that run the relay.
pub fn relays(roles: &[Role]) -> bool {
    roles
        .iter()
        .any(|r| matches!(r, Role::Boot | Role::Relay | Role::Store))
}

fn set(table: &mut Table, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let leaf = parts.pop().unwrap_or(key);
    let mut t = table;
    for part in parts {
        let entry = t
            .entry(part.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        t = match entry {
            Value::Table(inner) => inner,
            _ => return,
        };
    }
    t.insert(leaf.to_owned(), value);
}

fn get<'a>(table: &'a Table, key: &str) -> Option<&'a Value> {
    let mut parts = key.split('.');
    let first = parts.next()?;
    let mut value = table.get(first)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

fn merge(base: &mut Table, over: &Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Sets `key` only if this roost version has it (capabilities grow config sections).
fn set_if_known(table: &mut Table, key: &str, value: Value) {
    if Schema::get().keys.contains_key(key) {
        set(table, key, value);
    }
}

/// The node config table for `host`: fleet `[node]` < `[role.<r>]` < host `node`, then the
/// fleet-computed keys (ports, cluster, shards, services per role, peers).
pub fn node_table(fleet: &Fleet, host: &Host) -> Result<Table, ConfigError> {
    let mut table = Table::new();
    merge(&mut table, &fleet.node);
    let roles: BTreeSet<Role> = host.roles.iter().copied().collect();
    for role in &roles {
        if let Some(t) = fleet.role.get(role) {
            merge(&mut table, t);
        }
    }
    merge(&mut table, &host.node);
    for (key, source) in COMPUTED {
        if get(&table, key).is_some() {
            return Err(ConfigError::Invalid(format!(
                "host `{}`: `{key}` is set by the fleet from {source}; remove it from the [node] tables",
                host.name
            )));
        }
    }
    let ports = fleet.ports_of(host);
    set(
        &mut table,
        "node.data_dir",
        Value::String(fleet.fleet.data_dir.display().to_string()),
    );
    set(
        &mut table,
        "network.tcp_port",
        Value::Integer(ports.tcp.into()),
    );
    set(
        &mut table,
        "network.ws_port",
        Value::Integer(ports.ws.into()),
    );
    set(
        &mut table,
        "http.address",
        Value::String(format!("0.0.0.0:{}", ports.http)),
    );
    set(
        &mut table,
        "relay.cluster_id",
        Value::Integer(fleet.fleet.cluster_id.into()),
    );
    set(
        &mut table,
        "relay.shards",
        Value::Array(
            fleet
                .fleet
                .shards
                .iter()
                .map(|s| Value::Integer((*s).into()))
                .collect(),
        ),
    );
    set(
        &mut table,
        "network.external_addresses",
        Value::Array(vec![
            Value::String(format!("/ip4/{}/tcp/{}", host.address, ports.tcp)),
            Value::String(format!("/ip4/{}/tcp/{}/ws", host.address, ports.ws)),
        ]),
    );
    set(
        &mut table,
        "relay.enabled",
        Value::Boolean(relays(&host.roles)),
    );
    set_if_known(
        &mut table,
        "store.enabled",
        Value::Boolean(roles.contains(&Role::Store)),
    );
    set_if_known(
        &mut table,
        "rendezvous.enabled",
        Value::Boolean(roles.contains(&Role::Rendezvous)),
    );
    // A store on PostgreSQL: the database's URL comes from the fleet file (without a password,
    // which would then be in the repository); the password from a file the role provisions.
    if roles.contains(&Role::Store)
        && get(&table, "store.backend").and_then(Value::as_str) == Some("postgres")
    {
        if let Some(url) = get(&table, "store.postgres_url").and_then(Value::as_str) {
            if masked_url(url) != url {
                return Err(ConfigError::Invalid(format!(
                    "host `{}`: store.postgres_url {} carries a password; take it out of the fleet file (the Ansible role writes it to the host from roost_node_store_postgres_password, kept in Ansible Vault)",
                    host.name,
                    masked_url(url)
                )));
            }
        }
        set_if_known(
            &mut table,
            "store.postgres_password_file",
            Value::String(
                fleet
                    .fleet
                    .data_dir
                    .join(POSTGRES_PASSWORD_FILE)
                    .display()
                    .to_string(),
            ),
        );
    }
    let boot = roles.contains(&Role::Boot);
    for service in [
        "lightpush.enabled",
        "filter.enabled",
        "peer_exchange.enabled",
    ] {
        set_if_known(&mut table, service, Value::Boolean(boot));
    }
    // Boot hosts are every other node's static peers (with /p2p when their identity is known;
    // without, the node learns it on connection).
    let address_of = |h: &Host| {
        let base = format!("/ip4/{}/tcp/{}", h.address, fleet.ports_of(h).tcp);
        match &h.peer_id {
            Some(id) => format!("{base}/p2p/{id}"),
            None => base,
        }
    };
    let peers: Vec<Value> = fleet
        .hosts
        .iter()
        .filter(|h| h.name != host.name && h.roles.contains(&Role::Boot))
        .map(|h| Value::String(address_of(h)))
        .collect();
    if !peers.is_empty() && get(&table, "network.peers").is_none() {
        set(&mut table, "network.peers", Value::Array(peers));
    }
    // Fleet membership: nodes trust the fleet's operator keys and serve the attestation the
    // operator issues for them (deployed beside the data, never rendered: it is per node).
    set_if_known(
        &mut table,
        "operator.fleet",
        Value::String(fleet.name().to_owned()),
    );
    if !fleet.fleet.trusted_operator_keys.is_empty() {
        set_if_known(
            &mut table,
            "operator.trusted_keys",
            Value::Array(
                fleet
                    .fleet
                    .trusted_operator_keys
                    .iter()
                    .cloned()
                    .map(Value::String)
                    .collect(),
            ),
        );
        set_if_known(
            &mut table,
            "operator.attestation",
            Value::String(
                fleet
                    .fleet
                    .data_dir
                    .join("node.attestation")
                    .display()
                    .to_string(),
            ),
        );
    }
    // Rendezvous points need a known identity: the client addresses requests to a PeerId.
    let points: Vec<Value> = fleet
        .fleet
        .rendezvous_points
        .iter()
        .filter(|p| *p != &host.name)
        .filter_map(|p| fleet.host(p))
        .filter(|h| h.peer_id.is_some())
        .map(|h| Value::String(address_of(h)))
        .collect();
    if get(&table, "rendezvous.points").is_none() {
        set_if_known(&mut table, "rendezvous.points", Value::Array(points));
    }
    Ok(table)
}

/// The attestation roles a host's fleet roles stand for.
pub fn attestation_roles(roles: &[Role]) -> Vec<&'static str> {
    let mut out = BTreeSet::new();
    for role in roles {
        match role {
            Role::Boot => out.extend(["relay", "lightpush", "filter"]),
            Role::Relay => {
                out.insert("relay");
            }
            Role::Store => out.extend(["relay", "store"]),
            Role::Rendezvous => {
                out.insert("rendezvous");
            }
        }
    }
    out.into_iter().collect()
}

/// The parsed, validated node config for `host`.
pub fn node_config(fleet: &Fleet, host: &Host) -> Result<Config, ConfigError> {
    let table = node_table(fleet, host)?;
    let text = toml::to_string(&table).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Config::from_toml_str(&text)
}

/// Renders `roost.toml` text for `host`: the effective config, with a header.
pub fn roost_toml(fleet: &Fleet, host: &Host, source: &Path) -> Result<String, ConfigError> {
    let config = node_config(fleet, host)?;
    Ok(format!(
        "# {host} ({roles}) of fleet {fleet}.\n# Generated by `roost-fleet render` from {source}; edit the fleet file, not this one.\n# Secrets (node key, PINs) never go here: they are provisioned separately.\n\n{body}",
        host = host.name,
        roles = host.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
        fleet = fleet.name(),
        source = source.display(),
        body = config.to_toml()
    ))
}

/// What `render` wrote.
#[derive(Debug, Default)]
pub struct Rendered {
    pub files: Vec<PathBuf>,
}

/// Writes every host's config plus the Ansible inventory and host vars under `out`.
pub fn render(fleet: &Fleet, source: &Path, out: &Path) -> anyhow::Result<Rendered> {
    use anyhow::Context as _;
    let mut rendered = Rendered::default();
    let mut write = |path: PathBuf, text: String| -> anyhow::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        rendered.files.push(path);
        Ok(())
    };
    for host in &fleet.hosts {
        let text = roost_toml(fleet, host, source)?;
        write(
            out.join("hosts").join(&host.name).join("roost.toml"),
            text.clone(),
        )?;
        write(
            out.join("host_vars").join(format!("{}.yml", host.name)),
            host_vars(fleet, host, &text),
        )?;
    }
    write(out.join("hosts.yml"), inventory(fleet))?;
    let targets: Vec<ScrapeTarget> = fleet
        .hosts
        .iter()
        .map(|h| {
            ScrapeTarget::new(
                fleet.name(),
                &h.name,
                &h.dc,
                &h.roles,
                &format!("{}:{}", h.address, fleet.ports_of(h).http),
            )
        })
        .collect();
    write(
        out.join("prometheus")
            .join(format!("{}.json", fleet.name())),
        serde_json::to_string_pretty(&targets)?,
    )?;
    write(
        out.join("prometheus").join(format!("{}.yml", fleet.name())),
        scrape_config(fleet),
    )?;
    Ok(rendered)
}

/// How often Prometheus scrapes fleet nodes (the dashboards' `$__rate_interval` assumes 15s).
pub const SCRAPE_INTERVAL: &str = "15s";

/// A Prometheus config with one scrape job for the fleet, reading its targets (and their
/// `fleet`, `dc`, `role`, `roles` and `instance` labels) from `<fleet>.json` beside it: the
/// file an operator drops into their Prometheus (or merges into its `scrape_configs`).
pub fn scrape_config(fleet: &Fleet) -> String {
    let name = fleet.name();
    let mut out = String::new();
    let _ = write!(
        out,
        "# Prometheus scrape config of fleet {name}; generated by `roost-fleet render`, never edited by hand.
# Put it and {name}.json (the targets with their fleet/dc/role/roles/instance labels) in one
# directory and use it as prometheus.yml, or merge its job into your scrape_configs (relative
# file_sd paths are read from the config file's directory). The hosts' firewalls open the
# metrics port only to the monitoring networks (Ansible: roost_node_monitoring_networks).
"
    );
    let _ = writeln!(out, "scrape_configs:");
    let _ = writeln!(out, "  - job_name: {}", y(&format!("roost-{name}")));
    let _ = writeln!(out, "    scrape_interval: {SCRAPE_INTERVAL}");
    let _ = writeln!(out, "    scrape_timeout: 10s");
    let _ = writeln!(out, "    metrics_path: /metrics");
    let _ = writeln!(out, "    file_sd_configs:");
    let _ = writeln!(out, "      - files: [{}]", y(&format!("{name}.json")));
    let _ = writeln!(out, "        refresh_interval: 1m");
    out
}

/// One entry of a Prometheus `file_sd_configs` file: where to scrape a node and the labels the
/// dashboards and alerts group by (`fleet`, `dc`, `role`, `instance`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ScrapeTarget {
    pub targets: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl ScrapeTarget {
    /// `role` is the host's primary role: the one its name starts with.
    pub fn new(fleet: &str, host: &str, dc: &str, roles: &[Role], address: &str) -> Self {
        let primary = host
            .split_once('-')
            .map(|(r, _)| r.to_owned())
            .or_else(|| roles.first().map(|r| r.as_str().to_owned()))
            .unwrap_or_default();
        let labels = [
            ("fleet", fleet.to_owned()),
            ("dc", dc.to_owned()),
            ("role", primary),
            (
                "roles",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("instance", host.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        ScrapeTarget {
            targets: vec![address.to_owned()],
            labels,
        }
    }
}

/// YAML string literal (double-quoted, escaped).
fn y(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The Ansible inventory: one group per role, all under the fleet's group, with fleet vars.
pub fn inventory(fleet: &Fleet) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Ansible inventory of fleet {}; generated by `roost-fleet render`, never edited by hand.",
        fleet.name()
    );
    let _ = writeln!(out, "all:");
    let _ = writeln!(out, "  children:");
    let _ = writeln!(out, "    {}:", fleet.name());
    let _ = writeln!(out, "      vars:");
    let _ = writeln!(out, "        roost_node_fleet: {}", y(fleet.name()));
    let _ = writeln!(
        out,
        "        roost_node_version: {}",
        y(&fleet.fleet.node_version)
    );
    let _ = writeln!(
        out,
        "        roost_node_cluster_id: {}",
        fleet.fleet.cluster_id
    );
    let _ = writeln!(out, "      children:");
    for role in Role::ALL {
        let members: Vec<&Host> = fleet
            .hosts
            .iter()
            .filter(|h| h.roles.contains(&role))
            .collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(out, "        {}:", role.as_str());
        let _ = writeln!(out, "          hosts:");
        for h in members {
            let _ = writeln!(out, "            {}:", h.name);
            let _ = writeln!(
                out,
                "              ansible_host: {}",
                y(&h.address.to_string())
            );
        }
    }
    out
}

/// Where a store host on PostgreSQL finds its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresStore {
    /// libpq URL, without a password.
    pub url: String,
    /// `store.postgres_password_file`: `<data_dir>/postgres-password`.
    pub password_file: PathBuf,
}

/// The PostgreSQL database of `host`'s store, if it runs a store there (`store.backend =
/// "postgres"` in its `[node]`, `[role.store]` or host `node` tables).
pub fn postgres_store(fleet: &Fleet, host: &Host) -> Option<PostgresStore> {
    let config = node_config(fleet, host).ok()?;
    let store = config.store;
    if !store.enabled || store.backend != Backend::Postgres {
        return None;
    }
    Some(PostgresStore {
        url: store.postgres_url,
        password_file: store.postgres_password_file?,
    })
}

/// Per-host Ansible variables: the rendered config and the facts the role needs.
pub fn host_vars(fleet: &Fleet, host: &Host, roost_toml: &str) -> String {
    let ports = fleet.ports_of(host);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Host vars of {}; generated by `roost-fleet render`.",
        host.name
    );
    let _ = writeln!(out, "roost_node_host_name: {}", y(&host.name));
    let _ = writeln!(out, "roost_node_dc: {}", y(&host.dc));
    let _ = writeln!(
        out,
        "roost_node_roles: [{}]",
        host.roles
            .iter()
            .map(|r| y(r.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "roost_node_tcp_port: {}", ports.tcp);
    let _ = writeln!(out, "roost_node_ws_port: {}", ports.ws);
    let _ = writeln!(out, "roost_node_http_port: {}", ports.http);
    let _ = writeln!(
        out,
        "roost_node_data_dir: {}",
        y(&fleet.fleet.data_dir.display().to_string())
    );
    if let Some(id) = &host.peer_id {
        let _ = writeln!(out, "roost_node_peer_id: {}", y(id));
    }
    // Only for a store on PostgreSQL (RocksDB hosts' vars stay as they were): the role checks
    // that the database answers and writes the password file the config names.
    if let Some(store) = postgres_store(fleet, host) {
        let _ = writeln!(out, "roost_node_store_backend: \"postgres\"");
        let _ = writeln!(out, "roost_node_store_postgres_url: {}", y(&store.url));
        let _ = writeln!(
            out,
            "roost_node_store_postgres_password_file: {}",
            y(&store.password_file.display().to_string())
        );
    }
    let _ = writeln!(out, "roost_node_config: |");
    for line in roost_toml.lines() {
        // Blank lines stay blank (no trailing spaces); a literal block keeps them either way.
        if line.is_empty() {
            let _ = writeln!(out);
        } else {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> (Fleet, PathBuf) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("{name}.toml"));
        (Fleet::load(&path).unwrap(), path)
    }

    #[test]
    fn rendered_configs_parse_with_the_node_loader_for_every_host_of_both_fleets() {
        for name in ["staging", "beta"] {
            let (fleet, path) = shipped(name);
            let out = tempfile::tempdir().unwrap();
            let rendered = render(&fleet, &path, out.path()).unwrap();
            assert_eq!(rendered.files.len(), fleet.hosts.len() * 2 + 3);
            let scrape =
                std::fs::read_to_string(out.path().join("prometheus").join(format!("{name}.yml")))
                    .unwrap();
            assert!(scrape.contains(&format!("job_name: \"roost-{name}\"")));
            assert!(scrape.contains(&format!("files: [\"{name}.json\"]")));
            let targets: Vec<ScrapeTarget> = serde_json::from_str(
                &std::fs::read_to_string(
                    out.path().join("prometheus").join(format!("{name}.json")),
                )
                .unwrap(),
            )
            .unwrap();
            assert_eq!(targets.len(), fleet.hosts.len());
            for t in &targets {
                for label in ["fleet", "dc", "role", "instance"] {
                    assert!(t.labels.contains_key(label), "{t:?}");
                }
            }
            for host in &fleet.hosts {
                let file = out.path().join("hosts").join(&host.name).join("roost.toml");
                let text = std::fs::read_to_string(&file).unwrap();
                let config = Config::from_toml_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                let ports = fleet.ports_of(host);
                assert_eq!(config.network.tcp_port, ports.tcp);
                assert_eq!(config.network.ws_port, ports.ws);
                assert_eq!(config.http.address.port(), ports.http);
                assert_eq!(config.relay.cluster_id, fleet.fleet.cluster_id);
                assert_eq!(config.relay.shards, fleet.fleet.shards);
                assert_eq!(config.relay.enabled, relays(&host.roles));
                assert_eq!(
                    config.relay.max_message_size,
                    roost_node::config::ByteSize::mib(1)
                );
                let vars = std::fs::read_to_string(
                    out.path()
                        .join("host_vars")
                        .join(format!("{}.yml", host.name)),
                )
                .unwrap();
                assert!(vars.contains(&format!("roost_node_host_name: \"{}\"", host.name)));
                assert!(vars.contains("roost_node_config: |"));
            }
            let inventory = std::fs::read_to_string(out.path().join("hosts.yml")).unwrap();
            for host in &fleet.hosts {
                assert!(inventory.contains(&format!("{}:", host.name)));
            }
        }
    }

    fn files_under(dir: &Path) -> std::collections::BTreeMap<PathBuf, String> {
        let mut files = std::collections::BTreeMap::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let text = std::fs::read_to_string(&path).unwrap();
                    files.insert(path.strip_prefix(dir).unwrap().to_owned(), text);
                }
            }
        }
        files
    }

    /// `ansible/inventories/<fleet>/` is committed output of `roost-fleet render`; it must be
    /// what rendering the fleet file gives now.
    #[test]
    fn committed_ansible_inventories_are_up_to_date_with_the_fleet_files() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for name in ["staging", "beta"] {
            let (fleet, _) = shipped(name);
            let out = tempfile::tempdir().unwrap();
            // The path the header names: render runs from the repository root.
            let source = Path::new("fleet").join(format!("{name}.toml"));
            render(&fleet, &source, out.path()).unwrap();
            let committed = repo.join("ansible").join("inventories").join(name);
            assert!(
                committed.is_dir(),
                "{} is missing; run scripts/render-inventories",
                committed.display()
            );
            let want = files_under(out.path());
            let have = files_under(&committed);
            let stale: Vec<_> = want
                .keys()
                .chain(have.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|f| want.get(*f) != have.get(*f))
                .collect();
            assert!(
                stale.is_empty(),
                "ansible/inventories/{name} differs from `roost-fleet render fleet/{name}.toml` in {stale:?}; run scripts/render-inventories and commit the result"
            );
        }
    }

    /// A fleet whose store hosts keep their archive in an existing PostgreSQL database:
    /// `[role.store]` for all of them, a host's own `node` table for one on another database
    /// and for one left on RocksDB.
    const POSTGRES_FLEET: &str = r#"
[fleet]
name = "t"
cluster_id = 16
shards = [32]
node_version = "0.1.0"
rendezvous_points = ["rendezvous-01.dc1.t"]
data_dir = "/srv/roost"
[role.store]
store.backend = "postgres"
store.postgres_url = "postgres://roost@db-01.dc1.internal:5432/roost_t"
[[hosts]]
name = "boot-01.dc1.t"
address = "10.0.0.1"
dc = "dc1"
roles = ["boot"]
[[hosts]]
name = "rendezvous-01.dc1.t"
address = "10.0.0.2"
dc = "dc1"
roles = ["rendezvous", "relay"]
[[hosts]]
name = "store-01.dc1.t"
address = "10.0.0.3"
dc = "dc1"
roles = ["store", "relay"]
[[hosts]]
name = "store-02.dc1.t"
address = "10.0.0.4"
dc = "dc1"
roles = ["store", "relay"]
node = { store = { postgres_url = "postgresql://roost_b@db-02.dc1.internal/roost_t?sslmode=require" } }
[[hosts]]
name = "store-03.dc1.t"
address = "10.0.0.5"
dc = "dc1"
roles = ["store", "relay"]
node = { store = { backend = "rocksdb" } }
"#;

    #[test]
    fn a_store_on_postgres_renders_backend_url_and_password_file_and_no_password() {
        let fleet = Fleet::parse(POSTGRES_FLEET, Path::new("t.toml")).unwrap();
        let out = tempfile::tempdir().unwrap();
        render(&fleet, Path::new("fleet/t.toml"), out.path()).unwrap();
        let password_file = PathBuf::from("/srv/roost/postgres-password");
        let expected = [
            (
                "store-01.dc1.t",
                Some("postgres://roost@db-01.dc1.internal:5432/roost_t"),
            ),
            (
                "store-02.dc1.t",
                Some("postgresql://roost_b@db-02.dc1.internal/roost_t?sslmode=require"),
            ),
            ("store-03.dc1.t", None),
            ("boot-01.dc1.t", None),
            ("rendezvous-01.dc1.t", None),
        ];
        for (name, url) in expected {
            let host = fleet.host(name).unwrap();
            let file = out.path().join("hosts").join(name).join("roost.toml");
            let text = std::fs::read_to_string(&file).unwrap();
            // The node's own loader accepts what was rendered, password file key included.
            let config =
                Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let vars =
                std::fs::read_to_string(out.path().join("host_vars").join(format!("{name}.yml")))
                    .unwrap();
            match url {
                Some(url) => {
                    assert_eq!(config.store.backend, Backend::Postgres, "{name}");
                    assert_eq!(config.store.postgres_url, url, "{name}");
                    assert_eq!(
                        config.store.postgres_password_file.as_deref(),
                        Some(password_file.as_path()),
                        "{name}"
                    );
                    assert_eq!(
                        postgres_store(&fleet, host),
                        Some(PostgresStore {
                            url: url.to_owned(),
                            password_file: password_file.clone()
                        })
                    );
                    for line in [
                        "roost_node_store_backend: \"postgres\"".to_owned(),
                        format!("roost_node_store_postgres_url: \"{url}\""),
                        "roost_node_store_postgres_password_file: \"/srv/roost/postgres-password\""
                            .to_owned(),
                    ] {
                        assert!(
                            vars.lines().any(|l| l == line),
                            "{name}: no `{line}` in\n{vars}"
                        );
                    }
                }
                None => {
                    assert_eq!(config.store.backend, Backend::Rocksdb, "{name}");
                    assert_eq!(config.store.postgres_password_file, None, "{name}");
                    assert_eq!(postgres_store(&fleet, host), None, "{name}");
                    assert!(!vars.contains("roost_node_store_"), "{name}:\n{vars}");
                }
            }
        }
        // Nothing rendered holds a password: no libpq password field, no user:password@.
        for (path, text) in files_under(out.path()) {
            for needle in ["password=", "PGPASSWORD", "roost:", "roost_b:"] {
                assert!(
                    !text.contains(needle),
                    "{} contains `{needle}`",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn a_password_in_the_postgres_url_is_refused_without_being_printed() {
        for url in [
            "postgres://roost:hunter2@db-01.dc1.internal:5432/roost_t",
            "postgres://roost@db-01.dc1.internal/roost_t?password=hunter2",
        ] {
            let text =
                POSTGRES_FLEET.replace("postgres://roost@db-01.dc1.internal:5432/roost_t", url);
            let e = Fleet::parse(&text, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("host `store-01.dc1.t`: store.postgres_url")
                    && e.contains("carries a password")
                    && e.contains("roost_node_store_postgres_password"),
                "{e}"
            );
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn the_postgres_password_file_is_the_fleets_to_place() {
        let text = POSTGRES_FLEET.replace(
            "[role.store]\n",
            "[role.store]\nstore.postgres_password_file = \"/etc/roost/pw\"\n",
        );
        let e = Fleet::parse(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`store.postgres_password_file` is set by the fleet"),
            "{e}"
        );
    }

    #[test]
    fn layers_apply_fleet_then_role_then_host() {
        let text = r#"
[fleet]
name = "t"
cluster_id = 16
shards = [32]
node_version = "0.1.0"
rendezvous_points = ["rendezvous-01.dc1.t"]
[node]
network.max_connections = 100
[role.relay]
network.max_connections = 200
[[hosts]]
name = "boot-01.dc1.t"
address = "10.0.0.1"
dc = "dc1"
roles = ["boot"]
peer_id = "16Uiu2HAmT3ut83osakwwZwCFfJsY6VagfbzgPwi7swrwEBb4m1Rb"
[[hosts]]
name = "rendezvous-01.dc1.t"
address = "10.0.0.2"
dc = "dc1"
roles = ["rendezvous", "relay"]
node = { network = { max_connections = 300 } }
[[hosts]]
name = "relay-01.dc1.t"
address = "10.0.0.3"
dc = "dc1"
roles = ["relay"]
"#;
        let fleet = Fleet::parse(text, Path::new("t.toml")).unwrap();
        let max = |i: usize| {
            node_config(&fleet, &fleet.hosts[i])
                .unwrap()
                .network
                .max_connections
        };
        assert_eq!(max(0), 100, "fleet [node]");
        assert_eq!(max(1), 300, "host beats role");
        assert_eq!(max(2), 200, "role beats fleet");
        let relay = node_config(&fleet, &fleet.hosts[2]).unwrap();
        assert_eq!(
            relay.network.peers.len(),
            1,
            "boot hosts with a known id are static peers"
        );
        assert!(relay.network.peers[0]
            .to_string()
            .starts_with("/ip4/10.0.0.1/tcp/30303/p2p/"));
    }
}
