//! Who is subscribed to what: per-peer criteria with a last-seen time, and an index from
//! (pubsub topic, content topic) to peers for matching relayed messages. Pure state, no I/O.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use libp2p::PeerId;

use super::{Refused, Status};

/// One filter criterion: a pubsub topic and a content topic.
pub type Criterion = (String, String);

/// Caps and timeout of the subscription table.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_peers: usize,
    pub max_criteria_per_peer: usize,
    pub timeout: Duration,
}

impl From<&super::Config> for Limits {
    fn from(c: &super::Config) -> Self {
        Limits {
            max_peers: c.max_peers,
            max_criteria_per_peer: c.max_criteria_per_peer,
            timeout: c.subscription_timeout,
        }
    }
}

#[derive(Debug)]
struct PeerEntry {
    last_seen: Instant,
    criteria: HashSet<Criterion>,
}

/// How a request changed the set of subscribed peers (the filter task keeps their connections
/// open while they are subscribed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerChange {
    None,
    Added,
    Removed,
}

/// The subscription table.
#[derive(Debug)]
pub struct Subscriptions {
    peers: HashMap<PeerId, PeerEntry>,
    index: HashMap<Criterion, HashSet<PeerId>>,
    limits: Limits,
}

impl Subscriptions {
    pub fn new(limits: Limits) -> Self {
        Subscriptions {
            peers: HashMap::new(),
            index: HashMap::new(),
            limits,
        }
    }

