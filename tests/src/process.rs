//! Running the real `roost` binary: for CLI tests, kill -9 tests and anything that needs a
//! separate process. The binary is found next to the test executable (`target/<profile>/roost`);
//! if it is missing it is built once with cargo. `ROOST_TEST_BIN` overrides the path.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::Duration,
};

/// Path of the `roost` binary, building it if needed.
pub fn roost_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("ROOST_TEST_BIN") {
            return PathBuf::from(path);
        }
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/roost
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test executable lives in target/<profile>/deps")
            .to_owned();
        let bin = profile_dir.join("roost");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "roost-node", "--bin", "roost"]);
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
            .expect("run cargo build for the roost binary");
        assert!(status.success(), "building the roost binary failed");
        assert!(bin.exists(), "roost binary not found at {}", bin.display());
        bin
    })
    .clone()
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

/// A `roost run` process on 127.0.0.1 with free ports, its config written to
/// `<dir>/roost.toml` and its data in `<dir>/data`. Killed when dropped.
pub struct NodeProcess {
    pub process: RoostProcess,
    /// The HTTP endpoint, `127.0.0.1:<port>`.
    pub http: String,
    pub peer_id: libp2p::PeerId,
    /// The TCP listen address with `/p2p/<peer id>`.
    pub tcp_addr: libp2p::Multiaddr,
    /// Log lines (JSON) seen so far.
    pub logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl NodeProcess {
    /// Starts the node and waits (up to 60 s) until it logged its start-up line. Blocking: call
    /// it from `spawn_blocking` in async tests.
    pub fn start(dir: &std::path::Path, config_toml: &str) -> anyhow::Result<NodeProcess> {
        use std::io::BufRead;
        std::fs::write(dir.join("roost.toml"), config_toml)?;
        let mut cmd = roost_command(&["run", "--config", "roost.toml"], dir);
        cmd.env("ROOST_NODE_DATA_DIR", dir.join("data"))
            .env("ROOST_NETWORK_TCP_PORT", "0")
            .env("ROOST_NETWORK_WS_PORT", "0")
            .env("ROOST_NETWORK_LISTEN_IP", "127.0.0.1")
            .env("ROOST_HTTP_ADDRESS", "127.0.0.1:0")
            .env("ROOST_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut process = RoostProcess {
            child: cmd.spawn()?,
        };
        let stderr = process
            .child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Ok(mut l) = logs.lock() {
                        l.push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let (http, peer_id) = loop {
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "roost did not start within 60 s; logs: {:?}",
                    logs.lock().map(|l| l.clone())
                );
            }
            let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
                if let Ok(Some(status)) = process.child.try_wait() {
                    anyhow::bail!(
                        "roost exited with {status}; logs: {:?}",
                        logs.lock().map(|l| l.clone())
                    );
                }
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if json["message"] == "roost node started" {
                let http = json["http"]
                    .as_str()
                    .map(|s| {
                        s.trim_start_matches("Some(")
                            .trim_end_matches(')')
                            .to_owned()
                    })
                    .ok_or_else(|| anyhow::anyhow!("no http address in {line}"))?;
                let peer_id: libp2p::PeerId = json["peer_id"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("no peer id in {line}"))?
                    .parse()?;
                break (http, peer_id);
            }
        };
        let tcp_addr = loop {
            if std::time::Instant::now() >= deadline {
                anyhow::bail!("roost logged no TCP listen address");
            }
            let found = logs.lock().ok().and_then(|l| {
                l.iter().find_map(|line| {
                    let json: serde_json::Value = serde_json::from_str(line).ok()?;
                    let address = json["address"].as_str()?;
                    (json["message"] == "listening on"
                        && address.starts_with("/ip4/127.0.0.1/tcp/")
                        && !address.contains("/ws"))
                    .then(|| address.parse::<libp2p::Multiaddr>().ok())
                    .flatten()
                })
            });
            match found {
                Some(a) => break a,
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        Ok(NodeProcess {
            process,
            http,
            peer_id,
            tcp_addr,
            logs,
        })
    }

    pub fn http_url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The process's resident set size (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}
