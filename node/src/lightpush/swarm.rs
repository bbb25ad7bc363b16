//! The light push service on the swarm task: decode, resolve the pubsub topic, publish through
//! the relay, answer.

use std::time::Instant;

use libp2p::{
    request_response::{self, ResponseChannel},
    swarm::ConnectionId,
    PeerId,
};
use tokio::sync::mpsc;

use super::{decode_request, encode_response, Metrics, PushRequest, Refused, Status, Version};
use crate::{
    message::WakuMessage,
    relay::Invalid,
    store::{ArchiveHandle, StoreError},
    swarm::{Command, PublishError, SwarmTask},
    throttle,
};

/// Light push state kept by the swarm task.
pub struct Service {
    pub metrics: Metrics,
    /// The archive, on a store node: a storable message is answered 200 only once committed.
    store: Option<ArchiveHandle>,
    /// Answers sent from the tasks that wait for the store.
    commands: mpsc::Sender<Command>,
}

impl Service {
    pub fn new(
        metrics: Metrics,
        store: Option<ArchiveHandle>,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        Service {
            metrics,
            store,
            commands,
        }
    }
}

/// A published push: relay peers reached, and the message if the store must commit it before
/// the answer.
struct Published {
    relay_peers: u32,
    pubsub_topic: String,
    to_store: Option<WakuMessage>,
}

/// The stable label of an inbound stream failure.
pub(crate) fn inbound_failure_label(error: &request_response::InboundFailure) -> &'static str {
    match error {
        request_response::InboundFailure::Timeout => "timeout",
        request_response::InboundFailure::ConnectionClosed => "connection_closed",
        request_response::InboundFailure::UnsupportedProtocols => "unsupported",
        request_response::InboundFailure::ResponseOmission => "response_omission",
        request_response::InboundFailure::Io(_) => "io",
    }
}

