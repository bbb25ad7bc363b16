//! A store v3 response as the store client (`roost store query`) reads it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_node::store::rpc::StoreQueryResponse;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = StoreQueryResponse::decode_bytes(data) {
        let _ = response.entries();
    }
});
