//! `/filter/v2/...` (nwaku's `endpoint/filter`): this node as a filter *client* of the service
//! node in `rest.filter_node` (nwaku's `--filternode`). Subscribe, unsubscribe and ping go to
//! that node over `/vac/waku/filter-subscribe/2.0.0-beta1` (`NodeHandle::request`, as
//! `client::Client::filter` sends them); the messages it pushes (`NodeHandle::filter_pushes`)
//! are kept in a bounded queue per subscribed content topic ([`Cache`]), which
//! `GET /filter/v2/messages/{contentTopic}` drains. Answers are nwaku's
//! `{"requestId", "statusDesc"}` with the service's status code as HTTP status.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::{Path, State as AxumState},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{delete, get},
    Json, Router,
};
use libp2p::{Multiaddr, PeerId};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::{admit, message_json, Client, RestError, State};
use crate::{
    filter::{self, ReceivedPush, RequestType},
    message::WakuMessage,
    reqres::{Protocol, RequestError},
    throttle,
};

/// How long the service node may take to answer (nwaku's
/// `futTimeoutForSubscriptionProcessing`).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Most content topics REST readers may be subscribed to at once; each holds up to
/// `rest.relay_cache_capacity` messages (nwaku's one cache capacity for both).
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// nwaku's answer when no filter service peer is configured.
const NO_PEER: &str = "No suitable service peer & no discovery method";

/// The filter service node REST subscriptions go to, and what it pushed that REST readers
/// have not fetched yet.
pub struct Filter {
    /// `rest.filter_node`, with its peer id; `None`: every filter route but `GET messages`
    /// answers 503.
    service: Option<(PeerId, Multiaddr)>,
    cache: Cache,
}

impl Filter {
    /// `service` must end in `/p2p/<peer id>` (checked by [`super::Config::validate`]); one
    /// without is treated as absent.
    pub fn new(service: Option<Multiaddr>, capacity: usize) -> Filter {
        Filter {
            service: service
                .and_then(|address| Some((crate::addr::peer_id_of(&address)?, address))),
            cache: Cache::new(capacity),
        }
    }
}

/// Pushed messages with their pubsub topic, per subscribed content topic, each queue at most
/// `capacity` long (the oldest dropped first).
pub struct Cache {
    capacity: usize,
    topics: Mutex<HashMap<String, Queue>>,
}

type Queue = VecDeque<(Arc<str>, WakuMessage)>;

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            capacity: capacity.max(1),
            topics: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        // A panic while holding the lock leaves plain queues behind: still usable.
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn subscribe(&self, topics: &[String]) -> Result<(), String> {
        let mut map = self.lock();
        let new = topics.iter().filter(|t| !map.contains_key(*t)).count();
        if map.len() + new > MAX_SUBSCRIPTIONS {
            return Err(format!(
                "at most {MAX_SUBSCRIPTIONS} content topics may be subscribed at once"
            ));
        }
        for topic in topics {
            map.entry(topic.clone()).or_default();
        }
        Ok(())
    }

    fn unsubscribe(&self, topics: &[String]) {
        let mut map = self.lock();
        for topic in topics {
            map.remove(topic);
        }
    }

    fn reset(&self) {
        self.lock().clear();
    }

    /// The cached messages of `topic` (only those pushed on `pubsub_topic` when given; the
    /// others stay), emptying what it returns; `None` when not subscribed.
    fn drain(&self, topic: &str, pubsub_topic: Option<&str>) -> Option<Vec<WakuMessage>> {
        let mut map = self.lock();
        let queue = map.get_mut(topic)?;
        let Some(pubsub_topic) = pubsub_topic else {
            return Some(queue.drain(..).map(|(_, m)| m).collect());
        };
        let (taken, kept): (Queue, Queue) = queue
            .drain(..)
            .partition(|(pubsub, _)| &**pubsub == pubsub_topic);
        *queue = kept;
        Some(taken.into_iter().map(|(_, m)| m).collect())
    }

    fn deliver(&self, pubsub_topic: &Arc<str>, message: &WakuMessage) {
        let mut map = self.lock();
        if let Some(queue) = map.get_mut(&message.content_topic) {
            if queue.len() >= self.capacity {
                queue.pop_front();
            }
            queue.push_back((pubsub_topic.clone(), message.clone()));
        }
    }
}

