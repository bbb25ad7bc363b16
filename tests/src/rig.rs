//! Test rigs for operator keys, made of the real parts:
//!
//! - [`SoftHsm`]: a SoftHSM2 token in a temp dir (`SOFTHSM2_CONF` points at a private config),
//!   used through the real PKCS#11 module;
//! - [`PcscRig`]: `pcscd` in the foreground with the vsmartcard vpcd reader, in private mount and
//!   network namespaces (`scripts/rig/pcscd-ns`), and the emulated Keycard (`keycard-emu`)
//!   inserted into that reader. Roost runs inside the namespaces through `nsenter` and talks to
//!   that pcscd like to any other. Tests using it run in the `pcscd` nextest group, one at a time.
//!
//! Packages come from `scripts/test-packages` (installed by `scripts/setup --test`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::process::{roost_bin, workspace_bin};

/// Debian's SoftHSM2 PKCS#11 module.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The port vpcd listens on for the card, inside the rig's own network namespace (so no other
/// process on the machine can hold or reach it).
pub const VPCD_PORT: u16 = 35963;
/// The emulated card's PIN, PUK and pairing password.
pub const CARD_PIN: &str = "123456";
pub const CARD_PUK: &str = "123456789012";
pub const PAIRING_PASSWORD: &str = "KeycardDefaultPairing";
/// How long rig parts get to come up.
const RIG_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `roost operator` command may take before the test fails (instead of hanging).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A SoftHSM2 token of its own, in a temp dir.
pub struct SoftHsm {
    pub dir: TempDir,
    pub conf: PathBuf,
    pub token: String,
    pub pin: String,
}

impl SoftHsm {
    /// Initialises a token labelled `token` with user PIN `1234` (SO PIN `87654321`).
    pub fn new(token: &str) -> SoftHsm {
        let dir = tempfile::tempdir().expect("temp dir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .expect("write softhsm2.conf");
        let hsm = SoftHsm {
            dir,
            conf,
            token: token.to_owned(),
            pin: "1234".into(),
        };
        let out = hsm
            .command("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                token,
                "--so-pin",
                "87654321",
                "--pin",
                &hsm.pin,
            ])
            .output()
            .expect("run softhsm2-util (install it with ./scripts/setup --test)");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        hsm
    }

    /// A command with this token's `SOFTHSM2_CONF`.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SOFTHSM2_CONF", &self.conf);
        cmd
    }

    /// Creates a key pair with OpenSC's `pkcs11-tool`, as an operator would outside Roost.
    /// `key_type`: `EC:secp256k1` or `EC:edwards25519`.
    pub fn keygen_with_pkcs11_tool(&self, label: &str, key_type: &str) {
        let out = self
            .command("pkcs11-tool")
            .args([
                "--module",
                SOFTHSM_MODULE,
                "--token-label",
                &self.token,
                "--login",
                "--pin",
                &self.pin,
                "--keypairgen",
                "--key-type",
                key_type,
                "--label",
                label,
                "--id",
                "0102",
                "--usage-sign",
            ])
            .output()
            .expect("run pkcs11-tool (install opensc with ./scripts/setup --test)");
        assert!(
            out.status.success(),
            "pkcs11-tool --keypairgen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `roost <args>` with this token's config and `ROOST_PIN` = `pin`.
    pub fn roost(&self, args: &[&str], cwd: &Path, pin: &str) -> Output {
        crate::process::roost_command(args, cwd)
            .env("SOFTHSM2_CONF", &self.conf)
            .env("ROOST_PIN", pin)
            .output()
            .expect("run roost")
    }
}

/// What sits in the rig's reader slot.
#[derive(Debug, Clone, Default)]
pub struct Card {
    /// Keep the card out of the reader.
    pub absent: bool,
    /// Pull the card out when a command with this INS arrives (e.g. 0xC0, SIGN).
    pub remove_on_ins: Option<u8>,
}

/// What the rig's pcscd serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readers {
    /// One vpcd reader, ready for the emulated card.
    Vpcd,
    /// pcscd with no reader configured.
    None,
    /// No pcscd at all in the namespace.
    NoDaemon,
}

/// pcscd with a vpcd reader in private namespaces, and an emulated Keycard.
pub struct PcscRig {
    pub dir: TempDir,
    /// The card's memory (keys, pairings, PIN counter), kept across insertions.
    pub card_state: PathBuf,
    pcscd: Child,
    emulator: Option<Child>,
}

impl PcscRig {
    /// Starts pcscd (or just the namespaces) and waits until it accepts clients.
    pub fn start(readers: Readers) -> PcscRig {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/rig/pcscd-ns");
        let mode = match readers {
            Readers::Vpcd => VPCD_PORT.to_string(),
            Readers::None => "none".into(),
            Readers::NoDaemon => "no-daemon".into(),
        };
        let log = std::fs::File::create(dir.path().join("pcscd.log")).expect("pcscd log");
        let pcscd = Command::new(script)
            .arg(dir.path().join("rig"))
            .arg(&mode)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start scripts/rig/pcscd-ns");
        let rig = PcscRig {
            card_state: dir.path().join("card.json"),
            dir,
            pcscd,
            emulator: None,
        };
        // /proc/<pid>/root shows the namespace's own /run/pcscd.
        let socket = PathBuf::from(format!("/proc/{}/root/run/pcscd/pcscd.comm", rig.pid()));
        let ready = || match readers {
            Readers::NoDaemon => std::fs::read_to_string(format!("/proc/{}/comm", rig.pid()))
                .map(|c| c.trim() == "sleep")
                .unwrap_or(false),
            _ => socket.exists(),
        };
        rig.wait_for("pcscd to start", ready);
        rig
    }

