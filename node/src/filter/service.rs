//! The filter task: owns the subscription table, answers subscribe requests and pushes matching
//! messages to subscribers.
//!
//! Inputs (both bounded, both filled by the swarm task without waiting):
//! - subscribe requests with their response channels ([`REQUEST_QUEUE`]; full: the swarm task
//!   answers 503 itself);
//! - accepted relay messages through [`Sink`] ([`MESSAGE_QUEUE`]; full: the message is dropped
//!   for filter subscribers and counted in `roost_filter_dropped_messages_total`).
//!
//! Outputs go through the node's command channel: responses (`Command::Respond`), pushes
//! (`Command::Request` on the push protocol, each awaited concurrently with a timeout) and
//! keep-alive marks for subscribers' connections. Pushes in flight are capped per peer and in
//! total; a push over either cap is dropped and counted (`reason="backlog"`) rather than queued.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{future::BoxFuture, stream::FuturesUnordered, FutureExt, StreamExt};
use libp2p::{request_response::ResponseChannel, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    decode_subscribe_request, encode_push, encode_subscribe_response,
    subscriptions::{Limits, PeerChange, Subscriptions},
    Config, Metrics, Refused, RequestType, Status, SubscribeRequest, UNKNOWN_REQUEST_ID,
};
use crate::{
    relay::MessageSink,
    relay::RelayedMessage,
    relay::RelayedTopics,
    reqres::{Protocol as ReqResProtocol, RequestError},
    swarm::command::Command,
};

/// Subscribe requests waiting for the filter task. Full means the task is far behind: new
/// requests are answered 503 by the swarm task.
pub const REQUEST_QUEUE: usize = 256;
/// Relayed messages waiting to be matched. Full means pushes cannot keep up: messages are
/// dropped for filter subscribers (never for relay or store) and counted.
pub const MESSAGE_QUEUE: usize = 4096;
/// Pushes awaiting an answer, per subscriber and in total.
const MAX_PUSHES_PER_PEER: usize = 64;
const MAX_PUSHES_IN_FLIGHT: usize = 4096;
/// How often lapsed subscriptions are swept and gauges refreshed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// How often the queue-depth gauges are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);
/// Extra time on top of `filter.push_timeout` before the task gives up on a push whose command
/// never got an answer (the swarm task enforces the real timeout).
const PUSH_TIMEOUT_SLACK: Duration = Duration::from_secs(5);

/// A subscribe request handed over by the swarm task.
#[derive(Debug)]
pub struct Inbound {
    pub peer: PeerId,
    pub bytes: Vec<u8>,
    pub channel: ResponseChannel<Vec<u8>>,
    pub received: Instant,
}

/// Feeds accepted relay messages to the filter task without blocking the swarm task.
pub struct Sink {
    tx: mpsc::Sender<Arc<RelayedMessage>>,
    interest: Interest,
    metrics: Metrics,
}

/// The content topics some filter subscriber wants, shared by the filter task (which writes it
/// when its table changes) and the sink on the swarm task (which reads it per message): a
/// message nobody subscribed to costs a set lookup, not a wake-up of the filter task.
pub type Interest = Arc<std::sync::RwLock<HashSet<String>>>;

impl MessageSink for Sink {
    fn deliver(&mut self, message: &Arc<RelayedMessage>) {
        let wanted = self.interest.read().map_or(true, |topics| {
            topics.contains(&message.message.content_topic)
        });
        if !wanted {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(message.clone()) {
            self.metrics.dropped_messages.inc();
        }
    }
}

type PushResult = (PeerId, Result<Vec<u8>, RequestError>, Duration);

/// Where a snapshot of the subscription table goes.
pub type SnapshotReply = oneshot::Sender<Vec<(PeerId, Vec<super::subscriptions::Criterion>)>>;

/// The filter task.
pub struct FilterTask {
    requests: mpsc::Receiver<Inbound>,
    /// Snapshot requests (the REST admin route); the task answers between other work.
    snapshots: mpsc::Receiver<SnapshotReply>,
    messages: mpsc::Receiver<Arc<RelayedMessage>>,
    commands: mpsc::Sender<Command>,
    shutdown: watch::Receiver<bool>,
    table: Subscriptions,
    /// Pubsub topics this node relays: subscriptions to others could never be served.
    served_topics: RelayedTopics,
    push_timeout: Duration,
    metrics: Metrics,
    in_flight: HashMap<PeerId, usize>,
    pushes: FuturesUnordered<BoxFuture<'static, PushResult>>,
    /// Subscribers whose connections the swarm keeps open.
    kept: HashSet<PeerId>,
    interest: Interest,
}

/// What [`FilterTask::new`] returns besides the task: the swarm side's request sender and the
/// relay sink.
pub struct Wiring {
    pub requests: mpsc::Sender<Inbound>,
    pub snapshots: mpsc::Sender<SnapshotReply>,
    pub sink: Sink,
}

impl FilterTask {
    pub fn new(
        config: &Config,
        served_topics: RelayedTopics,
        commands: mpsc::Sender<Command>,
        shutdown: watch::Receiver<bool>,
        metrics: Metrics,
    ) -> (FilterTask, Wiring) {
        let (request_tx, requests) = mpsc::channel(REQUEST_QUEUE);
        let (message_tx, messages) = mpsc::channel(MESSAGE_QUEUE);
        // A few waiting readers at most: each snapshot is answered in one go.
        let (snapshot_tx, snapshots) = mpsc::channel(8);
        let interest = Interest::default();
        let task = FilterTask {
            requests,
            snapshots,
            messages,
            commands,
            shutdown,
            table: Subscriptions::new(Limits::from(config)),
            served_topics,
            push_timeout: config.push_timeout,
            metrics: metrics.clone(),
            in_flight: HashMap::new(),
            pushes: FuturesUnordered::new(),
            kept: HashSet::new(),
            interest: interest.clone(),
        };
        let wiring = Wiring {
            requests: request_tx,
            snapshots: snapshot_tx,
            sink: Sink {
                tx: message_tx,
                interest,
                metrics,
            },
        };
        (task, wiring)
    }

