//! Spam throttling in place of proof-of-work. This module owns every quota of the node:
//! relay messages and bytes, request/response services (store, light push, filter, peer
//! exchange, rendezvous) and new connections; the offence scores and bans that follow abuse;
//! the `[throttle]` config table, the `roost_throttle_*` metrics and the admin endpoints.
//!
//! Quotas are `governor` GCRA limiters keyed by peer id, by IP (/32 v4, /64 v6) or global
//! ([`limiter`]); their syntax is in [`quota`]. Trusted peers and attested fleet members are
//! counted against `[throttle.trusted]` quotas in buckets of their own.
//!
//! How other capabilities use it:
//! - **Request/response protocols**: their behaviour ([`crate::reqres::Behaviour`]) calls
//!   [`Throttle::check`] with the service, peer and remote IP of an inbound request *before
//!   decoding it*; on `Err(Throttled)` it answers with the protocol's "too many requests"
//!   status (store, light push and filter: 429; rendezvous: `E_UNAVAILABLE`) and does no work.
//! - **REST API** ([`crate::rest`]): store, light push and filter routes call
//!   [`Throttle::check_client`] with the HTTP client's IP (no peer id: per-IP and global
//!   rules) and answer nwaku's 429 for the route.
//! - **Relay**: the swarm task calls [`Throttle::relay_gate`] (`gossip.rs`) before validating
//!   a gossipsub message;
//!   over-quota messages are Ignored, then Rejected once the peer keeps going (gossipsub
//!   scoring then pushes it out), and repeat offenders are banned.
//! - **Operator identity** marks attested fleet members with [`Throttle::set_fleet_member`].
//! - **Connections**: [`Behaviour`] (first in the node's behaviour) refuses inbound
//!   connections over the per-IP limits or from banned IPs before the Noise handshake, and
//!   banned peers right after it.

pub mod admin;
pub mod bans;
pub mod behaviour;
pub mod cli;
pub mod config;
pub mod gossip;
pub mod limiter;
pub mod metrics;
pub mod offence;
pub mod quota;
pub mod scoring;
pub mod task;

use std::{
    collections::HashSet,
    fmt,
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use governor::clock::DefaultClock;
use libp2p::PeerId;

pub use behaviour::Behaviour;
pub use config::Config;
pub use limiter::IpKey;
pub use metrics::Metrics;
pub use offence::Offender;

use limiter::{Denial, PeerKey, QuotaLimiter};
use offence::Offences;
use quota::Scope;

/// Everything the throttle counts, one quota each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Relay messages, per (peer, pubsub topic).
    Relay,
    /// Relay bytes per forwarding peer.
    RelayBytes,
    Store,
    LightPush,
    Filter,
    PeerExchange,
    RendezvousRegister,
    RendezvousDiscover,
    /// New inbound connections (per IP and global only).
    Connection,
    /// Store sync streams (a reconciliation session or a message transfer each).
    StoreSync,
}

