//! Filter v2: subscribe requests as the service decodes and checks them, responses and pushes as
//! a subscriber reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libp2p::PeerId;
use roost_node::filter;

fuzz_target!(|data: &[u8]| {
    match filter::decode_subscribe_request(data) {
        Ok((_, request)) => {
            let _ = request.kind().label();
        }
        Err((_, kind, refused)) => {
            assert_eq!(refused.status, filter::Status::BAD_REQUEST);
            let _ = kind.map(filter::RequestType::label);
        }
    }
    let _ = filter::decode_subscribe_response(data);
    let _ = filter::decode_push(
        PeerId::from_bytes(&[0, 2, 8, 1]).unwrap_or(PeerId::random()),
        data,
    );
});
