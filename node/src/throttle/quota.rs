//! Quota syntax: what operators write in `[throttle]` and on the command line.
//!
//! A quota is one or more rules separated by `;`:
//!
//! ```text
//! <volume>/<period> [per-peer | per-ip | global]
//! "100/1s per-peer"                     100 per second for each peer
//! "30/1m per-peer; 300/1s global"       both must allow the request
//! "4MiB/1s per-peer"                    volumes may carry a size unit (byte quotas)
//! "unlimited"                           no rule (also the empty string)
//! ```
//!
//! Periods are a number and a unit: `ms`, `s`, `m`, `h`, `d` (`1m`, `500ms`; a bare unit
//! means 1 of it). The scope defaults to `per-peer`. Each rule is a GCRA bucket: up to
//! `volume` at once, refilled evenly over `period` (one cell every `period / volume`).
//!
//! nwaku's `--rate-limit` entries (`store:100/1m`, `30/1s`) are accepted too, see
//! [`NwakuRateLimit`].

use std::{fmt, num::NonZeroU32, str::FromStr, time::Duration};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::units::ByteSize;

/// Where a rule counts requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One bucket per remote peer id.
    PerPeer,
    /// One bucket per remote IP: the /32 of an IPv4 address, the /64 of an IPv6 address.
    PerIp,
    /// One bucket for the whole node.
    Global,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::PerPeer => "per-peer",
            Scope::PerIp => "per-ip",
            Scope::Global => "global",
        }
    }
}

/// One `<volume>/<period> <scope>` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub volume: NonZeroU32,
    pub period: Duration,
    pub scope: Scope,
}

impl Rule {
    /// One cell comes back every this long (`period / volume`).
    pub fn emission_interval(&self) -> Duration {
        (self.period / self.volume.get()).max(Duration::from_nanos(1))
    }

    /// The GCRA quota: a burst of `volume`, one cell back every `period / volume`.
    pub fn governor_quota(&self) -> governor::Quota {
        let per_cell = self.emission_interval();
        governor::Quota::with_period(per_cell)
            .unwrap_or_else(|| governor::Quota::per_second(self.volume))
            .allow_burst(self.volume)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} {}",
            self.volume,
            format_period(self.period),
            self.scope.as_str()
        )
    }
}

/// A parsed quota: the rules that must all allow a request. No rules = unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuotaSpec {
    pub rules: Vec<Rule>,
}

impl QuotaSpec {
    pub fn unlimited() -> Self {
        QuotaSpec { rules: Vec::new() }
    }

    pub fn is_unlimited(&self) -> bool {
        self.rules.is_empty()
    }

    /// Parses a quota, panicking on a bad literal: only for defaults written in the source.
    pub(crate) fn lit(s: &str) -> Self {
        match s.parse() {
            Ok(q) => q,
            Err(e) => panic!("built-in quota `{s}` does not parse: {e}"),
        }
    }

    /// The rule of one scope, if any.
    pub fn rule(&self, scope: Scope) -> Option<&Rule> {
        self.rules.iter().find(|r| r.scope == scope)
    }
}

/// Why a quota did not parse; the message shows the accepted syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a quota ({why}); write e.g. `100/1s per-peer`, `30/1m per-peer; 300/1s global` or `unlimited`")]
pub struct QuotaError {
    pub text: String,
    pub why: String,
}

impl FromStr for QuotaSpec {
    type Err = QuotaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: String| QuotaError {
            text: s.to_owned(),
            why,
        };
        let trimmed = s.trim();
        if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("unlimited") {
            return Ok(QuotaSpec::unlimited());
        }
        let mut rules: Vec<Rule> = Vec::new();
        for part in trimmed.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let rule = parse_rule(part).map_err(err)?;
            if rules.iter().any(|r| r.scope == rule.scope) {
                return Err(err(format!(
                    "two `{}` rules; give each scope at most one rule",
                    rule.scope.as_str()
                )));
            }
            rules.push(rule);
        }
        rules.sort_by_key(|r| r.scope);
        Ok(QuotaSpec { rules })
    }
}

fn parse_rule(part: &str) -> Result<Rule, String> {
    let mut words = part.split_whitespace();
    let rate = words.next().ok_or("empty rule")?;
    let scope = match words.next() {
        None | Some("per-peer") | Some("peer") => Scope::PerPeer,
        Some("per-ip") | Some("ip") => Scope::PerIp,
        Some("global") => Scope::Global,
        Some(other) => {
            return Err(format!(
                "unknown scope `{other}`; use per-peer, per-ip or global"
            ))
        }
    };
    if let Some(extra) = words.next() {
        return Err(format!("unexpected `{extra}` after the scope"));
    }
    let (volume, period) = rate
        .split_once('/')
        .ok_or_else(|| format!("`{rate}` has no `/`"))?;
    let volume = parse_volume(volume)?;
    let period = parse_period(period)?;
    Ok(Rule {
        volume,
        period,
        scope,
    })
}

