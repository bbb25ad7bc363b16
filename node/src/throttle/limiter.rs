//! The buckets behind a quota: one `governor` GCRA limiter per rule, keyed by peer (and a
//! lane, the pubsub topic for relay), by IP prefix, or global.
//!
//! Memory is bounded: keyed limiters are swept with `retain_recent` + `shrink_to_fit` every
//! `throttle.prune_interval`, and a limiter holding `throttle.max_keys` keys refuses new
//! requests (fails closed) until a sweep frees room. Counting keys costs a pass over the
//! map's shards, so it is sampled every [`KEY_COUNT_SAMPLE`] checks; the cap can be
//! overshot by at most that many keys.

use std::{
    fmt,
    hash::Hash,
    net::IpAddr,
    num::NonZeroU32,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use governor::{
    clock::{Clock, DefaultClock},
    state::keyed::DashMapStateStore,
    DefaultDirectRateLimiter, RateLimiter,
};
use libp2p::PeerId;

use super::quota::{QuotaSpec, Rule, Scope};

/// Keys are counted every this many checks of a keyed limiter.
const KEY_COUNT_SAMPLE: u32 = 64;
/// An emergency sweep (when a limiter is full) runs at most this often.
const EMERGENCY_PRUNE_EVERY: Duration = Duration::from_secs(1);

/// A peer and a lane (the pubsub topic slot for relay, `0` for every other service).
pub type PeerKey = (PeerId, u16);

/// The IP bucket a remote address falls into: the /32 of IPv4 (IPv4-mapped IPv6 counts as
/// IPv4), the /64 of IPv6, so address churn within a v6 subnet does not dodge a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpKey {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for IpKey {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => IpKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::V4(u32::from(v4)),
                None => IpKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl fmt::Display for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpKey::V4(v4) => write!(f, "{}", std::net::Ipv4Addr::from(*v4)),
            IpKey::V6(prefix) => write!(
                f,
                "{}/64",
                std::net::Ipv6Addr::from(u128::from(*prefix) << 64)
            ),
        }
    }
}

/// Why a limiter said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The rule of this scope is exhausted; it allows again after the wait.
    Over(Scope, Duration),
    /// The limiter of this scope tracks `max_keys` keys already and refuses new ones.
    Capacity(Scope),
}

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, DefaultClock>;

enum Bucket {
    Peer(Keyed<PeerKey>),
    Ip(Keyed<IpKey>),
    Global(DefaultDirectRateLimiter),
}

/// One rule's limiter.
pub struct Limiter {
    rule: Rule,
    bucket: Bucket,
    max_keys: usize,
    checks: AtomicU32,
    full: AtomicBool,
    /// When the last emergency sweep ran.
    last_emergency_prune: Mutex<Option<Instant>>,
}

impl Limiter {
    pub fn new(rule: Rule, max_keys: usize, clock: &DefaultClock) -> Limiter {
        let quota = rule.governor_quota();
        let bucket = match rule.scope {
            Scope::PerPeer => Bucket::Peer(RateLimiter::new(
                quota,
                DashMapStateStore::default(),
                clock.clone(),
            )),
            Scope::PerIp => Bucket::Ip(RateLimiter::new(
                quota,
                DashMapStateStore::default(),
                clock.clone(),
            )),
            Scope::Global => Bucket::Global(RateLimiter::direct_with_clock(quota, clock.clone())),
        };
        Limiter {
            rule,
            bucket,
            max_keys,
            checks: AtomicU32::new(0),
            full: AtomicBool::new(false),
            last_emergency_prune: Mutex::new(None),
        }
    }

    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// Takes `n` cells for this request. `peer: None` (not known yet) skips a per-peer rule,
    /// `ip: None` (address unknown or exempt) a per-IP rule.
    pub fn check(
        &self,
        peer: Option<&PeerKey>,
        ip: Option<IpKey>,
        n: NonZeroU32,
    ) -> Result<(), Denial> {
        match &self.bucket {
            Bucket::Peer(l) => match peer {
                Some(peer) => {
                    self.guard_capacity(l)?;
                    keyed_check(l, peer, n, &self.rule)
                }
                None => Ok(()),
            },
            Bucket::Ip(l) => match ip {
                Some(ip) => {
                    self.guard_capacity(l)?;
                    keyed_check(l, &ip, n, &self.rule)
                }
                None => Ok(()),
            },
            Bucket::Global(l) => {
                if n.get() == 1 {
                    return l
                        .check()
                        .map_err(|_| Denial::Over(Scope::Global, self.rule.emission_interval()));
                }
                l.check_n(n)
                    .map_err(|_| None)
                    .and_then(|r| r.map_err(Some))
                    .map_err(|not_until| {
                        Denial::Over(
                            Scope::Global,
                            not_until
                                .map(|nu| nu.wait_time_from(l.clock().now()))
                                .unwrap_or(self.rule.period),
                        )
                    })
            }
        }
    }

