//! Store metrics (`roost_store_*`): what was stored or rejected and why, the archive's size,
//! queries by kind and status with their duration, retention deletions, write batches and
//! commit latency, and the queues in front of the store's threads.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// `content`, `time`, `lookup`, `presence`, `invalid` (a 400 before the query ran) or
    /// `refused` (not read: the store was overloaded or stopping) or `throttled` (not read:
    /// the peer is over its quota, 429).
    pub kind: &'static str,
    /// The status code answered.
    pub status: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// `time`, `capacity` or `size`.
    pub policy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// `ingest` (writer thread) or `query` (query threads).
    pub queue: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ])
}

/// Handles to the store's metrics; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub stored: Counter,
    pub rejected: Family<ReasonLabels, Counter>,
    pub dropped: Family<ReasonLabels, Counter>,
    pub write_errors: Counter,
    pub archive_messages: Gauge,
    pub archive_bytes: Gauge,
    pub disk_bytes: Gauge,
    pub queries: Family<QueryLabels, Counter>,
    pub query_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    pub retention_deleted: Family<PolicyLabels, Counter>,
    pub batch_messages: Histogram,
    pub commit_duration: Histogram,
    pub queue_depth: Family<QueueLabels, Gauge>,
}

impl Metrics {
    /// Registers under the given (already `roost_store`-prefixed) registry.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics {
            stored: Counter::default(),
            rejected: Family::default(),
            dropped: Family::default(),
            write_errors: Counter::default(),
            archive_messages: Gauge::default(),
            archive_bytes: Gauge::default(),
            disk_bytes: Gauge::default(),
            queries: Family::default(),
            query_duration: Family::new_with_constructor(duration_histogram),
            retention_deleted: Family::default(),
            batch_messages: Histogram::new([1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0]),
            commit_duration: duration_histogram(),
            queue_depth: Family::default(),
        };
        registry.register(
            "messages_stored",
            "Messages written to the archive",
            m.stored.clone(),
        );
        registry.register(
            "messages_rejected",
            "Messages not stored, by reason (ephemeral, too_old, future, duplicate, expired, pubsub_topic)",
            m.rejected.clone(),
        );
        registry.register(
            "messages_dropped",
            "Messages lost before the archive: queue_full (overload) or write_failed (disk)",
            m.dropped.clone(),
        );
        registry.register(
            "write_errors",
            "Write batches RocksDB refused (disk full, I/O error)",
            m.write_errors.clone(),
        );
        registry.register(
            "archive_messages",
            "Messages in the archive",
            m.archive_messages.clone(),
        );
        registry.register(
            "archive_bytes",
            "Logical size of the archived messages and their indexes",
            m.archive_bytes.clone(),
        );
        registry.register(
            "disk_bytes",
            "Size of the archive's files on disk",
            m.disk_bytes.clone(),
        );
        registry.register(
            "queries",
            "Store queries answered, by kind and status code",
            m.queries.clone(),
        );
        registry.register(
            "query_duration_seconds",
            "Time to answer a store query in the store (decode, read, encode), by kind",
            m.query_duration.clone(),
        );
        registry.register(
            "retention_deleted",
            "Messages deleted by the retention policy, by the rule that deleted them",
            m.retention_deleted.clone(),
        );
        registry.register(
            "write_batch_messages",
            "Messages per committed write batch (group commit)",
            m.batch_messages.clone(),
        );
        registry.register(
            "commit_duration_seconds",
            "Time to commit one write batch to the write-ahead log (with fsync when store.sync)",
            m.commit_duration.clone(),
        );
        registry.register(
            "queue_depth",
            "Requests waiting for the store's threads, by queue",
            m.queue_depth.clone(),
        );
        m
    }

    pub fn reject(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn drop_message(&self, reason: &'static str) {
        self.dropped.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn query(&self, kind: &'static str, status: u32, seconds: f64) {
        self.queries
            .get_or_create(&QueryLabels { kind, status })
            .inc();
        self.query_duration
            .get_or_create(&KindLabels { kind })
            .observe(seconds);
    }
}
