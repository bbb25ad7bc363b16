//! `GET /store/v3/messages` (nwaku's `endpoint/store`): a store v3 query from URL parameters,
//! answered by this node's archive (`ArchiveHandle::query`, as a peer's query) or, with
//! `peerAddr`, by the store node there over `/vac/waku/store-query/3.0.0`; a node without an
//! archive asks `rest.store_node` or a connected store peer, as nwaku does. Hashes and cursors
//! are 0x-hex, as nwaku writes and reads them.

use std::{collections::HashMap, time::Duration};

use axum::{
    extract::{Query, State as AxumState},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use libp2p::Multiaddr;
use prost::Message as _;

use super::{admit, message_json, Client, RestError, State};
use crate::{
    message::{MessageHash, WakuMessage},
    reqres::Protocol,
    store::{rpc, StoreQueryRequest, StoreQueryResponse},
    throttle,
};

/// How long a remote store may take (nwaku's `futTimeout`).
const REMOTE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn routes() -> Router<State> {
    Router::new().route("/store/v3/messages", get(messages))
}

/// A parameter, `None` when absent or empty (nwaku treats both alike).
fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// nwaku's `parseBool`.
fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" => Ok(true),
        "false" | "no" | "n" | "off" | "0" => Ok(false),
        _ => Err(format!("{name} parsing error: {value} is not a boolean")),
    }
}

/// A hex hash (`0x` optional), refused with nwaku's texts: `invalid hash length`, or the first
/// character that is not hex.
fn parse_hash(name: &str, value: &str) -> Result<MessageHash, String> {
    let value = value.trim();
    let digits = value.strip_prefix("0x").unwrap_or(value);
    if let Some(c) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "{name} parsing error: Exception converting hex string to bytes: {c} is not a hexadecimal character"
        ));
    }
    MessageHash::from_hex(value).ok_or_else(|| format!("{name} parsing error: invalid hash length"))
}

