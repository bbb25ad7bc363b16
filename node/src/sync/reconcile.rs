//! One reconciliation round against the archive: given the peer's payload, the reply and the
//! messages each side lacks. This follows nwaku's `SeqStorage.processPayload` (range splitting,
//! thresholds, when an item set is "reconciled") so a Roost node and an nwaku node converge the
//! same way two nwaku nodes do; it reads fingerprints from the archive's index instead of a
//! copy of every id in memory.

use super::codec::{Fingerprint, ItemSet, Payload, Range, RangeKind, SyncId};
use crate::store::{keys::Position, RangeScope, RangeSource, StoreError};

/// A range with at most this many messages is sent as an item set rather than split (nwaku's
/// `lengthThreshold`).
pub const ITEM_SET_THRESHOLD: u64 = 100;
/// Parts a range whose fingerprints differ is split into (nwaku's `partitionCount`).
pub const PARTITIONS: i64 = 8;
/// Most ids the item sets of one reply carry (~2.3 MB on the wire). Once a reply holds this
/// many, a range whose fingerprints differ goes back unsplit, as this node's fingerprint: the
/// peer finds it still differs and splits it in its next round. Without this bound a round
/// over a large window with many differences (1000 among 1M messages is enough) produced a
/// single frame of every id of every differing range, tens of MB, that the peer refused, so
/// the session failed every time and the archives never converged. Item sets answering the
/// peer's item sets count towards the budget but are always sent (they are the answer).
pub const REPLY_ITEM_BUDGET: usize = 64_000;

/// What one round produced.
#[derive(Debug, Default, PartialEq)]
pub struct Round {
    /// The payload to answer with (no ranges: the session is over on this side).
    pub reply: Payload,
    /// Messages this node has and the peer lacks: to send by transfer.
    pub to_send: Vec<[u8; 32]>,
    /// Messages the peer has and this node lacks: the peer sends them.
    pub to_receive: Vec<[u8; 32]>,
}

/// The topics a round covers: nwaku's "smallest scope": the intersection of the peer's and
/// this node's lists, either list empty meaning every topic. `None` when they do not meet.
pub fn scope_of(ours: &[String], theirs: &[String]) -> Option<Vec<String>> {
    match (ours.is_empty(), theirs.is_empty()) {
        (_, true) => Some(ours.to_vec()),
        (true, false) => Some(theirs.to_vec()),
        (false, false) => {
            let both: Vec<String> = theirs
                .iter()
                .filter(|t| ours.contains(t))
                .cloned()
                .collect();
            (!both.is_empty()).then_some(both)
        }
    }
}

/// Processes the peer's payload. `pubsub_topics`/`content_topics` are this node's own lists,
/// which the reply carries (as nwaku's does).
pub fn process(
    view: &dyn RangeSource,
    pubsub_topics: &[String],
    content_topics: &[String],
    input: &Payload,
) -> Result<Round, StoreError> {
    process_within(
        view,
        pubsub_topics,
        content_topics,
        input,
        REPLY_ITEM_BUDGET,
    )
}

/// [`process`] with a reply carrying at most about `budget` ids in the item sets it makes.
pub fn process_within(
    view: &dyn RangeSource,
    pubsub_topics: &[String],
    content_topics: &[String],
    input: &Payload,
    budget: usize,
) -> Result<Round, StoreError> {
    let mut budget = budget;
    let mut round = Round::default();
    let (Some(pubsub), Some(content)) = (
        scope_of(pubsub_topics, &input.pubsub_topics),
        scope_of(content_topics, &input.content_topics),
    ) else {
        // Nothing in common: an empty reply ends the session.
        return Ok(round);
    };
    let scope = RangeScope {
        pubsub_topics: &pubsub,
        content_topics: &content,
    };
    let mut out: Vec<Range> = Vec::with_capacity(input.ranges.len());
    for range in &input.ranges {
        match &range.kind {
            RangeKind::Skip => out.push(Range {
                lower: range.lower,
                upper: range.upper,
                kind: RangeKind::Skip,
            }),
            RangeKind::Fingerprint(theirs) => fingerprint_range(
                view,
                scope,
                range.lower,
                range.upper,
                theirs,
                &mut budget,
                &mut out,
            )?,
            RangeKind::ItemSet(theirs) => out.push(Range {
                lower: range.lower,
                upper: range.upper,
                kind: item_set_range(
                    view,
                    scope,
                    range.lower,
                    range.upper,
                    theirs,
                    &mut budget,
                    &mut round,
                )?,
            }),
        }
    }
    // Consecutive skips become one; nothing but skips means this side is done.
    let mut merged: Vec<Range> = Vec::with_capacity(out.len());
    for range in out {
        match merged.last_mut() {
            Some(last) if last.kind == RangeKind::Skip && range.kind == RangeKind::Skip => {
                last.upper = range.upper;
            }
            _ => merged.push(range),
        }
    }
    if merged.iter().any(|r| r.kind != RangeKind::Skip) {
        round.reply = Payload {
            pubsub_topics: pubsub_topics.to_vec(),
            content_topics: content_topics.to_vec(),
            ranges: merged,
        };
    }
    Ok(round)
}

