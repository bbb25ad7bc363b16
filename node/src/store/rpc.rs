//! Store v3 wire format (13/WAKU2-STORE, `/vac/waku/store-query/3.0.0`) and the checks that
//! turn a request into a [`Query`] or a 400 with a description.
//!
//! nwaku requires `request_id`, `status_code` and `status_desc` on the wire even when empty
//! (waku.md §0.1), so they are `optional` here and always set when encoding.
//! `WakuMessageKeyValue.message` is carried as raw bytes: the archive stores the encoded
//! WakuMessage and sends it back without decoding it (same wire form as the nested message).

use std::collections::{BTreeSet, HashSet};

use prost::Message as _;

use crate::message::{MessageHash, WakuMessage};

pub const PROTOCOL_ID: libp2p::StreamProtocol =
    libp2p::StreamProtocol::new("/vac/waku/store-query/3.0.0");

/// Page size when the request names none (nwaku `DefaultPageSize`).
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Largest page served (nwaku `MaxPageSize`); larger requests are capped.
pub const MAX_PAGE_SIZE: usize = 100;
/// Most content topics in one query (nwaku `MaxContentTopicsPerQuery`), on every page.
pub const MAX_CONTENT_TOPICS: usize = 10;
/// Most hashes in one lookup query.
pub const MAX_HASHES: usize = 100;
/// Largest request decoded; a store query is a few topics or hashes, never near this.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest request frame read at all: beyond it the stream is reset unread (a peer cannot
/// make the node buffer more); between the two the request gets a 400.
pub const MAX_REQUEST_FRAME: usize = 1024 * 1024;
/// A page stops early (with a cursor) once its messages pass this many bytes.
pub const MAX_RESPONSE_BYTES: usize = 32 * 1024 * 1024;
/// Largest response frame a client reads: the server budget plus one large message.
pub const MAX_RESPONSE_FRAME: usize = 64 * 1024 * 1024;

/// Status codes (nwaku `StatusCode`).
pub const STATUS_OK: u32 = 200;
pub const STATUS_BAD_REQUEST: u32 = 400;
pub const STATUS_TOO_MANY_REQUESTS: u32 = 429;
pub const STATUS_SERVICE_UNAVAILABLE: u32 = 503;

/// `request_id` used when the request's own could not be read (nwaku and go-waku use "N/A").
pub const UNKNOWN_REQUEST_ID: &str = "N/A";

#[derive(Clone, PartialEq, prost::Message)]
pub struct WakuMessageKeyValue {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub message_hash: Option<Vec<u8>>,
    /// An encoded WakuMessage.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub message: Option<Vec<u8>>,
    #[prost(string, optional, tag = "3")]
    pub pubsub_topic: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoreQueryRequest {
    #[prost(string, optional, tag = "1")]
    pub request_id: Option<String>,
    #[prost(bool, tag = "2")]
    pub include_data: bool,
    #[prost(string, optional, tag = "10")]
    pub pubsub_topic: Option<String>,
    #[prost(string, repeated, tag = "11")]
    pub content_topics: Vec<String>,
    #[prost(sint64, optional, tag = "12")]
    pub time_start: Option<i64>,
    #[prost(sint64, optional, tag = "13")]
    pub time_end: Option<i64>,
    #[prost(bytes = "vec", repeated, tag = "20")]
    pub message_hashes: Vec<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "51")]
    pub pagination_cursor: Option<Vec<u8>>,
    #[prost(bool, tag = "52")]
    pub pagination_forward: bool,
    #[prost(uint64, optional, tag = "53")]
    pub pagination_limit: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StoreQueryResponse {
    #[prost(string, optional, tag = "1")]
    pub request_id: Option<String>,
    #[prost(uint32, optional, tag = "10")]
    pub status_code: Option<u32>,
    #[prost(string, optional, tag = "11")]
    pub status_desc: Option<String>,
    #[prost(message, repeated, tag = "20")]
    pub messages: Vec<WakuMessageKeyValue>,
    #[prost(bytes = "vec", optional, tag = "51")]
    pub pagination_cursor: Option<Vec<u8>>,
}

