//! The layering machinery: the key schema, env and flag overrides, and error reporting that
//! names the key and where its value came from.

use std::{
    collections::{BTreeMap, HashMap},
    sync::OnceLock,
};

use clap::{Arg, ArgAction, ArgMatches, Args, FromArgMatches};
use toml::{Table, Value};

use super::{Config, ConfigError, Sources, EXAMPLE_TOML};

/// Env vars under the `ROOST_` prefix that are not config keys.
const RESERVED_ENV: &[&str] = &[
    "ROOST_CONFIG",
    crate::operator::pin::PIN_ENV,
    crate::operator::pin::PAIRING_PASSWORD_ENV,
    crate::store::POSTGRES_PASSWORD_ENV,
];
/// Prefix for variables the test harness uses; never config keys.
const TEST_ENV_PREFIX: &str = "ROOST_TEST_";

/// Friendly short flags for the keys operators touch most; the generated long form works too.
const FLAG_ALIASES: &[(&str, &str)] = &[
    ("node.data_dir", "data-dir"),
    ("network.tcp_port", "tcp-port"),
    ("network.ws_port", "ws-port"),
    ("network.peers", "peer"),
    ("relay.cluster_id", "cluster-id"),
    ("relay.shards", "shards"),
    // nwaku's `--content-topic`, repeatable.
    ("relay.content_topics", "content-topic"),
    ("log.format", "log-format"),
    // nwaku's flag: `--rate-limit=store:100/1m`, repeatable.
    ("throttle.rate_limit", "rate-limit"),
    // nwaku's `--rest=true|false`; the other `[rest]` flags already match nwaku's names
    // (`--rest-admin`, `--rest-allow-origin`, `--rest-relay-cache-capacity`).
    ("rest.enabled", "rest"),
    // nwaku's `--filternode`: the filter service node of the REST filter routes.
    ("rest.filter_node", "filternode"),
    // nwaku's `--storenode` and `--lightpushnode`: the service nodes REST asks when this node
    // does not keep an archive or serve light push itself.
    ("rest.store_node", "storenode"),
    ("rest.lightpush_node", "lightpushnode"),
];

/// What type a key holds, which decides how env/flag text is parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyKind {
    String,
    Integer,
    Float,
    Bool,
    /// An array whose elements have the given kind.
    Array(Box<KeyKind>),
}

impl KeyKind {
    fn of(value: &Value) -> KeyKind {
        match value {
            Value::Integer(_) => KeyKind::Integer,
            Value::Float(_) => KeyKind::Float,
            Value::Boolean(_) => KeyKind::Bool,
            Value::Array(items) => KeyKind::Array(Box::new(
                items.first().map(KeyKind::of).unwrap_or(KeyKind::String),
            )),
            _ => KeyKind::String,
        }
    }

    fn parse(&self, raw: &str) -> Result<Value, String> {
        let raw_trimmed = raw.trim();
        match self {
            KeyKind::String => Ok(Value::String(raw.to_owned())),
            KeyKind::Integer => raw_trimmed
                .parse::<i64>()
                .map(Value::Integer)
                .map_err(|_| format!("`{raw}` is not a whole number")),
            KeyKind::Float => raw_trimmed
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| format!("`{raw}` is not a number")),
            KeyKind::Bool => match raw_trimmed.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Value::Boolean(true)),
                "false" | "0" | "no" | "off" => Ok(Value::Boolean(false)),
                _ => Err(format!("`{raw}` is not true or false")),
            },
            KeyKind::Array(item) => {
                if raw_trimmed.starts_with('[') {
                    let doc: Table = toml::from_str(&format!("v = {raw_trimmed}"))
                        .map_err(|e| format!("`{raw}` is not a TOML array: {}", e.message()))?;
                    return doc
                        .get("v")
                        .cloned()
                        .ok_or_else(|| format!("`{raw}` is not a TOML array"));
                }
                let items = raw_trimmed
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| item.parse(s))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Value::Array(items))
            }
        }
    }
}

/// Every config key with its kind, in dotted form (`network.tcp_port`).
#[derive(Debug)]
pub struct Schema {
    pub keys: BTreeMap<String, KeyKind>,
}

