//! The archive: a RocksDB database under `<data_dir>/store` (layouts in [`super::keys`]).
//!
//! [`Archive`] is shared by the store's threads and only reads; [`Writer`] is owned by the
//! writer thread and is the only code that writes: message batches (group commit) and
//! retention cuts. A retention cut moves the *cutoff*: every message before it is gone. The
//! `messages` family drops them with one range delete (whole files go with
//! `delete_file_in_range`); the index families keep stale entries until compaction, where a
//! compaction filter drops them, and readers skip them meanwhile. No row-by-row deletes.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Instant,
};

use rocksdb::{
    compaction_filter::{CompactionFilter, Decision},
    compaction_filter_factory::{CompactionFilterContext, CompactionFilterFactory},
    BlockBasedOptions, Cache, DBRawIterator, ReadOptions, WriteBatch, WriteOptions, DB,
};

use super::{
    keys::{self, Position, BUCKET_NANOS},
    rpc::{Filter, LookupScope, Query, MAX_RESPONSE_BYTES},
    RejectReason, StoreError,
};
use crate::{message::MessageHash, units::ByteSize};

/// Most `messages` entries one page of a pubsub-topic-only query looks at.
const SCAN_BUDGET: usize = 50_000;

/// Default of [`Tuning::memory_budget`] (and `store.memory_budget`).
pub const DEFAULT_MEMORY_BUDGET: ByteSize = ByteSize::mib(128);

/// Smallest memory budget: below it memtables flush too often to keep up with ingest.
pub const MIN_MEMORY_BUDGET: ByteSize = ByteSize::mib(16);

/// How the database is tuned. RocksDB's memory stays within `memory_budget`: a quarter for
/// memtables (all column families together), the rest for one LRU block cache that also holds
/// the index and filter blocks of the SST files (which RocksDB otherwise keeps outside any
/// limit, growing with the archive). The size limit further scales write buffers so a small
/// `size:` policy is not dwarfed by memtables and write-ahead logs.
#[derive(Debug, Clone)]
pub struct Tuning {
    pub size_limit: Option<ByteSize>,
    pub memory_budget: ByteSize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            size_limit: None,
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }
}

impl Tuning {
    /// (block cache bytes, memtable bytes of all column families together).
    pub fn split(&self) -> (usize, usize) {
        let budget = self.memory_budget.0.max(MIN_MEMORY_BUDGET.0);
        let memtables = budget / 4;
        ((budget - memtables) as usize, memtables as usize)
    }
}

/// The read side of the archive, shared by every store thread.
pub struct Archive {
    db: DB,
    path: PathBuf,
    /// Everything before this position is deleted (or about to be, in the index families).
    cutoff: Arc<RwLock<Position>>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive").field("path", &self.path).finish()
    }
}

/// Positions found by a scan, with their `messages` record when it came along.
type Found = Vec<(Position, Option<Vec<u8>>)>;

/// One entry of a page: its position and, when asked for, its `messages` record.
#[derive(Debug, Clone, PartialEq)]
pub struct PageEntry {
    pub position: Position,
    pub record: Option<Vec<u8>>,
}

/// A page of results in ascending order, with the cursor when more remain.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Page {
    pub entries: Vec<PageEntry>,
    pub cursor: Option<MessageHash>,
}

/// Why a query could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "cursor not found: pagination_cursor {0} is not a message in this archive (unknown, or deleted by retention)"
    )]
    InvalidCursor(MessageHash),
    #[error("archive read failed: {0}")]
    Read(String),
}

/// Drops index entries before the cutoff during compaction.
struct CutoffFilterFactory {
    cutoff: Arc<RwLock<Position>>,
    hashes: bool,
}

struct CutoffFilter {
    cutoff: Position,
    hashes: bool,
}

impl CompactionFilter for CutoffFilter {
    fn filter(&mut self, _level: u32, key: &[u8], value: &[u8]) -> Decision {
        let position = if self.hashes {
            match (<[u8; 32]>::try_from(key), keys::decode_ts(value)) {
                (Ok(hash), Some(ts)) => Some(Position { ts, hash }),
                _ => None,
            }
        } else {
            Position::from_key_suffix(key)
        };
        match position {
            Some(p) if p < self.cutoff => Decision::Remove,
            _ => Decision::Keep,
        }
    }

    fn name(&self) -> &std::ffi::CStr {
        c"roost-store-cutoff"
    }
}

impl CompactionFilterFactory for CutoffFilterFactory {
    type Filter = CutoffFilter;

    fn create(&mut self, _context: CompactionFilterContext) -> CutoffFilter {
        // One snapshot per compaction: the cutoff only moves forward, so an older one is safe.
        let cutoff = self.cutoff.read().map(|c| *c).unwrap_or(Position::MIN);
        CutoffFilter {
            cutoff,
            hashes: self.hashes,
        }
    }

    fn name(&self) -> &std::ffi::CStr {
        c"roost-store-cutoff-factory"
    }
}

/// Whether a stored record (pubsub topic + WakuMessage bytes) lies in a hash lookup's
/// topic scope. A record that does not decode is out of scope (and never served).
fn record_in_scope(record: &[u8], scope: &LookupScope) -> bool {
    let Some((pubsub_topic, message)) = keys::decode_record(record) else {
        return false;
    };
    crate::message::WakuMessage::decode(message)
        .is_ok_and(|m| scope.admits_topics(pubsub_topic, &m.content_topic))
}

fn db_error(e: rocksdb::Error) -> String {
    e.into_string()
}

