//! Light push as a behaviour of its own: admit, decode, resolve the pubsub topic, then ask the
//! node to publish ([`Event::Publish`]) and answer with what the publish did
//! ([`published`]).

use std::time::Instant;

use libp2p::{
    request_response::{self, ResponseChannel},
    PeerId,
};

use super::{
    decode_request, encode_response, Config, Metrics, Refused, Status, Version, FRAME_OVERHEAD,
    MAX_RESPONSE, REQUEST_TIMEOUT,
};
use crate::{
    message::WakuMessage,
    relay::{self, Invalid},
    reqres::{self, inbound_failure_label, Handled, Inbound, LpCodec, Responder},
    store::{ArchiveHandle, StoreError},
    swarm::command::{PublishError, PublishReceipt},
    throttle::{self, Throttle, Throttled},
};

/// One light push version (v3 or legacy).
pub type Behaviour = reqres::Behaviour<Service>;

/// The behaviour of `version`: served with `lightpush.enabled`, outbound-only otherwise.
pub fn behaviour(
    config: &Config,
    max_message_size: usize,
    service: Service,
    throttle: Throttle,
) -> Behaviour {
    // Twice the message limit: a somewhat oversize message still gets a clear 413; anything
    // larger is not read at all.
    let max_request = max_message_size.saturating_mul(2) + FRAME_OVERHEAD;
    let inner = request_response::Behaviour::with_codec(
        LpCodec::new(max_request, MAX_RESPONSE),
        [(
            service.version.protocol_id(),
            reqres::support(config.enabled),
        )],
        request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
    );
    reqres::Behaviour::new(inner, service, throttle)
}

/// What the node must act on.
#[derive(Debug)]
pub enum Event {
    /// Publish this message as if it were local, then hand the result to
    /// [`published`].
    Publish(Push),
}

/// A decoded, admitted push waiting for its publish.
#[derive(Debug)]
pub struct Push {
    pub pubsub_topic: String,
    pub message: WakuMessage,
    pub pending: Pending,
}

/// What the answer to a push needs once the message is published.
#[derive(Debug)]
pub struct Pending {
    version: Version,
    peer: PeerId,
    request_id: String,
    pubsub_topic: String,
    /// The message, when the store must commit it before the answer.
    to_store: Option<WakuMessage>,
    channel: ResponseChannel<Vec<u8>>,
    received: Instant,
}

impl Pending {
    pub fn version(&self) -> Version {
        self.version
    }
}

/// Light push state of one version.
pub struct Service {
    version: Version,
    pub metrics: Metrics,
    /// The archive, on a store node: a storable message is answered 200 only once committed.
    store: Option<ArchiveHandle>,
    /// The relay settings (autosharding, served topics).
    relay: relay::Config,
}

impl Service {
    pub fn new(
        version: Version,
        metrics: Metrics,
        store: Option<ArchiveHandle>,
        relay: relay::Config,
    ) -> Self {
        Service {
            version,
            metrics,
            store,
            relay,
        }
    }

    fn answered(&self, outcome: &'static str, started: Instant) {
        self.metrics
            .answered(self.version, outcome, started.elapsed().as_secs_f64());
    }

    fn refused(
        &self,
        peer: PeerId,
        request_id: &str,
        refused: Refused,
        channel: ResponseChannel<Vec<u8>>,
        started: Instant,
    ) -> Handled<Event> {
        tracing::debug!(%peer, version = self.version.label(), status = %refused.status, reason = %refused.description, "light push refused");
        self.answered(refused.status.outcome(), started);
        Handled::Reply(
            channel,
            encode_response(self.version, request_id, &Err(refused)),
        )
    }

    /// The pubsub topic of a push: the given one, or autosharded from the content topic.
    fn pubsub_topic(
        &self,
        given: Option<String>,
        message: &WakuMessage,
    ) -> Result<String, Refused> {
        match given {
            Some(topic) if topic.trim().is_empty() => Err(Refused::new(
                Status::BAD_REQUEST,
                "pubsub topic must not be empty",
            )),
            Some(topic) => Ok(topic),
            None => Ok(self
                .relay
                .autoshard(&message.content_topic)
                .map_err(|e| {
                    Refused::new(Status::INVALID_MESSAGE, format!("cannot autoshard: {e}"))
                })?
                .to_string()),
        }
    }

    fn refusal_of(&self, e: PublishError) -> Refused {
        refusal_for(e, &self.relay)
    }
}

