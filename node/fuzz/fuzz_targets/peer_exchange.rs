//! Peer exchange: a query as the server decodes it, a response as the client reads it, and every
//! ENR in it as the book decodes and files it.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use libp2p::PeerId;
use prost::Message as _;
use roost_node::{
    peer_exchange::{decode_response, Book, PeerExchangeRpc},
    waku_enr,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(rpc) = PeerExchangeRpc::decode(data) {
        let _ = rpc.query.and_then(|q| q.num_peers);
    }
    if let Ok(reply) = decode_response(data) {
        let mut book = Book::new(PeerId::random(), 1);
        let now = Instant::now();
        for raw in &reply.enrs {
            if let Ok(enr) = waku_enr::decode(raw) {
                let _ = book.insert(&enr, false, now);
            }
        }
        let _ = book.sample(5, &PeerId::random(), now);
    }
    let _ = waku_enr::decode(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = waku_enr::parse(text);
    }
});