/// Just the request id, to echo it even when the rest of a request is malformed.
#[derive(Clone, PartialEq, prost::Message)]
struct RequestIdOnly {
    #[prost(string, optional, tag = "1")]
    request_id: Option<String>,
}

impl StoreQueryResponse {
    /// An error response.
    pub fn error(request_id: impl Into<String>, code: u32, desc: impl Into<String>) -> Self {
        StoreQueryResponse {
            request_id: Some(request_id.into()),
            status_code: Some(code),
            status_desc: Some(desc.into()),
            messages: Vec::new(),
            pagination_cursor: None,
        }
    }

    pub fn code(&self) -> u32 {
        self.status_code.unwrap_or(0)
    }

    pub fn desc(&self) -> &str {
        self.status_desc.as_deref().unwrap_or("")
    }

    pub fn cursor(&self) -> Option<MessageHash> {
        self.pagination_cursor
            .as_deref()
            .and_then(MessageHash::from_slice)
    }
}

/// What a query selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Messages on one of `pubsub_topics` with one of `content_topics` (sorted,
    /// deduplicated).
    Content {
        pubsub_topics: Vec<String>,
        content_topics: Vec<String>,
        time_start: Option<i64>,
        time_end: Option<i64>,
    },
    /// Every message (on `pubsub_topic`, when given), optionally within a time range.
    All {
        pubsub_topic: Option<String>,
        time_start: Option<i64>,
        time_end: Option<i64>,
    },
    /// The messages with these hashes (deduplicated), narrowed by `scope`.
    Hashes {
        hashes: Vec<MessageHash>,
        scope: LookupScope,
    },
}

impl Filter {
    /// A hash lookup with nothing else to match.
    pub fn hashes(hashes: Vec<MessageHash>) -> Filter {
        Filter::Hashes {
            hashes,
            scope: LookupScope::default(),
        }
    }
}

/// A query on a pubsub topic this node does not archive matches nothing: an empty page and
/// 200, as the store spec's matching rules give and nwaku answers (the Waku interop suite
/// asks `pubsubTopic=test` and expects that). Logged, so an operator can see clients asking
/// the wrong node.
fn nothing_archived(pubsub_topic: &str, served: &BTreeSet<String>) -> Filter {
    tracing::debug!(
        pubsub_topic,
        archived = ?served,
        "store query on a pubsub topic this node does not archive: no messages"
    );
    Filter::Content {
        pubsub_topics: Vec::new(),
        content_topics: Vec::new(),
        time_start: None,
        time_end: None,
    }
}

/// What a hash lookup is narrowed to. Every criterion that is set must match, as nwaku's
/// archive ANDs every clause of a query; a hash outside the scope is simply not returned.
///
/// Real clients depend on it: js-waku's `store.queryGenerator([decoder], { messageHashes })`
/// always sends the decoder's `pubsub_topic` with the hashes (and no content topics).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LookupScope {
    pub pubsub_topic: Option<String>,
    /// Sorted, deduplicated; empty = any.
    pub content_topics: Vec<String>,
    /// Inclusive, in nanoseconds.
    pub time_start: Option<i64>,
    /// Exclusive, in nanoseconds.
    pub time_end: Option<i64>,
}

impl LookupScope {
    /// Whether the scope needs each message's record (its topics) to decide.
    pub fn needs_record(&self) -> bool {
        self.pubsub_topic.is_some() || !self.content_topics.is_empty()
    }

    /// Whether a message at `timestamp` is inside the time range.
    pub fn admits_time(&self, timestamp: i64) -> bool {
        self.time_start.is_none_or(|start| timestamp >= start)
            && self.time_end.is_none_or(|end| timestamp < end)
    }

