//! A private PostgreSQL cluster for tests: Debian's server binaries (installed by
//! `scripts/setup --test`), `initdb` into a temp dir and `pg_ctl` on a free loopback port, no
//! system service. fsync and `synchronous_commit` stay on (the defaults) so that what a test
//! sees acknowledged is what a real deployment would keep. Password authentication over TCP
//! (scram-sha-256, as a production server would ask), a database per test, and clean-up on drop
//! (`pg_ctl stop -m immediate`, then the temp dir goes).
//!
//! `initdb` and the server refuse to run as root: as root the cluster is created and run as the
//! unprivileged `postgres` user that Debian's package creates, and the temp dir is given to it.

use std::{
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{bail, Context as _};
use tempfile::TempDir;

/// The superuser the test cluster is created with.
pub const USER: &str = "roost";

/// The newest Debian server install (`/usr/lib/postgresql/<major>/bin`), else `PATH`.
fn bindir() -> anyhow::Result<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    majors.sort();
    if let Some((_, bin)) = majors.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        .context(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql \
             package (`./scripts/setup --test`)",
        )
}

/// (uid, gid) to run the server as: ourselves, or `postgres` when we are root.
/// `dir` is one we just created, so its owner is our effective uid.
fn server_user(dir: &Path) -> anyhow::Result<Option<(u32, u32)>> {
    if std::fs::metadata(dir)?.uid() != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").context("read /etc/passwd")?;
    for line in passwd.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() >= 4 && fields[0] == "postgres" {
            let uid = fields[2].parse().context("uid of postgres")?;
            let gid = fields[3].parse().context("gid of postgres")?;
            return Ok(Some((uid, gid)));
        }
    }
    bail!(
        "running as root and there is no `postgres` user to run the test cluster as (initdb \
         refuses root): install Debian's postgresql package (`./scripts/setup --test`)"
    )
}

/// A running private cluster; stopped and removed on drop.
pub struct PgCluster {
    dir: TempDir,
    bin: PathBuf,
    user: Option<(u32, u32)>,
    password: String,
    pub port: u16,
}

impl PgCluster {
    /// `initdb` + `pg_ctl start` on a free 127.0.0.1 port. Takes a few seconds.
    pub fn start() -> anyhow::Result<PgCluster> {
        let bin = bindir()?;
        let dir = tempfile::Builder::new().prefix("roost-pg-").tempdir()?;
        let user = server_user(dir.path())?;
        let password = format!("test-{:016x}", rand_u64());
        std::fs::write(dir.path().join("pwfile"), format!("{password}\n"))?;
        std::fs::create_dir(dir.path().join("sock"))?;
        if let Some((uid, gid)) = user {
            for p in [
                dir.path().to_path_buf(),
                dir.path().join("pwfile"),
                dir.path().join("sock"),
            ] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .with_context(|| format!("give {} to postgres", p.display()))?;
            }
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            user,
            password,
            port: 0,
        };
        let data = cluster.data_dir();
        let pwfile = cluster.dir.path().join("pwfile");
        let out = cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-E", "UTF8", "--locale=C"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .output()
            .context("run initdb")?;
        check("initdb", &out)?;
        // A free port: bound and released just before the server binds it; if another process
        // takes it in between, the server does not start and we try another one.
        let mut last_error = String::new();
        for _ in 0..5 {
            cluster.port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            match cluster.pg_ctl_start() {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    last_error = format!("{e:#}");
                    if !last_error.contains("already in use") {
                        break;
                    }
                }
            }
        }
        bail!("PostgreSQL did not start: {last_error}")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .env("LC_ALL", "C")
            .env_remove("PGDATA");
        if let Some((uid, gid)) = self.user {
            // std drops supplementary groups when root changes uid.
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on",
            self.port,
            self.dir.path().join("sock").display()
        );
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .context("run pg_ctl start")?;
        if out.status.success() {
            return Ok(());
        }
        bail!(
            "pg_ctl start: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        )
    }

    /// `pg_ctl stop -m fast`: clients lose their connections, the cluster stays on disk.
    pub fn stop(&self) -> anyhow::Result<()> {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-m", "fast", "stop"])
            .output()
            .context("run pg_ctl stop")?;
        check("pg_ctl stop", &out)
    }

    /// Starts a stopped cluster again on the same port.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.pg_ctl_start()
    }

    /// Whether the server answers (`pg_isready`).
    pub fn is_ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A libpq URL for `database`, without the password (give that separately, as a node does).
    pub fn url(&self, database: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database and returns its URL (without the password).
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Runs `sql` with `psql` over TCP with the password, returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .args(["-c", sql])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .context("run psql")?;
        check("psql", &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A file holding the superuser's password, for `store.postgres_password_file` (readable by
    /// the test process; the cluster's own `pwfile` may belong to `postgres`).
    pub fn password_file(&self) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join("node-password");
        if !path.exists() {
            std::fs::write(&path, format!("{}\n", self.password))?;
        }
        Ok(path)
    }

    /// Points a node's store at `database` (created if it does not exist yet): backend,
    /// URL and password file, as an operator would configure it.
    pub fn store_node(
        &self,
        config: &mut roost_node::config::Config,
        database: &str,
    ) -> anyhow::Result<()> {
        let exists = self.psql(
            "postgres",
            &format!("SELECT 1 FROM pg_database WHERE datname = '{database}'"),
        )?;
        if exists.is_empty() {
            self.create_database(database)?;
        }
        config.store.backend = roost_node::store::Backend::Postgres;
        config.store.postgres_url = self.url(database);
        config.store.postgres_password_file = Some(self.password_file()?);
        Ok(())
    }

    /// The server's (postmaster's) process id, while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The temp dir the cluster lives in (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let pid = self.server_pid();
        // Immediate: nothing to keep, and the temp dir goes next.
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // pg_ctl returns once the pid file is gone, a moment before the server has exited.
        if let Some(pid) = pid {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while process_alive(pid) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// Whether `pid` is a live process (a zombie waiting to be reaped counts as gone).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn check(what: &str, out: &Output) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A password per cluster; not a secret worth a CSPRNG (the cluster is private and short-lived).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish()
}

/// The archive engine a test's store nodes run on.
pub struct Engine {
    /// PostgreSQL: the test's private cluster (stopped and removed when the test ends).
    pub cluster: Option<PgCluster>,
}

impl Engine {
    pub fn rocksdb() -> Engine {
        Engine { cluster: None }
    }

    pub fn postgres() -> Engine {
        Engine {
            cluster: Some(PgCluster::start().expect("a private PostgreSQL cluster")),
        }
    }

    /// Puts a store node's archive on this engine (`database`: its PostgreSQL database; nodes
    /// given the same one share it).
    pub fn configure(&self, c: &mut roost_node::Config, database: &str) {
        if let Some(cluster) = &self.cluster {
            cluster
                .store_node(c, database)
                .expect("point the store at PostgreSQL");
        }
    }

    /// The same as command-line flags, for node processes.
    pub fn args(&self, database: &str) -> Vec<String> {
        let mut c = roost_node::Config::default();
        self.configure(&mut c, database);
        match &self.cluster {
            None => Vec::new(),
            Some(_) => vec![
                "--store-backend".into(),
                "postgres".into(),
                "--store-postgres-url".into(),
                c.store.postgres_url.clone(),
                "--store-postgres-password-file".into(),
                c.store
                    .postgres_password_file
                    .expect("a password file")
                    .display()
                    .to_string(),
            ],
        }
    }
}
