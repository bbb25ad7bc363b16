//! `/vac/waku/metadata/1.0.0` as the swarm task reads a peer's answer and judges its cluster.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_node::metadata::{judge, WakuMetadata};

fuzz_target!(|data: &[u8]| {
    if let Ok(theirs) = WakuMetadata::decode_bytes(data) {
        let _ = theirs.announced_shards();
        let _ = judge(1, &theirs);
    }
});