/// Copies the pushes of the configured service node into the cache until the node stops.
/// Pushes from other peers are not for REST readers: only this service was asked.
pub async fn feed(mut pushes: broadcast::Receiver<Arc<ReceivedPush>>, filter: Arc<Filter>) {
    let Some((service, _)) = filter.service.clone() else {
        return std::future::pending().await;
    };
    loop {
        match pushes.recv().await {
            Ok(push) if push.peer == service => filter
                .cache
                .deliver(&Arc::from(push.pubsub_topic.as_str()), &push.message),
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::debug!(missed, "REST filter cache fell behind the pushes");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

pub fn routes() -> Router<State> {
    Router::new()
        .route(
            "/filter/v2/subscriptions",
            axum::routing::post(subscribe)
                .put(subscribe)
                .delete(unsubscribe),
        )
        .route("/filter/v2/subscriptions/all", delete(unsubscribe_all))
        .route("/filter/v2/subscriptions/{request_id}", get(ping))
        // An empty request id: nwaku's router takes it as one, and pings.
        .route("/filter/v2/subscriptions/", get(ping_without_id))
        .route("/filter/v2/messages/{content_topic}", get(messages))
        // go-waku's form, which waku-interop-tests calls when it names the pubsub topic.
        .route(
            "/filter/v2/messages/{pubsub_topic}/{content_topic}",
            get(messages_on_pubsub),
        )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SubscribeRequest {
    request_id: String,
    pubsub_topic: Option<String>,
    #[serde(default)]
    content_filters: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UnsubscribeAllRequest {
    request_id: String,
}

/// nwaku's `FilterSubscriptionResponse` with `status` as HTTP status.
fn answer(status: StatusCode, request_id: &str, description: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({
            "requestId": request_id,
            "statusDesc": description.into(),
        })),
    )
        .into_response()
}

/// A filter request that did not succeed, answered as nwaku's `makeRestResponse`.
#[derive(Debug, thiserror::Error)]
#[error("{status} for {request_id}: {description}")]
struct Refusal {
    status: StatusCode,
    request_id: String,
    description: String,
}

impl Refusal {
    fn new(status: StatusCode, request_id: &str, description: impl Into<String>) -> Refusal {
        Refusal {
            status,
            request_id: request_id.to_owned(),
            description: description.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        answer(self.status, &self.request_id, self.description)
    }
}

/// nwaku's answer to an unreadable body: 400 for request id `unknown`.
fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "unknown",
            format!("Failed to decode request: {e}"),
        )
    })
}

