//! Waku ENRs (EIP-778 records with the 31/WAKU2-ENR keys): this node's own record, and reading
//! the records peer exchange hands around.
//!
//! Besides the standard `id`/`secp256k1`/`ip`/`tcp` keys a Waku record carries (waku.md §1.9):
//! - `waku2`: one byte of capability flags (bit 0 relay, 1 store, 2 filter, 3 light push,
//!   4 sync);
//! - `multiaddrs`: addresses `ip`+`tcp` cannot express (WebSocket, secure WebSocket, DNS), each
//!   as a big-endian u16 length and the binary multiaddr, without `/p2p`;
//! - `rs`: the relay shards, cluster u16 | count u8 | shard u16…, or `rsv` (cluster u16 and a
//!   128-byte bit vector) when 64 or more shards are listed.
//!
//! The record is signed with the node key (secp256k1, the same key as the libp2p identity), so
//! the peer id can be derived from it and a forged record fails verification.

use std::net::Ipv4Addr;

use alloy_rlp::Bytes;
use enr::{k256::ecdsa::SigningKey, EnrPublicKey};
use libp2p::{identity::Keypair, multiaddr::Protocol, Multiaddr, PeerId};

/// A Waku ENR.
pub type Enr = enr::Enr<SigningKey>;

/// Capability flags of the `waku2` key.
pub mod capabilities {
    pub const RELAY: u8 = 1 << 0;
    pub const STORE: u8 = 1 << 1;
    pub const FILTER: u8 = 1 << 2;
    pub const LIGHTPUSH: u8 = 1 << 3;
    pub const SYNC: u8 = 1 << 4;
}

const WAKU2_KEY: &str = "waku2";
const MULTIADDRS_KEY: &str = "multiaddrs";
const SHARDS_KEY: &str = "rs";
const SHARDS_VECTOR_KEY: &str = "rsv";
/// From this many shards on, `rsv` is used instead of `rs` (nwaku's threshold).
const SHARD_LIST_MAX: usize = 64;
/// EIP-778's size limit of an encoded record.
pub const MAX_SIZE: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the node key is not a secp256k1 key; ENRs need one (delete node.key to make one)")]
    KeyType,
    #[error("cannot build the node's ENR: {0}")]
    Build(String),
    #[error("not a valid ENR: {0}")]
    Invalid(String),
}

/// What goes into this node's record.
#[derive(Debug, Clone, Default)]
pub struct LocalRecord {
    /// Increases whenever the content changes (seconds since the epoch at start).
    pub seq: u64,
    pub ip: Option<Ipv4Addr>,
    pub tcp_port: Option<u16>,
    /// WebSocket / DNS addresses, without `/p2p`.
    pub multiaddrs: Vec<Multiaddr>,
    pub capabilities: u8,
    pub cluster_id: u16,
    pub shards: Vec<u16>,
}

/// What the node's config puts in its record ([`crate::Config::enr_announcement`]).
#[derive(Debug, Clone, Default)]
pub struct Announcement<'a> {
    /// `network.external_addresses`.
    pub external_addresses: &'a [Multiaddr],
    pub relay: bool,
    /// The node answers store queries ([`crate::Config::serves_store`]).
    pub store: bool,
    pub filter: bool,
    pub lightpush: bool,
    /// The node reconciles its archive with other store nodes (store sync).
    pub sync: bool,
    pub cluster_id: u16,
    /// The relay shards (announced only with relay on).
    pub shards: &'a [u16],
}