/// The light push answer to a failed publish (nwaku's status codes); the REST API's light push
/// route answers with the same mapping.
pub fn refusal_for(e: PublishError, relay: &relay::Config) -> Refused {
    match e {
        PublishError::Invalid(Invalid::Oversize { size, max }) => Refused::new(
            Status::PAYLOAD_TOO_LARGE,
            // nwaku's words, which tools match, then the size.
            format!("Message size exceeded maximum of {max} bytes (this one: {size} bytes)"),
        ),
        PublishError::Invalid(Invalid::UnknownPubsubTopic(topic)) => Refused::new(
            Status::UNSUPPORTED_PUBSUB_TOPIC,
            format!(
                "this node does not relay pubsub topic {topic}; it relays {}",
                relay
                    .pubsub_topics()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        PublishError::Invalid(invalid) => {
            Refused::new(Status::INVALID_MESSAGE, invalid.to_string())
        }
        // nwaku's relay publishes a message it has seen to no one, and says so.
        PublishError::Duplicate { .. } => Refused::new(
            Status::NO_PEERS_TO_RELAY,
            "not_published_to_any_peer: the message was relayed already",
        ),
        PublishError::RelayDisabled | PublishError::ShuttingDown => {
            Refused::new(Status::SERVICE_NOT_AVAILABLE, e.to_string())
        }
        PublishError::Failed(reason) => Refused::new(
            Status::SERVICE_NOT_AVAILABLE,
            format!("cannot publish now: {reason}"),
        ),
    }
}

impl reqres::Service for Service {
    type Event = Event;

    fn quota(&self, _: &[u8]) -> Option<throttle::Service> {
        Some(throttle::Service::LightPush)
    }

    fn refusal(&mut self, _: &[u8], throttled: &Throttled) -> Vec<u8> {
        let refused = Refused::new(Status::TOO_MANY_REQUESTS, throttled.to_string());
        tracing::debug!(version = self.version.label(), status = %refused.status, reason = %refused.description, "light push refused");
        self.answered(refused.status.outcome(), Instant::now());
        encode_response(self.version, super::UNKNOWN_REQUEST_ID, &Err(refused))
    }

    fn on_request(&mut self, inbound: Inbound) -> Handled<Event> {
        let Inbound {
            peer,
            request,
            channel,
            received,
            ..
        } = inbound;
        let request = match decode_request(self.version, &request) {
            Ok(request) => request,
            Err((id, refused)) => return self.refused(peer, &id, refused, channel, received),
        };
        let pubsub_topic = match self.pubsub_topic(request.pubsub_topic, &request.message) {
            Ok(topic) => topic,
            Err(refused) => {
                return self.refused(peer, &request.request_id, refused, channel, received)
            }
        };
        let to_store = self
            .store
            .as_ref()
            .filter(|store| store.accepts(&pubsub_topic, &request.message))
            .map(|_| request.message.clone());
        Handled::Emit(Event::Publish(Push {
            pubsub_topic: pubsub_topic.clone(),
            message: request.message,
            pending: Pending {
                version: self.version,
                peer,
                request_id: request.request_id,
                pubsub_topic,
                to_store,
                channel,
                received,
            },
        }))
    }

    fn on_inbound_failure(&mut self, peer: PeerId, error: &request_response::InboundFailure) {
        let version = self.version;
        tracing::debug!(%peer, version = version.label(), %error, "light push request failed");
        self.metrics
            .stream_failures
            .get_or_create(&super::metrics::FailureLabels {
                version: version.label(),
                reason: inbound_failure_label(error),
            })
            .inc();
    }
}

/// Answers a push once the node published it (or could not).
pub fn published(
    behaviour: &mut Behaviour,
    pending: Pending,
    result: Result<PublishReceipt, PublishError>,
) {
    let Pending {
        version,
        peer,
        request_id,
        pubsub_topic,
        to_store,
        channel,
        received,
    } = pending;
    let service = behaviour.service();
    let receipt = match result {
        Ok(receipt) => receipt,
        // A store node asked again for a message it relayed but could not store (its archive
        // was unavailable, and the client retried after the 500): relay has seen it, but the
        // archive may not have it. Store it now; only when the archive already had it is the
        // answer nwaku's "relayed already".
        Err(PublishError::Duplicate { relay_peers })
            if to_store.is_some() && service.store.is_some() =>
        {
            if let (Some(message), Some(store)) = (to_store, service.store.clone()) {
                let metrics = service.metrics.clone();
                let already = service.refusal_of(PublishError::Duplicate { relay_peers });
                let responder = behaviour.responder();
                answer_once_stored(
                    version,
                    store,
                    (
                        Stored {
                            request_id,
                            relay_peers: u32::try_from(relay_peers).unwrap_or(u32::MAX),
                            pubsub_topic,
                            message,
                        },
                        Relayed::Before { already },
                    ),
                    channel,
                    (metrics, received),
                    responder,
                );
            }
            return;
        }
        Err(e) => {
            let refused = service.refusal_of(e);
            if let Handled::Reply(channel, response) =
                service.refused(peer, &request_id, refused, channel, received)
            {
                behaviour.respond(channel, response);
            }
            return;
        }
    };
    tracing::debug!(%peer, hash = %receipt.hash, topic = %pubsub_topic, relay_peers = receipt.relay_peers, "light push published");
    if receipt.relay_peers == 0 {
        let refused = Refused::new(
            Status::NO_PEERS_TO_RELAY,
            format!("not_published_to_any_peer: no relay peers on {pubsub_topic}"),
        );
        if let Handled::Reply(channel, response) =
            service.refused(peer, &request_id, refused, channel, received)
        {
            behaviour.respond(channel, response);
        }
        return;
    }
    let relay_peers = u32::try_from(receipt.relay_peers).unwrap_or(u32::MAX);
    if let (Some(message), Some(store)) = (to_store, service.store.clone()) {
        let metrics = service.metrics.clone();
        let responder = behaviour.responder();
        answer_once_stored(
            version,
            store,
            (
                Stored {
                    request_id,
                    relay_peers,
                    pubsub_topic,
                    message,
                },
                Relayed::Now,
            ),
            channel,
            (metrics, received),
            responder,
        );
        return;
    }
    service.answered(Status::SUCCESS.outcome(), received);
    let response = encode_response(version, &request_id, &Ok(relay_peers));
    // Err: the client went away meanwhile; the outcome is counted all the same.
    behaviour.respond(channel, response);
}

/// A relayed push the store must commit before the answer.
struct Stored {
    request_id: String,
    relay_peers: u32,
    pubsub_topic: String,
    message: WakuMessage,
}

/// What a store node's push is to its archive: new to relay, or a retry of one relay had
/// already seen (`already`: the answer when the archive has it too).
enum Relayed {
    Now,
    Before { already: Refused },
}

/// Waits for the store to commit a storable message before answering 200, off the swarm
/// task. (Concurrency is bounded by libp2p's per-connection stream limit and the connection
/// limits; the store's writer queue makes inserts wait, never drop.)
fn answer_once_stored(
    version: Version,
    store: ArchiveHandle,
    (stored, relayed): (Stored, Relayed),
    channel: ResponseChannel<Vec<u8>>,
    (metrics, started): (Metrics, Instant),
    responder: Responder,
) {
    let Stored {
        request_id,
        relay_peers,
        pubsub_topic,
        message,
    } = stored;
    tokio::spawn(async move {
        let hash = message.hash(&pubsub_topic);
        let inserted = store.insert(&pubsub_topic, message).await;
        let result = match (inserted, relayed) {
            // Rejected: the message left the store's timestamp window while it was being
            // relayed; it was not storable, so the relay answer stands.
            (Ok(_), Relayed::Now) => Ok(relay_peers),
            (Ok(crate::store::InsertOutcome::Stored), Relayed::Before { .. }) if relay_peers > 0 => {
                tracing::info!(%hash, "light push retry: relayed before, stored now");
                Ok(relay_peers)
            }
            (Ok(_), Relayed::Before { already }) => Err(already),
            (Err(StoreError::ShuttingDown), _) => Err(Refused::new(
                Status::SERVICE_NOT_AVAILABLE,
                format!("relayed to {relay_peers} peer(s), but the node is shutting down and did not store it"),
            )),
            (Err(e), _) => Err(Refused::new(
                Status::INTERNAL_SERVER_ERROR,
                format!("relayed to {relay_peers} peer(s), but not stored: {e}"),
            )),
        };
        let outcome = match &result {
            Ok(_) => Status::SUCCESS.outcome(),
            // A repeat of what relay and the archive both have: nwaku's "relayed already".
            Err(refused) if refused.status == Status::NO_PEERS_TO_RELAY => {
                tracing::debug!(%hash, reason = %refused.description, "light push repeated");
                refused.status.outcome()
            }
            Err(refused) => {
                tracing::warn!(%hash, status = %refused.status, reason = %refused.description, "light push not stored");
                refused.status.outcome()
            }
        };
        let response = encode_response(version, &request_id, &result);
        responder.respond(channel, response).await;
        metrics.answered(version, outcome, started.elapsed().as_secs_f64());
    });
}
