//! The `[store]` config section and the retention policy syntax nwaku operators know:
//! `time:<seconds|duration>`, `capacity:<count>`, `size:<n>GB|MB`, several joined by `;`
//! (their union: whichever deletes the most wins), or `none`.

use std::{fmt, str::FromStr, time::Duration};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::units::{self, ByteSize};

/// Store (mailserver) settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Archive relayed messages and answer store v3 queries. Needs `relay.enabled`. Default `true`.
    pub enabled: bool,
    /// fsync the write-ahead log once per write batch before a message counts as stored, so an
    /// acknowledged message survives power loss, not just a crash. Default `true`.
    pub sync: bool,
    /// What to delete, oldest first: `time:2d`, `time:172800`, `capacity:1000000`,
    /// `size:50GB`, several joined by `;`, or `none`. Default `time:2d`.
    pub retention: RetentionPolicy,
    /// How often the retention policy is checked (the size policy also when a write may have
    /// crossed it). Default `1m`.
    #[serde(with = "units::duration")]
    pub retention_interval: Duration,
    /// Messages whose timestamp is further than this from the node's clock, in the past or
    /// the future, are not stored (nwaku's `MaxMessageTimestampVariance`). Default `20s`.
    #[serde(with = "units::duration")]
    pub timestamp_window: Duration,
    /// Threads answering store queries. Default `2`.
    pub query_threads: usize,
    /// Free space kept on the archive's disk: below it new messages are refused (logged,
    /// counted, health degraded) until space returns, so RocksDB never runs out mid-write and
    /// compactions and retention still have room. `0` turns the check off. Default `256MiB`.
    pub min_free_space: ByteSize,
    /// RocksDB's memory: a quarter for memtables (all column families), the rest for the block
    /// cache, which also holds the index and filter blocks. At least `16MiB`. Default `128MiB`.
    pub memory_budget: ByteSize,
    /// Where the archive lives: `rocksdb` (embedded, under `<data_dir>/store`; the default) or
    /// `postgres` (a PostgreSQL database at `postgres_url`, which several store nodes may share).
    pub backend: Backend,
    /// libpq URL of the PostgreSQL database (`postgres://roost@db.internal:5432/roost`), for
    /// `backend = "postgres"`. Keep the password out of it: it comes from
    /// `postgres_password_file` or the `ROOST_STORE_POSTGRES_PASSWORD` environment variable. A
    /// password left in the URL still works but is masked in `roost config dump`.
    #[serde(serialize_with = "serialize_masked_url")]
    pub postgres_url: String,
    /// File holding the PostgreSQL password (its first line), read at start. Unset: the
    /// `ROOST_STORE_POSTGRES_PASSWORD` environment variable, else none (trust, peer, .pgpass).
    pub postgres_password_file: Option<std::path::PathBuf>,
}

/// Environment variable with the PostgreSQL password (not a config key: never dumped).
pub const POSTGRES_PASSWORD_ENV: &str = "ROOST_STORE_POSTGRES_PASSWORD";

/// The archive's engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Rocksdb,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Rocksdb => "rocksdb",
            Backend::Postgres => "postgres",
        })
    }
}

/// `postgres://user:secret@host/db` with the password replaced by `***` (key-value URLs too).
pub fn masked_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // userinfo ends at the last '@' before the first '/' of the path.
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]);
            }
        }
        // `?password=` in the query string.
        return mask_password_param(url, '&');
    }
    mask_password_param(url, ' ')
}

fn mask_password_param(url: &str, separator: char) -> String {
    let mut out = Vec::new();
    for (i, part) in url.split(separator).enumerate() {
        let (prefix, field) = match part.split_once('?') {
            Some((p, f)) if i == 0 && separator == '&' => (format!("{p}?"), f),
            _ => (String::new(), part),
        };
        match field.split_once('=') {
            Some((key, _)) if key.trim() == "password" => out.push(format!("{prefix}{key}=***")),
            _ => out.push(format!("{prefix}{field}")),
        }
    }
    out.join(&separator.to_string())
}

impl Config {
    /// The PostgreSQL password: the first line of `postgres_password_file`, else the
    /// `ROOST_STORE_POSTGRES_PASSWORD` environment variable, else none.
    pub fn postgres_password(&self) -> Result<Option<String>, String> {
        if let Some(path) = &self.postgres_password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                format!(
                    "cannot read store.postgres_password_file {}: {e}",
                    path.display()
                )
            })?;
            let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
            if line.is_empty() {
                return Err(format!(
                    "store.postgres_password_file {} is empty; its first line is the password",
                    path.display()
                ));
            }
            return Ok(Some(line.to_owned()));
        }
        Ok(std::env::var(POSTGRES_PASSWORD_ENV)
            .ok()
            .filter(|p| !p.is_empty()))
    }
}

