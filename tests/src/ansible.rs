//! Real hosts for the Ansible playbooks: network namespaces on this machine, each with its own
//! address and sshd (made and removed by `ansible/tests/netns-hosts`), and `ansible-playbook`
//! runs against them with their play recap parsed.
//!
//! The hosts use fixed names and the fleet's own addresses, so only one set can exist per
//! machine: [`MachineLock`] serialises test runs (also across worktrees and checkouts).

use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    process::Command,
};

/// Lock file held while test hosts exist.
pub const LOCK_FILE: &str = "/run/lock/roost-netns-hosts.lock";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_owned()
}

/// Fails the test with a clear message unless it runs as root and `tools` are installed: these
/// tests must never pass by skipping.
pub fn require_root_and_tools(tools: &[&str]) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    assert_eq!(
        euid, "0",
        "this test needs root (network namespaces, veth pairs, sshd, nftables); run the suite as root, as CI does"
    );
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .any(|d| Path::new(d).join(t).is_file())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}; run `scripts/setup --test` (it installs the test rig)"
    );
}

/// An exclusive lock on [`LOCK_FILE`], held until dropped.
pub struct MachineLock {
    _file: File,
}

impl MachineLock {
    /// Waits for the lock.
    pub fn acquire() -> MachineLock {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .unwrap_or_else(|e| panic!("cannot open {LOCK_FILE}: {e}"));
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .unwrap_or_else(|e| panic!("cannot lock {LOCK_FILE}: {e}"));
        MachineLock { _file: file }
    }
}

/// One test host.
#[derive(Debug, Clone)]
pub struct TestHost {
    pub name: String,
    /// Its network namespace (`ip netns exec <namespace> ...`).
    pub namespace: String,
    pub address: String,
}

/// The test hosts of an inventory; removed (every process in them stopped) when dropped.
pub struct TestHosts {
    dir: PathBuf,
    pub hosts: Vec<TestHost>,
}

fn script() -> PathBuf {
    repo_root()
        .join("ansible")
        .join("tests")
        .join("netns-hosts")
}

