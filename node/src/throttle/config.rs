//! The `[throttle]` config table: quotas per service (and for trusted peers in
//! `[throttle.trusted]`), connection limits per IP, nwaku-style `rate_limit` entries and the
//! ban policy.

use std::{fmt, net::IpAddr, str::FromStr, time::Duration};

use libp2p::PeerId;
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::{
    quota::{NwakuRateLimit, NwakuService, QuotaSpec, Scope},
    Service,
};
use crate::units;

/// Spam throttling: quotas, connection limits per IP, bans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Apply quotas, connection limits and bans. Default `true`.
    pub enabled: bool,
    /// Relay messages accepted from one peer on one pubsub topic. Default `1500/15s per-peer`:
    /// 100 a second sustained, and room for a burst a service node relays for its light
    /// clients (20 clients fanning out 50 messages each in 2 s is 1000 in 2 s).
    pub relay: QuotaSpec,
    /// Relay bytes accepted from one forwarding peer, all topics together. Default
    /// `4MiB/1s per-peer`.
    pub relay_bytes: QuotaSpec,
    /// Store queries (one per page). Default `200/1m per-peer; 4000/1m per-ip; 1000/1s
    /// global`: a history sync of 50 pages back to back four times over; an IP gets 20
    /// clients' worth (a NAT).
    pub store: QuotaSpec,
    /// Light push requests (one per message). Default `300/1m per-peer; 6000/1m per-ip;
    /// 1000/1s global`: an outbox of 200 resent at once after a reconnect, 5 a second
    /// sustained (a chatty client sends 2); an IP gets 20 clients' worth (a NAT).
    pub lightpush: QuotaSpec,
    /// Filter subscribe/ping/unsubscribe requests. Default `120/1m per-peer; 2400/1m
    /// per-ip`: js-waku subscribing to 100 content topics one call each (100 requests;
    /// one call for all costs one per shard), then re-subscribing and pinging each minute
    /// (3 per shard, at most 24); an IP gets 20 clients' worth.
    pub filter: QuotaSpec,
    /// Peer exchange requests. Default `10/1m per-peer; 100/1s global`.
    pub peer_exchange: QuotaSpec,
    /// Rendezvous REGISTER requests. Default `10/1m per-peer; 500/1s global`.
    pub rendezvous_register: QuotaSpec,
    /// Rendezvous DISCOVER requests. Default `30/1m per-peer; 500/1s global`.
    pub rendezvous_discover: QuotaSpec,
    /// New inbound connections, refused before the Noise handshake; only `per-ip` and `global`
    /// rules apply (the peer id is not known yet). Default `120/1m per-ip; 200/1s global`:
    /// 20 clients behind one NAT reconnecting several times within a minute.
    pub connections: QuotaSpec,
    /// Store sync streams (one per reconciliation session, one per message transfer).
    /// Default `30/1m per-peer`: a store peer syncs every 5 minutes (a session and a transfer
    /// each way), with room for restarts and catch-up retries.
    pub store_sync: QuotaSpec,
    /// Most connections (being set up or established) from one IP (/32 v4, /64 v6).
    /// Default `64` (20 clients behind a NAT, with room for each to overlap a reconnect);
    /// `0` = no limit.
    pub max_connections_per_ip: u32,
    /// nwaku `--rate-limit` entries, e.g. `["store:100/1m", "30/1s"]`; they replace the
    /// quotas above for store, lightpush, peer_exchange and filter (see the README for the
    /// mapping). Flag: `--rate-limit` (repeatable). Default empty.
    pub rate_limit: Vec<NwakuEntry>,
    /// Peers that get the `[throttle.trusted]` quotas and are never banned automatically.
    /// Attested fleet members get them too. Default empty.
    pub trusted_peers: Vec<PeerId>,
    /// IPs exempt from per-IP limits, IP bans and gossipsub's IP colocation penalty (e.g. a
    /// load balancer). Default empty.
    pub exempt_ips: Vec<IpAddr>,
    /// Most keys (peers, IPs) one limiter tracks; beyond it the limiter refuses new keys
    /// (fails closed) until stale ones are pruned. Default `50000`.
    pub max_keys: u32,
    /// How often idle limiter keys, offence scores and expired bans are swept. Default `30s`.
    #[serde(with = "units::duration")]
    pub prune_interval: Duration,
    /// Offence points at which a peer (or an IP) is banned; `0` = never ban automatically.
    /// One point per throttled request or Rejected relay message, ten per invalid relay
    /// message. Default `100`.
    pub ban_threshold: u32,
    /// Offence points halve after this long without new offences. Default `1m`.
    #[serde(with = "units::duration")]
    pub offence_half_life: Duration,
    /// Length of a first automatic ban; each repeat doubles it. Default `10m`.
    #[serde(with = "units::duration")]
    pub ban_duration: Duration,
    /// Longest automatic ban. Default `7d`.
    #[serde(with = "units::duration")]
    pub ban_max_duration: Duration,
    /// How long an expired ban is remembered, so a repeat offender's next ban is longer.
    /// Default `30d`.
    #[serde(with = "units::duration")]
    pub ban_memory: Duration,
    /// Quotas for `trusted_peers` and attested fleet members.
    pub trusted: TrustedQuotas,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            relay: QuotaSpec::lit("1500/15s per-peer"),
            relay_bytes: QuotaSpec::lit("4MiB/1s per-peer"),
            store: QuotaSpec::lit("200/1m per-peer; 4000/1m per-ip; 1000/1s global"),
            lightpush: QuotaSpec::lit("300/1m per-peer; 6000/1m per-ip; 1000/1s global"),
            filter: QuotaSpec::lit("120/1m per-peer; 2400/1m per-ip"),
            peer_exchange: QuotaSpec::lit("10/1m per-peer; 100/1s global"),
            rendezvous_register: QuotaSpec::lit("10/1m per-peer; 500/1s global"),
            rendezvous_discover: QuotaSpec::lit("30/1m per-peer; 500/1s global"),
            connections: QuotaSpec::lit("120/1m per-ip; 200/1s global"),
            store_sync: QuotaSpec::lit("30/1m per-peer"),
            max_connections_per_ip: 64,
            rate_limit: Vec::new(),
            trusted_peers: Vec::new(),
            exempt_ips: Vec::new(),
            max_keys: 50_000,
            prune_interval: Duration::from_secs(30),
            ban_threshold: 100,
            offence_half_life: Duration::from_secs(60),
            ban_duration: Duration::from_secs(600),
            ban_max_duration: Duration::from_secs(7 * 86_400),
            ban_memory: Duration::from_secs(30 * 86_400),
            trusted: TrustedQuotas::default(),
        }
    }
}

