//! Store metrics (`roost_store_*`): what was stored or rejected and why, the archive's size,
//! queries by kind and status with their duration, retention deletions, write batches and
//! commit latency, the queues in front of the store's threads, the retention limits in force
//! (to plot the archive against them) and RocksDB's own gauges (`roost_store_rocksdb_*`).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use super::config::RetentionPolicy;

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
    /// `size:` rule in bytes (0: no size rule).
    pub retention_limit_bytes: Gauge,
    /// `capacity:` rule in messages (0: no capacity rule).
    pub retention_limit_messages: Gauge,
    /// `time:` rule in seconds (0: no time rule).
    pub retention_limit_seconds: Gauge,
    /// RocksDB's view of the archive database.
    pub rocksdb: crate::db::Metrics,
}

/// Label values of `messages_rejected`, created at start so rates exist before the first one.
pub const REJECT_REASONS: [&str; 6] = [
    "ephemeral",
    "too_old",
    "future",
    "duplicate",
    "expired",
    "pubsub_topic",
];
/// Label values of `messages_dropped`, created at start.
pub const DROP_REASONS: [&str; 3] = ["queue_full", "write_failed", "stopped"];

impl Metrics {
    /// Registers under the given (already `roost_store`-prefixed) registry, with the
    /// retention rules in force.
    pub fn register(registry: &mut Registry, retention: &RetentionPolicy) -> Self {
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
            retention_limit_bytes: Gauge::default(),
            retention_limit_messages: Gauge::default(),
            retention_limit_seconds: Gauge::default(),
            rocksdb: crate::db::Metrics::register(registry),
        };
        // Every label value exists from the start (at 0), so dashboards and alerts can take
        // rates and ratios before the first rejection, drop or deletion.
        for reason in REJECT_REASONS {
            let _ = m.rejected.get_or_create(&ReasonLabels { reason });
        }
        for reason in DROP_REASONS {
            let _ = m.dropped.get_or_create(&ReasonLabels { reason });
        }
        for rule in &retention.0 {
            let _ = m.retention_deleted.get_or_create(&PolicyLabels {
                policy: rule.label(),
            });
        }
        for queue in ["ingest", "query"] {
            let _ = m.queue_depth.get_or_create(&QueueLabels { queue });
        }
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        m.retention_limit_bytes
            .set(clamp(retention.size().map_or(0, |s| s.0)));
        m.retention_limit_messages
            .set(clamp(retention.capacity().unwrap_or(0)));
        m.retention_limit_seconds
            .set(clamp(retention.time().map_or(0, |d| d.as_secs())));
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
            "Messages lost before the archive: queue_full (overload) or write_failed (disk full or below store.min_free_space, I/O error)",
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
        registry.register(
            "retention_limit_bytes",
            "The size retention rule (store.retention size:), in bytes; 0 without one",
            m.retention_limit_bytes.clone(),
        );
        registry.register(
            "retention_limit_messages",
            "The capacity retention rule (store.retention capacity:), in messages; 0 without one",
            m.retention_limit_messages.clone(),
        );
        registry.register(
            "retention_limit_seconds",
            "The time retention rule (store.retention time:), in seconds; 0 without one",
            m.retention_limit_seconds.clone(),
        );
        m
    }

    /// A query goes into the query threads' queue.
    pub fn query_queued(&self) {
        self.queue_depth
            .get_or_create(&QueueLabels { queue: "query" })
            .inc();
    }

    /// A query left the queue (taken by a query thread, or refused).
    pub fn query_dequeued(&self) {
        self.queue_depth
            .get_or_create(&QueueLabels { queue: "query" })
            .dec();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn render(retention: &str) -> String {
        let mut registry = Registry::default();
        let policy: RetentionPolicy = retention.parse().unwrap();
        Metrics::register(registry.sub_registry_with_prefix("roost_store"), &policy);
        crate::metrics::render(&registry)
    }

    #[test]
    fn exports_the_retention_limits_in_force() {
        let text = render("size:2GB;time:30d");
        assert!(
            text.contains("roost_store_retention_limit_bytes 2147483648\n"),
            "{text}"
        );
        assert!(text.contains("roost_store_retention_limit_seconds 2592000\n"));
        assert!(text.contains("roost_store_retention_limit_messages 0\n"));
        assert!(text.contains("roost_store_retention_deleted_total{policy=\"size\"} 0\n"));
        assert!(text.contains("roost_store_retention_deleted_total{policy=\"time\"} 0\n"));
        assert!(!text.contains("policy=\"capacity\""));

        let text = render("capacity:5000");
        assert!(text.contains("roost_store_retention_limit_messages 5000\n"));
        assert!(text.contains("roost_store_retention_limit_bytes 0\n"));
        assert!(text.contains("roost_store_retention_limit_seconds 0\n"));
    }

    #[test]
    fn every_reason_and_queue_exists_from_the_start() {
        let text = render("none");
        for reason in REJECT_REASONS {
            let sample = format!("roost_store_messages_rejected_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&sample), "{sample} missing");
        }
        for reason in DROP_REASONS {
            let sample = format!("roost_store_messages_dropped_total{{reason=\"{reason}\"}} 0\n");
            assert!(text.contains(&sample), "{sample} missing");
        }
        assert!(text.contains("roost_store_queue_depth{queue=\"query\"} 0\n"));
        assert!(text.contains("roost_store_queue_depth{queue=\"ingest\"} 0\n"));
        // Per-database RocksDB gauges exist from the start (per-column-family ones appear with
        // the first reading of the open database).
        assert!(text.contains("roost_store_rocksdb_running_compactions 0\n"));
    }
}
