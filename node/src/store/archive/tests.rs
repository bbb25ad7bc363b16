//! The archive on real RocksDB files: paging, filters, lookups, duplicates, retention and
//! reopening, driven with chosen timestamps.

use super::*;
use crate::{
    message::WakuMessage,
    store::{
        config::{Retention, RetentionPolicy},
        rpc::{parse_request, StoreQueryRequest},
    },
};

const PUBSUB: &str = "/waku/2/rs/1/0";
const T0: i64 = 1_700_000_000_000_000_000;
const MS: i64 = 1_000_000;

fn served() -> std::collections::BTreeSet<String> {
    [PUBSUB.to_owned(), "/waku/2/rs/1/1".to_owned()]
        .into_iter()
        .collect()
}

fn incoming(pubsub: &str, content: &str, ts: i64, payload: &[u8]) -> Incoming {
    let message = WakuMessage {
        payload: payload.to_vec(),
        content_topic: content.to_owned(),
        timestamp: Some(ts),
        ..Default::default()
    };
    Incoming {
        pubsub_topic: Arc::from(pubsub),
        hash: message.hash(pubsub),
        timestamp: ts,
        content_topic: content.to_owned(),
        bytes: message.encode_to_vec(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    writer: Writer,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let archive = Arc::new(Archive::open(&path, &Tuning::default()).unwrap());
        Fixture {
            writer: Writer::new(archive, false).unwrap(),
            path,
            _dir: dir,
        }
    }

    fn archive(&self) -> &Archive {
        self.writer.archive()
    }

    fn query(&self, request: StoreQueryRequest) -> Result<Page, QueryError> {
        let q = parse_request(&request.encode_to_vec(), &served()).expect("valid request");
        self.archive().query(&q)
    }

    /// Follows cursors to the end; returns every page's hashes.
    fn all_pages(&self, request: StoreQueryRequest) -> Vec<Vec<MessageHash>> {
        let mut pages = Vec::new();
        let mut request = request;
        loop {
            let page = self.query(request.clone()).unwrap();
            pages.push(
                page.entries
                    .iter()
                    .map(|e| e.position.message_hash())
                    .collect(),
            );
            match page.cursor {
                Some(c) => request = request.cursor(Some(c)),
                None => return pages,
            }
            assert!(pages.len() < 10_000, "paging does not end");
        }
    }
}

use prost::Message as _;

/// 3 content topics, 250 messages, some sharing a timestamp.
fn fill(f: &mut Fixture) -> Vec<Incoming> {
    let topics = ["/app/1/a/proto", "/app/1/b/proto", "/app/1/c/proto"];
    let all: Vec<Incoming> = (0..250)
        .map(|i| {
            // Pairs share a timestamp so the hash decides their order.
            let ts = T0 + (i / 2) * MS;
            incoming(
                PUBSUB,
                topics[(i % 3) as usize],
                ts,
                format!("m{i}").as_bytes(),
            )
        })
        .collect();
    for chunk in all.chunks(37) {
        let out = f.writer.write(chunk).unwrap();
        assert!(out.iter().all(|o| *o == Written::Stored));
    }
    all
}

fn sorted_hashes(items: &[&Incoming]) -> Vec<MessageHash> {
    let mut v: Vec<(i64, MessageHash)> = items.iter().map(|m| (m.timestamp, m.hash)).collect();
    v.sort();
    v.into_iter().map(|(_, h)| h).collect()
}

#[test]
fn forward_and_backward_pages_cover_everything_once_in_order() {
    let mut f = Fixture::new();
    let all = fill(&mut f);
    let expected = sorted_hashes(&all.iter().collect::<Vec<_>>());
    for limit in [1u64, 7, 20, 100] {
        let fwd = f.all_pages(StoreQueryRequest::new("f").forward(true).limit(limit));
        assert!(fwd.iter().all(|p| p.len() <= limit as usize));
        let flat: Vec<MessageHash> = fwd.concat();
        assert_eq!(flat, expected, "forward, limit {limit}");

        let back = f.all_pages(StoreQueryRequest::new("b").forward(false).limit(limit));
        // Each page ascending; pages go newest first.
        for page in &back {
            let positions: Vec<usize> = page
                .iter()
                .map(|h| expected.iter().position(|e| e == h).unwrap())
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "page ascending");
        }
        let flat: Vec<MessageHash> = back.into_iter().rev().flatten().collect();
        assert_eq!(flat, expected, "backward, limit {limit}");
    }
    // Default page size is 20 and the last page has no cursor.
    let page = f.query(StoreQueryRequest::new("d")).unwrap();
    assert_eq!(page.entries.len(), 20);
    assert!(page.cursor.is_some());
}

