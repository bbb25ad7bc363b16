//! Logging setup: `tracing-subscriber` with an `EnvFilter` from `RUST_LOG` (falling back to
//! `log.filter`), as text or JSON.

use serde::{Deserialize, Serialize};
use tracing_subscriber::{fmt, EnvFilter};

/// Replaces the installed subscriber's filter (set by [`init`]).
type Reload = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static RELOAD: std::sync::OnceLock<Reload> = std::sync::OnceLock::new();

/// Installs the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match config.format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = RELOAD.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
        }
        LogFormat::Json => {
            let builder = builder.json().flatten_event(true).with_filter_reloading();
            let handle = builder.reload_handle();
            if builder.try_init().is_ok() {
                let _ = RELOAD.set(Box::new(move |f| {
                    handle.reload(f).map_err(|e| e.to_string())
                }));
            }
        }
    }
}

/// Why the log filter could not be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetFilterError {
    #[error("this process's logging was not set up by roost (an embedded node); its filter cannot be changed here")]
    NotInstalled,
    #[error("invalid log filter `{0}`: {1}")]
    Invalid(String, String),
    #[error("cannot change the log filter: {0}")]
    Reload(String),
}

/// Changes the log filter of the running process (`RUST_LOG` syntax: `debug`,
/// `info,roost_node::store=trace`).
pub fn set_filter(directives: &str) -> Result<(), SetFilterError> {
    let reload = RELOAD.get().ok_or(SetFilterError::NotInstalled)?;
    let filter = EnvFilter::try_new(directives)
        .map_err(|e| SetFilterError::Invalid(directives.to_owned(), e.to_string()))?;
    reload(filter).map_err(SetFilterError::Reload)?;
    tracing::info!(filter = directives, "log filter changed");
    Ok(())
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log shippers. Default `text`.
    pub format: LogFormat,
    /// tracing filter used when `RUST_LOG` is not set. Default `info`.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            filter: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}