/// What this node announces, from its config and bound listen addresses (with or without
/// `/p2p`): `ip`/`tcp` from the first external `/ip4/…/tcp/…` address, else the first listen
/// address that is not loopback, else the first one; `multiaddrs` from the external addresses
/// that `ip`/`tcp` cannot express (DNS, WebSocket), plus — when none of those is a WebSocket
/// address — the WebSocket listener on the external IP (as nwaku does), or else the WebSocket
/// listen addresses themselves.
pub fn local_record(
    config: &Announcement<'_>,
    tcp: &[Multiaddr],
    ws: &[Multiaddr],
    seq: u64,
) -> LocalRecord {
    let external = config.external_addresses;
    let plain = |a: &Multiaddr| -> Option<(Ipv4Addr, u16)> {
        let mut it = a.iter().filter(|p| !matches!(p, Protocol::P2p(_)));
        match (it.next(), it.next(), it.next()) {
            (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port)), None) => Some((ip, port)),
            _ => None,
        }
    };
    let is_ws = |a: &Multiaddr| {
        a.iter()
            .any(|p| matches!(p, Protocol::Ws(_) | Protocol::Wss(_) | Protocol::Tls))
    };
    let loopback = |a: &Multiaddr| {
        a.iter()
            .any(|p| matches!(p, Protocol::Ip4(ip) if ip.is_loopback() || ip.is_unspecified()))
    };
    let ip_tcp = external
        .iter()
        .find_map(plain)
        .or_else(|| tcp.iter().filter(|a| !loopback(a)).find_map(plain))
        .or_else(|| tcp.iter().find_map(plain));
    let strip = |a: &Multiaddr| -> Multiaddr {
        a.iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect()
    };
    let mut multiaddrs: Vec<Multiaddr> = external
        .iter()
        .filter(|a| plain(a).is_none())
        .map(strip)
        .collect();
    if !multiaddrs.iter().any(is_ws) {
        let external_ip = external.iter().find_map(plain).map(|(ip, _)| ip);
        let ws_suffix = |a: &Multiaddr| -> Option<(u16, Vec<Protocol<'static>>)> {
            let mut port = None;
            let mut tail = Vec::new();
            for p in a.iter() {
                match p {
                    Protocol::Tcp(n) => port = Some(n),
                    Protocol::Ws(_) | Protocol::Wss(_) | Protocol::Tls | Protocol::Sni(_) => {
                        tail.push(p.acquire())
                    }
                    _ => {}
                }
            }
            port.map(|n| (n, tail))
        };
        match external_ip {
            Some(ip) => {
                if let Some((port, tail)) = ws.first().and_then(ws_suffix) {
                    let mut a = Multiaddr::empty()
                        .with(Protocol::Ip4(ip))
                        .with(Protocol::Tcp(port));
                    for p in tail {
                        a.push(p);
                    }
                    multiaddrs.push(a);
                }
            }
            None => {
                let public: Vec<Multiaddr> =
                    ws.iter().filter(|a| !loopback(a)).map(strip).collect();
                if public.is_empty() {
                    multiaddrs.extend(ws.iter().map(strip));
                } else {
                    multiaddrs.extend(public);
                }
            }
        }
    }
    let mut caps = 0;
    if config.relay {
        caps |= capabilities::RELAY;
    }
    if config.store {
        caps |= capabilities::STORE;
    }
    if config.filter {
        caps |= capabilities::FILTER;
    }
    if config.lightpush {
        caps |= capabilities::LIGHTPUSH;
    }
    if config.sync {
        caps |= capabilities::SYNC;
    }
    LocalRecord {
        seq,
        ip: ip_tcp.map(|(ip, _)| ip),
        tcp_port: ip_tcp.map(|(_, port)| port),
        multiaddrs,
        capabilities: caps,
        cluster_id: config.cluster_id,
        shards: if config.relay {
            config.shards.to_vec()
        } else {
            Vec::new()
        },
    }
}