/// The first payload of a session: the whole window as one fingerprint.
pub fn initial(
    view: &dyn RangeSource,
    pubsub_topics: &[String],
    content_topics: &[String],
    start: i64,
    end: i64,
) -> Result<Payload, StoreError> {
    // nwaku's upper bound is (end, ff…ff), but it reaches the peer as (end, 0…0): count what
    // the peer will count.
    let (lower, upper) = (Position::at(start), Position::at(end));
    let summary = view.summarize(
        lower,
        upper,
        RangeScope {
            pubsub_topics,
            content_topics,
        },
    )?;
    Ok(Payload {
        pubsub_topics: pubsub_topics.to_vec(),
        content_topics: content_topics.to_vec(),
        ranges: vec![Range {
            lower,
            upper,
            kind: RangeKind::Fingerprint(summary.fingerprint),
        }],
    })
}

fn item_set(
    view: &dyn RangeSource,
    scope: RangeScope<'_>,
    lower: SyncId,
    upper: SyncId,
    count: u64,
    budget: &mut usize,
) -> Result<RangeKind, StoreError> {
    if count == 0 {
        // Nothing here: the peer can send all it has without answering.
        return Ok(RangeKind::ItemSet(ItemSet {
            elements: Vec::new(),
            reconciled: true,
        }));
    }
    let elements = view.ids(lower, upper, scope)?;
    *budget = budget.saturating_sub(elements.len());
    Ok(RangeKind::ItemSet(ItemSet {
        elements,
        reconciled: false,
    }))
}

fn fingerprint_range(
    view: &dyn RangeSource,
    scope: RangeScope<'_>,
    lower: SyncId,
    upper: SyncId,
    theirs: &Fingerprint,
    budget: &mut usize,
    out: &mut Vec<Range>,
) -> Result<(), StoreError> {
    let ours = view.summarize(lower, upper, scope)?;
    if &ours.fingerprint == theirs {
        out.push(Range {
            lower,
            upper,
            kind: RangeKind::Skip,
        });
        return Ok(());
    }
    if *budget == 0 {
        // This reply is full: the peer splits this range next.
        out.push(Range {
            lower,
            upper,
            kind: RangeKind::Fingerprint(ours.fingerprint),
        });
        return Ok(());
    }
    let span = upper.ts.saturating_sub(lower.ts);
    if ours.count <= ITEM_SET_THRESHOLD || span < PARTITIONS {
        // nwaku drops a range shorter than 8 ns that it cannot split; an item set settles it.
        out.push(Range {
            lower,
            upper,
            kind: item_set(view, scope, lower, upper, ours.count, budget)?,
        });
        return Ok(());
    }
    // Equal time partitions, the remainder spread over the first ones (nwaku's
    // `equalPartitioning`); bounds carry a zero hash.
    let (part, mut remainder) = (span / PARTITIONS, span % PARTITIONS);
    let mut lb = lower.ts;
    for _ in 0..PARTITIONS {
        let mut ub = lb + part;
        if remainder > 0 {
            ub += 1;
            remainder -= 1;
        }
        let (p_lower, p_upper) = (Position::at(lb), Position::at(ub));
        let summary = view.summarize(p_lower, p_upper, scope)?;
        let kind = if summary.count <= ITEM_SET_THRESHOLD {
            item_set(view, scope, p_lower, p_upper, summary.count, budget)?
        } else {
            RangeKind::Fingerprint(summary.fingerprint)
        };
        out.push(Range {
            lower: p_lower,
            upper: p_upper,
            kind,
        });
        lb = ub;
    }
    Ok(())
}

fn item_set_range(
    view: &dyn RangeSource,
    scope: RangeScope<'_>,
    lower: SyncId,
    upper: SyncId,
    theirs: &ItemSet,
    budget: &mut usize,
    round: &mut Round,
) -> Result<RangeKind, StoreError> {
    let ours = view.ids(lower, upper, scope)?;
    let (mut i, mut j) = (0, 0);
    // Both ascending: a merge finds what each side lacks.
    while i < theirs.elements.len() || j < ours.len() {
        match (theirs.elements.get(i), ours.get(j)) {
            (Some(t), Some(o)) if t == o => {
                i += 1;
                j += 1;
            }
            (Some(t), Some(o)) if t < o => {
                round.to_receive.push(t.hash);
                i += 1;
            }
            (Some(t), None) => {
                round.to_receive.push(t.hash);
                i += 1;
            }
            (_, Some(o)) => {
                round.to_send.push(o.hash);
                j += 1;
            }
            (None, None) => break,
        }
    }
    let kind = if theirs.reconciled {
        RangeKind::Skip
    } else {
        *budget = budget.saturating_sub(ours.len());
        RangeKind::ItemSet(ItemSet {
            elements: ours,
            reconciled: true,
        })
    };
    Ok(kind)
}

#[cfg(test)]
mod tests;
