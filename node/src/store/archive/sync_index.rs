//! Store sync's reads of the archive: the count and XOR fingerprint of any range of
//! (timestamp, hash) positions, the positions themselves, and a message by hash.
//!
//! A range's fingerprint comes from the per-bucket `fingerprints` and `stats` families for the
//! whole buckets it covers and from a scan of `messages` for the two partial buckets at its
//! ends, so its cost is bounded by the range's length in buckets plus two buckets of messages,
//! whatever the archive holds; nothing is kept in memory. A content-topic scope has no index
//! (the buckets are per pubsub topic): it scans the range.

use rocksdb::{ReadOptions, SnapshotWithThreadMode, DB};

use super::{db_error, keys, Archive, Position, BUCKET_NANOS};
use crate::{message::MessageHash, store::StoreError};

/// Which messages a range counts: those on these pubsub topics and content topics (an empty
/// list admits every topic).
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeScope<'a> {
    pub pubsub_topics: &'a [String],
    pub content_topics: &'a [String],
}

impl RangeScope<'_> {
    fn admits_pubsub(&self, topic: &str) -> bool {
        self.pubsub_topics.is_empty() || self.pubsub_topics.iter().any(|t| t == topic)
    }

    /// Whether a `messages` value is in scope (a record that does not decode is not).
    fn admits_record(&self, value: &[u8]) -> bool {
        let Some((topic, message)) = keys::decode_record(value) else {
            return false;
        };
        if !self.admits_pubsub(topic) {
            return false;
        }
        self.content_topics.is_empty()
            || crate::message::WakuMessage::decode(message)
                .is_ok_and(|m| self.content_topics.contains(&m.content_topic))
    }

    fn unscoped(&self) -> bool {
        self.pubsub_topics.is_empty() && self.content_topics.is_empty()
    }
}

/// The count and XOR of the message hashes of a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeSummary {
    pub count: u64,
    pub fingerprint: [u8; 32],
}

impl RangeSummary {
    fn add(&mut self, hash: &[u8; 32]) {
        self.count += 1;
        keys::xor_into(&mut self.fingerprint, hash);
    }
}

/// A consistent view of the archive for one reconciliation round.
pub struct SyncView<'a> {
    archive: &'a Archive,
    snapshot: SnapshotWithThreadMode<'a, DB>,
}

impl Archive {
    /// A view of the archive as it is now; writes made later are not seen through it.
    pub fn sync_view(&self) -> SyncView<'_> {
        SyncView {
            archive: self,
            snapshot: self.db.snapshot(),
        }
    }

    /// The pubsub topic and encoded WakuMessage of the message with this hash.
    pub fn record_of(&self, hash: &MessageHash) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let Some(position) = self
            .position_of(hash)
            .map_err(|e| StoreError::Read(e.to_string()))?
        else {
            return Ok(None);
        };
        let value = self
            .db
            .get_pinned_cf(self.cf(keys::CF_MESSAGES)?, position.to_key())
            .map_err(|e| StoreError::Read(db_error(e)))?;
        Ok(value.and_then(|v| {
            keys::decode_record(&v).map(|(topic, message)| (topic.to_owned(), message.to_vec()))
        }))
    }
}

