//! Rendezvous peer records in every accepted flavour (libp2p signed envelope with a standard or
//! legacy peer record, nwaku's WakuPeerRecord, bare PeerInfo) and the responses the rendezvous
//! client reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_node::rendezvous::{client, record};

fuzz_target!(|data: &[u8]| {
    if let Ok(verified) = record::verify(data) {
        let _ = record::to_peer_info(verified.flavour, data);
        let _ = client::dial_address(&verified);
    }
    for flavour in [
        record::Flavour::Standard,
        record::Flavour::Legacy,
        record::Flavour::Waku,
        record::Flavour::PeerInfo,
    ] {
        let _ = record::to_peer_info(flavour, data);
    }
    let _ = client::read_register_response(data);
    let _ = client::read_discover_response(data);
});
