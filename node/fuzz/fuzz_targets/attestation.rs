//! Operator attestations as a peer serves them (`/roost/attestation/1.0.0`) and as the node reads
//! its attestation file (hex text or raw bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use roost_node::operator::attestation::SignedAttestation;

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedAttestation::decode(data) {
        assert_eq!(signed.bytes, data);
        let again = SignedAttestation::from_file_bytes(signed.to_file_text().as_bytes())
            .expect("the text form of an accepted attestation");
        assert_eq!(again, signed);
    }
    let _ = SignedAttestation::from_file_bytes(data);
});