/// Signs this node's record. Addresses that would push the record over [`MAX_SIZE`] are left
/// out (the last ones first).
pub fn build(keypair: &Keypair, record: &LocalRecord) -> Result<Enr, Error> {
    let secret = keypair
        .clone()
        .try_into_secp256k1()
        .map_err(|_| Error::KeyType)?
        .secret()
        .to_bytes();
    let key = SigningKey::from_slice(&secret).map_err(|e| Error::Build(e.to_string()))?;
    let mut multiaddrs = record.multiaddrs.clone();
    loop {
        let mut builder = enr::Enr::builder();
        builder.seq(record.seq);
        if let Some(ip) = record.ip {
            builder.ip4(ip);
        }
        if let Some(port) = record.tcp_port {
            builder.tcp4(port);
        }
        builder.add_value(WAKU2_KEY, &Bytes::from(vec![record.capabilities]));
        if !record.shards.is_empty() {
            let (key, value) = encode_shards(record.cluster_id, &record.shards);
            builder.add_value(key, &Bytes::from(value));
        }
        if !multiaddrs.is_empty() {
            builder.add_value(MULTIADDRS_KEY, &Bytes::from(encode_multiaddrs(&multiaddrs)));
        }
        match builder.build(&key) {
            Ok(enr) => return Ok(enr),
            Err(enr::Error::ExceedsMaxSize) if !multiaddrs.is_empty() => {
                multiaddrs.pop();
            }
            Err(e) => return Err(Error::Build(e.to_string())),
        }
    }
}

/// Parses the text form (`enr:-...`) and checks the signature.
pub fn parse(text: &str) -> Result<Enr, Error> {
    text.trim()
        .parse::<Enr>()
        .map_err(|e| Error::Invalid(e.to_string()))
}

/// Decodes the RLP form peer exchange carries and checks the signature.
pub fn decode(mut bytes: &[u8]) -> Result<Enr, Error> {
    let enr: Enr =
        alloy_rlp::Decodable::decode(&mut bytes).map_err(|e| Error::Invalid(e.to_string()))?;
    if !enr.verify() {
        return Err(Error::Invalid("signature does not match".into()));
    }
    Ok(enr)
}

/// The RLP form.
pub fn encode(enr: &Enr) -> Vec<u8> {
    alloy_rlp::encode(enr)
}

/// The libp2p peer id the record's key belongs to.
pub fn peer_id(enr: &Enr) -> Result<PeerId, Error> {
    let compressed = enr.public_key().encode();
    let key = libp2p::identity::secp256k1::PublicKey::try_from_bytes(compressed.as_ref())
        .map_err(|e| Error::Invalid(format!("unusable public key: {e}")))?;
    Ok(libp2p::identity::PublicKey::from(key).to_peer_id())
}

/// The `waku2` capability flags, if present.
pub fn capabilities(enr: &Enr) -> Option<u8> {
    let value: Bytes = enr.get_decodable(WAKU2_KEY)?.ok()?;
    (value.len() == 1).then(|| value[0])
}

/// The relay shards (`rs` or `rsv`), if present and well formed: (cluster, shards).
pub fn shards(enr: &Enr) -> Option<(u16, Vec<u16>)> {
    if let Some(Ok(value)) = enr.get_decodable::<Bytes>(SHARDS_KEY) {
        return decode_shard_list(&value);
    }
    if let Some(Ok(value)) = enr.get_decodable::<Bytes>(SHARDS_VECTOR_KEY) {
        return decode_shard_vector(&value);
    }
    None
}