#[test]
fn content_filters_merge_topics_and_respect_time_bounds() {
    let mut f = Fixture::new();
    let all = fill(&mut f);
    let pick = |topics: &[&str], start: Option<i64>, end: Option<i64>| -> Vec<MessageHash> {
        sorted_hashes(
            &all.iter()
                .filter(|m| topics.contains(&m.content_topic.as_str()))
                .filter(|m| start.is_none_or(|s| m.timestamp >= s))
                .filter(|m| end.is_none_or(|e| m.timestamp < e))
                .collect::<Vec<_>>(),
        )
    };
    for topics in [
        vec!["/app/1/a/proto"],
        vec!["/app/1/a/proto", "/app/1/c/proto"],
        vec![
            "/app/1/a/proto",
            "/app/1/b/proto",
            "/app/1/c/proto",
            "/app/1/zz/proto",
        ],
    ] {
        for (start, end) in [
            (None, None),
            (Some(T0 + 10 * MS), None),
            (None, Some(T0 + 50 * MS)),
            // time_start inclusive, time_end exclusive, on timestamps that exist.
            (Some(T0 + 10 * MS), Some(T0 + 11 * MS)),
            (Some(T0 + 40 * MS), Some(T0 + 40 * MS)),
        ] {
            for forward in [true, false] {
                let request = StoreQueryRequest::new("c")
                    .content(PUBSUB, topics.clone())
                    .time_range(start, end)
                    .forward(forward)
                    .limit(9);
                let pages = f.all_pages(request);
                let flat: Vec<MessageHash> = if forward {
                    pages.concat()
                } else {
                    pages.into_iter().rev().flatten().collect()
                };
                assert_eq!(
                    flat,
                    pick(&topics, start, end),
                    "{topics:?} {start:?} {end:?} {forward}"
                );
            }
        }
    }
    // time_start == time_end of an existing timestamp: nothing, and no cursor.
    let page = f
        .query(
            StoreQueryRequest::new("e")
                .content(PUBSUB, ["/app/1/a/proto"])
                .time_range(Some(T0), Some(T0)),
        )
        .unwrap();
    assert!(page.entries.is_empty() && page.cursor.is_none());
    // The same content topic on another pubsub topic is another series.
    let page = f
        .query(StoreQueryRequest::new("o").content("/waku/2/rs/1/1", ["/app/1/a/proto"]))
        .unwrap();
    assert!(page.entries.is_empty());
}

#[test]
fn records_come_back_with_their_topic_and_bytes() {
    let mut f = Fixture::new();
    let all = fill(&mut f);
    let page = f
        .query(StoreQueryRequest::new("r").forward(true).limit(3))
        .unwrap();
    let first = sorted_hashes(&all.iter().collect::<Vec<_>>())[0];
    let m = all.iter().find(|m| m.hash == first).unwrap();
    let record = page.entries[0].record.as_deref().unwrap();
    assert_eq!(keys::decode_record(record), Some((PUBSUB, &m.bytes[..])));
    let page = f
        .query(
            StoreQueryRequest::new("r")
                .forward(true)
                .limit(3)
                .include_data(false),
        )
        .unwrap();
    assert!(page.entries.iter().all(|e| e.record.is_none()));
}

#[test]
fn hash_lookups_find_present_messages_and_page_them() {
    let mut f = Fixture::new();
    let all = fill(&mut f);
    let unknown = MessageHash([0xee; 32]);
    let wanted: Vec<MessageHash> = all
        .iter()
        .step_by(10)
        .map(|m| m.hash)
        .chain([unknown])
        .collect();
    let present = sorted_hashes(&all.iter().step_by(10).collect::<Vec<_>>());
    for include in [true, false] {
        let request = StoreQueryRequest::new("h")
            .hashes(wanted.clone())
            .include_data(include)
            .forward(true)
            .limit(4);
        let pages = f.all_pages(request);
        assert_eq!(pages.concat(), present, "include_data {include}");
        let back = f.all_pages(
            StoreQueryRequest::new("h")
                .hashes(wanted.clone())
                .include_data(include)
                .limit(4),
        );
        let flat: Vec<MessageHash> = back.into_iter().rev().flatten().collect();
        assert_eq!(flat, present);
    }
    let page = f
        .query(StoreQueryRequest::new("h").hashes([unknown]))
        .unwrap();
    assert!(page.entries.is_empty());
}