impl Archive {
    /// Opens (creating if needed) the archive at `path`.
    pub fn open(path: &Path, tuning: &Tuning) -> Result<Archive, StoreError> {
        let cutoff = Arc::new(RwLock::new(Position::MIN));
        let (cache_bytes, memtable_bytes) = tuning.split();
        let cache = Cache::new_lru_cache(cache_bytes)
            .map_err(|e| StoreError::Open(format!("cannot create block cache: {e}")))?;
        let limit = tuning.size_limit.map(|s| s.0);
        // One memtable of `messages` may take half the memtable budget (two of them fill it
        // while one flushes); the index families a quarter of that. Smaller with a small
        // size limit.
        let write_buffer = limit
            .map(|l| (l / 16).clamp(1 << 20, 32 << 20))
            .unwrap_or(32 << 20)
            .min((memtable_bytes / 2) as u64)
            .max(1 << 20) as usize;
        let max_wal = limit
            .map(|l| (l / 8).clamp(2 << 20, 64 << 20))
            .unwrap_or(64 << 20);
        let filter_cutoff = cutoff.clone();
        let db = crate::db::open_with(
            path,
            &keys::COLUMN_FAMILIES,
            |db| {
                db.set_max_background_jobs(2);
                db.set_max_total_wal_size(max_wal);
                db.set_bytes_per_sync(1 << 20);
                db.set_keep_log_file_num(2);
                db.set_max_log_file_size(1 << 20);
                db.set_log_level(rocksdb::LogLevel::Warn);
                db.set_max_manifest_file_size(4 << 20);
                // All memtables together: past this RocksDB flushes the largest one.
                db.set_db_write_buffer_size(memtable_bytes);
            },
            |name, opts| {
                let mut table = BlockBasedOptions::default();
                table.set_block_cache(&cache);
                // Index and filter blocks count against the cache instead of living outside
                // it for as long as their file; level 0's stay pinned (read on every lookup).
                table.set_cache_index_and_filter_blocks(true);
                table.set_pin_l0_filter_and_index_blocks_in_cache(true);
                match name {
                    keys::CF_MESSAGES => {
                        opts.set_write_buffer_size(write_buffer);
                        opts.set_target_file_size_base((write_buffer as u64).max(4 << 20));
                    }
                    keys::CF_HASHES => {
                        // Most lookups at ingest are misses (new messages): a bloom filter
                        // answers them without reading a block.
                        table.set_bloom_filter(10.0, false);
                        opts.set_write_buffer_size(write_buffer / 4);
                        opts.set_compaction_filter_factory(CutoffFilterFactory {
                            cutoff: filter_cutoff.clone(),
                            hashes: true,
                        });
                    }
                    keys::CF_TOPICS => {
                        opts.set_write_buffer_size(write_buffer / 4);
                        opts.set_compaction_filter_factory(CutoffFilterFactory {
                            cutoff: filter_cutoff.clone(),
                            hashes: false,
                        });
                    }
                    keys::CF_FINGERPRINTS => {
                        opts.set_merge_operator_associative("roost-xor", xor_merge);
                        opts.set_write_buffer_size(write_buffer / 8);
                    }
                    // Small bookkeeping families: RocksDB's 64 MiB default would be most of
                    // the budget.
                    _ => opts.set_write_buffer_size(write_buffer / 8),
                }
                opts.set_block_based_table_factory(&table);
            },
        )
        .map_err(|e| StoreError::Open(e.to_string()))?;
        let archive = Archive {
            db,
            path: path.to_owned(),
            cutoff,
        };
        let stored = archive.read_cutoff()?;
        if let Ok(mut c) = archive.cutoff.write() {
            *c = stored;
        }
        archive.index_fingerprints()?;
        Ok(archive)
    }

    /// Opens an existing archive read-only (operator commands while the node runs). Families
    /// a newer version added are left out when the archive does not have them yet.
    pub fn open_read_only(path: &Path) -> Result<Archive, StoreError> {
        let existing = DB::list_cf(&rocksdb::Options::default(), path).unwrap_or_default();
        let families: Vec<&str> = keys::COLUMN_FAMILIES
            .into_iter()
            .filter(|f| existing.is_empty() || existing.iter().any(|e| e == f))
            .collect();
        // The write-ahead log replayed here holds merges of the fingerprints family: its merge
        // operator must be there.
        let descriptors = families.iter().map(|name| {
            let mut opts = rocksdb::Options::default();
            if *name == keys::CF_FINGERPRINTS {
                opts.set_merge_operator_associative("roost-xor", xor_merge);
            }
            rocksdb::ColumnFamilyDescriptor::new(*name, opts)
        });
        let db = DB::open_cf_descriptors_read_only(
            &rocksdb::Options::default(),
            path,
            descriptors,
            false,
        )
        .map_err(|e| StoreError::Open(format!("cannot open {}: {e}", path.display())))?;
        let archive = Archive {
            db,
            path: path.to_owned(),
            cutoff: Arc::new(RwLock::new(Position::MIN)),
        };
        let stored = archive.read_cutoff()?;
        if let Ok(mut c) = archive.cutoff.write() {
            *c = stored;
        }
        Ok(archive)
    }