/// Sends one filter subscribe request to the service node and answers as nwaku's
/// `makeRestResponse`: the service's code as HTTP status (200 `OK`), 504 with the address
/// when it cannot be reached, 500 for an unreadable answer, 503 on timeout.
async fn request(
    state: &State,
    client: &Client,
    request_id: &str,
    kind: RequestType,
    pubsub_topic: Option<&str>,
    content_topics: &[String],
) -> Result<(), Refusal> {
    // The filter quota, as the libp2p filter service spends it per request.
    admit(state, throttle::Service::Filter, client).map_err(|throttled| {
        Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            request_id,
            throttled.to_string(),
        )
    })?;
    let Some((peer, address)) = state.filter.service.clone() else {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            request_id,
            NO_PEER,
        ));
    };
    let wire_id = crate::client::request_id();
    let bytes = filter::encode_subscribe_request(&wire_id, kind, pubsub_topic, content_topics);
    let sent = tokio::time::timeout(
        TIMEOUT,
        state.node.request(
            Protocol::FilterSubscribe,
            peer,
            vec![address.clone()],
            bytes,
        ),
    )
    .await;
    let reply = match sent {
        Err(_) => {
            return Err(Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                request_id,
                "Subscription request timed out",
            ))
        }
        Ok(Err(RequestError::Dial(e))) => {
            tracing::debug!(%address, error = %e, "REST filter: service node unreachable");
            return Err(Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                request_id,
                address.to_string(),
            ));
        }
        Ok(Err(e)) => {
            return Err(Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                request_id,
                e.to_string(),
            ))
        }
        Ok(Ok(bytes)) => filter::decode_subscribe_response(&bytes).map_err(|e| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                request_id,
                format!("the filter service's answer is unreadable: {e}"),
            )
        })?,
    };
    if reply.status == filter::Status::OK {
        return Ok(());
    }
    let status = u16::try_from(reply.status.0)
        .ok()
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Err(Refusal::new(
        status,
        request_id,
        reply
            .description
            .unwrap_or_else(|| reply.status.name().to_owned()),
    ))
}