    pub async fn run(mut self) {
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gauges = tokio::time::interval(GAUGE_INTERVAL);
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() || *self.shutdown.borrow() {
                        break;
                    }
                }
                request = self.requests.recv() => match request {
                    Some(request) => self.on_request(request),
                    None => break,
                },
                Some(done) = self.pushes.next(), if !self.pushes.is_empty() => self.on_push_done(done),
                message = self.messages.recv() => match message {
                    Some(message) => self.on_message(&message),
                    None => break,
                },
                Some(reply) = self.snapshots.recv() => {
                    // The reader may have given up meanwhile: nothing to do then.
                    let _ = reply.send(self.table.snapshot(Instant::now()));
                }
                _ = sweep.tick() => self.sweep(),
                _ = gauges.tick() => self.refresh_queue_gauges(),
            }
        }
        tracing::debug!(pushes_in_flight = self.pushes.len(), "filter task stopped");
    }

    fn refresh_queue_gauges(&self) {
        self.metrics
            .set_queue_depth("requests", self.requests.len());
        self.metrics
            .set_queue_depth("messages", self.messages.len());
        self.metrics.set_queue_depth("pushes", self.pushes.len());
    }

    fn on_request(&mut self, request: Inbound) {
        let Inbound {
            peer,
            bytes,
            channel,
            received,
        } = request;
        let (request_id, kind, result) = match decode_subscribe_request(&bytes) {
            Err((request_id, kind, refused)) => (request_id, kind, Err(refused)),
            Ok((request_id, request)) => {
                let kind = request.kind();
                (request_id, Some(kind), self.handle(peer, request))
            }
        };
        // A refused request may still have swept the peer's lapsed subscription.
        self.reconcile(
            peer,
            if result.is_ok() {
                "unsubscribed"
            } else {
                "expired"
            },
        );
        let outcome = match &result {
            Ok(_) => Status::OK.outcome(),
            Err(refused) => {
                tracing::debug!(%peer, kind = kind.map(RequestType::label), status = %refused.status, reason = %refused.description, "filter request refused");
                refused.status.outcome()
            }
        };
        let result = result.map(|_| ());
        self.send_command(Command::Respond {
            protocol: ReqResProtocol::FilterSubscribe,
            channel,
            response: encode_subscribe_response(&request_id, &result),
        });
        self.metrics.answered(
            kind.map_or("unknown", RequestType::label),
            outcome,
            received.elapsed().as_secs_f64(),
        );
        self.refresh_gauges();
    }

    fn handle(&mut self, peer: PeerId, request: SubscribeRequest) -> Result<PeerChange, Refused> {
        let now = Instant::now();
        match request {
            SubscribeRequest::Ping => self.table.ping(peer, now),
            SubscribeRequest::UnsubscribeAll => self.table.unsubscribe_all(peer, now),
            SubscribeRequest::Unsubscribe {
                pubsub_topic,
                content_topics,
            } => self
                .table
                .unsubscribe(peer, &pubsub_topic, &content_topics, now),
            SubscribeRequest::Subscribe {
                pubsub_topic,
                content_topics,
            } => {
                // As nwaku, a subscription may come before the relay joins its shard (a REST
                // relay subscription can add it); free-form topics are never relayed here.
                if !self.served_topics.could_join(&pubsub_topic) {
                    return Err(Refused::new(
                        Status::BAD_REQUEST,
                        format!(
                            "this node cannot relay pubsub topic {pubsub_topic}; it relays {}",
                            self.served_topics.list().join(", ")
                        ),
                    ));
                }
                self.table
                    .subscribe(peer, &pubsub_topic, &content_topics, now)
            }
        }
    }

    /// Keeps a subscriber's connections open exactly while it is subscribed; `reason` names why
    /// it is no longer subscribed, for the metric.
    fn reconcile(&mut self, peer: PeerId, reason: &'static str) {
        let subscribed = self.table.contains(&peer);
        if subscribed && self.kept.insert(peer) {
            self.send_command(Command::KeepAlive {
                peer,
                keep_alive: true,
            });
        } else if !subscribed && self.kept.remove(&peer) {
            self.metrics
                .subscriptions_removed
                .get_or_create(&super::metrics::ReasonLabels { reason })
                .inc();
            self.send_command(Command::KeepAlive {
                peer,
                keep_alive: false,
            });
        }
    }

    fn on_message(&mut self, message: &RelayedMessage) {
        let now = Instant::now();
        let peers = self
            .table
            .matching(&message.pubsub_topic, &message.message.content_topic, now);
        if peers.is_empty() {
            return;
        }
        let push = encode_push(&message.pubsub_topic, &message.message);
        for peer in peers {
            let in_flight = self.in_flight.get(&peer).copied().unwrap_or(0);
            if in_flight >= MAX_PUSHES_PER_PEER || self.pushes.len() >= MAX_PUSHES_IN_FLIGHT {
                self.metrics.push_failed("backlog");
                continue;
            }
            self.in_flight.insert(peer, in_flight + 1);
            let commands = self.commands.clone();
            let request = push.clone();
            let limit = self.push_timeout + PUSH_TIMEOUT_SLACK;
            self.pushes.push(
                async move {
                    let started = Instant::now();
                    let (reply, rx) = oneshot::channel();
                    let exchange = async {
                        commands
                            .send(Command::Request {
                                protocol: ReqResProtocol::FilterPush,
                                peer,
                                addresses: Vec::new(),
                                request,
                                reply,
                            })
                            .await
                            .map_err(|_| RequestError::ShuttingDown)?;
                        rx.await.map_err(|_| RequestError::ShuttingDown)?
                    };
                    let result = tokio::time::timeout(limit, exchange)
                        .await
                        .unwrap_or(Err(RequestError::Timeout));
                    (peer, result, started.elapsed())
                }
                .boxed(),
            );
        }
    }

    fn on_push_done(&mut self, (peer, result, took): PushResult) {
        if let Some(n) = self.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(&peer);
            }
        }
        match result {
            Ok(_) => {
                self.metrics.pushes.inc();
                self.metrics.push_duration.observe(took.as_secs_f64());
            }
            Err(error) => {
                let reason = match &error {
                    RequestError::Timeout => "timeout",
                    RequestError::Dial(_) => "dial",
                    RequestError::Unsupported => "unsupported",
                    RequestError::ConnectionClosed => "connection_closed",
                    RequestError::Io(_) => "io",
                    RequestError::Disabled | RequestError::ShuttingDown => "shutting_down",
                };
                self.metrics.push_failed(reason);
                tracing::debug!(%peer, %error, "filter push failed");
                // A subscriber that cannot be reached or no longer speaks the push protocol
                // is dropped; it finds out on its next ping (404) and subscribes again.
                if matches!(error, RequestError::Dial(_) | RequestError::Unsupported)
                    && self.table.remove_peer(&peer)
                {
                    self.reconcile(peer, "push_failed");
                    self.refresh_gauges();
                }
            }
        }
    }

    fn sweep(&mut self) {
        for peer in self.table.expire(Instant::now()) {
            self.reconcile(peer, "expired");
        }
        self.refresh_gauges();
    }

    fn refresh_gauges(&self) {
        // The table changed (or may have): the sink's view of what is wanted follows.
        let wanted = self.table.content_topics();
        if let Ok(mut interest) = self.interest.write() {
            if *interest != wanted {
                *interest = wanted;
            }
        }
        self.metrics
            .subscribed_peers
            .set(self.table.peer_count() as i64);
        self.metrics
            .criteria
            .set(self.table.criteria_count() as i64);
    }

    /// Sends a command without holding up the loop: if the channel is full, a short-lived task
    /// waits for room (responses and keep-alive marks must not be lost).
    fn send_command(&self, command: Command) {
        match self.commands.try_send(command) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(command)) => {
                let commands = self.commands.clone();
                tokio::spawn(async move {
                    let _ = commands.send(command).await;
                });
            }
            // The swarm task is gone: the node is stopping.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The 429 the swarm task sends, undecoded, for a request over the peer's filter quota.
pub fn throttled_response(throttled: &crate::throttle::Throttled) -> Vec<u8> {
    encode_subscribe_response(
        UNKNOWN_REQUEST_ID,
        &Err(Refused::new(
            Status::TOO_MANY_REQUESTS,
            throttled.to_string(),
        )),
    )
}

/// The 503 the swarm task sends when the filter task's queue is full.
pub fn busy_response() -> Vec<u8> {
    encode_subscribe_response(
        UNKNOWN_REQUEST_ID,
        &Err(Refused::new(
            Status::SERVICE_UNAVAILABLE,
            "the filter service is overloaded; retry shortly",
        )),
    )
}
