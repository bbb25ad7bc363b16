//! Byte vectors worked out by hand from nwaku's `deltaEncode`/`deltaDecode`
//! (logos-delivery `waku_store_sync/codec.nim`) and `WakuMessageAndTopic.encode`, then
//! round trips of random payloads.

use proptest::prelude::*;
use prost::Message as _;

use super::*;

const T0: i64 = 1_700_000_000_000_000_000;
const TOPIC: &str = "/waku/2/rs/1/0";

fn leb(value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, value);
    out
}

fn topic_list(topics: &[&str]) -> Vec<u8> {
    let mut out = leb(topics.len() as u64);
    for t in topics {
        out.extend(leb(t.len() as u64));
        out.extend_from_slice(t.as_bytes());
    }
    out
}

#[test]
fn leb128_is_little_endian_base_128() {
    assert_eq!(leb(0), [0x00]);
    assert_eq!(leb(127), [0x7f]);
    assert_eq!(leb(128), [0x80, 0x01]);
    assert_eq!(leb(300), [0xac, 0x02]);
    // A nanosecond timestamp of 2023 takes 9 bytes, the VarIntLen nwaku reserves.
    assert_eq!(
        leb(T0 as u64),
        [0x80, 0x80, 0xa8, 0xb1, 0xe3, 0x9f, 0xe7, 0xcb, 0x17]
    );
}

#[test]
fn an_empty_payload_is_one_zero_byte_and_short_payloads_are_empty() {
    assert_eq!(encode(&Payload::default()), [0]);
    assert_eq!(decode(&[0]).unwrap(), Payload::default());
    assert_eq!(decode(&[]).unwrap(), Payload::default());
    assert!(Payload::default().is_done());
}

/// What nwaku's `initiate` sends: the whole window as one fingerprint, lower bound
/// (start, 0…0), upper bound (end, ff…ff). The upper hash is not written (the delta is not 0),
/// so the receiver reads (end, 0…0).
#[test]
fn the_first_round_of_a_session_matches_nwakus_bytes() {
    let fingerprint = [0xab; 32];
    let end = T0 + 3_600_000_000_000;
    let payload = Payload {
        pubsub_topics: vec![TOPIC.into()],
        content_topics: vec![],
        ranges: vec![Range {
            lower: Position::at(T0),
            upper: Position {
                ts: end,
                hash: FULL_HASH,
            },
            kind: RangeKind::Fingerprint(fingerprint),
        }],
    };
    let mut expected = topic_list(&[TOPIC]);
    expected.extend(topic_list(&[]));
    expected.extend(leb(T0 as u64));
    expected.extend(leb(3_600_000_000_000));
    expected.push(1);
    expected.extend_from_slice(&fingerprint);
    let bytes = encode(&payload);
    assert_eq!(bytes, expected);
    assert_eq!(
        bytes[..20],
        [
            0x01, 0x0e, b'/', b'w', b'a', b'k', b'u', b'/', b'2', b'/', b'r', b's', b'/', b'1',
            b'/', b'0', 0x00, 0x80, 0x80, 0xa8
        ]
    );

    let decoded = decode(&bytes).unwrap();
    assert_eq!(decoded.pubsub_topics, [TOPIC]);
    assert_eq!(decoded.ranges.len(), 1);
    assert_eq!(decoded.ranges[0].lower, Position::at(T0));
    assert_eq!(decoded.ranges[0].upper, Position::at(end));
    assert_eq!(decoded.ranges[0].kind, RangeKind::Fingerprint(fingerprint));
}

/// Item sets: count, then per item the time delta from the previous item (the first from 0)
/// and the hash, then the reconciled byte. Skip ranges are the delta and a zero byte.
#[test]
fn item_sets_and_skips_match_nwakus_bytes() {
    let a = Position {
        ts: T0 + 5,
        hash: [1; 32],
    };
    let b = Position {
        ts: T0 + 9,
        hash: [2; 32],
    };
    let payload = Payload {
        pubsub_topics: vec![],
        content_topics: vec!["/app/1/chat/proto".into()],
        ranges: vec![
            Range {
                lower: Position::at(T0),
                upper: Position::at(T0 + 4),
                kind: RangeKind::Skip,
            },
            Range {
                lower: Position::at(T0 + 4),
                upper: Position::at(T0 + 10),
                kind: RangeKind::ItemSet(ItemSet {
                    elements: vec![a, b],
                    reconciled: false,
                }),
            },
        ],
    };
    let mut expected = topic_list(&[]);
    expected.extend(topic_list(&["/app/1/chat/proto"]));
    expected.extend(leb(T0 as u64));
    expected.extend([4, 0]); // skip up to T0 + 4
    expected.extend([6, 2, 2]); // item set up to T0 + 10, two items
    expected.extend(leb((T0 + 5) as u64));
    expected.extend([1; 32]);
    expected.push(4);
    expected.extend([2; 32]);
    expected.push(0); // not reconciled
    let bytes = encode(&payload);
    assert_eq!(bytes, expected);
    assert_eq!(decode(&bytes).unwrap(), payload);
}

