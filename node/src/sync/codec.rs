//! Store sync's wire formats, as nwaku writes them (logos-delivery `waku_store_sync/codec.nim`),
//! which differ from the spec text in places; where they do, nwaku's bytes win, since that is
//! what a fleet's other store nodes speak.
//!
//! Reconciliation payload (one varint length-prefixed frame per round):
//!
//! ```text
//! payload  = 0x00                                   (no ranges: "done")
//!          | topics(pubsub) topics(content) leb128(first lower ts) range*
//! topics   = leb128(n) (leb128(len) bytes)*
//! range    = leb128(ts delta) [hash prefix if delta = 0] kind
//! prefix   = u8(n) n bytes                           (n = common length + 1 with the first
//!                                                     range's lower hash, at most 32)
//! kind     = 0x00 (skip) | 0x01 fingerprint(32) | 0x02 leb128(count) item* u8(reconciled)
//! item     = leb128(ts delta from the previous item, the first from 0) hash(32)
//! ```
//!
//! Ranges are contiguous: each one's lower bound is the previous one's upper bound, the
//! first one's is explicit. On decoding, a lower bound always has a zero hash (nwaku's
//! decoder keeps only the timestamp), and so do upper bounds written without a prefix.
//! Bounds are inclusive at both ends. Timestamps are i64 nanoseconds written as their u64
//! bit pattern; deltas wrap.
//!
//! Transfer (`/vac/waku/transfer/1.0.0`): a stream of varint length-prefixed protobufs
//! `{ string pubsub_topic = 1; bytes message = 2; }` (nwaku's field order, the spec's is the
//! reverse), one per message, until the sender closes the stream.

use crate::store::keys::Position;

pub const RECONCILIATION_PROTOCOL: &str = "/vac/waku/reconciliation/1.0.0";
pub const TRANSFER_PROTOCOL: &str = "/vac/waku/transfer/1.0.0";

/// XOR of the message hashes of a range.
pub type Fingerprint = [u8; 32];

/// A bound of a range: (timestamp, message hash), ordered as the archive is.
pub type SyncId = Position;

/// The highest id: nwaku's `SyncID.high` (the upper bound of a first range).
pub const FULL_HASH: [u8; 32] = [0xff; 32];

/// The ids of a range, sent so the other side can compute both differences.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemSet {
    /// Ascending.
    pub elements: Vec<SyncId>,
    /// The sender already compared this range with the receiver's ids: nothing needs to come
    /// back but messages.
    pub reconciled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeKind {
    /// Nothing to do here (equal, or settled).
    Skip,
    /// The sender's fingerprint of the range.
    Fingerprint(Fingerprint),
    ItemSet(ItemSet),
}

impl RangeKind {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            RangeKind::Skip => "skip",
            RangeKind::Fingerprint(_) => "fingerprint",
            RangeKind::ItemSet(_) => "item_set",
        }
    }

    fn tag(&self) -> u8 {
        match self {
            RangeKind::Skip => 0,
            RangeKind::Fingerprint(_) => 1,
            RangeKind::ItemSet(_) => 2,
        }
    }
}

/// One range of a payload: every id `lower <= id <= upper`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub lower: SyncId,
    pub upper: SyncId,
    pub kind: RangeKind,
}

/// One round of reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Payload {
    /// Pubsub topics the ranges cover (empty: all).
    pub pubsub_topics: Vec<String>,
    /// Content topics the ranges cover (empty: all).
    pub content_topics: Vec<String>,
    pub ranges: Vec<Range>,
}

impl Payload {
    /// Nothing left to reconcile: no ranges, or only skips (the session ends).
    pub fn is_done(&self) -> bool {
        self.ranges.iter().all(|r| r.kind == RangeKind::Skip)
    }
}

/// Why a reconciliation payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("reconciliation payload truncated while reading {0}")]
    Truncated(&'static str),
    #[error("reconciliation payload has a varint longer than 64 bits")]
    Varint,
    #[error("reconciliation payload has unknown range type {0}")]
    RangeType(u8),
    #[error("reconciliation payload has reconciled flag {0} (0 or 1 expected)")]
    Reconciled(u8),
    #[error("reconciliation payload has a topic that is not UTF-8")]
    Topic,
    #[error("reconciliation payload has a hash prefix of {0} bytes (at most 32)")]
    Prefix(u8),
    #[error("reconciliation payload declares {0} items, more than it can hold")]
    ItemCount(u64),
}

/// Unsigned LEB128, the same varint the request/response framing uses.
fn put_varint(out: &mut Vec<u8>, value: u64) {
    crate::reqres::encode_varint(value, out);
}

