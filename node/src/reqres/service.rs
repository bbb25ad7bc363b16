//! [`Behaviour`]: one request/response service as a `NetworkBehaviour` of its own.
//!
//! Every inbound request goes through the same steps, in this order:
//! 1. the throttle, on the raw bytes: the service names the quota ([`Service::quota`]); a
//!    refused request is answered at once with [`Service::refusal`] (429, `E_UNAVAILABLE`) and
//!    counts as an offence, and nothing is decoded;
//! 2. the service's own handling ([`Service::on_request`]): answer now, or emit a typed event
//!    (carrying the `ResponseChannel`) for whoever must do the work.
//!
//! Responses to requests other tasks made ([`Behaviour::request_for`]) go back to their
//! `oneshot`; responses to the service's own requests ([`Behaviour::send_request`]) go to
//! [`Service::on_response`].

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    net::IpAddr,
    task::{Context, Poll},
    time::Instant,
};

use libp2p::{
    core::{transport::PortUse, Endpoint as Role},
    request_response::{
        self, InboundFailure, Message, OutboundFailure, OutboundRequestId, ResponseChannel,
    },
    swarm::{
        ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId,
};

use tokio::sync::mpsc;

use super::{LpCodec, ReplySender, RequestError};
use crate::throttle::{self, behaviour::ip_of, Throttle, Throttled};

/// An inbound request the throttle admitted, still undecoded.
#[derive(Debug)]
pub struct Inbound {
    pub peer: PeerId,
    pub connection: ConnectionId,
    pub request: Vec<u8>,
    pub channel: ResponseChannel<Vec<u8>>,
    /// When the request reached the behaviour (for duration metrics).
    pub received: Instant,
}

/// What a service did with an admitted request.
#[derive(Debug)]
pub enum Handled<E> {
    /// Answer now.
    Reply(ResponseChannel<Vec<u8>>, Vec<u8>),
    /// Someone else answers (with `Command::Respond`) once the node has acted on the event.
    Emit(E),
    /// Nothing to send (the service dropped or kept the channel).
    Done,
}

/// One request/response service: its admission, its handling, its replies.
pub trait Service: Send + 'static {
    /// What the rest of the node must act on.
    type Event: fmt::Debug + Send + 'static;

    /// The throttle quota an inbound request spends, picked from its raw bytes (never decoded
    /// here); `None` for a protocol that is not throttled.
    fn quota(&self, request: &[u8]) -> Option<throttle::Service>;

    /// The answer to a request the throttle refused, written without decoding the request.
    /// Count the refusal in the service's metrics here.
    fn refusal(&mut self, request: &[u8], throttled: &Throttled) -> Vec<u8>;

    /// An admitted inbound request.
    fn on_request(&mut self, inbound: Inbound) -> Handled<Self::Event>;

    /// The response to a request the service sent itself.
    fn on_response(
        &mut self,
        _peer: PeerId,
        _request_id: OutboundRequestId,
        _response: Vec<u8>,
    ) -> Option<Self::Event> {
        None
    }

    /// A request the service sent itself failed.
    fn on_outbound_failure(
        &mut self,
        _peer: PeerId,
        _request_id: OutboundRequestId,
        _error: &OutboundFailure,
    ) -> Option<Self::Event> {
        None
    }

    /// An inbound stream failed (timeout, reset, no response written).
    fn on_inbound_failure(&mut self, _peer: PeerId, _error: &InboundFailure) {}
}

/// A request/response protocol run by one [`Service`].
pub struct Behaviour<S: Service> {
    inner: request_response::Behaviour<LpCodec>,
    service: S,
    throttle: Throttle,
    /// Remote IP of each open connection, for per-IP quotas.
    ips: HashMap<ConnectionId, Option<IpAddr>>,
    /// Requests made for other tasks, awaiting their response.
    pending: HashMap<OutboundRequestId, ReplySender>,
    events: VecDeque<S::Event>,
    /// Answers written off the behaviour (by spawned tasks, threads), created on first use.
    responses: Option<(Responder, mpsc::Receiver<Response>)>,
}

/// An answer to an inbound request, written by whoever did the work.
type Response = (ResponseChannel<Vec<u8>>, Vec<u8>);

/// How many answers written off the behaviour may wait for it; a full queue makes the writer
/// wait (the work is done, only the send is delayed).
const RESPONSES_CAPACITY: usize = 1024;

/// A cloneable way to answer inbound requests of one behaviour from another task.
#[derive(Debug, Clone)]
pub struct Responder(mpsc::Sender<Response>);

impl Responder {
    /// Sends `response` on `channel`; waits while the behaviour's queue is full. A node
    /// shutting down drops the answer.
    pub async fn respond(&self, channel: ResponseChannel<Vec<u8>>, response: Vec<u8>) {
        let _ = self.0.send((channel, response)).await;
    }
}

impl<S: Service> Behaviour<S> {
    pub fn new(
        inner: request_response::Behaviour<LpCodec>,
        service: S,
        throttle: Throttle,
    ) -> Self {
        Behaviour {
            inner,
            service,
            throttle,
            ips: HashMap::new(),
            pending: HashMap::new(),
            events: VecDeque::new(),
            responses: None,
        }
    }

