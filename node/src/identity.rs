//! The node's libp2p identity: a secp256k1 key (as nwaku uses, so ENRs work) generated on first
//! start and kept as hex in `<data_dir>/node.key` with mode 0600.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use libp2p::identity::{secp256k1, Keypair};

pub const KEY_FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read node key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write node key {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("node key {path} is not a 32-byte secp256k1 secret in hex; restore it from backup or delete it to make a new identity")]
    Malformed { path: PathBuf },
}

/// Loads the key in `data_dir`, or creates one if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, Error> {
    let path = data_dir.join(KEY_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            warn_if_readable_by_others(&path);
            parse(&text).ok_or(Error::Malformed { path })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(source) => Err(Error::Read { path, source }),
    }
}

/// Parses a hex secp256k1 secret (optionally `0x`-prefixed).
pub fn parse(text: &str) -> Option<Keypair> {
    let text = text.trim();
    let mut bytes = hex::decode(text.strip_prefix("0x").unwrap_or(text)).ok()?;
    let secret = secp256k1::SecretKey::try_from_bytes(&mut bytes).ok()?;
    Some(secp256k1::Keypair::from(secret).into())
}

fn create(path: &Path) -> Result<Keypair, Error> {
    let keypair = secp256k1::Keypair::generate();
    let secret_hex = hex::encode(keypair.secret().to_bytes());
    // Write to a temp file created 0600 and rename, so a crash never leaves a half key and the
    // secret is never world-readable, not even briefly.
    let tmp = path.with_extension("key.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(secret_hex.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })?;
    tracing::info!(path = %path.display(), "generated a new node key");
    Ok(keypair.into())
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "node key is readable by other users; run `chmod 600` on it"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_with_mode_0600_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create(dir.path()).unwrap();
        assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
        assert!(first.clone().try_into_secp256k1().is_ok());
    }

    #[test]
    fn malformed_keys_are_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), "zz").unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(Error::Malformed { .. })
        ));
        assert_eq!(fs::read_to_string(dir.path().join(KEY_FILE)).unwrap(), "zz");
    }
}