    fn guard_capacity<K: Hash + Eq + Clone>(&self, l: &Keyed<K>) -> Result<(), Denial> {
        let sample = self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(KEY_COUNT_SAMPLE);
        if sample {
            if l.len() >= self.max_keys {
                self.emergency_prune(l);
            } else {
                self.full.store(false, Ordering::Relaxed);
            }
        }
        if self.full.load(Ordering::Relaxed) {
            return Err(Denial::Capacity(self.rule.scope));
        }
        Ok(())
    }

    fn emergency_prune<K: Hash + Eq + Clone>(&self, l: &Keyed<K>) {
        // try_lock: a concurrent caller is sweeping already.
        if let Ok(mut last) = self.last_emergency_prune.try_lock() {
            let due = last.is_none_or(|t| t.elapsed() >= EMERGENCY_PRUNE_EVERY);
            if due {
                *last = Some(Instant::now());
                l.retain_recent();
            }
        }
        let full = l.len() >= self.max_keys;
        if full != self.full.swap(full, Ordering::Relaxed) && full {
            tracing::warn!(
                rule = %self.rule,
                max_keys = self.max_keys,
                "throttle limiter is full; refusing new keys until stale ones expire (raise throttle.max_keys if this is legitimate load)"
            );
        }
    }

    /// Drops keys whose buckets are full again and frees the memory; returns the keys left.
    pub fn prune(&self) -> usize {
        let len = match &self.bucket {
            Bucket::Peer(l) => prune_keyed(l),
            Bucket::Ip(l) => prune_keyed(l),
            Bucket::Global(_) => 0,
        };
        self.full.store(len >= self.max_keys, Ordering::Relaxed);
        len
    }

    /// Keys tracked now (0 for a global rule).
    pub fn len(&self) -> usize {
        match &self.bucket {
            Bucket::Peer(l) => l.len(),
            Bucket::Ip(l) => l.len(),
            Bucket::Global(_) => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the limiter refuses new keys right now.
    pub fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }
}

fn prune_keyed<K: Hash + Eq + Clone>(l: &Keyed<K>) -> usize {
    l.retain_recent();
    l.shrink_to_fit();
    l.len()
}

fn keyed_check<K: Hash + Eq + Clone>(
    l: &Keyed<K>,
    key: &K,
    n: NonZeroU32,
    rule: &Rule,
) -> Result<(), Denial> {
    if n.get() == 1 {
        // A refused single cell conforms again within one emission interval: report that
        // bound rather than read the clock again (refusals are the flood's hot path).
        return l
            .check_key(key)
            .map_err(|_| Denial::Over(rule.scope, rule.emission_interval()));
    }
    // Err(InsufficientCapacity): more cells than the burst; it can never pass.
    l.check_key_n(key, n)
        .map_err(|_| None)
        .and_then(|r| r.map_err(Some))
        .map_err(|not_until| {
            Denial::Over(
                rule.scope,
                not_until
                    .map(|nu| nu.wait_time_from(l.clock().now()))
                    .unwrap_or(rule.period),
            )
        })
}

/// The limiters of one quota, checked most specific first (peer, IP, global), so a request
/// refused per peer never consumes the node-wide budget honest peers share.
pub struct QuotaLimiter {
    limiters: Vec<Limiter>,
}

impl QuotaLimiter {
    pub fn new(spec: &QuotaSpec, max_keys: usize, clock: &DefaultClock) -> Self {
        let mut rules = spec.rules.clone();
        rules.sort_by_key(|r| r.scope);
        QuotaLimiter {
            limiters: rules
                .into_iter()
                .map(|r| Limiter::new(r, max_keys, clock))
                .collect(),
        }
    }

    pub fn check(
        &self,
        peer: Option<&PeerKey>,
        ip: Option<IpKey>,
        n: NonZeroU32,
    ) -> Result<(), Denial> {
        for limiter in &self.limiters {
            limiter.check(peer, ip, n)?;
        }
        Ok(())
    }

    pub fn limiters(&self) -> &[Limiter] {
        &self.limiters
    }