    fn read_cutoff(&self) -> Result<Position, StoreError> {
        let meta = self.cf(keys::CF_META)?;
        match self
            .db
            .get_cf(meta, keys::META_CUTOFF)
            .map_err(|e| StoreError::Read(db_error(e)))?
        {
            None => Ok(Position::MIN),
            Some(bytes) => Position::from_key(&bytes).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the stored retention cutoff is {} bytes, not 40",
                    bytes.len()
                ))
            }),
        }
    }

    /// Builds the `fingerprints` family of an archive written before it existed: one pass
    /// over the messages, once.
    fn index_fingerprints(&self) -> Result<(), StoreError> {
        let meta = self.cf(keys::CF_META)?;
        let done = self
            .db
            .get_cf(meta, keys::META_FINGERPRINTS)
            .map_err(|e| StoreError::Read(db_error(e)))?
            .is_some();
        if done {
            return Ok(());
        }
        let started = Instant::now();
        let fingerprints_cf = self.cf(keys::CF_FINGERPRINTS)?;
        let mut xors: HashMap<Vec<u8>, [u8; 32]> = HashMap::new();
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(self.cutoff().to_key().to_vec());
        let mut iter = self
            .db
            .raw_iterator_cf_opt(self.cf(keys::CF_MESSAGES)?, opts);
        iter.seek_to_first();
        let mut messages = 0u64;
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if let (Some(position), Some((topic, _))) =
                (Position::from_key(key), keys::decode_record(value))
            {
                let entry = xors
                    .entry(keys::stats_key(keys::bucket_of(position.ts), topic))
                    .or_default();
                keys::xor_into(entry, &position.hash);
                messages += 1;
            }
            iter.next();
        }
        iter.status().map_err(|e| StoreError::Read(db_error(e)))?;
        let mut batch = WriteBatch::default();
        for (key, xor) in &xors {
            batch.put_cf(fingerprints_cf, key, xor);
        }
        batch.put_cf(meta, keys::META_FINGERPRINTS, b"1");
        self.db
            .write(batch)
            .map_err(|e| StoreError::Write(db_error(e)))?;
        if messages > 0 {
            tracing::info!(
                messages,
                took = ?started.elapsed(),
                "indexed the archive's fingerprints for store sync (once, after an upgrade)"
            );
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(name).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "column family `{name}` is missing from the archive"
            ))
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    /// Everything before this position is deleted.
    pub fn cutoff(&self) -> Position {
        self.cutoff.read().map(|c| *c).unwrap_or(Position::MIN)
    }

    /// The archive's files, in bytes (what `size:` limits).
    pub fn disk_bytes(&self) -> u64 {
        dir_size(&self.path)
    }

    /// Writes the memtables to table files, so the next open has no log to replay.
    pub fn flush(&self) -> Result<(), StoreError> {
        for name in keys::COLUMN_FAMILIES {
            let cf = self.cf(name)?;
            self.db
                .flush_cf(cf)
                .map_err(|e| StoreError::Write(db_error(e)))?;
        }
        Ok(())
    }

    /// Timestamps of the oldest and newest archived messages.
    pub fn extremes(&self) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let cf = self.cf(keys::CF_MESSAGES)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(self.cutoff().to_key().to_vec());
        let mut iter = self.db.raw_iterator_cf_opt(cf, opts);
        iter.seek_to_first();
        let oldest = iter.key().and_then(Position::from_key).map(|p| p.ts);
        iter.seek_to_last();
        let newest = iter.key().and_then(Position::from_key).map(|p| p.ts);
        iter.status().map_err(|e| StoreError::Read(db_error(e)))?;
        Ok((oldest, newest))
    }

    /// The per-bucket, per-topic counts as stored.
    pub fn load_stats(&self) -> Result<Stats, StoreError> {
        let cf = self.cf(keys::CF_STATS)?;
        let mut stats = Stats::default();
        let mut iter = self.db.raw_iterator_cf(cf);
        iter.seek_to_first();
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let (bucket, topic) = keys::decode_stats_key(key).ok_or_else(|| {
                StoreError::Corrupt("a stats key of the archive is malformed".into())
            })?;
            let (count, bytes) = keys::decode_stats_value(value).ok_or_else(|| {
                StoreError::Corrupt("a stats value of the archive is malformed".into())
            })?;
            stats.add(bucket, topic, count as i64, bytes as i64);
            iter.next();
        }
        iter.status().map_err(|e| StoreError::Read(db_error(e)))?;
        Ok(stats)
    }

    /// Where a message is, if the archive has it.
    pub fn position_of(&self, hash: &MessageHash) -> Result<Option<Position>, QueryError> {
        let cf = self
            .cf(keys::CF_HASHES)
            .map_err(|e| QueryError::Read(e.to_string()))?;
        let value = self
            .db
            .get_pinned_cf(cf, hash.0)
            .map_err(|e| QueryError::Read(db_error(e)))?;
        Ok(value
            .and_then(|v| keys::decode_ts(&v))
            .map(|ts| Position::new(ts, hash))
            .filter(|p| *p >= self.cutoff()))
    }

    /// Up to `limit` archived messages after `after` (from the oldest when `None`), in
    /// (timestamp, hash) order, with their `messages` records: for copying the archive out.
    pub fn records_after(
        &self,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<(Position, Vec<u8>)>, StoreError> {
        let cf = self.cf(keys::CF_MESSAGES)?;
        let cutoff = self.cutoff();
        let lower = match after {
            Some(p) if p >= cutoff => p.key_after(),
            _ => cutoff.to_key().to_vec(),
        };
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(lower);
        let mut iter = self.db.raw_iterator_cf_opt(cf, opts);
        iter.seek_to_first();
        let mut out = Vec::with_capacity(limit.min(4096));
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if out.len() >= limit {
                break;
            }
            let position = Position::from_key(key).ok_or_else(|| {
                StoreError::Corrupt("a key of the `messages` family is malformed".into())
            })?;
            out.push((position, value.to_vec()));
            iter.next();
        }
        iter.status().map_err(|e| StoreError::Read(db_error(e)))?;
        Ok(out)
    }

    /// Answers one validated query.
    pub fn query(&self, query: &Query) -> Result<Page, QueryError> {
        let read_err = |e: StoreError| QueryError::Read(e.to_string());
        let cutoff = self.cutoff();
        let cursor = match &query.cursor {
            None => None,
            Some(hash) => Some(
                self.position_of(hash)?
                    .ok_or(QueryError::InvalidCursor(*hash))?,
            ),
        };
        // Collect one more than the page to learn whether more remain.
        let want = query.limit + 1;
        let mut positions: Found = match &query.filter {
            Filter::Hashes { hashes, scope } => {
                let cf = self.cf(keys::CF_HASHES).map_err(read_err)?;
                let found = self
                    .db
                    .batched_multi_get_cf(cf, hashes.iter().map(|h| h.0), false);
                let mut positions: Found = Vec::with_capacity(hashes.len());
                for (hash, value) in hashes.iter().zip(found) {
                    let value = value.map_err(|e| QueryError::Read(db_error(e)))?;
                    if let Some(ts) = value.and_then(|v| keys::decode_ts(&v)) {
                        let p = Position::new(ts, hash);
                        let after_cursor = match cursor {
                            None => true,
                            Some(c) if query.forward => p > c,
                            Some(c) => p < c,
                        };
                        if p >= cutoff && after_cursor && scope.admits_time(ts) {
                            positions.push((p, None));
                        }
                    }
                }
                if scope.needs_record() {
                    // Topics live in the record: read them for the candidates (at most
                    // MAX_HASHES), keep the records for the page if they were asked for.
                    self.fill_records(&mut positions)?;
                    positions.retain_mut(|(_, record)| {
                        let inside = record.as_deref().is_some_and(|r| record_in_scope(r, scope));
                        if !query.include_data {
                            *record = None;
                        }
                        inside
                    });
                }
                positions.sort_unstable_by_key(|(p, _)| *p);
                if !query.forward {
                    positions.reverse();
                }
                positions.truncate(want);
                positions
            }
            Filter::All {
                pubsub_topic,
                time_start,
                time_end,
            } => {
                let (lower, upper) = bounds(cutoff, *time_start, *time_end, cursor, query.forward);
                if lower >= upper {
                    Vec::new()
                } else if let Some(topic) = pubsub_topic {
                    // No index by pubsub topic alone: walk the time range, reading each
                    // record's topic, at most SCAN_BUDGET entries per page.
                    let (found, examined_to) = self.scan_pubsub(
                        lower,
                        upper,
                        topic,
                        query.forward,
                        want,
                        query.include_data,
                    )?;
                    if let (Some(last), true) = (examined_to, found.len() < want) {
                        // The budget ran out before the page filled: the page ends here, and
                        // the cursor (the last message looked at) lets the client go on.
                        return self.budget_page(found, last, query);
                    }
                    found
                } else {
                    self.scan_messages(lower, upper, query.forward, want, query.include_data)?
                }
            }
            Filter::Content {
                pubsub_topics,
                content_topics,
                time_start,
                time_end,
            } => {
                let (lower, upper) = bounds(cutoff, *time_start, *time_end, cursor, query.forward);
                if lower >= upper {
                    Vec::new()
                } else {
                    self.scan_topics(
                        pubsub_topics,
                        content_topics,
                        &lower,
                        &upper,
                        query.forward,
                        want,
                    )?
                    .into_iter()
                    .map(|p| (p, None))
                    .collect()
                }
            }
        };
        let more = positions.len() > query.limit;
        positions.truncate(query.limit);
        if query.include_data && positions.iter().any(|(_, r)| r.is_none()) {
            self.fill_records(&mut positions)?;
        }
        Ok(assemble_page(positions, more, query))
    }

    /// Walks `messages` between two keys; records come along when asked for.
    fn scan_messages(
        &self,
        lower: Vec<u8>,
        upper: Vec<u8>,
        forward: bool,
        want: usize,
        with_records: bool,
    ) -> Result<Found, QueryError> {
        let cf = self
            .cf(keys::CF_MESSAGES)
            .map_err(|e| QueryError::Read(e.to_string()))?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(lower);
        opts.set_iterate_upper_bound(upper);
        let mut iter = self.db.raw_iterator_cf_opt(cf, opts);
        if forward {
            iter.seek_to_first();
        } else {
            iter.seek_to_last();
        }
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            let Some(key) = iter.key() else { break };
            if let Some(position) = Position::from_key(key) {
                let record = if with_records {
                    iter.value().map(<[u8]>::to_vec)
                } else {
                    None
                };
                out.push((position, record));
            }
            if forward {
                iter.next();
            } else {
                iter.prev();
            }
        }
        iter.status().map_err(|e| QueryError::Read(db_error(e)))?;
        Ok(out)
    }

    /// Walks `messages` between two keys keeping the messages on `pubsub_topic`; looks at
    /// [`SCAN_BUDGET`] entries at most. Also returns the last position looked at when the
    /// budget ran out.
    fn scan_pubsub(
        &self,
        lower: Vec<u8>,
        upper: Vec<u8>,
        pubsub_topic: &str,
        forward: bool,
        want: usize,
        with_records: bool,
    ) -> Result<(Found, Option<Position>), QueryError> {
        let cf = self
            .cf(keys::CF_MESSAGES)
            .map_err(|e| QueryError::Read(e.to_string()))?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(lower);
        opts.set_iterate_upper_bound(upper);
        let mut iter = self.db.raw_iterator_cf_opt(cf, opts);
        if forward {
            iter.seek_to_first();
        } else {
            iter.seek_to_last();
        }
        let mut out = Vec::with_capacity(want);
        let mut examined = 0usize;
        let mut last = None;
        while out.len() < want {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                break;
            };
            if examined >= SCAN_BUDGET {
                iter.status().map_err(|e| QueryError::Read(db_error(e)))?;
                return Ok((out, last));
            }
            examined += 1;
            if let Some(position) = Position::from_key(key) {
                last = Some(position);
                if keys::decode_record(value).is_some_and(|(t, _)| t == pubsub_topic) {
                    out.push((position, with_records.then(|| value.to_vec())));
                }
            }
            if forward {
                iter.next();
            } else {
                iter.prev();
            }
        }
        iter.status().map_err(|e| QueryError::Read(db_error(e)))?;
        Ok((out, None))
    }

    /// A page cut short by [`SCAN_BUDGET`]: what was found, and a cursor at the last
    /// message looked at (a message of another topic, which the next page starts after).
    fn budget_page(&self, found: Found, last: Position, query: &Query) -> Result<Page, QueryError> {
        let mut entries: Vec<PageEntry> = found
            .into_iter()
            .map(|(position, record)| PageEntry {
                position,
                record: if query.include_data { record } else { None },
            })
            .collect();
        if !query.forward {
            entries.reverse();
        }
        Ok(Page {
            entries,
            cursor: Some(last.message_hash()),
        })
    }

    /// Merges the `topics` ranges of several content topics in (timestamp, hash) order.
    fn scan_topics(
        &self,
        pubsub_topics: &[String],
        content_topics: &[String],
        lower: &[u8],
        upper: &[u8],
        forward: bool,
        want: usize,
    ) -> Result<Vec<Position>, QueryError> {
        let cf = self
            .cf(keys::CF_TOPICS)
            .map_err(|e| QueryError::Read(e.to_string()))?;
        let mut heads: Vec<DBRawIterator<'_>> = pubsub_topics
            .iter()
            .flat_map(|p| content_topics.iter().map(move |c| (p, c)))
            .map(|(pubsub_topic, content_topic)| {
                let prefix = keys::topic_prefix(pubsub_topic, content_topic);
                let mut lo = prefix.clone();
                lo.extend_from_slice(lower);
                let mut hi = prefix;
                hi.extend_from_slice(upper);
                let mut opts = ReadOptions::default();
                opts.set_iterate_lower_bound(lo);
                opts.set_iterate_upper_bound(hi);
                let mut iter = self.db.raw_iterator_cf_opt(cf, opts);
                if forward {
                    iter.seek_to_first();
                } else {
                    iter.seek_to_last();
                }
                iter
            })
            .collect();
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            // At most ten heads per pubsub topic (the node's few shards): a linear pick is
            // cheaper than a heap.
            let mut best: Option<(usize, Position)> = None;
            for (i, iter) in heads.iter().enumerate() {
                if let Some(p) = iter.key().and_then(Position::from_key_suffix) {
                    let better = match best {
                        None => true,
                        Some((_, b)) => {
                            if forward {
                                p < b
                            } else {
                                p > b
                            }
                        }
                    };
                    if better {
                        best = Some((i, p));
                    }
                }
            }
            let Some((i, p)) = best else { break };
            out.push(p);
            if let Some(iter) = heads.get_mut(i) {
                if forward {
                    iter.next();
                } else {
                    iter.prev();
                }
            }
        }
        for iter in &heads {
            iter.status().map_err(|e| QueryError::Read(db_error(e)))?;
        }
        Ok(out)
    }

    fn fill_records(
        &self,
        positions: &mut [(Position, Option<Vec<u8>>)],
    ) -> Result<(), QueryError> {
        let cf = self
            .cf(keys::CF_MESSAGES)
            .map_err(|e| QueryError::Read(e.to_string()))?;
        let keys: Vec<[u8; 40]> = positions.iter().map(|(p, _)| p.to_key()).collect();
        let values = self.db.batched_multi_get_cf(cf, keys.iter(), false);
        for ((_, record), value) in positions.iter_mut().zip(values) {
            let value = value.map_err(|e| QueryError::Read(db_error(e)))?;
            *record = value.map(|v| v.to_vec());
        }
        Ok(())
    }

    /// Per-topic summary for operators: counts and bytes from the stats, oldest and newest
    /// timestamps from the data.
    pub fn summary(&self, stats: &Stats) -> Result<Summary, StoreError> {
        let mut topics = Vec::new();
        for (topic, (count, bytes)) in stats.per_topic() {
            let oldest = self.topic_extreme(stats, &topic, true)?;
            let newest = self.topic_extreme(stats, &topic, false)?;
            topics.push(TopicSummary {
                pubsub_topic: topic,
                messages: count,
                bytes,
                oldest,
                newest,
            });
        }
        let cutoff = self.cutoff();
        Ok(Summary {
            messages: stats.messages,
            bytes: stats.bytes,
            disk_bytes: self.disk_bytes(),
            cutoff: (cutoff != Position::MIN).then_some(cutoff.ts),
            topics,
        })
    }

    /// The oldest (or newest) timestamp of `topic`: found in its first (or last) bucket.
    fn topic_extreme(
        &self,
        stats: &Stats,
        topic: &str,
        oldest: bool,
    ) -> Result<Option<i64>, StoreError> {
        let mut buckets = stats
            .buckets
            .iter()
            .filter(|(_, topics)| topics.get(topic).is_some_and(|t| t.0 > 0))
            .map(|(b, _)| *b);
        let bucket = if oldest {
            buckets.next()
        } else {
            buckets.next_back()
        };
        let Some(bucket) = bucket else {
            return Ok(None);
        };
        let cf = self.cf(keys::CF_MESSAGES)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(Position::at(bucket).max(self.cutoff()).to_key().to_vec());
        opts.set_iterate_upper_bound(
            Position::at(bucket.saturating_add(BUCKET_NANOS))
                .to_key()
                .to_vec(),
        );
        let mut iter = self.db.raw_iterator_cf_opt(cf, opts);
        if oldest {
            iter.seek_to_first();
        } else {
            iter.seek_to_last();
        }
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            if keys::decode_record(value).is_some_and(|(t, _)| t == topic) {
                return Ok(Position::from_key(key).map(|p| p.ts));
            }
            if oldest {
                iter.next();
            } else {
                iter.prev();
            }
        }
        iter.status().map_err(|e| StoreError::Read(db_error(e)))?;
        Ok(None)
    }
}

