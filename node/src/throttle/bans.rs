//! Bans: peers and IPs refused for a while after they kept exceeding quotas or sending
//! invalid messages, or because an operator said so (`roost ban add`).
//!
//! An automatic ban lasts `throttle.ban_duration`, doubled for each earlier ban of the same
//! offender still remembered (`throttle.ban_memory`), up to `throttle.ban_max_duration`.
//! The table lives in memory (checked on every new connection) and is persisted in its own
//! RocksDB (`<data_dir>/bans`) by a writer task, so bans survive restarts; expired records
//! are kept for `ban_memory` to remember repeat offenders, then deleted.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    path::Path,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::task::AtomicWaker;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::{limiter::IpKey, BanReason, Offender};

/// Capacity of the channel to the ban writer. Bans are rare (one per abusive peer); a full
/// channel means the disk stalls: the change still applies in memory, is counted in
/// `roost_throttle_ban_writes_dropped_total`, and is lost only if the node restarts first.
pub const WRITE_CAPACITY: usize = 1024;
/// The column family of ban records.
const CF: &str = "bans";
/// Memtable size of the ban database (bytes): thousands of records.
const BAN_WRITE_BUFFER: usize = 1 << 20;
/// Ban changes are written only while the data dir's disk has this much free space.
/// Debian's RocksDB keeps its assertions, and a failed write to the log aborts the process;
/// on a (nearly) full disk the changes stay in memory instead (counted as dropped).
const MIN_FREE_BYTES: u64 = 16 << 20;

/// Milliseconds since the Unix epoch (bans persist across restarts, so wall-clock time).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One offender's ban (active while `until_ms` is in the future, remembered after).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    /// The peer id, or the IP (`/64` for IPv6).
    pub target: String,
    /// `peer` or `ip`.
    pub kind: String,
    pub since_ms: u64,
    pub until_ms: u64,
    /// How many times this offender has been banned (this ban included).
    pub count: u32,
    /// `quota`, `invalid`, `score` or `manual`.
    pub reason: String,
}

impl BanRecord {
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.until_ms > now_ms
    }
}

/// A target as operators write it: a peer id, an IPv4 address, or an IPv6 address (its /64
/// is banned; `2001:db8::/64` is accepted too).
impl FromStr for Offender {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let ip_text = s.strip_suffix("/64").unwrap_or(s);
        if let Ok(ip) = ip_text.parse::<IpAddr>() {
            return Ok(Offender::Ip(ip.into()));
        }
        PeerId::from_str(s).map(Offender::Peer).map_err(|_| {
            format!("`{s}` is neither a peer id (16Uiu2…, 12D3Koo…) nor an IP address")
        })
    }
}

/// A change for the ban writer.
#[derive(Debug)]
pub enum Write {
    Put(Offender, BanRecord),
    Delete(Offender),
}

/// Why a batch of ban changes was not written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("only {free} bytes free on the data dir's disk; ban changes are kept in memory until space is freed")]
    DiskFull { free: u64 },
    #[error("cannot write the ban database: {0}")]
    Write(rocksdb::Error),
}

/// Why the ban database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BanDbError {
    #[error(transparent)]
    Open(#[from] crate::db::OpenError),
    #[error("cannot read the ban database: {0}; move <data_dir>/bans aside to start with no bans")]
    Read(rocksdb::Error),
    #[error("the ban database thread failed: {0}")]
    Thread(String),
}

fn key_bytes(who: &Offender) -> Vec<u8> {
    match who {
        Offender::Peer(p) => {
            let mut k = vec![b'p'];
            k.extend_from_slice(&p.to_bytes());
            k
        }
        Offender::Ip(IpKey::V4(v4)) => {
            let mut k = vec![b'4'];
            k.extend_from_slice(&v4.to_be_bytes());
            k
        }
        Offender::Ip(IpKey::V6(v6)) => {
            let mut k = vec![b'6'];
            k.extend_from_slice(&v6.to_be_bytes());
            k
        }
    }
}

fn key_from_bytes(key: &[u8]) -> Option<Offender> {
    let (tag, rest) = key.split_first()?;
    match tag {
        b'p' => PeerId::from_bytes(rest).ok().map(Offender::Peer),
        b'4' => Some(Offender::Ip(IpKey::V4(u32::from_be_bytes(
            rest.try_into().ok()?,
        )))),
        b'6' => Some(Offender::Ip(IpKey::V6(u64::from_be_bytes(
            rest.try_into().ok()?,
        )))),
        _ => None,
    }
}