impl Service {
    pub const COUNT: usize = 10;
    pub const ALL: [Service; Service::COUNT] = [
        Service::Relay,
        Service::RelayBytes,
        Service::Store,
        Service::LightPush,
        Service::Filter,
        Service::PeerExchange,
        Service::RendezvousRegister,
        Service::RendezvousDiscover,
        Service::Connection,
        Service::StoreSync,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label and the `[throttle]` key.
    pub fn label(self) -> &'static str {
        match self {
            Service::Relay => "relay",
            Service::RelayBytes => "relay_bytes",
            Service::Store => "store",
            Service::LightPush => "lightpush",
            Service::Filter => "filter",
            Service::PeerExchange => "peer_exchange",
            Service::RendezvousRegister => "rendezvous_register",
            Service::RendezvousDiscover => "rendezvous_discover",
            Service::Connection => "connections",
            Service::StoreSync => "store_sync",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Which rule refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// The peer's own bucket.
    Peer,
    /// The bucket of the peer's IP (/32 v4, /64 v6).
    Ip,
    /// The node-wide bucket.
    Global,
    /// The limiter is full of other keys and refuses new ones (fail closed).
    Capacity,
}

impl KeyKind {
    pub const COUNT: usize = 4;
    pub const ALL: [KeyKind; KeyKind::COUNT] = [
        KeyKind::Peer,
        KeyKind::Ip,
        KeyKind::Global,
        KeyKind::Capacity,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn label(self) -> &'static str {
        match self {
            KeyKind::Peer => "peer",
            KeyKind::Ip => "ip",
            KeyKind::Global => "global",
            KeyKind::Capacity => "capacity",
        }
    }

    fn of(scope: Scope) -> KeyKind {
        match scope {
            Scope::PerPeer => KeyKind::Peer,
            Scope::PerIp => KeyKind::Ip,
            Scope::Global => KeyKind::Global,
        }
    }
}

/// A request refused by a quota. Protocols answer it with their "too many requests" status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{service} quota exceeded ({} limit); retry within {}ms", key.label(), retry_after.as_millis())]
pub struct Throttled {
    pub service: Service,
    pub key: KeyKind,
    /// When the refusing bucket has room again, at the latest (for one cell, the rule's
    /// emission interval; the limiter's period when it is full).
    pub retry_after: Duration,
}

/// The quota class of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Default,
    /// Configured in `throttle.trusted_peers` or marked as an attested fleet member.
    Trusted,
}

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::Default => "default",
            Class::Trusted => "trusted",
        }
    }
}

/// What recording an offence led to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OffenceOutcome {
    /// The offender's score after this offence (0 for trusted peers and exempt IPs).
    pub score: f64,
    /// Whether this offence got the offender banned.
    pub banned: bool,
}

/// Why an offender was banned (the `reason` label of `roost_throttle_bans_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanReason {
    /// Kept exceeding quotas.
    Quota,
    /// Kept sending invalid messages.
    Invalid,
    /// Its gossipsub score fell below the graylist threshold.
    Score,
    /// An operator banned it (`roost ban add`).
    Manual,
}

impl BanReason {
    pub fn label(self) -> &'static str {
        match self {
            BanReason::Quota => "quota",
            BanReason::Invalid => "invalid",
            BanReason::Score => "score",
            BanReason::Manual => "manual",
        }
    }
}

/// The throttle: a cheap-to-clone handle to the quota limiters, offence scores and bans.
/// Every method takes `&self` and is safe to call from any task.
#[derive(Clone)]
pub struct Throttle {
    inner: Arc<Inner>,
}

impl fmt::Debug for Throttle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("enabled", &self.inner.enabled)
            .finish_non_exhaustive()
    }
}

struct Inner {
    enabled: bool,
    /// Limiters per class (`Class::Default`, `Class::Trusted`), one per service.
    classes: [Vec<QuotaLimiter>; 2],
    trusted: HashSet<PeerId>,
    fleet: RwLock<HashSet<PeerId>>,
    /// Peers removed from the fleet whose gossipsub application score must be reset.
    fleet_removed: Mutex<Vec<PeerId>>,
    /// Whether any trusted or fleet peer exists: the class lookup is skipped otherwise.
    any_trusted: AtomicBool,
    exempt: HashSet<IpKey>,
    max_connections_per_ip: u32,
    /// Second buckets for relay and relay bytes per class: over-quota relay messages are
    /// Ignored while these still have room, Rejected once they are empty too.
    relay_grace: [[QuotaLimiter; 2]; 2],
    /// 0: never ban automatically.
    ban_threshold: f64,
    offences: Mutex<Offences>,
    bans: bans::Bans,
    metrics: Metrics,
}

impl Throttle {
    /// Builds the limiters from a validated config, with bans kept in memory only.
    pub fn new(config: &Config, metrics: Metrics) -> Throttle {
        Self::with_bans(config, metrics, Vec::new(), None)
    }

