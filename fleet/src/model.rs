//! Fleet definitions (`fleet/<name>.toml`): the fleet's cluster and shards, its hosts with their
//! roles, ports and datacentres, the node configuration they share, and the keys it trusts.
//! Loading validates everything an operator can get wrong, with one clear line per problem.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

/// What a host does in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Bootstrap relay node: relay plus the light-client services (light push, filter, peer exchange).
    Boot,
    /// Relay only.
    Relay,
    /// Mailserver: relay plus the store (needs relay to have anything to store).
    Store,
    /// Rendezvous server for the fleet.
    Rendezvous,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Boot, Role::Relay, Role::Store, Role::Rendezvous];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Boot => "boot",
            Role::Relay => "relay",
            Role::Store => "store",
            Role::Rendezvous => "rendezvous",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role `{s}`; roles are boot, relay, store, rendezvous"))
    }
}

/// Ports a node listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    /// libp2p TCP.
    pub tcp: u16,
    /// libp2p WebSocket (browsers).
    pub ws: u16,
    /// Metrics, health and admin HTTP.
    pub http: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            tcp: 30303,
            ws: 8000,
            http: 8008,
        }
    }
}

/// Per-host port overrides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortOverrides {
    pub tcp: Option<u16>,
    pub ws: Option<u16>,
    pub http: Option<u16>,
}

/// The `[fleet]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// Short fleet name, the last part of every host name (`staging`, `beta`).
    pub name: String,
    /// Waku cluster id.
    pub cluster_id: u16,
    /// Shards the fleet relays.
    pub shards: Vec<u16>,
    /// The roost version this fleet is expected to run.
    pub node_version: String,
    /// Host names of the rendezvous points nodes register with (hosts with the rendezvous role).
    pub rendezvous_points: Vec<String>,
    /// Operator public keys whose attestations this fleet trusts (hex, as `roost operator pubkey` prints).
    #[serde(default)]
    pub trusted_operator_keys: Vec<String>,
    /// How long attestations issued for this fleet are valid.
    #[serde(default = "default_attestation_validity")]
    pub attestation_validity: String,
    /// Where node data lives on deployed hosts.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

fn default_attestation_validity() -> String {
    "30d".into()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/roost")
}

/// One host of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// `<role>-NN.<dc>.<fleet>`, e.g. `store-01.do-ams3.staging`.
    pub name: String,
    /// Address other fleet nodes and clients reach it at.
    pub address: IpAddr,
    /// Datacentre label (also the second part of the name).
    pub dc: String,
    pub roles: Vec<Role>,
    /// PeerId of the host's node key, once provisioned (public; the key itself is a secret).
    #[serde(default)]
    pub peer_id: Option<String>,
    #[serde(default)]
    pub ports: PortOverrides,
    /// Node config (roost.toml keys) for this host only.
    #[serde(default)]
    pub node: toml::Table,
}

/// A fleet definition file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    pub fleet: FleetSection,
    /// Default ports of every host.
    #[serde(default)]
    pub ports: Ports,
    /// Node config (roost.toml keys) for every host: retention, quotas, limits.
    #[serde(default)]
    pub node: toml::Table,
    /// Node config per role, applied after `[node]` and before the host's own.
    #[serde(default)]
    pub role: BTreeMap<Role, toml::Table>,
    pub hosts: Vec<Host>,
}

/// A fleet definition that does not hold together. One line each.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot read fleet file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fleet file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("fleet `{fleet}`: {message}")]
    Invalid { fleet: String, message: String },
}

impl Fleet {
    /// Loads and validates a fleet file.
    pub fn load(path: &Path) -> Result<Fleet, FleetError> {
        let text = std::fs::read_to_string(path).map_err(|source| FleetError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates fleet TOML; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Fleet, FleetError> {
        let fleet: Fleet = toml::from_str(text).map_err(|e| FleetError::Parse {
            path: path.to_owned(),
            message: one_line(&e, text),
        })?;
        fleet.validate()?;
        Ok(fleet)
    }

    /// Finds `name` as a path, or as `fleet/<name>.toml` / `<name>.toml` from here or the
    /// repository root, so `roost-fleet render staging` works from anywhere in the repo.
    pub fn resolve(name: &str) -> Result<PathBuf, FleetError> {
        let direct = PathBuf::from(name);
        if direct.is_file() {
            return Ok(direct);
        }
        let file = format!("{name}.toml");
        let mut candidates = vec![PathBuf::from("fleet").join(&file), PathBuf::from(&file)];
        let manifest_fleet = Path::new(env!("CARGO_MANIFEST_DIR")).join(&file);
        candidates.push(manifest_fleet);
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| FleetError::Read {
                path: direct,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no such fleet file; give a path or a name such as `staging` (looked for fleet/{file})"),
                ),
            })
    }