fn serialize_masked_url<S: Serializer>(url: &str, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&masked_url(url))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            sync: true,
            retention: RetentionPolicy::default(),
            retention_interval: Duration::from_secs(60),
            timestamp_window: Duration::from_secs(20),
            query_threads: 2,
            min_free_space: ByteSize::mib(256),
            memory_budget: super::archive::DEFAULT_MEMORY_BUDGET,
            backend: Backend::Rocksdb,
            postgres_url: String::new(),
            postgres_password_file: None,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.query_threads == 0 || self.query_threads > 64 {
            return Err(format!(
                "store.query_threads is {}; use 1 to 64 (2 suits most nodes)",
                self.query_threads
            ));
        }
        if self.memory_budget < super::archive::MIN_MEMORY_BUDGET {
            return Err(format!(
                "store.memory_budget is {}; use at least {} (128MiB suits most nodes)",
                self.memory_budget,
                super::archive::MIN_MEMORY_BUDGET
            ));
        }
        if self.retention_interval < Duration::from_millis(10) {
            return Err("store.retention_interval is below 10ms; use e.g. 1m".into());
        }
        if self.backend == Backend::Postgres {
            if self.postgres_url.trim().is_empty() {
                return Err(
                    "store.backend is postgres but store.postgres_url is empty; set it to the \
                     database's libpq URL, e.g. postgres://roost@db.internal:5432/roost"
                        .into(),
                );
            }
            if let Err(e) = self.postgres_url.parse::<tokio_postgres::Config>() {
                return Err(format!(
                    "store.postgres_url {} is not a libpq URL: {e}",
                    masked_url(&self.postgres_url)
                ));
            }
        }
        if self.timestamp_window.is_zero() {
            return Err(
                "store.timestamp_window is 0, which would reject every message; use e.g. 20s"
                    .into(),
            );
        }
        Ok(())
    }
}

/// One retention rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retention {
    /// Delete messages older than this.
    Time(Duration),
    /// Keep at most this many messages.
    Capacity(u64),
    /// Keep the archive's files under this many bytes.
    Size(ByteSize),
}

impl Retention {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Retention::Time(_) => "time",
            Retention::Capacity(_) => "capacity",
            Retention::Size(_) => "size",
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Time(d) => write!(f, "time:{}", humantime::format_duration(*d)),
            Retention::Capacity(n) => write!(f, "capacity:{n}"),
            Retention::Size(s) => write!(f, "size:{s}"),
        }
    }
}

/// The rules in force; empty means keep everything (`none`).
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy(pub Vec<Retention>);

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy(vec![Retention::Time(Duration::from_secs(2 * 24 * 3600))])
    }
}

impl RetentionPolicy {
    pub fn time(&self) -> Option<Duration> {
        self.0.iter().find_map(|r| match r {
            Retention::Time(d) => Some(*d),
            _ => None,
        })
    }

    pub fn capacity(&self) -> Option<u64> {
        self.0.iter().find_map(|r| match r {
            Retention::Capacity(n) => Some(*n),
            _ => None,
        })
    }

    pub fn size(&self) -> Option<ByteSize> {
        self.0.iter().find_map(|r| match r {
            Retention::Size(s) => Some(*s),
            _ => None,
        })
    }
}

/// Why a retention policy does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retention policy `{text}`: {why}; write e.g. `time:2d`, `capacity:1000000`, `size:50GB`, `size:50GB;time:32d` or `none`")]
pub struct RetentionError {
    pub text: String,
    pub why: String,
}