    pub fn is_unlimited(&self) -> bool {
        self.limiters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: NonZeroU32 = NonZeroU32::MIN;

    fn limiter(spec: &str, max_keys: usize) -> QuotaLimiter {
        QuotaLimiter::new(&spec.parse().unwrap(), max_keys, &DefaultClock::default())
    }

    fn peer() -> PeerKey {
        (PeerId::random(), 0)
    }

    #[test]
    fn per_peer_buckets_are_independent() {
        let l = limiter("3/1h per-peer", 1000);
        let (a, b) = (peer(), peer());
        for _ in 0..3 {
            l.check(Some(&a), None, ONE).unwrap();
        }
        assert!(matches!(
            l.check(Some(&a), None, ONE),
            Err(Denial::Over(Scope::PerPeer, wait)) if wait == Duration::from_secs(1200)
        ));
        l.check(Some(&b), None, ONE).unwrap();
        // Another lane of the same peer is another bucket.
        l.check(Some(&(a.0, 1)), None, ONE).unwrap();
    }

    #[test]
    fn ip_buckets_group_v6_by_64_and_skip_unknown_addresses() {
        let l = limiter("2/1h per-ip", 1000);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        l.check(Some(&peer()), Some(a.into()), ONE).unwrap();
        l.check(Some(&peer()), Some(b.into()), ONE).unwrap();
        assert!(
            l.check(Some(&peer()), Some(a.into()), ONE).is_err(),
            "same /64"
        );
        l.check(Some(&peer()), Some(c.into()), ONE).unwrap();
        l.check(Some(&peer()), None, ONE).unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            IpKey::from(mapped),
            IpKey::from("10.0.0.1".parse::<IpAddr>().unwrap())
        );
        assert_eq!(IpKey::from(a).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn a_peer_refused_per_peer_does_not_spend_the_global_budget() {
        let l = limiter("1/1h per-peer; 3/1h global", 1000);
        let greedy = peer();
        l.check(Some(&greedy), None, ONE).unwrap();
        for _ in 0..10 {
            assert!(matches!(
                l.check(Some(&greedy), None, ONE),
                Err(Denial::Over(Scope::PerPeer, _))
            ));
        }
        l.check(Some(&peer()), None, ONE).unwrap();
        l.check(Some(&peer()), None, ONE).unwrap();
        assert!(matches!(
            l.check(Some(&peer()), None, ONE),
            Err(Denial::Over(Scope::Global, _))
        ));
    }

    #[test]
    fn byte_quotas_take_many_cells_and_refuse_what_exceeds_the_burst() {
        let l = limiter("1000/1h per-peer", 1000);
        let p = peer();
        l.check(Some(&p), None, NonZeroU32::new(600).unwrap())
            .unwrap();
        assert!(l
            .check(Some(&p), None, NonZeroU32::new(600).unwrap())
            .is_err());
        l.check(Some(&p), None, NonZeroU32::new(400).unwrap())
            .unwrap();
        assert!(l
            .check(Some(&peer()), None, NonZeroU32::new(1001).unwrap())
            .is_err());
    }

    #[test]
    fn a_full_limiter_fails_closed_and_prune_bounds_it() {
        // Keys of a 1/1ms rule are stale again almost at once; keys of 1/1h stay.
        let l = limiter("1/1h per-peer", 100);
        for _ in 0..(100 + KEY_COUNT_SAMPLE as usize * 2) {
            let _ = l.check(Some(&peer()), None, ONE);
        }
        let inner = &l.limiters()[0];
        assert!(inner.is_full(), "limiter noticed it is full");
        assert!(inner.len() <= 100 + KEY_COUNT_SAMPLE as usize);
        assert_eq!(
            l.check(Some(&peer()), None, ONE),
            Err(Denial::Capacity(Scope::PerPeer))
        );
        // Nothing is stale within the hour: a prune keeps it full.
        inner.prune();
        assert!(inner.is_full());

        let quick = limiter("1000/1ms per-peer", 100);
        for _ in 0..1000 {
            let _ = quick.check(Some(&peer()), None, ONE);
        }
        let inner = &quick.limiters()[0];
        // Wait (by polling, not a fixed sleep) until the buckets refilled and a prune empties it.
        let start = std::time::Instant::now();
        while inner.prune() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "keys never went stale"
            );
            std::thread::yield_now();
        }
        assert!(!inner.is_full());
        quick.check(Some(&peer()), None, ONE).unwrap();
    }
}
