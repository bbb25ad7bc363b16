//! This node's own attestation: loaded and checked at start, re-read when the file changes
//! (renewal without a restart), and watched for expiry (log warnings, the
//! `roost_operator_attestation_expiry_seconds` gauge, the `operator` health component).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use libp2p::PeerId;
use tokio::sync::watch;

use super::{
    attestation::{format_time, unix, Rejection, SignedAttestation},
    is_dev_fleet, Config, KeyStorage, Metrics,
};
use crate::health::{Health, Status};

/// How often the attestation file is checked for a renewal and expiry is re-evaluated.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// How often an approaching or past expiry is logged again.
const WARN_EVERY: Duration = Duration::from_secs(3600);

/// The attestation the node serves; `None` when it has none.
pub type Current = Option<Arc<SignedAttestation>>;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the attestation {path} (operator.attestation): {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the attestation {path} is unusable: {reason}; issue a new one with `roost operator attest`")]
    Invalid { path: PathBuf, reason: Rejection },
    #[error("the attestation {path} is for node {got}, but this node is {expected}; attest this node with `roost operator attest --node {expected}`")]
    WrongPeer {
        path: PathBuf,
        expected: String,
        got: String,
    },
    #[error("the attestation {path} is for fleet `{got}`, but operator.fleet is `{expected}`")]
    WrongFleet {
        path: PathBuf,
        expected: String,
        got: String,
    },
    #[error("the attestation {path} is signed by operator key {key}, which is not in operator.trusted_keys; peers trusting the same keys would refuse it")]
    Untrusted { path: PathBuf, key: String },
}

/// Reads and checks the attestation at `path` for this node. Expiry is not an error here: an
/// expired attestation is logged and reported, and the node still starts (as a non-member).
pub fn read(config: &Config, path: &Path, me: PeerId) -> Result<SignedAttestation, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    check(config, path, me, &bytes)
}