/// The ban database: its own RocksDB under the data dir.
pub struct BanDb {
    db: rocksdb::DB,
    dir: std::path::PathBuf,
}

impl BanDb {
    /// Opens (creating) `<data_dir>/bans`. Blocking: call it off the async runtime.
    pub fn open(data_dir: &Path) -> Result<BanDb, BanDbError> {
        // A tiny table: a small memtable, so its write-ahead log preallocates ~1 MiB rather
        // than the default ~70 MiB on the data dir's disk.
        let dir = data_dir.join("bans");
        let db = crate::db::open_with(
            &dir,
            &[CF],
            |db_opts| {
                db_opts.set_write_buffer_size(BAN_WRITE_BUFFER);
                db_opts.set_log_level(rocksdb::LogLevel::Warn);
                db_opts.set_keep_log_file_num(2);
            },
            |_, opts| opts.set_write_buffer_size(BAN_WRITE_BUFFER),
        )?;
        Ok(BanDb { db, dir })
    }

    /// Free bytes on the database's disk (for unprivileged users), if it can be read.
    pub fn free_bytes(&self) -> Option<u64> {
        crate::db::free_bytes(&self.dir)
    }

    /// Every stored record; undecodable ones are skipped with a warning.
    pub fn load(&self) -> Result<Vec<(Offender, BanRecord)>, BanDbError> {
        let Some(cf) = self.db.cf_handle(CF) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (key, value) = item.map_err(BanDbError::Read)?;
            match (
                key_from_bytes(&key),
                serde_json::from_slice::<BanRecord>(&value),
            ) {
                (Some(who), Ok(record)) => out.push((who, record)),
                _ => tracing::warn!(key = %hex::encode(&key), "skipping an unreadable ban record"),
            }
        }
        Ok(out)
    }

    /// Applies a batch of changes in one synced write. Refuses (without touching RocksDB) when
    /// the disk has less than [`MIN_FREE_BYTES`] free.
    pub fn apply(&self, writes: &[Write]) -> Result<(), ApplyError> {
        if let Some(free) = self.free_bytes().filter(|f| *f < MIN_FREE_BYTES) {
            return Err(ApplyError::DiskFull { free });
        }
        let Some(cf) = self.db.cf_handle(CF) else {
            return Ok(());
        };
        let mut batch = rocksdb::WriteBatch::default();
        for write in writes {
            match write {
                Write::Put(who, record) => {
                    let value = serde_json::to_vec(record).unwrap_or_default();
                    batch.put_cf(cf, key_bytes(who), value);
                }
                Write::Delete(who) => batch.delete_cf(cf, key_bytes(who)),
            }
        }
        // Synced: bans are rare and should survive a power cut.
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts).map_err(ApplyError::Write)
    }
}

/// The ban policy knobs, from `[throttle]`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub base: Duration,
    pub max: Duration,
    pub memory: Duration,
}

/// The ban table shared by the throttle, its behaviour (which closes banned connections) and
/// the admin endpoints.
pub struct Bans {
    policy: Policy,
    records: RwLock<HashMap<Offender, BanRecord>>,
    /// Bumped on every new ban; the behaviour compares it to close banned connections.
    generation: AtomicU64,
    waker: AtomicWaker,
    writes: Option<mpsc::Sender<Write>>,
    metrics: super::Metrics,
}

impl fmt::Debug for Bans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bans").finish_non_exhaustive()
    }
}

impl Bans {
    /// A ban table starting from `loaded` records, persisting through `writes` if given.
    pub fn new(
        policy: Policy,
        loaded: Vec<(Offender, BanRecord)>,
        writes: Option<mpsc::Sender<Write>>,
        metrics: super::Metrics,
    ) -> Bans {
        let bans = Bans {
            policy,
            records: RwLock::new(loaded.into_iter().collect()),
            generation: AtomicU64::new(0),
            waker: AtomicWaker::new(),
            writes,
            metrics,
        };
        bans.update_gauges(now_ms());
        bans
    }

    fn persist(&self, write: Write) {
        if let Some(tx) = &self.writes {
            if tx.try_send(write).is_err() {
                self.metrics.ban_writes_dropped.inc();
                tracing::warn!(
                    "ban database writer is saturated; the ban applies but is not persisted"
                );
            }
        }
    }

    /// Whether `who` is banned now.
    pub fn is_banned(&self, who: &Offender) -> bool {
        let now = now_ms();
        self.records
            .read()
            .map(|r| r.get(who).is_some_and(|b| b.is_active(now)))
            .unwrap_or(false)
    }