impl SyncView<'_> {
    fn read_options(&self) -> ReadOptions {
        let mut opts = ReadOptions::default();
        opts.set_snapshot(&self.snapshot);
        opts
    }

    /// Count and fingerprint of the messages at positions `lower ..= upper` in `scope`.
    pub fn summarize(
        &self,
        lower: Position,
        upper: Position,
        scope: RangeScope<'_>,
    ) -> Result<RangeSummary, StoreError> {
        // Far enough from i64::MIN that bucket arithmetic cannot overflow (no message is that
        // old: the store refuses timestamps of 0 and below).
        let floor = Position::at(i64::MIN + BUCKET_NANOS);
        let lower = lower.max(self.archive.cutoff()).max(floor);
        let upper = upper.max(floor);
        let mut summary = RangeSummary::default();
        if upper < lower {
            return Ok(summary);
        }
        // Whole buckets [first, last) come from the index; content topics are not indexed.
        let first = {
            let b = keys::bucket_of(lower.ts);
            if lower == Position::at(b) {
                b
            } else {
                b.saturating_add(BUCKET_NANOS)
            }
        };
        let last = keys::bucket_of(upper.ts);
        if !scope.content_topics.is_empty() || first >= last {
            self.scan(lower, upper, scope, |p| summary.add(&p.hash))?;
            return Ok(summary);
        }
        self.scan(lower, Position::at(first), scope, |p| {
            // The scan is inclusive; the bucket's first position belongs to the index part.
            if p < Position::at(first) {
                summary.add(&p.hash)
            }
        })?;
        self.add_buckets(first, last, scope, &mut summary)?;
        self.scan(Position::at(last), upper, scope, |p| summary.add(&p.hash))?;
        Ok(summary)
    }

    /// The positions `lower ..= upper` in `scope`, ascending.
    pub fn ids(
        &self,
        lower: Position,
        upper: Position,
        scope: RangeScope<'_>,
    ) -> Result<Vec<Position>, StoreError> {
        let mut ids = Vec::new();
        self.scan(lower.max(self.archive.cutoff()), upper, scope, |p| {
            ids.push(p)
        })?;
        Ok(ids)
    }

    /// Calls `each` for every message at `lower ..= upper` in `scope`.
    fn scan(
        &self,
        lower: Position,
        upper: Position,
        scope: RangeScope<'_>,
        mut each: impl FnMut(Position),
    ) -> Result<(), StoreError> {
        if upper < lower {
            return Ok(());
        }
        let mut opts = self.read_options();
        opts.set_iterate_lower_bound(lower.to_key().to_vec());
        opts.set_iterate_upper_bound(upper.key_after());
        let cf = self.archive.cf(keys::CF_MESSAGES)?;
        let mut iter = self.archive.db.raw_iterator_cf_opt(cf, opts);
        iter.seek_to_first();
        let unscoped = scope.unscoped();
        while let Some(key) = iter.key() {
            if let Some(position) = Position::from_key(key) {
                if unscoped || iter.value().is_some_and(|v| scope.admits_record(v)) {
                    each(position);
                }
            }
            iter.next();
        }
        iter.status().map_err(|e| StoreError::Read(db_error(e)))
    }

    /// Adds the indexed buckets `first .. last` (bucket starts) in `scope` to `summary`.
    fn add_buckets(
        &self,
        first: i64,
        last: i64,
        scope: RangeScope<'_>,
        summary: &mut RangeSummary,
    ) -> Result<(), StoreError> {
        for (family, is_count) in [(keys::CF_STATS, true), (keys::CF_FINGERPRINTS, false)] {
            let mut opts = self.read_options();
            opts.set_iterate_lower_bound(keys::encode_ts(first).to_vec());
            opts.set_iterate_upper_bound(keys::encode_ts(last).to_vec());
            let cf = self.archive.cf(family)?;
            let mut iter = self.archive.db.raw_iterator_cf_opt(cf, opts);
            iter.seek_to_first();
            while let (Some(key), Some(value)) = (iter.key(), iter.value()) {
                let (_, topic) = keys::decode_stats_key(key).ok_or_else(|| {
                    StoreError::Corrupt(format!("a key of the `{family}` family is malformed"))
                })?;
                if scope.admits_pubsub(topic) {
                    if is_count {
                        let (count, _) = keys::decode_stats_value(value).ok_or_else(|| {
                            StoreError::Corrupt("a stats value of the archive is malformed".into())
                        })?;
                        summary.count += count;
                    } else {
                        let xor = <&[u8; 32]>::try_from(value).map_err(|_| {
                            StoreError::Corrupt(
                                "a fingerprint of the archive is not 32 bytes".into(),
                            )
                        })?;
                        keys::xor_into(&mut summary.fingerprint, xor);
                    }
                }
                iter.next();
            }
            iter.status().map_err(|e| StoreError::Read(db_error(e)))?;
        }
        Ok(())
    }
}
