//! Peer exchange (34/WAKU2-PEER-EXCHANGE), `/vac/waku/peer-exchange/2.0.0-alpha1`: light
//! clients that cannot run discv5 (browsers) ask a service node for the ENRs of other nodes of
//! their cluster and dial those.
//!
//! The node answers from its ENR book ([`Book`]): the ENRs configured in `peer_exchange.enrs`
//! (e.g. the rest of the fleet, copied from each node's `/debug/v1/info`) and, with
//! `peer_exchange.learn_from_static_peers`, the ENRs its static peers hand out when asked (every
//! [`LEARN_INTERVAL`]). Only verified records of this node's cluster enter the book; an answer is
//! a random sample of at most min(`num_peers`, [`MAX_PEERS_PER_RESPONSE`]) of them, never the
//! requester's own. Codes: 200, 400 (malformed request), 429 (throttled).
//!
//! This module owns the wire format, the `[peer_exchange]` config section, the book and the
//! `roost_peer_exchange_*` metrics; the service is a behaviour of its own (`behaviour.rs`), which
//! never blocks the swarm task (the book is a small in-memory map).

pub mod behaviour;
pub mod metrics;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{PeerId, StreamProtocol};
use prost::Message as _;
use rand::seq::IteratorRandom;
use serde::{Deserialize, Serialize};

pub use behaviour::{behaviour, Behaviour, Service};
pub use metrics::Metrics;

use crate::waku_enr;

pub const PROTOCOL_ID: StreamProtocol = StreamProtocol::new("/vac/waku/peer-exchange/2.0.0-alpha1");

/// Most ENRs in one answer (nwaku's cache size).
pub const MAX_PEERS_PER_RESPONSE: u64 = 60;
/// How often a static peer is asked for the ENRs it knows.
pub const LEARN_INTERVAL: Duration = Duration::from_secs(600);
/// A learned ENR not heard of again for this long is dropped from the book.
pub const LEARNED_TTL: Duration = Duration::from_secs(3 * 600);
/// Most learned ENRs kept (configured ones always are).
pub const MAX_LEARNED: usize = 1000;
const MAX_REQUEST: usize = 4 * 1024;
/// 60 records of at most 300 bytes, with framing.
const MAX_RESPONSE: usize = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// `[peer_exchange]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Answer peer-exchange requests from light clients. Default `true`.
    pub enabled: bool,
    /// ENRs (`enr:-...`) of other nodes of this cluster to hand out, e.g. the rest of the fleet.
    /// Default `[]`.
    pub enrs: Vec<String>,
    /// Ask static peers (`network.peers`) for the ENRs they know and hand those out too.
    /// Default `true`.
    pub learn_from_static_peers: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            enrs: Vec::new(),
            learn_from_static_peers: true,
        }
    }
}

impl Config {
    /// Every configured ENR must parse, verify and belong to `cluster_id`.
    pub(crate) fn validate(&self, cluster_id: u16) -> Result<(), String> {
        for (i, text) in self.enrs.iter().enumerate() {
            let enr = waku_enr::parse(text).map_err(|e| {
                format!("peer_exchange.enrs[{i}] is not usable: {e}; copy the `enr` of the node's /debug/v1/info")
            })?;
            match waku_enr::shards(&enr) {
                Some((cluster, _)) if cluster == cluster_id => {}
                Some((cluster, _)) => {
                    return Err(format!(
                        "peer_exchange.enrs[{i}] is a node of cluster {cluster}, but relay.cluster_id is {cluster_id}; remove it"
                    ))
                }
                None => {
                    return Err(format!(
                        "peer_exchange.enrs[{i}] lists no relay shards (`rs`/`rsv`), so its cluster is unknown; use the ENR of a Waku relay node"
                    ))
                }
            }
        }
        Ok(())
    }
}

// === wire format ===