/// Every address to dial the node at, each ending in `/p2p/<peer id>`: `ip`+`tcp` first, then
/// `ip6`+`tcp6`, then the `multiaddrs` entries; no address twice.
pub fn addresses(enr: &Enr) -> Result<Vec<Multiaddr>, Error> {
    let peer = peer_id(enr)?;
    let mut out: Vec<Multiaddr> = Vec::new();
    if let (Some(ip), Some(port)) = (enr.ip4(), enr.tcp4()) {
        out.push(
            Multiaddr::empty()
                .with(Protocol::Ip4(ip))
                .with(Protocol::Tcp(port)),
        );
    }
    if let (Some(ip), Some(port)) = (enr.ip6(), enr.tcp6()) {
        out.push(
            Multiaddr::empty()
                .with(Protocol::Ip6(ip))
                .with(Protocol::Tcp(port)),
        );
    }
    if let Some(Ok(value)) = enr.get_decodable::<Bytes>(MULTIADDRS_KEY) {
        for address in decode_multiaddrs(&value) {
            if !out.contains(&address) {
                out.push(address);
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|a| a.with(Protocol::P2p(peer)))
        .collect())
}

fn encode_shards(cluster: u16, shards: &[u16]) -> (&'static str, Vec<u8>) {
    let mut unique = shards.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let mut out = cluster.to_be_bytes().to_vec();
    if unique.len() < SHARD_LIST_MAX {
        out.push(unique.len() as u8);
        for shard in unique {
            out.extend_from_slice(&shard.to_be_bytes());
        }
        (SHARDS_KEY, out)
    } else {
        let mut vector = [0u8; 128];
        for shard in unique.into_iter().filter(|s| *s < 1024) {
            vector[usize::from(shard / 8)] |= 1 << (shard % 8);
        }
        out.extend_from_slice(&vector);
        (SHARDS_VECTOR_KEY, out)
    }
}

fn decode_shard_list(value: &[u8]) -> Option<(u16, Vec<u16>)> {
    let cluster = u16::from_be_bytes([*value.first()?, *value.get(1)?]);
    let count = usize::from(*value.get(2)?);
    let body = value.get(3..)?;
    if body.len() != count * 2 {
        return None;
    }
    let shards = body
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    Some((cluster, shards))
}

fn decode_shard_vector(value: &[u8]) -> Option<(u16, Vec<u16>)> {
    if value.len() != 130 {
        return None;
    }
    let cluster = u16::from_be_bytes([value[0], value[1]]);
    let mut shards = Vec::new();
    for (i, byte) in value[2..].iter().enumerate() {
        for bit in 0..8u16 {
            if byte & (1 << bit) != 0 {
                shards.push(i as u16 * 8 + bit);
            }
        }
    }
    Some((cluster, shards))
}

fn encode_multiaddrs(addresses: &[Multiaddr]) -> Vec<u8> {
    let mut out = Vec::new();
    for address in addresses {
        let without_p2p: Multiaddr = address
            .iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        let raw = without_p2p.to_vec();
        let Ok(len) = u16::try_from(raw.len()) else {
            continue;
        };
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&raw);
    }
    out
}

