//! The registration table in memory: every live registration once, indexed for REGISTER
//! (by peer and namespace), DISCOVER (by namespace, in registration order) and expiry.
//!
//! Each registration gets a sequence number when it is stored. Sequence numbers only grow
//! and survive restarts (the store keeps the next one), which gives DISCOVER cookies for
//! free: a cookie is the last sequence number a client has seen, and the next page is what
//! comes after it. Re-registering takes a new number, so a refreshed registration shows up
//! again for clients that poll with a cookie (as with rust-libp2p's server). No cookie state
//! is kept on the server, so cookies cost no memory however many clients page.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use libp2p::PeerId;

use super::record::Flavour;

/// One live registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub namespace: Arc<str>,
    pub peer: PeerId,
    pub flavour: Flavour,
    /// The record as the peer sent it (signed envelope or `PeerInfo`).
    pub record: Box<[u8]>,
    /// The TTL granted, in seconds.
    pub ttl: u64,
    /// Wall-clock expiry, Unix milliseconds (wall clock, because it survives restarts).
    pub expires_at_ms: u64,
}

/// Why a new registration does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The peer already has the most registrations one peer may have.
    Peer { max: u32 },
    /// The table holds the most registrations it may.
    Table { max: u32 },
}

/// What a DISCOVER page filter says about one entry.
pub enum Pick {
    Take,
    Skip,
    /// Stop here (e.g. the response is full); the entry is not consumed.
    Stop,
}

#[derive(Debug, Default, Clone, Copy)]
struct PeerState {
    count: u32,
    /// The flavour of the peer's latest registration: what its client writes, and so reads.
    flavour: Option<Flavour>,
}

#[derive(Debug)]
pub struct Table {
    entries: BTreeMap<u64, Entry>,
    keys: HashMap<(PeerId, Arc<str>), u64>,
    namespaces: HashMap<Arc<str>, BTreeSet<u64>>,
    peers: HashMap<PeerId, PeerState>,
    /// (expires_at_ms, seq)
    expiry: BTreeSet<(u64, u64)>,
    next_seq: u64,
    max_per_peer: u32,
    max_total: u32,
}

