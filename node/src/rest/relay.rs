//! `/relay/v1/...` (nwaku's `endpoint/relay`): REST subscriptions to pubsub or content topics,
//! each with a bounded cache of the messages the node accepted since, drained by `GET`, and
//! publishing through the node's own publish path (`NodeHandle::publish`: validation, relay,
//! local sinks), with or without autosharding.
//!
//! The node relays every configured shard (`relay.shards`) whatever REST readers do: for those a
//! REST subscription only decides what is cached. A subscription to another shard of the
//! node's cluster makes the relay join it, as nwaku's does, until no REST subscription (by
//! pubsub topic or by a content topic that autoshards there) wants it any more. Topics not in
//! the static-sharding form are refused with 400.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use axum::{
    body::Bytes,
    extract::{Path, State as AxumState},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use tokio::sync::broadcast;

use super::{admit, json_body, message_json, ok, Client, RestError, RestMessage, State};
use crate::{message::ContentTopic, relay::RelayedMessage, swarm::command::PublishError, throttle};

/// Most topics REST readers may be subscribed to at once, per kind (pubsub, content): every
/// one holds up to `rest.relay_cache_capacity` messages.
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// Most topics in one subscribe or unsubscribe request.
const MAX_TOPICS_PER_REQUEST: usize = 100;

/// The messages REST readers have not fetched yet, per subscribed topic; each queue holds at
/// most `capacity` messages, the oldest dropped first.
///
/// No task copies messages in: while a topic is subscribed the cache holds a receiver of the
/// node's broadcast of accepted messages, which buffers them without waking anyone, and each
/// REST call first takes what arrived since the last one. Relaying costs nothing per message
/// for REST readers that are not reading; what the broadcast's buffer (4096 messages) no longer
/// holds by the next call is lost, as from nwaku's bounded cache.
pub struct Cache {
    capacity: usize,
    inner: Mutex<Inner>,
    /// How to subscribe to the node's messages (set when the REST server starts).
    source: std::sync::OnceLock<Subscribe>,
}

type Subscribe = Box<dyn Fn() -> broadcast::Receiver<Arc<RelayedMessage>> + Send + Sync>;

#[derive(Default)]
struct Inner {
    pubsub: HashMap<String, VecDeque<Arc<RelayedMessage>>>,
    content: HashMap<String, VecDeque<Arc<RelayedMessage>>>,
    /// Present while any topic is subscribed.
    receiver: Option<broadcast::Receiver<Arc<RelayedMessage>>>,
}

#[derive(Clone, Copy)]
enum Kind {
    Pubsub,
    Content,
}

impl Inner {
    fn topics(&mut self, kind: Kind) -> &mut HashMap<String, VecDeque<Arc<RelayedMessage>>> {
        match kind {
            Kind::Pubsub => &mut self.pubsub,
            Kind::Content => &mut self.content,
        }
    }

