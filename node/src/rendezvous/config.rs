//! The `[rendezvous]` config section: the server's bounds and caps, and the client's points,
//! TTL and dialling target.

use std::time::Duration;

use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::units;

/// Longest TTL the spec allows a rendezvous point to grant.
pub const SPEC_MAX_TTL: Duration = Duration::from_secs(72 * 3600);
/// Largest DISCOVER page the spec recommends (and this server allows).
pub const SPEC_MAX_DISCOVER_LIMIT: u32 = 1000;
/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 255;

/// Rendezvous server and client settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve `/rendezvous/1.0.0`, persisting registrations in `<data_dir>/rendezvous`.
    /// Default `true` (Waku: every relay node is a rendezvous point).
    pub enabled: bool,
    /// Also serve nwaku's `/vac/waku/rendezvous/1.0.0` from the same table (needs `enabled`).
    /// Default `true`.
    pub waku_protocol: bool,
    /// Shortest TTL a REGISTER may ask for. Default `60s` (Waku registers with 60 s TTLs; the
    /// spec recommends 2 h).
    #[serde(with = "units::duration")]
    pub min_ttl: Duration,
    /// Longest TTL a REGISTER may ask for; at most 72 h (the spec's maximum). Default `72h`.
    #[serde(with = "units::duration")]
    pub max_ttl: Duration,
    /// TTL of a REGISTER that gives none. Default `2h` (the spec's default).
    #[serde(with = "units::duration")]
    pub default_ttl: Duration,
    /// Most namespaces one peer may be registered in at once. Default `1000` (spec).
    pub max_registrations_per_peer: u32,
    /// Most registrations the table holds; beyond it REGISTER answers `E_UNAVAILABLE`.
    /// About 0.7 KiB of memory each. Default `200000`.
    pub max_registrations: u32,
    /// Largest DISCOVER page; smaller requested limits are honoured. At most 1000 (spec).
    /// Default `1000`.
    pub max_discover_limit: u32,

    /// Rendezvous points this node registers with and discovers peers from: full multiaddrs
    /// ending in `/p2p/<peer id>`. Default none (the client is off).
    pub points: Vec<Multiaddr>,
    /// TTL this node asks for when it registers. Default `5m`.
    #[serde(with = "units::duration")]
    pub register_ttl: Duration,
    /// How often this node refreshes its registrations; must be shorter than `register_ttl`.
    /// Default `1m`: one REGISTER per shard per minute, within a Roost point's default quota
    /// (`throttle.rendezvous_register`, 10 a minute per peer) for up to 8 shards. (nwaku
    /// refreshes every 10 s with 60 s TTLs, which Roost points accept too.)
    #[serde(with = "units::duration")]
    pub register_interval: Duration,
    /// How often this node asks the points for peers while a shard has fewer than
    /// `target_relay_peers`. Default `30s`.
    #[serde(with = "units::duration")]
    pub discover_interval: Duration,
    /// Registrations asked for per DISCOVER. Default `12` (Waku's count).
    pub discover_limit: u32,
    /// Discovered peers are dialled until every shard has this many relay peers. Default `6`
    /// (gossipsub's mesh degree).
    pub target_relay_peers: u32,
    /// Namespaces to register under besides `rs/<cluster>/<shard>` for each relay shard.
    /// Default none.
    pub namespaces: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            waku_protocol: true,
            min_ttl: Duration::from_secs(60),
            max_ttl: SPEC_MAX_TTL,
            default_ttl: Duration::from_secs(2 * 3600),
            max_registrations_per_peer: 1000,
            max_registrations: 200_000,
            max_discover_limit: SPEC_MAX_DISCOVER_LIMIT,
            points: Vec::new(),
            register_ttl: Duration::from_secs(300),
            register_interval: Duration::from_secs(60),
            discover_interval: Duration::from_secs(30),
            discover_limit: 12,
            target_relay_peers: 6,
            namespaces: Vec::new(),
        }
    }
}

impl Config {
    /// Cross-field checks, with messages that name the key and the fix.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.min_ttl < Duration::from_secs(1) {
            return Err("rendezvous.min_ttl must be at least 1s".into());
        }
        if self.max_ttl > SPEC_MAX_TTL {
            return Err(format!(
                "rendezvous.max_ttl is {}; the rendezvous spec allows at most 72h",
                humantime::format_duration(self.max_ttl)
            ));
        }
        if self.min_ttl > self.max_ttl {
            return Err("rendezvous.min_ttl is longer than rendezvous.max_ttl; swap them".into());
        }
        if self.default_ttl < self.min_ttl || self.default_ttl > self.max_ttl {
            return Err(format!(
                "rendezvous.default_ttl ({}) must lie within min_ttl ({}) and max_ttl ({})",
                humantime::format_duration(self.default_ttl),
                humantime::format_duration(self.min_ttl),
                humantime::format_duration(self.max_ttl)
            ));
        }
        if self.max_registrations_per_peer == 0 || self.max_registrations == 0 {
            return Err(
                "rendezvous.max_registrations_per_peer and rendezvous.max_registrations must be at least 1"
                    .into(),
            );
        }
        if self.max_discover_limit == 0 || self.max_discover_limit > SPEC_MAX_DISCOVER_LIMIT {
            return Err(format!(
                "rendezvous.max_discover_limit is {}; use 1 to {SPEC_MAX_DISCOVER_LIMIT}",
                self.max_discover_limit
            ));
        }
        for point in &self.points {
            if crate::addr::peer_id_of(point).is_none() {
                return Err(format!(
                    "rendezvous point `{point}` has no /p2p/<peer id> part; write the point's full address, e.g. /ip4/10.0.0.1/tcp/60000/p2p/<peer id>"
                ));
            }
        }
        if self.register_interval.is_zero() || self.register_interval >= self.register_ttl {
            return Err(format!(
                "rendezvous.register_interval ({}) must be shorter than rendezvous.register_ttl ({}), or registrations lapse between refreshes",
                humantime::format_duration(self.register_interval),
                humantime::format_duration(self.register_ttl)
            ));
        }
        if self.register_ttl > SPEC_MAX_TTL {
            return Err("rendezvous.register_ttl is over 72h, which no point accepts".into());
        }
        if self.discover_interval.is_zero() {
            return Err("rendezvous.discover_interval must be longer than 0s".into());
        }
        if self.discover_limit == 0 || self.discover_limit > SPEC_MAX_DISCOVER_LIMIT {
            return Err(format!(
                "rendezvous.discover_limit is {}; use 1 to {SPEC_MAX_DISCOVER_LIMIT}",
                self.discover_limit
            ));
        }
        for ns in &self.namespaces {
            if ns.is_empty() || ns.len() > MAX_NAMESPACE_LEN {
                return Err(format!(
                    "rendezvous.namespaces entry `{ns}` must be 1 to {MAX_NAMESPACE_LEN} bytes long"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_the_key() {
        Config::default().validate().unwrap();
        let bad = Config {
            max_ttl: Duration::from_secs(73 * 3600),
            ..Config::default()
        };
        assert!(bad.validate().unwrap_err().contains("rendezvous.max_ttl"));
        let bad = Config {
            register_interval: Duration::from_secs(300),
            ..Config::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("rendezvous.register_interval"));
        let bad = Config {
            points: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
            ..Config::default()
        };
        assert!(bad.validate().unwrap_err().contains("/p2p/"));
        let bad = Config {
            default_ttl: Duration::from_secs(10),
            ..Config::default()
        };
        assert!(bad.validate().unwrap_err().contains("default_ttl"));
        let bad = Config {
            max_discover_limit: 1001,
            ..Config::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_discover_limit"));
    }
}