impl Schema {
    /// The schema of [`Config`]: keys of the defaults plus the keys of the example file.
    pub fn get() -> &'static Schema {
        static SCHEMA: OnceLock<Schema> = OnceLock::new();
        SCHEMA.get_or_init(|| {
            let mut keys = BTreeMap::new();
            // The example documents every key; it is checked against Config in tests, so a
            // parse failure here is a build defect, not an operator error.
            if let Ok(example) = toml::from_str::<Table>(EXAMPLE_TOML) {
                collect_leaves("", &example, &mut keys);
            }
            if let Ok(Value::Table(defaults)) = Value::try_from(Config::default()) {
                collect_leaves("", &defaults, &mut keys);
            }
            Schema { keys }
        })
    }

    fn env_map(&self) -> HashMap<String, &str> {
        self.keys
            .keys()
            .map(|k| (env_var_for(k), k.as_str()))
            .collect()
    }
}

fn collect_leaves(prefix: &str, table: &Table, out: &mut BTreeMap<String, KeyKind>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Table(inner) => collect_leaves(&key, inner, out),
            other => {
                // Prefer the more specific kind when defaults and example disagree only in an
                // empty array's element type.
                let kind = KeyKind::of(other);
                match out.get(&key) {
                    Some(KeyKind::Array(_)) if matches!(other, Value::Array(a) if a.is_empty()) => {
                    }
                    _ => {
                        out.insert(key, kind);
                    }
                }
            }
        }
    }
}

/// `network.tcp_port` → `ROOST_NETWORK_TCP_PORT`.
pub fn env_var_for(key: &str) -> String {
    format!("ROOST_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// `network.tcp_port` → `network-tcp-port` (the generated long flag).
pub fn flag_for(key: &str) -> String {
    key.replace(['.', '_'], "-")
}

/// Applies the layers and deserializes the result.
pub(super) fn merge(sources: &Sources) -> Result<Config, ConfigError> {
    let schema = Schema::get();
    let mut origins: HashMap<String, String> = HashMap::new();
    let mut merged = Table::new();

    if let Some(path) = &sources.file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let file: Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.clone(),
            message: one_line_toml_error(&e, &text),
        })?;
        let origin = path.display().to_string();
        check_known("", &file, &origin)?;
        record_origins("", &file, &origin, &mut origins);
        deep_merge(&mut merged, file);
    }

    let env_map = schema.env_map();
    let mut env: Vec<&(String, String)> = sources
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("ROOST_"))
        .collect();
    env.sort();
    for (var, raw) in env {
        if RESERVED_ENV.contains(&var.as_str()) || var.starts_with(TEST_ENV_PREFIX) {
            continue;
        }
        let key = env_map
            .get(var.as_str())
            .ok_or_else(|| ConfigError::UnknownEnv { var: var.clone() })?;
        let origin = format!("environment variable {var}");
        set_key(&mut merged, key, std::slice::from_ref(raw), &origin)?;
        origins.insert((*key).to_owned(), origin);
    }

    for (key, raws) in &sources.flags {
        let origin = format!("flag --{}", flag_for(key));
        set_key(&mut merged, key, raws, &origin)?;
        origins.insert(key.clone(), origin);
    }

    deserialize(merged, &origins)
}

/// Parses a single TOML document as the only layer.
pub(super) fn merge_text(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let table: Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: origin.into(),
        message: one_line_toml_error(&e, text),
    })?;
    check_known("", &table, origin)?;
    let mut origins = HashMap::new();
    record_origins("", &table, origin, &mut origins);
    deserialize(table, &origins)
}

fn deserialize(merged: Table, origins: &HashMap<String, String>) -> Result<Config, ConfigError> {
    // Render and re-parse so that serde errors carry a span we can turn into a key path.
    let rendered = toml::to_string(&merged).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    toml::from_str::<Config>(&rendered).map_err(|e| {
        let key = e
            .span()
            .map(|span| key_at(&rendered, span.start))
            .unwrap_or_default();
        let origin = origins
            .get(&key)
            .cloned()
            .unwrap_or_else(|| "the defaults".into());
        ConfigError::BadValue {
            key: if key.is_empty() {
                "(config)".into()
            } else {
                key
            },
            origin,
            message: e.message().trim().replace('\n', " "),
        }
    })
}

/// The dotted key whose value sits at byte `offset` of a rendered TOML document.
fn key_at(rendered: &str, offset: usize) -> String {
    let before = rendered.get(..offset).unwrap_or(rendered);
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = rendered[line_start..].lines().next().unwrap_or("");
    let section = before
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && l.ends_with(']'))
                .then(|| l.trim_matches(|c| c == '[' || c == ']').to_owned())
        })
        .unwrap_or_default();
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    if line.trim_start().starts_with('[') || key.is_empty() {
        return section;
    }
    if section.is_empty() {
        key.to_owned()
    } else {
        format!("{section}.{key}")
    }
}