/// A hash lookup narrowed by pubsub topic (what js-waku sends), content topics and time:
/// only the messages matching every given criterion come back, paged as usual, with or
/// without their data.
#[test]
fn hash_lookups_are_narrowed_by_topics_and_time() {
    let mut f = Fixture::new();
    let all = fill(&mut f);
    let other = incoming(
        "/waku/2/rs/1/1",
        "/app/1/a/proto",
        T0 + 3 * MS,
        b"elsewhere",
    );
    f.writer.write(std::slice::from_ref(&other)).unwrap();
    let wanted: Vec<MessageHash> = all
        .iter()
        .step_by(5)
        .map(|m| m.hash)
        .chain([other.hash])
        .collect();
    let hashes = |request: StoreQueryRequest| f.all_pages(request.limit(3)).concat();
    let on_pubsub = sorted_hashes(&all.iter().step_by(5).collect::<Vec<_>>());
    for include in [true, false] {
        let lookup = || {
            StoreQueryRequest::new("h")
                .hashes(wanted.clone())
                .include_data(include)
                .forward(true)
        };
        let mut js_waku = lookup();
        js_waku.pubsub_topic = Some(PUBSUB.into());
        assert_eq!(hashes(js_waku), on_pubsub, "include_data {include}");
        let mut elsewhere = lookup();
        elsewhere.pubsub_topic = Some("/waku/2/rs/1/1".into());
        assert_eq!(hashes(elsewhere), vec![other.hash]);
        let mut unserved = lookup();
        unserved.pubsub_topic = Some("/waku/2/rs/7/7".into());
        assert_eq!(hashes(unserved), Vec::<MessageHash>::new());
        let narrowed = lookup()
            .content(PUBSUB, ["/app/1/b/proto"])
            .time_range(Some(T0 + 20 * MS), Some(T0 + 80 * MS));
        let expected = sorted_hashes(
            &all.iter()
                .step_by(5)
                .filter(|m| {
                    m.content_topic == "/app/1/b/proto"
                        && (T0 + 20 * MS..T0 + 80 * MS).contains(&m.timestamp)
                })
                .collect::<Vec<_>>(),
        );
        assert!(!expected.is_empty());
        assert_eq!(hashes(narrowed), expected);
        let mut page = lookup();
        page.pubsub_topic = Some(PUBSUB.into());
        let first = f.query(page.limit(100)).unwrap();
        assert!(first.entries.iter().all(|e| e.record.is_some() == include));
    }
}

#[test]
fn unknown_cursors_are_errors_not_empty_pages() {
    let mut f = Fixture::new();
    fill(&mut f);
    let unknown = MessageHash([0x42; 32]);
    for request in [
        StoreQueryRequest::new("x").cursor(Some(unknown)),
        StoreQueryRequest::new("x")
            .content(PUBSUB, ["/app/1/a/proto"])
            .cursor(Some(unknown)),
        StoreQueryRequest::new("x")
            .hashes([unknown])
            .cursor(Some(unknown)),
    ] {
        assert_eq!(f.query(request), Err(QueryError::InvalidCursor(unknown)));
    }
}

#[test]
fn duplicates_are_no_ops_within_and_across_batches() {
    let mut f = Fixture::new();
    let m = incoming(PUBSUB, "/app/1/a/proto", T0, b"x");
    let out = f.writer.write(&[m.clone(), m.clone()]).unwrap();
    assert_eq!(out, vec![Written::Stored, Written::Duplicate]);
    let out = f.writer.write(std::slice::from_ref(&m)).unwrap();
    assert_eq!(out, vec![Written::Duplicate]);
    assert_eq!(f.writer.stats().messages, 1);
    let page = f.query(StoreQueryRequest::new("d")).unwrap();
    assert_eq!(page.entries.len(), 1);
}

