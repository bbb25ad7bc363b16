//! The node's configuration: one serde tree, loaded from layers
//! defaults < TOML file (`--config`) < `ROOST_*` environment < command-line flags.
//!
//! Every key has a generated env var and flag (`store.retention` → `ROOST_STORE_RETENTION`,
//! `--store-retention`); unknown keys in any layer are errors naming the key. The set of keys is
//! the union of the defaults and `roost.example.toml` (which documents every key, including the
//! optional ones that have no default); a unit test keeps the two in step.

mod layers;

use std::{net::IpAddr, net::SocketAddr, path::PathBuf, time::Duration};

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

pub use crate::telemetry::{LogConfig, LogFormat};
pub use crate::units::{self, ByteSize};
pub use layers::{env_var_for, flag_for, ConfigFlags, KeyKind, Schema};

/// The example config shipped with the source; it documents every key.
pub const EXAMPLE_TOML: &str = include_str!("../../../roost.example.toml");

/// The whole node configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub network: NetworkConfig,
    pub relay: crate::relay::Config,
    pub throttle: crate::throttle::Config,
    pub lightpush: crate::lightpush::Config,
    pub filter: crate::filter::Config,
    pub peer_exchange: crate::peer_exchange::Config,
    pub store: crate::store::Config,
    pub store_sync: crate::sync::Config,
    pub rendezvous: crate::rendezvous::Config,
    pub http: HttpConfig,
    pub rest: crate::rest::Config,
    pub log: LogConfig,
    pub operator: crate::operator::Config,
    pub discovery: crate::discovery::Config,
}

/// Where the node keeps its state and how it stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Directory for the node key and databases; created on start. Default `./roost-data`.
    pub data_dir: PathBuf,
    /// Longest a graceful shutdown may take before the node exits anyway. Default `5s`.
    #[serde(with = "units::duration")]
    pub shutdown_timeout: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./roost-data"),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// libp2p listeners, static peers and connection limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Address the p2p listeners bind to. Default `0.0.0.0`.
    pub listen_ip: IpAddr,
    /// TCP listener port; `0` picks a free port. Default `60000`.
    pub tcp_port: u16,
    /// Whether to listen for WebSocket connections (browsers, js-waku). Default `true`.
    pub ws_enabled: bool,
    /// WebSocket listener port; `0` picks a free port. Default `8000`.
    pub ws_port: u16,
    /// PEM certificate chain for the WebSocket listener. With `ws_tls_key` the listener serves
    /// secure WebSocket (`/wss`), which browsers need. Default: none (plain `/ws`).
    pub ws_tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `ws_tls_cert`. Default: none.
    pub ws_tls_key: Option<PathBuf>,
    /// Static peers dialled at start and redialled with backoff while disconnected.
    pub peers: Vec<Multiaddr>,
    /// Addresses to announce instead of/in addition to the listen addresses (NAT, DNS).
    pub external_addresses: Vec<Multiaddr>,
    /// Most established connections in total. Default `300`.
    pub max_connections: u32,
    /// Most connections being set up at once (inbound). Default `100`.
    pub max_pending_connections: u32,
    /// Most established connections to one peer. Default `2`.
    pub max_connections_per_peer: u32,
    /// Close connections with no open streams after this long. Default `60s`.
    #[serde(with = "units::duration")]
    pub idle_connection_timeout: Duration,
    /// Upper bound of the exponential backoff between redials of a static peer. Default `60s`.
    #[serde(with = "units::duration")]
    pub redial_max_backoff: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen_ip: IpAddr::from([0, 0, 0, 0]),
            tcp_port: 60000,
            ws_enabled: true,
            ws_port: 8000,
            ws_tls_cert: None,
            ws_tls_key: None,
            peers: Vec::new(),
            external_addresses: Vec::new(),
            max_connections: 300,
            max_pending_connections: 100,
            max_connections_per_peer: 2,
            idle_connection_timeout: Duration::from_secs(60),
            redial_max_backoff: Duration::from_secs(60),
        }
    }
}

/// The operator HTTP endpoint: `/metrics`, `/health`, `/debug/v1/info`, `/debug/pprof/heap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve the HTTP endpoint. Default `true`.
    pub enabled: bool,
    /// Bind address; keep it on loopback or a monitoring network. Default `127.0.0.1:8008`.
    pub address: SocketAddr,
    /// Sample heap allocations from start for `/debug/pprof/heap` (jemalloc profiling: one
    /// sample per 512 KiB allocated on average, a few percent of CPU). Default `false`.
    pub heap_profile: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            address: SocketAddr::from(([127, 0, 0, 1], 8008)),
            heap_profile: false,
        }
    }
}