impl FromStr for RetentionPolicy {
    type Err = RetentionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: String| RetentionError {
            text: s.to_owned(),
            why,
        };
        let trimmed = s.trim();
        if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("none") {
            return Ok(RetentionPolicy(Vec::new()));
        }
        let mut rules: Vec<Retention> = Vec::new();
        for part in trimmed.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, value) = part
                .split_once(':')
                .ok_or_else(|| err(format!("`{part}` has no `kind:value` form")))?;
            let value = value.trim();
            let rule = match kind.trim().to_ascii_lowercase().as_str() {
                "time" => {
                    let duration = match value.parse::<u64>() {
                        Ok(seconds) => Duration::from_secs(seconds),
                        Err(_) => humantime::parse_duration(value)
                            .map_err(|e| err(format!("`{value}` is not a duration ({e})")))?,
                    };
                    if duration.is_zero() {
                        return Err(err("time:0 would delete every message".into()));
                    }
                    Retention::Time(duration)
                }
                "capacity" => {
                    let n: u64 = value
                        .parse()
                        .map_err(|_| err(format!("`{value}` is not a message count")))?;
                    if n == 0 {
                        return Err(err("capacity:0 would delete every message".into()));
                    }
                    Retention::Capacity(n)
                }
                "size" => {
                    let size: ByteSize = value.parse().map_err(|e| err(format!("{e}")))?;
                    if size.0 < 1024 * 1024 {
                        return Err(err(format!(
                            "size:{value} is below 1MiB, too small for a database"
                        )));
                    }
                    Retention::Size(size)
                }
                other => {
                    return Err(err(format!(
                        "unknown kind `{other}` (time, capacity or size)"
                    )))
                }
            };
            if rules
                .iter()
                .any(|r| std::mem::discriminant(r) == std::mem::discriminant(&rule))
            {
                return Err(err(format!("`{}` is given twice", rule.label())));
            }
            rules.push(rule);
        }
        Ok(RetentionPolicy(rules))
    }
}

impl fmt::Display for RetentionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, rule) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(";")?;
            }
            write!(f, "{rule}")?;
        }
        Ok(())
    }
}

impl Serialize for RetentionPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for RetentionPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn postgres_passwords_are_masked_in_urls() {
        use super::masked_url;
        assert_eq!(
            masked_url("postgres://roost:s3cret@db:5432/roost"),
            "postgres://roost:***@db:5432/roost"
        );
        assert_eq!(
            masked_url("postgres://roost@db/roost"),
            "postgres://roost@db/roost"
        );
        assert_eq!(
            masked_url("postgresql://db/roost?user=roost&password=s3cret&sslmode=disable"),
            "postgresql://db/roost?user=roost&password=***&sslmode=disable"
        );
        assert_eq!(
            masked_url("host=db user=roost password=s3cret dbname=roost"),
            "host=db user=roost password=*** dbname=roost"
        );
    }

    use super::*;

    #[test]
    fn nwaku_policies_parse() {
        let p: RetentionPolicy = "time:172800".parse().unwrap();
        assert_eq!(p.time(), Some(Duration::from_secs(172_800)));
        let p: RetentionPolicy = "time:2d".parse().unwrap();
        assert_eq!(p.time(), Some(Duration::from_secs(172_800)));
        let p: RetentionPolicy = "capacity:1000".parse().unwrap();
        assert_eq!(p.capacity(), Some(1000));
        let p: RetentionPolicy = "size:25.5GB".parse().unwrap();
        assert_eq!(p.size(), Some(ByteSize((25.5 * 1073741824.0) as u64)));
        let p: RetentionPolicy = "size:50GB;time:2764800".parse().unwrap();
        assert_eq!(p.size(), Some(ByteSize(50 << 30)));
        assert_eq!(p.time(), Some(Duration::from_secs(2_764_800)));
        assert_eq!(p.capacity(), None);
        assert!("none".parse::<RetentionPolicy>().unwrap().0.is_empty());
    }

    #[test]
    fn policies_print_back_to_what_parses() {
        for text in ["time:2days", "capacity:5", "size:50GiB;time:1h", "none"] {
            let p: RetentionPolicy = text.parse().unwrap();
            assert_eq!(p.to_string().parse::<RetentionPolicy>().unwrap(), p);
        }
        assert_eq!(RetentionPolicy::default().to_string(), "time:2days");
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        for (text, needle) in [
            ("time", "no `kind:value`"),
            ("time:soon", "not a duration"),
            ("time:0", "every message"),
            ("capacity:-1", "not a message count"),
            ("capacity:0", "every message"),
            ("size:10XB", "not a byte size"),
            ("size:100KB", "below 1MiB"),
            ("age:2d", "unknown kind"),
            ("time:1d;time:2d", "given twice"),
        ] {
            let e = text.parse::<RetentionPolicy>().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn a_memory_budget_below_the_minimum_is_refused() {
        let config = Config {
            memory_budget: ByteSize::mib(8),
            ..Config::default()
        };
        let e = config.validate().unwrap_err();
        assert!(e.contains("store.memory_budget is 8MiB"), "{e}");
        assert!(Config::default().validate().is_ok());
    }
}
