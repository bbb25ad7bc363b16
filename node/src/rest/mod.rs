//! nwaku's REST API (`[rest]`, default `127.0.0.1:8645`): a second front door to the same
//! services the libp2p protocols use. This module owns the `[rest]` config, the axum server,
//! the relay message cache REST readers drain ([`relay::Cache`]), CORS (`rest.allow_origin`)
//! and `roost_rest_requests_total`. Routes, one file per group as nwaku groups them:
//! `debug.rs` (`/health`, `/info`, `/version`), `admin.rs` (`/admin/v1/peer[s]/...` and
//! `/admin/v1/filter/subscriptions`, only with `rest.admin`), `relay.rs` (`/relay/v1/...`),
//! `store.rs` (`/store/v3/messages`), `lightpush.rs` (`/lightpush/v3/message`, legacy `/lightpush/v1/message`) and `filter.rs`
//! (`/filter/v2/...`, as a filter client of `rest.filter_node`).
//!
//! Every route calls what the protocols call (`NodeHandle::publish`, `ArchiveHandle::query`,
//! `NodeHandle::request` on the store and filter protocols, `NodeHandle::dial`), so limits and
//! validation are the same on both doors; store, light push and filter requests first spend
//! the throttle's quotas keyed by the client's IP ([`admit`]), as libp2p requests do before
//! decoding. Shapes, defaults and status codes follow nwaku's handlers
//! (`waku/rest_api/endpoint/*/handlers.nim`): errors are `text/plain` with 400/404/412/429/
//! 500/503 (light push v3 and filter answer JSON), a success without a body is 200 `OK`.

mod admin;
mod debug;
pub mod filter;
mod lightpush;
pub mod relay;
mod store;

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    body::Body,
    extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Request, State as AxumState},
    http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use base64::Engine as _;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::watch};

use crate::{handle::NodeHandle, message::WakuMessage, throttle};

