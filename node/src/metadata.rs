//! Waku metadata (66/WAKU2-METADATA), `/vac/waku/metadata/1.0.0`: peers exchange their cluster id
//! and shards on every new connection; a peer of another cluster is disconnected, as nwaku does.

use std::collections::HashSet;

use libp2p::{
    request_response::{self, OutboundFailure, OutboundRequestId},
    PeerId, StreamProtocol,
};
use prost::Message as _;

use crate::{
    reqres::{self, Handled, Inbound, LpCodec},
    throttle::{self, Throttle, Throttled},
};

pub const PROTOCOL_ID: StreamProtocol = StreamProtocol::new("/vac/waku/metadata/1.0.0");

/// nwaku reads at most 1024 bytes of a metadata response; a request is the same shape.
const MAX_FRAME: usize = 1024;

/// Request and response have the same shape: the sender's own cluster and shards.
///
/// Shards go out twice, as nwaku writes them: unpacked in the deprecated field 2 and packed in
/// field 3. Readers take field 3 when present, else field 2 (either packing).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WakuMetadata {
    #[prost(uint32, optional, tag = "1")]
    pub cluster_id: Option<u32>,
    #[prost(uint32, repeated, packed = "false", tag = "2")]
    pub shards_deprecated: Vec<u32>,
    #[prost(uint32, repeated, tag = "3")]
    pub shards: Vec<u32>,
}

impl WakuMetadata {
    pub fn new(cluster_id: u16, shards: &[u16]) -> Self {
        let shards: Vec<u32> = shards.iter().map(|s| u32::from(*s)).collect();
        WakuMetadata {
            cluster_id: Some(u32::from(cluster_id)),
            shards_deprecated: shards.clone(),
            shards,
        }
    }

    pub fn decode_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        WakuMetadata::decode(bytes)
    }

    /// The shards the peer announced, whichever field it used.
    pub fn announced_shards(&self) -> &[u32] {
        if self.shards.is_empty() {
            &self.shards_deprecated
        } else {
            &self.shards
        }
    }
}

/// What a metadata exchange says about a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    SameCluster,
    /// The peer is in another cluster, or announced none.
    WrongCluster(Option<u32>),
}

pub fn judge(ours: u16, theirs: &WakuMetadata) -> Verdict {
    match theirs.cluster_id {
        Some(c) if c == u32::from(ours) => Verdict::SameCluster,
        other => Verdict::WrongCluster(other),
    }
}

/// The metadata protocol, asked on every new peer and answered to every peer.
pub type Behaviour = reqres::Behaviour<Service>;

