//! A real client of another ecosystem (js-waku under Node, py-libp2p under Python, a browser
//! driven from Node) run as a child process that reports JSON lines on stdout:
//! `{"event": "<name>", ...}`, with `{"event": "error", "message": ...}` for a failure. Its
//! stderr is kept for the failure message; the process is killed when dropped. A scenario that
//! waits for the test (`"ready"`) is released with [`ClientProcess::send_line`].

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

/// Runs `scripts/<name>` (an idempotent installer such as `interop-setup`), failing the test
/// when it fails; then checks that `expected` (what it installs) exists and returns it.
pub fn install_with(name: &str, expected: PathBuf) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join(name);
    let status = Command::new(&script)
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(status.success(), "scripts/{name} failed");
    assert!(
        expected.exists(),
        "scripts/{name} left no {}",
        expected.display()
    );
    expected
}

pub struct ClientProcess {
    /// Who it is, for failure messages ("js-waku", "py-libp2p").
    name: &'static str,
    timeout: Duration,
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl ClientProcess {
    /// Spawns `command` with piped stdio; `timeout` bounds each wait for an event.
    pub fn spawn(name: &'static str, mut command: Command, timeout: Duration) -> ClientProcess {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({command:?}): {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
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
        ClientProcess {
            name,
            timeout,
            child,
            stdin,
            events,
            stderr,
        }
    }

    /// How long [`ClientProcess::event`] waits for one event.
    pub fn timeout(mut self, timeout: Duration) -> ClientProcess {
        self.timeout = timeout;
        self
    }

    /// Waits (off the async runtime) for the event named `name`; an `error` event, an exit
    /// or the timeout fails the test with the client's stderr.
    pub async fn event(self, name: &'static str) -> (ClientProcess, Value) {
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + self.timeout;
            while Instant::now() < deadline {
                match self.events.recv_timeout(Duration::from_millis(200)) {
                    Ok(event) if event["event"] == name => return (self, event),
                    Ok(event) if event["event"] == "error" => {
                        panic!("{} failed: {event}\n{}", self.name, self.logs())
                    }
                    Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        panic!("{} exited before `{name}`\n{}", self.name, self.logs())
                    }
                }
            }
            panic!(
                "no `{name}` from {} within {:?}\n{}",
                self.name,
                self.timeout,
                self.logs()
            )
        })
        .await
        // The client's own failure message, not a JoinError wrapping it.
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Writes one line to the client's stdin (a scenario waiting after `ready` goes on).
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write to {}: {e}\n{}", self.name, self.logs()));
    }

    /// Everything the client wrote to stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
