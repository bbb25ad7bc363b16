//! Running the js-waku clients in tests/interop (installed from npm by `scripts/interop-setup`):
//! a Node script or the browser driver, its JSON-line events on stdout, its stderr kept for
//! failure messages. Shared by interop.rs (js-waku in Node) and browser.rs (js-waku in Chromium).

use std::{path::PathBuf, process::Command, sync::OnceLock, time::Duration};

use roost_node::message::MessageHash;
use roost_tests::client_process::{self, ClientProcess};
use serde_json::Value;

/// How long one js-waku scenario may take (starting Node and libp2p included).
pub const JS_TIMEOUT: Duration = Duration::from_secs(120);

pub fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Installs the client once per test process (a no-op when `scripts/test` already did).
pub fn ensure_client() -> PathBuf {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        let node = interop_dir().join("node_modules").join(".bin").join("node");
        client_process::install_with("interop-setup", node)
    })
    .clone()
}

/// The js-waku client scripts of tests/interop, run under its pinned Node; their events come
/// through [`ClientProcess`].
pub struct Js;

impl Js {
    /// `node interop.mjs <scenario> <args>`.
    pub fn start(scenario: &str, args: Value, env: &[(&str, &str)]) -> ClientProcess {
        Js::spawn(&["interop.mjs", scenario, &args.to_string()], env)
    }

    /// `node <script and arguments>` in tests/interop.
    pub fn spawn(script_and_args: &[&str], env: &[(&str, &str)]) -> ClientProcess {
        let mut cmd = Command::new(ensure_client());
        cmd.args(script_and_args)
            .current_dir(interop_dir())
            // js-waku relaxes its address filter when NODE_ENV=test: never inherit it.
            .env_remove("NODE_ENV")
            .env_remove("NODE_EXTRA_CA_CERTS");
        for (key, value) in env {
            cmd.env(key, value);
        }
        ClientProcess::spawn("js-waku", cmd, JS_TIMEOUT)
    }
}

/// A JSON array of hex hashes.
pub fn hashes(value: &Value) -> Vec<String> {
    value
        .as_array()
        .expect("an array of hashes")
        .iter()
        .map(|h| h.as_str().expect("hex hash").to_owned())
        .collect()
}

/// A message hash as @waku/message-hash prints it (hex, no `0x`).
pub fn hex(hash: &MessageHash) -> String {
    hash.to_hex().trim_start_matches("0x").to_owned()
}
