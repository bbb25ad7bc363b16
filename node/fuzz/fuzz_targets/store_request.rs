//! A store v3 query as the store's query threads read it: size limit, decode, the spec's checks.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use roost_node::store::rpc;

fuzz_target!(|data: &[u8]| {
    let served: BTreeSet<String> = ["/waku/2/rs/1/0".to_owned(), "/waku/2/rs/1/1".to_owned()]
        .into_iter()
        .collect();
    let _ = rpc::best_effort_request_id(data);
    let _ = rpc::parse_request(data, &served);
});