/// `[throttle.trusted]`: the quotas of trusted peers and attested fleet members. They are
/// counted in buckets of their own, so untrusted traffic (even a `global` bucket it
/// exhausted) never slows them down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustedQuotas {
    /// Default `15000/15s per-peer`: 1000 a second sustained, and ten times the burst of
    /// untrusted peers (`1500/15s`), so a fleet member never has less room than a stranger.
    pub relay: QuotaSpec,
    /// Default `40MiB/1s per-peer`.
    pub relay_bytes: QuotaSpec,
    /// Default `600/1m per-peer`.
    pub store: QuotaSpec,
    /// Default `600/1m per-peer`.
    pub lightpush: QuotaSpec,
    /// Default `300/1m per-peer`.
    pub filter: QuotaSpec,
    /// Default `100/1m per-peer`.
    pub peer_exchange: QuotaSpec,
    /// Default `100/1m per-peer`.
    pub rendezvous_register: QuotaSpec,
    /// Default `300/1m per-peer`.
    pub rendezvous_discover: QuotaSpec,
    /// Default `300/1m per-peer`.
    pub store_sync: QuotaSpec,
}

impl Default for TrustedQuotas {
    fn default() -> Self {
        TrustedQuotas {
            relay: QuotaSpec::lit("15000/15s per-peer"),
            relay_bytes: QuotaSpec::lit("40MiB/1s per-peer"),
            store: QuotaSpec::lit("600/1m per-peer"),
            lightpush: QuotaSpec::lit("600/1m per-peer"),
            filter: QuotaSpec::lit("300/1m per-peer"),
            peer_exchange: QuotaSpec::lit("100/1m per-peer"),
            rendezvous_register: QuotaSpec::lit("100/1m per-peer"),
            rendezvous_discover: QuotaSpec::lit("300/1m per-peer"),
            store_sync: QuotaSpec::lit("300/1m per-peer"),
        }
    }
}

/// One quota per [`Service`], indexed by [`Service::index`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceQuotas(pub [QuotaSpec; Service::COUNT]);

impl ServiceQuotas {
    pub fn get(&self, service: Service) -> &QuotaSpec {
        &self.0[service.index()]
    }
}