#[test]
fn writes_below_the_free_space_reserve_are_refused_and_resume_when_it_fits() {
    let mut f = Fixture::new();
    let stored = incoming(PUBSUB, "/app/1/a/proto", T0, b"kept");
    f.writer.write(std::slice::from_ref(&stored)).unwrap();
    let free = crate::db::free_bytes(&f.path).expect("statvfs works on the test disk");
    // A reserve larger than the whole free space: every new message is refused.
    f.writer.keep_free(ByteSize(free.saturating_mul(2)));
    let new = incoming(PUBSUB, "/app/1/a/proto", T0 + MS, b"refused");
    match f.writer.write(std::slice::from_ref(&new)) {
        Err(StoreError::DiskFull { available, reserve }) => {
            assert!(available.0 < reserve.0, "{available} < {reserve}");
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
    // What needs no space still answers, and nothing was half-written.
    assert_eq!(
        f.writer.write(std::slice::from_ref(&stored)).unwrap(),
        vec![Written::Duplicate]
    );
    assert_eq!(f.writer.stats().messages, 1);
    assert_eq!(
        f.query(StoreQueryRequest::new("q")).unwrap().entries.len(),
        1
    );
    // Space is back (here: the reserve lowered): the same message is stored.
    f.writer.keep_free(ByteSize(0));
    assert_eq!(
        f.writer.write(std::slice::from_ref(&new)).unwrap(),
        vec![Written::Stored]
    );
    assert_eq!(f.writer.stats().messages, 2);
}

#[test]
fn reopening_keeps_messages_stats_and_cutoff() {
    let mut f = Fixture::new();
    let all = fill(&mut f);
    let plan = f
        .writer
        .plan(&"capacity:100".parse().unwrap(), T0, 0)
        .unwrap()
        .unwrap();
    let cut = f.writer.cut(plan).unwrap();
    assert!(cut.messages > 0);
    let stats = f.writer.stats().clone();
    let cutoff = f.archive().cutoff();
    let path = f.path.clone();
    let dir = f._dir;
    drop(f.writer);
    let archive = Arc::new(Archive::open(&path, &Tuning::default()).unwrap());
    let writer = Writer::new(archive.clone(), false).unwrap();
    assert_eq!(writer.stats(), &stats);
    assert_eq!(archive.cutoff(), cutoff);
    let f = Fixture {
        _dir: dir,
        path,
        writer,
    };
    let kept: Vec<MessageHash> = f
        .all_pages(StoreQueryRequest::new("k").forward(true).limit(100))
        .concat();
    let expected = sorted_hashes(&all.iter().collect::<Vec<_>>());
    assert_eq!(kept, expected[expected.len() - kept.len()..].to_vec());
    assert_eq!(kept.len() as u64, stats.messages);
}

#[test]
fn capacity_keeps_the_newest_and_counts_exactly() {
    let mut f = Fixture::new();
    let all = fill(&mut f);
    let expected = sorted_hashes(&all.iter().collect::<Vec<_>>());
    let policy: RetentionPolicy = "capacity:100".parse().unwrap();
    let plan = f.writer.plan(&policy, T0, 0).unwrap().unwrap();
    assert_eq!(plan.policy, "capacity");
    let cut = f.writer.cut(plan).unwrap();
    // Down to 95% of the capacity.
    assert_eq!(cut.messages, 250 - 95);
    assert_eq!(f.writer.stats().messages, 95);
    let kept: Vec<MessageHash> = f
        .all_pages(StoreQueryRequest::new("k").forward(true).limit(100))
        .concat();
    assert_eq!(kept, expected[155..].to_vec());
    // Under capacity: nothing more to do.
    assert_eq!(f.writer.plan(&policy, T0, 0).unwrap(), None);
    // Cut messages are gone from every view: hash lookups, content queries, cursors.
    let gone = expected[0];
    let page = f.query(StoreQueryRequest::new("g").hashes([gone])).unwrap();
    assert!(page.entries.is_empty());
    let page = f
        .query(
            StoreQueryRequest::new("g")
                .content(
                    PUBSUB,
                    ["/app/1/a/proto", "/app/1/b/proto", "/app/1/c/proto"],
                )
                .forward(true)
                .limit(100),
        )
        .unwrap();
    assert_eq!(page.entries.len(), 95);
    assert_eq!(
        f.query(StoreQueryRequest::new("g").cursor(Some(gone))),
        Err(QueryError::InvalidCursor(gone))
    );
    // A late message older than the cutoff is refused, not stored invisibly.
    let late = incoming(PUBSUB, "/app/1/a/proto", T0 - MS, b"late");
    assert_eq!(
        f.writer.write(&[late]).unwrap(),
        vec![Written::Rejected(RejectReason::Expired)]
    );
}

#[test]
fn time_retention_drops_whole_old_buckets() {
    let mut f = Fixture::new();
    let bucket = BUCKET_NANOS;
    let base = keys::bucket_of(T0);
    let old: Vec<Incoming> = (0..10)
        .map(|i| {
            incoming(
                PUBSUB,
                "/app/1/a/proto",
                base + i * MS,
                format!("o{i}").as_bytes(),
            )
        })
        .collect();
    let new: Vec<Incoming> = (0..10)
        .map(|i| {
            incoming(
                PUBSUB,
                "/app/1/a/proto",
                base + 5 * bucket + i * MS,
                format!("n{i}").as_bytes(),
            )
        })
        .collect();
    f.writer.write(&old).unwrap();
    f.writer.write(&new).unwrap();
    let policy = RetentionPolicy(vec![Retention::Time(std::time::Duration::from_nanos(
        3 * BUCKET_NANOS as u64,
    ))]);
    // 3 buckets after the old bucket ended: it is older than 3 buckets, the new one is not.
    let now = base + 4 * bucket + MS;
    let plan = f.writer.plan(&policy, now, 0).unwrap().unwrap();
    assert_eq!(plan.policy, "time");
    let cut = f.writer.cut(plan).unwrap();
    assert_eq!(cut.messages, 10);
    let kept: Vec<MessageHash> = f
        .all_pages(StoreQueryRequest::new("t").forward(true))
        .concat();
    assert_eq!(kept, sorted_hashes(&new.iter().collect::<Vec<_>>()));
    // 1 ms before the new messages' bucket is wholly older than 3 buckets, none of it goes.
    let plan = f
        .writer
        .plan(&policy, base + 9 * bucket - MS, 0)
        .unwrap()
        .unwrap();
    assert_eq!(f.writer.cut(plan).unwrap().messages, 0);
    let kept: Vec<MessageHash> = f
        .all_pages(StoreQueryRequest::new("t").forward(true))
        .concat();
    assert_eq!(kept.len(), 10);
}

#[test]
fn size_retention_cuts_the_oldest_bytes() {
    let mut f = Fixture::new();
    let payload = vec![7u8; 10_000];
    let all: Vec<Incoming> = (0..100i64)
        .map(|i| {
            let mut p = payload.clone();
            p.extend_from_slice(&i.to_be_bytes());
            incoming(PUBSUB, "/app/1/a/proto", T0 + i * MS, &p)
        })
        .collect();
    f.writer.write(&all).unwrap();
    let total = f.writer.stats().bytes;
    let policy: RetentionPolicy = "size:1MB".parse().unwrap();
    // Pretend the files are twice the limit: keep 80% of the limit's share of the data.
    let plan = f.writer.plan(&policy, T0, 2 << 20).unwrap().unwrap();
    assert_eq!(plan.policy, "size");
    let cut = f.writer.cut(plan).unwrap();
    let kept = f.writer.stats().bytes;
    assert!(kept <= total * 4 / 10 + 10_300, "kept {kept} of {total}");
    assert!(kept >= total * 4 / 10 - 10_300, "kept {kept} of {total}");
    assert_eq!(cut.bytes + kept, total);
    // Under 90% of the limit: nothing to do.
    assert_eq!(f.writer.plan(&policy, T0, 900_000).unwrap(), None);
}

#[test]
fn combined_policies_cut_at_the_furthest_rule() {
    let mut f = Fixture::new();
    let base = keys::bucket_of(T0);
    let msgs: Vec<Incoming> = (0..300)
        .map(|i| {
            incoming(
                PUBSUB,
                "/app/1/a/proto",
                base + i * BUCKET_NANOS / 100,
                format!("c{i}").as_bytes(),
            )
        })
        .collect();
    f.writer.write(&msgs).unwrap();
    // 300 messages over 3 buckets. A 2-bucket age at base+3 buckets deletes the first (100);
    // capacity:150 deletes down to 143 (157): capacity wins.
    let now = base + 3 * BUCKET_NANOS;
    let combined = RetentionPolicy(vec![
        Retention::Time(std::time::Duration::from_nanos(2 * BUCKET_NANOS as u64)),
        Retention::Capacity(150),
    ]);
    let plan = f.writer.plan(&combined, now, 0).unwrap().unwrap();
    assert_eq!(plan.policy, "capacity");
    assert_eq!(f.writer.cut(plan).unwrap().messages, 157);
    // Later the time rule is the furthest.
    let plan = f
        .writer
        .plan(&combined, now + BUCKET_NANOS, 0)
        .unwrap()
        .unwrap();
    assert_eq!(plan.policy, "time");
    f.writer.cut(plan).unwrap();
    assert_eq!(f.writer.stats().messages, 100);
}

#[test]
fn reclaim_drops_stale_index_entries_by_compaction() {
    let mut f = Fixture::new();
    let all = fill(&mut f);
    let plan = f
        .writer
        .plan(&"capacity:10".parse().unwrap(), T0, 0)
        .unwrap()
        .unwrap();
    f.writer.cut(plan).unwrap();
    let archive = f.archive();
    let count = |cf: &str| {
        let cf = archive.db().cf_handle(cf).unwrap();
        let mut it = archive.db().raw_iterator_cf(cf);
        it.seek_to_first();
        let mut n = 0;
        while it.valid() {
            n += 1;
            it.next();
        }
        n
    };
    // capacity:10 keeps 10 (95% of 10, rounded up). Before compaction the index entries of
    // deleted messages are still there (skipped by reads)...
    assert_eq!(count(keys::CF_HASHES), all.len());
    assert_eq!(count(keys::CF_MESSAGES), 10);
    Writer::reclaim(archive, archive.cutoff(), true).unwrap();
    // ...and the compaction filter drops them.
    assert_eq!(count(keys::CF_HASHES), 10);
    assert_eq!(count(keys::CF_TOPICS), 10);
}

#[test]
fn summary_reports_topics_with_oldest_and_newest() {
    let mut f = Fixture::new();
    f.writer
        .write(&[
            incoming(PUBSUB, "/app/1/a/proto", T0, b"1"),
            incoming(PUBSUB, "/app/1/a/proto", T0 + 5 * BUCKET_NANOS, b"2"),
            incoming("/waku/2/rs/1/1", "/app/1/a/proto", T0 + MS, b"3"),
        ])
        .unwrap();
    let summary = f.archive().summary(f.writer.stats()).unwrap();
    assert_eq!(summary.messages, 3);
    assert_eq!(summary.topics.len(), 2);
    let t0 = summary
        .topics
        .iter()
        .find(|t| t.pubsub_topic == PUBSUB)
        .unwrap();
    assert_eq!(
        (t0.messages, t0.oldest, t0.newest),
        (2, Some(T0), Some(T0 + 5 * BUCKET_NANOS))
    );
    let t1 = summary
        .topics
        .iter()
        .find(|t| t.pubsub_topic != PUBSUB)
        .unwrap();
    assert_eq!(
        (t1.messages, t1.oldest, t1.newest),
        (1, Some(T0 + MS), Some(T0 + MS))
    );
    assert!(summary.disk_bytes > 0);
    assert_eq!(
        f.archive().extremes().unwrap(),
        (Some(T0), Some(T0 + 5 * BUCKET_NANOS))
    );
}

#[test]
fn a_read_only_open_sees_what_the_writer_committed() {
    let mut f = Fixture::new();
    fill(&mut f);
    let reader = Archive::open_read_only(&f.path).unwrap();
    let stats = reader.load_stats().unwrap();
    assert_eq!(stats.messages, 250);
}

/// Property tests on random archives (real RocksDB in a temporary directory each case).
mod props {
    use proptest::{collection::vec, option, prelude::*, sample::subsequence};

    use super::*;

    const TOPICS: [&str; 3] = ["/app/1/a/proto", "/app/1/b/proto", "/app/1/c/proto"];
    /// 60 slots of 1/20 bucket: three buckets, and many messages sharing a timestamp.
    const STEP: i64 = BUCKET_NANOS / 20;

    fn messages() -> impl Strategy<Value = Vec<Incoming>> {
        vec((0i64..60, 0usize..3, any::<u32>()), 0..160).prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (slot, topic, salt))| {
                    incoming(
                        PUBSUB,
                        TOPICS[topic],
                        T0 + slot * STEP,
                        format!("{i}/{salt}").as_bytes(),
                    )
                })
                .collect()
        })
    }

    fn write_in_chunks(f: &mut Fixture, all: &[Incoming], chunk: usize) {
        for part in all.chunks(chunk) {
            let out = f.writer.write(part).unwrap();
            assert!(out.iter().all(|o| *o == Written::Stored));
        }
    }

    fn kept(f: &Fixture) -> Vec<MessageHash> {
        f.all_pages(StoreQueryRequest::new("k").forward(true).limit(100))
            .concat()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        #[test]
        fn any_page_size_and_direction_yields_each_message_once_in_order(
            all in messages(),
            chunk in 1usize..64,
            limit in 0u64..130,
            forward in any::<bool>(),
            topics in option::of(subsequence(TOPICS.to_vec(), 1..=3)),
            start in option::of(0i64..60),
            end in option::of(0i64..61),
            again in any::<prop::sample::Index>(),
        ) {
            let mut f = Fixture::new();
            write_in_chunks(&mut f, &all, chunk);
            // Writing some of them again changes nothing.
            let from = again.index(all.len().max(1));
            let dup = f.writer.write(&all[from.min(all.len())..]).unwrap();
            prop_assert!(dup.iter().all(|o| *o == Written::Duplicate));

            let (start, end) = match (start, end) {
                (Some(s), Some(e)) if s > e => (Some(e), Some(s)),
                other => other,
            };
            let (start, end) = (start.map(|s| T0 + s * STEP), end.map(|e| T0 + e * STEP));
            let expected = sorted_hashes(
                &all.iter()
                    .filter(|m| topics.as_ref().is_none_or(|t| t.contains(&m.content_topic.as_str())))
                    .filter(|m| start.is_none_or(|s| m.timestamp >= s))
                    .filter(|m| end.is_none_or(|e| m.timestamp < e))
                    .collect::<Vec<_>>(),
            );
            let mut request = StoreQueryRequest::new("p").time_range(start, end).forward(forward);
            if let Some(topics) = &topics {
                request = request.content(PUBSUB, topics.clone());
            }
            request.pagination_limit = Some(limit);
            let page_size = match limit {
                0 => 20,
                n => n.min(100) as usize,
            };
            let pages = f.all_pages(request);
            // Full pages until the last one, which alone has no cursor.
            for page in &pages[..pages.len() - 1] {
                prop_assert_eq!(page.len(), page_size);
            }
            prop_assert!(pages[pages.len() - 1].len() <= page_size);
            // Each page is ascending whichever the direction.
            for page in &pages {
                let positions: Vec<usize> = page
                    .iter()
                    .map(|h| expected.iter().position(|e| e == h).expect("only matching messages"))
                    .collect();
                prop_assert!(positions.windows(2).all(|w| w[0] < w[1]));
            }
            let flat: Vec<MessageHash> = if forward {
                pages.concat()
            } else {
                pages.into_iter().rev().flatten().collect()
            };
            prop_assert_eq!(flat, expected);
        }

        #[test]
        fn capacity_keeps_exactly_the_newest(all in messages(), chunk in 1usize..64, capacity in 1u64..200) {
            let mut f = Fixture::new();
            write_in_chunks(&mut f, &all, chunk);
            let expected = sorted_hashes(&all.iter().collect::<Vec<_>>());
            let policy = RetentionPolicy(vec![Retention::Capacity(capacity)]);
            match f.writer.plan(&policy, T0, 0).unwrap() {
                None => prop_assert!(all.len() as u64 <= capacity),
                Some(plan) => {
                    prop_assert!(all.len() as u64 > capacity);
                    let cut = f.writer.cut(plan).unwrap();
                    let keep = (capacity - capacity / 20) as usize;
                    prop_assert_eq!(cut.messages as usize, all.len() - keep);
                }
            }
            let kept = kept(&f);
            prop_assert_eq!(&kept[..], &expected[expected.len() - kept.len()..]);
            prop_assert_eq!(f.writer.stats().messages, kept.len() as u64);
            prop_assert!(kept.len() as u64 <= capacity);
        }

        #[test]
        fn time_keeps_every_message_younger_than_the_age(
            all in messages(),
            age_slots in 0i64..80,
            now_slot in 0i64..120,
        ) {
            let mut f = Fixture::new();
            write_in_chunks(&mut f, &all, 50);
            let expected = sorted_hashes(&all.iter().collect::<Vec<_>>());
            let age = age_slots * STEP;
            let now = T0 + now_slot * STEP;
            let policy = RetentionPolicy(vec![Retention::Time(std::time::Duration::from_nanos(age as u64))]);
            if let Some(plan) = f.writer.plan(&policy, now, 0).unwrap() {
                f.writer.cut(plan).unwrap();
            }
            let kept = kept(&f);
            // A suffix of the archive: the oldest go first, never a gap.
            prop_assert_eq!(&kept[..], &expected[expected.len() - kept.len()..]);
            prop_assert_eq!(f.writer.stats().messages, kept.len() as u64);
            for m in &all {
                if m.timestamp >= now - age {
                    prop_assert!(kept.contains(&m.hash), "a message younger than the age was deleted");
                }
            }
        }
    }
}