    /// Whether a message on `pubsub_topic` with `content_topic` is inside the topic scope.
    pub fn admits_topics(&self, pubsub_topic: &str, content_topic: &str) -> bool {
        self.pubsub_topic
            .as_deref()
            .is_none_or(|want| want == pubsub_topic)
            && (self.content_topics.is_empty()
                || self
                    .content_topics
                    .binary_search_by(|t| t.as_str().cmp(content_topic))
                    .is_ok())
    }
}

/// A validated query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub request_id: String,
    pub include_data: bool,
    pub filter: Filter,
    pub cursor: Option<MessageHash>,
    pub forward: bool,
    /// Page size after defaulting and capping.
    pub limit: usize,
}

impl Query {
    /// Label for metrics: `content`, `time` (no topic filter), `lookup` or `presence`.
    pub fn kind(&self) -> &'static str {
        match (&self.filter, self.include_data) {
            (Filter::Content { .. }, _) => "content",
            (Filter::All { .. }, _) => "time",
            (Filter::Hashes { .. }, true) => "lookup",
            (Filter::Hashes { .. }, false) => "presence",
        }
    }
}

/// A request that gets a 400: the request id to echo and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub request_id: String,
    pub desc: String,
}

/// Decodes and checks one request. `served` are the pubsub topics this node archives.
pub fn parse_request(bytes: &[u8], served: &BTreeSet<String>) -> Result<Query, BadRequest> {
    if bytes.len() > MAX_REQUEST_BYTES {
        return Err(BadRequest {
            request_id: best_effort_request_id(bytes),
            desc: format!(
                "request of {} bytes exceeds the {MAX_REQUEST_BYTES}-byte limit",
                bytes.len()
            ),
        });
    }
    let request = StoreQueryRequest::decode(bytes).map_err(|e| BadRequest {
        request_id: best_effort_request_id(bytes),
        desc: format!("malformed StoreQueryRequest: {e}"),
    })?;
    validate(request, served)
}

/// The request id of a request whose body may be malformed, or "N/A".
pub fn best_effort_request_id(bytes: &[u8]) -> String {
    RequestIdOnly::decode(bytes)
        .ok()
        .and_then(|r| r.request_id)
        .unwrap_or_else(|| UNKNOWN_REQUEST_ID.to_owned())
}

