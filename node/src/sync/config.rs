//! The `[store_sync]` config section (nwaku's `--store-sync*` flags).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units;

/// Store sync: store nodes reconcile their archives with each other's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Reconcile this store node's archive with other store nodes and serve their
    /// reconciliations (`/vac/waku/reconciliation/1.0.0`, `/vac/waku/transfer/1.0.0`). Only on
    /// store nodes. Default `true`.
    pub enabled: bool,
    /// Time between sync rounds (nwaku `--store-sync-interval`). Default `5m`.
    #[serde(with = "units::duration")]
    pub interval: Duration,
    /// How far back a round reconciles (nwaku `--store-sync-range`). Default `1h`.
    #[serde(with = "units::duration")]
    pub range: Duration,
    /// The most recent span a round leaves out, where relay may still be delivering (nwaku
    /// `--store-sync-relay-jitter`). Default `20s`.
    #[serde(with = "units::duration")]
    pub relay_jitter: Duration,
    /// Longest span the first round after a start reconciles: from the newest message the
    /// archive held (so a node that was down an hour gets that hour back, not just `range`),
    /// at most this far back. `0` = just `range`. Default `24h`.
    #[serde(with = "units::duration")]
    pub catch_up_limit: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            interval: Duration::from_secs(300),
            range: Duration::from_secs(3600),
            relay_jitter: Duration::from_secs(20),
            catch_up_limit: Duration::from_secs(24 * 3600),
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.interval < Duration::from_millis(100) {
            return Err("store_sync.interval is below 100ms; use e.g. 5m".into());
        }
        if self.range < Duration::from_secs(1) {
            return Err("store_sync.range is below 1s; use e.g. 1h".into());
        }
        Ok(())
    }
}