/// Messages over 12 buckets (120 s) on two pubsub topics and two content topics.
fn spread(f: &mut Fixture) -> Vec<Incoming> {
    let all: Vec<Incoming> = (0..600i64)
        .map(|i| {
            let pubsub = if i % 3 == 0 { "/waku/2/rs/1/1" } else { PUBSUB };
            let content = if i % 2 == 0 {
                "/app/1/a/proto"
            } else {
                "/app/1/b/proto"
            };
            incoming(
                pubsub,
                content,
                T0 + i * 200 * MS + (i % 7),
                format!("s{i}").as_bytes(),
            )
        })
        .collect();
    for chunk in all.chunks(50) {
        f.writer.write(chunk).unwrap();
    }
    all
}

fn brute_force(
    all: &[Incoming],
    lower: Position,
    upper: Position,
    pubsub: &[String],
    content: &[String],
) -> RangeSummary {
    let mut s = RangeSummary::default();
    for m in all {
        let p = Position::new(m.timestamp, &m.hash);
        let topic_ok = pubsub.is_empty() || pubsub.iter().any(|t| **t == *m.pubsub_topic);
        let content_ok = content.is_empty() || content.contains(&m.content_topic);
        if p >= lower && p <= upper && topic_ok && content_ok {
            s.count += 1;
            keys::xor_into(&mut s.fingerprint, &m.hash.0);
        }
    }
    s
}