/// Checks a decoded request against the spec's rules and this node's limits.
pub fn validate(
    request: StoreQueryRequest,
    served: &BTreeSet<String>,
) -> Result<Query, BadRequest> {
    let request_id = request.request_id.clone().unwrap_or_default();
    let bad = |desc: String| BadRequest {
        request_id: request_id.clone(),
        desc,
    };
    let cursor = match &request.pagination_cursor {
        None => None,
        Some(bytes) => {
            let hash = MessageHash::from_slice(bytes).ok_or_else(|| {
                bad(format!(
                    "pagination_cursor must be a 32-byte message hash, got {} bytes",
                    bytes.len()
                ))
            })?;
            if hash.0 == [0; 32] {
                return Err(bad(
                    "pagination_cursor is all zeroes, not a message hash".into()
                ));
            }
            Some(hash)
        }
    };
    let limit = match request.pagination_limit {
        None | Some(0) => DEFAULT_PAGE_SIZE,
        Some(n) => usize::try_from(n)
            .unwrap_or(MAX_PAGE_SIZE)
            .min(MAX_PAGE_SIZE),
    };
    if let (Some(start), Some(end)) = (request.time_start, request.time_end) {
        if start > end {
            return Err(bad(format!("time_start {start} is after time_end {end}")));
        }
    }
    let filter = if !request.message_hashes.is_empty() {
        // A hash lookup may be narrowed by any of the content-filter fields (nwaku ANDs
        // them all); js-waku always sends its decoder's pubsub topic along.
        if request.message_hashes.len() > MAX_HASHES {
            return Err(bad(format!(
                "{} message_hashes in one query; the limit is {MAX_HASHES}",
                request.message_hashes.len()
            )));
        }
        let mut seen = HashSet::new();
        let mut hashes = Vec::with_capacity(request.message_hashes.len());
        for (i, bytes) in request.message_hashes.iter().enumerate() {
            let hash = MessageHash::from_slice(bytes).ok_or_else(|| {
                bad(format!(
                    "message_hashes[{i}] must be 32 bytes, got {}",
                    bytes.len()
                ))
            })?;
            if seen.insert(hash) {
                hashes.push(hash);
            }
        }
        let content_topics = content_topic_set(&request.content_topics).map_err(bad)?;
        Filter::Hashes {
            hashes,
            scope: LookupScope {
                pubsub_topic: request.pubsub_topic.clone(),
                content_topics,
                time_start: request.time_start,
                time_end: request.time_end,
            },
        }
    } else {
        match (&request.pubsub_topic, request.content_topics.is_empty()) {
            (None, true) => Filter::All {
                pubsub_topic: None,
                time_start: request.time_start,
                time_end: request.time_end,
            },
            // A pubsub topic alone: everything on it. The store v3 spec pairs the two, but
            // nwaku answers this and the Waku interop suite and operators' tools ask it.
            (Some(pubsub_topic), _) if !served.contains(pubsub_topic) => {
                content_topic_set(&request.content_topics).map_err(bad)?;
                nothing_archived(pubsub_topic, served)
            }
            (Some(pubsub_topic), true) => {
                Filter::All {
                    // With one archived topic there is nothing to narrow.
                    pubsub_topic: (served.len() > 1).then(|| pubsub_topic.clone()),
                    time_start: request.time_start,
                    time_end: request.time_end,
                }
            }
            // Content topics alone: on every archived pubsub topic (nwaku's archive filters
            // by content topic alone then; the Waku interop suite asks it).
            (None, false) => Filter::Content {
                pubsub_topics: served.iter().cloned().collect(),
                content_topics: content_topic_set(&request.content_topics).map_err(bad)?,
                time_start: request.time_start,
                time_end: request.time_end,
            },
            (Some(pubsub_topic), false) => Filter::Content {
                pubsub_topics: vec![pubsub_topic.clone()],
                content_topics: content_topic_set(&request.content_topics).map_err(bad)?,
                time_start: request.time_start,
                time_end: request.time_end,
            },
        }
    };
    Ok(Query {
        request_id,
        include_data: request.include_data,
        filter,
        cursor,
        forward: request.pagination_forward,
        limit,
    })
}

/// Sorted, deduplicated content topics, at most [`MAX_CONTENT_TOPICS`] of them.
fn content_topic_set(topics: &[String]) -> Result<Vec<String>, String> {
    let topics: BTreeSet<&String> = topics.iter().collect();
    if topics.len() > MAX_CONTENT_TOPICS {
        return Err(format!(
            "{} content topics in one query; the limit is {MAX_CONTENT_TOPICS}",
            topics.len()
        ));
    }
    Ok(topics.into_iter().cloned().collect())
}

/// Builds requests on the client side.
impl StoreQueryRequest {
    pub fn new(request_id: impl Into<String>) -> Self {
        StoreQueryRequest {
            request_id: Some(request_id.into()),
            include_data: true,
            pubsub_topic: None,
            content_topics: Vec::new(),
            time_start: None,
            time_end: None,
            message_hashes: Vec::new(),
            pagination_cursor: None,
            pagination_forward: false,
            pagination_limit: None,
        }
    }

    pub fn content(
        mut self,
        pubsub_topic: impl Into<String>,
        content_topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.pubsub_topic = Some(pubsub_topic.into());
        self.content_topics = content_topics.into_iter().map(Into::into).collect();
        self
    }

    pub fn time_range(mut self, start: Option<i64>, end: Option<i64>) -> Self {
        self.time_start = start;
        self.time_end = end;
        self
    }