    /// Bans `who`. `duration: None` = the escalating automatic duration. Returns the record.
    pub fn ban(&self, who: Offender, reason: BanReason, duration: Option<Duration>) -> BanRecord {
        let now = now_ms();
        let memory_ms = self.policy.memory.as_millis() as u64;
        let record = {
            let mut records = match self.records.write() {
                Ok(r) => r,
                Err(poisoned) => poisoned.into_inner(),
            };
            let earlier = records
                .get(&who)
                .filter(|r| r.until_ms.saturating_add(memory_ms) > now)
                .map(|r| r.count)
                .unwrap_or(0);
            let duration = duration.unwrap_or_else(|| {
                let factor = 2u32.saturating_pow(earlier.min(30));
                self.policy.base.saturating_mul(factor).min(self.policy.max)
            });
            let record = BanRecord {
                target: who.to_string(),
                kind: who.kind().to_owned(),
                since_ms: now,
                until_ms: now.saturating_add(duration.as_millis() as u64),
                count: earlier + 1,
                reason: reason.label().to_owned(),
            };
            records.insert(who, record.clone());
            record
        };
        self.metrics
            .bans
            .get_or_create(&super::metrics::BanLabels {
                kind: who.kind(),
                reason: reason.label(),
            })
            .inc();
        tracing::info!(target = %who, kind = who.kind(), reason = reason.label(), until_ms = record.until_ms, count = record.count, "banned");
        self.persist(Write::Put(who, record.clone()));
        self.update_gauges(now);
        self.generation.fetch_add(1, Ordering::Release);
        self.waker.wake();
        record
    }

    /// Lifts a ban and forgets the offender's history. Returns whether there was one.
    pub fn unban(&self, who: &Offender) -> bool {
        let removed = match self.records.write() {
            Ok(mut r) => r.remove(who).is_some(),
            Err(poisoned) => poisoned.into_inner().remove(who).is_some(),
        };
        if removed {
            tracing::info!(target = %who, "ban lifted");
            self.persist(Write::Delete(*who));
            self.update_gauges(now_ms());
        }
        removed
    }

    /// The bans in force, soonest to expire first.
    pub fn active(&self) -> Vec<BanRecord> {
        let now = now_ms();
        let mut list: Vec<BanRecord> = self
            .records
            .read()
            .map(|r| r.values().filter(|b| b.is_active(now)).cloned().collect())
            .unwrap_or_default();
        list.sort_by_key(|b| b.until_ms);
        list
    }

    /// Deletes records whose ban ended longer than `ban_memory` ago, and refreshes gauges.
    pub fn sweep(&self) {
        let now = now_ms();
        let memory_ms = self.policy.memory.as_millis() as u64;
        let mut forgotten = Vec::new();
        if let Ok(mut records) = self.records.write() {
            records.retain(|who, b| {
                let keep = b.until_ms.saturating_add(memory_ms) > now;
                if !keep {
                    forgotten.push(*who);
                }
                keep
            });
        }
        for who in forgotten {
            self.persist(Write::Delete(who));
        }
        self.update_gauges(now);
    }

    fn update_gauges(&self, now: u64) {
        let (mut peers, mut ips) = (0i64, 0i64);
        if let Ok(records) = self.records.read() {
            for b in records.values().filter(|b| b.is_active(now)) {
                if b.kind == "ip" {
                    ips += 1;
                } else {
                    peers += 1;
                }
            }
        }
        for (kind, n) in [("peer", peers), ("ip", ips)] {
            self.metrics
                .bans_active
                .get_or_create(&super::metrics::BanKindLabels { kind })
                .set(n);
        }
    }

    /// Bans in force now.
    pub fn active_count(&self) -> usize {
        let now = now_ms();
        self.records
            .read()
            .map(|r| r.values().filter(|b| b.is_active(now)).count())
            .unwrap_or(0)
    }

    /// The ban generation (bumped on every new ban), registering `waker` to be woken on the
    /// next one.
    pub fn generation(&self, waker: &std::task::Waker) -> u64 {
        self.waker.register(waker);
        self.generation.load(Ordering::Acquire)
    }
}

/// Writes ban changes to the database off the async runtime, in batches, until shutdown;
/// then drains what is queued.
pub async fn run_writer(
    db: Arc<BanDb>,
    mut rx: mpsc::Receiver<Write>,
    mut shutdown: watch::Receiver<bool>,
    metrics: super::Metrics,
) {
    loop {
        let first = tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
                continue;
            }
            write = rx.recv() => match write {
                Some(w) => w,
                None => break,
            },
        };
        let mut batch = vec![first];
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
        }
        write_batch(&db, batch, &metrics).await;
    }
    rx.close();
    let mut rest = Vec::new();
    while let Ok(w) = rx.try_recv() {
        rest.push(w);
    }
    if !rest.is_empty() {
        write_batch(&db, rest, &metrics).await;
    }
}