#[test]
fn range_fingerprints_match_a_scan_for_any_bounds_and_scope() {
    let mut f = Fixture::new();
    let all = spread(&mut f);
    let view = f.archive().sync_view();
    let one = vec![PUBSUB.to_owned()];
    let content = vec!["/app/1/b/proto".to_owned()];
    let scopes: [(&[String], &[String]); 3] = [(&[], &[]), (&one, &[]), (&one, &content)];
    let edges = [
        T0 - BUCKET_NANOS,
        T0,
        T0 + 3,
        T0 + BUCKET_NANOS,
        T0 + 17 * 1_000 * MS + 5,
        T0 + 40 * 1_000 * MS,
        T0 + 99 * 1_000 * MS + 1,
        T0 + 200 * 1_000 * MS,
    ];
    for (i, &a) in edges.iter().enumerate() {
        for &b in &edges[i..] {
            for (pubsub, content) in scopes {
                let (lower, upper) = (Position::at(a), Position::at(b));
                let scope = RangeScope {
                    pubsub_topics: pubsub,
                    content_topics: content,
                };
                assert_eq!(
                    view.summarize(lower, upper, scope).unwrap(),
                    brute_force(&all, lower, upper, pubsub, content),
                    "range {a}..={b}, scope {pubsub:?} {content:?}"
                );
            }
        }
    }
    // Ids come back in order, and the upper bound is inclusive.
    let first = Position::new(all[5].timestamp, &all[5].hash);
    let ids = view
        .ids(Position::at(T0), first, RangeScope::default())
        .unwrap();
    assert_eq!(ids.len(), 6);
    assert_eq!(ids.last(), Some(&first));
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn fingerprints_stay_exact_through_retention_cuts() {
    let mut f = Fixture::new();
    let all = spread(&mut f);
    // A cut inside a bucket (capacity) and then one on whole buckets (time).
    let plan = f
        .writer
        .plan(&"capacity:400".parse().unwrap(), T0, 0)
        .unwrap()
        .unwrap();
    let cut = f.writer.cut(plan).unwrap();
    assert_ne!(cut.cutoff, Position::at(keys::bucket_of(cut.cutoff.ts)));
    let whole = (Position::MIN, Position::at(T0 + 1_000 * BUCKET_NANOS));
    let kept: Vec<Incoming> = all
        .iter()
        .filter(|m| Position::new(m.timestamp, &m.hash) >= cut.cutoff)
        .cloned()
        .collect();
    let view = f.archive().sync_view();
    assert_eq!(
        view.summarize(whole.0, whole.1, RangeScope::default())
            .unwrap(),
        brute_force(&kept, whole.0, whole.1, &[], &[])
    );
    let mid = Position::at(T0 + 60 * 1_000 * MS);
    assert_eq!(
        view.summarize(mid, whole.1, RangeScope::default()).unwrap(),
        brute_force(&kept, mid, whole.1, &[], &[])
    );
}

#[test]
fn archives_from_before_the_index_are_indexed_once_at_open() {
    let mut f = Fixture::new();
    let all = spread(&mut f);
    // Make it look like an archive written before the `fingerprints` family existed.
    {
        let db = f.archive().db();
        let cf = db.cf_handle(keys::CF_FINGERPRINTS).unwrap();
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, vec![0u8; 1], vec![0xffu8; 41]);
        batch.delete_cf(
            db.cf_handle(keys::CF_META).unwrap(),
            keys::META_FINGERPRINTS,
        );
        db.write(batch).unwrap();
    }
    let whole = (Position::MIN, Position::at(T0 + 1_000 * BUCKET_NANOS));
    let expected = brute_force(&all, whole.0, whole.1, &[], &[]);
    assert_ne!(
        f.archive()
            .sync_view()
            .summarize(whole.0, whole.1, RangeScope::default())
            .unwrap(),
        expected,
        "the index was emptied"
    );
    let path = f.path.clone();
    drop(f.writer);
    let archive = Archive::open(&path, &Tuning::default()).unwrap();
    assert_eq!(
        archive
            .sync_view()
            .summarize(whole.0, whole.1, RangeScope::default())
            .unwrap(),
        expected
    );
    // And the record of a message comes back by hash.
    let (topic, bytes) = archive.record_of(&all[3].hash).unwrap().unwrap();
    assert_eq!(
        (topic.as_str(), bytes),
        (&*all[3].pubsub_topic, all[3].bytes.clone())
    );
}