    pub fn hashes(mut self, hashes: impl IntoIterator<Item = MessageHash>) -> Self {
        self.message_hashes = hashes.into_iter().map(|h| h.0.to_vec()).collect();
        self
    }

    pub fn include_data(mut self, include: bool) -> Self {
        self.include_data = include;
        self
    }

    pub fn forward(mut self, forward: bool) -> Self {
        self.pagination_forward = forward;
        self
    }

    pub fn limit(mut self, limit: u64) -> Self {
        self.pagination_limit = Some(limit);
        self
    }

    pub fn cursor(mut self, cursor: Option<MessageHash>) -> Self {
        self.pagination_cursor = cursor.map(|c| c.0.to_vec());
        self
    }
}

/// One entry of a response, decoded on the client side.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub hash: MessageHash,
    /// (pubsub topic, message) when the query asked for data.
    pub data: Option<(String, WakuMessage)>,
}

/// Why a response cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("malformed StoreQueryResponse: {0}")]
    Decode(String),
    #[error("response entry {0} has no valid 32-byte message hash")]
    BadHash(usize),
    #[error("response entry {index} carries a malformed WakuMessage: {error}")]
    BadMessage { index: usize, error: String },
}

impl StoreQueryResponse {
    pub fn decode_bytes(bytes: &[u8]) -> Result<Self, ResponseError> {
        StoreQueryResponse::decode(bytes).map_err(|e| ResponseError::Decode(e.to_string()))
    }

