//! Two real archives that differ both ways reconcile through encoded payloads (the wire's
//! lossy bounds included) until both sides are done; each side finds exactly what the other
//! lacks, and archives already equal settle in one round.

use std::{collections::HashSet, path::Path, sync::Arc};

use super::*;
use crate::{
    message::WakuMessage,
    store::{Archive, Incoming, Tuning, Writer},
    sync::codec,
};

const PUBSUB: &str = "/waku/2/rs/1/0";
const T0: i64 = 1_700_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn message(i: u64, ts: i64) -> Incoming {
    let m = WakuMessage {
        payload: format!("m{i}").into_bytes(),
        content_topic: "/app/1/chat/proto".into(),
        timestamp: Some(ts),
        ..Default::default()
    };
    Incoming {
        pubsub_topic: Arc::from(PUBSUB),
        hash: m.hash(PUBSUB),
        timestamp: ts,
        content_topic: m.content_topic.clone(),
        bytes: m.encode_to_vec(),
    }
}

fn archive(path: &Path, messages: &[Incoming]) -> Writer {
    let archive = Arc::new(Archive::open(path, &Tuning::default()).unwrap());
    let mut writer = Writer::new(archive, false).unwrap();
    for chunk in messages.chunks(500) {
        writer.write(chunk).unwrap();
    }
    writer
}

/// Runs a whole session between `a` (initiator) and `b`; returns (a's to_send, a's
/// to_receive, b's to_send, b's to_receive).
fn session(a: &Archive, b: &Archive) -> [HashSet<[u8; 32]>; 4] {
    session_within(a, b, REPLY_ITEM_BUDGET, 40).0
}

/// [`session`] with replies of at most about `budget` ids of their own, cut off after
/// `max_rounds`; also returns the most ids any reply carried.
fn session_within(
    a: &Archive,
    b: &Archive,
    budget: usize,
    max_rounds: usize,
) -> ([HashSet<[u8; 32]>; 4], usize) {
    let topics = vec![PUBSUB.to_owned()];
    let first = initial(
        &a.sync_view(),
        &topics,
        &[],
        T0 - SECOND,
        T0 + 3600 * SECOND,
    )
    .unwrap();
    let mut wire = codec::encode(&first);
    let mut found: [HashSet<[u8; 32]>; 4] = Default::default();
    let mut most_ids = 0;
    for round in 0.. {
        assert!(round < max_rounds, "the session does not settle");
        let (side, me) = if round % 2 == 0 { (b, 2) } else { (a, 0) };
        let payload = codec::decode(&wire).unwrap();
        if payload.is_done() {
            break;
        }
        let out = process_within(&side.sync_view(), &topics, &[], &payload, budget).unwrap();
        found[me].extend(out.to_send);
        found[me + 1].extend(out.to_receive);
        let ids = out
            .reply
            .ranges
            .iter()
            .map(|r| match &r.kind {
                RangeKind::ItemSet(set) => set.elements.len(),
                _ => 0,
            })
            .sum::<usize>();
        most_ids = most_ids.max(ids);
        wire = codec::encode(&out.reply);
        if out.reply.is_done() {
            break;
        }
    }
    (found, most_ids)
}

#[test]
fn archives_that_differ_both_ways_find_exactly_each_others_gaps() {
    let dir = tempfile::tempdir().unwrap();
    // 3000 shared messages over an hour, bursts sharing timestamps included.
    let shared: Vec<Incoming> = (0..3000u64)
        .map(|i| message(i, T0 + (i as i64 / 3) * 1_200_000_000))
        .collect();
    let only_a: Vec<Incoming> = (0..40u64)
        .map(|i| message(10_000 + i, T0 + (i as i64 * 89) * SECOND))
        .collect();
    let only_b: Vec<Incoming> = (0..25u64)
        .map(|i| message(20_000 + i, T0 + 7 + (i as i64 * 141) * SECOND))
        .collect();
    let a = archive(
        &dir.path().join("a"),
        &[shared.clone(), only_a.clone()].concat(),
    );
    let b = archive(&dir.path().join("b"), &[shared, only_b.clone()].concat());
    let [a_send, a_recv, b_send, b_recv] = session(a.archive(), b.archive());
    let hashes = |v: &[Incoming]| v.iter().map(|m| m.hash.0).collect::<HashSet<_>>();
    assert_eq!(a_send, hashes(&only_a));
    assert_eq!(b_recv, hashes(&only_a));
    assert_eq!(b_send, hashes(&only_b));
    assert_eq!(a_recv, hashes(&only_b));
}

