//! Running the real `roost` binary: for CLI tests, kill -9 tests and anything that needs a
//! separate process. The binary is found next to the test executable (`target/<profile>/roost`);
//! if it is missing it is built once with cargo. `ROOST_TEST_BIN` overrides the path.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, OnceLock},
    time::Duration,
};

/// Path of the `roost` binary, building it if needed.
pub fn roost_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(path) = std::env::var("ROOST_TEST_BIN") {
            return PathBuf::from(path);
        }
        workspace_bin("roost-node", "roost")
    })
    .clone()
}

/// Path of binary `bin` of workspace package `package` (e.g. `roost-keycard-emu`,
/// `keycard-emu`), built once per test process so a stale binary never runs.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(bin) {
        return path.clone();
    }
    let path = {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> -> target/<profile>/roost
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("test executable lives in target/<profile>/deps")
            .to_owned();
        let bin_path = profile_dir.join(bin);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", package, "--bin", bin]);
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
            .unwrap_or_else(|e| panic!("run cargo build for the {bin} binary: {e}"));
        assert!(status.success(), "building the {bin} binary failed");
        assert!(
            bin_path.exists(),
            "{bin} binary not found at {}",
            bin_path.display()
        );
        bin_path
    };
    built.insert(bin.to_owned(), path.clone());
    path
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