/// `POST` and `PUT /filter/v2/subscriptions`: subscribe at the service node; the content
/// topics get a cache once it agreed.
async fn subscribe(AxumState(state): AxumState<State>, client: Client, body: Bytes) -> Response {
    let req: SubscribeRequest = match decode(&body) {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    if let Err(refusal) = request(
        &state,
        &client,
        &req.request_id,
        RequestType::Subscribe,
        req.pubsub_topic.as_deref(),
        &req.content_filters,
    )
    .await
    {
        return refusal.into_response();
    }
    if let Err(e) = state.filter.cache.subscribe(&req.content_filters) {
        return answer(StatusCode::BAD_REQUEST, &req.request_id, e);
    }
    // The service pushes over this node's connection (it has no address to dial back): keep
    // it open past `network.idle_connection_timeout` while subscribed.
    if let Some((peer, _)) = &state.filter.service {
        state.node.keep_alive(*peer, true).await;
    }
    answer(StatusCode::OK, &req.request_id, "OK")
}

/// `DELETE /filter/v2/subscriptions`: unsubscribe at the service node; the caches go whatever
/// it answers, as nwaku's (the reader no longer wants them).
async fn unsubscribe(AxumState(state): AxumState<State>, client: Client, body: Bytes) -> Response {
    let req: SubscribeRequest = match decode(&body) {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    let result = request(
        &state,
        &client,
        &req.request_id,
        RequestType::Unsubscribe,
        req.pubsub_topic.as_deref(),
        &req.content_filters,
    )
    .await;
    state.filter.cache.unsubscribe(&req.content_filters);
    match result {
        Ok(()) => answer(StatusCode::OK, &req.request_id, "OK"),
        Err(refusal) => refusal.into_response(),
    }
}

/// `DELETE /filter/v2/subscriptions/all`.
async fn unsubscribe_all(
    AxumState(state): AxumState<State>,
    client: Client,
    body: Bytes,
) -> Response {
    let req: UnsubscribeAllRequest = match decode(&body) {
        Ok(req) => req,
        Err(refusal) => return refusal.into_response(),
    };
    let result = request(
        &state,
        &client,
        &req.request_id,
        RequestType::UnsubscribeAll,
        None,
        &[],
    )
    .await;
    state.filter.cache.reset();
    if let (Ok(()), Some((peer, _))) = (&result, &state.filter.service) {
        state.node.keep_alive(*peer, false).await;
    }
    match result {
        Ok(()) => answer(StatusCode::OK, &req.request_id, "OK"),
        Err(refusal) => refusal.into_response(),
    }
}

/// `GET /filter/v2/subscriptions/{requestId}`: a ping; the service answers 404 when this node
/// holds no subscription there.
async fn ping(
    AxumState(state): AxumState<State>,
    client: Client,
    Path(request_id): Path<String>,
) -> Response {
    match request(&state, &client, &request_id, RequestType::Ping, None, &[]).await {
        Ok(()) => answer(StatusCode::OK, &request_id, "OK"),
        Err(refusal) => refusal.into_response(),
    }
}

async fn ping_without_id(AxumState(state): AxumState<State>, client: Client) -> Response {
    ping(AxumState(state), client, Path(String::new())).await
}

/// `GET /filter/v2/messages/{contentTopic}`: what was pushed since the last call, as nwaku's
/// `FilterWakuMessage` (no `proof`).
async fn messages(
    AxumState(state): AxumState<State>,
    Path(content_topic): Path<String>,
) -> Result<Response, RestError> {
    drain_json(&state, &content_topic, None)
}

/// `GET /filter/v2/messages/{pubsubTopic}/{contentTopic}`: the same, only what was pushed on
/// that pubsub topic.
async fn messages_on_pubsub(
    AxumState(state): AxumState<State>,
    Path((pubsub_topic, content_topic)): Path<(String, String)>,
) -> Result<Response, RestError> {
    drain_json(&state, &content_topic, Some(&pubsub_topic))
}

fn drain_json(
    state: &State,
    content_topic: &str,
    pubsub_topic: Option<&str>,
) -> Result<Response, RestError> {
    let messages = state
        .filter
        .cache
        .drain(content_topic, pubsub_topic)
        .ok_or_else(|| {
            RestError::BadRequest(format!("Not subscribed to topic: {content_topic}"))
        })?;
    let list: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let mut json = message_json(m, false);
            if let Some(map) = json.as_object_mut() {
                map.remove("proof");
            }
            json
        })
        .collect();
    Ok(Json(list).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, n: u8) -> WakuMessage {
        WakuMessage {
            payload: vec![n],
            content_topic: topic.into(),
            version: Some(0),
            timestamp: Some(1),
            meta: None,
            rate_limit_proof: None,
            ephemeral: Some(false),
        }
    }

    #[test]
    fn cache_keeps_the_newest_messages_of_subscribed_topics_only() {
        let cache = Cache::new(2);
        cache.subscribe(&["/a/1/x/proto".into()]).unwrap();
        let shard: Arc<str> = Arc::from("/waku/2/rs/1/0");
        for n in 0..3 {
            cache.deliver(&shard, &message("/a/1/x/proto", n));
            cache.deliver(&shard, &message("/a/1/other/proto", n));
        }
        let got = cache.drain("/a/1/x/proto", None).unwrap();
        assert_eq!(
            got.iter().map(|m| m.payload[0]).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(cache.drain("/a/1/x/proto", None).unwrap().is_empty());
        assert!(cache.drain("/a/1/other/proto", None).is_none());
        // Naming a pubsub topic takes its messages and leaves the others queued.
        let other: Arc<str> = Arc::from("/waku/2/rs/1/1");
        cache.deliver(&shard, &message("/a/1/x/proto", 7));
        cache.deliver(&other, &message("/a/1/x/proto", 8));
        let got = cache.drain("/a/1/x/proto", Some("/waku/2/rs/1/1")).unwrap();
        assert_eq!(
            got.iter().map(|m| m.payload[0]).collect::<Vec<_>>(),
            vec![8]
        );
        let got = cache.drain("/a/1/x/proto", None).unwrap();
        assert_eq!(
            got.iter().map(|m| m.payload[0]).collect::<Vec<_>>(),
            vec![7]
        );
        cache.reset();
        assert!(cache.drain("/a/1/x/proto", None).is_none());
    }

    #[test]
    fn subscriptions_are_bounded() {
        let cache = Cache::new(1);
        let topics: Vec<String> = (0..=MAX_SUBSCRIPTIONS)
            .map(|i| format!("/a/1/{i}/p"))
            .collect();
        assert!(cache.subscribe(&topics).is_err());
        assert!(cache.subscribe(&topics[..MAX_SUBSCRIPTIONS]).is_ok());
    }
}