#[test]
fn replies_over_their_budget_defer_ranges_and_the_session_still_finds_every_gap() {
    let dir = tempfile::tempdir().unwrap();
    // 6000 shared messages over an hour and 300 differences each way: unbounded, one reply
    // would carry several thousand ids.
    let shared: Vec<Incoming> = (0..6000u64)
        .map(|i| message(i, T0 + i as i64 * 600_000_000))
        .collect();
    let only_a: Vec<Incoming> = (0..300u64)
        .map(|i| message(10_000 + i, T0 + 3 + (i as i64 * 11) * SECOND))
        .collect();
    let only_b: Vec<Incoming> = (0..300u64)
        .map(|i| message(20_000 + i, T0 + 5 + (i as i64 * 11 + 5) * SECOND))
        .collect();
    let a = archive(
        &dir.path().join("a"),
        &[shared.clone(), only_a.clone()].concat(),
    );
    let b = archive(&dir.path().join("b"), &[shared, only_b.clone()].concat());
    let (unbounded, most_unbounded) = session_within(a.archive(), b.archive(), usize::MAX, 40);
    let budget = 500;
    let ([a_send, a_recv, b_send, b_recv], most) =
        session_within(a.archive(), b.archive(), budget, 400);
    let hashes = |v: &[Incoming]| v.iter().map(|m| m.hash.0).collect::<HashSet<_>>();
    assert!(
        most_unbounded > 4 * budget,
        "the budget is tested: {most_unbounded}"
    );
    assert_eq!(unbounded[0], hashes(&only_a));
    // A reply passes its budget by at most the item sets of one split range, or answers.
    assert!(
        most <= budget + 2 * 8 * ITEM_SET_THRESHOLD as usize,
        "{most}"
    );
    assert_eq!(a_send, hashes(&only_a));
    assert_eq!(b_recv, hashes(&only_a));
    assert_eq!(b_send, hashes(&only_b));
    assert_eq!(a_recv, hashes(&only_b));
}

#[test]
fn equal_archives_settle_in_one_round_and_disjoint_topics_end_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<Incoming> = (0..500u64)
        .map(|i| message(i, T0 + i as i64 * SECOND))
        .collect();
    let a = archive(&dir.path().join("a"), &all);
    let b = archive(&dir.path().join("b"), &all);
    let topics = vec![PUBSUB.to_owned()];
    let first = initial(
        &a.archive().sync_view(),
        &topics,
        &[],
        T0,
        T0 + 3600 * SECOND,
    )
    .unwrap();
    let out = process(&b.archive().sync_view(), &topics, &[], &first).unwrap();
    assert!(out.reply.is_done() && out.reply.ranges.is_empty());
    assert_eq!(codec::encode(&out.reply), [0]);
    assert!(out.to_send.is_empty() && out.to_receive.is_empty());

    let other = vec!["/waku/2/rs/1/7".to_owned()];
    let out = process(&b.archive().sync_view(), &other, &[], &first).unwrap();
    assert!(
        out.reply.ranges.is_empty(),
        "no common topic: an empty reply"
    );
    assert_eq!(scope_of(&[], &other), Some(other.clone()));
    assert_eq!(scope_of(&topics, &[]), Some(topics.clone()));
}