/// The (lower inclusive, upper exclusive) key bounds of a time range after the cutoff and the
/// cursor (exclusive) are applied.
fn bounds(
    cutoff: Position,
    time_start: Option<i64>,
    time_end: Option<i64>,
    cursor: Option<Position>,
    forward: bool,
) -> (Vec<u8>, Vec<u8>) {
    let start = time_start.map(Position::at).unwrap_or(Position::MIN);
    let mut lower = start.max(cutoff).to_key().to_vec();
    // One past every 40-byte key.
    let mut upper = match time_end {
        Some(end) => Position::at(end).to_key().to_vec(),
        None => vec![0xff; 41],
    };
    if let Some(c) = cursor {
        if forward {
            lower = lower.max(c.key_after());
        } else {
            upper = upper.min(c.to_key().to_vec());
        }
    }
    (lower, upper)
}

/// A query's page from its matches in traversal order (at most `limit`; `more` when others
/// remain): with data asked for, records are kept up to the response byte budget and a page cut
/// short there says so; the cursor is the last entry sent, in traversal order, when more remain;
/// the entries end up ascending. Every archive engine builds its pages with this, so they page
/// alike.
pub(crate) fn assemble_page(
    found: impl IntoIterator<Item = (Position, Option<Vec<u8>>)>,
    mut more: bool,
    query: &Query,
) -> Page {
    // Keep the traversal order while applying the response byte budget, so the cursor (last
    // entry in traversal order) stays exact when a page is cut short.
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    for (position, record) in found {
        if query.include_data {
            let Some(record) = record else {
                // Deleted by retention between the index read and the record read.
                continue;
            };
            if !entries.is_empty() && bytes + record.len() > MAX_RESPONSE_BYTES {
                more = true;
                break;
            }
            bytes += record.len();
            entries.push(PageEntry {
                position,
                record: Some(record),
            });
        } else {
            entries.push(PageEntry {
                position,
                record: None,
            });
        }
    }
    let cursor = if more {
        entries.last().map(|e| e.position.message_hash())
    } else {
        None
    };
    if !query.forward {
        entries.reverse();
    }
    Page { entries, cursor }
}