/// nwaku's `createStoreQuery`: `includeData` default false, `ascending` default true,
/// `pageSize` default 20 and capped at 100, times in nanoseconds (0 or less = none).
pub fn parse_query(params: &HashMap<String, String>) -> Result<StoreQueryRequest, String> {
    let include_data = param(params, "includeData")
        .map(|v| parse_bool("includeData", v))
        .transpose()?
        .unwrap_or(false);
    let content_topics: Vec<String> = param(params, "contentTopics")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let time = |name: &str| -> Result<Option<i64>, String> {
        match param(params, name) {
            None => Ok(None),
            Some(v) => {
                let t: i64 = v
                    .parse()
                    .map_err(|e| format!("time parsing error: {name}: {e}"))?;
                Ok((t > 0).then_some(t))
            }
        }
    };
    let hashes = param(params, "hashes")
        .map(|v| {
            v.split(',')
                .map(|h| parse_hash("waku message hash", h))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let cursor = param(params, "cursor")
        .map(|v| parse_hash("cursor", v))
        .transpose()?;
    let forward = param(params, "ascending").is_none_or(|v| v == "true");
    // nwaku reads it as `uint64(parseInt(v))`: a negative size wraps to a huge one, capped.
    let page_size = match param(params, "pageSize") {
        None => rpc::DEFAULT_PAGE_SIZE as u64,
        Some(v) => v
            .parse::<i64>()
            .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
            .map_err(|e| format!("page size parsing error: {e}"))?,
    }
    .min(rpc::MAX_PAGE_SIZE as u64);
    let (start, end) = rest_time_range(time("startTime")?, time("endTime")?);
    let mut request = StoreQueryRequest::new(hex::encode(rand::random::<[u8; 16]>()))
        .include_data(include_data)
        .time_range(start, end)
        .hashes(hashes)
        .cursor(cursor)
        .forward(forward)
        .limit(page_size);
    request.pubsub_topic = param(params, "pubsubTopic").map(str::to_owned);
    request.content_topics = content_topics;
    Ok(request)
}

/// REST's `startTime..=endTime` as the protocol's `time_start..time_end`. nwaku's REST reads
/// `endTime` as inclusive (its archives select `timestamp <= endTime`, and the Waku interop
/// suite asks for `startTime == endTime` to get that one message), while store v3's `time_end`
/// is exclusive: one past it. A range that ends before it starts matches nothing, as in nwaku
/// (200, no messages): it is sent as an empty range, not refused.
fn rest_time_range(start: Option<i64>, end_inclusive: Option<i64>) -> (Option<i64>, Option<i64>) {
    let end = end_inclusive.map(|end| end.saturating_add(1));
    match (start, end) {
        (Some(start), Some(end)) if start > end => (Some(start), Some(start)),
        _ => (start, end),
    }
}

/// nwaku's `StoreQueryResponseHex` as JSON.
fn response_json(response: &StoreQueryResponse) -> serde_json::Value {
    let messages: Vec<serde_json::Value> = response
        .messages
        .iter()
        .map(|entry| {
            let mut map = serde_json::Map::new();
            let hash = entry
                .message_hash
                .as_deref()
                .and_then(MessageHash::from_slice)
                .map(|h| h.to_hex())
                .unwrap_or_default();
            map.insert("messageHash".into(), hash.into());
            if let Some(message) = entry
                .message
                .as_deref()
                .and_then(|m| WakuMessage::decode(m).ok())
            {
                map.insert("message".into(), message_json(&message, false));
            }
            if let Some(topic) = &entry.pubsub_topic {
                map.insert("pubsubTopic".into(), topic.clone().into());
            }
            serde_json::Value::Object(map)
        })
        .collect();
    let mut body = serde_json::json!({
        "requestId": response.request_id.clone().unwrap_or_default(),
        "statusCode": response.code(),
        "statusDesc": response.desc(),
        "messages": messages,
    });
    if let (Some(map), Some(cursor)) = (body.as_object_mut(), response.cursor()) {
        map.insert("paginationCursor".into(), cursor.to_hex().into());
    }
    body
}

async fn messages(
    AxumState(state): AxumState<State>,
    client: Client,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, RestError> {
    // One store quota cell per page, as for a libp2p query, whichever store answers it.
    admit(&state, throttle::Service::Store, &client)
        .map_err(|_| RestError::TooManyRequests("Request rate limit reached".into()))?;
    let request = parse_query(&params).map_err(RestError::BadRequest)?;
    let response = match param(&params, "peerAddr") {
        None => match state.node.store() {
            Some(store) => store.query(&request).await,
            // No archive here: the store node configured, or one connected (nwaku's
            // `selectPeer(WakuStoreCodec)`).
            None => {
                let protocol = rpc::PROTOCOL_ID;
                let Some((peer, addresses)) =
                    super::service_peer(&state, state.store_node.as_ref(), protocol.as_ref()).await
                else {
                    return Err(RestError::PreconditionFailed(
                        "No suitable service peer & no discovery method".into(),
                    ));
                };
                remote(&state, peer, addresses, &request).await?
            }
        },
        Some(address) => {
            let (peer, address) = parse_peer_addr(address).map_err(RestError::BadRequest)?;
            remote(&state, peer, vec![address], &request).await?
        }
    };
    // A refused query is an HTTP error, as nwaku's (which answers every one but 429 with
    // 500); Roost keeps the store's own code where HTTP has it, so a client's mistake is a 400.
    match response.code() {
        rpc::STATUS_OK => Ok(Json(response_json(&response)).into_response()),
        rpc::STATUS_TOO_MANY_REQUESTS => Err(RestError::TooManyRequests(
            "Request rate limit reached".into(),
        )),
        rpc::STATUS_BAD_REQUEST => Err(RestError::BadRequest(response.desc().to_owned())),
        rpc::STATUS_SERVICE_UNAVAILABLE => Err(RestError::Unavailable(response.desc().to_owned())),
        code => Err(RestError::Internal(format!(
            "the store answered {code}: {}",
            response.desc()
        ))),
    }
}

/// `peerAddr` as nwaku's `parseUrlPeerAddr` reads it, refused with its words (tools match
/// `Failed parsing remote peer info`, `Invalid MultiAddress`, `Unsupported protocol`).
fn parse_peer_addr(address: &str) -> Result<(libp2p::PeerId, Multiaddr), String> {
    let failed = |why: String| format!("Failed parsing remote peer info: {why}");
    let address: Multiaddr = address.parse().map_err(|e| {
        failed(match e {
            libp2p::multiaddr::Error::UnknownProtocolString(protocol) => {
                format!("MultiAddress.init [Unsupported protocol '{protocol}']")
            }
            other => format!("MultiAddress.init [Invalid MultiAddress: {other}]"),
        })
    })?;
    let peer = crate::addr::peer_id_of(&address).ok_or_else(|| {
        failed(format!(
            "Invalid MultiAddress, no /p2p/<peer id> in {address}"
        ))
    })?;
    Ok((peer, address))
}

async fn remote(
    state: &State,
    peer: libp2p::PeerId,
    addresses: Vec<Multiaddr>,
    request: &StoreQueryRequest,
) -> Result<StoreQueryResponse, RestError> {
    let answer = tokio::time::timeout(
        REMOTE_TIMEOUT,
        state
            .node
            .request(Protocol::Store, peer, addresses, request.encode_to_vec()),
    )
    .await
    .map_err(|_| RestError::Internal("No history response received (timeout)".into()))?
    .map_err(|e| {
        // nwaku's words (nim-libp2p's) for a peer without the store protocol.
        let e = match e {
            crate::reqres::RequestError::Unsupported => {
                "failed to negotiate protocol: protocols not supported".to_owned()
            }
            e => e.to_string(),
        };
        RestError::Internal(format!("Error occurred in queryFut.read() [{e}]"))
    })?;
    StoreQueryResponse::decode_bytes(&answer)
        .map_err(|e| RestError::Internal(format!("the store's answer is unreadable: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn peer_addresses_are_refused_in_nwakus_words() {
        let good =
            "/ip4/127.0.0.1/tcp/60000/p2p/16Uiu2HAmPLe7Mzm8TsYUubgCAW1aJoeFScxrLj8ppHFivPo97bUZ";
        assert!(parse_peer_addr(good).is_ok());
        let no_slash = parse_peer_addr(&good[1..]).unwrap_err();
        assert!(no_slash.contains("Invalid MultiAddress"), "{no_slash}");
        let short_id = parse_peer_addr(&good[..good.len() - 1]).unwrap_err();
        assert!(
            short_id.starts_with("Failed parsing remote peer info"),
            "{short_id}"
        );
        let no_tcp = parse_peer_addr(&good.replace("/tcp", "")).unwrap_err();
        assert!(no_tcp.contains("Unsupported protocol"), "{no_tcp}");
        let no_peer = parse_peer_addr("/ip4/127.0.0.1/tcp/60000").unwrap_err();
        assert!(no_peer.contains("Invalid MultiAddress"), "{no_peer}");
    }

    #[test]
    fn defaults_follow_nwaku() {
        let q = parse_query(&params(&[])).unwrap();
        assert!(!q.include_data);
        assert!(q.pagination_forward);
        assert_eq!(q.pagination_limit, Some(20));
        let q = parse_query(&params(&[("pageSize", "1000"), ("ascending", "false")])).unwrap();
        assert_eq!(q.pagination_limit, Some(100));
        assert!(!q.pagination_forward);
    }

    #[test]
    fn end_time_is_inclusive_and_a_reversed_range_is_empty() {
        let q = parse_query(&params(&[("startTime", "10"), ("endTime", "10")])).unwrap();
        assert_eq!((q.time_start, q.time_end), (Some(10), Some(11)));
        let q = parse_query(&params(&[("startTime", "30"), ("endTime", "10")])).unwrap();
        assert_eq!((q.time_start, q.time_end), (Some(30), Some(30)));
        let q = parse_query(&params(&[("endTime", &i64::MAX.to_string())])).unwrap();
        assert_eq!((q.time_start, q.time_end), (None, Some(i64::MAX)));
        let q = parse_query(&params(&[("startTime", "0"), ("endTime", "-5")])).unwrap();
        assert_eq!(
            (q.time_start, q.time_end),
            (None, None),
            "0 or less is none"
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(parse_query(&params(&[("cursor", "0x12")])).is_err());
        assert!(parse_query(&params(&[("startTime", "yesterday")])).is_err());
        assert!(parse_query(&params(&[("includeData", "maybe")])).is_err());
        assert!(parse_query(&params(&[("pageSize", "$2")])).is_err());
    }

    #[test]
    fn a_negative_page_size_is_the_largest_as_nwaku_reads_it() {
        let q = parse_query(&params(&[("pageSize", "-1")])).unwrap();
        assert_eq!(q.pagination_limit, Some(rpc::MAX_PAGE_SIZE as u64));
    }
}