impl Table {
    /// An empty table whose first registration gets `next_seq` (at least 1: 0 means "from the
    /// start" in cookies).
    pub fn new(max_per_peer: u32, max_total: u32, next_seq: u64) -> Table {
        Table {
            entries: BTreeMap::new(),
            keys: HashMap::new(),
            namespaces: HashMap::new(),
            peers: HashMap::new(),
            expiry: BTreeSet::new(),
            next_seq: next_seq.max(1),
            max_per_peer,
            max_total,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }

    /// Registrations per namespace.
    pub fn namespace_sizes(&self) -> impl Iterator<Item = (&Arc<str>, usize)> {
        self.namespaces.iter().map(|(ns, seqs)| (ns, seqs.len()))
    }

    /// The sequence number the next registration will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Takes a sequence number for a new registration.
    pub fn allocate_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// The flavour of `peer`'s latest live registration.
    pub fn peer_flavour(&self, peer: &PeerId) -> Option<Flavour> {
        self.peers.get(peer).and_then(|p| p.flavour)
    }

    fn interned(&self, namespace: &str) -> Option<&Arc<str>> {
        self.namespaces.get_key_value(namespace).map(|(k, _)| k)
    }

    /// The registration of `peer` in `namespace`, if any.
    pub fn get(&self, peer: &PeerId, namespace: &str) -> Option<&Entry> {
        let ns = self.interned(namespace)?;
        let seq = self.keys.get(&(*peer, ns.clone()))?;
        self.entries.get(seq)
    }

    /// Whether `peer` may add a registration in `namespace` (replacing its own never needs room).
    pub fn has_room(&self, peer: &PeerId, namespace: &str) -> Result<(), Full> {
        if self.get(peer, namespace).is_some() {
            return Ok(());
        }
        let count = self.peers.get(peer).map(|p| p.count).unwrap_or(0);
        if count >= self.max_per_peer {
            return Err(Full::Peer {
                max: self.max_per_peer,
            });
        }
        if self.entries.len() >= self.max_total as usize {
            return Err(Full::Table {
                max: self.max_total,
            });
        }
        Ok(())
    }

    /// Adds `entry`, replacing the same peer's registration in the same namespace, which is
    /// returned. The caller checked [`Table::has_room`]; `entry.seq` came from
    /// [`Table::allocate_seq`] (or from the store, when loading).
    pub fn insert(&mut self, mut entry: Entry) -> Option<Entry> {
        let replaced = self.remove(&entry.peer, &entry.namespace.clone());
        let ns = match self.interned(&entry.namespace) {
            Some(ns) => ns.clone(),
            None => entry.namespace.clone(),
        };
        entry.namespace = ns.clone();
        self.next_seq = self.next_seq.max(entry.seq + 1);
        self.keys.insert((entry.peer, ns.clone()), entry.seq);
        self.namespaces.entry(ns).or_default().insert(entry.seq);
        let state = self.peers.entry(entry.peer).or_default();
        state.count += 1;
        state.flavour = Some(entry.flavour);
        self.expiry.insert((entry.expires_at_ms, entry.seq));
        self.entries.insert(entry.seq, entry);
        replaced
    }

    /// Removes `peer`'s registration in `namespace`.
    pub fn remove(&mut self, peer: &PeerId, namespace: &str) -> Option<Entry> {
        let ns = self.interned(namespace)?.clone();
        let seq = *self.keys.get(&(*peer, ns))?;
        self.remove_seq(seq)
    }

    fn remove_seq(&mut self, seq: u64) -> Option<Entry> {
        let entry = self.entries.remove(&seq)?;
        self.keys.remove(&(entry.peer, entry.namespace.clone()));
        if let Some(seqs) = self.namespaces.get_mut(&entry.namespace) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.namespaces.remove(&entry.namespace);
            }
        }
        if let Some(state) = self.peers.get_mut(&entry.peer) {
            state.count = state.count.saturating_sub(1);
            if state.count == 0 {
                self.peers.remove(&entry.peer);
            }
        }
        self.expiry.remove(&(entry.expires_at_ms, seq));
        Some(entry)
    }

    /// When the next registration expires (Unix ms).
    pub fn next_expiry(&self) -> Option<u64> {
        self.expiry.first().map(|(at, _)| *at)
    }

    /// Removes and returns up to `max` registrations that expired at or before `now_ms`.
    pub fn pop_expired(&mut self, now_ms: u64, max: usize) -> Vec<Entry> {
        let due: Vec<u64> = self
            .expiry
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(max)
            .map(|(_, seq)| *seq)
            .collect();
        due.into_iter()
            .filter_map(|seq| self.remove_seq(seq))
            .collect()
    }

    /// One DISCOVER page: live registrations in `namespace` (all namespaces when `None`) with
    /// sequence numbers after `after`, in registration order, as `pick` accepts them, at most
    /// `limit`. Returns them with the sequence number to resume after (the new cookie).
    pub fn page(
        &self,
        namespace: Option<&str>,
        after: u64,
        limit: usize,
        now_ms: u64,
        mut pick: impl FnMut(&Entry) -> Pick,
    ) -> (Vec<&Entry>, u64) {
        let start = after.saturating_add(1);
        let seqs: Box<dyn Iterator<Item = u64> + '_> = match namespace {
            Some(ns) => match self.namespaces.get(ns) {
                Some(set) => Box::new(set.range(start..).copied()),
                None => Box::new(std::iter::empty()),
            },
            None => Box::new(self.entries.range(start..).map(|(seq, _)| *seq)),
        };
        let mut out = Vec::new();
        let mut last = after;
        for seq in seqs {
            if out.len() >= limit {
                break;
            }
            let Some(entry) = self.entries.get(&seq) else {
                continue;
            };
            if entry.expires_at_ms <= now_ms {
                last = seq;
                continue;
            }
            match pick(entry) {
                Pick::Take => out.push(entry),
                Pick::Skip => {}
                Pick::Stop => break,
            }
            last = seq;
        }
        (out, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(table: &mut Table, peer: PeerId, ns: &str, expires_at_ms: u64) -> Entry {
        Entry {
            seq: table.allocate_seq(),
            namespace: Arc::from(ns),
            peer,
            flavour: Flavour::Standard,
            record: vec![1, 2, 3].into_boxed_slice(),
            ttl: 60,
            expires_at_ms,
        }
    }

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn re_registration_replaces_without_growing_any_index() {
        let mut t = Table::new(10, 100, 1);
        let p = peer();
        for i in 0..100 {
            let e = entry(&mut t, p, "rs/1/0", 1_000 + i);
            let replaced = t.insert(e);
            assert_eq!(replaced.is_some(), i > 0);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.expiry.len(), 1);
        assert_eq!(t.keys.len(), 1);
        assert_eq!(t.namespaces["rs/1/0"].len(), 1);
        assert_eq!(t.peers[&p].count, 1);
        assert_eq!(t.get(&p, "rs/1/0").unwrap().expires_at_ms, 1_099);
    }

    #[test]
    fn caps_apply_to_new_registrations_only() {
        let mut t = Table::new(2, 3, 1);
        let (a, b) = (peer(), peer());
        for ns in ["x", "y"] {
            let e = entry(&mut t, a, ns, 10_000);
            t.has_room(&a, ns).unwrap();
            t.insert(e);
        }
        assert_eq!(t.has_room(&a, "z"), Err(Full::Peer { max: 2 }));
        assert_eq!(t.has_room(&a, "x"), Ok(()), "replacing needs no room");
        let e = entry(&mut t, b, "x", 10_000);
        t.insert(e);
        assert_eq!(t.has_room(&b, "y"), Err(Full::Table { max: 3 }));
    }

    #[test]
    fn pages_follow_cookies_and_skip_expired_entries() {
        let mut t = Table::new(10, 100, 1);
        let mut peers = Vec::new();
        for i in 0..10u64 {
            let p = peer();
            peers.push(p);
            // every third registration is already expired at t=500
            let expires = if i % 3 == 0 { 400 } else { 10_000 };
            let e = entry(&mut t, p, "ns", expires);
            t.insert(e);
        }
        let other = entry(&mut t, peer(), "other", 10_000);
        t.insert(other);

        let mut seen = Vec::new();
        let mut cookie = 0;
        loop {
            let (page, next) = t.page(Some("ns"), cookie, 3, 500, |_| Pick::Take);
            assert!(page.len() <= 3);
            if page.is_empty() {
                break;
            }
            seen.extend(page.iter().map(|e| e.peer));
            cookie = next;
        }
        let live: Vec<PeerId> = peers
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(seen, live);

        // All namespaces, and a filter that skips.
        let (all, _) = t.page(None, 0, 100, 500, |_| Pick::Take);
        assert_eq!(all.len(), live.len() + 1);
        let (none, last) = t.page(Some("ns"), 0, 100, 500, |_| Pick::Skip);
        assert!(none.is_empty());
        assert_eq!(last, 10, "skipped entries are consumed");
        let (stopped, last) = t.page(Some("ns"), 0, 100, 500, |_| Pick::Stop);
        assert!(stopped.is_empty());
        assert_eq!(
            last, 1,
            "the expired first entry is passed, the stopping one is not"
        );
    }

    #[test]
    fn expiry_pops_due_entries_in_order() {
        let mut t = Table::new(10, 100, 1);
        let p = peer();
        for (ns, at) in [("a", 300), ("b", 100), ("c", 200)] {
            let e = entry(&mut t, p, ns, at);
            t.insert(e);
        }
        assert_eq!(t.next_expiry(), Some(100));
        let popped = t.pop_expired(250, 10);
        let names: Vec<&str> = popped.iter().map(|e| &*e.namespace).collect();
        assert_eq!(names, vec!["b", "c"]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.peers[&p].count, 1);
        assert!(t.pop_expired(250, 10).is_empty());
        t.pop_expired(300, 10);
        assert!(t.is_empty());
        assert!(t.peers.is_empty());
        assert!(t.namespaces.is_empty());
    }
}
