//! Key and value layouts of the archive's column families. Every layout sorts by
//! (timestamp, message hash), the order store v3 pages in, so each query is one seek and a
//! short walk, and the oldest data sits at the front of the time-ordered family where retention
//! drops it with one range delete.
//!
//! | family | key | value |
//! |---|---|---|
//! | `messages` | ts(8) ‖ hash(32) | record: 1 ‖ u16 topic len ‖ pubsub topic ‖ WakuMessage bytes |
//! | `hashes` | hash(32) | ts(8) |
//! | `topics` | u16 len ‖ pubsub ‖ u32 len ‖ content topic ‖ ts(8) ‖ hash(32) | empty |
//! | `stats` | bucket ts(8) ‖ pubsub topic | count u64 ‖ bytes u64 |
//! | `fingerprints` | bucket ts(8) ‖ pubsub topic | XOR of the bucket's message hashes (32) |
//! | `meta` | `cutoff` | ts(8) ‖ hash(32): everything before it is deleted |
//! | `meta` | `fingerprints` | `1`: the `fingerprints` family covers every message |
//!
//! Timestamps are written big-endian with the sign bit flipped, so byte order is numeric order.
//! Length prefixes make topic prefixes prefix-free: one (pubsub, content) pair is one range.

use crate::message::MessageHash;

pub const CF_MESSAGES: &str = "messages";
pub const CF_HASHES: &str = "hashes";
pub const CF_TOPICS: &str = "topics";
pub const CF_STATS: &str = "stats";
pub const CF_META: &str = "meta";
/// Store sync's index: XOR fingerprints per stats bucket, updated with a merge operator (XOR
/// is associative and its own inverse, so a write merges a message's hash in and a retention
/// cut merges it out without reading anything).
pub const CF_FINGERPRINTS: &str = "fingerprints";
pub const COLUMN_FAMILIES: [&str; 6] = [
    CF_MESSAGES,
    CF_HASHES,
    CF_TOPICS,
    CF_STATS,
    CF_META,
    CF_FINGERPRINTS,
];

pub const META_CUTOFF: &[u8] = b"cutoff";
/// Set once the `fingerprints` family covers the whole archive (archives written before it
/// existed are indexed once at open).
pub const META_FINGERPRINTS: &[u8] = b"fingerprints";

/// XORs `other` into `acc`.
pub fn xor_into(acc: &mut [u8; 32], other: &[u8; 32]) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a ^= b;
    }
}

/// Record format version, the first byte of every `messages` value.
const RECORD_VERSION: u8 = 1;

/// Width of the time buckets the per-topic counts are kept in: the precision of the `time:`
/// rule (it deletes whole buckets, so nothing is read to count what it deletes) and the most
/// a `capacity:`/`size:` cut reads to find its exact place. 2 days are 17,280 buckets.
pub const BUCKET_NANOS: i64 = 10 * 1_000_000_000;

/// A place in the archive's sort order: (timestamp, hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub ts: i64,
    pub hash: [u8; 32],
}

impl Position {
    /// Before every message.
    pub const MIN: Position = Position {
        ts: i64::MIN,
        hash: [0; 32],
    };

    /// The first position at timestamp `ts`.
    pub fn at(ts: i64) -> Position {
        Position { ts, hash: [0; 32] }
    }

    pub fn new(ts: i64, hash: &MessageHash) -> Position {
        Position { ts, hash: hash.0 }
    }

    pub fn message_hash(&self) -> MessageHash {
        MessageHash(self.hash)
    }

    /// The 40-byte key form (also the `messages` key).
    pub fn to_key(&self) -> [u8; 40] {
        let mut key = [0u8; 40];
        key[..8].copy_from_slice(&encode_ts(self.ts));
        key[8..].copy_from_slice(&self.hash);
        key
    }

    /// Parses the 40-byte key form.
    pub fn from_key(key: &[u8]) -> Option<Position> {
        if key.len() != 40 {
            return None;
        }
        let ts = decode_ts(key.get(..8)?)?;
        let hash: [u8; 32] = key.get(8..40)?.try_into().ok()?;
        Some(Position { ts, hash })
    }

    /// Parses the position at the end of a `topics` key.
    pub fn from_key_suffix(key: &[u8]) -> Option<Position> {
        let start = key.len().checked_sub(40)?;
        Position::from_key(key.get(start..)?)
    }

    /// The smallest key strictly after this position (exclusive-cursor bound).
    pub fn key_after(&self) -> Vec<u8> {
        let mut key = self.to_key().to_vec();
        key.push(0);
        key
    }
}