impl Config {
    /// The quotas of untrusted peers: the table's values with `rate_limit` entries applied.
    pub fn default_quotas(&self) -> ServiceQuotas {
        let mut store = self.store.clone();
        let mut lightpush = self.lightpush.clone();
        let mut peer_exchange = self.peer_exchange.clone();
        let mut filter = self.filter.clone();
        // Unprefixed entries first, then prefixed ones: a named service beats the default
        // whatever the order; among entries of one kind the last wins (as in nwaku).
        let default_entry = self.rate_limit.iter().rev().find(|e| e.0.service.is_none());
        let named = |s: NwakuService| {
            self.rate_limit
                .iter()
                .rev()
                .find(|e| e.0.service == Some(s))
        };
        for (service, target) in [
            (NwakuService::Store, &mut store),
            (NwakuService::LightPush, &mut lightpush),
            (NwakuService::PeerExchange, &mut peer_exchange),
        ] {
            if let Some(entry) = named(service).or(default_entry) {
                *target = entry.0.to_quota(service);
            }
        }
        if let Some(entry) = named(NwakuService::Filter) {
            filter = entry.0.to_quota(NwakuService::Filter);
        }
        ServiceQuotas([
            self.relay.clone(),
            self.relay_bytes.clone(),
            store,
            lightpush,
            filter,
            peer_exchange,
            self.rendezvous_register.clone(),
            self.rendezvous_discover.clone(),
            self.connections.clone(),
            self.store_sync.clone(),
        ])
    }

    /// The quotas of trusted peers and fleet members. New connections are counted before the
    /// peer is known, so they share the untrusted `connections` quota.
    pub fn trusted_quotas(&self) -> ServiceQuotas {
        let t = &self.trusted;
        ServiceQuotas([
            t.relay.clone(),
            t.relay_bytes.clone(),
            t.store.clone(),
            t.lightpush.clone(),
            t.filter.clone(),
            t.peer_exchange.clone(),
            t.rendezvous_register.clone(),
            t.rendezvous_discover.clone(),
            self.connections.clone(),
            t.store_sync.clone(),
        ])
    }

    /// Cross-field checks with actionable messages.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections.rule(Scope::PerPeer).is_some() {
            return Err(format!(
                "throttle.connections = \"{}\" has a per-peer rule, but new connections are counted before the peer id is known; use per-ip and global rules only",
                self.connections
            ));
        }
        if self.max_keys < 100 {
            return Err(format!(
                "throttle.max_keys = {} is too small to serve even a small network; use at least 100 (default 50000)",
                self.max_keys
            ));
        }
        if self.prune_interval < Duration::from_secs(1) {
            return Err("throttle.prune_interval must be at least 1s (default 30s)".into());
        }
        if self.offence_half_life < Duration::from_secs(1) {
            return Err("throttle.offence_half_life must be at least 1s (default 1m)".into());
        }
        if self.ban_duration.is_zero() || self.ban_max_duration < self.ban_duration {
            return Err(format!(
                "throttle.ban_duration ({}) must be above 0 and at most throttle.ban_max_duration ({})",
                humantime::format_duration(self.ban_duration),
                humantime::format_duration(self.ban_max_duration)
            ));
        }
        Ok(())
    }
}

/// A `rate_limit` entry as written (`store:100/1m`), parsed when the config loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NwakuEntry(pub NwakuRateLimit, String);

impl FromStr for NwakuEntry {
    type Err = super::quota::QuotaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(NwakuEntry(s.parse()?, s.trim().to_owned()))
    }
}

impl fmt::Display for NwakuEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.1)
    }
}

impl Serialize for NwakuEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.1)
    }
}

impl<'de> Deserialize<'de> for NwakuEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn rate_limit_entries_replace_table_quotas() {
        let mut c = Config {
            rate_limit: vec![
                "30/1s".parse().unwrap(),
                "store:100/1m".parse().unwrap(),
                "filter:5/1m".parse().unwrap(),
            ],
            ..Config::default()
        };
        let q = c.default_quotas();
        assert_eq!(
            q.get(Service::Store).to_string(),
            "225/3m per-peer; 100/1m global"
        );
        assert_eq!(
            q.get(Service::LightPush).to_string(),
            "225/10s per-peer; 30/1s global"
        );
        assert_eq!(
            q.get(Service::PeerExchange).to_string(),
            "225/10s per-peer; 30/1s global"
        );
        assert_eq!(q.get(Service::Filter).to_string(), "5/1m per-peer");
        assert_eq!(q.get(Service::Relay), &c.relay);
        // The last entry for a service wins.
        c.rate_limit.push("store:1/1s".parse().unwrap());
        assert_eq!(
            c.default_quotas().get(Service::Store).to_string(),
            "7/10s per-peer; 1/1s global"
        );
    }

    #[test]
    fn per_peer_connection_rules_are_refused() {
        let c = Config {
            connections: "5/1m per-peer".parse().unwrap(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().contains("per-ip and global"));
    }
}