/// Encodes a payload exactly as nwaku's `deltaEncode` does.
pub fn encode(payload: &Payload) -> Vec<u8> {
    let Some(first) = payload.ranges.first() else {
        return vec![0];
    };
    let mut out = Vec::with_capacity(256);
    for topics in [&payload.pubsub_topics, &payload.content_topics] {
        put_varint(&mut out, topics.len() as u64);
        for topic in topics {
            put_varint(&mut out, topic.len() as u64);
            out.extend_from_slice(topic.as_bytes());
        }
    }
    let mut last_ts = first.lower.ts;
    // nwaku compares every equal-time upper bound with the *first* lower bound's hash.
    let prefix_base = first.lower.hash;
    put_varint(&mut out, last_ts as u64);
    for range in &payload.ranges {
        let delta = (range.upper.ts as u64).wrapping_sub(last_ts as u64);
        last_ts = range.upper.ts;
        put_varint(&mut out, delta);
        if delta == 0 {
            let same = prefix_base
                .iter()
                .zip(range.upper.hash.iter())
                .position(|(a, b)| a != b)
                .map_or(32, |i| i + 1);
            out.push(same as u8);
            out.extend_from_slice(&range.upper.hash[..same]);
        }
        out.push(range.kind.tag());
        match &range.kind {
            RangeKind::Skip => {}
            RangeKind::Fingerprint(fingerprint) => out.extend_from_slice(fingerprint),
            RangeKind::ItemSet(set) => {
                put_varint(&mut out, set.elements.len() as u64);
                let mut last = 0u64;
                for id in &set.elements {
                    put_varint(&mut out, (id.ts as u64).wrapping_sub(last));
                    last = id.ts as u64;
                    out.extend_from_slice(&id.hash);
                }
                out.push(u8::from(set.reconciled));
            }
        }
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.at)
                .ok_or(DecodeError::Truncated(what))?;
            self.at += 1;
            if shift == 63 && byte > 1 {
                return Err(DecodeError::Varint);
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Varint)
    }

    fn byte(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or(DecodeError::Truncated(what))?;
        self.at += 1;
        Ok(byte)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(DecodeError::Truncated(what))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn hash(&mut self, what: &'static str) -> Result<[u8; 32], DecodeError> {
        let mut hash = [0u8; 32];
        hash.copy_from_slice(self.take(32, what)?);
        Ok(hash)
    }

    fn topics(&mut self) -> Result<Vec<String>, DecodeError> {
        let count = self.varint("a topic count")?;
        // Each topic takes at least its length byte.
        if count > self.remaining() as u64 {
            return Err(DecodeError::Truncated("topics"));
        }
        let mut topics = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = self.varint("a topic length")?;
            let len = usize::try_from(len).map_err(|_| DecodeError::Truncated("a topic"))?;
            let bytes = self.take(len, "a topic")?;
            let topic = std::str::from_utf8(bytes).map_err(|_| DecodeError::Topic)?;
            topics.push(topic.to_owned());
        }
        Ok(topics)
    }
}

/// Decodes a payload as nwaku's `deltaDecode` does; a payload of at most one byte has no
/// ranges.
pub fn decode(bytes: &[u8]) -> Result<Payload, DecodeError> {
    if bytes.len() <= 1 {
        return Ok(Payload::default());
    }
    let mut r = Reader { bytes, at: 0 };
    let pubsub_topics = r.topics()?;
    let content_topics = r.topics()?;
    let mut last_ts = r.varint("the first timestamp")? as i64;
    let mut ranges = Vec::new();
    // nwaku reads ranges while at least two bytes remain (a range takes two at least).
    while r.remaining() > 1 {
        let lower = Position::at(last_ts);
        let delta = r.varint("a range bound")?;
        let mut hash = [0u8; 32];
        if delta == 0 {
            let n = r.byte("a hash prefix length")?;
            if n > 32 {
                return Err(DecodeError::Prefix(n));
            }
            hash[..n as usize].copy_from_slice(r.take(n as usize, "a hash prefix")?);
        }
        last_ts = (last_ts as u64).wrapping_add(delta) as i64;
        let upper = Position { ts: last_ts, hash };
        let kind = match r.byte("a range type")? {
            0 => RangeKind::Skip,
            1 => RangeKind::Fingerprint(r.hash("a fingerprint")?),
            2 => {
                let count = r.varint("an item count")?;
                // Each item takes 33 bytes at least.
                if count > (r.remaining() / 33) as u64 {
                    return Err(DecodeError::ItemCount(count));
                }
                let mut elements = Vec::with_capacity(count as usize);
                let mut last = 0u64;
                for _ in 0..count {
                    last = last.wrapping_add(r.varint("an item timestamp")?);
                    elements.push(Position {
                        ts: last as i64,
                        hash: r.hash("an item hash")?,
                    });
                }
                let reconciled = match r.byte("a reconciled flag")? {
                    0 => false,
                    1 => true,
                    other => return Err(DecodeError::Reconciled(other)),
                };
                RangeKind::ItemSet(ItemSet {
                    elements,
                    reconciled,
                })
            }
            other => return Err(DecodeError::RangeType(other)),
        };
        ranges.push(Range { lower, upper, kind });
    }
    Ok(Payload {
        pubsub_topics,
        content_topics,
        ranges,
    })
}

/// One message of the transfer protocol.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MessageAndTopic {
    #[prost(string, tag = "1")]
    pub pubsub_topic: String,
    /// The encoded WakuMessage, as archived (its hash is over these fields).
    #[prost(bytes = "vec", tag = "2")]
    pub message: Vec<u8>,
}

#[cfg(test)]
mod tests;
