//! The store protocol as a behaviour of its own: inbound queries are admitted by the throttle
//! and passed, undecoded, to the query threads, which answer through the node's command
//! channel.

use std::{convert::Infallible, sync::mpsc as std_mpsc, time::Duration};

use libp2p::{request_response, PeerId};
use prost::Message as _;

use super::{
    metrics::Metrics,
    rpc::{self, StoreQueryResponse},
    QueryJob,
};
use crate::{
    reqres::{self, Handled, Inbound as Request, LpCodec},
    throttle::{self, Throttle, Throttled},
};

/// How long a client waits for a store response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Store v3 queries: served on a store node, client-only otherwise.
pub type Behaviour = reqres::Behaviour<Service>;

/// The store protocol: served when `inbound` is the query threads' queue, otherwise only
/// usable as a client.
pub fn behaviour(inbound: Option<Inbound>, throttle: Throttle) -> Behaviour {
    let inner = request_response::Behaviour::with_codec(
        LpCodec::new(rpc::MAX_REQUEST_FRAME, rpc::MAX_RESPONSE_FRAME),
        [(rpc::PROTOCOL_ID, reqres::support(inbound.is_some()))],
        request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
    );
    reqres::Behaviour::new(inner, Service { inbound }, throttle)
}

/// The query threads' queue.
pub struct Inbound {
    queries: std_mpsc::SyncSender<QueryJob>,
    metrics: Metrics,
}

impl Inbound {
    pub(super) fn new(queries: std_mpsc::SyncSender<QueryJob>, metrics: Metrics) -> Self {
        Inbound { queries, metrics }
    }
}

/// The store's request handling: nothing is decoded here.
pub struct Service {
    /// `None`: not a store node (the protocol is outbound-only, so no request arrives).
    inbound: Option<Inbound>,
}

impl reqres::Service for Service {
    type Event = Infallible;

    fn quota(&self, _: &[u8]) -> Option<throttle::Service> {
        Some(throttle::Service::Store)
    }

    fn refusal(&mut self, _: &[u8], throttled: &Throttled) -> Vec<u8> {
        if let Some(inbound) = &self.inbound {
            inbound
                .metrics
                .query("throttled", rpc::STATUS_TOO_MANY_REQUESTS, 0.0);
        }
        StoreQueryResponse::error(
            rpc::UNKNOWN_REQUEST_ID,
            rpc::STATUS_TOO_MANY_REQUESTS,
            throttled.to_string(),
        )
        .encode_to_vec()
    }

    /// The single entry point of inbound store requests: queued for the query threads.
    fn on_request(&mut self, request: Request) -> Handled<Infallible> {
        let Some(inbound) = &self.inbound else {
            // Not a store node: the protocol is outbound-only, so this cannot arrive.
            return Handled::Done;
        };
        let peer = request.peer;
        // Counted before it is queued, so a query thread's decrement never comes first.
        inbound.metrics.query_queued();
        let refused = match inbound.queries.try_send(QueryJob::Remote {
            peer,
            request: request.request,
            channel: request.channel,
        }) {
            Ok(()) => return Handled::Done,
            Err(std_mpsc::TrySendError::Full(job)) => (job, "the store is overloaded; retry later"),
            Err(std_mpsc::TrySendError::Disconnected(job)) => (job, "the store is shutting down"),
        };
        inbound.metrics.query_dequeued();
        inbound
            .metrics
            .query("refused", rpc::STATUS_SERVICE_UNAVAILABLE, 0.0);
        tracing::debug!(%peer, why = refused.1, "store request refused");
        match refused {
            (QueryJob::Remote { channel, .. }, why) => {
                // Reading the request id would mean decoding on the swarm task; "N/A" is what
                // nwaku answers when it refuses a request unread.
                let response = StoreQueryResponse::error(
                    rpc::UNKNOWN_REQUEST_ID,
                    rpc::STATUS_SERVICE_UNAVAILABLE,
                    why,
                );
                Handled::Reply(channel, response.encode_to_vec())
            }
            _ => Handled::Done,
        }
    }

    fn on_inbound_failure(&mut self, peer: PeerId, error: &request_response::InboundFailure) {
        tracing::debug!(%peer, %error, "inbound store request failed");
    }
}