    /// A handle to answer this behaviour's inbound requests from another task.
    pub fn responder(&mut self) -> Responder {
        let (responder, _) = self.responses.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(RESPONSES_CAPACITY);
            (Responder(tx), rx)
        });
        responder.clone()
    }

    pub fn service(&self) -> &S {
        &self.service
    }

    pub fn service_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// Sends a request on behalf of the service; the answer goes to [`Service::on_response`].
    pub fn send_request(&mut self, peer: &PeerId, request: Vec<u8>) -> OutboundRequestId {
        self.inner.send_request(peer, request)
    }

    /// Sends a request on behalf of another task; the answer goes to `reply`.
    pub fn request_for(
        &mut self,
        peer: &PeerId,
        addresses: Vec<Multiaddr>,
        request: Vec<u8>,
        reply: ReplySender,
    ) {
        let id = self
            .inner
            .send_request_with_addresses(peer, request, addresses);
        self.pending.insert(id, reply);
    }

    /// Answers an inbound request whose channel went elsewhere with an event.
    pub fn respond(&mut self, channel: ResponseChannel<Vec<u8>>, response: Vec<u8>) {
        // Err: the peer went away meanwhile; nothing to do.
        let _ = self.inner.send_response(channel, response);
    }

    /// Fails every request made for another task (at shutdown).
    pub fn fail_pending(&mut self) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(RequestError::ShuttingDown));
        }
    }

    fn on_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                connection_id,
                message:
                    Message::Request {
                        request, channel, ..
                    },
            } => self.on_request(peer, connection_id, request, channel),
            request_response::Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => match self.pending.remove(&request_id) {
                Some(reply) => {
                    let _ = reply.send(Ok(response));
                }
                None => {
                    if let Some(event) = self.service.on_response(peer, request_id, response) {
                        self.events.push_back(event);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => match self.pending.remove(&request_id) {
                Some(reply) => {
                    let _ = reply.send(Err(error.into()));
                }
                None => {
                    if let Some(event) = self.service.on_outbound_failure(peer, request_id, &error)
                    {
                        self.events.push_back(event);
                    }
                }
            },
            request_response::Event::InboundFailure { peer, error, .. } => {
                self.service.on_inbound_failure(peer, &error);
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let received = Instant::now();
        // The throttle first: an over-quota request is refused without being decoded.
        if let Some(quota) = self.service.quota(&request) {
            let ip = self.ips.get(&connection).copied().flatten();
            if let Err(throttled) = self.throttle.check(quota, &peer, ip) {
                tracing::debug!(%peer, ?ip, %throttled, "request throttled");
                self.throttle.offend_throttled(&peer, ip, &throttled);
                let response = self.service.refusal(&request, &throttled);
                self.respond(channel, response);
                return;
            }
        }
        let inbound = Inbound {
            peer,
            connection,
            request,
            channel,
            received,
        };
        match self.service.on_request(inbound) {
            Handled::Reply(channel, response) => self.respond(channel, response),
            Handled::Emit(event) => self.events.push_back(event),
            Handled::Done => {}
        }
    }
}

/// The command-facing side of every request/response behaviour, whatever its service: how the
/// swarm task routes `Command::Request` and `Command::Respond` by [`super::Protocol`].
pub trait Endpoint {
    /// Sends a request on behalf of another task; the answer goes to `reply`.
    fn request_for(
        &mut self,
        peer: &PeerId,
        addresses: Vec<Multiaddr>,
        request: Vec<u8>,
        reply: ReplySender,
    );
    /// Answers an inbound request whose channel went elsewhere with an event.
    fn respond(&mut self, channel: ResponseChannel<Vec<u8>>, response: Vec<u8>);
    /// Fails every request made for another task (at shutdown).
    fn fail_pending(&mut self);
}

impl<S: Service> Endpoint for Behaviour<S> {
    fn request_for(
        &mut self,
        peer: &PeerId,
        addresses: Vec<Multiaddr>,
        request: Vec<u8>,
        reply: ReplySender,
    ) {
        Behaviour::request_for(self, peer, addresses, request, reply);
    }

    fn respond(&mut self, channel: ResponseChannel<Vec<u8>>, response: Vec<u8>) {
        Behaviour::respond(self, channel, response);
    }

    fn fail_pending(&mut self) {
        Behaviour::fail_pending(self);
    }
}

type Inner = request_response::Behaviour<LpCodec>;

impl<S: Service> NetworkBehaviour for Behaviour<S> {
    type ConnectionHandler = THandler<Inner>;
    type ToSwarm = S::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.ips.insert(connection_id, ip_of(remote_addr));
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Role,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Role,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.ips.insert(connection_id, ip_of(addr));
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // A connection another behaviour denied after this one accepted it never closes.
        match &event {
            FromSwarm::ConnectionClosed(e) => {
                self.ips.remove(&e.connection_id);
            }
            FromSwarm::ListenFailure(e) => {
                self.ips.remove(&e.connection_id);
            }
            FromSwarm::DialFailure(e) => {
                self.ips.remove(&e.connection_id);
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer, connection_id, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<S::Event, THandlerInEvent<Self>>> {
        if let Some((_, responses)) = &mut self.responses {
            while let Poll::Ready(Some((channel, response))) = responses.poll_recv(cx) {
                let _ = self.inner.send_response(channel, response);
            }
        }
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => self.on_event(event),
                Poll::Ready(other) => {
                    // Every other variant carries no event of the inner behaviour.
                    return Poll::Ready(
                        other.map_out(|_| unreachable!("GenerateEvent is handled above")),
                    );
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