impl TestHosts {
    /// Creates one namespace per host of `inventory` under `dir`; `controller` and `extra` are
    /// this machine's addresses on the hosts' bridge.
    pub fn up(dir: &Path, inventory: &Path, controller: &str, extra: &[&str]) -> TestHosts {
        let mut hosts = TestHosts {
            dir: dir.to_owned(),
            hosts: Vec::new(),
        };
        let output = Command::new(script())
            .arg("up")
            .arg(dir)
            .arg(inventory)
            .env("NETNS_CONTROLLER", controller)
            .env("NETNS_EXTRA", extra.join(" "))
            .output()
            .expect("run ansible/tests/netns-hosts");
        assert!(
            output.status.success(),
            "netns-hosts up failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let list = std::fs::read_to_string(dir.join("hosts.txt")).expect("hosts.txt");
        hosts.hosts = list
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace();
                Some(TestHost {
                    name: parts.next()?.to_owned(),
                    namespace: parts.next()?.to_owned(),
                    address: parts.next()?.to_owned(),
                })
            })
            .collect();
        hosts
    }

    /// The private key root logs in with.
    pub fn ssh_key(&self) -> PathBuf {
        self.dir.join("ssh").join("id_ed25519")
    }

    pub fn host(&self, name: &str) -> &TestHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no test host {name}"))
    }

    /// Runs `args` inside `host`'s namespace and returns stdout (panics on failure).
    pub fn exec(&self, host: &TestHost, args: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &host.namespace])
            .args(args)
            .output()
            .expect("run ip netns exec");
        assert!(
            output.status.success(),
            "{args:?} in {}: {}",
            host.name,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Pids of the processes in `host`'s namespace.
    pub fn pids(&self, host: &TestHost) -> Vec<u32> {
        let output = Command::new("ip")
            .args(["netns", "pids", &host.namespace])
            .output()
            .expect("run ip netns pids");
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for TestHosts {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("down").arg(&self.dir).status();
    }
}

/// A system user and group the playbooks create on this (shared) machine, removed again when
/// dropped if they did not exist before.
pub struct CreatedAccount {
    user: String,
    user_existed: bool,
    group_existed: bool,
}

fn getent(database: &str, key: &str) -> bool {
    Command::new("getent")
        .args([database, key])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

impl CreatedAccount {
    pub fn watch(user: &str) -> CreatedAccount {
        CreatedAccount {
            user: user.to_owned(),
            user_existed: getent("passwd", user),
            group_existed: getent("group", user),
        }
    }
}

impl Drop for CreatedAccount {
    fn drop(&mut self) {
        if !self.user_existed && getent("passwd", &self.user) {
            let _ = Command::new("userdel").arg(&self.user).status();
        }
        if !self.group_existed && getent("group", &self.user) {
            let _ = Command::new("groupdel").arg(&self.user).status();
        }
    }
}

/// One host's line of a play recap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recap {
    pub ok: u32,
    pub changed: u32,
    pub unreachable: u32,
    pub failed: u32,
    pub skipped: u32,
    pub rescued: u32,
    pub ignored: u32,
}

/// The `PLAY RECAP` of `ansible-playbook` output, per host (summed if several recaps).
pub fn parse_recap(output: &str) -> BTreeMap<String, Recap> {
    let mut recaps: BTreeMap<String, Recap> = BTreeMap::new();
    let mut in_recap = false;
    for line in output.lines() {
        if line.starts_with("PLAY RECAP") {
            in_recap = true;
            continue;
        }
        if !in_recap {
            continue;
        }
        let Some((host, counts)) = line.split_once(" : ") else {
            if line.trim().is_empty() {
                in_recap = false;
            }
            continue;
        };
        let r = recaps.entry(host.trim().to_owned()).or_default();
        for pair in counts.split_whitespace() {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value: u32 = value.parse().unwrap_or(0);
            match key {
                "ok" => r.ok += value,
                "changed" => r.changed += value,
                "unreachable" => r.unreachable += value,
                "failed" => r.failed += value,
                "skipped" => r.skipped += value,
                "rescued" => r.rescued += value,
                "ignored" => r.ignored += value,
                _ => {}
            }
        }
    }
    recaps
}

/// The `PLAY RECAP` section as printed.
pub fn recap_text(output: &str) -> String {
    match output.find("PLAY RECAP") {
        Some(i) => output[i..].trim_end().to_owned(),
        None => String::from("(no play recap)"),
    }
}

/// What one `ansible-playbook` run did.
#[derive(Debug)]
pub struct PlaybookRun {
    pub success: bool,
    pub output: String,
    pub recap: BTreeMap<String, Recap>,
}

/// Runs `ansible-playbook <playbook>` from `ansible/` (its ansible.cfg) against `inventory`,
/// with `-e @file` for each of `var_files`. Ansible's own state goes under `work`.
pub async fn ansible_playbook(
    work: &Path,
    inventory: &Path,
    playbook: &str,
    var_files: &[&Path],
) -> PlaybookRun {
    ansible_playbook_with_args(work, inventory, playbook, var_files, &[]).await
}

/// [`ansible_playbook`] with further arguments (`--limit store`, `--vault-password-file F`).
pub async fn ansible_playbook_with_args(
    work: &Path,
    inventory: &Path,
    playbook: &str,
    var_files: &[&Path],
    args: &[&str],
) -> PlaybookRun {
    let ansible_dir = repo_root().join("ansible");
    let mut cmd = tokio::process::Command::new("ansible-playbook");
    cmd.current_dir(&ansible_dir)
        .arg("-i")
        .arg(inventory)
        .arg(playbook)
        .env("ANSIBLE_CONFIG", ansible_dir.join("ansible.cfg"))
        .env("ANSIBLE_HOME", work.join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", work.join("ansible-tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        .env("ANSIBLE_CALLBACKS_ENABLED", "ansible.posix.profile_tasks")
        .kill_on_drop(true);
    for file in var_files {
        cmd.arg("-e").arg(format!("@{}", file.display()));
    }
    cmd.args(args);
    let output = cmd.output().await.expect("run ansible-playbook");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    PlaybookRun {
        success: output.status.success(),
        recap: parse_recap(&text),
        output: text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn play_recaps_are_parsed_per_host_and_summed() {
        let out = "TASK [x] ***\nok: [a]\n\nPLAY RECAP *****\n\
a.b.c                      : ok=38   changed=2    unreachable=0    failed=0    skipped=19   rescued=0    ignored=0   \n\
rendezvous-01.x : ok=1   changed=0    unreachable=1    failed=1    skipped=0   rescued=1    ignored=2   \n\n\
PLAY RECAP ***\na.b.c : ok=2 changed=1 unreachable=0 failed=0 skipped=0 rescued=0 ignored=0\n";
        let r = parse_recap(out);
        assert_eq!(r.len(), 2);
        assert_eq!(r["a.b.c"].ok, 40);
        assert_eq!(r["a.b.c"].changed, 3);
        assert_eq!(
            r["rendezvous-01.x"],
            Recap {
                ok: 1,
                changed: 0,
                unreachable: 1,
                failed: 1,
                skipped: 0,
                rescued: 1,
                ignored: 2
            }
        );
        assert!(recap_text(out).starts_with("PLAY RECAP"));
    }
}
