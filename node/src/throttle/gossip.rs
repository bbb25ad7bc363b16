//! The throttle's hooks on the relay: the relay gate before gossipsub validation, offences for
//! invalid messages, and the per-second look at gossipsub peer scores. The swarm task calls
//! them with what they need; they never see the swarm task.

use std::net::IpAddr;

use libp2p::{
    gossipsub::{self, MessageAcceptance},
    PeerId,
};

use super::{
    metrics::{ScoreLabels, SCORE_RANGES},
    offence, relay_lane, scoring, BanReason, Offender, Throttle,
};

/// Why the relay gate refused a message: the verdict for gossipsub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayRefusal {
    /// Over quota, within a second quota's worth of grace: dropped, no penalty.
    Ignore,
    /// Over quota and grace: an offence, and gossipsub score lost.
    Reject,
}

impl RelayRefusal {
    /// The verdict for gossipsub.
    pub fn acceptance(self) -> MessageAcceptance {
        match self {
            RelayRefusal::Ignore => MessageAcceptance::Ignore,
            RelayRefusal::Reject => MessageAcceptance::Reject,
        }
    }

    /// The `verdict` label of `roost_relay_validations_total`.
    pub fn label(self) -> &'static str {
        match self {
            RelayRefusal::Ignore => "ignore",
            RelayRefusal::Reject => "reject",
        }
    }
}

impl Throttle {
    /// Relay quota check for a message `source` (connected from `ip`) forwarded on
    /// `pubsub_topic`, before it is decoded.
    pub fn relay_gate(
        &self,
        source: &PeerId,
        ip: Option<IpAddr>,
        pubsub_topic: &str,
        bytes: usize,
    ) -> Result<(), RelayRefusal> {
        let lane = relay_lane(pubsub_topic);
        let Err(throttled) = self.check_relay(source, lane, bytes, ip) else {
            return Ok(());
        };
        if self.relay_grace(source, lane, bytes, ip, &throttled) {
            tracing::trace!(peer = %source, %throttled, "relay message over quota: ignored");
            return Err(RelayRefusal::Ignore);
        }
        let outcome = self.offend_throttled(source, ip, &throttled);
        tracing::trace!(peer = %source, %throttled, score = outcome.score, "relay message over quota and grace: rejected");
        Err(RelayRefusal::Reject)
    }

    /// Records an invalid relay message from `source` as an offence.
    pub fn relay_invalid(&self, source: &PeerId) {
        self.offend(
            Offender::Peer(*source),
            offence::points::INVALID,
            BanReason::Invalid,
        );
    }

    /// Once a second: the peer score distribution, fleet members' application score, and
    /// the graylisted peers to disconnect (banned here, which also counts as an offence).
    /// Generic peers (`is_generic`: no Waku metadata) are left out of both.
    pub fn score_tick(
        &self,
        gs: &mut gossipsub::Behaviour,
        is_generic: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        let fleet = self.fleet_members();
        let removed = self.take_fleet_removed();
        for peer in &removed {
            gs.set_application_score(peer, 0.0);
        }
        for peer in &fleet {
            gs.set_application_score(peer, scoring::FLEET_APP_SCORE);
        }
        let mut counts = [0i64; SCORE_RANGES.len()];
        let mut graylisted = Vec::new();
        let graylist = scoring::thresholds().graylist_threshold;
        // Only relay peers: ones that speak gossipsub, and are not generic peers (those carry a
        // deliberate negative score, see `swarm::peer_kind`). Light clients are scored too
        // (gossipsub scores every connection, IP colocation included), but a score says
        // nothing about how a peer that never relays behaves: 20 phones behind one NAT would
        // otherwise sink below graylist on colocation alone and be banned.
        let peers: Vec<PeerId> = gs
            .peer_protocol()
            .filter(|(p, kind)| speaks_gossipsub(kind) && !is_generic(p))
            .map(|(p, _)| *p)
            .collect();
        for peer in peers {
            let score = gs.peer_score(&peer).unwrap_or(0.0);
            let range = scoring::range_of(score);
            if let Some(i) = SCORE_RANGES.iter().position(|r| *r == range) {
                counts[i] += 1;
            }
            if score < graylist {
                graylisted.push((peer, score));
            }
        }
        for (range, n) in SCORE_RANGES.iter().zip(counts) {
            self.metrics()
                .peer_scores
                .get_or_create(&ScoreLabels { range })
                .set(n);
        }
        // A score below graylist takes many invalid or over-quota messages: ban the peer
        // (which also closes its connections), or at least disconnect it.
        let mut disconnect = Vec::new();
        for (peer, score) in graylisted {
            let who = Offender::Peer(peer);
            if self.is_immune(&who) {
                continue;
            }
            let banned = self.ban_offender(who, BanReason::Score);
            tracing::info!(%peer, score, banned, "disconnecting graylisted relay peer");
            disconnect.push(peer);
        }
        disconnect
    }
}

/// Whether gossipsub negotiated one of its own protocols with the peer: it keeps a
/// `Floodsub` placeholder for peers that have not (or never will; Roost serves no floodsub).
/// Its `PeerKind` type is not exported, its static name is.
fn speaks_gossipsub(kind: &impl AsRef<str>) -> bool {
    kind.as_ref().starts_with("Gossipsub")
}