/// When an upper bound has the previous one's timestamp, nwaku writes the number of leading
/// bytes up to and including the first that differs from the *first lower bound's* hash
/// (never updated), then those bytes; the decoder zero-fills the rest.
#[test]
fn equal_timestamps_carry_a_hash_prefix_as_nwaku_writes_it() {
    let mut upper_hash = [0u8; 32];
    upper_hash[2] = 0x7f;
    upper_hash[9] = 0x01; // beyond the prefix: dropped on the wire
    let payload = Payload {
        pubsub_topics: vec![],
        content_topics: vec![],
        ranges: vec![
            Range {
                lower: Position::at(T0),
                upper: Position::at(T0 + 1),
                kind: RangeKind::Skip,
            },
            Range {
                lower: Position::at(T0 + 1),
                upper: Position {
                    ts: T0 + 1,
                    hash: upper_hash,
                },
                kind: RangeKind::Skip,
            },
        ],
    };
    let mut expected = vec![0, 0];
    expected.extend(leb(T0 as u64));
    expected.extend([1, 0]);
    expected.extend([0, 3, 0x00, 0x00, 0x7f, 0]);
    let bytes = encode(&payload);
    assert_eq!(bytes, expected);
    let decoded = decode(&bytes).unwrap();
    let mut truncated = [0u8; 32];
    truncated[2] = 0x7f;
    assert_eq!(
        decoded.ranges[1].upper,
        Position {
            ts: T0 + 1,
            hash: truncated
        }
    );
}

#[test]
fn transfer_messages_put_the_pubsub_topic_first() {
    let message = MessageAndTopic {
        pubsub_topic: TOPIC.into(),
        message: vec![0x0a, 0x01, 0x61, 0x12, 0x02, b'/', b'a'],
    };
    let bytes = message.encode_to_vec();
    let mut expected = vec![0x0a, 14];
    expected.extend_from_slice(TOPIC.as_bytes());
    expected.extend([0x12, 7, 0x0a, 0x01, 0x61, 0x12, 0x02, b'/', b'a']);
    assert_eq!(bytes, expected);
    assert_eq!(MessageAndTopic::decode(&bytes[..]).unwrap(), message);
}

#[test]
fn malformed_payloads_are_refused_with_the_reason() {
    let mut good = topic_list(&[TOPIC]);
    good.extend(topic_list(&[]));
    good.extend(leb(T0 as u64));
    good.extend([10, 1]);
    good.extend([7; 32]);
    assert!(decode(&good).is_ok());

    // Cut inside the fingerprint.
    assert_eq!(
        decode(&good[..good.len() - 1]),
        Err(DecodeError::Truncated("a fingerprint"))
    );
    // Unknown range type.
    let mut bad = good.clone();
    let at = bad.len() - 33;
    bad[at] = 3;
    assert_eq!(decode(&bad), Err(DecodeError::RangeType(3)));
    // A topic count far beyond the payload.
    assert!(decode(&[0xff, 0xff, 0x03, 0, 0]).is_err());
    // An item count the bytes cannot hold.
    let mut items = topic_list(&[]);
    items.extend(topic_list(&[]));
    items.extend(leb(T0 as u64));
    items.extend([1, 2]);
    items.extend(leb(1_000_000));
    items.extend([0; 40]);
    assert_eq!(decode(&items), Err(DecodeError::ItemCount(1_000_000)));
    // A varint that never ends.
    assert_eq!(decode(&[0x80; 12]), Err(DecodeError::Varint));
    // A non-UTF-8 topic.
    assert_eq!(decode(&[1, 1, 0xff, 0, 0]), Err(DecodeError::Topic));
}

fn arb_position() -> impl Strategy<Value = Position> {
    (0i64..1 << 62, any::<[u8; 32]>()).prop_map(|(ts, hash)| Position { ts, hash })
}

proptest! {
    /// Whatever nwaku's decoder keeps survives a round trip: upper timestamps, item sets,
    /// fingerprints, topics; lower bounds come back as (previous upper ts, 0…0).
    #[test]
    fn payloads_round_trip(
        start in 0i64..1 << 60,
        steps in prop::collection::vec((1u64..1 << 20, 0u8..3, any::<[u8; 32]>(),
            prop::collection::vec(arb_position(), 0..4), any::<bool>()), 1..8),
        pubsub in prop::collection::vec("[a-z/0-9]{1,20}", 0..3),
    ) {
        let mut ranges = Vec::new();
        let mut ts = start;
        for (delta, kind, fingerprint, mut items, reconciled) in steps {
            let lower = Position::at(ts);
            ts += delta as i64;
            items.sort();
            let kind = match kind {
                0 => RangeKind::Skip,
                1 => RangeKind::Fingerprint(fingerprint),
                _ => RangeKind::ItemSet(ItemSet { elements: items, reconciled }),
            };
            ranges.push(Range { lower, upper: Position::at(ts), kind });
        }
        let payload = Payload { pubsub_topics: pubsub, content_topics: vec![], ranges };
        prop_assert_eq!(decode(&encode(&payload)).unwrap(), payload);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode(&bytes);
    }
}
