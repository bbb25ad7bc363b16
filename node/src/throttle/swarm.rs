//! The throttle's hooks on the swarm task: admission of inbound requests (called by every
//! request/response protocol before decoding), the relay gate before gossipsub validation,
//! and the per-second look at gossipsub peer scores.

use std::net::IpAddr;

use libp2p::{gossipsub::MessageAcceptance, swarm::ConnectionId, PeerId};

use super::{
    metrics::{ScoreLabels, SCORE_RANGES},
    offence, relay_lane, scoring, BanReason, Offender, Service, Throttled,
};
use crate::swarm::SwarmTask;

impl SwarmTask {
    /// Admits (or refuses) one inbound request of `service` that arrived from `peer` on
    /// `connection`. Call it **before decoding** the request; on `Err` answer with the
    /// protocol's "too many requests" status and do no work. Refusals count as offences, so a
    /// peer that keeps going is banned and disconnected.
    pub fn admit(
        &mut self,
        service: Service,
        peer: PeerId,
        connection: ConnectionId,
    ) -> Result<(), Throttled> {
        let ip = self.remote_ip(connection);
        let result = self.throttle.check(service, &peer, ip);
        if let Err(throttled) = &result {
            tracing::debug!(%peer, ?ip, %throttled, "request throttled");
            self.throttle.offend_throttled(&peer, ip, throttled);
        }
        result
    }

    /// The remote IP of an open connection (for code that checks quotas off the swarm task).
    pub fn remote_ip(&self, connection: ConnectionId) -> Option<IpAddr> {
        self.swarm.behaviour().throttle.remote_ip(connection)
    }

    /// Relay quota check for a message `source` forwarded on `pubsub_topic`, before it is
    /// decoded. `Err` carries the verdict for gossipsub: Ignore within a second quota's worth
    /// of grace, Reject once the peer keeps going (an offence, and gossipsub score lost).
    pub(crate) fn relay_gate(
        &mut self,
        source: &PeerId,
        pubsub_topic: &str,
        bytes: usize,
    ) -> Result<(), MessageAcceptance> {
        let ip = self.swarm.behaviour().throttle.peer_ip(source);
        let Err(throttled) = self
            .throttle
            .check_relay(source, relay_lane(pubsub_topic), bytes, ip)
        else {
            return Ok(());
        };
        let lane = relay_lane(pubsub_topic);
        if self
            .throttle
            .relay_grace(source, lane, bytes, ip, &throttled)
        {
            self.relay_metrics.verdict("ignore", "throttled");
            tracing::trace!(peer = %source, %throttled, "relay message over quota: ignored");
            return Err(MessageAcceptance::Ignore);
        }
        let outcome = self.throttle.offend_throttled(source, ip, &throttled);
        self.relay_metrics.verdict("reject", "throttled");
        tracing::trace!(peer = %source, %throttled, score = outcome.score, "relay message over quota and grace: rejected");
        Err(MessageAcceptance::Reject)
    }

    /// Records an invalid relay message from `source` as an offence.
    pub(crate) fn relay_invalid(&mut self, source: &PeerId) {
        self.throttle.offend(
            Offender::Peer(*source),
            offence::points::INVALID,
            BanReason::Invalid,
        );
    }

    /// Once a second: the peer score distribution, fleet members' application score, and
    /// disconnection of graylisted peers (which also counts as an offence).
    pub(crate) fn on_throttle_tick(&mut self) {
        let fleet = self.throttle.fleet_members();
        let removed = self.throttle.take_fleet_removed();
        let Some(gs) = self.swarm.behaviour_mut().relay.as_mut() else {
            return;
        };
        for peer in &removed {
            gs.set_application_score(peer, 0.0);
        }
        for peer in &fleet {
            gs.set_application_score(peer, scoring::FLEET_APP_SCORE);
        }
        let mut counts = [0i64; SCORE_RANGES.len()];
        let mut graylisted = Vec::new();
        let graylist = scoring::thresholds().graylist_threshold;
        // Whether each peer speaks gossipsub. Light clients do not: gossipsub still scores
        // them, but only by the IP colocation penalty (they cannot send it a message), which
        // 20 clients behind one NAT are enough to push below graylist. Banning them for it
        // would refuse honest clients for a penalty meant for relay sybils. (Until the
        // protocol is negotiated a peer shows as floodsub, which Waku never speaks: wait.)
        // libp2p-gossipsub does not export `PeerKind`, only its names ("Gossipsub v1.1").
        let peers: Vec<(PeerId, bool)> = gs
            .peer_protocol()
            .map(|(p, kind)| (*p, kind.as_static_ref().starts_with("Gossipsub")))
            .collect();
        for (peer, speaks_gossipsub) in peers {
            let score = gs.peer_score(&peer).unwrap_or(0.0);
            let range = scoring::range_of(score);
            if let Some(i) = SCORE_RANGES.iter().position(|r| *r == range) {
                counts[i] += 1;
            }
            if score < graylist && speaks_gossipsub {
                graylisted.push((peer, score));
            }
        }
        for (range, n) in SCORE_RANGES.iter().zip(counts) {
            self.throttle
                .metrics()
                .peer_scores
                .get_or_create(&ScoreLabels { range })
                .set(n);
        }
        // A score below graylist takes many invalid or over-quota messages: ban the peer
        // (which also closes its connections), or at least disconnect it.
        for (peer, score) in graylisted {
            let who = Offender::Peer(peer);
            if self.throttle.is_immune(&who) {
                continue;
            }
            let banned = self.throttle.ban_offender(who, BanReason::Score);
            tracing::info!(%peer, score, banned, "disconnecting graylisted relay peer");
            self.disconnect(peer, "graylisted");
        }
    }
}