/// `[rest]` settings, nwaku's `--rest-*` flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve the REST API. Default `true`, as nwaku's `--rest`.
    pub enabled: bool,
    /// Bind address (nwaku's `--rest-address` and `--rest-port`). Default `127.0.0.1:8645`.
    pub address: SocketAddr,
    /// Serve the admin routes (`/admin/v1/peers`; nwaku's `--rest-admin`). Default `false`.
    pub admin: bool,
    /// Origins allowed to make cross-origin requests; `*` and `?` are wildcards (nwaku's
    /// `--rest-allow-origin`). Default: none (no CORS headers).
    pub allow_origin: Vec<String>,
    /// Messages kept per REST relay subscription until a reader drains them; the oldest go
    /// first (nwaku's `--rest-relay-cache-capacity`). Default `50`.
    pub relay_cache_capacity: u32,
    /// The filter service node the `/filter/v2/...` routes subscribe at, a full multiaddr
    /// with `/p2p/<peer id>` (nwaku's `--filternode`, also accepted as a flag). Default: none
    /// (those routes answer 503).
    pub filter_node: Option<libp2p::Multiaddr>,
    /// The store node `GET /store/v3/messages` asks when the request names no `peerAddr` and
    /// this node keeps no archive (nwaku's `--storenode`). Default: none; then a connected
    /// peer that lists the store protocol in identify is asked, as nwaku's peer manager picks.
    pub store_node: Option<libp2p::Multiaddr>,
    /// The light push service node `POST /lightpush/...` sends to, even when this node serves
    /// light push itself, as nwaku's `--lightpushnode` mounts a client its REST uses. Default:
    /// none; then a node without a light push service sends to a connected peer that lists
    /// light push v3 in identify.
    pub lightpush_node: Option<libp2p::Multiaddr>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            address: SocketAddr::from(([127, 0, 0, 1], 8645)),
            admin: false,
            allow_origin: Vec::new(),
            relay_cache_capacity: 50,
            filter_node: None,
            store_node: None,
            lightpush_node: None,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.relay_cache_capacity == 0 {
            return Err("rest.relay_cache_capacity must be at least 1".into());
        }
        for (key, address) in [
            ("filter_node", &self.filter_node),
            ("store_node", &self.store_node),
            ("lightpush_node", &self.lightpush_node),
        ] {
            if let Some(address) = address {
                if crate::addr::peer_id_of(address).is_none() {
                    return Err(format!(
                        "rest.{key} {address} has no /p2p/<peer id>; use the service node's full multiaddr"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What the routes share.
#[derive(Clone)]
pub struct State {
    pub node: NodeHandle,
    /// The relay settings: served topics, autosharding, the message size limit.
    pub relay: Arc<crate::relay::Config>,
    /// The topics the node relays now: `relay.shards` and those REST subscriptions joined.
    pub topics: crate::relay::RelayedTopics,
    /// Whether this node serves light push (the REST light push route publishes only then).
    pub lightpush_enabled: bool,
    pub cache: Arc<relay::Cache>,
    /// The filter service node REST subscriptions go to, and the cache of its pushes.
    pub filter: Arc<filter::Filter>,
    /// `rest.store_node`: asked when this node keeps no archive.
    pub store_node: Option<libp2p::Multiaddr>,
    /// `rest.lightpush_node`: sent to when this node serves no light push.
    pub lightpush_node: Option<libp2p::Multiaddr>,
}

/// The peer a REST route asks for a service this node does not give itself, as nwaku's
/// `selectPeer`: the configured service node, else a connected peer that listed `protocol`
/// in identify. `None`: nobody to ask.
pub(crate) async fn service_peer(
    state: &State,
    configured: Option<&libp2p::Multiaddr>,
    protocol: &str,
) -> Option<(libp2p::PeerId, Vec<libp2p::Multiaddr>)> {
    if let Some(address) = configured {
        let peer = crate::addr::peer_id_of(address)?;
        return Some((peer, vec![address.clone()]));
    }
    let status = state.node.network_status().await?;
    status
        .peers
        .into_iter()
        .find(|peer| peer.protocols.iter().any(|p| p == protocol))
        .map(|peer| (peer.peer_id, peer.address.into_iter().collect()))
}

/// The HTTP client's IP; `None` only when the router runs without connection info (then
/// only the global rules apply).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Client(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(address)| address.ip()),
        ))
    }
}

/// Admits one request of `service` from `client` through the node's throttle, as the
/// request/response behaviour admits a libp2p request before decoding it.
pub(crate) fn admit(
    state: &State,
    service: throttle::Service,
    client: &Client,
) -> Result<(), throttle::Throttled> {
    let Client(ip) = *client;
    // The node's own throttle: the REST door spends the quotas the libp2p door spends.
    state
        .node
        .throttle()
        .check_client(service, ip)
        .inspect_err(|throttled| {
            tracing::debug!(?ip, %throttled, "REST request throttled");
        })
}

/// Why a request failed; the text is the `text/plain` body, as nwaku answers errors.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let status = match &self {
            RestError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RestError::NotFound(_) => StatusCode::NOT_FOUND,
            RestError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            RestError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            RestError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            RestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        text(status, self.to_string())
    }
}

pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// nwaku's answer to a success without a body.
pub(crate) fn ok() -> Response {
    text(StatusCode::OK, "OK")
}

/// Parses a JSON body; anything unreadable is a 400, as nwaku's `decodeRequestBody`.
pub(crate) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RestError> {
    if body.is_empty() {
        return Err(RestError::BadRequest("request body is empty".into()));
    }
    serde_json::from_slice(body)
        .map_err(|e| RestError::BadRequest(format!("Failed to decode request: {e}")))
}

/// A WakuMessage in nwaku's REST JSON form (`RelayWakuMessage`): `payload`, `meta` and `proof`
/// base64, `timestamp` in nanoseconds.
///
/// Strict as nwaku's decoder, which Waku's interop suite checks: unknown fields, a missing or
/// empty `contentTopic` or `payload` and a `timestamp` of `null` are 400s.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestMessage {
    pub payload: String,
    pub content_topic: Option<String>,
    pub version: Option<u32>,
    /// Absent: now; `null`: refused.
    #[serde(default, deserialize_with = "present")]
    pub timestamp: Option<Option<i64>>,
    pub meta: Option<String>,
    pub ephemeral: Option<bool>,
    pub proof: Option<String>,
}