#[test]
fn a_pubsub_topic_alone_pages_through_that_topic_only() {
    let mut f = Fixture::new();
    let all = spread(&mut f);
    let on_topic: Vec<&Incoming> = all.iter().filter(|m| &*m.pubsub_topic == PUBSUB).collect();
    let mut request = StoreQueryRequest::new("p").forward(true).limit(100);
    request.pubsub_topic = Some(PUBSUB.to_owned());
    let pages = f.all_pages(request.clone());
    assert_eq!(pages.concat(), sorted_hashes(&on_topic));
    assert!(pages.iter().all(|p| p.len() <= 100));
    // Backward too, and bounded in time.
    let mut backward = request.forward(false);
    backward.time_start = Some(T0 + 30 * 1_000 * MS);
    let got: Vec<MessageHash> = f.all_pages(backward).concat();
    let expected: Vec<MessageHash> = {
        let mut v = sorted_hashes(
            &on_topic
                .iter()
                .copied()
                .filter(|m| m.timestamp >= T0 + 30 * 1_000 * MS)
                .collect::<Vec<_>>(),
        );
        // Pages come oldest first within a page, newest page first.
        v.reverse();
        v
    };
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(got_sorted, expected_sorted);
}

/// Sum of a per-column-family integer property.
fn cf_property_sum(archive: &Archive, property: &str) -> u64 {
    keys::COLUMN_FAMILIES
        .iter()
        .map(|name| {
            let cf = archive.db().cf_handle(name).unwrap();
            archive
                .db()
                .property_int_value_cf(&cf, property)
                .unwrap()
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn memory_budget_splits_into_block_cache_and_memtables() {
    let tuning = Tuning {
        size_limit: None,
        memory_budget: ByteSize::mib(32),
    };
    assert_eq!(tuning.split(), (24 << 20, 8 << 20));
    // Below the minimum the minimum applies.
    let tiny = Tuning {
        size_limit: None,
        memory_budget: ByteSize::mib(1),
    };
    assert_eq!(tiny.split(), (12 << 20, 4 << 20));

    let dir = tempfile::tempdir().unwrap();
    let archive = Arc::new(Archive::open(&dir.path().join("store"), &tuning).unwrap());
    let cf = archive.db().cf_handle(keys::CF_MESSAGES).unwrap();
    assert_eq!(
        archive
            .db()
            .property_int_value_cf(&cf, "rocksdb.block-cache-capacity")
            .unwrap(),
        Some(24 << 20),
        "one block cache of three quarters of the budget"
    );
    // 24 MiB of messages: three times the memtable share. Without the budget the `messages`
    // memtable alone would hold them all (32 MiB write buffer).
    let mut writer = Writer::new(archive.clone(), false).unwrap();
    let payload = vec![7u8; 1024];
    for batch in 0..24 {
        let items: Vec<Incoming> = (0..1024)
            .map(|i| {
                let n = batch * 1024 + i;
                let mut p = payload.clone();
                p[..8].copy_from_slice(&(n as u64).to_be_bytes());
                incoming(PUBSUB, "/app/1/mem/proto", T0 + n * MS, &p)
            })
            .collect();
        writer.write(&items).unwrap();
    }
    // Flushes run in the background: wait for them, then the memtables are within budget.
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while cf_property_sum(&archive, "rocksdb.mem-table-flush-pending") > 0
        || archive
            .db()
            .property_int_value("rocksdb.num-running-flushes")
            .unwrap()
            .unwrap_or(0)
            > 0
    {
        assert!(Instant::now() < deadline, "flushes did not finish");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let memtables = cf_property_sum(&archive, "rocksdb.cur-size-all-mem-tables");
    assert!(
        memtables <= 8 << 20,
        "memtables hold {memtables} bytes, over the 8 MiB share of the budget"
    );
}
