//! The rendezvous protocols on the swarm task: inbound requests go, undecoded, to the server
//! thread's queue; responses to this node's own requests go back to their callers.

use std::time::Instant;

use libp2p::request_response::{self, Message};

use super::{proto, server::Inbound, Dialect};
use crate::swarm::SwarmTask;

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
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                // Admission happens here, on the raw bytes, before anything is decoded: a
                // request the server cannot take now is answered E_UNAVAILABLE at once. This
                // is the one place where a per-peer request quota belongs as well.
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
                    let kind = match proto::peek_type(&refused.request) {
                        Some(proto::MessageType::Register) => "register",
                        Some(proto::MessageType::Discover) => "discover",
                        Some(proto::MessageType::Unregister) => "unregister",
                        _ => "unknown",
                    };
                    inbox.count(kind, "overloaded");
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
                // Oversize or truncated frames, streams reset by the peer. UNREGISTER, which has
                // no response, ends here too (`ResponseOmission`): not a failure.
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
