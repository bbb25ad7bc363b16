//! Registrations on disk: the rendezvous server's own RocksDB under `<data_dir>/rendezvous`.
//!
//! - column family `registrations`: key = sequence number (8 bytes big-endian), value = one
//!   [`Stored`] registration;
//! - column family `meta`: `next_seq`, written in the same batch as every registration, so
//!   sequence numbers (and the cookies built on them) never go back after a restart.
//!
//! Writes go through the WAL without an fsync each: a registration is soft state that its
//! owner refreshes, and a crash of the process (not of the machine) loses nothing.

use std::{path::Path, sync::Arc, time::Instant};

use libp2p::PeerId;
use prost::Message as _;
use rocksdb::{IteratorMode, WriteBatch, DB};

use super::{record::Flavour, table::Entry};

const CF_REGISTRATIONS: &str = "registrations";
const CF_META: &str = "meta";
const NEXT_SEQ: &[u8] = b"next_seq";

/// The database directory under the data dir.
pub const DIR: &str = "rendezvous";

/// One registration as stored.
#[derive(Clone, PartialEq, prost::Message)]
struct Stored {
    #[prost(string, tag = "1")]
    namespace: String,
    #[prost(bytes = "vec", tag = "2")]
    peer: Vec<u8>,
    #[prost(uint32, tag = "3")]
    flavour: u32,
    #[prost(bytes = "vec", tag = "4")]
    record: Vec<u8>,
    #[prost(uint64, tag = "5")]
    ttl: u64,
    #[prost(uint64, tag = "6")]
    expires_at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Open(#[from] crate::db::OpenError),
    #[error("cannot read the rendezvous database: {0}; if it is damaged, stop the node and delete <data_dir>/rendezvous (clients re-register within their refresh interval)")]
    Read(#[source] rocksdb::Error),
    #[error("cannot clean the rendezvous database: {0}")]
    Write(#[source] rocksdb::Error),
}

/// What loading found.
#[derive(Debug)]
pub struct Loaded {
    /// Live registrations, in sequence order.
    pub entries: Vec<Entry>,
    pub next_seq: u64,
    /// Registrations that had expired while the node was down (deleted on load).
    pub expired: usize,
    /// Entries that could not be read (deleted on load).
    pub unreadable: usize,
    pub took: std::time::Duration,
}

pub struct Store {
    db: DB,
}

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

impl Store {
    /// Opens (creating if needed) the database at `path` and loads every registration still
    /// live at `now_ms`; expired and unreadable ones are deleted.
    pub fn open(path: &Path, now_ms: u64) -> Result<(Store, Loaded), Error> {
        let started = Instant::now();
        let db = crate::db::open(path, &[CF_REGISTRATIONS, CF_META], |_, _| {})?;
        let store = Store { db };
        let next_seq = store
            .db
            .get_cf(store.cf(CF_META), NEXT_SEQ)
            .map_err(Error::Read)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(1);
        let mut entries = Vec::new();
        let mut stale = WriteBatch::default();
        let (mut expired, mut unreadable) = (0, 0);
        let mut max_seq = 0;
        let mut namespaces: std::collections::HashMap<String, Arc<str>> = Default::default();
        for item in store
            .db
            .iterator_cf(store.cf(CF_REGISTRATIONS), IteratorMode::Start)
        {
            let (k, v) = item.map_err(Error::Read)?;
            let Some(seq) = <[u8; 8]>::try_from(&k[..]).ok().map(u64::from_be_bytes) else {
                unreadable += 1;
                stale.delete_cf(store.cf(CF_REGISTRATIONS), &k);
                continue;
            };
            max_seq = max_seq.max(seq);
            let Some(entry) = decode(seq, &v, &mut namespaces) else {
                unreadable += 1;
                stale.delete_cf(store.cf(CF_REGISTRATIONS), &k);
                continue;
            };
            if entry.expires_at_ms <= now_ms {
                expired += 1;
                stale.delete_cf(store.cf(CF_REGISTRATIONS), &k);
                continue;
            }
            entries.push(entry);
        }
        if !stale.is_empty() {
            store.db.write(stale).map_err(Error::Write)?;
        }
        Ok((
            Store { db: store.db },
            Loaded {
                entries,
                next_seq: next_seq.max(max_seq + 1),
                expired,
                unreadable,
                took: started.elapsed(),
            },
        ))
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Both families are created by `open`; a missing one means the DB handle is not ours.
        self.db
            .cf_handle(name)
            .expect("column families are created when the store opens")
    }

    /// Stores `entry` (removing the registration it replaces) and the next sequence number,
    /// in one atomic batch.
    pub fn put(
        &self,
        entry: &Entry,
        replaced: Option<u64>,
        next_seq: u64,
    ) -> Result<(), rocksdb::Error> {
        let regs = self.cf(CF_REGISTRATIONS);
        let mut batch = WriteBatch::default();
        if let Some(old) = replaced {
            batch.delete_cf(regs, key(old));
        }
        batch.put_cf(regs, key(entry.seq), encode(entry));
        batch.put_cf(self.cf(CF_META), NEXT_SEQ, next_seq.to_be_bytes());
        self.db.write(batch)
    }

    /// Deletes registrations by sequence number, in one batch.
    pub fn delete(&self, seqs: impl IntoIterator<Item = u64>) -> Result<(), rocksdb::Error> {
        let regs = self.cf(CF_REGISTRATIONS);
        let mut batch = WriteBatch::default();
        for seq in seqs {
            batch.delete_cf(regs, key(seq));
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.db.write(batch)
    }
}

fn encode(entry: &Entry) -> Vec<u8> {
    Stored {
        namespace: entry.namespace.to_string(),
        peer: entry.peer.to_bytes(),
        flavour: entry.flavour as u32,
        record: entry.record.to_vec(),
        ttl: entry.ttl,
        expires_at_ms: entry.expires_at_ms,
    }
    .encode_to_vec()
}

fn decode(
    seq: u64,
    bytes: &[u8],
    namespaces: &mut std::collections::HashMap<String, Arc<str>>,
) -> Option<Entry> {
    let s = Stored::decode(bytes).ok()?;
    let peer = PeerId::from_bytes(&s.peer).ok()?;
    let flavour = Flavour::from_u8(u8::try_from(s.flavour).ok()?)?;
    let namespace = namespaces
        .entry(s.namespace)
        .or_insert_with_key(|k| Arc::from(k.as_str()))
        .clone();
    Some(Entry {
        seq,
        namespace,
        peer,
        flavour,
        record: s.record.into_boxed_slice(),
        ttl: s.ttl,
        expires_at_ms: s.expires_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, ns: &str, expires_at_ms: u64) -> Entry {
        Entry {
            seq,
            namespace: Arc::from(ns),
            peer: PeerId::random(),
            flavour: Flavour::Legacy,
            record: vec![9; 40].into_boxed_slice(),
            ttl: 60,
            expires_at_ms,
        }
    }

    #[test]
    fn registrations_survive_reopen_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DIR);
        let (live, replaced_by) = (entry(1, "a", 5_000), entry(3, "a", 9_000));
        let gone = entry(2, "b", 1_000);
        {
            let (store, loaded) = Store::open(&path, 0).unwrap();
            assert!(loaded.entries.is_empty());
            assert_eq!(loaded.next_seq, 1);
            store.put(&live, None, 2).unwrap();
            store.put(&gone, None, 3).unwrap();
            store.put(&replaced_by, Some(1), 4).unwrap();
        }
        let (store, loaded) = Store::open(&path, 2_000).unwrap();
        assert_eq!(loaded.entries, vec![replaced_by.clone()]);
        assert_eq!(loaded.expired, 1);
        assert_eq!(loaded.next_seq, 4);
        store.delete([3]).unwrap();
        drop(store);
        let (_store, loaded) = Store::open(&path, 2_000).unwrap();
        assert!(loaded.entries.is_empty());
        assert_eq!(
            loaded.expired, 0,
            "the expired entry was deleted on the first load"
        );
        assert_eq!(loaded.next_seq, 4, "sequence numbers never go back");
    }
}