/// Sum of the sizes of the regular files in `dir` (RocksDB keeps a flat directory).
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Message counts and bytes per time bucket and pubsub topic: what retention plans with and
/// what `roost store stats` shows. Kept in memory by the writer and persisted with each batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub buckets: BTreeMap<i64, BTreeMap<String, (u64, u64)>>,
    pub messages: u64,
    pub bytes: u64,
}

impl Stats {
    fn add(&mut self, bucket: i64, topic: &str, count: i64, bytes: i64) {
        let entry = self
            .buckets
            .entry(bucket)
            .or_default()
            .entry(topic.to_owned())
            .or_default();
        entry.0 = entry.0.saturating_add_signed(count);
        entry.1 = entry.1.saturating_add_signed(bytes);
        self.messages = self.messages.saturating_add_signed(count);
        self.bytes = self.bytes.saturating_add_signed(bytes);
        if entry.0 == 0 {
            if let Some(topics) = self.buckets.get_mut(&bucket) {
                topics.remove(topic);
                if topics.is_empty() {
                    self.buckets.remove(&bucket);
                }
            }
        }
    }

    fn get(&self, bucket: i64, topic: &str) -> (u64, u64) {
        self.buckets
            .get(&bucket)
            .and_then(|t| t.get(topic))
            .copied()
            .unwrap_or_default()
    }

