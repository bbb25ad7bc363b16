//! The light push service on the swarm task: decode, resolve the pubsub topic, publish through
//! the relay, answer.

use std::time::Instant;

use libp2p::{
    request_response::{self, ResponseChannel},
    PeerId,
};

use super::{decode_request, encode_response, Metrics, PushRequest, Refused, Status, Version};
use crate::{
    relay::Invalid,
    swarm::{PublishError, SwarmTask},
};

/// Light push state kept by the swarm task.
pub struct Service {
    pub metrics: Metrics,
}

impl Service {
    pub fn new(metrics: Metrics) -> Self {
        Service { metrics }
    }
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
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.serve_lightpush(version, peer, &request, channel),
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
        bytes: &[u8],
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let started = Instant::now();
        let (request_id, result) = match decode_request(version, bytes) {
            Ok(request) => {
                let id = request.request_id.clone();
                (id, self.light_push(peer, request))
            }
            Err((id, refused)) => (id, Err(refused)),
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

    /// Validates and publishes one pushed message; `Ok` is the number of relay peers.
    fn light_push(&mut self, peer: PeerId, request: PushRequest) -> Result<u32, Refused> {
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
        Ok(u32::try_from(receipt.relay_peers).unwrap_or(u32::MAX))
    }
}
