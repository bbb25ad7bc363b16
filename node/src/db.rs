//! Opening RocksDB databases the same way everywhere: each capability that persists state
//! (store archive, rendezvous registrations, bans) keeps its own database under the data dir,
//! so one's size limits, compactions and corruption never touch another's. [`Metrics`] exports
//! RocksDB's own view of a database (files, memtables, compactions, write stalls) as gauges
//! under the owning capability's prefix (`roost_store_rocksdb_*`).

use std::path::{Path, PathBuf};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use rocksdb::{ColumnFamilyDescriptor, Options, DB};

#[derive(Debug, thiserror::Error)]
#[error("cannot open database {path}: {source}; if another roost process uses this data dir, stop it first")]
pub struct OpenError {
    pub path: PathBuf,
    pub source: rocksdb::Error,
}

/// Free bytes (for unprivileged users) on the filesystem holding `path`, if it can be read.
/// Databases check it before writing, so RocksDB itself rarely meets a full disk.
pub fn free_bytes(path: &Path) -> Option<u64> {
    rustix::fs::statvfs(path)
        .ok()
        .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
}

/// Memtables of a small database opened with [`open`] (the rendezvous table), all column
/// families together. RocksDB's default is 64 MiB per column family, twice over: a table of a
/// few thousand rows rewritten by every REGISTER would grow its memtables by megabytes an
/// hour, for hours, before the first flush.
pub const SMALL_DB_MEMTABLE_BYTES: usize = 2 << 20;

/// Opens (creating if needed) a small database at `path` with the given column families, its
/// memtables within [`SMALL_DB_MEMTABLE_BYTES`]. `tune` adjusts the options of every column
/// family (e.g. a compaction filter).
pub fn open(
    path: &Path,
    column_families: &[&str],
    tune: impl Fn(&str, &mut Options),
) -> Result<DB, OpenError> {
    open_with(
        path,
        column_families,
        |db| db.set_db_write_buffer_size(SMALL_DB_MEMTABLE_BYTES),
        |name, opts| {
            opts.set_write_buffer_size(SMALL_DB_MEMTABLE_BYTES / 2);
            tune(name, opts);
        },
    )
}

/// [`open`] with database-wide options too (WAL size, background jobs, info log).
pub fn open_with(
    path: &Path,
    column_families: &[&str],
    tune_db: impl FnOnce(&mut Options),
    tune: impl Fn(&str, &mut Options),
) -> Result<DB, OpenError> {
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    tune_db(&mut db_opts);
    let cfs = column_families.iter().map(|name| {
        let mut opts = Options::default();
        tune(name, &mut opts);
        ColumnFamilyDescriptor::new(*name, opts)
    });
    DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|source| OpenError {
        path: path.to_owned(),
        source,
    })
}

/// Opens an existing database read-only, e.g. for an operator command while the node that
/// owns it keeps running (RocksDB's lock is not taken; what the owner wrote so far is seen).
pub fn open_read_only(path: &Path, column_families: &[&str]) -> Result<DB, OpenError> {
    let opts = Options::default();
    DB::open_cf_for_read_only(&opts, path, column_families, false).map_err(|source| OpenError {
        path: path.to_owned(),
        source,
    })
}

/// RocksDB properties exported per column family: (property, metric name, help).
const CF_PROPERTIES: [(&str, &str, &str); 8] = [
    (
        "rocksdb.total-sst-files-size",
        "sst_bytes",
        "Size of all SST files, by column family",
    ),
    (
        "rocksdb.estimate-live-data-size",
        "live_data_bytes",
        "Estimated size of the live data, by column family",
    ),
    (
        "rocksdb.cur-size-all-mem-tables",
        "memtable_bytes",
        "Size of the active and unflushed memtables, by column family",
    ),
    (
        "rocksdb.estimate-num-keys",
        "estimated_keys",
        "Estimated number of keys, by column family",
    ),
    (
        "rocksdb.estimate-pending-compaction-bytes",
        "pending_compaction_bytes",
        "Bytes compaction still has to rewrite to settle the LSM tree, by column family",
    ),
    (
        "rocksdb.num-files-at-level0",
        "level0_files",
        "SST files at level 0 (many slow reads down and stall writes), by column family",
    ),
    (
        "rocksdb.block-cache-usage",
        "block_cache_bytes",
        "Memory held by the block cache a column family uses (the archive's families share one cache: each reports all of it)",
    ),
    (
        "rocksdb.estimate-table-readers-mem",
        "table_readers_bytes",
        "Memory of open SST files' readers outside the block cache, by column family",
    ),
];