    /// The pid of pcscd (the namespaces' first process).
    pub fn pid(&self) -> u32 {
        self.pcscd.id()
    }

    /// Inserts the emulated Keycard (its memory persists in [`Self::card_state`] across
    /// insertions) and waits until pcscd reports it present (unless it is kept absent).
    pub fn insert(&mut self, card: Card) {
        if self.emulator.is_some() {
            self.remove();
            // Let pcscd notice the removal first, or it may still report the old card.
            self.wait_for("the old card to be gone", || !self.card_present());
        }
        let mut cmd = self.nsenter(&["--net"]);
        cmd.arg(keycard_emu_bin())
            .args(["--connect", &format!("127.0.0.1:{VPCD_PORT}")])
            .arg("--state")
            .arg(&self.card_state)
            .args(["--pin", CARD_PIN, "--puk", CARD_PUK])
            .args(["--pairing-password", PAIRING_PASSWORD]);
        if card.absent {
            cmd.arg("--absent");
        }
        if let Some(ins) = card.remove_on_ins {
            cmd.args(["--remove-on-ins", &format!("{ins:02X}")]);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("keycard-emu.log"))
            .expect("emulator log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keycard-emu");
        self.emulator = Some(child);
        if card.absent {
            self.wait_for("the card to be gone", || !self.card_present());
        } else {
            self.wait_for("the card to be present", || self.card_present());
        }
    }

    /// Pulls the card out (stops the emulator).
    pub fn remove(&mut self) {
        if let Some(mut child) = self.emulator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether pcscd sees a card in the reader (OpenSC's reader listing).
    pub fn card_present(&self) -> bool {
        let Ok(out) = self
            .nsenter(&["--mount"])
            .args(["opensc-tool", "--list-readers"])
            .stderr(Stdio::null())
            .output()
        else {
            return false;
        };
        String::from_utf8_lossy(&out.stdout).lines().any(|l| {
            l.contains("Roost Test Keycard Reader 00 00")
                && l.split_whitespace().nth(1) == Some("Yes")
        })
    }

    /// Runs `roost <args>` inside the rig (with `ROOST_PIN` and `ROOST_PAIRING_PASSWORD`
    /// set to `pin` and the card's pairing password).
    pub fn roost(&self, args: &[&str], cwd: &Path, pin: &str) -> Output {
        self.run(&roost_bin(), args, cwd, pin)
    }

    /// Runs `<bin> <args>` inside the rig, as [`Self::roost`] runs `roost` (e.g. `roost-fleet`,
    /// which signs with the same operator profiles).
    pub fn run(&self, bin: &Path, args: &[&str], cwd: &Path, pin: &str) -> Output {
        let wd = format!("--wd={}", cwd.display());
        let mut cmd = self.nsenter(&["--mount", &wd]);
        cmd.arg(bin).args(args).current_dir(cwd);
        for (key, _) in std::env::vars() {
            if key.starts_with("ROOST_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("ROOST_PIN", pin)
            .env("ROOST_PAIRING_PASSWORD", PAIRING_PASSWORD);
        output_within(cmd, COMMAND_TIMEOUT, || self.logs())
    }

    /// The card's remaining PIN tries, from its memory.
    pub fn pin_tries_left(&self) -> u8 {
        let text = std::fs::read_to_string(&self.card_state).expect("card state");
        let state: serde_json::Value = serde_json::from_str(&text).expect("card state JSON");
        state["pin_tries_left"].as_u64().expect("pin_tries_left") as u8
    }

    /// pcscd's and the emulator's logs, for failure messages.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- pcscd\n{}\n--- keycard-emu\n{}",
            read("pcscd.log"),
            read("keycard-emu.log")
        )
    }

    /// `nsenter --target=<pid> <options> --`: the command to run follows.
    fn nsenter(&self, options: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", self.pid()));
        if !running_as_root() {
            cmd.args(["--user", "--preserve-credentials"]);
        }
        cmd.args(options).arg("--");
        cmd
    }

    fn wait_for(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + RIG_TIMEOUT;
        while !condition() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PcscRig {
    fn drop(&mut self) {
        self.remove();
        // SIGTERM lets pcscd clean up; the namespaces and their tmpfs go with it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.pcscd.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.pcscd.kill();
        let _ = self.pcscd.wait();
    }
}

/// Runs `cmd` to completion, killing it and failing the test if it takes longer than `limit`.
fn output_within(mut cmd: Command, limit: Duration, logs: impl Fn() -> String) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}\n{}", logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// The emulated Keycard binary, built once per test process.
fn keycard_emu_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("roost-keycard-emu", "keycard-emu"))
        .clone()
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