    fn live(&self, peer: &PeerId, now: Instant) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|e| now.saturating_duration_since(e.last_seen) <= self.limits.timeout)
    }

    /// Adds criteria for `peer` (refreshing it). 503 when the node or the peer is at its cap.
    pub fn subscribe(
        &mut self,
        peer: PeerId,
        pubsub_topic: &str,
        content_topics: &[String],
        now: Instant,
    ) -> Result<PeerChange, Refused> {
        if self.peers.contains_key(&peer) && !self.live(&peer, now) {
            // A lapsed subscription starts afresh.
            self.remove_peer(&peer);
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.limits.max_peers {
            self.expire(now);
            if self.peers.len() >= self.limits.max_peers {
                return Err(Refused::new(
                    Status::SERVICE_UNAVAILABLE,
                    format!(
                        "this node serves its maximum of {} filter subscribers",
                        self.limits.max_peers
                    ),
                ));
            }
        }
        let existing = self.peers.get(&peer);
        let new: HashSet<Criterion> = content_topics
            .iter()
            .map(|c| (pubsub_topic.to_owned(), c.clone()))
            .filter(|c| existing.is_none_or(|e| !e.criteria.contains(c)))
            .collect();
        let held = existing.map_or(0, |e| e.criteria.len());
        if held + new.len() > self.limits.max_criteria_per_peer {
            return Err(Refused::new(
                Status::SERVICE_UNAVAILABLE,
                format!(
                    "subscribing would give this peer {} filter criteria; the limit is {}",
                    held + new.len(),
                    self.limits.max_criteria_per_peer
                ),
            ));
        }
        let change = if existing.is_none() {
            PeerChange::Added
        } else {
            PeerChange::None
        };
        let entry = self.peers.entry(peer).or_insert_with(|| PeerEntry {
            last_seen: now,
            criteria: HashSet::new(),
        });
        entry.last_seen = now;
        for criterion in new {
            self.index
                .entry(criterion.clone())
                .or_default()
                .insert(peer);
            entry.criteria.insert(criterion);
        }
        Ok(change)
    }

    /// Removes criteria (all or nothing). 404 when the peer has no subscription or lacks one of
    /// them.
    pub fn unsubscribe(
        &mut self,
        peer: PeerId,
        pubsub_topic: &str,
        content_topics: &[String],
        now: Instant,
    ) -> Result<PeerChange, Refused> {
        if !self.live(&peer, now) {
            self.remove_peer(&peer);
            return Err(no_subscription());
        }
        let criteria: Vec<Criterion> = content_topics
            .iter()
            .map(|c| (pubsub_topic.to_owned(), c.clone()))
            .collect();
        let Some(entry) = self.peers.get_mut(&peer) else {
            return Err(no_subscription());
        };
        if let Some(missing) = criteria.iter().find(|c| !entry.criteria.contains(*c)) {
            return Err(Refused::new(
                Status::NOT_FOUND,
                // nwaku's words first (clients match them), then which criterion.
                format!(
                    "peer has no subscriptions: not subscribed to content topic {} on {}",
                    missing.1, missing.0
                ),
            ));
        }
        entry.last_seen = now;
        for criterion in &criteria {
            entry.criteria.remove(criterion);
        }
        let now_empty = entry.criteria.is_empty();
        for criterion in &criteria {
            self.unindex(criterion, &peer);
        }
        if now_empty {
            self.peers.remove(&peer);
            return Ok(PeerChange::Removed);
        }
        Ok(PeerChange::None)
    }

    /// Removes every criterion of `peer`. 404 when it has none.
    pub fn unsubscribe_all(&mut self, peer: PeerId, now: Instant) -> Result<PeerChange, Refused> {
        let live = self.live(&peer, now);
        let existed = self.remove_peer(&peer);
        if !live {
            return Err(no_subscription());
        }
        debug_assert!(existed);
        Ok(PeerChange::Removed)
    }

    /// Refreshes `peer`'s subscription. 404 when it has none (or it lapsed).
    pub fn ping(&mut self, peer: PeerId, now: Instant) -> Result<PeerChange, Refused> {
        if !self.live(&peer, now) {
            let existed = self.remove_peer(&peer);
            return if existed {
                Err(Refused::new(
                    Status::NOT_FOUND,
                    "the subscription lapsed; subscribe again",
                ))
            } else {
                Err(no_subscription())
            };
        }
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.last_seen = now;
        }
        Ok(PeerChange::None)
    }

    /// Peers with a live subscription matching a message.
    pub fn matching(&self, pubsub_topic: &str, content_topic: &str, now: Instant) -> Vec<PeerId> {
        // Allocation-free lookup would need a borrowed key type; criteria are short strings.
        let key = (pubsub_topic.to_owned(), content_topic.to_owned());
        self.index
            .get(&key)
            .map(|peers| {
                peers
                    .iter()
                    .filter(|p| self.live(p, now))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops lapsed subscriptions; returns the peers removed.
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let lapsed: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_seen) > self.limits.timeout)
            .map(|(p, _)| *p)
            .collect();
        for peer in &lapsed {
            self.remove_peer(peer);
        }
        lapsed
    }

    /// Removes a peer and its criteria; `true` if it had any.
    pub fn remove_peer(&mut self, peer: &PeerId) -> bool {
        let Some(entry) = self.peers.remove(peer) else {
            return false;
        };
        for criterion in &entry.criteria {
            self.unindex(criterion, peer);
        }
        true
    }

    fn unindex(&mut self, criterion: &Criterion, peer: &PeerId) {
        if let Some(peers) = self.index.get_mut(criterion) {
            peers.remove(peer);
            if peers.is_empty() {
                self.index.remove(criterion);
            }
        }
    }

    /// Whether `peer` has an entry (live or lapsed but not yet swept).
    /// Every live subscriber with its (pubsub topic, content topic) criteria, sorted, for the
    /// REST admin list.
    pub fn snapshot(&self, now: Instant) -> Vec<(PeerId, Vec<Criterion>)> {
        let mut list: Vec<(PeerId, Vec<Criterion>)> = self
            .peers
            .iter()
            .filter(|(peer, _)| self.live(peer, now))
            .map(|(peer, entry)| {
                let mut criteria: Vec<Criterion> = entry.criteria.iter().cloned().collect();
                criteria.sort();
                (*peer, criteria)
            })
            .collect();
        list.sort_by_key(|(peer, _)| peer.to_bytes());
        list
    }

    pub fn contains(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Subscribed peers (including lapsed ones not yet swept).
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The content topics some peer is subscribed to (on any pubsub topic).
    pub fn content_topics(&self) -> HashSet<String> {
        self.index
            .keys()
            .map(|(_, content)| content.clone())
            .collect()
    }

    /// Criteria held by all peers.
    pub fn criteria_count(&self) -> usize {
        self.peers.values().map(|e| e.criteria.len()).sum()
    }
}