    /// (topic, (count, bytes)) over all buckets.
    pub fn per_topic(&self) -> BTreeMap<String, (u64, u64)> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for topics in self.buckets.values() {
            for (topic, (count, bytes)) in topics {
                let e = out.entry(topic.clone()).or_default();
                e.0 += count;
                e.1 += bytes;
            }
        }
        out
    }

    /// Oldest and newest bucket start.
    pub fn span(&self) -> Option<(i64, i64)> {
        Some((
            *self.buckets.keys().next()?,
            *self.buckets.keys().next_back()?,
        ))
    }
}

/// What `roost store stats` prints.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub messages: u64,
    pub bytes: u64,
    pub disk_bytes: u64,
    /// Unix ns before which retention deleted everything (`None`: nothing deleted yet).
    pub cutoff: Option<i64>,
    pub topics: Vec<TopicSummary>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopicSummary {
    pub pubsub_topic: String,
    pub messages: u64,
    pub bytes: u64,
    /// Unix ns.
    pub oldest: Option<i64>,
    pub newest: Option<i64>,
}

/// A message on its way into the archive.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub pubsub_topic: Arc<str>,
    pub hash: MessageHash,
    pub timestamp: i64,
    pub content_topic: String,
    /// The encoded WakuMessage.
    pub bytes: Vec<u8>,
}

/// What happened to one message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Stored,
    Duplicate,
    Rejected(RejectReason),
}

/// The result of a retention cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    pub cutoff: Position,
    pub policy: &'static str,
    pub messages: u64,
    pub bytes: u64,
}

/// How far retention wants to cut, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub cutoff: Position,
    pub policy: &'static str,
}

/// The write side: owned by the writer thread, the only code that writes to the archive.
pub struct Writer {
    archive: Arc<Archive>,
    stats: Stats,
    write_opts: WriteOptions,
    /// Free bytes a message write leaves on the disk at least (0: not checked).
    min_free: u64,
}

impl Writer {
    pub fn new(archive: Arc<Archive>, sync: bool) -> Result<Writer, StoreError> {
        let stats = archive.load_stats()?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(sync);
        Ok(Writer {
            archive,
            stats,
            write_opts,
            min_free: 0,
        })
    }

    /// Refuse message writes while the disk has less than `reserve` free. A full disk in the
    /// middle of a RocksDB write leaves its log writer in an error state that needs a
    /// recovery; refusing first keeps the archive healthy and makes recovery immediate.
    /// Retention's deletes are never refused: they are small and they are what frees space.
    pub fn keep_free(&mut self, reserve: ByteSize) {
        self.min_free = reserve.0;
    }

    fn check_free_space(&self, incoming: u64) -> Result<(), StoreError> {
        if self.min_free == 0 {
            return Ok(());
        }
        // Unreadable (an exotic filesystem): RocksDB's own errors still apply.
        let Some(available) = crate::db::free_bytes(&self.archive.path) else {
            return Ok(());
        };
        if available < self.min_free.saturating_add(incoming) {
            return Err(StoreError::DiskFull {
                available: ByteSize(available),
                reserve: ByteSize(self.min_free),
            });
        }
        Ok(())
    }

    pub fn archive(&self) -> &Arc<Archive> {
        &self.archive
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Writes a batch of messages in one commit. The outcome of each message is `Ok` only once
    /// the batch is committed (its WAL fsynced when `sync`); a failed commit fails them all.
    pub fn write(&mut self, incoming: &[Incoming]) -> Result<Vec<Written>, StoreError> {
        let archive = self.archive.clone();
        let cutoff = archive.cutoff();
        let hashes_cf = archive.cf(keys::CF_HASHES)?;
        let messages_cf = archive.cf(keys::CF_MESSAGES)?;
        let topics_cf = archive.cf(keys::CF_TOPICS)?;
        let stats_cf = archive.cf(keys::CF_STATS)?;

        let mut outcomes = vec![Written::Stored; incoming.len()];
        let mut candidates = Vec::with_capacity(incoming.len());
        let mut seen = HashSet::with_capacity(incoming.len());
        for (i, m) in incoming.iter().enumerate() {
            if Position::new(m.timestamp, &m.hash) < cutoff {
                outcomes[i] = Written::Rejected(RejectReason::Expired);
            } else if m.pubsub_topic.len() > keys::MAX_PUBSUB_TOPIC_LEN {
                outcomes[i] = Written::Rejected(RejectReason::PubsubTopic);
            } else if !seen.insert(m.hash) {
                outcomes[i] = Written::Duplicate;
            } else {
                candidates.push(i);
            }
        }
        let existing = archive.db.batched_multi_get_cf(
            hashes_cf,
            candidates.iter().map(|&i| incoming[i].hash.0),
            false,
        );
        let mut batch = WriteBatch::default();
        // Per (bucket, topic): count, bytes and XOR of the new messages.
        type Delta = (i64, i64, [u8; 32]);
        let mut delta: HashMap<(i64, Arc<str>), Delta> = HashMap::new();
        for (&i, exists) in candidates.iter().zip(existing) {
            let exists = exists.map_err(|e| StoreError::Read(db_error(e)))?.is_some();
            if exists {
                outcomes[i] = Written::Duplicate;
                continue;
            }
            let m = &incoming[i];
            let position = Position::new(m.timestamp, &m.hash);
            let record = keys::encode_record(&m.pubsub_topic, &m.bytes);
            let size = keys::entry_bytes(m.pubsub_topic.len(), m.content_topic.len(), record.len());
            batch.put_cf(messages_cf, position.to_key(), &record);
            batch.put_cf(hashes_cf, m.hash.0, keys::encode_ts(m.timestamp));
            batch.put_cf(
                topics_cf,
                keys::topic_key(&m.pubsub_topic, &m.content_topic, &position),
                [],
            );
            let d = delta
                .entry((keys::bucket_of(m.timestamp), m.pubsub_topic.clone()))
                .or_default();
            d.0 += 1;
            d.1 += size as i64;
            keys::xor_into(&mut d.2, &m.hash.0);
        }
        if delta.is_empty() {
            return Ok(outcomes);
        }
        let fingerprints_cf = archive.cf(keys::CF_FINGERPRINTS)?;
        for ((bucket, topic), (count, bytes, xor)) in &delta {
            batch.merge_cf(fingerprints_cf, keys::stats_key(*bucket, topic), xor);
            let (c, b) = self.stats.get(*bucket, topic);
            batch.put_cf(
                stats_cf,
                keys::stats_key(*bucket, topic),
                keys::stats_value(
                    c.saturating_add_signed(*count),
                    b.saturating_add_signed(*bytes),
                ),
            );
        }
        // Duplicates and rejections above never need space; new messages do.
        self.check_free_space(batch.size_in_bytes() as u64)?;
        archive
            .db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| StoreError::Write(db_error(e)))?;
        for ((bucket, topic), (count, bytes, _)) in delta {
            self.stats.add(bucket, &topic, count, bytes);
        }
        Ok(outcomes)
    }