#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerInfo {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub enr: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerExchangeQuery {
    #[prost(uint64, optional, tag = "1")]
    pub num_peers: Option<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerExchangeResponse {
    #[prost(message, repeated, tag = "1")]
    pub peer_infos: Vec<PeerInfo>,
    #[prost(uint32, optional, tag = "10")]
    pub status_code: Option<u32>,
    #[prost(string, optional, tag = "11")]
    pub status_desc: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerExchangeRpc {
    #[prost(message, optional, tag = "1")]
    pub query: Option<PeerExchangeQuery>,
    #[prost(message, optional, tag = "2")]
    pub response: Option<PeerExchangeResponse>,
}

/// Status codes (nwaku's extension fields 10/11).
pub mod status {
    pub const OK: u32 = 200;
    pub const BAD_REQUEST: u32 = 400;
    pub const TOO_MANY_REQUESTS: u32 = 429;
}

/// A request for `num_peers` ENRs.
pub fn encode_request(num_peers: u64) -> Vec<u8> {
    PeerExchangeRpc {
        query: Some(PeerExchangeQuery {
            num_peers: Some(num_peers),
        }),
        response: None,
    }
    .encode_to_vec()
}

/// An answer. The query is echoed: nwaku's decoder requires field 1 in every RPC.
pub fn encode_response(
    num_peers: u64,
    enrs: Vec<Vec<u8>>,
    code: u32,
    description: Option<String>,
) -> Vec<u8> {
    PeerExchangeRpc {
        query: Some(PeerExchangeQuery {
            num_peers: Some(num_peers),
        }),
        response: Some(PeerExchangeResponse {
            peer_infos: enrs
                .into_iter()
                .map(|enr| PeerInfo { enr: Some(enr) })
                .collect(),
            status_code: Some(code),
            status_desc: description,
        }),
    }
    .encode_to_vec()
}

/// An answer as a requester reads it: status and raw ENRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u32,
    pub description: Option<String>,
    pub enrs: Vec<Vec<u8>>,
}

pub fn decode_response(bytes: &[u8]) -> Result<Reply, prost::DecodeError> {
    let rpc = PeerExchangeRpc::decode(bytes)?;
    let response = rpc.response.unwrap_or_default();
    let enrs: Vec<Vec<u8>> = response
        .peer_infos
        .into_iter()
        .filter_map(|p| p.enr)
        .collect();
    // Older nodes send no status: peers mean success.
    let status = response
        .status_code
        .unwrap_or(if enrs.is_empty() { 503 } else { status::OK });
    Ok(Reply {
        status,
        description: response.status_desc,
        enrs,
    })
}

// === the ENR book ===

#[derive(Debug)]
struct Entry {
    raw: Vec<u8>,
    seq: u64,
    configured: bool,
    refreshed: Instant,
}

/// What happened to an ENR offered to the book; the `outcome` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    New,
    Updated,
    Unchanged,
    OtherCluster,
    Own,
    Full,
}

impl Added {
    pub fn label(self) -> &'static str {
        match self {
            Added::New => "new",
            Added::Updated => "updated",
            Added::Unchanged => "unchanged",
            Added::OtherCluster => "other_cluster",
            Added::Own => "own",
            Added::Full => "full",
        }
    }
}

/// The ENRs this node hands out, by peer id.
#[derive(Debug)]
pub struct Book {
    entries: HashMap<PeerId, Entry>,
    local: PeerId,
    cluster_id: u16,
}

impl Book {
    pub fn new(local: PeerId, cluster_id: u16) -> Self {
        Book {
            entries: HashMap::new(),
            local,
            cluster_id,
        }
    }

    /// Offers a verified record. A newer `seq` replaces an older one; learned records are
    /// refreshed each time they are heard of.
    pub fn insert(
        &mut self,
        enr: &waku_enr::Enr,
        configured: bool,
        now: Instant,
    ) -> Result<Added, waku_enr::Error> {
        let peer = waku_enr::peer_id(enr)?;
        if peer == self.local {
            return Ok(Added::Own);
        }
        match waku_enr::shards(enr) {
            Some((cluster, _)) if cluster == self.cluster_id => {}
            _ => return Ok(Added::OtherCluster),
        }
        if let Some(entry) = self.entries.get_mut(&peer) {
            entry.refreshed = now;
            entry.configured |= configured;
            if enr.seq() > entry.seq {
                entry.seq = enr.seq();
                entry.raw = waku_enr::encode(enr);
                return Ok(Added::Updated);
            }
            return Ok(Added::Unchanged);
        }
        if !configured && self.learned_count() >= MAX_LEARNED {
            return Ok(Added::Full);
        }
        self.entries.insert(
            peer,
            Entry {
                raw: waku_enr::encode(enr),
                seq: enr.seq(),
                configured,
                refreshed: now,
            },
        );
        Ok(Added::New)
    }

    /// Up to `n` records, chosen at random, never `requester`'s own.
    pub fn sample(&self, n: usize, requester: &PeerId, now: Instant) -> Vec<Vec<u8>> {
        let mut rng = rand::thread_rng();
        self.entries
            .iter()
            .filter(|(peer, e)| *peer != requester && Self::current(e, now))
            .map(|(_, e)| e.raw.clone())
            .choose_multiple(&mut rng, n)
    }

    fn current(entry: &Entry, now: Instant) -> bool {
        entry.configured || now.saturating_duration_since(entry.refreshed) <= LEARNED_TTL
    }

    /// Drops learned records not heard of for [`LEARNED_TTL`].
    pub fn expire(&mut self, now: Instant) {
        self.entries.retain(|_, e| Self::current(e, now));
    }