fn no_subscription() -> Refused {
    Refused::new(Status::NOT_FOUND, "peer has no subscriptions")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: &str = "/waku/2/rs/1/0";

    fn table(max_peers: usize, max_criteria: usize) -> Subscriptions {
        Subscriptions::new(Limits {
            max_peers,
            max_criteria_per_peer: max_criteria,
            timeout: Duration::from_secs(300),
        })
    }

    fn topics(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn snapshot_lists_live_subscribers_only() {
        let mut s = table(10, 10);
        let now = Instant::now();
        let (old, fresh) = (PeerId::random(), PeerId::random());
        s.subscribe(old, TOPIC, &topics(&["/a/1/x/proto"]), now)
            .unwrap();
        let later = now + Duration::from_secs(200);
        s.subscribe(
            fresh,
            TOPIC,
            &topics(&["/a/1/z/proto", "/a/1/y/proto"]),
            later,
        )
        .unwrap();
        let at = now + Duration::from_secs(400);
        assert_eq!(
            s.snapshot(at),
            vec![(
                fresh,
                vec![
                    (TOPIC.to_owned(), "/a/1/y/proto".to_owned()),
                    (TOPIC.to_owned(), "/a/1/z/proto".to_owned()),
                ]
            )]
        );
    }

    #[test]
    fn subscribe_match_unsubscribe() {
        let mut s = table(10, 10);
        let now = Instant::now();
        let p = PeerId::random();
        assert_eq!(
            s.subscribe(p, TOPIC, &topics(&["/a/1/x/proto", "/a/1/y/proto"]), now),
            Ok(PeerChange::Added)
        );
        assert_eq!(s.matching(TOPIC, "/a/1/x/proto", now), vec![p]);
        assert!(s.matching("/waku/2/rs/1/1", "/a/1/x/proto", now).is_empty());
        assert_eq!(
            s.subscribe(p, TOPIC, &topics(&["/a/1/x/proto"]), now),
            Ok(PeerChange::None),
            "resubscribing is idempotent"
        );
        assert_eq!(s.criteria_count(), 2);
        assert_eq!(
            s.unsubscribe(p, TOPIC, &topics(&["/a/1/x/proto"]), now),
            Ok(PeerChange::None)
        );
        assert!(s.matching(TOPIC, "/a/1/x/proto", now).is_empty());
        assert_eq!(
            s.unsubscribe(p, TOPIC, &topics(&["/a/1/y/proto"]), now),
            Ok(PeerChange::Removed)
        );
        assert_eq!(s.peer_count(), 0);
        assert_eq!(s.ping(p, now).unwrap_err().status, Status::NOT_FOUND);
    }

    #[test]
    fn unsubscribing_an_unknown_criterion_is_404_and_changes_nothing() {
        let mut s = table(10, 10);
        let now = Instant::now();
        let p = PeerId::random();
        s.subscribe(p, TOPIC, &topics(&["/a/1/x/proto"]), now)
            .unwrap();
        let err = s
            .unsubscribe(p, TOPIC, &topics(&["/a/1/x/proto", "/a/1/z/proto"]), now)
            .unwrap_err();
        assert_eq!(err.status, Status::NOT_FOUND);
        assert_eq!(s.matching(TOPIC, "/a/1/x/proto", now), vec![p]);
        let other = PeerId::random();
        assert_eq!(
            s.unsubscribe(other, TOPIC, &topics(&["/a/1/x/proto"]), now)
                .unwrap_err()
                .status,
            Status::NOT_FOUND
        );
        assert_eq!(
            s.unsubscribe_all(other, now).unwrap_err().status,
            Status::NOT_FOUND
        );
        assert_eq!(s.unsubscribe_all(p, now), Ok(PeerChange::Removed));
        assert!(s.matching(TOPIC, "/a/1/x/proto", now).is_empty());
    }

    #[test]
    fn caps_give_503() {
        let mut s = table(1, 2);
        let now = Instant::now();
        let p = PeerId::random();
        s.subscribe(p, TOPIC, &topics(&["/a/1/x/proto", "/a/1/y/proto"]), now)
            .unwrap();
        let err = s
            .subscribe(p, TOPIC, &topics(&["/a/1/z/proto"]), now)
            .unwrap_err();
        assert_eq!(err.status, Status::SERVICE_UNAVAILABLE);
        assert_eq!(s.criteria_count(), 2, "a refused subscribe adds nothing");
        let err = s
            .subscribe(PeerId::random(), TOPIC, &topics(&["/a/1/x/proto"]), now)
            .unwrap_err();
        assert_eq!(err.status, Status::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn subscriptions_lapse_without_refresh_and_pings_refresh_them() {
        let mut s = table(1, 10);
        let start = Instant::now();
        let p = PeerId::random();
        s.subscribe(p, TOPIC, &topics(&["/a/1/x/proto"]), start)
            .unwrap();
        let later = start + Duration::from_secs(200);
        assert_eq!(s.ping(p, later), Ok(PeerChange::None));
        // 200 + 250 s after start but only 250 s after the ping: still live.
        let after_ping = later + Duration::from_secs(250);
        assert_eq!(s.matching(TOPIC, "/a/1/x/proto", after_ping), vec![p]);
        let lapsed = after_ping + Duration::from_secs(60);
        assert!(s.matching(TOPIC, "/a/1/x/proto", lapsed).is_empty());
        assert_eq!(s.ping(p, lapsed).unwrap_err().status, Status::NOT_FOUND);
        assert_eq!(s.peer_count(), 0);
        // A lapsed peer no longer counts against the cap.
        s.subscribe(p, TOPIC, &topics(&["/a/1/x/proto"]), lapsed)
            .unwrap();
        let q = PeerId::random();
        let much_later = lapsed + Duration::from_secs(301);
        assert_eq!(
            s.subscribe(q, TOPIC, &topics(&["/a/1/x/proto"]), much_later),
            Ok(PeerChange::Added),
            "the cap sweeps lapsed peers first"
        );
        assert_eq!(s.expire(much_later), Vec::<PeerId>::new());
        assert_eq!(s.peer_count(), 1);
    }
}
