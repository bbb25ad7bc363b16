//! The archive behind two traits, so that the store protocol, store sync, retention, metrics
//! and `/health` do not know which engine they talk to:
//! - [`ArchiveRead`]: queries, store sync's ranges and lookups; shared by the query threads and
//!   store sync (`Arc<dyn ArchiveRead>`);
//! - [`ArchiveWrite`]: owned by the writer thread, the only code that writes: batches,
//!   retention, the figures `/health` and the gauges show.
//!
//! Two engines implement them: RocksDB (here, over [`Archive`] and [`Writer`]) and PostgreSQL
//! ([`super::postgres::engine`]).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    archive::{
        Archive, Cut, Incoming, Page, QueryError, RangeScope, RangeSummary, SyncView, Writer,
        Written,
    },
    config::RetentionPolicy,
    keys::{self, Position},
    metrics::Metrics,
    rpc::Query,
    Mailbox, StoreError, Summary,
};
use crate::message::MessageHash;

/// Reads of an archive. Methods block (call them from a store thread or `spawn_blocking`).
pub trait ArchiveRead: Send + Sync {
    /// Answers one validated store v3 query.
    fn query(&self, query: &Query) -> Result<Page, QueryError>;
    /// Timestamps of the oldest and newest archived messages.
    fn extremes(&self) -> Result<(Option<i64>, Option<i64>), StoreError>;
    /// The pubsub topic and encoded WakuMessage of the message with this hash.
    fn record_of(&self, hash: &MessageHash) -> Result<Option<(String, Vec<u8>)>, StoreError>;
    /// A view for one store sync reconciliation round.
    fn sync_view(&self) -> Result<Box<dyn RangeSource + '_>, StoreError>;
}

/// What store sync reads of a range of (timestamp, hash) positions.
pub trait RangeSource {
    /// Count and XOR fingerprint of the messages at `lower ..= upper` in `scope`.
    fn summarize(
        &self,
        lower: Position,
        upper: Position,
        scope: RangeScope<'_>,
    ) -> Result<RangeSummary, StoreError>;
    /// The positions `lower ..= upper` in `scope`, ascending.
    fn ids(
        &self,
        lower: Position,
        upper: Position,
        scope: RangeScope<'_>,
    ) -> Result<Vec<Position>, StoreError>;
}

/// What the writer thread reports in `/health` and the gauges after a refresh.
#[derive(Debug, Clone, Default)]
pub struct EngineStatus {
    pub messages: u64,
    pub bytes: u64,
    /// Bytes the archive takes on disk (RocksDB's files; PostgreSQL's relations).
    pub disk_bytes: u64,
    pub oldest: Option<i64>,
    pub newest: Option<i64>,
    /// Why the engine cannot write now (a lost database connection), if it cannot.
    pub unavailable: Option<String>,
    /// Engine-specific fields for `/health`.
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The write side of an archive, owned by the writer thread. Methods block.
pub trait ArchiveWrite: Send {
    /// `rocksdb` or `postgres` (in `/health` and logs).
    fn engine(&self) -> &'static str;
    /// The read side, for the query threads and store sync.
    fn reader(&self) -> Arc<dyn ArchiveRead>;
    /// Writes a batch in one commit. Every outcome is final only once the commit is durable
    /// (fsynced write-ahead log; committed transaction); an error fails the whole batch.
    fn write(&mut self, batch: &[Incoming]) -> Result<Vec<Written>, StoreError>;
    /// Messages and bytes archived, as last known (cheap: called after every batch).
    fn totals(&self) -> (u64, u64);
    /// Whether retention should run now, before its interval is up (a size or capacity limit
    /// crossed by writes). Cheap: called between batches.
    fn retention_pressing(&mut self, policy: &RetentionPolicy) -> bool;
    /// Applies the policy: deletes what it says, oldest first. `None`: nothing to delete.
    fn retain(&mut self, policy: &RetentionPolicy, now: i64) -> Result<Option<Cut>, StoreError>;
    /// Measures the archive for gauges and `/health` (engine gauges go to `metrics`).
    fn status(&mut self, metrics: &Metrics) -> EngineStatus;
    /// Counts, bytes and extremes per pubsub topic (`roost store stats`, the REST API).
    fn summary(&mut self) -> Result<Summary, StoreError>;
    /// Called once when the writer stops, after the last batch.
    fn close(&mut self);
}

impl ArchiveRead for Archive {
    fn query(&self, query: &Query) -> Result<Page, QueryError> {
        Archive::query(self, query)
    }

    fn extremes(&self) -> Result<(Option<i64>, Option<i64>), StoreError> {
        Archive::extremes(self)
    }

    fn record_of(&self, hash: &MessageHash) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        Archive::record_of(self, hash)
    }

    fn sync_view(&self) -> Result<Box<dyn RangeSource + '_>, StoreError> {
        Ok(Box::new(Archive::sync_view(self)))
    }
}

