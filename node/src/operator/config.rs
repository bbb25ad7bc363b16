//! The `[operator]` config section: this node's attestation and the fleet it trusts.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::key::OperatorKey;
use crate::units;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This node's attestation file, written by `roost operator attest`. Unset: the node claims
    /// no fleet membership. No default.
    pub attestation: Option<PathBuf>,
    /// The fleet whose members this node recognises. Unset: the fleet named in the attestation.
    /// No default.
    pub fleet: Option<String>,
    /// Operator public keys (hex, as `roost operator pubkey` prints them) whose attestations are
    /// trusted for the fleet. Empty: peers' attestations are not checked. Default `[]`.
    pub trusted_keys: Vec<OperatorKey>,
    /// Warn, and report the `operator` health component degraded, when the attestation expires
    /// within this long. Default `7d`.
    #[serde(with = "units::duration")]
    pub expiry_warning: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            attestation: None,
            fleet: None,
            trusted_keys: Vec::new(),
            expiry_warning: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(fleet) = &self.fleet {
            super::check_fleet_name(fleet).map_err(|e| format!("operator.fleet: {e}"))?;
        }
        if !self.trusted_keys.is_empty() && self.fleet.is_none() && self.attestation.is_none() {
            return Err("operator.trusted_keys is set but the node does not know its fleet; set operator.fleet (or operator.attestation)".into());
        }
        Ok(())
    }
}
