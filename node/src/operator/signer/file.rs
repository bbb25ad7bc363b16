//! The `file` backend: the operator key in a file (hex of the libp2p protobuf keypair, mode
//! 0600). For development fleets only: anyone who can read the file can certify nodes. Roost
//! warns whenever it signs with a file key for a fleet that is not a development fleet.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use libp2p::identity::Keypair;

use super::KeyStorage;
use super::{Signer, SignerError};
use crate::operator::key::OperatorKey;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no operator key file at {0}; create one with `roost operator init --backend file --key-file {0}`")]
    Missing(PathBuf),
    #[error("cannot read operator key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write operator key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is not an operator key file (expected one hex line written by `roost operator init --backend file`)")]
    Malformed(PathBuf),
    #[error("operator keys must be secp256k1 or Ed25519")]
    UnsupportedKey,
}

/// Which algorithm a new key uses.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Secp256k1,
    Ed25519,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Secp256k1 => "secp256k1",
            Algorithm::Ed25519 => "ed25519",
        }
    }
}

pub struct FileSigner {
    keypair: Keypair,
    public: OperatorKey,
}

impl FileSigner {
    pub fn from_keypair(keypair: Keypair) -> Result<Self, Error> {
        let public = OperatorKey::new(keypair.public()).map_err(|_| Error::UnsupportedKey)?;
        Ok(FileSigner { keypair, public })
    }

    /// Opens an existing key file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Missing(path.to_owned()))
            }
            Err(source) => {
                return Err(Error::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "operator key file is readable by other users; run `chmod 600` on it");
            }
        }
        let bytes = hex::decode(text.trim()).map_err(|_| Error::Malformed(path.to_owned()))?;
        let keypair = Keypair::from_protobuf_encoding(&bytes)
            .map_err(|_| Error::Malformed(path.to_owned()))?;
        Self::from_keypair(keypair)
    }

    /// Opens the key file, creating it with a new key of `algorithm` if there is none.
    /// Returns whether a key was created.
    pub fn open_or_create(path: &Path, algorithm: Algorithm) -> Result<(Self, bool), Error> {
        match Self::open(path) {
            Ok(signer) => Ok((signer, false)),
            Err(Error::Missing(_)) => {
                let keypair = match algorithm {
                    Algorithm::Secp256k1 => Keypair::generate_secp256k1(),
                    Algorithm::Ed25519 => Keypair::generate_ed25519(),
                };
                let encoded = keypair
                    .to_protobuf_encoding()
                    .map_err(|_| Error::UnsupportedKey)?;
                write_secret(path, format!("{}\n", hex::encode(encoded)).as_bytes()).map_err(
                    |source| Error::Write {
                        path: path.to_owned(),
                        source,
                    },
                )?;
                Ok((Self::from_keypair(keypair)?, true))
            }
            Err(e) => Err(e),
        }
    }
}

impl Signer for FileSigner {
    fn public_key(&self) -> &OperatorKey {
        &self.public
    }

    fn key_storage(&self) -> KeyStorage {
        KeyStorage::File
    }

    fn sign(&mut self, message: &[u8]) -> Result<Vec<u8>, SignerError> {
        self.keypair
            .sign(message)
            .map_err(|e| SignerError::BadSignature(e.to_string()))
    }

    fn sign_prehash(&mut self, prehash: &[u8; 32]) -> Result<Vec<u8>, SignerError> {
        use k256::ecdsa::signature::hazmat::PrehashSigner;
        let keypair = self
            .keypair
            .clone()
            .try_into_secp256k1()
            .map_err(|_| SignerError::NotSecp256k1)?;
        let secret = zeroize::Zeroizing::new(keypair.secret().to_bytes());
        let key = k256::ecdsa::SigningKey::from_slice(secret.as_ref())
            .map_err(|e| SignerError::BadSignature(e.to_string()))?;
        let signature: k256::ecdsa::Signature = key
            .sign_prehash(prehash)
            .map_err(|e| SignerError::BadSignature(e.to_string()))?;
        Ok(signature.to_bytes().to_vec())
    }
}

/// Writes `contents` to `path` through a 0600 temp file and a rename: never half-written, never
/// readable by others, not even briefly.
pub fn write_secret(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_created_0600_once_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("op.key");
        assert!(matches!(FileSigner::open(&path), Err(Error::Missing(_))));
        let (a, created) = FileSigner::open_or_create(&path, Algorithm::Ed25519).unwrap();
        assert!(created);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (b, created) = FileSigner::open_or_create(&path, Algorithm::Secp256k1).unwrap();
        assert!(!created);
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.public_key().algorithm(), "ed25519");
        fs::write(&path, "garbage").unwrap();
        assert!(matches!(FileSigner::open(&path), Err(Error::Malformed(_))));
    }
}
