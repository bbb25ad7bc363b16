//! Operator identity: attestations signed through every backend (file, SoftHSM2 over PKCS#11,
//! the emulated Keycard over pcscd), verified by the CLI, by nodes and by fleet peers.

mod cli;
mod fleet;
mod hsm;
mod node;
mod pcsc;

use std::{path::Path, process::Output};

use libp2p::PeerId;
use tempfile::TempDir;

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// The command succeeded; returns its stdout.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({:?}): {}\n{}",
        out.status.code(),
        stderr(out),
        stdout(out)
    );
    stdout(out)
}

/// The command failed with `code` and exactly one line, `error: …` containing `needle`.
pub fn one_line_error(out: &Output, code: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code; stderr: {err}; stdout: {}",
        stdout(out)
    );
    assert_eq!(err.lines().count(), 1, "one line on stderr, got:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

/// A node data directory with its key already made; returns it and the node's PeerId.
pub fn node_dir() -> (TempDir, PeerId) {
    let dir = tempfile::tempdir().unwrap();
    let key = roost_node::identity::load_or_create(dir.path()).unwrap();
    (dir, key.public().to_peer_id())
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}