    /// Opens the ban database in `data_dir` and builds the throttle on its records. Returns
    /// the throttle and the ban writer future, which the node runs until shutdown.
    pub async fn open(
        config: &Config,
        metrics: Metrics,
        data_dir: &std::path::Path,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(Throttle, impl std::future::Future<Output = ()>), bans::BanDbError> {
        let dir = data_dir.to_owned();
        let opened = tokio::task::spawn_blocking(move || {
            let db = bans::BanDb::open(&dir)?;
            let loaded = db.load()?;
            Ok::<_, bans::BanDbError>((db, loaded))
        })
        .await
        .map_err(|e| bans::BanDbError::Thread(e.to_string()))?;
        let (db, loaded) = opened?;
        let active = loaded
            .iter()
            .filter(|(_, b)| b.is_active(bans::now_ms()))
            .count();
        tracing::info!(active, remembered = loaded.len(), "ban database loaded");
        let (tx, rx) = tokio::sync::mpsc::channel(bans::WRITE_CAPACITY);
        let writer = bans::run_writer(Arc::new(db), rx, shutdown, metrics.clone());
        let throttle = Self::with_bans(config, metrics, loaded, Some(tx));
        Ok((throttle, writer))
    }

    fn with_bans(
        config: &Config,
        metrics: Metrics,
        loaded: Vec<(Offender, bans::BanRecord)>,
        writes: Option<tokio::sync::mpsc::Sender<bans::Write>>,
    ) -> Throttle {
        let clock = DefaultClock::default();
        let max_keys = config.max_keys as usize;
        let build = |quotas: config::ServiceQuotas| {
            Service::ALL
                .iter()
                .map(|s| QuotaLimiter::new(quotas.get(*s), max_keys, &clock))
                .collect::<Vec<_>>()
        };
        let trusted: HashSet<PeerId> = config.trusted_peers.iter().copied().collect();
        Throttle {
            inner: Arc::new(Inner {
                enabled: config.enabled,
                classes: [
                    build(config.default_quotas()),
                    build(config.trusted_quotas()),
                ],
                any_trusted: AtomicBool::new(!trusted.is_empty()),
                trusted,
                fleet: RwLock::new(HashSet::new()),
                fleet_removed: Mutex::new(Vec::new()),
                exempt: config
                    .exempt_ips
                    .iter()
                    .map(|ip| IpKey::from(*ip))
                    .collect(),
                max_connections_per_ip: config.max_connections_per_ip,
                relay_grace: [config.default_quotas(), config.trusted_quotas()].map(|q| {
                    [Service::Relay, Service::RelayBytes]
                        .map(|s| QuotaLimiter::new(q.get(s), max_keys, &clock))
                }),
                ban_threshold: f64::from(config.ban_threshold),
                offences: Mutex::new(Offences::new(config.offence_half_life, max_keys)),
                bans: bans::Bans::new(
                    bans::Policy {
                        base: config.ban_duration,
                        max: config.ban_max_duration,
                        memory: config.ban_memory,
                    },
                    loaded,
                    writes,
                    metrics.clone(),
                ),
                metrics,
            }),
        }
    }

    /// Checks one request of `service` from `peer` (connected from `ip`, when known) against
    /// the peer's quotas, taking one cell from each bucket. Call it before decoding the
    /// request; it costs a few hash lookups and never blocks.
    pub fn check(
        &self,
        service: Service,
        peer: &PeerId,
        ip: Option<IpAddr>,
    ) -> Result<(), Throttled> {
        self.check_cells(service, Some(&(*peer, 0)), ip, NonZeroU32::MIN)
    }

    /// Checks one request of `service` from a client known only by its IP (an HTTP client of
    /// the REST API): the per-IP rules (skipped for exempt IPs, as for libp2p peers) and the
    /// global rules; per-peer rules need a libp2p identity and do not apply. A refusal by a
    /// per-IP rule counts as an offence of the IP, as a throttled libp2p request does.
    pub fn check_client(&self, service: Service, ip: Option<IpAddr>) -> Result<(), Throttled> {
        let result = self.check_cells(service, None, ip, NonZeroU32::MIN);
        if let (Err(throttled), Some(ip)) = (&result, ip) {
            if throttled.key == KeyKind::Ip {
                self.offend(
                    Offender::Ip(ip.into()),
                    offence::points::THROTTLED,
                    BanReason::Quota,
                );
            }
        }
        result
    }

    /// Checks one relay message of `bytes` bytes forwarded by `peer` on the pubsub topic
    /// numbered `lane` (the shard): the message quota per (peer, topic), then the byte quota
    /// per peer.
    pub fn check_relay(
        &self,
        peer: &PeerId,
        lane: u16,
        bytes: usize,
        ip: Option<IpAddr>,
    ) -> Result<(), Throttled> {
        self.check_cells(Service::Relay, Some(&(*peer, lane)), ip, NonZeroU32::MIN)?;
        let cells =
            NonZeroU32::new(u32::try_from(bytes).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        self.check_cells(Service::RelayBytes, Some(&(*peer, 0)), ip, cells)
    }

    /// Checks a new inbound connection from `ip` against the `connections` quota.
    pub fn check_connection(&self, ip: Option<IpAddr>) -> Result<(), Throttled> {
        self.check_cells(Service::Connection, None, ip, NonZeroU32::MIN)
    }

    fn check_cells(
        &self,
        service: Service,
        peer: Option<&PeerKey>,
        ip: Option<IpAddr>,
        cells: NonZeroU32,
    ) -> Result<(), Throttled> {
        let inner = &*self.inner;
        if !inner.enabled {
            return Ok(());
        }
        let class = match peer {
            Some((peer, _)) => self.class_of(peer),
            None => Class::Default,
        };
        let ip = ip.map(IpKey::from).filter(|k| !inner.exempt.contains(k));
        let limiter = &inner.classes[class as usize][service.index()];
        match limiter.check(peer, ip, cells) {
            Ok(()) => {
                inner.metrics.admitted(service);
                Ok(())
            }
            Err(denial) => {
                let (key, retry_after) = match denial {
                    Denial::Over(scope, wait) => (KeyKind::of(scope), wait),
                    Denial::Capacity(scope) => (
                        KeyKind::Capacity,
                        limiter
                            .limiters()
                            .iter()
                            .find(|l| l.rule().scope == scope)
                            .map(|l| l.rule().period)
                            .unwrap_or(Duration::from_secs(1)),
                    ),
                };
                inner.metrics.throttled(service, key);
                Err(Throttled {
                    service,
                    key,
                    retry_after,
                })
            }
        }
    }

    /// The quota class of a peer.
    pub fn class_of(&self, peer: &PeerId) -> Class {
        let inner = &*self.inner;
        if !inner.any_trusted.load(Ordering::Relaxed) {
            return Class::Default;
        }
        let fleet = inner
            .fleet
            .read()
            .map(|f| f.contains(peer))
            .unwrap_or(false);
        if fleet || inner.trusted.contains(peer) {
            Class::Trusted
        } else {
            Class::Default
        }
    }

    /// Marks (or unmarks) `peer` as an attested fleet member: it gets the
    /// `[throttle.trusted]` quotas and is never banned automatically. The operator-identity
    /// capability calls this once a peer's attestation verifies, and with `false` when the
    /// attestation expires or the peer disconnects.
    pub fn set_fleet_member(&self, peer: PeerId, member: bool) {
        let inner = &*self.inner;
        if let Ok(mut fleet) = inner.fleet.write() {
            if member {
                fleet.insert(peer);
            } else if fleet.remove(&peer) {
                if let Ok(mut removed) = inner.fleet_removed.lock() {
                    removed.push(peer);
                }
            }
            let any = !fleet.is_empty() || !inner.trusted.is_empty();
            inner.any_trusted.store(any, Ordering::Relaxed);
        }
    }

    /// The fleet members marked so far.
    pub fn fleet_members(&self) -> Vec<PeerId> {
        self.inner
            .fleet
            .read()
            .map(|f| f.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Peers unmarked as fleet members since the last call.
    pub(crate) fn take_fleet_removed(&self) -> Vec<PeerId> {
        self.inner
            .fleet_removed
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Whether `ip` is in `throttle.exempt_ips`.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        self.inner.exempt.contains(&IpKey::from(ip))
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.enabled
    }

    pub fn max_connections_per_ip(&self) -> u32 {
        self.inner.max_connections_per_ip
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether `who` is an offender that is never banned automatically: a trusted peer, a
    /// fleet member or an exempt IP.
    pub fn is_immune(&self, who: &Offender) -> bool {
        match who {
            Offender::Peer(peer) => self.class_of(peer) == Class::Trusted,
            Offender::Ip(ip) => self.inner.exempt.contains(ip),
        }
    }

    /// Records an offence, banning the offender once its score reaches
    /// `throttle.ban_threshold`. Trusted peers, fleet members and exempt IPs collect no
    /// points.
    pub fn offend(&self, who: Offender, points: f64, reason: BanReason) -> OffenceOutcome {
        let inner = &*self.inner;
        if !inner.enabled || self.is_immune(&who) {
            return OffenceOutcome {
                score: 0.0,
                banned: false,
            };
        }
        let now = Instant::now();
        let score = match inner.offences.lock() {
            Ok(mut offences) => {
                let score = offences.add(who, points, now);
                if inner.ban_threshold > 0.0 && score >= inner.ban_threshold {
                    offences.clear(&who);
                }
                score
            }
            Err(_) => points,
        };
        let banned = inner.ban_threshold > 0.0 && score >= inner.ban_threshold;
        if banned {
            inner.bans.ban(who, reason, None);
        }
        OffenceOutcome { score, banned }
    }

    /// Bans `who` now with the escalating automatic duration (a graylisted relay peer), unless
    /// it is immune or automatic bans are off (`ban_threshold = 0`). Returns whether it was.
    pub fn ban_offender(&self, who: Offender, reason: BanReason) -> bool {
        let inner = &*self.inner;
        if !inner.enabled || inner.ban_threshold <= 0.0 || self.is_immune(&who) {
            return false;
        }
        if let Ok(mut offences) = inner.offences.lock() {
            offences.clear(&who);
        }
        inner.bans.ban(who, reason, None);
        true
    }

    /// Bans `who` for `duration` (an operator's decision; immune offenders too).
    pub fn ban(&self, who: Offender, duration: Duration) -> bans::BanRecord {
        self.inner.bans.ban(who, BanReason::Manual, Some(duration))
    }

    /// Lifts the ban on `who` (and forgets its history). Returns whether there was one.
    pub fn unban(&self, who: &Offender) -> bool {
        if let Ok(mut offences) = self.inner.offences.lock() {
            offences.clear(who);
        }
        self.inner.bans.unban(who)
    }

    /// Whether `who` is banned now.
    pub fn is_banned(&self, who: &Offender) -> bool {
        self.inner.bans.is_banned(who)
    }

    /// Whether a connection from `peer` at `ip` is banned (by peer id or by IP).
    pub fn is_banned_connection(&self, peer: Option<&PeerId>, ip: Option<IpAddr>) -> bool {
        peer.is_some_and(|p| self.is_banned(&Offender::Peer(*p)))
            || ip.is_some_and(|ip| {
                let key = IpKey::from(ip);
                !self.inner.exempt.contains(&key) && self.is_banned(&Offender::Ip(key))
            })
    }

    /// The bans in force, soonest to expire first.
    pub fn bans(&self) -> Vec<bans::BanRecord> {
        self.inner.bans.active()
    }

    /// Number of bans in force.
    pub fn bans_active(&self) -> usize {
        self.inner.bans.active_count()
    }

    /// The ban generation, registering `waker` for the next ban (see [`Behaviour`]).
    pub(crate) fn ban_generation(&self, waker: &std::task::Waker) -> u64 {
        self.inner.bans.generation(waker)
    }

    /// Records the offence a throttled request represents: against the peer for a per-peer
    /// rule, against the IP for a per-IP rule. A full global bucket or a full limiter is
    /// nobody's fault and records nothing.
    pub fn offend_throttled(
        &self,
        peer: &PeerId,
        ip: Option<IpAddr>,
        throttled: &Throttled,
    ) -> OffenceOutcome {
        let who = match throttled.key {
            KeyKind::Peer => Some(Offender::Peer(*peer)),
            KeyKind::Ip => ip.map(|ip| Offender::Ip(ip.into())),
            KeyKind::Global | KeyKind::Capacity => None,
        };
        match who {
            Some(who) => self.offend(who, offence::points::THROTTLED, BanReason::Quota),
            None => OffenceOutcome {
                score: 0.0,
                banned: false,
            },
        }
    }

    /// Whether an over-quota relay message (refused by `check_relay` with `throttled`) is
    /// still within the peer's grace: a second quota's worth of over-quota messages is Ignored;
    /// beyond it the peer keeps going and its messages are Rejected.
    pub fn relay_grace(
        &self,
        peer: &PeerId,
        lane: u16,
        bytes: usize,
        ip: Option<IpAddr>,
        throttled: &Throttled,
    ) -> bool {
        let inner = &*self.inner;
        let class = self.class_of(peer);
        let ip = ip.map(IpKey::from).filter(|k| !inner.exempt.contains(k));
        let (which, key, cells) = match throttled.service {
            Service::RelayBytes => (
                1,
                (*peer, 0),
                NonZeroU32::new(u32::try_from(bytes).unwrap_or(u32::MAX))
                    .unwrap_or(NonZeroU32::MIN),
            ),
            _ => (0, (*peer, lane), NonZeroU32::MIN),
        };
        inner.relay_grace[class as usize][which]
            .check(Some(&key), ip, cells)
            .is_ok()
    }

    /// The limiters refusing new keys right now, as `class/service/scope`.
    pub fn full_limiters(&self) -> Vec<String> {
        let mut full = Vec::new();
        for (class, limiters) in [Class::Default, Class::Trusted]
            .iter()
            .zip(self.inner.classes.iter())
        {
            for (service, quota) in Service::ALL.iter().zip(limiters) {
                for limiter in quota.limiters().iter().filter(|l| l.is_full()) {
                    full.push(format!(
                        "{}/{}/{}",
                        class.label(),
                        service.label(),
                        limiter.rule().scope.as_str()
                    ));
                }
            }
        }
        full
    }

    /// Sweeps idle limiter keys and decayed offence scores, and updates the size gauges.
    /// The maintenance task calls it every `throttle.prune_interval`.
    pub fn prune(&self) {
        let inner = &*self.inner;
        for (class, limiters) in [Class::Default, Class::Trusted]
            .iter()
            .zip(inner.classes.iter())
        {
            for (service, quota) in Service::ALL.iter().zip(limiters) {
                for limiter in quota.limiters() {
                    let scope = limiter.rule().scope;
                    if scope == Scope::Global {
                        continue;
                    }
                    let keys = limiter.prune();
                    inner
                        .metrics
                        .limiter_keys
                        .get_or_create(&metrics::LimiterLabels {
                            class: class.label(),
                            service: service.label(),
                            scope: scope.as_str(),
                        })
                        .set(keys as i64);
                }
            }
        }
        for grace in inner.relay_grace.iter().flatten() {
            for limiter in grace.limiters() {
                limiter.prune();
            }
        }
        if let Ok(mut offences) = inner.offences.lock() {
            offences.prune(Instant::now());
        }
        inner.bans.sweep();
    }
}

/// The pubsub topic's lane for relay quotas: the shard of `/waku/2/rs/<cluster>/<shard>`
/// (other topics share lane `u16::MAX`; the relay validator rejects them anyway).
pub fn relay_lane(pubsub_topic: &str) -> u16 {
    pubsub_topic
        .rsplit('/')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn throttle(adjust: impl FnOnce(&mut Config)) -> Throttle {
        let mut config = Config::default();
        adjust(&mut config);
        config.validate().unwrap();
        Throttle::new(&config, Metrics::register(&mut Registry::default()))
    }

    #[test]
    fn requests_over_a_peer_quota_are_throttled_with_the_peer_key() {
        let t = throttle(|c| c.store = "3/1h per-peer; 100/1h global".parse().unwrap());
        let (a, b) = (PeerId::random(), PeerId::random());
        for _ in 0..3 {
            t.check(Service::Store, &a, None).unwrap();
        }
        let err = t.check(Service::Store, &a, None).unwrap_err();
        assert_eq!(err.service, Service::Store);
        assert_eq!(err.key, KeyKind::Peer);
        assert_eq!(
            err.retry_after,
            Duration::from_secs(1200),
            "3/1h: one every 20 min"
        );
        t.check(Service::Store, &b, None).unwrap();
        // Other services have their own buckets.
        t.check(Service::LightPush, &a, None).unwrap();
        let (admitted, throttled) = t.metrics().totals();
        assert_eq!((admitted, throttled), (5, 1));
        // Relay bytes are not counted twice.
        t.check_relay(&a, 0, 10, None).unwrap();
        assert_eq!(t.metrics().totals(), (6, 1));
    }

    #[test]
    fn many_identities_from_one_ip_share_its_bucket_unless_exempt() {
        let t = throttle(|c| {
            c.store = "100/1h per-peer; 5/1h per-ip".parse().unwrap();
            c.exempt_ips = vec!["10.0.0.9".parse().unwrap()];
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            t.check(Service::Store, &PeerId::random(), Some(ip))
                .unwrap();
        }
        let err = t
            .check(Service::Store, &PeerId::random(), Some(ip))
            .unwrap_err();
        assert_eq!(err.key, KeyKind::Ip);
        let exempt: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..20 {
            t.check(Service::Store, &PeerId::random(), Some(exempt))
                .unwrap();
        }
    }

    #[test]
    fn clients_known_by_ip_get_the_ip_and_global_rules_and_exempt_ips_stay_exempt() {
        let t = throttle(|c| {
            c.lightpush = "1/1h per-peer; 3/1h per-ip; 6/1h global".parse().unwrap();
            c.exempt_ips = vec!["10.0.0.9".parse().unwrap()];
        });
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        // The per-peer rule needs a peer id: an IP-only client is not held to it.
        for _ in 0..3 {
            t.check_client(Service::LightPush, Some(ip)).unwrap();
        }
        let err = t.check_client(Service::LightPush, Some(ip)).unwrap_err();
        assert_eq!(err.key, KeyKind::Ip);
        assert!(
            t.offend(Offender::Ip(ip.into()), 0.0, BanReason::Quota)
                .score
                > 0.0
        );
        let exempt: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..3 {
            t.check_client(Service::LightPush, Some(exempt)).unwrap();
        }
        // The global rule holds for everyone.
        let err = t
            .check_client(Service::LightPush, Some(exempt))
            .unwrap_err();
        assert_eq!(err.key, KeyKind::Global);
    }

    #[test]
    fn trusted_and_fleet_peers_use_their_own_quotas() {
        let trusted = PeerId::random();
        let t = throttle(|c| {
            c.store = "1/1h per-peer; 2/1h global".parse().unwrap();
            c.trusted.store = "10/1h per-peer".parse().unwrap();
            c.trusted_peers = vec![trusted];
        });
        let fleet = PeerId::random();
        t.set_fleet_member(fleet, true);
        // Untrusted peers exhaust the global bucket...
        t.check(Service::Store, &PeerId::random(), None).unwrap();
        t.check(Service::Store, &PeerId::random(), None).unwrap();
        assert_eq!(
            t.check(Service::Store, &PeerId::random(), None)
                .unwrap_err()
                .key,
            KeyKind::Global
        );
        // ...which trusted and fleet peers do not share.
        for _ in 0..10 {
            t.check(Service::Store, &trusted, None).unwrap();
            t.check(Service::Store, &fleet, None).unwrap();
        }
        assert!(t.check(Service::Store, &fleet, None).is_err());
        t.set_fleet_member(fleet, false);
        assert_eq!(t.class_of(&fleet), Class::Default);
        assert_eq!(t.class_of(&trusted), Class::Trusted);
        // Trusted peers collect no offence points.
        let outcome = t.offend(Offender::Peer(trusted), 1000.0, BanReason::Quota);
        assert!(!outcome.banned && outcome.score == 0.0);
    }

    #[test]
    fn relay_counts_messages_per_topic_and_bytes_per_peer() {
        let t = throttle(|c| {
            c.relay = "2/1h per-peer".parse().unwrap();
            c.relay_bytes = "1000/1h per-peer".parse().unwrap();
        });
        let p = PeerId::random();
        t.check_relay(&p, 0, 100, None).unwrap();
        t.check_relay(&p, 0, 100, None).unwrap();
        assert_eq!(
            t.check_relay(&p, 0, 100, None).unwrap_err().service,
            Service::Relay
        );
        t.check_relay(&p, 1, 700, None).unwrap();
        let err = t.check_relay(&p, 1, 200, None).unwrap_err();
        assert_eq!(err.service, Service::RelayBytes);
        assert_eq!(relay_lane("/waku/2/rs/16/32"), 32);
        assert_eq!(relay_lane("/waku/2/default-waku/proto"), u16::MAX);
    }

    #[test]
    fn throttled_requests_build_an_offence_score_and_global_ones_do_not() {
        let t = throttle(|_| {});
        let p = PeerId::random();
        let by_peer = Throttled {
            service: Service::Store,
            key: KeyKind::Peer,
            retry_after: Duration::ZERO,
        };
        let global = Throttled {
            key: KeyKind::Global,
            ..by_peer
        };
        for _ in 0..10 {
            assert_eq!(t.offend_throttled(&p, None, &global).score, 0.0);
        }
        let first = t.offend_throttled(&p, None, &by_peer).score;
        let second = t.offend_throttled(&p, None, &by_peer).score;
        assert!(first > 0.9 && second > first, "{first} {second}");
    }

    #[test]
    fn over_quota_relay_messages_get_one_more_quota_of_grace() {
        let t = throttle(|c| c.relay = "3/1h per-peer".parse().unwrap());
        let p = PeerId::random();
        for _ in 0..3 {
            t.check_relay(&p, 0, 10, None).unwrap();
        }
        // The next three are over quota but within grace (Ignored), the rest are not (Rejected).
        let verdicts: Vec<bool> = (0..5)
            .map(|_| {
                let throttled = t.check_relay(&p, 0, 10, None).unwrap_err();
                t.relay_grace(&p, 0, 10, None, &throttled)
            })
            .collect();
        assert_eq!(verdicts, vec![true, true, true, false, false]);
        // Another topic is another bucket, with its own grace.
        t.check_relay(&p, 1, 10, None).unwrap();
    }

    #[test]
    fn offenders_are_banned_at_the_threshold_and_immune_ones_never() {
        let t = throttle(|c| {
            // Two offences of 10 points (minus a moment's decay) cross it.
            c.ban_threshold = 15;
            c.exempt_ips = vec!["10.0.0.9".parse().unwrap()];
        });
        let p = Offender::Peer(PeerId::random());
        assert!(!t.offend(p, 10.0, BanReason::Invalid).banned);
        assert!(t.offend(p, 10.0, BanReason::Invalid).banned);
        assert!(t.is_banned(&p));
        let Offender::Peer(peer) = p else {
            unreachable!()
        };
        assert!(t.is_banned_connection(Some(&peer), None));
        assert_eq!(t.bans()[0].reason, "invalid");
        assert!(t.unban(&p));
        assert!(!t.is_banned(&p));
        let exempt: Offender = "10.0.0.9".parse().unwrap();
        assert!(!t.offend(exempt, 1000.0, BanReason::Quota).banned);
        // An operator can still ban an exempt IP explicitly, but connections from exempt IPs
        // are never refused for it.
        t.ban(exempt, Duration::from_secs(60));
        assert!(t.is_banned(&exempt));
        assert!(!t.is_banned_connection(None, Some("10.0.0.9".parse().unwrap())));
    }

    #[test]
    fn a_disabled_throttle_admits_everything() {
        let t = throttle(|c| {
            c.enabled = false;
            c.store = "1/1h".parse().unwrap();
        });
        let p = PeerId::random();
        for _ in 0..10 {
            t.check(Service::Store, &p, None).unwrap();
        }
    }
}
