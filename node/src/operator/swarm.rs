//! The operator capability on the swarm task: `/roost/attestation/1.0.0` (serving this node's
//! attestation, fetching peers'), and keeping the [`FleetView`] of verified fleet peers.
//!
//! A peer claims fleet membership by listing the attestation protocol in identify (a node only
//! accepts inbound attestation requests, and so only advertises the protocol, when it has an
//! attestation). When this node trusts operator keys, it fetches the attestation of every peer
//! that claims membership, verifies it (signature, trusted key, fleet, PeerId, validity) and
//! counts rejections by reason. Verification is a signature check: cheap enough for the swarm
//! task; nothing here blocks.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime},
};

use libp2p::{identify, request_response, PeerId};
use tokio::sync::watch;

use super::{
    attestation::{format_time, Rejection, Role, MAX_BYTES},
    local::Current,
    parse_fleet_namespace, FleetPeer, FleetView, Metrics, Verifier, PROTOCOL_ID,
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
    /// The fleet whose namespaces this node guards (rendezvous).
    fleet: Option<String>,
    view: FleetView,
    /// Peers whose attestation is being fetched.
    pending: HashSet<PeerId>,
    /// Why a connected peer's attestation was refused, for fleet-namespace refusals.
    last_rejection: HashMap<PeerId, &'static str>,
    metrics: Metrics,
}

impl State {
    pub fn new(
        local: watch::Receiver<Current>,
        verifier: Option<Verifier>,
        fleet: Option<String>,
        view: FleetView,
        metrics: Metrics,
    ) -> Self {
        State {
            local,
            verifier,
            fleet,
            view,
            pending: HashSet::new(),
            last_rejection: HashMap::new(),
            metrics,
        }
    }

    pub fn view(&self) -> &FleetView {
        &self.view
    }

    /// Whether `peer` may use the rendezvous namespace `namespace`. Namespaces outside
    /// `/roost/…` are open to all. Under `/roost/<fleet>/[<role>/…]` the peer needs a verified
    /// attestation for that fleet (with that role, when the segment names one); only this
    /// node's own fleet can be checked, other fleets' namespaces are refused. Refusals are
    /// counted by reason; the reason is returned for the response text.
    pub fn authorize_namespace(&self, peer: &PeerId, namespace: &str) -> Result<(), &'static str> {
        let Some((fleet, role)) = parse_fleet_namespace(namespace) else {
            if namespace.starts_with("/roost/") {
                return self.refuse("malformed_namespace");
            }
            return Ok(());
        };
        if self.verifier.is_none() || self.fleet.as_deref() != Some(fleet) {
            return self.refuse("foreign_fleet");
        }
        let role = match role.map(Role::parse) {
            Some(Some(role)) => Some(role),
            Some(None) => return self.refuse("unknown_role"),
            None => None,
        };
        match self.view.get(peer) {
            Some(member) if member.fleet == fleet => match role {
                Some(role) if !member.has_role(role) => self.refuse("missing_role"),
                _ => Ok(()),
            },
            Some(_) => self.refuse("wrong_fleet"),
            None => match self.last_rejection.get(peer) {
                Some(reason) => self.refuse(reason),
                None if self.pending.contains(peer) => self.refuse("not_verified_yet"),
                None => self.refuse("no_attestation"),
            },
        }
    }

    fn refuse(&self, reason: &'static str) -> Result<(), &'static str> {
        self.metrics
            .namespace_refusals
            .get_or_create(&crate::metrics::ReasonLabels { reason })
            .inc();
        Err(reason)
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
                    self.operator.pending.remove(&peer);
                    self.judge_attestation(peer, &response);
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                if self.operator.pending.remove(&peer) {
                    tracing::debug!(%peer, %error, "cannot fetch the attestation of a peer claiming fleet membership");
                    self.operator.metrics.reject("unreachable");
                    self.operator.last_rejection.insert(peer, "unreachable");
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
        if self.operator.pending.insert(peer) {
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
                // A peer that already proved membership cannot downgrade to an older attestation.
                match self.operator.view.peers().iter().find(|(p, _)| *p == peer) {
                    Some((_, known)) if signed.attestation.seq < known.seq => {
                        Err(Rejection::Superseded {
                            got: signed.attestation.seq,
                            newest: known.seq,
                        })
                    }
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
                self.operator.last_rejection.remove(&peer);
                self.operator
                    .view
                    .insert(peer, FleetPeer::from_attestation(a));
            }
            Err(rejection) => {
                tracing::warn!(%peer, reason = rejection.label(), error = %rejection, "peer claims fleet membership; its attestation is refused");
                self.operator.metrics.reject(rejection.label());
                self.operator.last_rejection.insert(peer, rejection.label());
                self.operator.view.remove(&peer);
            }
        }
        self.operator
            .metrics
            .fleet_peers
            .set(self.operator.view.len() as i64);
    }

    /// The last connection to `peer` closed.
    pub(crate) fn on_operator_peer_gone(&mut self, peer: PeerId) {
        self.operator.pending.remove(&peer);
        self.operator.last_rejection.remove(&peer);
        if self.operator.view.remove(&peer).is_some() {
            tracing::debug!(%peer, "fleet peer disconnected");
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