impl RangeSource for SyncView<'_> {
    fn summarize(
        &self,
        lower: Position,
        upper: Position,
        scope: RangeScope<'_>,
    ) -> Result<RangeSummary, StoreError> {
        SyncView::summarize(self, lower, upper, scope)
    }

    fn ids(
        &self,
        lower: Position,
        upper: Position,
        scope: RangeScope<'_>,
    ) -> Result<Vec<Position>, StoreError> {
        SyncView::ids(self, lower, upper, scope)
    }
}

/// How often the size rule measures the archive's files while writes approach its limit.
const SIZE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The RocksDB engine: the [`Writer`], and the maintenance thread's mailbox that gives disk
/// space back after retention cuts.
pub struct RocksEngine {
    writer: Writer,
    mailbox: Arc<Mailbox>,
    /// Last measured size of the archive's files.
    disk_bytes: u64,
    /// Bytes written since `disk_bytes` was measured (the size rule's estimate).
    written_since_measure: u64,
    last_size_check: Instant,
    /// Bytes cut by retention since the last compaction.
    dead_bytes: u64,
}

impl RocksEngine {
    pub fn new(writer: Writer, mailbox: Arc<Mailbox>) -> RocksEngine {
        let disk_bytes = writer.archive().disk_bytes();
        RocksEngine {
            writer,
            mailbox,
            disk_bytes,
            written_since_measure: 0,
            last_size_check: Instant::now(),
            dead_bytes: 0,
        }
    }

    fn measure(&mut self) {
        self.disk_bytes = self.writer.archive().disk_bytes();
        self.written_since_measure = 0;
        self.last_size_check = Instant::now();
    }
}

impl ArchiveWrite for RocksEngine {
    fn engine(&self) -> &'static str {
        "rocksdb"
    }

    fn reader(&self) -> Arc<dyn ArchiveRead> {
        self.writer.archive().clone()
    }

    fn write(&mut self, batch: &[Incoming]) -> Result<Vec<Written>, StoreError> {
        let outcomes = self.writer.write(batch)?;
        self.written_since_measure += batch.iter().map(|m| m.bytes.len() as u64).sum::<u64>();
        Ok(outcomes)
    }

    fn totals(&self) -> (u64, u64) {
        let stats = self.writer.stats();
        (stats.messages, stats.bytes)
    }

    fn retention_pressing(&mut self, policy: &RetentionPolicy) -> bool {
        let size_pressure = policy.size().is_some_and(|limit| {
            self.disk_bytes + self.written_since_measure > limit.0 / 10 * 9
                && self.last_size_check.elapsed() >= SIZE_CHECK_EVERY
        });
        let over_capacity = policy
            .capacity()
            .is_some_and(|cap| self.writer.stats().messages > cap);
        size_pressure || over_capacity
    }

    fn retain(&mut self, policy: &RetentionPolicy, now: i64) -> Result<Option<Cut>, StoreError> {
        self.measure();
        // While space from the last cut is still being given back the measured size lags;
        // the size rule waits for it rather than cutting twice.
        let disk = if self.mailbox.busy() {
            0
        } else {
            self.disk_bytes
        };
        let Some(plan) = self.writer.plan(policy, now, disk)? else {
            return Ok(None);
        };
        let cut = self.writer.cut(plan)?;
        self.dead_bytes += cut.bytes;
        // Compact once a good share of the index entries are stale, or whenever the size rule
        // needs the space back.
        let compact = cut.policy == "size" || self.dead_bytes > self.writer.stats().bytes / 8;
        if compact {
            self.dead_bytes = 0;
        }
        self.mailbox.submit(cut.cutoff, compact);
        Ok(Some(cut))
    }

    fn status(&mut self, metrics: &Metrics) -> EngineStatus {
        self.measure();
        metrics
            .rocksdb
            .observe(self.writer.archive().db(), &keys::COLUMN_FAMILIES);
        let (oldest, newest) = self.writer.archive().extremes().unwrap_or((None, None));
        let (messages, bytes) = self.totals();
        EngineStatus {
            messages,
            bytes,
            disk_bytes: self.disk_bytes,
            oldest,
            newest,
            unavailable: None,
            details: serde_json::Map::new(),
        }
    }

    fn summary(&mut self) -> Result<Summary, StoreError> {
        self.writer.archive().summary(self.writer.stats())
    }

    fn close(&mut self) {
        // A clean stop leaves nothing in the write-ahead log, so the next start opens at once
        // (after a crash the log replayed is at most `max_total_wal_size`).
        if let Err(error) = self.writer.archive().flush() {
            tracing::warn!(%error, "store could not flush at shutdown; the next start replays its log");
        }
        // The maintenance thread has nothing left to do once nothing writes.
        self.mailbox.stop();
    }
}
