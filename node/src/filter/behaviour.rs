//! Filter's two behaviours: subscribe (admit, then hand the request, undecoded, to the filter
//! task) and push (pushes this node sends as a service; pushes it receives as a client go to
//! [`crate::NodeHandle::filter_pushes`]).

use std::{convert::Infallible, sync::Arc};

use libp2p::{request_response, PeerId};
use tokio::sync::{broadcast, mpsc};

use super::{
    decode_push, service::Inbound as Subscribe, Config, Metrics, ReceivedPush,
    MAX_SUBSCRIBE_REQUEST, MAX_SUBSCRIBE_RESPONSE, MIN_PUSH_MESSAGE, PUSH_OVERHEAD, PUSH_PROTOCOL,
    SUBSCRIBE_PROTOCOL, SUBSCRIBE_TIMEOUT,
};
use crate::{
    reqres::{self, Handled, Inbound, LpCodec},
    throttle::{self, Throttle, Throttled},
};

/// Buffer of the broadcast that client-side consumers (`roost subscribe`) read pushes from; a
/// consumer that falls this far behind misses pushes (it sees `Lagged`).
pub const RECEIVED_BUFFER: usize = 1024;

/// Filter subscribe: served with `filter.enabled`, outbound-only otherwise.
pub type SubscribeBehaviour = reqres::Behaviour<SubscribeService>;
/// Filter push: every node can receive pushes (as a client); only `filter.enabled` nodes send
/// them.
pub type PushBehaviour = reqres::Behaviour<PushService>;

/// The subscribe behaviour.
pub fn subscribe_behaviour(
    config: &Config,
    service: SubscribeService,
    throttle: Throttle,
) -> SubscribeBehaviour {
    let inner = request_response::Behaviour::with_codec(
        LpCodec::new(MAX_SUBSCRIBE_REQUEST, MAX_SUBSCRIBE_RESPONSE),
        [(SUBSCRIBE_PROTOCOL, reqres::support(config.enabled))],
        request_response::Config::default().with_request_timeout(SUBSCRIBE_TIMEOUT),
    );
    reqres::Behaviour::new(inner, service, throttle)
}

/// The push behaviour.
pub fn push_behaviour(
    config: &Config,
    max_message_size: usize,
    service: PushService,
    throttle: Throttle,
) -> PushBehaviour {
    let support = if config.enabled {
        request_response::ProtocolSupport::Full
    } else {
        request_response::ProtocolSupport::Inbound
    };
    let max_push = max_message_size.max(MIN_PUSH_MESSAGE) + PUSH_OVERHEAD;
    let inner = request_response::Behaviour::with_codec(
        LpCodec::one_way(max_push),
        [(PUSH_PROTOCOL, support)],
        request_response::Config::default().with_request_timeout(config.push_timeout),
    );
    reqres::Behaviour::new(inner, service, throttle)
}

/// Subscribe requests go to the filter task.
pub struct SubscribeService {
    /// To the filter task; `None` when this node does not serve filter.
    requests: Option<mpsc::Sender<Subscribe>>,
    metrics: Metrics,
}

impl SubscribeService {
    pub fn new(requests: Option<mpsc::Sender<Subscribe>>, metrics: Metrics) -> Self {
        SubscribeService { requests, metrics }
    }
}

impl reqres::Service for SubscribeService {
    type Event = Infallible;

    fn quota(&self, _: &[u8]) -> Option<throttle::Service> {
        Some(throttle::Service::Filter)
    }

    fn refusal(&mut self, _: &[u8], throttled: &Throttled) -> Vec<u8> {
        self.metrics.answered("unknown", "throttled", 0.0);
        super::service::throttled_response(throttled)
    }

    fn on_request(&mut self, inbound: Inbound) -> Handled<Infallible> {
        let Some(requests) = &self.requests else {
            // Not reachable: without the service the protocol is outbound only.
            return Handled::Done;
        };
        let subscribe = Subscribe {
            peer: inbound.peer,
            bytes: inbound.request,
            channel: inbound.channel,
            received: inbound.received,
        };
        match requests.try_send(subscribe) {
            Ok(()) => Handled::Done,
            Err(mpsc::error::TrySendError::Full(subscribe))
            | Err(mpsc::error::TrySendError::Closed(subscribe)) => {
                self.metrics.answered("unknown", "unavailable", 0.0);
                Handled::Reply(subscribe.channel, super::service::busy_response())
            }
        }
    }

    fn on_inbound_failure(&mut self, peer: PeerId, error: &request_response::InboundFailure) {
        tracing::debug!(%peer, %error, "filter subscribe request failed");
    }
}

/// Pushes received as a client go to the broadcast `roost subscribe` reads.
pub struct PushService {
    received: broadcast::Sender<Arc<ReceivedPush>>,
    metrics: Metrics,
}

impl PushService {
    pub fn new(received: broadcast::Sender<Arc<ReceivedPush>>, metrics: Metrics) -> Self {
        PushService { received, metrics }
    }
}

impl reqres::Service for PushService {
    type Event = Infallible;

    /// Pushes are not throttled: they come from the filter nodes this node subscribed to.
    fn quota(&self, _: &[u8]) -> Option<throttle::Service> {
        None
    }

    fn refusal(&mut self, _: &[u8], _: &Throttled) -> Vec<u8> {
        Vec::new()
    }

    fn on_request(&mut self, inbound: Inbound) -> Handled<Infallible> {
        let outcome = if self.received.receiver_count() == 0 {
            "unsolicited"
        } else {
            match decode_push(inbound.peer, &inbound.request) {
                Some(push) => {
                    let _ = self.received.send(Arc::new(push));
                    "delivered"
                }
                None => "malformed",
            }
        };
        self.metrics
            .received_pushes
            .get_or_create(&super::metrics::OutcomeLabels { outcome })
            .inc();
        // The answer to a push is closing the stream.
        Handled::Reply(inbound.channel, Vec::new())
    }
}
