//! Gossipsub peer scoring with Waku's parameters (nwaku `waku_relay/protocol.nim`, waku.md
//! §3), so peers whose messages keep being Rejected (invalid or over quota) lose standing:
//! below the gossip threshold they get no gossip, below publish no published messages, below
//! graylist all their RPCs are ignored, and the swarm task disconnects them.
//!
//! Attested fleet members get a positive application-specific score ([`FLEET_APP_SCORE`]).

use std::time::Duration;

use libp2p::gossipsub::{self, PeerScoreParams, PeerScoreThresholds, TopicScoreParams};

/// Application-specific score (P5) of attested fleet members, weighted by
/// [`APP_SPECIFIC_WEIGHT`]: enough to outweigh the IP colocation penalty of a small fleet
/// behind one address, far below what invalid messages cost.
pub const FLEET_APP_SCORE: f64 = 100.0;
/// Weight of the application-specific score.
pub const APP_SPECIFIC_WEIGHT: f64 = 1.0;

/// Waku's thresholds: gossip −100, publish −1000, graylist −10000.
pub fn thresholds() -> PeerScoreThresholds {
    PeerScoreThresholds {
        gossip_threshold: -100.0,
        publish_threshold: -1000.0,
        graylist_threshold: -10000.0,
        // libp2p's defaults: Waku does not use peer exchange through gossipsub PRUNE.
        ..PeerScoreThresholds::default()
    }
}

/// Waku's per-topic parameters: time in mesh 0.01 per second up to 10, first deliveries 1.0
/// (decay 0.5, cap 10), mesh delivery penalties off, invalid messages −100 (decay 0.5).
pub fn topic_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 10.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.5,
        first_message_deliveries_cap: 10.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.5,
        ..TopicScoreParams::default()
    }
}

/// Waku's peer parameters (decay every 12 s to zero at 0.01, scores retained 10 min, IP
/// colocation −50 beyond 5 peers per IP, behaviour penalty −10 decaying by 0.986), with
/// every relayed topic scored and `exempt_ips` spared the colocation penalty.
pub fn params(
    topics: impl IntoIterator<Item = gossipsub::TopicHash>,
    exempt_ips: &[std::net::IpAddr],
) -> PeerScoreParams {
    PeerScoreParams {
        topics: topics.into_iter().map(|t| (t, topic_params())).collect(),
        app_specific_weight: APP_SPECIFIC_WEIGHT,
        ip_colocation_factor_weight: -50.0,
        ip_colocation_factor_threshold: 5.0,
        ip_colocation_factor_whitelist: exempt_ips.iter().copied().collect(),
        behaviour_penalty_weight: -10.0,
        behaviour_penalty_decay: 0.986,
        decay_interval: Duration::from_secs(12),
        decay_to_zero: 0.01,
        retain_score: Duration::from_secs(600),
        ..PeerScoreParams::default()
    }
}

/// Turns scoring on for `gs` with the relay's topics.
pub fn enable(
    gs: &mut gossipsub::Behaviour,
    relay: &crate::relay::Config,
    throttle: &super::Config,
) -> Result<(), String> {
    let topics = relay
        .pubsub_topics()
        .into_iter()
        .map(|t| crate::relay::topic(t).hash());
    gs.with_peer_score(params(topics, &throttle.exempt_ips), thresholds())
        .map_err(|e| format!("invalid gossipsub scoring parameters: {e}"))
}

/// The `range` label of a score (see [`super::metrics::SCORE_RANGES`]).
pub fn range_of(score: f64) -> &'static str {
    let t = thresholds();
    if score < t.graylist_threshold {
        "below_graylist"
    } else if score < t.publish_threshold {
        "below_publish"
    } else if score < t.gossip_threshold {
        "below_gossip"
    } else if score < 0.0 {
        "negative"
    } else if score == 0.0 {
        "zero"
    } else {
        "positive"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waku_parameters_are_valid_for_libp2p() {
        let mut gs = crate::relay::gossipsub_behaviour(&crate::relay::Config::default()).unwrap();
        enable(
            &mut gs,
            &crate::relay::Config::default(),
            &super::super::Config::default(),
        )
        .unwrap();
        thresholds().validate().unwrap();
        topic_params().validate().unwrap();
    }

    #[test]
    fn scores_fall_into_closed_ranges() {
        assert_eq!(range_of(-20000.0), "below_graylist");
        assert_eq!(range_of(-5000.0), "below_publish");
        assert_eq!(range_of(-500.0), "below_gossip");
        assert_eq!(range_of(-5.0), "negative");
        assert_eq!(range_of(0.0), "zero");
        assert_eq!(range_of(3.0), "positive");
        for r in [
            "below_graylist",
            "below_publish",
            "below_gossip",
            "negative",
            "zero",
            "positive",
        ] {
            assert!(super::super::metrics::SCORE_RANGES.contains(&r));
        }
    }
}
