//! Plumbing shared by every request/response protocol on the swarm task.
//!
//! Protocols are `request_response::Behaviour<LpCodec>` fields of [`super::Behaviour`], named
//! by [`Protocol`]. Other tasks reach them with two commands:
//! - [`Command::Request`](super::Command::Request): send a request to a peer (dialling the given
//!   addresses if needed) and get the response bytes back through a `oneshot`;
//! - [`Command::Respond`](super::Command::Respond): answer an inbound request whose
//!   `ResponseChannel` was handed to another task (e.g. the store thread) to do the work.
//!
//! To add a protocol: add a behaviour field, a [`Protocol`] variant, its arm in
//! [`SwarmTask::reqres_behaviour`], and route its events through [`SwarmTask::take_outbound`]
//! before handling inbound requests.

use std::collections::HashMap;

use libp2p::{
    request_response::{self, OutboundRequestId, ResponseChannel},
    Multiaddr, PeerId,
};

use super::SwarmTask;
use crate::reqres::LpCodec;

pub use crate::reqres::{Protocol, ReplySender, RequestError};

/// Outbound requests made through [`super::Command::Request`], awaiting their response.
#[derive(Default)]
pub struct PendingRequests {
    replies: HashMap<(Protocol, OutboundRequestId), ReplySender>,
}

impl PendingRequests {
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }

    /// Fails every pending request (at shutdown).
    pub fn fail_all(&mut self) {
        for (_, reply) in self.replies.drain() {
            let _ = reply.send(Err(RequestError::ShuttingDown));
        }
    }
}

impl SwarmTask {
    /// The behaviour that runs `protocol`, if it is enabled.
    pub(crate) fn reqres_behaviour(
        &mut self,
        protocol: Protocol,
    ) -> Option<&mut request_response::Behaviour<LpCodec>> {
        let behaviour = self.swarm.behaviour_mut();
        match protocol {
            Protocol::Metadata => Some(&mut behaviour.metadata),
            Protocol::LightPush | Protocol::LightPushLegacy => None,
            Protocol::FilterSubscribe | Protocol::FilterPush => None,
            Protocol::PeerExchange => None,
            Protocol::Store => None,
            Protocol::Rendezvous | Protocol::WakuRendezvous => None,
            Protocol::Attestation => Some(&mut behaviour.attestation),
        }
    }

    pub(super) fn send_request(
        &mut self,
        protocol: Protocol,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: Vec<u8>,
        reply: ReplySender,
    ) {
        let behaviours = self.swarm.behaviour_mut();
        match protocol {
            Protocol::PeerExchange => {
                return behaviours
                    .peer_exchange
                    .request_for(&peer, addresses, request, reply)
            }
            Protocol::LightPush => {
                return behaviours
                    .lightpush
                    .request_for(&peer, addresses, request, reply)
            }
            Protocol::LightPushLegacy => {
                return behaviours
                    .lightpush_legacy
                    .request_for(&peer, addresses, request, reply)
            }
            Protocol::FilterSubscribe => {
                return behaviours
                    .filter_subscribe
                    .request_for(&peer, addresses, request, reply)
            }
            Protocol::FilterPush => {
                return behaviours
                    .filter_push
                    .request_for(&peer, addresses, request, reply)
            }
            Protocol::Store => {
                return behaviours
                    .store
                    .request_for(&peer, addresses, request, reply)
            }
            Protocol::Rendezvous => {
                return behaviours
                    .rendezvous
                    .request_for(&peer, addresses, request, reply)
            }
            Protocol::WakuRendezvous => {
                return behaviours
                    .waku_rendezvous
                    .request_for(&peer, addresses, request, reply)
            }
            _ => {}
        }
        let Some(behaviour) = self.reqres_behaviour(protocol) else {
            let _ = reply.send(Err(RequestError::Disabled));
            return;
        };
        let id = behaviour.send_request_with_addresses(&peer, request, addresses);
        self.pending.replies.insert((protocol, id), reply);
    }

    pub(crate) fn respond(
        &mut self,
        protocol: Protocol,
        channel: ResponseChannel<Vec<u8>>,
        response: Vec<u8>,
    ) {
        let behaviours = self.swarm.behaviour_mut();
        match protocol {
            Protocol::PeerExchange => return behaviours.peer_exchange.respond(channel, response),
            Protocol::LightPush => return behaviours.lightpush.respond(channel, response),
            Protocol::LightPushLegacy => {
                return behaviours.lightpush_legacy.respond(channel, response)
            }
            Protocol::FilterSubscribe => {
                return behaviours.filter_subscribe.respond(channel, response)
            }
            Protocol::FilterPush => return behaviours.filter_push.respond(channel, response),
            Protocol::Store => return behaviours.store.respond(channel, response),
            Protocol::Rendezvous => return behaviours.rendezvous.respond(channel, response),
            Protocol::WakuRendezvous => {
                return behaviours.waku_rendezvous.respond(channel, response)
            }
            _ => {}
        }
        if let Some(behaviour) = self.reqres_behaviour(protocol) {
            // Err: the peer went away meanwhile; nothing to do.
            let _ = behaviour.send_response(channel, response);
        }
    }

    /// Resolves responses and failures of requests made through `Command::Request`.
    /// Returns the event untouched when it is not one of those.
    pub(crate) fn take_outbound(
        &mut self,
        protocol: Protocol,
        event: request_response::Event<Vec<u8>, Vec<u8>>,
    ) -> Option<request_response::Event<Vec<u8>, Vec<u8>>> {
        match event {
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                peer,
                connection_id,
            } => match self.pending.replies.remove(&(protocol, request_id)) {
                Some(reply) => {
                    let _ = reply.send(Ok(response));
                    None
                }
                None => Some(request_response::Event::Message {
                    peer,
                    connection_id,
                    message: request_response::Message::Response {
                        request_id,
                        response,
                    },
                }),
            },
            request_response::Event::OutboundFailure {
                peer,
                connection_id,
                request_id,
                error,
            } => match self.pending.replies.remove(&(protocol, request_id)) {
                Some(reply) => {
                    let _ = reply.send(Err(error.into()));
                    None
                }
                None => Some(request_response::Event::OutboundFailure {
                    peer,
                    connection_id,
                    request_id,
                    error,
                }),
            },
            other => Some(other),
        }
    }
}
