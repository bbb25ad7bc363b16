//! Peer exchange on the swarm task: answer from the book, and learn from static peers.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use libp2p::{
    request_response::{self, OutboundRequestId, ResponseChannel},
    swarm::ConnectionId,
    PeerId, StreamProtocol,
};
use prost::Message as _;

use super::{
    decode_response, encode_request, encode_response, metrics::OriginLabels, status, Added, Book,
    Config, Metrics, PeerExchangeRpc, LEARN_INTERVAL, MAX_PEERS_PER_RESPONSE, PROTOCOL_ID,
};
use crate::{
    swarm::{ReqResProtocol, SwarmTask},
    throttle, waku_enr,
};

/// Peer exchange state kept by the swarm task.
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
}

impl SwarmTask {
    /// Events of the peer-exchange behaviour.
    pub(crate) fn on_peer_exchange(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        let Some(event) = self.take_outbound(ReqResProtocol::PeerExchange, event) else {
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
            } => self.serve_peer_exchange(peer, connection_id, &request, channel),
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if self.peer_exchange.queries.remove(&request_id) {
                    self.learn_enrs(peer, &response);
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if self.peer_exchange.queries.remove(&request_id) {
                    tracing::debug!(%peer, %error, "peer exchange query failed");
                    Metrics::count(&self.peer_exchange.metrics.queries, "failed");
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "peer exchange request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn serve_peer_exchange(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        bytes: &[u8],
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let started = Instant::now();
        // The throttle first: an over-quota request gets a 429 without being decoded.
        if let Err(throttled) = self.admit(throttle::Service::PeerExchange, peer, connection) {
            let response = encode_response(
                0,
                Vec::new(),
                status::TOO_MANY_REQUESTS,
                Some(throttled.to_string()),
            );
            let _ = self
                .swarm
                .behaviour_mut()
                .peer_exchange
                .send_response(channel, response);
            Metrics::count(&self.peer_exchange.metrics.requests, "throttled");
            return;
        }
        let query = PeerExchangeRpc::decode(bytes)
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
                let enrs = self.peer_exchange.book.sample(n, &peer, Instant::now());
                self.peer_exchange
                    .metrics
                    .enrs_sent
                    .inc_by(enrs.len() as u64);
                tracing::debug!(%peer, asked, sent = enrs.len(), "peer exchange answered");
                (encode_response(asked, enrs, status::OK, None), "ok")
            }
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .peer_exchange
            .send_response(channel, response);
        Metrics::count(&self.peer_exchange.metrics.requests, outcome);
        self.peer_exchange
            .metrics
            .duration
            .observe(started.elapsed().as_secs_f64());
    }

    /// Identify told us what `peer` speaks: a static peer that serves peer exchange is asked
    /// for the ENRs it knows, at most every [`LEARN_INTERVAL`].
    pub(crate) fn peer_exchange_on_identified(
        &mut self,
        peer: PeerId,
        protocols: &[StreamProtocol],
    ) {
        if !self.peer_exchange.learn
            || !protocols.contains(&PROTOCOL_ID)
            || !self.is_static_peer(&peer)
        {
            return;
        }
        let now = Instant::now();
        if let Some(last) = self.peer_exchange.asked.get(&peer) {
            if now.saturating_duration_since(*last) < LEARN_INTERVAL {
                return;
            }
        }
        self.peer_exchange.asked.insert(peer, now);
        let id = self
            .swarm
            .behaviour_mut()
            .peer_exchange
            .send_request(&peer, encode_request(MAX_PEERS_PER_RESPONSE));
        self.peer_exchange.queries.insert(id);
        self.peer_exchange.book.expire(now);
    }

    fn learn_enrs(&mut self, peer: PeerId, response: &[u8]) {
        let px = &mut self.peer_exchange;
        let reply = match decode_response(response) {
            Ok(reply) if reply.status == status::OK => reply,
            Ok(reply) => {
                tracing::debug!(%peer, status = reply.status, "peer exchange query refused");
                Metrics::count(&px.metrics.queries, "refused");
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "malformed peer exchange answer");
                Metrics::count(&px.metrics.queries, "failed");
                return;
            }
        };
        Metrics::count(&px.metrics.queries, "ok");
        let now = Instant::now();
        for raw in reply.enrs {
            let outcome =
                match waku_enr::decode(&raw).and_then(|enr| px.book.insert(&enr, false, now)) {
                    Ok(added) => added.label(),
                    Err(_) => "invalid",
                };
            if outcome == Added::New.label() {
                tracing::debug!(from = %peer, "learned an ENR");
            }
            Metrics::count(&px.metrics.learned, outcome);
        }
        px.refresh_gauges();
    }
}