    /// Files `message` under its pubsub topic and its content topic, if subscribed.
    fn keep(&mut self, capacity: usize, message: &Arc<RelayedMessage>) {
        let push = |queue: &mut VecDeque<Arc<RelayedMessage>>| {
            if queue.len() >= capacity {
                queue.pop_front();
            }
            queue.push_back(message.clone());
        };
        if let Some(queue) = self.pubsub.get_mut(&*message.pubsub_topic) {
            push(queue);
        }
        if let Some(queue) = self.content.get_mut(&message.message.content_topic) {
            push(queue);
        }
    }
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
            source: std::sync::OnceLock::new(),
        }
    }

    /// Connects the cache to the node's messages (once; later calls do nothing).
    pub fn attach(
        &self,
        source: impl Fn() -> broadcast::Receiver<Arc<RelayedMessage>> + Send + Sync + 'static,
    ) {
        let _ = self.source.set(Box::new(source));
        let mut inner = self.lock();
        self.update_receiver(&mut inner);
    }

    /// Subscribes REST readers to `topics` from the start, as nwaku caches the topics it was
    /// started with.
    pub fn subscribe_pubsub_topics(&self, topics: &[String]) -> Result<(), RestError> {
        self.subscribe(Kind::Pubsub, topics)
    }

    /// Subscribes REST readers to `topics` (content topics) from the start, as nwaku caches the
    /// content topics it was started with (`--content-topic`).
    pub fn subscribe_content_topics(&self, topics: &[String]) -> Result<(), RestError> {
        self.subscribe(Kind::Content, topics)
    }

    /// Whether REST readers are subscribed to the pubsub topic `topic`.
    pub fn is_subscribed_pubsub(&self, topic: &str) -> bool {
        self.lock().pubsub.contains_key(topic)
    }

    /// The content topics REST readers are subscribed to.
    fn content_topics(&self) -> Vec<String> {
        self.lock().content.keys().cloned().collect()
    }

    /// A receiver while any topic is subscribed, none otherwise.
    fn update_receiver(&self, inner: &mut Inner) {
        let active = !inner.pubsub.is_empty() || !inner.content.is_empty();
        match (active, inner.receiver.is_some()) {
            (true, false) => inner.receiver = self.source.get().map(|source| source()),
            (false, true) => inner.receiver = None,
            _ => {}
        }
    }

    /// Takes what the node accepted since the last call into the queues.
    fn catch_up(&self, inner: &mut Inner) {
        let Some(mut receiver) = inner.receiver.take() else {
            return;
        };
        loop {
            match receiver.try_recv() {
                Ok(message) => inner.keep(self.capacity, &message),
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    // Best effort as nwaku's: what nobody fetched in time is gone.
                    tracing::debug!(
                        missed,
                        "REST relay cache missed messages nobody fetched in time"
                    );
                }
                Err(_) => break,
            }
        }
        inner.receiver = Some(receiver);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain queues behind: still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribes to every topic not subscribed yet; refuses the whole request if that would
    /// pass [`MAX_SUBSCRIPTIONS`].
    fn subscribe(&self, kind: Kind, topics: &[String]) -> Result<(), RestError> {
        let mut inner = self.lock();
        self.catch_up(&mut inner);
        let map = inner.topics(kind);
        let new = topics.iter().filter(|t| !map.contains_key(*t)).count();
        if map.len() + new > MAX_SUBSCRIPTIONS {
            return Err(RestError::BadRequest(format!(
                "at most {MAX_SUBSCRIPTIONS} topics may be subscribed at once"
            )));
        }
        for topic in topics {
            map.entry(topic.clone()).or_default();
        }
        self.update_receiver(&mut inner);
        Ok(())
    }

    fn unsubscribe(&self, kind: Kind, topics: &[String]) {
        let mut inner = self.lock();
        self.catch_up(&mut inner);
        let map = inner.topics(kind);
        for topic in topics {
            map.remove(topic);
        }
        self.update_receiver(&mut inner);
    }

    /// The cached messages of `topic`, emptying its queue; `None` when not subscribed.
    ///
    /// A message read once is gone for both kinds of reader, as from nwaku's cache (one list
    /// of messages indexed by pubsub and by content topic, a read removes the message): read
    /// through its content topic, it is no longer waiting under its pubsub topic.
    fn drain(&self, kind: Kind, topic: &str) -> Option<Vec<Arc<RelayedMessage>>> {
        let mut inner = self.lock();
        self.catch_up(&mut inner);
        let drained: Vec<Arc<RelayedMessage>> = inner
            .topics(kind)
            .get_mut(topic)
            .map(|queue| queue.drain(..).collect())?;
        for message in &drained {
            let (other, key) = match kind {
                Kind::Pubsub => (&mut inner.content, message.message.content_topic.as_str()),
                Kind::Content => (&mut inner.pubsub, &*message.pubsub_topic),
            };
            if let Some(queue) = other.get_mut(key) {
                queue.retain(|kept| !Arc::ptr_eq(kept, message));
            }
        }
        Some(drained)
    }

    /// Keeps `message` for the readers of its pubsub topic and of its content topic.
    pub fn deliver(&self, message: &Arc<RelayedMessage>) {
        let capacity = self.capacity;
        self.lock().keep(capacity, message);
    }
}

