//! Peer exchange as a behaviour of its own: answer from the book, and learn from static peers.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    time::Instant,
};

use libp2p::{
    request_response::{self, OutboundFailure, OutboundRequestId},
    PeerId, StreamProtocol,
};
use prost::Message as _;

use super::{
    decode_response, encode_request, encode_response, metrics::OriginLabels, status, Added, Book,
    Config, Metrics, PeerExchangeRpc, LEARN_INTERVAL, MAX_PEERS_PER_RESPONSE, MAX_REQUEST,
    MAX_RESPONSE, PROTOCOL_ID, REQUEST_TIMEOUT,
};
use crate::{
    reqres::{self, Handled, Inbound, LpCodec},
    throttle::{self, Throttle, Throttled},
    waku_enr,
};

/// The peer exchange protocol (inbound only with `peer_exchange.enabled`). It emits nothing:
/// everything it does happens here.
pub type Behaviour = reqres::Behaviour<Service>;

/// The behaviour: every node can ask; only `peer_exchange.enabled` nodes answer.
pub fn behaviour(config: &Config, service: Service, throttle: Throttle) -> Behaviour {
    let inner = request_response::Behaviour::with_codec(
        LpCodec::new(MAX_REQUEST, MAX_RESPONSE),
        [(PROTOCOL_ID, reqres::support(config.enabled))],
        request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
    );
    reqres::Behaviour::new(inner, service, throttle)
}

/// Peer exchange state: the book and the learning from static peers.
pub struct Service {
    pub book: Book,
    pub metrics: Metrics,
    learn: bool,
    /// When each static peer was last asked.
    asked: HashMap<PeerId, Instant>,
    /// Queries this node sent itself (not on behalf of another task).
    queries: HashSet<OutboundRequestId>,
}

impl Service {
    /// A service with the configured ENRs (already validated) in its book.
    pub fn new(config: &Config, local: PeerId, cluster_id: u16, metrics: Metrics) -> Self {
        let mut book = Book::new(local, cluster_id);
        let now = Instant::now();
        for text in &config.enrs {
            match waku_enr::parse(text).and_then(|enr| book.insert(&enr, true, now)) {
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "configured ENR skipped"),
            }
        }
        let service = Service {
            book,
            metrics,
            learn: config.enabled && config.learn_from_static_peers,
            asked: HashMap::new(),
            queries: HashSet::new(),
        };
        service.refresh_gauges();
        service
    }

    fn refresh_gauges(&self) {
        self.metrics
            .book
            .get_or_create(&OriginLabels {
                origin: "configured",
            })
            .set(self.book.configured_count() as i64);
        self.metrics
            .book
            .get_or_create(&OriginLabels { origin: "learned" })
            .set(self.book.learned_count() as i64);
    }

    /// Whether to ask `peer` for the ENRs it knows now (it serves peer exchange and is a
    /// static peer not asked within [`LEARN_INTERVAL`]); records the attempt.
    fn should_ask(&mut self, peer: PeerId, protocols: &[StreamProtocol], is_static: bool) -> bool {
        if !self.learn || !protocols.contains(&PROTOCOL_ID) || !is_static {
            return false;
        }
        let now = Instant::now();
        if let Some(last) = self.asked.get(&peer) {
            if now.saturating_duration_since(*last) < LEARN_INTERVAL {
                return false;
            }
        }
        self.asked.insert(peer, now);
        self.book.expire(now);
        true
    }

    fn learn_enrs(&mut self, peer: PeerId, response: &[u8]) {
        let reply = match decode_response(response) {
            Ok(reply) if reply.status == status::OK => reply,
            Ok(reply) => {
                tracing::debug!(%peer, status = reply.status, "peer exchange query refused");
                Metrics::count(&self.metrics.queries, "refused");
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "malformed peer exchange answer");
                Metrics::count(&self.metrics.queries, "failed");
                return;
            }
        };
        Metrics::count(&self.metrics.queries, "ok");
        let now = Instant::now();
        for raw in reply.enrs {
            let outcome =
                match waku_enr::decode(&raw).and_then(|enr| self.book.insert(&enr, false, now)) {
                    Ok(added) => added.label(),
                    Err(_) => "invalid",
                };
            if outcome == Added::New.label() {
                tracing::debug!(from = %peer, "learned an ENR");
            }
            Metrics::count(&self.metrics.learned, outcome);
        }
        self.refresh_gauges();
    }
}

impl reqres::Service for Service {
    type Event = Infallible;

    fn quota(&self, _: &[u8]) -> Option<throttle::Service> {
        Some(throttle::Service::PeerExchange)
    }

    fn refusal(&mut self, _: &[u8], throttled: &Throttled) -> Vec<u8> {
        Metrics::count(&self.metrics.requests, "throttled");
        encode_response(
            0,
            Vec::new(),
            status::TOO_MANY_REQUESTS,
            Some(throttled.to_string()),
        )
    }

    fn on_request(&mut self, inbound: Inbound) -> Handled<Infallible> {
        let peer = inbound.peer;
        let query = PeerExchangeRpc::decode(inbound.request.as_slice())
            .ok()
            .and_then(|rpc| rpc.query);
        let (response, outcome) = match query {
            None => (
                encode_response(
                    0,
                    Vec::new(),
                    status::BAD_REQUEST,
                    Some("not a peer exchange query".into()),
                ),
                "bad_request",
            ),
            Some(query) => {
                let asked = query.num_peers.unwrap_or(0);
                let n = asked.min(MAX_PEERS_PER_RESPONSE) as usize;
                let enrs = self.book.sample(n, &peer, Instant::now());
                self.metrics.enrs_sent.inc_by(enrs.len() as u64);
                tracing::debug!(%peer, asked, sent = enrs.len(), "peer exchange answered");
                (encode_response(asked, enrs, status::OK, None), "ok")
            }
        };
        Metrics::count(&self.metrics.requests, outcome);
        self.metrics
            .duration
            .observe(inbound.received.elapsed().as_secs_f64());
        Handled::Reply(inbound.channel, response)
    }

    fn on_response(
        &mut self,
        peer: PeerId,
        request_id: OutboundRequestId,
        response: Vec<u8>,
    ) -> Option<Infallible> {
        if self.queries.remove(&request_id) {
            self.learn_enrs(peer, &response);
        }
        None
    }

    fn on_outbound_failure(
        &mut self,
        peer: PeerId,
        request_id: OutboundRequestId,
        error: &OutboundFailure,
    ) -> Option<Infallible> {
        if self.queries.remove(&request_id) {
            tracing::debug!(%peer, %error, "peer exchange query failed");
            Metrics::count(&self.metrics.queries, "failed");
        }
        None
    }

    fn on_inbound_failure(&mut self, peer: PeerId, error: &request_response::InboundFailure) {
        tracing::debug!(%peer, %error, "peer exchange request failed");
    }
}

/// Identify told us what `peer` speaks: a static peer that serves peer exchange is asked for
/// the ENRs it knows, at most every [`LEARN_INTERVAL`].
pub fn on_identified(
    behaviour: &mut Behaviour,
    peer: PeerId,
    protocols: &[StreamProtocol],
    is_static: bool,
) {
    if !behaviour
        .service_mut()
        .should_ask(peer, protocols, is_static)
    {
        return;
    }
    let id = behaviour.send_request(&peer, encode_request(MAX_PEERS_PER_RESPONSE));
    behaviour.service_mut().queries.insert(id);
}
