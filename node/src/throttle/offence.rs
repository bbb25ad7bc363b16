//! Offence scores: how badly a peer or an IP has behaved lately. Each throttled request adds
//! a point, each invalid message more; scores halve every `throttle.offence_half_life`. The
//! score decides when over-quota relay messages turn from Ignore into Reject and when the
//! offender is banned.

use std::{collections::HashMap, fmt, time::Instant};

use libp2p::PeerId;

use super::limiter::IpKey;

/// Who misbehaved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Offender {
    Peer(PeerId),
    Ip(IpKey),
}

impl Offender {
    /// `peer` or `ip`, the metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Offender::Peer(_) => "peer",
            Offender::Ip(_) => "ip",
        }
    }
}

impl fmt::Display for Offender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offender::Peer(p) => write!(f, "{p}"),
            Offender::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Points per kind of offence.
pub mod points {
    /// A request or relay message refused by a per-peer or per-IP rule.
    pub const THROTTLED: f64 = 1.0;
    /// A relay message that failed validation (undecodable, oversize, bad topic...).
    pub const INVALID: f64 = 10.0;
    /// An inbound connection refused by a per-IP limit.
    pub const REFUSED_CONNECTION: f64 = 1.0;
}

/// Decaying scores, bounded to `max_entries` offenders.
#[derive(Debug)]
pub struct Offences {
    half_life_secs: f64,
    max_entries: usize,
    scores: HashMap<Offender, (f64, Instant)>,
}

impl Offences {
    pub fn new(half_life: std::time::Duration, max_entries: usize) -> Self {
        Offences {
            half_life_secs: half_life.as_secs_f64().max(0.001),
            max_entries,
            scores: HashMap::new(),
        }
    }

    fn decayed(&self, (score, at): (f64, Instant), now: Instant) -> f64 {
        let dt = now.saturating_duration_since(at).as_secs_f64();
        score * 0.5f64.powf(dt / self.half_life_secs)
    }

    /// Adds `points` and returns the offender's new score. When the table is full of recent
    /// offenders a newcomer's points are not recorded (its requests are throttled anyway).
    pub fn add(&mut self, who: Offender, points: f64, now: Instant) -> f64 {
        if !self.scores.contains_key(&who) && self.scores.len() >= self.max_entries {
            self.prune(now);
            if self.scores.len() >= self.max_entries {
                return points;
            }
        }
        let previous = self
            .scores
            .get(&who)
            .map(|entry| self.decayed(*entry, now))
            .unwrap_or(0.0);
        let score = previous + points;
        self.scores.insert(who, (score, now));
        score
    }

    /// The current score (0 for an unknown offender).
    pub fn score(&self, who: &Offender, now: Instant) -> f64 {
        self.scores
            .get(who)
            .map(|entry| self.decayed(*entry, now))
            .unwrap_or(0.0)
    }

    /// Forgets an offender (after a ban, which carries the memory of repeat offences).
    pub fn clear(&mut self, who: &Offender) {
        self.scores.remove(who);
    }

    /// Drops offenders whose score decayed below half a point.
    pub fn prune(&mut self, now: Instant) {
        let half_life = self.half_life_secs;
        self.scores.retain(|_, (score, at)| {
            let dt = now.saturating_duration_since(*at).as_secs_f64();
            *score * 0.5f64.powf(dt / half_life) >= 0.5
        });
        self.scores.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn scores_add_up_and_halve_per_half_life() {
        let mut o = Offences::new(Duration::from_secs(60), 10);
        let t0 = Instant::now();
        let p = Offender::Peer(PeerId::random());
        assert_eq!(o.add(p, 8.0, t0), 8.0);
        assert_eq!(o.add(p, 2.0, t0), 10.0);
        let later = t0 + Duration::from_secs(60);
        assert!((o.score(&p, later) - 5.0).abs() < 1e-9);
        assert!((o.add(p, 1.0, later) - 6.0).abs() < 1e-9);
        o.prune(t0 + Duration::from_secs(3600));
        assert!(o.is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut o = Offences::new(Duration::from_secs(60), 3);
        let now = Instant::now();
        for _ in 0..10 {
            o.add(Offender::Peer(PeerId::random()), 5.0, now);
        }
        assert_eq!(o.len(), 3);
        o.clear(&Offender::Ip(IpKey::V4(1)));
    }
}
