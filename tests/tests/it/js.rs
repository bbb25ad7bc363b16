//! Running the js-waku clients in tests/interop (installed from npm by `scripts/interop-setup`):
//! a Node script or the browser driver, its JSON-line events on stdout, its stderr kept for
//! failure messages. Shared by interop.rs (js-waku in Node) and browser.rs (js-waku in Chromium).

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{mpsc, Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use roost_node::message::MessageHash;
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
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("scripts")
            .join("interop-setup");
        let status = Command::new(&script)
            .status()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(status.success(), "scripts/interop-setup failed");
        let node = interop_dir().join("node_modules").join(".bin").join("node");
        assert!(node.exists(), "no Node binary at {}", node.display());
        node
    })
    .clone()
}

/// A running js-waku scenario: its JSON events and its stderr for diagnostics.
pub struct Js {
    child: Child,
    events: mpsc::Receiver<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
    timeout: Duration,
}

impl Js {
    /// `node interop.mjs <scenario> <args>`.
    pub fn start(scenario: &str, args: Value, env: &[(&str, &str)]) -> Js {
        Js::spawn(&["interop.mjs", scenario, &args.to_string()], env)
    }

    /// `node <script and arguments>` in tests/interop.
    pub fn spawn(script_and_args: &[&str], env: &[(&str, &str)]) -> Js {
        let node = ensure_client();
        let mut cmd = Command::new(node);
        cmd.args(script_and_args)
            .current_dir(interop_dir())
            // js-waku relaxes its address filter when NODE_ENV=test: never inherit it.
            .env_remove("NODE_ENV")
            .env_remove("NODE_EXTRA_CA_CERTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start node {script_and_args:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stderr_pipe = child.stderr.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                if let Ok(mut lines) = sink.lock() {
                    lines.push(line);
                }
            }
        });
        Js {
            child,
            events,
            stderr,
            timeout: JS_TIMEOUT,
        }
    }

    /// How long [`Js::event`] waits for one event (default [`JS_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Js {
        self.timeout = timeout;
        self
    }

    /// Waits (off the async runtime) for the event named `name`; an `error` event, the script
    /// exiting without it, or the timeout fails with the script's stderr.
    pub async fn event(self, name: &'static str) -> (Js, Value) {
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + self.timeout;
            while Instant::now() < deadline {
                match self.events.recv_timeout(Duration::from_millis(200)) {
                    Ok(event) if event["event"] == name => return (self, event),
                    Ok(event) if event["event"] == "error" => {
                        panic!("js-waku failed: {event}\n{}", self.logs())
                    }
                    Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let mut js = self;
                        let status = js
                            .child
                            .wait()
                            .map_or_else(|e| e.to_string(), |s| s.to_string());
                        panic!("js-waku exited ({status}) without `{name}`\n{}", js.logs())
                    }
                }
            }
            panic!(
                "no `{name}` from js-waku within {:?}\n{}",
                self.timeout,
                self.logs()
            )
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Js {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