pub fn encode_ts(ts: i64) -> [u8; 8] {
    ((ts as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_ts(bytes: &[u8]) -> Option<i64> {
    let raw: [u8; 8] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(raw) ^ (1 << 63)) as i64)
}

/// The bucket a timestamp falls in (its start).
pub fn bucket_of(ts: i64) -> i64 {
    ts.div_euclid(BUCKET_NANOS) * BUCKET_NANOS
}

/// The `topics` key prefix of one (pubsub topic, content topic) pair.
pub fn topic_prefix(pubsub_topic: &str, content_topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(6 + pubsub_topic.len() + content_topic.len() + 40);
    // Pubsub topics are the node's shard topics (short) and content topics are bounded by the
    // message size, so the casts cannot truncate: ingest refuses longer ones.
    key.extend_from_slice(&(pubsub_topic.len() as u16).to_be_bytes());
    key.extend_from_slice(pubsub_topic.as_bytes());
    key.extend_from_slice(&(content_topic.len() as u32).to_be_bytes());
    key.extend_from_slice(content_topic.as_bytes());
    key
}

/// The full `topics` key of one message.
pub fn topic_key(pubsub_topic: &str, content_topic: &str, position: &Position) -> Vec<u8> {
    let mut key = topic_prefix(pubsub_topic, content_topic);
    key.extend_from_slice(&position.to_key());
    key
}

/// Longest pubsub topic the key layout takes.
pub const MAX_PUBSUB_TOPIC_LEN: usize = u16::MAX as usize;

/// A `messages` value.
pub fn encode_record(pubsub_topic: &str, message: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(3 + pubsub_topic.len() + message.len());
    value.push(RECORD_VERSION);
    value.extend_from_slice(&(pubsub_topic.len() as u16).to_be_bytes());
    value.extend_from_slice(pubsub_topic.as_bytes());
    value.extend_from_slice(message);
    value
}

/// Splits a `messages` value into (pubsub topic, encoded WakuMessage).
pub fn decode_record(value: &[u8]) -> Option<(&str, &[u8])> {
    let (&version, rest) = value.split_first()?;
    if version != RECORD_VERSION {
        return None;
    }
    let len = u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(rest.get(2..2 + len)?).ok()?;
    Some((topic, rest.get(2 + len..)?))
}

/// Bytes one message occupies across the families before compression: what the `size:` and
/// stats accounting count.
pub fn entry_bytes(pubsub_topic_len: usize, content_topic_len: usize, record_len: usize) -> u64 {
    let messages = 40 + record_len;
    let hashes = 32 + 8;
    let topics = 6 + pubsub_topic_len + content_topic_len + 40;
    (messages + hashes + topics) as u64
}

/// A `stats` key.
pub fn stats_key(bucket: i64, pubsub_topic: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + pubsub_topic.len());
    key.extend_from_slice(&encode_ts(bucket));
    key.extend_from_slice(pubsub_topic.as_bytes());
    key
}

pub fn decode_stats_key(key: &[u8]) -> Option<(i64, &str)> {
    let bucket = decode_ts(key.get(..8)?)?;
    let topic = std::str::from_utf8(key.get(8..)?).ok()?;
    Some((bucket, topic))
}

pub fn stats_value(count: u64, bytes: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&count.to_be_bytes());
    v[8..].copy_from_slice(&bytes.to_be_bytes());
    v
}

pub fn decode_stats_value(value: &[u8]) -> Option<(u64, u64)> {
    let count = u64::from_be_bytes(value.get(..8)?.try_into().ok()?);
    let bytes = u64::from_be_bytes(value.get(8..16)?.try_into().ok()?);
    Some((count, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_sort_numerically_as_bytes() {
        let values = [i64::MIN, -5, -1, 0, 1, 1_700_000_000_000_000_000, i64::MAX];
        for pair in values.windows(2) {
            assert!(encode_ts(pair[0]) < encode_ts(pair[1]), "{pair:?}");
        }
        for v in values {
            assert_eq!(decode_ts(&encode_ts(v)), Some(v));
        }
    }

    #[test]
    fn positions_order_by_time_then_hash_in_both_forms() {
        let a = Position {
            ts: 10,
            hash: [9; 32],
        };
        let b = Position {
            ts: 11,
            hash: [0; 32],
        };
        let c = Position {
            ts: 11,
            hash: [1; 32],
        };
        assert!(a < b && b < c);
        assert!(a.to_key() < b.to_key() && b.to_key() < c.to_key());
        assert_eq!(Position::from_key(&c.to_key()), Some(c));
        // key_after excludes the position itself and nothing else.
        assert!(b.key_after().as_slice() > b.to_key().as_slice());
        assert!(b.key_after().as_slice() < c.to_key().as_slice());
    }

    #[test]
    fn topic_prefixes_are_prefix_free() {
        // Without length prefixes "/a" + "b/c" and "/ab" + "/c" would share a prefix.
        let p1 = topic_prefix("/a", "b/c");
        let p2 = topic_prefix("/ab", "/c");
        assert!(!p1.starts_with(&p2) && !p2.starts_with(&p1));
        let pos = Position::at(5);
        let key = topic_key("/t", "/c/1/x/proto", &pos);
        assert_eq!(Position::from_key_suffix(&key), Some(pos));
    }

    #[test]
    fn records_round_trip() {
        let value = encode_record("/waku/2/rs/1/0", b"\x0a\x00");
        assert_eq!(
            decode_record(&value),
            Some(("/waku/2/rs/1/0", &b"\x0a\x00"[..]))
        );
        assert_eq!(decode_record(b""), None);
        assert_eq!(decode_record(b"\x02\x00\x00"), None);
    }

    #[test]
    fn buckets_floor_timestamps() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(BUCKET_NANOS - 1), 0);
        assert_eq!(bucket_of(BUCKET_NANOS), BUCKET_NANOS);
        assert_eq!(bucket_of(-1), -BUCKET_NANOS);
        let key = stats_key(BUCKET_NANOS, "/t");
        assert_eq!(decode_stats_key(&key), Some((BUCKET_NANOS, "/t")));
        assert_eq!(decode_stats_value(&stats_value(3, 4)), Some((3, 4)));
    }
}