/// RocksDB properties exported once per database: (property, metric name, help).
const DB_PROPERTIES: [(&str, &str, &str); 5] = [
    (
        "rocksdb.num-running-compactions",
        "running_compactions",
        "Compactions running now",
    ),
    (
        "rocksdb.num-running-flushes",
        "running_flushes",
        "Memtable flushes running now",
    ),
    (
        "rocksdb.is-write-stopped",
        "write_stopped",
        "1 while RocksDB stops writes (too many level-0 files or pending compaction)",
    ),
    (
        "rocksdb.actual-delayed-write-rate",
        "delayed_write_rate_bytes",
        "Rate writes are slowed to while RocksDB delays them, in bytes/s (0: not delayed)",
    ),
    (
        "rocksdb.background-errors",
        "background_errors",
        "Errors in background flushes and compactions since the database was opened",
    ),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CfLabels {
    pub cf: String,
}

/// Gauges of RocksDB's properties for one database; cheap to clone. The owner registers them
/// under its prefix and calls [`Metrics::observe`] from the thread that owns the database
/// (reading properties takes microseconds, never a disk read).
#[derive(Clone, Debug)]
pub struct Metrics {
    per_cf: Vec<(&'static str, Family<CfLabels, Gauge>)>,
    per_db: Vec<(&'static str, Gauge)>,
}

impl Metrics {
    /// Registers `rocksdb_*` gauges under `registry` (e.g. the `roost_store` sub-registry,
    /// giving `roost_store_rocksdb_sst_bytes{cf=...}`).
    pub fn register(registry: &mut Registry) -> Metrics {
        let registry = registry.sub_registry_with_prefix("rocksdb");
        let per_cf = CF_PROPERTIES
            .iter()
            .map(|(property, name, help)| {
                let family = Family::<CfLabels, Gauge>::default();
                registry.register(*name, *help, family.clone());
                (*property, family)
            })
            .collect();
        let per_db = DB_PROPERTIES
            .iter()
            .map(|(property, name, help)| {
                let gauge = Gauge::default();
                registry.register(*name, *help, gauge.clone());
                (*property, gauge)
            })
            .collect();
        Metrics { per_cf, per_db }
    }

    /// Reads the properties of `db` and its `column_families` into the gauges. A property
    /// RocksDB cannot report keeps its last value.
    pub fn observe(&self, db: &DB, column_families: &[&str]) {
        let as_gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for name in column_families {
            let Some(cf) = db.cf_handle(name) else {
                continue;
            };
            let labels = CfLabels {
                cf: (*name).to_owned(),
            };
            for (property, family) in &self.per_cf {
                if let Ok(Some(value)) = db.property_int_value_cf(cf, *property) {
                    family.get_or_create(&labels).set(as_gauge(value));
                }
            }
        }
        for (property, gauge) in &self.per_db {
            if let Ok(Some(value)) = db.property_int_value(*property) {
                gauge.set(as_gauge(value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_databases_keep_their_memtables_small() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("db"), &["a", "b"], |_, _| {}).unwrap();
        let cf = db.cf_handle("a").unwrap();
        // 16 MiB of rows: with RocksDB's defaults all of it would still be in memtables.
        for i in 0u32..16 * 1024 {
            db.put_cf(cf, i.to_be_bytes(), [7u8; 1024]).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let pending = || {
            db.property_int_value_cf(cf, "rocksdb.mem-table-flush-pending")
                .unwrap()
                .unwrap_or(0)
                + db.property_int_value("rocksdb.num-running-flushes")
                    .unwrap()
                    .unwrap_or(0)
        };
        while pending() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "flushes did not finish"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let memtables = db
            .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables")
            .unwrap()
            .unwrap();
        assert!(
            memtables <= SMALL_DB_MEMTABLE_BYTES as u64,
            "{memtables} bytes of memtables"
        );
    }

    #[test]
    fn exports_rocksdb_properties_per_column_family_and_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = open(&dir.path().join("db"), &["a", "b"], |_, _| {}).unwrap();
        let cf = db.cf_handle("a").unwrap();
        for i in 0u32..1000 {
            db.put_cf(cf, i.to_be_bytes(), [7u8; 100]).unwrap();
        }
        let mut registry = Registry::default();
        let metrics = Metrics::register(registry.sub_registry_with_prefix("roost_test"));
        metrics.observe(&db, &["a", "b", "missing"]);
        let text = crate::metrics::render(&registry);
        let value = |sample: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{sample} not in:\n{text}"))
        };
        // 1000 keys of ~100 bytes sit in the memtable of `a`; `b` is empty.
        assert!(value("roost_test_rocksdb_memtable_bytes{cf=\"a\"}") > 100_000.0);
        assert!(value("roost_test_rocksdb_estimated_keys{cf=\"a\"}") >= 900.0);
        assert_eq!(value("roost_test_rocksdb_estimated_keys{cf=\"b\"}"), 0.0);
        assert_eq!(value("roost_test_rocksdb_write_stopped"), 0.0);
        assert_eq!(value("roost_test_rocksdb_background_errors"), 0.0);
        assert!(!text.contains("cf=\"missing\""));

        // After a flush the data is in an SST file.
        db.flush_cf(cf).unwrap();
        metrics.observe(&db, &["a", "b"]);
        let text = crate::metrics::render(&registry);
        let sst: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("roost_test_rocksdb_sst_bytes{cf=\"a\"}")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap();
        assert!(sst > 1000.0, "{text}");
    }

    #[test]
    fn opens_creates_and_reopens_with_column_families() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let db = open(&path, &["a", "b"], |_, _| {}).unwrap();
            let cf = db.cf_handle("b").unwrap();
            db.put_cf(cf, b"k", b"v").unwrap();
        }
        let db = open(&path, &["a", "b"], |_, _| {}).unwrap();
        let cf = db.cf_handle("b").unwrap();
        assert_eq!(db.get_cf(cf, b"k").unwrap().as_deref(), Some(&b"v"[..]));
        // A second open of the same directory fails with a clear error (RocksDB's lock).
        let err = open(&path, &["a", "b"], |_, _| {}).unwrap_err();
        assert!(err.to_string().contains("another roost process"));
    }
}
