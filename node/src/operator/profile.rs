//! The operator profile: which backend holds the operator key and how to reach it, written by
//! `roost operator init` and read by the other `roost operator` commands (`--profile`, default
//! `roost-operator.toml`). Mode 0600: for a Keycard it holds the pairing key.
//!
//! ```toml
//! backend = "pkcs11"
//! public_key = "08021221…"
//! [pkcs11]
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token = "fleet"
//! key_label = "roost-operator"
//! key_type = "secp256k1"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    key::OperatorKey,
    pin,
    signer::{
        file::{write_secret, FileSigner},
        keycard::{self, KeycardSigner},
        pkcs11::{self, Pkcs11Signer},
        Signer, SignerError,
    },
};

/// Default profile file name, in the current directory.
pub const DEFAULT_PROFILE: &str = "roost-operator.toml";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// A key file (development fleets only).
    File,
    /// An HSM through a PKCS#11 module.
    Pkcs11,
    /// A Status Keycard through PC/SC.
    Keycard,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The key file (relative paths are relative to the profile's directory).
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub backend: BackendKind,
    /// The operator public key; checked against the backend whenever the key is used.
    pub public_key: OperatorKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<pkcs11::Config>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keycard: Option<keycard::Config>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("no operator profile at {0}; create it with `roost operator init --backend <file|pkcs11|keycard> --profile {0}`")]
    Missing(PathBuf),
    #[error("cannot read the operator profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the operator profile {path} is not valid: {message}; run `roost operator init` again"
    )]
    Invalid { path: PathBuf, message: String },
    #[error("cannot write the operator profile {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProfileError::Missing(path.to_owned()))
            }
            Err(source) => {
                return Err(ProfileError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let profile: Profile = toml::from_str(&text).map_err(|e| ProfileError::Invalid {
            path: path.to_owned(),
            message: e.message().trim().replace('\n', " "),
        })?;
        let has_section = match profile.backend {
            BackendKind::File => profile.file.is_some(),
            BackendKind::Pkcs11 => profile.pkcs11.is_some(),
            BackendKind::Keycard => profile.keycard.is_some(),
        };
        if !has_section {
            return Err(ProfileError::Invalid {
                path: path.to_owned(),
                message: format!(
                    "backend is {:?} but its section is missing",
                    profile.backend
                ),
            });
        }
        Ok(profile)
    }

    pub fn save(&self, path: &Path) -> Result<(), ProfileError> {
        let body = toml::to_string_pretty(self).map_err(|e| ProfileError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let text = format!(
            "# Operator profile written by `roost operator init`: where the operator key is.\n# Keep it private (mode 0600): for a Keycard it holds the pairing key.\n{body}"
        );
        write_secret(path, text.as_bytes()).map_err(|source| ProfileError::Write {
            path: path.to_owned(),
            source,
        })
    }

    /// Opens the backend (asking for the PIN where needed, once) and checks that it holds the
    /// profile's key.
    pub fn open_signer(&self, profile_path: &Path) -> Result<Box<dyn Signer>, SignerError> {
        let signer: Box<dyn Signer> = match self.backend {
            BackendKind::File => {
                let file = self
                    .file
                    .as_ref()
                    .ok_or(SignerError::Profile("no [file] section".into()))?;
                Box::new(FileSigner::open(&resolve(profile_path, &file.key_file))?)
            }
            BackendKind::Pkcs11 => {
                let config = self
                    .pkcs11
                    .as_ref()
                    .ok_or(SignerError::Profile("no [pkcs11] section".into()))?;
                let device = format!("token `{}`", config.token);
                Box::new(Pkcs11Signer::open(config, || Ok(pin::pin(&device)?))?)
            }
            BackendKind::Keycard => {
                let config = self
                    .keycard
                    .as_ref()
                    .ok_or(SignerError::Profile("no [keycard] section".into()))?;
                Box::new(KeycardSigner::open(config, || {
                    Ok(pin::pin("the Keycard")?)
                })?)
            }
        };
        if signer.public_key() != &self.public_key {
            return Err(SignerError::KeyMismatch {
                expected: self.public_key.to_string(),
                got: signer.public_key().to_string(),
            });
        }
        Ok(signer)
    }
}

/// `path` relative to the directory of the profile file.
pub fn resolve(profile_path: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    match profile_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::signer::file::Algorithm;

    #[test]
    fn profiles_round_trip_and_open_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let profile_path = dir.path().join("op.toml");
        let (signer, _) =
            FileSigner::open_or_create(&dir.path().join("op.key"), Algorithm::Secp256k1).unwrap();
        let profile = Profile {
            backend: BackendKind::File,
            public_key: signer.public_key().clone(),
            file: Some(FileConfig {
                key_file: "op.key".into(),
            }),
            pkcs11: None,
            keycard: None,
        };
        profile.save(&profile_path).unwrap();
        let loaded = Profile::load(&profile_path).unwrap();
        assert_eq!(loaded, profile);
        let opened = loaded.open_signer(&profile_path).unwrap();
        assert_eq!(opened.public_key(), signer.public_key());

        // A profile naming another key refuses to sign with this one.
        let mut other = loaded.clone();
        other.public_key =
            OperatorKey::new(libp2p::identity::Keypair::generate_ed25519().public()).unwrap();
        assert!(matches!(
            other.open_signer(&profile_path),
            Err(SignerError::KeyMismatch { .. })
        ));

        assert!(matches!(
            Profile::load(&dir.path().join("nope.toml")),
            Err(ProfileError::Missing(_))
        ));
        std::fs::write(&profile_path, "backend = \"pkcs11\"\npublic_key = \"x\"\n").unwrap();
        assert!(matches!(
            Profile::load(&profile_path),
            Err(ProfileError::Invalid { .. })
        ));
    }
}