    pub fn name(&self) -> &str {
        &self.fleet.name
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The ports `host` uses after its overrides.
    pub fn ports_of(&self, host: &Host) -> Ports {
        Ports {
            tcp: host.ports.tcp.unwrap_or(self.ports.tcp),
            ws: host.ports.ws.unwrap_or(self.ports.ws),
            http: host.ports.http.unwrap_or(self.ports.http),
        }
    }

    fn invalid(&self, message: impl Into<String>) -> FleetError {
        FleetError::Invalid {
            fleet: self.fleet.name.clone(),
            message: message.into(),
        }
    }

    /// Every rule a fleet definition must follow.
    pub fn validate(&self) -> Result<(), FleetError> {
        let f = &self.fleet;
        if f.name.is_empty()
            || !f
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(self.invalid(format!(
                "fleet name `{}` must be lowercase letters, digits and dashes",
                f.name
            )));
        }
        if f.shards.is_empty() {
            return Err(self.invalid("fleet.shards is empty; list the shards the fleet relays"));
        }
        if humantime::parse_duration(&f.attestation_validity).is_err() {
            return Err(self.invalid(format!(
                "fleet.attestation_validity `{}` is not a duration such as `30d`",
                f.attestation_validity
            )));
        }
        if self.hosts.is_empty() {
            return Err(self.invalid("the fleet has no hosts; add [[hosts]] entries"));
        }
        let mut names = BTreeSet::new();
        let mut endpoints: BTreeMap<(IpAddr, u16), &str> = BTreeMap::new();
        for host in &self.hosts {
            if !names.insert(host.name.as_str()) {
                return Err(self.invalid(format!("host `{}` is defined twice", host.name)));
            }
            self.validate_name(host)?;
            if host.roles.is_empty() {
                return Err(self.invalid(format!("host `{}` has no roles", host.name)));
            }
            let roles: BTreeSet<Role> = host.roles.iter().copied().collect();
            if roles.contains(&Role::Store)
                && !roles.contains(&Role::Relay)
                && !roles.contains(&Role::Boot)
            {
                return Err(self.invalid(format!(
                    "host `{}` has the store role without relay: a store node stores what it relays; add \"relay\" to its roles",
                    host.name
                )));
            }
            let ports = self.ports_of(host);
            let list = [("tcp", ports.tcp), ("ws", ports.ws), ("http", ports.http)];
            for (i, (a_name, a)) in list.iter().enumerate() {
                for (b_name, b) in &list[i + 1..] {
                    if a == b {
                        return Err(self.invalid(format!(
                            "host `{}` uses port {a} for both {a_name} and {b_name}",
                            host.name
                        )));
                    }
                }
            }
            for (_, port) in list {
                if let Some(other) = endpoints.insert((host.address, port), &host.name) {
                    return Err(self.invalid(format!(
                        "hosts `{other}` and `{}` both use {}:{port}",
                        host.name, host.address
                    )));
                }
            }
            if let Some(peer_id) = &host.peer_id {
                if peer_id.parse::<libp2p::PeerId>().is_err() {
                    return Err(self.invalid(format!(
                        "host `{}` has peer_id `{peer_id}`, which is not a libp2p PeerId",
                        host.name
                    )));
                }
            }
        }
        if f.rendezvous_points.is_empty() {
            return Err(self.invalid(
                "the fleet has no rendezvous point; list a host with the rendezvous role in fleet.rendezvous_points",
            ));
        }
        for point in &f.rendezvous_points {
            match self.host(point) {
                None => {
                    return Err(self.invalid(format!(
                        "rendezvous point `{point}` is not one of the fleet's hosts"
                    )))
                }
                Some(h) if !h.roles.contains(&Role::Rendezvous) => {
                    return Err(self.invalid(format!(
                        "rendezvous point `{point}` does not have the rendezvous role"
                    )))
                }
                Some(_) => {}
            }
        }
        if !self.hosts.iter().any(|h| h.roles.contains(&Role::Boot)) {
            return Err(
                self.invalid("the fleet has no boot host; nodes and clients need one to join")
            );
        }
        // Every host's node config must be one the node accepts.
        for host in &self.hosts {
            crate::render::node_config(self, host).map_err(|e| self.invalid(e.to_string()))?;
        }
        Ok(())
    }

    fn validate_name(&self, host: &Host) -> Result<(), FleetError> {
        let expected = format!(".{}.{}", host.dc, self.fleet.name);
        let bad = || {
            self.invalid(format!(
                "host name `{}` must be <role>-NN.{}.{} (e.g. store-01.{}.{})",
                host.name, host.dc, self.fleet.name, host.dc, self.fleet.name
            ))
        };
        let prefix = host.name.strip_suffix(&expected).ok_or_else(bad)?;
        let (role, number) = prefix.rsplit_once('-').ok_or_else(bad)?;
        let role: Role = role.parse().map_err(|_| bad())?;
        if number.len() != 2 || !number.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        if !host.roles.contains(&role) {
            return Err(self.invalid(format!(
                "host `{}` is named for the {role} role but its roles are {:?}",
                host.name, host.roles
            )));
        }
        Ok(())
    }
}

fn one_line(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let line = text.get(..span.start).unwrap_or("").matches('\n').count() + 1;
            format!("line {line}: {}", e.message().trim().replace('\n', " "))
        }
        None => e.message().trim().replace('\n', " "),
    }
}

#[cfg(test)]
#[path = "model/tests.rs"]
mod tests;
