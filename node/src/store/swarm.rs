//! The store's side of the swarm task: its request/response behaviour and the handler that
//! passes inbound queries, undecoded, to the query threads.

use std::{sync::mpsc as std_mpsc, time::Duration};

use libp2p::{
    request_response::{self, ProtocolSupport, ResponseChannel},
    swarm::ConnectionId,
    PeerId,
};
use prost::Message as _;

use super::{
    metrics::Metrics,
    rpc::{self, StoreQueryResponse},
    QueryJob,
};
use crate::{
    reqres::LpCodec,
    swarm::{ReqResProtocol, SwarmTask},
    throttle::Service,
};

/// How long a client waits for a store response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub type Behaviour = request_response::Behaviour<LpCodec>;

/// The store protocol: served when `serve`, otherwise only usable as a client.
pub fn behaviour(serve: bool) -> Behaviour {
    let support = if serve {
        ProtocolSupport::Full
    } else {
        ProtocolSupport::Outbound
    };
    request_response::Behaviour::with_codec(
        LpCodec::new(rpc::MAX_REQUEST_FRAME, rpc::MAX_RESPONSE_FRAME),
        [(rpc::PROTOCOL_ID, support)],
        request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
    )
}

/// The query threads' queue, held by the swarm task.
pub struct Inbound {
    queries: std_mpsc::SyncSender<QueryJob>,
    metrics: Metrics,
}

impl Inbound {
    pub(super) fn new(queries: std_mpsc::SyncSender<QueryJob>, metrics: Metrics) -> Self {
        Inbound { queries, metrics }
    }
}

impl SwarmTask {
    pub(crate) fn on_store(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        let Some(event) = self.take_outbound(ReqResProtocol::Store, event) else {
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
            } => self.on_store_request(peer, connection_id, request, channel),
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound store request failed");
            }
            request_response::Event::Message { .. }
            | request_response::Event::OutboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// The single entry point of inbound store requests. Nothing is decoded here: the
    /// throttle admits the request (or it gets a 429) before it is queued.
    fn on_store_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        if self.store.is_none() {
            // Not a store node: the protocol is outbound-only, so this cannot arrive.
            return;
        }
        if let Err(throttled) = self.admit(Service::Store, peer, connection) {
            if let Some(inbound) = &self.store {
                inbound
                    .metrics
                    .query("throttled", rpc::STATUS_TOO_MANY_REQUESTS, 0.0);
            }
            let response = StoreQueryResponse::error(
                rpc::UNKNOWN_REQUEST_ID,
                rpc::STATUS_TOO_MANY_REQUESTS,
                throttled.to_string(),
            );
            self.respond(ReqResProtocol::Store, channel, response.encode_to_vec());
            return;
        }
        let Some(inbound) = &self.store else {
            return;
        };
        // Counted before it is queued, so a query thread's decrement never comes first.
        inbound.metrics.query_queued();
        let refused = match inbound.queries.try_send(QueryJob::Remote {
            peer,
            request,
            channel,
        }) {
            Ok(()) => return,
            Err(std_mpsc::TrySendError::Full(job)) => (job, "the store is overloaded; retry later"),
            Err(std_mpsc::TrySendError::Disconnected(job)) => (job, "the store is shutting down"),
        };
        inbound.metrics.query_dequeued();
        inbound
            .metrics
            .query("refused", rpc::STATUS_SERVICE_UNAVAILABLE, 0.0);
        tracing::debug!(%peer, why = refused.1, "store request refused");
        if let (QueryJob::Remote { channel, .. }, why) = refused {
            // Reading the request id would mean decoding on the swarm task; "N/A" is what
            // nwaku answers when it refuses a request unread.
            let response = StoreQueryResponse::error(
                rpc::UNKNOWN_REQUEST_ID,
                rpc::STATUS_SERVICE_UNAVAILABLE,
                why,
            );
            self.respond(ReqResProtocol::Store, channel, response.encode_to_vec());
        }
    }
}