fn decode_multiaddrs(value: &[u8]) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    let mut rest = value;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if len == 0 || rest.len() < 2 + len {
            break;
        }
        if let Ok(address) = Multiaddr::try_from(rest[2..2 + len].to_vec()) {
            out.push(address);
        }
        rest = &rest[2 + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LocalRecord {
        LocalRecord {
            seq: 7,
            ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
            tcp_port: Some(60000),
            multiaddrs: vec!["/dns4/node-01.example.org/tcp/443/wss".parse().unwrap()],
            capabilities: capabilities::RELAY | capabilities::FILTER | capabilities::LIGHTPUSH,
            cluster_id: 1,
            shards: (0..8).collect(),
        }
    }

    #[test]
    fn own_record_round_trips_through_text_and_rlp() {
        let keypair = Keypair::generate_secp256k1();
        let enr = build(&keypair, &record()).unwrap();
        assert!(enr.verify());
        assert_eq!(enr.seq(), 7);
        let again = parse(&enr.to_base64()).unwrap();
        assert_eq!(again, enr);
        let decoded = decode(&encode(&enr)).unwrap();
        assert_eq!(peer_id(&decoded).unwrap(), keypair.public().to_peer_id());
        assert_eq!(capabilities(&decoded), Some(0b1101));
        assert_eq!(shards(&decoded), Some((1, (0..8).collect())));
        let peer = keypair.public().to_peer_id();
        assert_eq!(
            addresses(&decoded).unwrap(),
            vec![
                format!("/ip4/10.0.0.1/tcp/60000/p2p/{peer}")
                    .parse::<Multiaddr>()
                    .unwrap(),
                format!("/dns4/node-01.example.org/tcp/443/wss/p2p/{peer}")
                    .parse()
                    .unwrap(),
            ]
        );
    }

    #[test]
    fn every_address_a_record_carries_is_listed_once() {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let multiaddrs: Vec<Multiaddr> = vec![
            "/ip4/10.0.0.1/tcp/60000".parse().unwrap(),
            "/ip4/10.0.0.1/tcp/8000/ws".parse().unwrap(),
        ];
        let enr = enr::Enr::builder()
            .ip4(Ipv4Addr::new(10, 0, 0, 1))
            .tcp4(60000)
            .ip6("2001:db8::1".parse().unwrap())
            .tcp6(60001)
            .add_value(MULTIADDRS_KEY, &Bytes::from(encode_multiaddrs(&multiaddrs)))
            .build(&key)
            .unwrap();
        let peer = peer_id(&enr).unwrap();
        let listed: Vec<String> = addresses(&enr)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            listed,
            [
                format!("/ip4/10.0.0.1/tcp/60000/p2p/{peer}"),
                format!("/ip6/2001:db8::1/tcp/60001/p2p/{peer}"),
                format!("/ip4/10.0.0.1/tcp/8000/ws/p2p/{peer}"),
            ]
        );
        // js-waku's test record: ip/tcp and a `multiaddrs` entry.
        let js = parse("enr:-KO4QANhx2beNpDw8LfX8hdyoNocMD5WCBY28EjKA50DyJv9QDxE5IWafE_O_nhbA31gmasx3WjpH517do3GqmzQvmaAgmlkgnY0gmlwhMCosvuKbXVsdGlhZGRyc4wACgTAqLL7Bh9C3QOJc2VjcDI1NmsxoQOmp7OJvC-UX4KeIJDW1CQQvhSA33OWgRrKccOcTG7dYYN0Y3CCH0KFd2FrdTIB").unwrap();
        let listed = addresses(&js).unwrap();
        assert!(listed.len() >= 2, "{listed:?}");
        assert!(listed[0]
            .to_string()
            .starts_with("/ip4/192.168.178.251/tcp/8002/p2p/"));
    }

    #[test]
    fn the_local_record_prefers_external_addresses() {
        let tcp: Vec<Multiaddr> = vec![
            "/ip4/127.0.0.1/tcp/60000".parse().unwrap(),
            "/ip4/192.168.1.5/tcp/60000".parse().unwrap(),
        ];
        let ws: Vec<Multiaddr> = vec![
            "/ip4/127.0.0.1/tcp/8000/ws".parse().unwrap(),
            "/ip4/192.168.1.5/tcp/8000/ws".parse().unwrap(),
        ];
        let mut config = crate::Config::default();
        let r = local_record(&config.enr_announcement(), &tcp, &ws, 1);
        assert_eq!(r.ip, Some(Ipv4Addr::new(192, 168, 1, 5)));
        assert_eq!(r.tcp_port, Some(60000));
        assert_eq!(r.multiaddrs, vec![ws[1].clone()]);
        assert_eq!((r.cluster_id, r.shards.len()), (1, 8));

        config.network.external_addresses = vec!["/ip4/203.0.113.7/tcp/30303".parse().unwrap()];
        let r = local_record(&config.enr_announcement(), &tcp, &ws, 1);
        assert_eq!(
            (r.ip, r.tcp_port),
            (Some(Ipv4Addr::new(203, 0, 113, 7)), Some(30303))
        );
        assert_eq!(
            r.multiaddrs,
            vec!["/ip4/203.0.113.7/tcp/8000/ws".parse::<Multiaddr>().unwrap()]
        );

        config
            .network
            .external_addresses
            .push("/dns4/node.example.org/tcp/443/wss".parse().unwrap());
        let r = local_record(&config.enr_announcement(), &tcp, &ws, 1);
        assert_eq!(
            r.multiaddrs,
            vec!["/dns4/node.example.org/tcp/443/wss"
                .parse::<Multiaddr>()
                .unwrap()]
        );

        let only_loopback = local_record(
            &crate::Config::default().enr_announcement(),
            &tcp[..1],
            &ws[..1],
            1,
        );
        assert_eq!(only_loopback.ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(only_loopback.multiaddrs, vec![ws[0].clone()]);
    }

    /// The `waku2` flags say what the node serves, as nwaku sets them: clients pick store nodes
    /// (and store sync peers) by these bits.
    #[test]
    fn the_capability_flags_follow_the_config() {
        use capabilities::*;
        let tcp: Vec<Multiaddr> = vec!["/ip4/192.168.1.5/tcp/60000".parse().unwrap()];
        let flags = |config: &crate::Config| {
            local_record(&config.enr_announcement(), &tcp, &[], 1).capabilities
        };
        let mut config = crate::Config::default();
        assert_eq!(flags(&config), RELAY | STORE | FILTER | LIGHTPUSH | SYNC);
        config.store_sync.enabled = false;
        assert_eq!(flags(&config), RELAY | STORE | FILTER | LIGHTPUSH);
        config.store.enabled = false;
        assert_eq!(flags(&config), RELAY | FILTER | LIGHTPUSH);
        // A replica filled by sync alone is a store node that does not relay.
        let mut replica = crate::Config::default();
        replica.relay.enabled = false;
        replica.filter.enabled = false;
        replica.lightpush.enabled = false;
        assert_eq!(flags(&replica), STORE | SYNC);
    }

    #[test]
    fn many_shards_use_the_bit_vector() {
        let keypair = Keypair::generate_secp256k1();
        let r = LocalRecord {
            shards: (0..100).collect(),
            cluster_id: 16,
            ..record()
        };
        let enr = build(&keypair, &r).unwrap();
        assert!(enr.get_raw_rlp("rsv").is_some());
        assert!(enr.get_raw_rlp("rs").is_none());
        assert_eq!(shards(&enr), Some((16, (0..100).collect())));
    }

    #[test]
    fn shard_list_matches_the_spec_layout() {
        // cluster 16, shards 32 and 64: 0x0010 | 2 | 0x0020 0x0040.
        let (key, value) = encode_shards(16, &[64, 32]);
        assert_eq!(key, "rs");
        assert_eq!(value, vec![0, 16, 2, 0, 32, 0, 64]);
        assert_eq!(decode_shard_list(&value), Some((16, vec![32, 64])));
        assert_eq!(decode_shard_list(&[0, 16, 3, 0, 32]), None);
    }

    #[test]
    fn addresses_that_do_not_fit_are_left_out() {
        let keypair = Keypair::generate_secp256k1();
        let long: Multiaddr = format!("/dns4/{}.example.org/tcp/443/wss", "n".repeat(60))
            .parse()
            .unwrap();
        let r = LocalRecord {
            multiaddrs: vec![long; 6],
            ..record()
        };
        let enr = build(&keypair, &r).unwrap();
        assert!(encode(&enr).len() <= MAX_SIZE);
        let kept = addresses(&enr).unwrap().len() - 1;
        assert!((1..6).contains(&kept), "kept {kept}");
    }

    #[test]
    fn tampered_records_are_refused() {
        let keypair = Keypair::generate_secp256k1();
        let mut bytes = encode(&build(&keypair, &record()).unwrap());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(decode(&bytes).is_err());
        assert!(parse("enr:not-base64").is_err());
    }

    #[test]
    fn malformed_multiaddr_fields_stop_at_the_bad_entry() {
        let good: Multiaddr = "/ip4/1.2.3.4/tcp/8000/ws".parse().unwrap();
        let mut value = encode_multiaddrs(std::slice::from_ref(&good));
        value.extend_from_slice(&[0, 50, 1, 2]);
        assert_eq!(decode_multiaddrs(&value), vec![good]);
    }
}
