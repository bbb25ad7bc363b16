//! Light push (v3) as the service decodes requests and `roost publish` reads responses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_node::lightpush::{decode_request, decode_response, Version};

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(Version::V3, data);
    let _ = decode_response(Version::V3, data);
});