/// Checks attestation file contents (`bytes`, read from `path`) for this node.
pub fn check(
    config: &Config,
    path: &Path,
    me: PeerId,
    bytes: &[u8],
) -> Result<SignedAttestation, LoadError> {
    let signed =
        SignedAttestation::from_file_bytes(bytes).map_err(|reason| LoadError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
    let a = &signed.attestation;
    if a.node != me {
        return Err(LoadError::WrongPeer {
            path: path.to_owned(),
            expected: me.to_string(),
            got: a.node.to_string(),
        });
    }
    if let Some(fleet) = &config.fleet {
        if &a.fleet != fleet {
            return Err(LoadError::WrongFleet {
                path: path.to_owned(),
                expected: fleet.clone(),
                got: a.fleet.clone(),
            });
        }
    }
    if !config.trusted_keys.is_empty() && !config.trusted_keys.contains(&a.operator) {
        return Err(LoadError::Untrusted {
            path: path.to_owned(),
            key: a.operator.to_string(),
        });
    }
    Ok(signed)
}

/// The attestation as `/debug/v1/info` shows it.
pub fn describe(a: &super::Attestation) -> serde_json::Value {
    serde_json::json!({
        "fleet": a.fleet,
        "node": a.node.to_string(),
        "roles": a.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "seq": a.seq,
        "issued_at": format_time(a.issued_at),
        "expires_at": format_time(a.expires_at),
        "operator_key": a.operator.to_string(),
        "operator_fingerprint": a.operator.fingerprint(),
        "key_storage": a.key_storage.as_str(),
    })
}

/// Logs what was loaded, once.
pub fn announce(signed: &SignedAttestation, path: &Path) {
    let a = &signed.attestation;
    tracing::info!(
        path = %path.display(),
        fleet = %a.fleet,
        roles = %a.roles_text(),
        seq = a.seq,
        expires = %format_time(a.expires_at),
        operator = %a.operator.fingerprint(),
        key_storage = a.key_storage.as_str(),
        "loaded this node's fleet attestation"
    );
    if a.key_storage == KeyStorage::File && !is_dev_fleet(&a.fleet) {
        tracing::warn!(
            fleet = %a.fleet,
            "this node's attestation was signed with a file (software) operator key; use a Keycard or an HSM for fleet `{}`",
            a.fleet
        );
    }
}

/// Watches the attestation file and its expiry until shutdown.
pub struct Watcher {
    pub config: Config,
    pub path: PathBuf,
    pub me: PeerId,
    pub current: watch::Sender<Current>,
    pub metrics: Metrics,
    pub health: Health,
}

impl Watcher {
    /// Updates the gauge and health from the attestation now held; returns the seconds left.
    pub fn evaluate(&self, last_warning: &mut Option<Instant>) -> Option<i64> {
        let current = self.current.borrow().clone();
        let Some(signed) = current else {
            self.health.set(
                "operator",
                Status::Degraded,
                serde_json::json!({ "attestation": "none loaded" }),
            );
            return None;
        };
        let a = &signed.attestation;
        let now = SystemTime::now();
        let left = a.seconds_left(now);
        self.metrics.attestation_expiry_seconds.set(left);
        let warning = self.config.expiry_warning.as_secs() as i64;
        let not_yet_valid = a.issued_at > unix(now) + super::attestation::CLOCK_SKEW.as_secs();
        let status = if left <= 0 || left <= warning || not_yet_valid {
            Status::Degraded
        } else {
            Status::Ok
        };
        self.health.set(
            "operator",
            status,
            serde_json::json!({
                "fleet": a.fleet,
                "roles": a.roles_text(),
                "seq": a.seq,
                "expires_at": format_time(a.expires_at),
                "seconds_left": left,
                "operator_key": a.operator.fingerprint(),
            }),
        );
        let due = last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY);
        if status == Status::Degraded && due {
            *last_warning = Some(Instant::now());
            if left <= 0 {
                tracing::error!(
                    expired = %format_time(a.expires_at),
                    path = %self.path.display(),
                    "this node's attestation has expired: peers no longer treat it as a fleet member; issue a new one with `roost operator attest` and replace the file (it is re-read within {}s)",
                    RELOAD_INTERVAL.as_secs()
                );
            } else if not_yet_valid {
                tracing::warn!(
                    valid_from = %format_time(a.issued_at),
                    "this node's attestation is not valid yet; check the clocks"
                );
            } else {
                tracing::warn!(
                    expires = %format_time(a.expires_at),
                    seconds_left = left,
                    path = %self.path.display(),
                    "this node's attestation expires soon; issue a new one with `roost operator attest` and replace the file (it is re-read within {}s)",
                    RELOAD_INTERVAL.as_secs()
                );
            }
        }
        Some(left)
    }

    /// Re-reads the file when it changed; a valid renewal replaces the served attestation, a
    /// bad file is logged and the old attestation kept.
    async fn reload_if_changed(&self, last_seen: &mut Option<(SystemTime, u64)>) {
        let Ok(meta) = tokio::fs::metadata(&self.path).await else {
            return;
        };
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        if *last_seen == Some(stamp) {
            return;
        }
        *last_seen = Some(stamp);
        let bytes = match tokio::fs::read(&self.path).await {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot re-read the attestation; keeping the one loaded");
                return;
            }
        };
        match check(&self.config, &self.path, self.me, &bytes) {
            Ok(signed) => {
                let changed = self
                    .current
                    .borrow()
                    .as_ref()
                    .is_none_or(|old| old.bytes != signed.bytes);
                if changed {
                    announce(&signed, &self.path);
                    self.current.send_replace(Some(Arc::new(signed)));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the changed attestation file; keeping the one loaded");
            }
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, mut last_warning: Option<Instant>) {
        let mut last_seen = tokio::fs::metadata(&self.path)
            .await
            .ok()
            .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
                _ = tick.tick() => {
                    self.reload_if_changed(&mut last_seen).await;
                    self.evaluate(&mut last_warning);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::operator::{attestation::tests::claims, signer::file::FileSigner, OperatorKey};

    #[test]
    fn loading_checks_peer_fleet_and_trust() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.attestation");
        let me = PeerId::random();
        let operator = Keypair::generate_ed25519();
        let mut signer = FileSigner::from_keypair(operator.clone()).unwrap();
        let now = unix(SystemTime::now());
        let signed = claims(me, now).sign(&mut signer).unwrap();
        std::fs::write(&path, signed.to_file_text()).unwrap();

        let mut config = Config::default();
        assert_eq!(read(&config, &path, me).unwrap(), signed);
        let e = read(&config, &path, PeerId::random()).unwrap_err();
        assert!(matches!(e, LoadError::WrongPeer { .. }));
        assert!(e.to_string().contains("roost operator attest --node"));

        config.fleet = Some("beta".into());
        assert!(matches!(
            read(&config, &path, me),
            Err(LoadError::WrongFleet { .. })
        ));
        config.fleet = Some("staging".into());
        config.trusted_keys = vec![OperatorKey::new(Keypair::generate_ed25519().public()).unwrap()];
        assert!(matches!(
            read(&config, &path, me),
            Err(LoadError::Untrusted { .. })
        ));
        config
            .trusted_keys
            .push(OperatorKey::new(operator.public()).unwrap());
        assert!(read(&config, &path, me).is_ok());

        std::fs::write(&path, "not an attestation").unwrap();
        assert!(matches!(
            read(&config, &path, me),
            Err(LoadError::Invalid { .. })
        ));
        assert!(matches!(
            read(&config, &dir.path().join("missing"), me),
            Err(LoadError::Read { .. })
        ));
    }

    #[test]
    fn approaching_expiry_degrades_health_and_sets_the_gauge() {
        let me = PeerId::random();
        let mut signer = FileSigner::from_keypair(Keypair::generate_ed25519()).unwrap();
        let now = unix(SystemTime::now());
        let signed = claims(me, now).sign(&mut signer).unwrap(); // valid for an hour
        let (tx, _rx) = watch::channel(Some(Arc::new(signed)));
        let health = Health::default();
        let metrics = Metrics::default();
        let watcher = Watcher {
            config: Config {
                expiry_warning: Duration::from_secs(2 * 3600),
                ..Config::default()
            },
            path: PathBuf::from("node.attestation"),
            me,
            current: tx,
            metrics: metrics.clone(),
            health: health.clone(),
        };
        let mut last = None;
        let left = watcher.evaluate(&mut last).unwrap();
        assert!((3000..=3600).contains(&left), "{left}");
        assert_eq!(metrics.attestation_expiry_seconds.get(), left);
        assert_eq!(health.report().status, Status::Degraded);
        assert!(last.is_some(), "a warning was logged");

        let watcher = Watcher {
            config: Config {
                expiry_warning: Duration::from_secs(60),
                ..watcher.config.clone()
            },
            ..watcher
        };
        watcher.evaluate(&mut None);
        assert_eq!(health.report().status, Status::Ok);
    }
}