/// A config that failed to load; the message is one line naming the problem and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error(
        "unknown config key `{key}` in {origin}; check its spelling against roost.example.toml"
    )]
    UnknownKey { key: String, origin: String },
    #[error("unknown environment variable {var}: it matches no config key (keys map to ROOST_<SECTION>_<KEY>, e.g. ROOST_NETWORK_TCP_PORT)")]
    UnknownEnv { var: String },
    #[error("invalid value for `{key}` (from {origin}): {message}")]
    BadValue {
        key: String,
        origin: String,
        message: String,
    },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Where each layer comes from.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The TOML file, if any.
    pub file: Option<PathBuf>,
    /// Environment variables (only `ROOST_*` ones are looked at).
    pub env: Vec<(String, String)>,
    /// Command-line overrides as (key, raw values).
    pub flags: Vec<(String, Vec<String>)>,
}

impl Sources {
    /// The file and flags given, with the process environment.
    pub fn from_process(file: Option<PathBuf>, flags: &ConfigFlags) -> Self {
        Sources {
            file,
            env: std::env::vars().collect(),
            flags: flags.values.clone(),
        }
    }
}

impl Config {
    /// What the node's ENR announces (services, cluster, shards, external addresses).
    pub fn enr_announcement(&self) -> crate::waku_enr::Announcement<'_> {
        crate::waku_enr::Announcement {
            external_addresses: &self.network.external_addresses,
            relay: self.relay.enabled,
            store: self.serves_store(),
            filter: self.filter.enabled,
            lightpush: self.lightpush.enabled,
            sync: self.runs_store_sync(),
            cluster_id: self.relay.cluster_id,
            shards: &self.relay.shards,
        }
    }

    /// Whether this node runs the store: `[store] enabled` and something to fill it, the relay
    /// or store sync (a replica that only syncs, as nwaku runs with `--relay=false
    /// --store-sync=true`). A store with neither would have nothing to store (nwaku#2586);
    /// `validate` refuses that combination, so this is a guard for configs built in code.
    pub fn serves_store(&self) -> bool {
        self.store.enabled && (self.relay.enabled || self.store_sync.enabled)
    }

    /// Whether this node reconciles its archive with other store nodes.
    pub fn runs_store_sync(&self) -> bool {
        self.serves_store() && self.store_sync.enabled
    }

    /// Loads and validates the configuration from its layers.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let config = layers::merge(sources)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses one TOML document (no env, no flags), as `roost-fleet render` output is checked.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config = layers::merge_text(text, "the given TOML")?;
        config.validate()?;
        Ok(config)
    }

    /// The effective config as TOML, as `roost config dump` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// Cross-field checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.relay.validate().map_err(ConfigError::Invalid)?;
        self.throttle.validate().map_err(ConfigError::Invalid)?;
        self.rendezvous.validate().map_err(ConfigError::Invalid)?;
        self.store.validate().map_err(ConfigError::Invalid)?;
        self.store_sync.validate().map_err(ConfigError::Invalid)?;
        self.filter.validate().map_err(ConfigError::Invalid)?;
        self.rest.validate().map_err(ConfigError::Invalid)?;
        self.peer_exchange
            .validate(self.relay.cluster_id)
            .map_err(ConfigError::Invalid)?;
        if self.store.enabled && !self.relay.enabled && !self.store_sync.enabled {
            return Err(ConfigError::Invalid(
                "store.enabled needs something to fill the archive, but relay.enabled and store_sync.enabled are both false; turn the relay or store sync on, or set store.enabled = false".into(),
            ));
        }
        for (enabled, key) in [
            (self.lightpush.enabled, "lightpush.enabled"),
            (self.filter.enabled, "filter.enabled"),
        ] {
            if enabled && !self.relay.enabled {
                return Err(ConfigError::Invalid(format!(
                    "{key} needs the relay, but relay.enabled is false; turn the relay on or set {key} = false"
                )));
            }
        }
        self.operator.validate().map_err(ConfigError::Invalid)?;
        if self.network.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "network.max_connections must be at least 1".into(),
            ));
        }
        if self.network.max_connections_per_peer == 0 {
            return Err(ConfigError::Invalid(
                "network.max_connections_per_peer must be at least 1".into(),
            ));
        }
        if self.network.ws_enabled
            && self.network.ws_port != 0
            && self.network.ws_port == self.network.tcp_port
        {
            return Err(ConfigError::Invalid(format!(
                "network.tcp_port and network.ws_port are both {}; give the WebSocket listener another port (--ws-port) or 0",
                self.network.tcp_port
            )));
        }
        match (&self.network.ws_tls_cert, &self.network.ws_tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid(
                    "set both network.ws_tls_cert and network.ws_tls_key (PEM files) for secure WebSocket, or neither".into(),
                ))
            }
            (Some(_), Some(_)) if !self.network.ws_enabled => {
                return Err(ConfigError::Invalid(
                    "network.ws_tls_cert is set but network.ws_enabled is false; enable the WebSocket listener or remove the TLS files".into(),
                ))
            }
            _ => {}
        }
        for peer in &self.network.peers {
            if !peer.iter().any(|p| {
                matches!(
                    p,
                    libp2p::multiaddr::Protocol::Tcp(_) | libp2p::multiaddr::Protocol::Dns(_)
                )
            }) {
                return Err(ConfigError::Invalid(format!(
                    "static peer `{peer}` in network.peers has no /tcp part; write e.g. /ip4/10.0.0.1/tcp/60000/p2p/<peer id>"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