/// A field that is present (`Some`), possibly as `null` (`Some(None)`); absent is `None`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn b64_decode(field: &str, value: &str) -> Result<Vec<u8>, RestError> {
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| RestError::BadRequest(format!("{field} is not valid base64: {e}")))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl RestMessage {
    /// nwaku's `toWakuMessage`: default content topic, version 0, timestamp now when absent
    /// or 0.
    pub fn into_message(self) -> Result<WakuMessage, RestError> {
        let timestamp = match self.timestamp {
            None | Some(Some(0)) => crate::message::now_nanos(),
            Some(Some(t)) => t,
            Some(None) => {
                return Err(RestError::BadRequest(
                    "Failed to decode request: timestamp is null".into(),
                ))
            }
        };
        let content_topic = match self.content_topic {
            Some(topic) if !topic.is_empty() => topic,
            _ => {
                return Err(RestError::BadRequest(
                    "Failed to decode request: the message has no contentTopic".into(),
                ))
            }
        };
        if self.payload.is_empty() {
            return Err(RestError::BadRequest(
                "Failed to decode request: the message has an empty payload".into(),
            ));
        }
        Ok(WakuMessage {
            payload: b64_decode("payload", &self.payload)?,
            content_topic,
            version: Some(self.version.unwrap_or(0)),
            timestamp: Some(timestamp),
            meta: match self.meta.as_deref() {
                None | Some("") => None,
                Some(m) => Some(b64_decode("meta", m)?),
            },
            rate_limit_proof: match self.proof.as_deref() {
                None | Some("") => None,
                Some(p) => Some(b64_decode("proof", p)?),
            },
            ephemeral: Some(self.ephemeral.unwrap_or(false)),
        })
    }
}

/// A message as nwaku's REST API shows it. `always_proof`: the relay routes always carry
/// `proof` (empty when none), the store route only when there is one.
pub fn message_json(message: &WakuMessage, always_proof: bool) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("payload".into(), b64(&message.payload).into());
    map.insert("contentTopic".into(), message.content_topic.clone().into());
    if let Some(meta) = message.meta.as_deref().filter(|m| !m.is_empty()) {
        map.insert("meta".into(), b64(meta).into());
    }
    map.insert("version".into(), message.version.unwrap_or(0).into());
    map.insert("timestamp".into(), message.timestamp.unwrap_or(0).into());
    map.insert(
        "ephemeral".into(),
        message.ephemeral.unwrap_or(false).into(),
    );
    let proof = message.rate_limit_proof.as_deref().unwrap_or_default();
    if always_proof || !proof.is_empty() {
        map.insert("proof".into(), b64(proof).into());
    }
    serde_json::Value::Object(map)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

/// `roost_rest_requests_total{route,status}`.
#[derive(Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        // Registered under the `roost_rest` prefix: `roost_rest_requests_total`.
        registry.register(
            "requests",
            "REST API requests by route group and HTTP status",
            requests.clone(),
        );
        // Every route group's successes exist from the start, at 0 (errors appear as they
        // happen: their statuses are many).
        for route in ROUTE_GROUPS
            .iter()
            .map(|(_, label)| *label)
            .chain(["other"])
        {
            let _ = requests.get_or_create(&RequestLabels { route, status: 200 });
        }
        Metrics { requests }
    }
}

/// Path prefixes and the route group (`route` label) each belongs to.
const ROUTE_GROUPS: &[(&str, &str)] = &[
    ("/health", "health"),
    ("/info", "info"),
    ("/debug/v1/info", "info"),
    ("/version", "version"),
    ("/debug/v1/version", "version"),
    ("/admin/v1/peers", "admin_peers"),
    ("/admin/v1/peer", "admin_peers"),
    ("/admin/v1/filter", "admin_filter"),
    ("/admin/v1/log-level", "admin_log_level"),
    ("/relay/v1/auto/subscriptions", "relay_auto_subscriptions"),
    ("/relay/v1/auto/messages", "relay_auto_messages"),
    ("/relay/v1/subscriptions", "relay_subscriptions"),
    ("/relay/v1/messages", "relay_messages"),
    ("/store/v3/messages", "store"),
    ("/filter/v2/subscriptions", "filter_subscriptions"),
    ("/filter/v2/messages", "filter_messages"),
    ("/lightpush/v3/message", "lightpush"),
    ("/lightpush/v1/message", "lightpush_legacy"),
];