async fn write_batch(db: &Arc<BanDb>, batch: Vec<Write>, metrics: &super::Metrics) {
    let db = db.clone();
    let n = batch.len();
    match tokio::task::spawn_blocking(move || db.apply(&batch)).await {
        Ok(Ok(())) => tracing::debug!(changes = n, "ban changes persisted"),
        Ok(Err(e)) => {
            metrics.ban_writes_dropped.inc_by(n as u64);
            tracing::error!(error = %e, changes = n, "cannot persist ban changes; they apply in memory until restart");
        }
        Err(e) => tracing::error!(error = %e, "ban writer thread failed"),
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    fn policy() -> Policy {
        Policy {
            base: Duration::from_secs(600),
            max: Duration::from_secs(3600),
            memory: Duration::from_secs(86_400),
        }
    }

    fn bans() -> Bans {
        Bans::new(
            policy(),
            Vec::new(),
            None,
            super::super::Metrics::register(&mut Registry::default()),
        )
    }

    #[test]
    fn targets_parse_as_peers_or_ips() {
        let peer = PeerId::random();
        assert_eq!(
            peer.to_string().parse::<Offender>().unwrap(),
            Offender::Peer(peer)
        );
        assert_eq!(
            "192.0.2.7".parse::<Offender>().unwrap(),
            Offender::Ip(IpKey::from("192.0.2.7".parse::<IpAddr>().unwrap()))
        );
        let v6 = "2001:db8::/64".parse::<Offender>().unwrap();
        assert_eq!(v6, "2001:db8::1234".parse::<Offender>().unwrap());
        assert_eq!(v6.to_string(), "2001:db8::/64");
        assert!("nonsense"
            .parse::<Offender>()
            .unwrap_err()
            .contains("neither"));
    }

    #[test]
    fn repeat_offenders_get_longer_bans_up_to_the_cap() {
        let b = bans();
        let who = Offender::Peer(PeerId::random());
        let lengths: Vec<u64> = (0..5)
            .map(|_| {
                let r = b.ban(who, BanReason::Quota, None);
                (r.until_ms - r.since_ms) / 1000
            })
            .collect();
        assert_eq!(lengths, vec![600, 1200, 2400, 3600, 3600]);
        assert!(b.is_banned(&who));
        assert_eq!(b.active().len(), 1);
        assert!(b.unban(&who));
        assert!(!b.is_banned(&who));
        // Lifting a ban forgets the history.
        let r = b.ban(who, BanReason::Quota, None);
        assert_eq!(r.count, 1);
    }

    #[test]
    fn expired_bans_stop_applying_and_are_forgotten_after_the_memory() {
        let b = Bans::new(
            Policy {
                memory: Duration::ZERO,
                ..policy()
            },
            Vec::new(),
            None,
            super::super::Metrics::register(&mut Registry::default()),
        );
        let who = Offender::Ip(IpKey::V4(7));
        b.ban(who, BanReason::Manual, Some(Duration::ZERO));
        assert!(!b.is_banned(&who));
        assert!(b.active().is_empty());
        b.sweep();
        assert!(b.records.read().unwrap().is_empty());
    }

    #[test]
    fn records_round_trip_through_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let peer = Offender::Peer(PeerId::random());
        let ip4 = Offender::Ip(IpKey::V4(0x0a00_0001));
        let ip6 = "2001:db8::1".parse::<Offender>().unwrap();
        let record = |who: &Offender| BanRecord {
            target: who.to_string(),
            kind: who.kind().into(),
            since_ms: 1,
            until_ms: 2,
            count: 3,
            reason: "quota".into(),
        };
        {
            let db = BanDb::open(dir.path()).unwrap();
            db.apply(&[
                Write::Put(peer, record(&peer)),
                Write::Put(ip4, record(&ip4)),
                Write::Put(ip6, record(&ip6)),
                Write::Delete(ip4),
            ])
            .unwrap();
        }
        let db = BanDb::open(dir.path()).unwrap();
        let mut loaded = db.load().unwrap();
        loaded.sort_by_key(|(who, _)| *who);
        let mut expected = vec![(peer, record(&peer)), (ip6, record(&ip6))];
        expected.sort_by_key(|(who, _)| *who);
        assert_eq!(loaded, expected);
    }
}
