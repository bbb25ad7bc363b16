//! The operator capability on the swarm task: `/roost/attestation/1.0.0` (serving this node's
//! attestation, fetching peers'), and keeping the [`FleetView`] of verified fleet peers.
//!
//! A peer claims fleet membership by listing the attestation protocol in identify (a node only
//! accepts inbound attestation requests, and so only advertises the protocol, when it has an
//! attestation). When this node trusts operator keys, it fetches the attestation of every peer
//! that claims membership, verifies it (signature, trusted key, fleet, PeerId, validity) and
//! counts rejections by reason. Verified members get fleet quotas from the throttle
//! ([`crate::throttle::Throttle::set_fleet_member`]) and may register under their fleet's
//! rendezvous namespaces ([`super::policy`]). Verification is a signature check: cheap enough for
//! the swarm task; nothing here blocks.

use std::time::{Duration, SystemTime};

use libp2p::{identify, request_response, PeerId};
use tokio::sync::watch;

use super::{
    attestation::{format_time, Rejection, MAX_BYTES},
    local::Current,
    FleetPeer, FleetView, Metrics, Verifier, PROTOCOL_ID,
};
use crate::{reqres::LpCodec, swarm::SwarmTask};

pub type Behaviour = request_response::Behaviour<LpCodec>;

/// The attestation protocol: inbound only when this node has an attestation to serve (so only
/// then is it advertised in identify), outbound always (to fetch peers').
pub fn behaviour(serves: bool) -> Behaviour {
    let support = if serves {
        request_response::ProtocolSupport::Full
    } else {
        request_response::ProtocolSupport::Outbound
    };
    request_response::Behaviour::with_codec(
        // Requests are empty; responses are one attestation.
        LpCodec::new(64, MAX_BYTES),
        [(PROTOCOL_ID, support)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
    )
}

/// The operator state the swarm task owns.
pub struct State {
    /// The attestation this node serves (updated when the file is renewed).
    local: watch::Receiver<Current>,
    /// Set when the node trusts operator keys: peers' attestations are then checked.
    verifier: Option<Verifier>,
    /// Fleet status of connected peers (members, refusals, fetches in flight), shared with the
    /// rendezvous server's [`super::policy::FleetPolicy`].
    view: FleetView,
    metrics: Metrics,
}

impl State {
    pub fn new(
        local: watch::Receiver<Current>,
        verifier: Option<Verifier>,
        view: FleetView,
        metrics: Metrics,
    ) -> Self {
        State {
            local,
            verifier,
            view,
            metrics,
        }
    }

    pub fn view(&self) -> &FleetView {
        &self.view
    }
}

impl SwarmTask {
    /// Events of the attestation protocol.
    pub(crate) fn on_attestation(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        let Some(event) = self.take_outbound(crate::swarm::ReqResProtocol::Attestation, event)
        else {
            return;
        };
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { channel, .. } => {
                    let response = self
                        .operator
                        .local
                        .borrow()
                        .as_ref()
                        .map(|s| s.bytes.clone())
                        .unwrap_or_default();
                    if !response.is_empty() {
                        self.operator.metrics.served.inc();
                    }
                    // Err: the peer went away meanwhile.
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .attestation
                        .send_response(channel, response);
                    tracing::trace!(%peer, "served attestation");
                }
                request_response::Message::Response { response, .. } => {
                    self.operator.view.end_fetch(&peer);
                    self.judge_attestation(peer, &response);
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                if self.operator.view.end_fetch(&peer) {
                    tracing::debug!(%peer, %error, "cannot fetch the attestation of a peer claiming fleet membership");
                    self.operator.metrics.reject("unreachable");
                    self.operator.view.refuse(peer, "unreachable");
                    self.throttle.set_fleet_member(peer, false);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "attestation request from peer failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// identify told us what a peer runs: fetch its attestation if it claims membership.
    pub(crate) fn on_operator_identified(&mut self, peer: PeerId, info: &identify::Info) {
        if self.operator.verifier.is_none() || !info.protocols.contains(&PROTOCOL_ID) {
            return;
        }
        if self.operator.view.get(&peer).is_some() {
            return;
        }
        self.fetch_attestation(peer);
    }

    fn fetch_attestation(&mut self, peer: PeerId) {
        if self.operator.view.start_fetch(peer) {
            self.swarm
                .behaviour_mut()
                .attestation
                .send_request(&peer, Vec::new());
        }
    }

    fn judge_attestation(&mut self, peer: PeerId, bytes: &[u8]) {
        let Some(verifier) = &self.operator.verifier else {
            return;
        };
        let result = verifier
            .verify(bytes, Some(&peer), SystemTime::now())
            .and_then(|signed| {
                // A peer that proved membership cannot fall back to an older attestation.
                match self.operator.view.newest_seq(&peer) {
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
                self.operator.metrics.verified.inc();
                self.operator
                    .view
                    .insert(peer, FleetPeer::from_attestation(a));
                // Fleet quotas and a positive gossipsub application score.
                self.throttle.set_fleet_member(peer, true);
            }
            Err(rejection) => {
                tracing::warn!(%peer, reason = rejection.label(), error = %rejection, "peer claims fleet membership; its attestation is refused");
                self.operator.metrics.reject(rejection.label());
                self.operator.view.refuse(peer, rejection.label());
                self.throttle.set_fleet_member(peer, false);
            }
        }
        self.operator
            .metrics
            .fleet_peers
            .set(self.operator.view.len() as i64);
    }

    /// The last connection to `peer` closed.
    pub(crate) fn on_operator_peer_gone(&mut self, peer: PeerId) {
        if self.operator.view.forget(&peer).is_some() {
            tracing::debug!(%peer, "fleet peer disconnected");
            self.throttle.set_fleet_member(peer, false);
        }
        self.operator
            .metrics
            .fleet_peers
            .set(self.operator.view.len() as i64);
    }

    /// Once a second: drop fleet peers whose attestation expired and ask them for a renewed one.
    pub(crate) fn operator_tick(&mut self) {
        for peer in self.operator.view.remove_expired(SystemTime::now()) {
            tracing::info!(%peer, "a fleet peer's attestation expired; fetching it again");
            self.throttle.set_fleet_member(peer, false);
            if self.swarm.is_connected(&peer) {
                self.fetch_attestation(peer);
            }
        }
        self.operator
            .metrics
            .fleet_peers
            .set(self.operator.view.len() as i64);
    }
}