/// The route group a path belongs to: a closed set, so a client cannot grow the label set.
fn route_label(path: &str) -> &'static str {
    ROUTE_GROUPS
        .iter()
        .find(|(prefix, _)| path == *prefix || path.starts_with(&format!("{prefix}/")))
        .map(|(_, label)| *label)
        .unwrap_or("other")
}

/// Largest request body read: a relay or light push message at the relay's size limit in
/// base64 (4/3 of it), plus room for the JSON around it. Larger bodies get 413 unread.
fn body_limit(relay: &crate::relay::Config) -> usize {
    relay.max_message_size.as_usize() / 3 * 4 + 64 * 1024
}

/// The largest relay message and the REST body limit, for the oversize answers.
#[derive(Clone, Copy)]
struct MessageLimit {
    message: usize,
    body: usize,
}

fn state_limit(relay: &crate::relay::Config) -> MessageLimit {
    MessageLimit {
        message: relay.max_message_size.as_usize(),
        body: body_limit(relay),
    }
}

/// Most of an oversize body read (and dropped) before the answer, so a client still writing it
/// reads the answer instead of a broken pipe; nwaku reads bodies up to this size too.
const OVERSIZE_DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// The answer to a message too large to publish, in nwaku's words; `None` for routes that
/// keep HTTP's 413.
fn oversize_answer(path: &str, max: usize) -> Option<Response> {
    let text = format!("Message size exceeded maximum of {max} bytes (the request body is larger)");
    if path.starts_with("/lightpush/v3/") {
        Some(
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(serde_json::json!({ "statusDesc": text })),
            )
                .into_response(),
        )
    } else if path.starts_with("/lightpush/") {
        Some(RestError::BadRequest(text).into_response())
    } else if path.starts_with("/relay/v1/messages/") || path.starts_with("/relay/v1/auto/messages")
    {
        Some(RestError::BadRequest(format!("Failed to publish: {text}")).into_response())
    } else {
        None
    }
}

/// A body over the limit is never read (memory stays bounded), but it is answered as nwaku
/// answers the oversize message inside it, since nwaku reads bodies up to 16 MiB and tools
/// match its words: light push with 413 and `{"statusDesc": "Message size exceeded maximum of
/// … bytes"}`, the relay publish routes with 400 and the same text. Other routes keep 413.
async fn oversize_in_nwakus_words(
    AxumState(limit): AxumState<MessageLimit>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|l| *l > limit.body as u64) {
        if let Some(answer) = oversize_answer(&path, limit.message) {
            if length <= OVERSIZE_DRAIN_LIMIT {
                // Read and drop, a chunk at a time: memory stays at one chunk.
                use futures::StreamExt;
                let mut stream = request.into_body().into_data_stream();
                while let Some(Ok(_)) = stream.next().await {}
            }
            return answer;
        }
    }
    let response = next.run(request).await;
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    oversize_answer(&path, limit.message).unwrap_or(response)
}

pub fn router(state: State, config: &Config, metrics: Metrics) -> Router {
    let limit = body_limit(&state.relay);
    let limit_state = state.relay.clone();
    let mut router = Router::new()
        .merge(debug::routes())
        .merge(relay::routes())
        .merge(store::routes())
        .merge(lightpush::routes())
        .merge(filter::routes());
    if config.admin {
        router = router.merge(admin::routes());
    }
    let origins = Arc::new(config.allow_origin.clone());
    let throttle = state.node.throttle().clone();
    router
        .with_state(state)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(
            state_limit(&limit_state),
            oversize_in_nwakus_words,
        ))
        .layer(middleware::from_fn_with_state(throttle, refuse_banned))
        .layer(middleware::from_fn_with_state(origins, cors))
        .layer(middleware::from_fn_with_state(metrics, count))
}