pub fn routes() -> Router<State> {
    Router::new()
        .route(
            "/relay/v1/subscriptions",
            post(subscribe_pubsub)
                .delete(unsubscribe_pubsub)
                .options(options),
        )
        .route(
            "/relay/v1/messages/{topic}",
            get(messages_pubsub).post(publish_pubsub).options(options),
        )
        .route(
            "/relay/v1/auto/subscriptions",
            post(subscribe_content)
                .delete(unsubscribe_content)
                .options(options),
        )
        .route(
            "/relay/v1/auto/messages/{topic}",
            get(messages_content).options(options),
        )
        .route(
            "/relay/v1/auto/messages",
            post(publish_auto).options(options),
        )
}

async fn options() -> Response {
    ok()
}

fn topic_list(body: &[u8]) -> Result<Vec<String>, RestError> {
    let topics: Vec<String> = json_body(body)?;
    if topics.len() > MAX_TOPICS_PER_REQUEST {
        return Err(RestError::BadRequest(format!(
            "{} topics in one request; the limit is {MAX_TOPICS_PER_REQUEST}",
            topics.len()
        )));
    }
    Ok(topics)
}

/// Only topics in the static-sharding form: others could never be relayed here.
fn check_pubsub_topics(state: &State, topics: &[String]) -> Result<(), RestError> {
    let bad: Vec<&String> = topics
        .iter()
        .filter(|t| !state.topics.could_join(t))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(RestError::BadRequest(format!(
            "Invalid pubsub topic(s): {bad:?}; pubsub topics are /waku/2/rs/<cluster>/<shard>"
        )))
    }
}

/// The pubsub topic a content topic autoshards to in this node's cluster.
fn autoshard(state: &State, content_topic: &str) -> Result<String, RestError> {
    state
        .relay
        .autoshard(content_topic)
        .map(|topic| topic.to_string())
        .map_err(|e| RestError::BadRequest(format!("Autosharding error: {e}")))
}

/// Whether a REST subscription wants `topic`: by pubsub topic, or by a content topic that
/// autoshards there (what nwaku's relay subscription would be).
fn rest_wants(state: &State, topic: &str) -> bool {
    state.cache.is_subscribed_pubsub(topic)
        || state
            .cache
            .content_topics()
            .iter()
            .any(|ct| autoshard(state, ct).is_ok_and(|t| t == topic))
}

/// Makes the relay join each topic it does not relay yet.
async fn join(state: &State, topics: &[String]) -> Result<(), RestError> {
    for topic in topics {
        if !state.topics.contains(topic) {
            state
                .node
                .relay_topic(topic.clone(), true)
                .await
                .map_err(|e| RestError::BadRequest(format!("Failed to subscribe: {e}")))?;
        }
    }
    Ok(())
}

/// Makes the relay leave each joined topic no REST subscription wants any more
/// (`relay.shards` stay).
async fn leave_unwanted(state: &State, topics: &[String]) {
    for topic in topics {
        if state.topics.is_configured(topic) || rest_wants(state, topic) {
            continue;
        }
        if let Err(e) = state.node.relay_topic(topic.clone(), false).await {
            tracing::warn!(topic, error = %e, "cannot leave a shard joined through REST");
        }
    }
}

async fn subscribe_pubsub(
    AxumState(state): AxumState<State>,
    body: Bytes,
) -> Result<Response, RestError> {
    let topics = topic_list(&body)?;
    check_pubsub_topics(&state, &topics)?;
    state.cache.subscribe(Kind::Pubsub, &topics)?;
    if let Err(e) = join(&state, &topics).await {
        state.cache.unsubscribe(Kind::Pubsub, &topics);
        leave_unwanted(&state, &topics).await;
        return Err(e);
    }
    Ok(ok())
}

async fn unsubscribe_pubsub(
    AxumState(state): AxumState<State>,
    body: Bytes,
) -> Result<Response, RestError> {
    let topics = topic_list(&body)?;
    check_pubsub_topics(&state, &topics)?;
    state.cache.unsubscribe(Kind::Pubsub, &topics);
    leave_unwanted(&state, &topics).await;
    Ok(ok())
}