    /// The entries with their messages decoded.
    pub fn entries(&self) -> Result<Vec<Entry>, ResponseError> {
        self.messages
            .iter()
            .enumerate()
            .map(|(index, kv)| {
                let hash = kv
                    .message_hash
                    .as_deref()
                    .and_then(MessageHash::from_slice)
                    .ok_or(ResponseError::BadHash(index))?;
                let data = match (&kv.message, &kv.pubsub_topic) {
                    (Some(bytes), topic) => {
                        let message =
                            WakuMessage::decode(bytes).map_err(|e| ResponseError::BadMessage {
                                index,
                                error: e.to_string(),
                            })?;
                        Some((topic.clone().unwrap_or_default(), message))
                    }
                    (None, _) => None,
                };
                Ok(Entry { hash, data })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> BTreeSet<String> {
        ["/waku/2/rs/1/0".to_owned()].into_iter().collect()
    }

    fn parse(request: StoreQueryRequest) -> Result<Query, BadRequest> {
        parse_request(&request.encode_to_vec(), &served())
    }

    #[test]
    fn defaults_are_backward_20_hashes_only() {
        let mut r = StoreQueryRequest::new("id-1");
        r.include_data = false;
        let q = parse(r).unwrap();
        assert_eq!(q.request_id, "id-1");
        assert_eq!(q.limit, DEFAULT_PAGE_SIZE);
        assert!(!q.forward && !q.include_data);
        assert_eq!(
            q.filter,
            Filter::All {
                pubsub_topic: None,
                time_start: None,
                time_end: None
            }
        );
        let q = parse(StoreQueryRequest::new("x").limit(1000)).unwrap();
        assert_eq!(q.limit, MAX_PAGE_SIZE);
        let q = parse(StoreQueryRequest::new("x").limit(0)).unwrap();
        assert_eq!(q.limit, DEFAULT_PAGE_SIZE);
    }

    #[test]
    fn content_topics_are_deduplicated_and_capped_at_ten() {
        let topics: Vec<String> = (0..10).map(|i| format!("/app/1/t{i}/proto")).collect();
        let mut doubled = topics.clone();
        doubled.extend(topics.clone());
        let q = parse(StoreQueryRequest::new("x").content("/waku/2/rs/1/0", doubled)).unwrap();
        match q.filter {
            Filter::Content { content_topics, .. } => assert_eq!(content_topics.len(), 10),
            other => panic!("{other:?}"),
        }
        let eleven: Vec<String> = (0..11).map(|i| format!("/app/1/t{i}/proto")).collect();
        let e = parse(StoreQueryRequest::new("x").content("/waku/2/rs/1/0", eleven)).unwrap_err();
        assert_eq!(e.request_id, "x");
        assert!(e.desc.contains("limit is 10"), "{}", e.desc);
    }

    /// What js-waku's `queryGenerator([decoder], { messageHashes })` sends: the hashes with the
    /// decoder's pubsub topic and no content topics. Any content-filter field narrows a hash
    /// lookup (nwaku ANDs them), and a pubsub topic this node does not archive just matches
    /// nothing.
    #[test]
    fn hash_lookups_take_content_filter_fields_as_a_scope() {
        let hash = MessageHash([7; 32]);
        let mut r = StoreQueryRequest::new("js").hashes([hash]);
        r.pubsub_topic = Some("/waku/2/rs/1/0".into());
        let q = parse(r).unwrap();
        assert_eq!(
            q.filter,
            Filter::Hashes {
                hashes: vec![hash],
                scope: LookupScope {
                    pubsub_topic: Some("/waku/2/rs/1/0".into()),
                    ..LookupScope::default()
                }
            }
        );
        let q = parse(
            StoreQueryRequest::new("all")
                .hashes([hash, hash])
                .content("/waku/2/rs/9/9", ["/b/1/c/proto", "/a/1/b/proto"])
                .time_range(Some(1), Some(9)),
        )
        .unwrap();
        let Filter::Hashes { hashes, scope } = q.filter else {
            panic!("a hash lookup")
        };
        assert_eq!(hashes, vec![hash]);
        assert_eq!(scope.pubsub_topic.as_deref(), Some("/waku/2/rs/9/9"));
        assert_eq!(scope.content_topics, vec!["/a/1/b/proto", "/b/1/c/proto"]);
        assert!(scope.needs_record());
        assert!(scope.admits_time(1) && scope.admits_time(8));
        assert!(!scope.admits_time(0) && !scope.admits_time(9));
        assert!(scope.admits_topics("/waku/2/rs/9/9", "/b/1/c/proto"));
        assert!(!scope.admits_topics("/waku/2/rs/9/9", "/z/1/c/proto"));
        assert!(!scope.admits_topics("/waku/2/rs/1/0", "/b/1/c/proto"));
        let open = LookupScope::default();
        assert!(!open.needs_record());
        assert!(open.admits_time(i64::MIN) && open.admits_topics("any", "thing"));
    }

    #[test]
    fn a_pubsub_topic_not_archived_here_matches_nothing() {
        let served: BTreeSet<String> = ["/waku/2/rs/1/0".to_owned()].into();
        for request in [
            StoreQueryRequest::new("a").content("/waku/2/rs/9/9", ["/a/1/b/proto"]),
            {
                let mut r = StoreQueryRequest::new("a");
                r.pubsub_topic = Some("test".into());
                r
            },
        ] {
            let query = parse_request(&request.encode_to_vec(), &served).unwrap();
            assert!(
                matches!(&query.filter, Filter::Content { pubsub_topics, .. } if pubsub_topics.is_empty()),
                "{:?}",
                query.filter
            );
        }
    }

    #[test]
    fn each_bad_request_gets_a_description() {
        let hash = MessageHash([1; 32]);
        let cases: Vec<(StoreQueryRequest, &str)> = vec![
            (
                StoreQueryRequest::new("a").hashes([hash]).content(
                    "/waku/2/rs/1/0",
                    (0..11).map(|i| format!("/a/1/t{i}/proto")),
                ),
                "limit is 10",
            ),
            (
                StoreQueryRequest::new("a")
                    .hashes([hash])
                    .time_range(Some(5), Some(4)),
                "after time_end",
            ),
            (
                {
                    let mut r = StoreQueryRequest::new("a");
                    r.pagination_cursor = Some(vec![1; 31]);
                    r
                },
                "32-byte",
            ),
            (
                StoreQueryRequest::new("a").cursor(Some(MessageHash([0; 32]))),
                "all zeroes",
            ),
            (
                {
                    let mut r = StoreQueryRequest::new("a");
                    r.message_hashes = vec![vec![1; 33]];
                    r
                },
                "must be 32 bytes",
            ),
            (
                StoreQueryRequest::new("a").hashes((0..101u8).map(|i| MessageHash([i; 32]))),
                "limit is 100",
            ),
            (
                StoreQueryRequest::new("a").time_range(Some(10), Some(5)),
                "after time_end",
            ),
        ];
        for (request, needle) in cases {
            let e = parse(request.clone()).unwrap_err();
            assert_eq!(e.request_id, "a", "{request:?}");
            assert!(e.desc.contains(needle), "{request:?}: {}", e.desc);
        }
    }

    #[test]
    fn malformed_and_oversize_requests_echo_what_they_can() {
        let e = parse_request(&[0xff, 0xff, 0xff], &served()).unwrap_err();
        assert_eq!(e.request_id, UNKNOWN_REQUEST_ID);
        assert!(e.desc.starts_with("malformed"), "{}", e.desc);
        let mut big = StoreQueryRequest::new("big");
        big.content_topics = vec!["x".repeat(MAX_REQUEST_BYTES)];
        let e = parse(big).unwrap_err();
        assert_eq!(e.request_id, "big");
        assert!(e.desc.contains("exceeds"), "{}", e.desc);
    }

    #[test]
    fn required_fields_are_on_the_wire_even_when_empty() {
        let bytes = StoreQueryResponse::error("", STATUS_OK, "").encode_to_vec();
        // field 1 (len 0), field 10 varint 200, field 11 (len 0)
        assert_eq!(bytes, vec![0x0a, 0x00, 0x50, 0xc8, 0x01, 0x5a, 0x00]);
        let bytes = StoreQueryRequest::new("").encode_to_vec();
        assert_eq!(&bytes[..2], &[0x0a, 0x00]);
    }

    #[test]
    fn time_fields_are_zigzag() {
        let r = StoreQueryRequest::new("").time_range(Some(-1), None);
        let bytes = r.encode_to_vec();
        // field 12 varint: key 0x60, zig-zag(-1) = 1
        assert!(bytes.windows(2).any(|w| w == [0x60, 0x01]));
    }

    #[test]
    fn responses_decode_entries_with_and_without_data() {
        let message = WakuMessage::new("/a/1/b/proto", b"hi".to_vec());
        let hash = message.hash("/waku/2/rs/1/0");
        let response = StoreQueryResponse {
            request_id: Some("r".into()),
            status_code: Some(200),
            status_desc: Some("OK".into()),
            messages: vec![
                WakuMessageKeyValue {
                    message_hash: Some(hash.0.to_vec()),
                    message: Some(message.encode_to_vec()),
                    pubsub_topic: Some("/waku/2/rs/1/0".into()),
                },
                WakuMessageKeyValue {
                    message_hash: Some(hash.0.to_vec()),
                    message: None,
                    pubsub_topic: None,
                },
            ],
            pagination_cursor: None,
        };
        let decoded = StoreQueryResponse::decode_bytes(&response.encode_to_vec()).unwrap();
        let entries = decoded.entries().unwrap();
        assert_eq!(
            entries[0].data,
            Some(("/waku/2/rs/1/0".to_owned(), message))
        );
        assert_eq!(entries[1].data, None);
        assert_eq!(entries[1].hash, hash);
    }
}

/// Property tests: requests the client builds are read back as the same query by the server, and
/// responses the server writes are read back entry for entry by the client.
#[cfg(test)]
mod props {
    use proptest::{collection::vec, option, prelude::*};

    use super::*;
    use crate::message::props::message;

    const TOPIC: &str = "/waku/2/rs/1/0";

    fn served() -> BTreeSet<String> {
        [TOPIC.to_owned()].into_iter().collect()
    }

    fn hash() -> impl Strategy<Value = MessageHash> {
        any::<[u8; 32]>()
            .prop_filter("not all zeroes", |h| *h != [0; 32])
            .prop_map(MessageHash)
    }

    proptest! {
        #[test]
        fn content_requests_round_trip(
            id in ".{0,20}",
            topics in vec("/[a-z]{1,8}/1/[a-z]{1,8}/proto", 1..=MAX_CONTENT_TOPICS),
            start in option::of(0i64..1_000),
            span in option::of(0i64..1_000),
            cursor in option::of(hash()),
            forward in any::<bool>(),
            limit in option::of(any::<u64>()),
        ) {
            let end = span.map(|s| start.unwrap_or(0) + s);
            let mut request = StoreQueryRequest::new(id.clone())
                .content(TOPIC, topics.clone())
                .time_range(start, end)
                .forward(forward)
                .cursor(cursor);
            request.pagination_limit = limit;
            let query = parse_request(&request.encode_to_vec(), &served()).unwrap();
            prop_assert_eq!(&query.request_id, &id);
            prop_assert_eq!(query.cursor, cursor);
            prop_assert_eq!(query.forward, forward);
            let want_limit = match limit {
                None | Some(0) => DEFAULT_PAGE_SIZE,
                Some(n) => n.min(MAX_PAGE_SIZE as u64) as usize,
            };
            prop_assert_eq!(query.limit, want_limit);
            let mut want_topics = topics;
            want_topics.sort();
            want_topics.dedup();
            prop_assert_eq!(
                query.filter,
                Filter::Content {
                    pubsub_topics: vec![TOPIC.to_owned()],
                    content_topics: want_topics,
                    time_start: start,
                    time_end: end,
                }
            );
        }

        #[test]
        fn hash_requests_round_trip(hashes in vec(hash(), 1..=MAX_HASHES), include in any::<bool>()) {
            let request = StoreQueryRequest::new("h").hashes(hashes.clone()).include_data(include);
            let query = parse_request(&request.encode_to_vec(), &served()).unwrap();
            let mut seen = HashSet::new();
            let unique: Vec<MessageHash> = hashes.into_iter().filter(|h| seen.insert(*h)).collect();
            prop_assert_eq!(query.filter, Filter::hashes(unique));
            prop_assert_eq!(query.include_data, include);
        }

        #[test]
        fn responses_round_trip(
            entries in vec((hash(), option::of(message())), 0..20),
            cursor in option::of(hash()),
            code in prop::sample::select(vec![200u32, 400, 429, 503]),
            desc in ".{0,30}",
        ) {
            let response = StoreQueryResponse {
                request_id: Some("r".into()),
                status_code: Some(code),
                status_desc: Some(desc.clone()),
                messages: entries
                    .iter()
                    .map(|(h, m)| WakuMessageKeyValue {
                        message_hash: Some(h.0.to_vec()),
                        message: m.as_ref().map(WakuMessage::encode_to_vec),
                        pubsub_topic: m.as_ref().map(|_| TOPIC.to_owned()),
                    })
                    .collect(),
                pagination_cursor: cursor.map(|c| c.0.to_vec()),
            };
            let read = StoreQueryResponse::decode_bytes(&response.encode_to_vec()).unwrap();
            prop_assert_eq!(read.code(), code);
            prop_assert_eq!(read.desc(), desc.as_str());
            prop_assert_eq!(read.cursor(), cursor);
            let read_entries = read.entries().unwrap();
            prop_assert_eq!(read_entries.len(), entries.len());
            for (got, (h, m)) in read_entries.iter().zip(&entries) {
                prop_assert_eq!(got.hash, *h);
                prop_assert_eq!(&got.data, &m.clone().map(|m| (TOPIC.to_owned(), m)));
            }
        }
    }
}
