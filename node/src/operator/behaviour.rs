//! The operator capability as a behaviour of its own: `/roost/attestation/1.0.0` (serving this
//! node's attestation, fetching peers'), and keeping the [`FleetView`] of verified fleet peers.
//!
//! A peer claims fleet membership by listing the attestation protocol in identify (a node only
//! accepts inbound attestation requests, and so only advertises the protocol, when it has an
//! attestation). When this node trusts operator keys, it fetches the attestation of every peer
//! that claims membership, verifies it (signature, trusted key, fleet, PeerId, validity) and
//! counts rejections by reason. Verified members get fleet quotas from the throttle
//! ([`crate::throttle::Throttle::set_fleet_member`]) and may register under their fleet's
//! rendezvous namespaces ([`super::policy`]). Verification is a signature check: cheap enough for
//! the swarm task; nothing here blocks.

use std::{
    convert::Infallible,
    time::{Duration, SystemTime},
};

use libp2p::{
    identify,
    request_response::{self, OutboundFailure, OutboundRequestId},
    PeerId,
};
use tokio::sync::watch;

use super::{
    attestation::{format_time, Rejection, MAX_BYTES},
    local::Current,
    FleetPeer, FleetView, Metrics, Verifier, PROTOCOL_ID,
};
use crate::{
    reqres::{self, Handled, Inbound, LpCodec},
    throttle::{self, Throttle, Throttled},
};

/// The attestation protocol.
pub type Behaviour = reqres::Behaviour<State>;

/// The attestation protocol: inbound only when this node has an attestation to serve (so only
/// then is it advertised in identify), outbound always (to fetch peers').
pub fn behaviour(serves: bool, state: State, throttle: Throttle) -> Behaviour {
    let inner = request_response::Behaviour::with_codec(
        // Requests are empty; responses are one attestation.
        LpCodec::new(64, MAX_BYTES),
        [(PROTOCOL_ID, reqres::support(serves))],
        request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
    );
    reqres::Behaviour::new(inner, state, throttle)
}

/// The operator state the attestation behaviour owns.
pub struct State {
    /// The attestation this node serves (updated when the file is renewed).
    local: watch::Receiver<Current>,
    /// Set when the node trusts operator keys: peers' attestations are then checked.
    verifier: Option<Verifier>,
    /// Fleet status of connected peers (members, refusals, fetches in flight), shared with the
    /// rendezvous server's [`super::policy::FleetPolicy`].
    view: FleetView,
    metrics: Metrics,
    /// Fleet members get fleet quotas (and a positive gossipsub score).
    throttle: Throttle,
}

impl State {
    pub fn new(
        local: watch::Receiver<Current>,
        verifier: Option<Verifier>,
        view: FleetView,
        metrics: Metrics,
        throttle: Throttle,
    ) -> Self {
        State {
            local,
            verifier,
            view,
            metrics,
            throttle,
        }
    }

    pub fn view(&self) -> &FleetView {
        &self.view
    }

    fn judge_attestation(&mut self, peer: PeerId, bytes: &[u8]) {
        let Some(verifier) = &self.verifier else {
            return;
        };
        let result = verifier
            .verify(bytes, Some(&peer), SystemTime::now())
            .and_then(|signed| {
                // A peer that proved membership cannot fall back to an older attestation.
                match self.view.newest_seq(&peer) {
                    Some(newest) if signed.attestation.seq < newest => Err(Rejection::Superseded {
                        got: signed.attestation.seq,
                        newest,
                    }),
                    _ => Ok(signed),
                }
            });
        match result {
            Ok(signed) => {
                let a = &signed.attestation;
                tracing::info!(
                    %peer,
                    fleet = %a.fleet,
                    roles = %a.roles_text(),
                    expires = %format_time(a.expires_at),
                    operator = %a.operator.fingerprint(),
                    "fleet peer verified"
                );
                self.metrics.verified.inc();
                self.view.insert(peer, FleetPeer::from_attestation(a));
                // Fleet quotas and a positive gossipsub application score.
                self.throttle.set_fleet_member(peer, true);
            }
            Err(rejection) => {
                tracing::warn!(%peer, reason = rejection.label(), error = %rejection, "peer claims fleet membership; its attestation is refused");
                self.metrics.reject(rejection.label());
                self.view.refuse(peer, rejection.label());
                self.throttle.set_fleet_member(peer, false);
            }
        }
        self.refresh_gauge();
    }

