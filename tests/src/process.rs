//! Running the real `roost` and `roost-fleet` binaries: for CLI tests, kill -9 tests and
//! anything that needs a separate process. Binaries are found next to the test executable
//! (`target/<profile>/roost`) after a `cargo build` (a no-op when fresh). `ROOST_TEST_BIN`
//! overrides the `roost` path.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::Duration,
};

/// Path of the `roost` binary, building it if needed.
pub fn roost_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var("ROOST_TEST_BIN") {
        Ok(path) => PathBuf::from(path),
        Err(_) => workspace_bin("roost-node", "roost"),
    })
    .clone()
}

/// Path of the `roost-fleet` binary, building it if needed.
pub fn fleet_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("roost-fleet", "roost-fleet"))
        .clone()
}

/// Builds (a no-op when fresh) and locates a binary of this workspace next to the test
/// executable: `target/<profile>/deps/<test>` -> `target/<profile>/<bin>`.
pub fn workspace_bin(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_owned();
    let bin = profile_dir.join(name);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", package, "--bin", name]);
    if profile_dir.file_name().and_then(|n| n.to_str()) == Some("release") {
        build.arg("--release");
    }
    // Always run the build: it is a no-op when the binary is fresh, and a stale binary would
    // test old code. The test process's CARGO_* variables (CARGO_MANIFEST_DIR, ...) must not
    // leak into it: build scripts track some of them and would rebuild half the tree.
    for (key, _) in std::env::vars() {
        let keep = matches!(
            key.as_str(),
            "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_BUILD_JOBS"
        );
        if key.starts_with("CARGO_") && !keep {
            build.env_remove(key);
        }
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("run cargo build for {name}: {e}"));
    assert!(status.success(), "building {name} failed");
    assert!(bin.exists(), "{name} not found at {}", bin.display());
    bin
}

/// Runs `roost <args>` to completion with a clean `ROOST_*` environment.
pub fn run_roost(args: &[&str], cwd: &std::path::Path) -> Output {
    roost_command(args, cwd)
        .output()
        .expect("run the roost binary")
}

/// A `roost` command with the `ROOST_*` variables of this process removed.
pub fn roost_command(args: &[&str], cwd: &std::path::Path) -> Command {
    let mut cmd = Command::new(roost_bin());
    cmd.args(args).current_dir(cwd);
    for (key, _) in std::env::vars() {
        if key.starts_with("ROOST_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A `roost` process that is killed when dropped.
pub struct RoostProcess {
    pub child: Child,
}

impl RoostProcess {
    pub fn spawn(args: &[&str], cwd: &std::path::Path) -> std::io::Result<RoostProcess> {
        let child = roost_command(args, cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        Ok(RoostProcess { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (e.g. `"INT"`, `"TERM"`, `"KILL"`).
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status();
    }

    /// Waits for exit up to `timeout`; `None` if still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stderr (after it exited).
    pub fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut out = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut out);
        }
        out
    }
}

impl Drop for RoostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `roost run` node in its own process, on 127.0.0.1 with free ports and JSON logs, started
/// and ready: its `/debug/v1/info` has been read. Killed when dropped.
pub struct NodeProcess {
    pub process: RoostProcess,
    /// `/debug/v1/info` as JSON.
    pub info: serde_json::Value,
    /// `http://127.0.0.1:<port>`.
    pub http: String,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Sets the environment a test node needs: loopback, free ports, JSON logs, no inherited
/// `ROOST_*` variables.
pub fn test_node_env(cmd: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("ROOST_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("ROOST_NETWORK_TCP_PORT", "0")
        .env("ROOST_NETWORK_WS_PORT", "0")
        .env("ROOST_NETWORK_LISTEN_IP", "127.0.0.1")
        .env("ROOST_HTTP_ADDRESS", "127.0.0.1:0")
        .env("ROOST_REST_ADDRESS", "127.0.0.1:0")
        .env("ROOST_LOG_FORMAT", "json");
}

impl NodeProcess {
    /// `roost run --data-dir <data_dir> <args…>`.
    pub async fn start(data_dir: &std::path::Path, args: &[&str]) -> NodeProcess {
        let mut cmd = Command::new(roost_bin());
        cmd.arg("run").arg("--data-dir").arg(data_dir).args(args);
        test_node_env(&mut cmd);
        Self::start_command(cmd).await
    }

    /// Runs a prepared command (e.g. `roost run` wrapped in `unshare`) that ends up exec'ing
    /// a roost node, and waits until it serves `/debug/v1/info`.
    pub async fn start_command(mut cmd: Command) -> NodeProcess {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn roost");
        let stderr = child.stderr.take().expect("piped stderr");
        let process = RoostProcess { child };
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = logs.clone();
        // Drain stderr for the life of the process so it never blocks on a full pipe.
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(mut logs) = sink.lock() {
                    logs.push(line);
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let http = loop {
            let found = logs.lock().ok().and_then(|logs| {
                logs.iter().find_map(|line| {
                    let json: serde_json::Value = serde_json::from_str(line).ok()?;
                    if json["message"] != "roost node started" {
                        return None;
                    }
                    json["http"].as_str().map(|s| {
                        s.trim_start_matches("Some(")
                            .trim_end_matches(')')
                            .to_owned()
                    })
                })
            });
            if let Some(http) = found {
                break format!("http://{http}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "roost did not start; logs: {:#?}",
                logs.lock().map(|l| l.clone()).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (_, body) = crate::http_get(&format!("{http}/debug/v1/info")).await;
        let info = serde_json::from_str(&body).expect("info is JSON");
        NodeProcess {
            process,
            info,
            http,
            logs,
        }
    }

    /// The node's TCP address on 127.0.0.1, with `/p2p/<id>`.
    pub fn tcp_addr(&self) -> libp2p::Multiaddr {
        let addresses: Vec<libp2p::Multiaddr> = self.info["tcp_addresses"]
            .as_array()
            .expect("tcp_addresses")
            .iter()
            .filter_map(|a| a.as_str()?.parse().ok())
            .collect();
        crate::loopback(&addresses)
    }

    pub fn peer_id(&self) -> libp2p::PeerId {
        self.info["peer_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("peer id")
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        crate::http_get(&format!("{}/metrics", self.http)).await.1
    }

    /// `GET /health` as JSON.
    pub async fn health(&self) -> serde_json::Value {
        let (_, body) = crate::http_get(&format!("{}/health", self.http)).await;
        serde_json::from_str(&body).expect("health is JSON")
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The process's resident set size (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill9(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }
}
