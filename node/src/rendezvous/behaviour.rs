//! The rendezvous protocols as behaviours of their own: inbound requests are admitted (throttle
//! quota, room in the queue) on their raw bytes and go, undecoded, to the server thread, which
//! answers through the node's command channel; responses to this node's own requests go back
//! to their callers.

use std::{convert::Infallible, time::Instant};

use libp2p::{
    request_response::{self, OutboundFailure, OutboundRequestId},
    PeerId,
};

use super::{
    metrics, proto, server::Inbound, Config, Dialect, Inbox, Metrics, MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES, PROTOCOL_ID, REQUEST_TIMEOUT, WAKU_PROTOCOL_ID,
};
use crate::{
    reqres::{self, Handled, LpCodec},
    throttle::{self, Throttle, Throttled},
};

/// One rendezvous dialect.
pub type Behaviour = reqres::Behaviour<Service>;

fn behaviour_for(
    protocol: libp2p::StreamProtocol,
    support: request_response::ProtocolSupport,
    metrics: &Metrics,
    service: Service,
    throttle: Throttle,
) -> Behaviour {
    // Frames over the limit or cut short never reach the behaviour; count them here.
    let unreadable = metrics
        .requests
        .get_or_create(&metrics::RequestLabels {
            kind: "unknown",
            outcome: "unreadable",
        })
        .clone();
    let inner = request_response::Behaviour::with_codec(
        LpCodec::new(MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES)
            .counting_unreadable_requests(unreadable),
        [(protocol, support)],
        request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
    );
    reqres::Behaviour::new(inner, service, throttle)
}

/// `/rendezvous/1.0.0`: served when the server is enabled, outbound-only otherwise (the
/// client and the CLI use it either way).
pub fn behaviour(
    config: &Config,
    metrics: &Metrics,
    inbox: Option<Inbox>,
    throttle: Throttle,
) -> Behaviour {
    let service = Service {
        dialect: Dialect::Libp2p,
        inbox,
    };
    behaviour_for(
        PROTOCOL_ID,
        reqres::support(config.enabled),
        metrics,
        service,
        throttle,
    )
}

/// `/vac/waku/rendezvous/1.0.0`: served when the server and `waku_protocol` are enabled,
/// outbound-only otherwise (for `roost rendezvous discover --waku`).
pub fn waku_behaviour(
    config: &Config,
    metrics: &Metrics,
    inbox: Option<Inbox>,
    throttle: Throttle,
) -> Behaviour {
    let service = Service {
        dialect: Dialect::Waku,
        inbox,
    };
    behaviour_for(
        WAKU_PROTOCOL_ID,
        reqres::support(config.enabled && config.waku_protocol),
        metrics,
        service,
        throttle,
    )
}

/// Admission of one dialect's requests into the server's queue.
pub struct Service {
    dialect: Dialect,
    /// The server thread's queue; `None` when this node is not a rendezvous point.
    inbox: Option<Inbox>,
}

/// The `kind` label of a request, from its peeked type.
fn kind_label(kind: Option<proto::MessageType>) -> &'static str {
    match kind {
        Some(proto::MessageType::Register) => "register",
        Some(proto::MessageType::Discover) => "discover",
        Some(proto::MessageType::Unregister) => "unregister",
        _ => "unknown",
    }
}

impl reqres::Service for Service {
    type Event = Infallible;

    /// The message type is read from the first field only, to pick the REGISTER or DISCOVER
    /// quota; nothing is decoded.
    fn quota(&self, request: &[u8]) -> Option<throttle::Service> {
        Some(match proto::peek_type(request) {
            Some(proto::MessageType::Discover) => throttle::Service::RendezvousDiscover,
            _ => throttle::Service::RendezvousRegister,
        })
    }

    fn refusal(&mut self, request: &[u8], throttled: &Throttled) -> Vec<u8> {
        if let Some(inbox) = &self.inbox {
            inbox.count(kind_label(proto::peek_type(request)), "throttled");
        }
        proto::refusal_for(request, proto::Status::Unavailable, &throttled.to_string())
    }

    /// Room in the server's queue, else `E_UNAVAILABLE` at once.
    fn on_request(&mut self, inbound: reqres::Inbound) -> Handled<Infallible> {
        let Some(inbox) = self.inbox.as_ref() else {
            // Only reachable if a peer ignores that we do not advertise the protocol.
            let response = proto::refusal_for(
                &inbound.request,
                proto::Status::Unavailable,
                "this node is not a rendezvous point",
            );
            return Handled::Reply(inbound.channel, response);
        };
        let peer = inbound.peer;
        let label = kind_label(proto::peek_type(&inbound.request));
        let queued = Inbound {
            peer,
            dialect: self.dialect,
            request: inbound.request,
            channel: inbound.channel,
            received: Instant::now(),
        };
        match inbox.offer(queued) {
            Ok(()) => Handled::Done,
            Err(refused) => {
                inbox.count(label, "overloaded");
                tracing::debug!(%peer, "rendezvous queue full; answering E_UNAVAILABLE");
                let response = proto::refusal_for(
                    &refused.request,
                    proto::Status::Unavailable,
                    "this rendezvous point is overloaded; retry later",
                );
                Handled::Reply(refused.channel, response)
            }
        }
    }

    fn on_outbound_failure(
        &mut self,
        peer: PeerId,
        _: OutboundRequestId,
        error: &OutboundFailure,
    ) -> Option<Infallible> {
        tracing::debug!(%peer, %error, "rendezvous request failed after its caller left");
        None
    }

    fn on_inbound_failure(&mut self, peer: PeerId, error: &request_response::InboundFailure) {
        // Streams reset by the peer, response timeouts. UNREGISTER, which has no response,
        // ends here too (`ResponseOmission`): not a failure. Frames that cannot be read never
        // get here; the codec counts them as `unreadable`.
        if !matches!(error, request_response::InboundFailure::ResponseOmission) {
            if let Some(inbox) = &self.inbox {
                inbox.count("unknown", "stream_error");
            }
            tracing::debug!(%peer, %error, "inbound rendezvous stream failed");
        }
    }
}