    /// How far the policy wants to cut now (`None`: nothing to delete). `disk_bytes` is the
    /// measured size of the archive's files, for the size rule.
    pub fn plan(
        &self,
        policy: &super::config::RetentionPolicy,
        now: i64,
        disk_bytes: u64,
    ) -> Result<Option<Plan>, StoreError> {
        let mut best: Option<Plan> = None;
        let mut consider = |cutoff: Position, policy: &'static str| {
            if best.is_none_or(|b| cutoff > b.cutoff) {
                best = Some(Plan { cutoff, policy });
            }
        };
        if let Some(age) = policy.time() {
            let age = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
            // Whole buckets only: cheap, and keeps each message at least `age`.
            consider(
                Position::at(keys::bucket_of(now.saturating_sub(age))),
                "time",
            );
        }
        if let Some(capacity) = policy.capacity() {
            if self.stats.messages > capacity {
                // Down to 95% so the next messages do not trigger a cut each.
                let keep = capacity - capacity / 20;
                let delete = self.stats.messages - keep;
                consider(self.position_after(delete, 0)?, "capacity");
            }
        }
        if let Some(limit) = policy.size() {
            // Start at 90% of the limit and go down to 80%, so the files stay under it while
            // compaction catches up.
            if disk_bytes > limit.0 / 10 * 9 && self.stats.bytes > 0 && disk_bytes > 0 {
                let target_disk = limit.0 / 10 * 8;
                let keep_fraction = target_disk as f64 / disk_bytes as f64;
                let keep_bytes = (self.stats.bytes as f64 * keep_fraction) as u64;
                let delete = self.stats.bytes.saturating_sub(keep_bytes).max(1);
                consider(self.position_after(0, delete)?, "size");
            }
        }
        Ok(best.filter(|p| p.cutoff > self.archive.cutoff()))
    }

    /// The position that leaves `count` messages (or `bytes` bytes, whichever is given)
    /// before it: the oldest that many are what a cut there deletes.
    fn position_after(&self, count: u64, bytes: u64) -> Result<Position, StoreError> {
        let mut seen_count = 0u64;
        let mut seen_bytes = 0u64;
        for (&bucket, topics) in &self.stats.buckets {
            let (c, b) = topics
                .values()
                .fold((0u64, 0u64), |acc, v| (acc.0 + v.0, acc.1 + v.1));
            let reached = if count > 0 {
                seen_count + c >= count
            } else {
                seen_bytes + b >= bytes
            };
            if !reached {
                seen_count += c;
                seen_bytes += b;
                continue;
            }
            let need_count = count.saturating_sub(seen_count);
            let need_bytes = bytes.saturating_sub(seen_bytes);
            if (count > 0 && need_count == c) || (count == 0 && need_bytes >= b) {
                return Ok(Position::at(bucket.saturating_add(BUCKET_NANOS)));
            }
            // The cut falls inside this bucket: walk it.
            return self.walk_bucket(bucket, need_count, need_bytes, count > 0);
        }
        // Everything: cut after the newest bucket.
        Ok(self
            .stats
            .span()
            .map(|(_, last)| Position::at(last.saturating_add(BUCKET_NANOS)))
            .unwrap_or(Position::MIN))
    }

    fn walk_bucket(
        &self,
        bucket: i64,
        need_count: u64,
        need_bytes: u64,
        by_count: bool,
    ) -> Result<Position, StoreError> {
        let archive = &self.archive;
        let cf = archive.cf(keys::CF_MESSAGES)?;
        let end = Position::at(bucket.saturating_add(BUCKET_NANOS));
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(Position::at(bucket).max(archive.cutoff()).to_key().to_vec());
        opts.set_iterate_upper_bound(end.to_key().to_vec());
        let mut iter = archive.db.raw_iterator_cf_opt(cf, opts);
        iter.seek_to_first();
        let (mut count, mut bytes) = (0u64, 0u64);
        while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
            let done = if by_count {
                count >= need_count
            } else {
                bytes >= need_bytes
            };
            if done {
                return Ok(Position::from_key(key).unwrap_or(end));
            }
            count += 1;
            bytes += record_entry_bytes(value);
            iter.next();
        }
        iter.status().map_err(|e| StoreError::Read(db_error(e)))?;
        Ok(end)
    }

    /// Deletes everything before `plan.cutoff`: one range delete and the stats, in one commit.
    pub fn cut(&mut self, plan: Plan) -> Result<Cut, StoreError> {
        let archive = self.archive.clone();
        let old = archive.cutoff();
        if plan.cutoff <= old {
            return Ok(Cut {
                cutoff: old,
                policy: plan.policy,
                messages: 0,
                bytes: 0,
            });
        }
        let messages_cf = archive.cf(keys::CF_MESSAGES)?;
        let stats_cf = archive.cf(keys::CF_STATS)?;
        let meta_cf = archive.cf(keys::CF_META)?;
        let cut_bucket = keys::bucket_of(plan.cutoff.ts);
        // Buckets wholly before the cut go; the bucket the cut falls in is counted entry by
        // entry (only when the cut is not on its start).
        let mut removed: Vec<(i64, String, u64, u64)> = Vec::new();
        for (&bucket, topics) in self.stats.buckets.range(..cut_bucket) {
            for (topic, (c, b)) in topics {
                removed.push((bucket, topic.clone(), *c, *b));
            }
        }
        let mut partial: BTreeMap<String, (u64, u64, [u8; 32])> = BTreeMap::new();
        if plan.cutoff != Position::at(cut_bucket) {
            let mut opts = ReadOptions::default();
            opts.set_iterate_lower_bound(Position::at(cut_bucket).max(old).to_key().to_vec());
            opts.set_iterate_upper_bound(plan.cutoff.to_key().to_vec());
            let mut iter = archive.db.raw_iterator_cf_opt(messages_cf, opts);
            iter.seek_to_first();
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                if let (Some((topic, _)), Some(position)) =
                    (keys::decode_record(value), Position::from_key(key))
                {
                    let e = partial.entry(topic.to_owned()).or_default();
                    e.0 += 1;
                    e.1 += record_entry_bytes(value);
                    keys::xor_into(&mut e.2, &position.hash);
                }
                iter.next();
            }
            iter.status().map_err(|e| StoreError::Read(db_error(e)))?;
        }
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(messages_cf, Position::MIN.to_key(), plan.cutoff.to_key());
        batch.put_cf(meta_cf, keys::META_CUTOFF, plan.cutoff.to_key());
        let fingerprints_cf = archive.cf(keys::CF_FINGERPRINTS)?;
        for (bucket, topic, _, _) in &removed {
            batch.delete_cf(stats_cf, keys::stats_key(*bucket, topic));
            batch.delete_cf(fingerprints_cf, keys::stats_key(*bucket, topic));
        }
        for (topic, (c, b, xor)) in &partial {
            let (have_c, have_b) = self.stats.get(cut_bucket, topic);
            let key = keys::stats_key(cut_bucket, topic);
            if *c >= have_c {
                batch.delete_cf(fingerprints_cf, &key);
                batch.delete_cf(stats_cf, key);
            } else {
                // The deleted messages' hashes, merged out.
                batch.merge_cf(fingerprints_cf, &key, xor);
                batch.put_cf(
                    stats_cf,
                    key,
                    keys::stats_value(have_c - c, have_b.saturating_sub(*b)),
                );
            }
        }
        archive
            .db
            .write_opt(batch, &self.write_opts)
            .map_err(|e| StoreError::Write(db_error(e)))?;
        if let Ok(mut c) = archive.cutoff.write() {
            *c = plan.cutoff;
        }
        let (mut messages, mut bytes) = (0u64, 0u64);
        for (bucket, topic, c, b) in removed {
            self.stats.add(bucket, &topic, -(c as i64), -(b as i64));
            messages += c;
            bytes += b;
        }
        for (topic, (c, b, _)) in partial {
            let (have_c, have_b) = self.stats.get(cut_bucket, &topic);
            let c = c.min(have_c);
            let b = b.min(have_b);
            self.stats.add(cut_bucket, &topic, -(c as i64), -(b as i64));
            messages += c;
            bytes += b;
        }
        Ok(Cut {
            cutoff: plan.cutoff,
            policy: plan.policy,
            messages,
            bytes,
        })
    }

    /// Gives disk space back after cuts: drops files wholly before the cutoff and, when
    /// `compact`, rewrites what is left there and the index families (where the compaction
    /// filter drops their stale entries). Runs on the maintenance thread, concurrently with
    /// writes and queries.
    pub fn reclaim(archive: &Archive, cutoff: Position, compact: bool) -> Result<(), StoreError> {
        let started = Instant::now();
        let messages_cf = archive.cf(keys::CF_MESSAGES)?;
        let start = Position::MIN.to_key();
        let end = cutoff.to_key();
        archive
            .db
            .delete_file_in_range_cf(messages_cf, start, end)
            .map_err(|e| StoreError::Write(db_error(e)))?;
        if compact {
            archive
                .db
                .compact_range_cf(messages_cf, None::<&[u8]>, Some(&end[..]));
            for name in [keys::CF_HASHES, keys::CF_TOPICS] {
                let cf = archive.cf(name)?;
                archive
                    .db
                    .compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
            }
        }
        tracing::debug!(compact, took = ?started.elapsed(), "store reclaimed space after retention");
        Ok(())
    }
}

/// The `fingerprints` family's merge: XOR of the stored value and every operand (a missing
/// value is all zeros; operands of another length are ignored, never written).
fn xor_merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &rocksdb::merge_operator::MergeOperands,
) -> Option<Vec<u8>> {
    let mut acc = [0u8; 32];
    if let Some(value) = existing.and_then(|v| <&[u8; 32]>::try_from(v).ok()) {
        acc = *value;
    }
    for operand in operands {
        if let Ok(operand) = <&[u8; 32]>::try_from(operand) {
            keys::xor_into(&mut acc, operand);
        }
    }
    Some(acc.to_vec())
}

/// The accounted bytes of one `messages` value (see [`keys::entry_bytes`]).
fn record_entry_bytes(value: &[u8]) -> u64 {
    match keys::decode_record(value) {
        Some((topic, message)) => {
            let content_len = crate::message::WakuMessage::decode(message)
                .map(|m| m.content_topic.len())
                .unwrap_or(0);
            keys::entry_bytes(topic.len(), content_len, value.len())
        }
        None => (40 + value.len()) as u64,
    }
}

mod sync_index;
pub use sync_index::{RangeScope, RangeSummary, SyncView};

#[cfg(test)]
mod tests;