async fn count(AxumState(metrics): AxumState<Metrics>, request: Request, next: Next) -> Response {
    let route = route_label(request.uri().path());
    let response = next.run(request).await;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// `*` matches any run of characters, `?` one character (nwaku's `--rest-allow-origin`).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], text) || (!text.is_empty() && glob_match(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p.eq_ignore_ascii_case(t) => glob_match(&pattern[1..], &text[1..]),
        _ => false,
    }
}

fn allowed_origin(origins: &[String], headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    // Bound the matcher's work: an origin is a scheme, a host and a port.
    if text.len() > 512 {
        return None;
    }
    origins
        .iter()
        .any(|p| glob_match(p.as_bytes(), text.as_bytes()))
        .then(|| origin.clone())
}

/// An IP the throttle banned (its offences on either door, or `roost ban add`) is refused on
/// every route, as its libp2p connections are: 403 with a text body, before anything is read.
async fn refuse_banned(
    AxumState(throttle): AxumState<throttle::Throttle>,
    client: Client,
    request: Request,
    next: Next,
) -> Response {
    let Client(ip) = client;
    if throttle.is_banned_connection(None, ip) {
        tracing::debug!(?ip, "REST request from a banned address refused");
        return (StatusCode::FORBIDDEN, "this address is banned").into_response();
    }
    next.run(request).await
}

/// CORS: an allowed origin gets `Access-Control-Allow-Origin` on every answer, and preflight
/// requests are answered here. With no `allow_origin` configured no CORS header is sent, so a
/// browser page on another origin cannot read the API.
async fn cors(
    AxumState(origins): AxumState<Arc<Vec<String>>>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = allowed_origin(&origins, request.headers());
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        if allowed.is_none() {
            return ok();
        }
        let mut response = Response::new(Body::empty());
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        response
    } else {
        next.run(request).await
    };
    if let Some(origin) = allowed {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// Serves the REST API until shutdown (the relay cache reads the node's accepted messages as
/// REST calls need them), and feeds the filter cache meanwhile.
pub async fn serve(
    listener: TcpListener,
    state: State,
    config: Config,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let node = state.node.clone();
    state.cache.attach(move || node.subscribe());
    let filter_feed = filter::feed(state.node.filter_pushes(), state.filter.clone());
    let app = router(state, &config, metrics);
    // The client's address reaches the handlers for the throttle's per-IP quotas.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    });
    tokio::select! {
        result = server => result,
        () = filter_feed => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_with_wildcards() {
        assert!(glob_match(b"*", b"http://a.example"));
        assert!(glob_match(
            b"http://*.example:300?",
            b"http://a.b.example:3001"
        ));
        assert!(!glob_match(
            b"http://*.example:300?",
            b"http://a.example:30011"
        ));
        assert!(!glob_match(b"http://a.example", b"http://b.example"));
    }

    #[test]
    fn route_labels_are_a_closed_set() {
        assert_eq!(route_label("/relay/v1/messages/%2Fwaku"), "relay_messages");
        assert_eq!(
            route_label("/relay/v1/auto/messages"),
            "relay_auto_messages"
        );
        assert_eq!(route_label("/healthz"), "other");
        assert_eq!(route_label("/store/v3/messages"), "store");
    }

    #[test]
    fn rest_messages_are_as_strict_as_nwakus() {
        let m: RestMessage =
            serde_json::from_str(r#"{"payload":"aGk=","contentTopic":"/a/1/b/proto"}"#).unwrap();
        let m = m.into_message().unwrap();
        assert_eq!(m.payload, b"hi");
        assert_eq!(m.version, Some(0));
        assert!(m.timestamp.unwrap() > 0);
        for bad in [
            r#"{"payload":"!!","contentTopic":"/a/1/b/proto"}"#,
            r#"{"payload":"aGk="}"#,
            r#"{"payload":"aGk=","contentTopic":""}"#,
            r#"{"payload":"","contentTopic":"/a/1/b/proto"}"#,
            r#"{"payload":"aGk=","contentTopic":"/a/1/b/proto","timestamp":null}"#,
        ] {
            let m: RestMessage = serde_json::from_str(bad).unwrap();
            assert!(m.into_message().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<RestMessage>(
            r#"{"payload":"aGk=","contentTopic":"/a/1/b/proto","extra":1}"#
        )
        .is_err());
    }
}