impl SwarmTask {
    /// Events of one light push behaviour (v3 or legacy).
    pub(crate) fn on_lightpush(
        &mut self,
        version: Version,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) {
        let Some(event) = self.take_outbound(version.reqres(), event) else {
            return;
        };
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
            } => self.serve_lightpush(version, peer, connection_id, &request, channel),
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, version = version.label(), %error, "light push request failed");
                self.lightpush
                    .metrics
                    .stream_failures
                    .get_or_create(&super::metrics::FailureLabels {
                        version: version.label(),
                        reason: inbound_failure_label(&error),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    fn serve_lightpush(
        &mut self,
        version: Version,
        peer: PeerId,
        connection: ConnectionId,
        bytes: &[u8],
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let started = Instant::now();
        // The throttle first: an over-quota request gets a 429 without being decoded.
        let (request_id, result) = match self.admit(throttle::Service::LightPush, peer, connection)
        {
            Err(throttled) => (
                super::UNKNOWN_REQUEST_ID.to_owned(),
                Err(Refused::new(
                    Status::TOO_MANY_REQUESTS,
                    throttled.to_string(),
                )),
            ),
            Ok(()) => match decode_request(version, bytes) {
                Ok(request) => {
                    let id = request.request_id.clone();
                    (id, self.light_push(peer, request))
                }
                Err((id, refused)) => (id, Err(refused)),
            },
        };
        let result = match result {
            Ok(Published {
                relay_peers,
                pubsub_topic,
                to_store: Some(message),
            }) => {
                if let Some(store) = self.lightpush.store.clone() {
                    self.answer_once_stored(
                        version,
                        store,
                        request_id,
                        relay_peers,
                        pubsub_topic,
                        message,
                        channel,
                        started,
                    );
                    return;
                }
                Ok(relay_peers)
            }
            Ok(published) => Ok(published.relay_peers),
            Err(refused) => Err(refused),
        };
        let outcome = match &result {
            Ok(_) => Status::SUCCESS.outcome(),
            Err(refused) => {
                tracing::debug!(%peer, version = version.label(), status = %refused.status, reason = %refused.description, "light push refused");
                refused.status.outcome()
            }
        };
        let response = encode_response(version, &request_id, &result);
        let behaviour = match version {
            Version::V3 => &mut self.swarm.behaviour_mut().lightpush,
            Version::Legacy => &mut self.swarm.behaviour_mut().lightpush_legacy,
        };
        // Err: the client went away meanwhile; the outcome is counted all the same.
        let _ = behaviour.send_response(channel, response);
        self.lightpush
            .metrics
            .answered(version, outcome, started.elapsed().as_secs_f64());
    }

    /// Waits for the store to commit a storable message before answering 200, off the swarm
    /// task. (Concurrency is bounded by libp2p's per-connection stream limit and the connection
    /// limits; the store's writer queue makes inserts wait, never drop.)
    #[allow(clippy::too_many_arguments)]
    fn answer_once_stored(
        &self,
        version: Version,
        store: ArchiveHandle,
        request_id: String,
        relay_peers: u32,
        pubsub_topic: String,
        message: WakuMessage,
        channel: ResponseChannel<Vec<u8>>,
        started: Instant,
    ) {
        let commands = self.lightpush.commands.clone();
        let metrics = self.lightpush.metrics.clone();
        tokio::spawn(async move {
            let hash = message.hash(&pubsub_topic);
            let result = match store.insert(&pubsub_topic, message).await {
                // Rejected: the message left the store's timestamp window while it was being
                // relayed; it was not storable, so the relay answer stands.
                Ok(_) => Ok(relay_peers),
                Err(StoreError::ShuttingDown) => Err(Refused::new(
                    Status::SERVICE_NOT_AVAILABLE,
                    format!("relayed to {relay_peers} peer(s), but the node is shutting down and did not store it"),
                )),
                Err(e) => Err(Refused::new(
                    Status::INTERNAL_SERVER_ERROR,
                    format!("relayed to {relay_peers} peer(s), but not stored: {e}"),
                )),
            };
            let outcome = match &result {
                Ok(_) => Status::SUCCESS.outcome(),
                Err(refused) => {
                    tracing::warn!(%hash, status = %refused.status, reason = %refused.description, "light push not stored");
                    refused.status.outcome()
                }
            };
            let response = encode_response(version, &request_id, &result);
            let _ = commands
                .send(Command::Respond {
                    protocol: version.reqres(),
                    channel,
                    response,
                })
                .await;
            metrics.answered(version, outcome, started.elapsed().as_secs_f64());
        });
    }

    /// Validates and publishes one pushed message.
    fn light_push(&mut self, peer: PeerId, request: PushRequest) -> Result<Published, Refused> {
        let pubsub_topic = match request.pubsub_topic {
            Some(topic) if topic.trim().is_empty() => {
                return Err(Refused::new(
                    Status::BAD_REQUEST,
                    "pubsub topic must not be empty",
                ))
            }
            Some(topic) => topic,
            None => self
                .relay_config
                .autoshard(&request.message.content_topic)
                .map_err(|e| {
                    Refused::new(Status::INVALID_MESSAGE, format!("cannot autoshard: {e}"))
                })?
                .to_string(),
        };
        let to_store = self
            .lightpush
            .store
            .as_ref()
            .filter(|store| store.accepts(&pubsub_topic, &request.message))
            .map(|_| request.message.clone());
        let published = self.publish(pubsub_topic.clone(), request.message);
        let receipt = published.map_err(|e| match e {
            PublishError::Invalid(Invalid::Oversize { size, max }) => Refused::new(
                Status::PAYLOAD_TOO_LARGE,
                format!("message of {size} bytes exceeds this node's limit of {max} bytes"),
            ),
            PublishError::Invalid(Invalid::UnknownPubsubTopic(topic)) => Refused::new(
                Status::UNSUPPORTED_PUBSUB_TOPIC,
                format!(
                    "this node does not relay pubsub topic {topic}; it relays {}",
                    self.relay_config
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
            PublishError::Duplicate => {
                Refused::new(Status::INVALID_MESSAGE, "message was already relayed")
            }
            PublishError::RelayDisabled | PublishError::ShuttingDown => {
                Refused::new(Status::SERVICE_NOT_AVAILABLE, e.to_string())
            }
            PublishError::Failed(reason) => Refused::new(
                Status::SERVICE_NOT_AVAILABLE,
                format!("cannot publish now: {reason}"),
            ),
        })?;
        tracing::debug!(%peer, hash = %receipt.hash, topic = %pubsub_topic, relay_peers = receipt.relay_peers, "light push published");
        if receipt.relay_peers == 0 {
            return Err(Refused::new(
                Status::NO_PEERS_TO_RELAY,
                format!("no relay peers on {pubsub_topic}"),
            ));
        }
        Ok(Published {
            relay_peers: u32::try_from(receipt.relay_peers).unwrap_or(u32::MAX),
            pubsub_topic,
            to_store,
        })
    }
}