fn one_line_toml_error(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let line = text.get(..span.start).unwrap_or("").matches('\n').count() + 1;
            format!("line {line}: {}", e.message().trim().replace('\n', " "))
        }
        None => e.message().trim().replace('\n', " "),
    }
}

fn check_known(prefix: &str, table: &Table, origin: &str) -> Result<(), ConfigError> {
    let schema = Schema::get();
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Table(inner) if !schema.keys.contains_key(&key) => {
                let section_known = schema
                    .keys
                    .keys()
                    .any(|k| k.starts_with(&format!("{key}.")));
                if !section_known {
                    return Err(ConfigError::UnknownKey {
                        key,
                        origin: origin.to_owned(),
                    });
                }
                check_known(&key, inner, origin)?;
            }
            _ if !schema.keys.contains_key(&key) => {
                return Err(ConfigError::UnknownKey {
                    key,
                    origin: origin.to_owned(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

fn record_origins(prefix: &str, table: &Table, origin: &str, out: &mut HashMap<String, String>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        if let Value::Table(inner) = value {
            record_origins(&key, inner, origin, out);
        } else {
            out.insert(key, origin.to_owned());
        }
    }
}

fn deep_merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => deep_merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_key(root: &mut Table, key: &str, raws: &[String], origin: &str) -> Result<(), ConfigError> {
    let schema = Schema::get();
    let kind = schema
        .keys
        .get(key)
        .ok_or_else(|| ConfigError::UnknownKey {
            key: key.to_owned(),
            origin: origin.to_owned(),
        })?;
    let bad = |message: String| ConfigError::BadValue {
        key: key.to_owned(),
        origin: origin.to_owned(),
        message,
    };
    let value = match kind {
        // Repeated flags (`--peer a --peer b`) and comma lists both build one array.
        KeyKind::Array(_) => {
            let mut items = Vec::new();
            for raw in raws {
                match kind.parse(raw).map_err(bad)? {
                    Value::Array(mut parsed) => items.append(&mut parsed),
                    other => items.push(other),
                }
            }
            Value::Array(items)
        }
        scalar => {
            let raw = raws.last().map(String::as_str).unwrap_or("");
            scalar.parse(raw).map_err(bad)?
        }
    };
    let mut parts: Vec<&str> = key.split('.').collect();
    let leaf = parts.pop().unwrap_or(key);
    let mut table = root;
    for part in parts {
        let entry = table
            .entry(part.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        table = match entry {
            Value::Table(t) => t,
            _ => unreachable!("just made a table"),
        };
    }
    table.insert(leaf.to_owned(), value);
    Ok(())
}

/// Command-line overrides: one generated flag per config key, plus the friendly aliases.
#[derive(Debug, Clone, Default)]
pub struct ConfigFlags {
    /// (key, raw values) in the order clap reports them.
    pub values: Vec<(String, Vec<String>)>,
}

impl ConfigFlags {
    fn arg_id(key: &str) -> String {
        format!("cfg:{key}")
    }
}

impl FromArgMatches for ConfigFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let mut values = Vec::new();
        for key in Schema::get().keys.keys() {
            let id = Self::arg_id(key);
            if let Ok(Some(raws)) = matches.try_get_many::<String>(&id) {
                values.push((key.clone(), raws.cloned().collect()));
            }
        }
        Ok(ConfigFlags { values })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for ConfigFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let mut cmd =
            cmd.next_help_heading("Config overrides (each also ROOST_<KEY> in the environment)");
        for (key, kind) in &Schema::get().keys {
            let mut arg = Arg::new(Self::arg_id(key))
                .long(flag_for(key))
                .value_name(match kind {
                    KeyKind::Integer => "N",
                    KeyKind::Bool => "BOOL",
                    KeyKind::Array(_) => "LIST",
                    _ => "VALUE",
                })
                .help(format!("Sets `{key}` (env {})", env_var_for(key)))
                .required(false);
            arg = match kind {
                KeyKind::Array(_) => arg.action(ArgAction::Append),
                _ => arg.action(ArgAction::Set),
            };
            if let Some((_, alias)) = FLAG_ALIASES.iter().find(|(k, _)| k == key) {
                arg = arg.visible_alias(*alias);
            }
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}
