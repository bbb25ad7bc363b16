//! Waku metadata (66/WAKU2-METADATA), `/vac/waku/metadata/1.0.0`: peers exchange their cluster id
//! and shards on every new connection; a peer of another cluster is disconnected, as nwaku does.

use libp2p::{request_response, StreamProtocol};
use prost::Message as _;

use crate::reqres::LpCodec;

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

pub type Behaviour = request_response::Behaviour<LpCodec>;

pub fn behaviour() -> Behaviour {
    request_response::Behaviour::with_codec(
        LpCodec::new(MAX_FRAME, MAX_FRAME),
        [(PROTOCOL_ID, request_response::ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(std::time::Duration::from_secs(10)),
    )
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