/// A count or a byte size (`4MiB`); at least 1 and at most 2^32-1.
fn parse_volume(text: &str) -> Result<NonZeroU32, String> {
    let size: ByteSize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number or a size"))?;
    let n = u32::try_from(size.0).map_err(|_| format!("`{text}` is above 4GiB"))?;
    NonZeroU32::new(n)
        .ok_or_else(|| "a volume of 0 allows nothing; use `unlimited` or at least 1".to_owned())
}

/// `1s`, `500ms`, `1m`, `2h`, `1d`, or a bare unit (`s` = `1s`).
pub fn parse_period(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = if number.is_empty() {
        1
    } else {
        number
            .parse()
            .map_err(|_| format!("`{text}` is not a period"))?
    };
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}` is not a period; write a number and ms, s, m, h or d (e.g. 1s, 1m)"
            ))
        }
    };
    let ms = n
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("`{text}` is too long"))?;
    if ms == 0 {
        return Err("a period of 0 is meaningless; use at least 1ms".into());
    }
    Ok(Duration::from_millis(ms))
}

/// The shortest exact spelling of a period (`60s` → `1m`).
pub fn format_period(period: Duration) -> String {
    let ms = period.as_millis();
    for (unit_ms, unit) in [
        (86_400_000u128, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ] {
        if ms >= unit_ms && ms.is_multiple_of(unit_ms) {
            return format!("{}{unit}", ms / unit_ms);
        }
    }
    format!("{ms}ms")
}

impl fmt::Display for QuotaSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rules.is_empty() {
            return f.write_str("unlimited");
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{rule}")?;
        }
        Ok(())
    }
}

impl Serialize for QuotaSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for QuotaSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// The services nwaku's `--rate-limit` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NwakuService {
    Store,
    LightPush,
    PeerExchange,
    Filter,
}

/// One nwaku `--rate-limit` entry: `[<store|storev2|storev3|lightpush|px|filter>:]<volume>/<period>`.
///
/// nwaku's semantics, reproduced by [`NwakuRateLimit::to_quota`]:
/// - store, lightpush, px: a global bucket of `volume/period` **and** a per-peer bucket of
///   `0.75 × volume × r` per `period × r`, where `r` = 10 if `period <= 1s`, 3 if
///   `period <= 1m`, else 2 (so one peer can use 75% of the global rate over a longer window);
/// - filter: `volume/period` per peer only;
/// - no prefix: the default for store, lightpush and px where no prefixed entry names them;
/// - `store` sets both store versions (Roost serves store v3); a later entry wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NwakuRateLimit {
    /// `None`: the default for unlisted services.
    pub service: Option<NwakuService>,
    pub volume: NonZeroU32,
    pub period: Duration,
}

impl FromStr for NwakuRateLimit {
    type Err = QuotaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: String| QuotaError {
            text: s.to_owned(),
            why,
        };
        let (service, rate) = match s.trim().split_once(':') {
            Some((name, rate)) => {
                let service = match name.trim() {
                    "store" | "storev2" | "storev3" => NwakuService::Store,
                    "lightpush" => NwakuService::LightPush,
                    "px" => NwakuService::PeerExchange,
                    "filter" => NwakuService::Filter,
                    other => {
                        return Err(err(format!(
                            "unknown service `{other}`; nwaku names store, storev2, storev3, lightpush, px, filter"
                        )))
                    }
                };
                (Some(service), rate)
            }
            None => (None, s.trim()),
        };
        let (volume, period) = rate
            .trim()
            .split_once('/')
            .ok_or_else(|| err(format!("`{rate}` has no `/`")))?;
        let volume: u32 = volume
            .trim()
            .parse()
            .map_err(|_| err(format!("`{volume}` is not a whole number")))?;
        let volume = NonZeroU32::new(volume).ok_or_else(|| err("a volume of 0".into()))?;
        let period = parse_period(period).map_err(err)?;
        Ok(NwakuRateLimit {
            service,
            volume,
            period,
        })
    }
}

impl NwakuRateLimit {
    /// The equivalent Roost quota for `service` (see the type's documentation).
    pub fn to_quota(&self, service: NwakuService) -> QuotaSpec {
        if service == NwakuService::Filter {
            return QuotaSpec {
                rules: vec![Rule {
                    volume: self.volume,
                    period: self.period,
                    scope: Scope::PerPeer,
                }],
            };
        }
        let r: u32 = if self.period <= Duration::from_secs(1) {
            10
        } else if self.period <= Duration::from_secs(60) {
            3
        } else {
            2
        };
        let per_peer = (f64::from(self.volume.get()) * 0.75 * f64::from(r)).floor();
        let per_peer =
            NonZeroU32::new(per_peer.min(f64::from(u32::MAX)) as u32).unwrap_or(NonZeroU32::MIN);
        QuotaSpec {
            rules: vec![
                Rule {
                    volume: per_peer,
                    period: self.period * r,
                    scope: Scope::PerPeer,
                },
                Rule {
                    volume: self.volume,
                    period: self.period,
                    scope: Scope::Global,
                },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> QuotaSpec {
        s.parse().unwrap()
    }

    #[test]
    fn rules_parse_with_scopes_and_units() {
        let spec = q("30/1m per-peer; 300/1s global");
        assert_eq!(spec.rules.len(), 2);
        assert_eq!(spec.rules[0].volume.get(), 30);
        assert_eq!(spec.rules[0].period, Duration::from_secs(60));
        assert_eq!(spec.rules[0].scope, Scope::PerPeer);
        assert_eq!(spec.rules[1].scope, Scope::Global);
        assert_eq!(q("20/1m per-ip").rules[0].scope, Scope::PerIp);
        assert_eq!(q("5/s").rules[0].period, Duration::from_secs(1));
        assert_eq!(q("5/500ms").rules[0].period, Duration::from_millis(500));
        assert_eq!(q("4MiB/1s").rules[0].volume.get(), 4 * 1024 * 1024);
        assert!(q("unlimited").is_unlimited());
        assert!(q("").is_unlimited());
    }

    #[test]
    fn quotas_print_as_they_parse() {
        for text in [
            "30/1m per-peer; 300/1s global",
            "100/1s per-peer",
            "20/1m per-ip; 500/1s global",
            "7/90s per-peer",
            "1/250ms global",
            "unlimited",
        ] {
            assert_eq!(q(text).to_string(), text);
            assert_eq!(q(&q(text).to_string()), q(text));
        }
        // Scopes are sorted peer, ip, global whatever the input order.
        assert_eq!(
            q("300/1s global; 30/1m per-peer").to_string(),
            "30/1m per-peer; 300/1s global"
        );
    }

    #[test]
    fn bad_quotas_say_what_is_wrong() {
        for (text, needle) in [
            ("100", "no `/`"),
            ("0/1s", "volume of 0"),
            ("10/1y", "not a period"),
            ("10/0s", "period of 0"),
            ("10/1s per-planet", "unknown scope"),
            ("10/1s; 20/1m", "two `per-peer` rules"),
            ("ten/1s", "not a number"),
        ] {
            let e = text.parse::<QuotaSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.contains("100/1s per-peer"), "error shows the syntax: {e}");
        }
    }

    #[test]
    fn governor_quota_has_the_volume_as_burst() {
        let rule = q("30/1m").rules[0];
        let quota = rule.governor_quota();
        assert_eq!(quota.burst_size().get(), 30);
        assert_eq!(quota.replenish_interval(), Duration::from_secs(2));
    }

    #[test]
    fn nwaku_entries_map_to_global_plus_per_peer() {
        let e: NwakuRateLimit = "store:100/1m".parse().unwrap();
        assert_eq!(e.service, Some(NwakuService::Store));
        // r = 3 for periods up to a minute: 75 × 3 = 225 per 3 minutes per peer.
        assert_eq!(
            e.to_quota(NwakuService::Store).to_string(),
            "225/3m per-peer; 100/1m global"
        );
        let e: NwakuRateLimit = "30/1s".parse().unwrap();
        assert_eq!(e.service, None);
        assert_eq!(
            e.to_quota(NwakuService::LightPush).to_string(),
            "225/10s per-peer; 30/1s global"
        );
        let e: NwakuRateLimit = "px:10/1h".parse().unwrap();
        assert_eq!(
            e.to_quota(NwakuService::PeerExchange).to_string(),
            "15/2h per-peer; 10/1h global"
        );
        let e: NwakuRateLimit = "filter:30/1m".parse().unwrap();
        assert_eq!(
            e.to_quota(NwakuService::Filter).to_string(),
            "30/1m per-peer"
        );
        assert_eq!(
            "storev3:5/1s".parse::<NwakuRateLimit>().unwrap().service,
            Some(NwakuService::Store)
        );
        assert!("relay:5/1s".parse::<NwakuRateLimit>().is_err());
        assert!("store:5".parse::<NwakuRateLimit>().is_err());
    }
}
