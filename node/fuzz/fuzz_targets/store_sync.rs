//! Store sync's wire formats as a peer controls them: a reconciliation payload
//! (`/vac/waku/reconciliation/1.0.0`) and a transferred message (`/vac/waku/transfer/1.0.0`).
//! A payload with ranges that decodes re-encodes to bytes that decode again; one more round
//! trip changes nothing. (Not the first: an upper bound's hash travels only up to its first
//! byte that differs from the first lower bound's, as nwaku writes it, so a decoded hash with
//! bytes after that comes back shorter.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use roost_node::sync::codec::{decode, encode, MessageAndTopic};

fuzz_target!(|data: &[u8]| {
    if let Some(payload) = decode(data).ok().filter(|p| !p.ranges.is_empty()) {
        let once = decode(&encode(&payload)).expect("an encoded payload decodes");
        let twice = decode(&encode(&once)).expect("an encoded payload decodes");
        assert_eq!(once, twice);
    }
    let _ = MessageAndTopic::decode(data);
});
