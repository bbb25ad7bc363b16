//! Store sync's wire formats as a peer controls them: a reconciliation payload
//! (`/vac/waku/reconciliation/1.0.0`) and a transferred message (`/vac/waku/transfer/1.0.0`).
//! A payload with ranges that decodes re-encodes to bytes that decode to the same payload (one
//! without ranges is encoded as the single byte 0, topics dropped, as nwaku does).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use roost_node::sync::codec::{decode, encode, MessageAndTopic};

fuzz_target!(|data: &[u8]| {
    if let Some(payload) = decode(data).ok().filter(|p| !p.ranges.is_empty()) {
        let again = decode(&encode(&payload)).expect("an encoded payload decodes");
        assert_eq!(again, payload);
    }
    let _ = MessageAndTopic::decode(data);
});
