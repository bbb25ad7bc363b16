//! Filter on the swarm task: hand subscribe requests to the filter task, and deliver pushes
//! this node receives as a client.

use std::{sync::Arc, time::Instant};

use libp2p::request_response;
use tokio::sync::{broadcast, mpsc};

use super::{decode_push, service::Inbound, Metrics, ReceivedPush};
use crate::{
    swarm::{ReqResProtocol, SwarmTask},
    throttle::Service,
};

/// Buffer of the broadcast that client-side consumers (`roost subscribe`) read pushes from; a
/// consumer that falls this far behind misses pushes (it sees `Lagged`).
pub const RECEIVED_BUFFER: usize = 1024;

/// Filter state kept by the swarm task.
pub struct SwarmSide {
    /// To the filter task; `None` when this node does not serve filter.
    pub requests: Option<mpsc::Sender<Inbound>>,
    /// Pushes received as a client.
    pub received: broadcast::Sender<Arc<ReceivedPush>>,
    pub metrics: Metrics,
}

impl SwarmTask {
    /// Events of the filter-subscribe behaviour.
    pub(crate) fn on_filter_subscribe(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        let Some(event) = self.take_outbound(ReqResProtocol::FilterSubscribe, event) else {
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
            } => {
                // The throttle first: an over-quota request gets a 429 without being decoded.
                if let Err(throttled) = self.admit(Service::Filter, peer, connection_id) {
                    self.filter.metrics.answered("unknown", "throttled", 0.0);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .filter_subscribe
                        .send_response(channel, super::service::throttled_response(&throttled));
                    return;
                }
                let inbound = Inbound {
                    peer,
                    bytes: request,
                    channel,
                    received: Instant::now(),
                };
                let Some(requests) = &self.filter.requests else {
                    // Not reachable: without the service the protocol is outbound only.
                    return;
                };
                match requests.try_send(inbound) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(inbound))
                    | Err(mpsc::error::TrySendError::Closed(inbound)) => {
                        self.filter.metrics.answered("unknown", "unavailable", 0.0);
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .filter_subscribe
                            .send_response(inbound.channel, super::service::busy_response());
                    }
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "filter subscribe request failed");
            }
            _ => {}
        }
    }

    /// Events of the filter-push behaviour: pushes this node sends as a service are resolved by
    /// `take_outbound`; pushes it receives as a client go to [`crate::NodeHandle::filter_pushes`].
    pub(crate) fn on_filter_push(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        let Some(event) = self.take_outbound(ReqResProtocol::FilterPush, event) else {
            return;
        };
        if let request_response::Event::Message {
            peer,
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        } = event
        {
            let outcome = if self.filter.received.receiver_count() == 0 {
                "unsolicited"
            } else {
                match decode_push(peer, &request) {
                    Some(push) => {
                        let _ = self.filter.received.send(Arc::new(push));
                        "delivered"
                    }
                    None => "malformed",
                }
            };
            self.filter
                .metrics
                .received_pushes
                .get_or_create(&super::metrics::OutcomeLabels { outcome })
                .inc();
            // The answer to a push is closing the stream.
            let _ = self
                .swarm
                .behaviour_mut()
                .filter_push
                .send_response(channel, Vec::new());
        }
    }
}
