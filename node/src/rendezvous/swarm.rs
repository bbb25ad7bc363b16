//! The rendezvous protocols on the swarm task: inbound requests are admitted (throttle quota,
//! room in the queue) on their raw bytes and go, undecoded, to the server thread; responses
//! to this node's own requests go back to their callers.

use std::time::Instant;

use libp2p::request_response::{self, Message};

use super::{proto, server::Inbound, Dialect};
use crate::{swarm::SwarmTask, throttle};

/// The `kind` label of a request, from its peeked type.
fn kind_label(kind: Option<proto::MessageType>) -> &'static str {
    match kind {
        Some(proto::MessageType::Register) => "register",
        Some(proto::MessageType::Discover) => "discover",
        Some(proto::MessageType::Unregister) => "unregister",
        _ => "unknown",
    }
}

impl SwarmTask {
    /// Handles an event of `/rendezvous/1.0.0` or `/vac/waku/rendezvous/1.0.0`.
    pub(crate) fn on_rendezvous(
        &mut self,
        dialect: Dialect,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) {
        let protocol = dialect.protocol();
        let Some(event) = self.take_outbound(protocol, event) else {
            return;
        };
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    Message::Request {
                        request, channel, ..
                    },
            } => {
                // Admission, on the raw bytes, before anything is decoded: first the peer's
                // quota (the message type is read from the first field only, to pick the
                // REGISTER or DISCOVER quota), then room in the server's queue. Either refusal
                // is answered E_UNAVAILABLE at once.
                let kind = proto::peek_type(&request);
                let service = match kind {
                    Some(proto::MessageType::Discover) => throttle::Service::RendezvousDiscover,
                    _ => throttle::Service::RendezvousRegister,
                };
                let label = kind_label(kind);
                if let Err(throttled) = self.admit(service, peer, connection_id) {
                    if let Some(inbox) = &self.rendezvous {
                        inbox.count(label, "throttled");
                    }
                    let response = proto::refusal_for(
                        &request,
                        proto::Status::Unavailable,
                        &throttled.to_string(),
                    );
                    self.respond(protocol, channel, response);
                    return;
                }
                let Some(inbox) = self.rendezvous.as_ref() else {
                    // Only reachable if a peer ignores that we do not advertise the protocol.
                    let response = proto::refusal_for(
                        &request,
                        proto::Status::Unavailable,
                        "this node is not a rendezvous point",
                    );
                    self.respond(protocol, channel, response);
                    return;
                };
                let inbound = Inbound {
                    peer,
                    dialect,
                    request,
                    channel,
                    received: Instant::now(),
                };
                if let Err(refused) = inbox.offer(inbound) {
                    inbox.count(label, "overloaded");
                    tracing::debug!(%peer, "rendezvous queue full; answering E_UNAVAILABLE");
                    let response = proto::refusal_for(
                        &refused.request,
                        proto::Status::Unavailable,
                        "this rendezvous point is overloaded; retry later",
                    );
                    self.respond(protocol, refused.channel, response);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                // Streams reset by the peer, response timeouts. UNREGISTER, which has no
                // response, ends here too (`ResponseOmission`): not a failure. Frames that
                // cannot be read never get here; the codec counts them as `unreadable`.
                if !matches!(error, request_response::InboundFailure::ResponseOmission) {
                    if let Some(inbox) = &self.rendezvous {
                        inbox.count("unknown", "stream_error");
                    }
                    tracing::debug!(%peer, %error, "inbound rendezvous stream failed");
                }
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "rendezvous request failed after its caller left");
            }
            request_response::Event::Message {
                message: Message::Response { .. },
                ..
            }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }
}