    pub fn configured_count(&self) -> usize {
        self.entries.values().filter(|e| e.configured).count()
    }

    pub fn learned_count(&self) -> usize {
        self.entries.values().filter(|e| !e.configured).count()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use libp2p::identity::Keypair;

    use super::*;
    use crate::waku_enr::{build, LocalRecord};

    fn enr_of(keypair: &Keypair, cluster_id: u16, seq: u64) -> waku_enr::Enr {
        build(
            keypair,
            &LocalRecord {
                seq,
                ip: Some(Ipv4Addr::LOCALHOST),
                tcp_port: Some(60000),
                capabilities: waku_enr::capabilities::RELAY,
                cluster_id,
                shards: vec![0],
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn the_book_keeps_one_current_record_per_peer_of_the_cluster() {
        let local = Keypair::generate_secp256k1();
        let mut book = Book::new(local.public().to_peer_id(), 1);
        let now = Instant::now();
        let other = Keypair::generate_secp256k1();
        assert_eq!(
            book.insert(&enr_of(&other, 1, 1), false, now).unwrap(),
            Added::New
        );
        assert_eq!(
            book.insert(&enr_of(&other, 1, 1), false, now).unwrap(),
            Added::Unchanged
        );
        assert_eq!(
            book.insert(&enr_of(&other, 1, 2), false, now).unwrap(),
            Added::Updated
        );
        assert_eq!(
            book.insert(&enr_of(&Keypair::generate_secp256k1(), 16, 1), false, now)
                .unwrap(),
            Added::OtherCluster
        );
        assert_eq!(
            book.insert(&enr_of(&local, 1, 1), false, now).unwrap(),
            Added::Own
        );
        assert_eq!(book.learned_count(), 1);
        let sample = book.sample(10, &PeerId::random(), now);
        assert_eq!(sample.len(), 1);
        assert_eq!(waku_enr::decode(&sample[0]).unwrap().seq(), 2);
        assert!(
            book.sample(10, &other.public().to_peer_id(), now)
                .is_empty(),
            "a requester never gets its own record"
        );
    }

    #[test]
    fn learned_records_lapse_and_configured_ones_stay() {
        let mut book = Book::new(PeerId::random(), 1);
        let now = Instant::now();
        book.insert(&enr_of(&Keypair::generate_secp256k1(), 1, 1), true, now)
            .unwrap();
        book.insert(&enr_of(&Keypair::generate_secp256k1(), 1, 1), false, now)
            .unwrap();
        let later = now + LEARNED_TTL + Duration::from_secs(1);
        assert_eq!(book.sample(10, &PeerId::random(), later).len(), 1);
        book.expire(later);
        assert_eq!((book.configured_count(), book.learned_count()), (1, 0));
    }

    #[test]
    fn samples_are_capped() {
        let mut book = Book::new(PeerId::random(), 1);
        let now = Instant::now();
        for _ in 0..5 {
            book.insert(&enr_of(&Keypair::generate_secp256k1(), 1, 1), true, now)
                .unwrap();
        }
        assert_eq!(book.sample(3, &PeerId::random(), now).len(), 3);
        assert_eq!(book.sample(0, &PeerId::random(), now).len(), 0);
    }

    #[test]
    fn responses_echo_the_query_and_carry_a_status() {
        let bytes = encode_response(5, vec![vec![1, 2, 3]], status::OK, None);
        let rpc = PeerExchangeRpc::decode(bytes.as_slice()).unwrap();
        assert_eq!(rpc.query.unwrap().num_peers, Some(5));
        let reply = decode_response(&bytes).unwrap();
        assert_eq!((reply.status, reply.enrs), (200, vec![vec![1, 2, 3]]));
        // An old-style answer without a status but with peers is a success.
        let old = PeerExchangeRpc {
            query: None,
            response: Some(PeerExchangeResponse {
                peer_infos: vec![PeerInfo { enr: Some(vec![9]) }],
                ..Default::default()
            }),
        }
        .encode_to_vec();
        assert_eq!(decode_response(&old).unwrap().status, 200);
    }

    #[test]
    fn configured_enrs_are_checked_against_the_cluster() {
        let enr = enr_of(&Keypair::generate_secp256k1(), 16, 1).to_base64();
        let config = Config {
            enrs: vec![enr],
            ..Default::default()
        };
        assert!(config.validate(16).is_ok());
        let err = config.validate(1).unwrap_err();
        assert!(err.contains("cluster 16"), "{err}");
        let bad = Config {
            enrs: vec!["enr:-garbage".into()],
            ..Default::default()
        };
        assert!(bad.validate(1).unwrap_err().contains("enrs[0]"));
    }
}
