//! Opening RocksDB databases the same way everywhere: each capability that persists state
//! (store archive, rendezvous registrations, bans) keeps its own database under the data dir,
//! so one's size limits, compactions and corruption never touch another's.

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

#[derive(Debug, thiserror::Error)]
#[error("cannot open database {path}: {source}; if another roost process uses this data dir, stop it first")]
pub struct OpenError {
    pub path: PathBuf,
    pub source: rocksdb::Error,
}

/// Opens (creating if needed) the database at `path` with the given column families.
/// `tune` adjusts the options of every column family (e.g. a compaction filter).
pub fn open(
    path: &Path,
    column_families: &[&str],
    tune: impl Fn(&str, &mut Options),
) -> Result<DB, OpenError> {
    open_with(path, column_families, |_| {}, tune)
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

#[cfg(test)]
mod tests {
    use super::*;

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