    fn refresh_gauge(&self) {
        self.metrics.fleet_peers.set(self.view.len() as i64);
    }
}

impl reqres::Service for State {
    type Event = Infallible;

    /// Attestations are small and served from memory: not throttled.
    fn quota(&self, _: &[u8]) -> Option<throttle::Service> {
        None
    }

    fn refusal(&mut self, _: &[u8], _: &Throttled) -> Vec<u8> {
        Vec::new()
    }

    fn on_request(&mut self, inbound: Inbound) -> Handled<Infallible> {
        let response = self
            .local
            .borrow()
            .as_ref()
            .map(|s| s.bytes.clone())
            .unwrap_or_default();
        if !response.is_empty() {
            self.metrics.served.inc();
        }
        tracing::trace!(peer = %inbound.peer, "served attestation");
        Handled::Reply(inbound.channel, response)
    }

    fn on_response(
        &mut self,
        peer: PeerId,
        _: OutboundRequestId,
        response: Vec<u8>,
    ) -> Option<Infallible> {
        self.view.end_fetch(&peer);
        self.judge_attestation(peer, &response);
        None
    }

    fn on_outbound_failure(
        &mut self,
        peer: PeerId,
        _: OutboundRequestId,
        error: &OutboundFailure,
    ) -> Option<Infallible> {
        if self.view.end_fetch(&peer) {
            tracing::debug!(%peer, %error, "cannot fetch the attestation of a peer claiming fleet membership");
            self.metrics.reject("unreachable");
            self.view.refuse(peer, "unreachable");
            self.throttle.set_fleet_member(peer, false);
        }
        None
    }

    fn on_inbound_failure(&mut self, peer: PeerId, error: &request_response::InboundFailure) {
        tracing::debug!(%peer, %error, "attestation request from peer failed");
    }
}

// === the node's hooks ===

/// identify told us what a peer runs: fetch its attestation if it claims membership.
pub fn on_identified(behaviour: &mut Behaviour, peer: PeerId, info: &identify::Info) {
    let state = behaviour.service();
    if state.verifier.is_none() || !info.protocols.contains(&PROTOCOL_ID) {
        return;
    }
    if state.view.get(&peer).is_some() {
        return;
    }
    fetch(behaviour, peer);
}

/// Fetches `peer`'s attestation, unless a fetch is in flight.
pub fn fetch(behaviour: &mut Behaviour, peer: PeerId) {
    if behaviour.service().view.start_fetch(peer) {
        behaviour.send_request(&peer, Vec::new());
    }
}

/// The last connection to `peer` closed.
pub fn on_peer_gone(behaviour: &mut Behaviour, peer: PeerId) {
    let state = behaviour.service_mut();
    if state.view.forget(&peer).is_some() {
        tracing::debug!(%peer, "fleet peer disconnected");
        state.throttle.set_fleet_member(peer, false);
    }
    state.refresh_gauge();
}

/// Once a second: drops fleet peers whose attestation expired; returns them, so the
/// connected ones can be asked for a renewed one ([`fetch`]).
pub fn expire(behaviour: &mut Behaviour) -> Vec<PeerId> {
    let state = behaviour.service();
    let expired = state.view.remove_expired(SystemTime::now());
    for peer in &expired {
        tracing::info!(%peer, "a fleet peer's attestation expired; fetching it again");
        state.throttle.set_fleet_member(*peer, false);
    }
    state.refresh_gauge();
    expired
}