pub fn behaviour(cluster_id: u16, shards: &[u16], throttle: Throttle) -> Behaviour {
    let inner = request_response::Behaviour::with_codec(
        LpCodec::new(MAX_FRAME, MAX_FRAME),
        [(PROTOCOL_ID, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(std::time::Duration::from_secs(10)),
    );
    let service = Service {
        cluster_id,
        ours: WakuMetadata::new(cluster_id, shards).encode_to_vec(),
        pending: HashSet::new(),
    };
    reqres::Behaviour::new(inner, service, throttle)
}

/// What a metadata exchange said about a peer; the node acts on it (peer kinds, relay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer is in our cluster.
    Waku(PeerId),
    /// The peer is in another cluster, or announced none: disconnect it.
    WrongCluster(PeerId),
    /// The peer answered garbage: disconnect it.
    Malformed(PeerId),
    /// The peer does not speak metadata (or never answered): a generic libp2p peer.
    Generic(PeerId),
}

/// Our metadata, and the peers asked.
pub struct Service {
    cluster_id: u16,
    /// Our own metadata, encoded once.
    ours: Vec<u8>,
    /// Peers whose metadata request is in flight, so each is asked once per connection burst.
    pending: HashSet<PeerId>,
}

impl reqres::Service for Service {
    type Event = Event;

    fn quota(&self, _: &[u8]) -> Option<throttle::Service> {
        None
    }

    fn refusal(&mut self, _: &[u8], _: &Throttled) -> Vec<u8> {
        self.ours.clone()
    }

    fn on_request(&mut self, inbound: Inbound) -> Handled<Event> {
        // Answer with our own metadata whatever theirs says; our own request decides whether
        // the peer stays.
        if let Err(e) = WakuMetadata::decode_bytes(&inbound.request) {
            tracing::debug!(peer = %inbound.peer, error = %e, "malformed metadata request");
        }
        Handled::Reply(inbound.channel, self.ours.clone())
    }

    fn on_response(
        &mut self,
        peer: PeerId,
        _: OutboundRequestId,
        response: Vec<u8>,
    ) -> Option<Event> {
        self.pending.remove(&peer);
        Some(match WakuMetadata::decode_bytes(&response) {
            Ok(theirs) => match judge(self.cluster_id, &theirs) {
                Verdict::SameCluster => {
                    tracing::debug!(%peer, shards = ?theirs.announced_shards(), "peer is in our cluster");
                    Event::Waku(peer)
                }
                Verdict::WrongCluster(cluster) => {
                    tracing::info!(%peer, their_cluster = ?cluster, our_cluster = self.cluster_id, "disconnecting peer of another cluster");
                    Event::WrongCluster(peer)
                }
            },
            Err(e) => {
                tracing::info!(%peer, error = %e, "disconnecting peer with malformed metadata");
                Event::Malformed(peer)
            }
        })
    }

    fn on_outbound_failure(
        &mut self,
        peer: PeerId,
        _: OutboundRequestId,
        error: &OutboundFailure,
    ) -> Option<Event> {
        self.pending.remove(&peer);
        match error {
            OutboundFailure::ConnectionClosed | OutboundFailure::DialFailure => None,
            // Not speaking metadata (or never answering it) is not a wrong cluster: a plain
            // libp2p peer (a rendezvous client, a tool) is served, but kept out of relay since
            // it cannot prove its cluster.
            OutboundFailure::UnsupportedProtocols => {
                tracing::debug!(%peer, "peer does not speak Waku metadata: a generic libp2p peer");
                Some(Event::Generic(peer))
            }
            other => {
                tracing::debug!(%peer, error = %other, "metadata exchange failed: treating the peer as a generic libp2p peer");
                Some(Event::Generic(peer))
            }
        }
    }

    fn on_inbound_failure(&mut self, peer: PeerId, error: &request_response::InboundFailure) {
        tracing::debug!(%peer, %error, "inbound metadata request failed");
    }
}

/// A first connection to `peer`: ask its metadata (once per connection burst).
pub fn ask(behaviour: &mut Behaviour, peer: PeerId) {
    if behaviour.service_mut().pending.insert(peer) {
        let request = behaviour.service().ours.clone();
        behaviour.send_request(&peer, request);
    }
}

/// The last connection to `peer` closed.
pub fn forget(behaviour: &mut Behaviour, peer: &PeerId) {
    behaviour.service_mut().pending.remove(peer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_written_in_both_fields() {
        let bytes = WakuMetadata::new(16, &[32, 64]).encode_to_vec();
        // field 1 varint 16; field 2 unpacked twice; field 3 packed.
        assert_eq!(bytes, vec![0x08, 16, 0x10, 32, 0x10, 64, 0x1a, 2, 32, 64]);
    }

    #[test]
    fn js_waku_style_packed_field_two_is_read() {
        // js-waku: cluster 1, shards [0, 1] packed in field 2.
        let bytes = [0x08, 1, 0x12, 2, 0, 1];
        let m = WakuMetadata::decode_bytes(&bytes).unwrap();
        assert_eq!(m.cluster_id, Some(1));
        assert_eq!(m.announced_shards(), &[0, 1]);
    }

    #[test]
    fn clusters_are_judged() {
        assert_eq!(judge(1, &WakuMetadata::new(1, &[0])), Verdict::SameCluster);
        assert_eq!(
            judge(1, &WakuMetadata::new(2, &[0])),
            Verdict::WrongCluster(Some(2))
        );
        assert_eq!(
            judge(1, &WakuMetadata::default()),
            Verdict::WrongCluster(None)
        );
    }
}