async fn subscribe_content(
    AxumState(state): AxumState<State>,
    body: Bytes,
) -> Result<Response, RestError> {
    let topics = topic_list(&body)?;
    let mut shards = Vec::new();
    for topic in &topics {
        ContentTopic::parse(topic)
            .map_err(|e| RestError::BadRequest(format!("invalid content topic {topic}: {e}")))?;
        let shard = autoshard(&state, topic)?;
        if !shards.contains(&shard) {
            shards.push(shard);
        }
    }
    state.cache.subscribe(Kind::Content, &topics)?;
    if let Err(e) = join(&state, &shards).await {
        state.cache.unsubscribe(Kind::Content, &topics);
        leave_unwanted(&state, &shards).await;
        return Err(e);
    }
    Ok(ok())
}

async fn unsubscribe_content(
    AxumState(state): AxumState<State>,
    body: Bytes,
) -> Result<Response, RestError> {
    let topics = topic_list(&body)?;
    state.cache.unsubscribe(Kind::Content, &topics);
    let shards: Vec<String> = topics
        .iter()
        .filter_map(|t| autoshard(&state, t).ok())
        .collect();
    leave_unwanted(&state, &shards).await;
    Ok(ok())
}

fn messages_json(messages: Vec<Arc<RelayedMessage>>) -> Response {
    let list: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| message_json(&m.message, true))
        .collect();
    Json(list).into_response()
}

async fn messages_pubsub(
    AxumState(state): AxumState<State>,
    Path(topic): Path<String>,
) -> Result<Response, RestError> {
    let messages = state
        .cache
        .drain(Kind::Pubsub, &topic)
        .ok_or_else(|| RestError::NotFound(String::new()))?;
    Ok(messages_json(messages))
}

async fn messages_content(
    AxumState(state): AxumState<State>,
    Path(topic): Path<String>,
) -> Result<Response, RestError> {
    let messages = state
        .cache
        .drain(Kind::Content, &topic)
        .ok_or_else(|| RestError::NotFound(topic.clone()))?;
    Ok(messages_json(messages))
}

/// How a REST publish picks its topic.
#[derive(Clone, Copy, PartialEq)]
enum Route {
    /// `/relay/v1/messages/{topic}`: only on a topic a REST subscription wants, as nwaku.
    Pubsub,
    /// `/relay/v1/auto/messages`: any shard, as nwaku's (gossipsub's fanout when this node
    /// does not relay it).
    Auto,
}

async fn publish(
    state: &State,
    client: &Client,
    topic: String,
    body: &[u8],
    route: Route,
) -> Result<Response, RestError> {
    // A publish from a client spends the light push quota, the one a light client's publish
    // through this node spends on the libp2p door.
    admit(state, throttle::Service::LightPush, client)
        .map_err(|_| RestError::TooManyRequests("Request rate limit reached".into()))?;
    let message: RestMessage = json_body(body)?;
    let message = message.into_message()?;
    // nwaku publishes only on topics its relay is subscribed to; here, what REST subscriptions
    // want (the node's shards from its start, as nwaku's, less what REST unsubscribed, plus
    // what they joined).
    if route == Route::Pubsub && (!state.topics.contains(&topic) || !rest_wants(state, &topic)) {
        return Err(RestError::BadRequest(format!(
            "Failed to publish: Node not subscribed to topic: {topic}"
        )));
    }
    let published = match route {
        Route::Pubsub => state.node.publish(topic, message).await,
        Route::Auto => state.node.publish_anywhere(topic, message).await,
    };
    match published {
        Ok(_) => Ok(ok()),
        // nwaku answers 200 to a message gossipsub already has (nothing new is delivered).
        Err(PublishError::Duplicate { .. }) => Ok(ok()),
        Err(PublishError::ShuttingDown) => Err(RestError::Unavailable(
            "Failed to publish: the node is shutting down".into(),
        )),
        Err(e) => Err(RestError::BadRequest(format!("Failed to publish: {e}"))),
    }
}

async fn publish_pubsub(
    AxumState(state): AxumState<State>,
    client: Client,
    Path(topic): Path<String>,
    body: Bytes,
) -> Result<Response, RestError> {
    // nwaku refuses topics its relay is not subscribed to: they may have no peers at all.
    if !state.topics.contains(&topic) {
        return Err(RestError::BadRequest(format!(
            "Failed to publish: Node not subscribed to topic: {topic}"
        )));
    }
    publish(&state, &client, topic, &body, Route::Pubsub).await
}

async fn publish_auto(
    AxumState(state): AxumState<State>,
    client: Client,
    body: Bytes,
) -> Result<Response, RestError> {
    let message: RestMessage = json_body(&body)?;
    let Some(content_topic) = message.content_topic.as_deref() else {
        return Err(RestError::BadRequest(
            "Failed to publish: the message has no contentTopic".into(),
        ));
    };
    let topic = autoshard(&state, content_topic)
        .map_err(|e| RestError::BadRequest(format!("Failed to publish. {e}")))?;
    publish(&state, &client, topic, &body, Route::Auto).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::WakuMessage;

    fn relayed(topic: &str, content: &str, n: u8) -> Arc<RelayedMessage> {
        let message = WakuMessage::new(content, vec![n]);
        Arc::new(RelayedMessage {
            pubsub_topic: Arc::from(topic),
            hash: message.hash(topic),
            size: message.encoded_len(),
            message,
            source: None,
        })
    }

    #[test]
    fn a_message_read_through_one_topic_is_gone_from_the_other() {
        let cache = Cache::new(8);
        cache
            .subscribe(Kind::Pubsub, &["/waku/2/rs/1/0".into()])
            .unwrap();
        cache
            .subscribe(
                Kind::Content,
                &["/a/1/b/proto".into(), "/a/1/c/proto".into()],
            )
            .unwrap();
        cache.deliver(&relayed("/waku/2/rs/1/0", "/a/1/b/proto", 1));
        cache.deliver(&relayed("/waku/2/rs/1/0", "/a/1/c/proto", 2));
        assert_eq!(cache.drain(Kind::Content, "/a/1/b/proto").unwrap().len(), 1);
        let left = cache.drain(Kind::Pubsub, "/waku/2/rs/1/0").unwrap();
        assert_eq!(left.len(), 1, "only the message not read yet");
        assert_eq!(left[0].message.content_topic, "/a/1/c/proto");
        assert!(cache
            .drain(Kind::Content, "/a/1/c/proto")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn cache_is_bounded_per_topic_and_drained_by_reads() {
        let cache = Cache::new(2);
        cache
            .subscribe(Kind::Pubsub, &["/waku/2/rs/1/0".into()])
            .unwrap();
        assert!(cache.drain(Kind::Pubsub, "/waku/2/rs/1/1").is_none());
        for n in 0..3 {
            cache.deliver(&relayed("/waku/2/rs/1/0", "/a/1/b/proto", n));
            cache.deliver(&relayed("/waku/2/rs/1/1", "/a/1/b/proto", n));
        }
        let got = cache.drain(Kind::Pubsub, "/waku/2/rs/1/0").unwrap();
        assert_eq!(
            got.iter().map(|m| m.message.payload[0]).collect::<Vec<_>>(),
            vec![1, 2],
            "the oldest message is dropped first"
        );
        assert_eq!(
            cache.drain(Kind::Pubsub, "/waku/2/rs/1/0").unwrap().len(),
            0
        );
        cache.unsubscribe(Kind::Pubsub, &["/waku/2/rs/1/0".into()]);
        assert!(cache.drain(Kind::Pubsub, "/waku/2/rs/1/0").is_none());
    }

    #[test]
    fn subscriptions_are_bounded() {
        let cache = Cache::new(1);
        let topics: Vec<String> = (0..=MAX_SUBSCRIPTIONS)
            .map(|i| format!("/a/1/t{i}/proto"))
            .collect();
        assert!(cache.subscribe(Kind::Content, &topics).is_err());
        assert!(cache
            .subscribe(Kind::Content, &topics[..MAX_SUBSCRIPTIONS])
            .is_ok());
    }
}
