//! The rendezvous server: a dedicated thread that owns the registration [`Table`] and its
//! RocksDB [`Store`], fed by the swarm task through a bounded queue ([`Inbox`]), answering
//! through `Command::Respond`.
//!
//! Request handling, in order: decode → namespace → TTL → peer record (signature, record
//! peer = sender) → [`Policy`] → caps → persist → table → response. A registration is in the
//! table only once its write returned, so what a client was told is stored is stored.
//!
//! Bad input is answered with the spec's status codes and a text, and counted; the
//! connection stays up:
//!
//! | problem | status |
//! |---|---|
//! | namespace missing, empty, over 255 bytes, not UTF-8 | `E_INVALID_NAMESPACE` (100) |
//! | record missing, malformed, badly signed, no addresses; REGISTER body unreadable | `E_INVALID_SIGNED_PEER_RECORD` (101) |
//! | TTL outside `[min_ttl, max_ttl]` | `E_INVALID_TTL` (102) |
//! | cookie unreadable, of another namespace, or not issued here | `E_INVALID_COOKIE` (103) |
//! | record of another peer than the sender; policy refusal | `E_NOT_AUTHORIZED` (200) |
//! | the database write failed | `E_INTERNAL_ERROR` (300) |
//! | per-peer or total cap reached | `E_UNAVAILABLE` (400) |
//! | over the peer's throttle quota, or the server's queue full (the swarm task answers, undecoded) | `E_UNAVAILABLE` (400) |
//! | message unreadable or of no request type | 101 in a REGISTER_RESPONSE (100 in a DISCOVER_RESPONSE when it looks like a DISCOVER) |
//!
//! UNREGISTER has no response (spec); its stream just closes.

use std::{
    collections::HashSet,
    path::Path,
    sync::{mpsc as std_mpsc, Arc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use libp2p::{request_response::ResponseChannel, PeerId};
use prost::Message as _;
use tokio::sync::{mpsc, watch};

use super::{
    metrics::KindLabels,
    policy::{Policy, Verdict},
    proto::{self, MessageType, Status},
    record::{self, Flavour},
    store::{self, Store},
    table::{Entry, Full, Pick, Table},
    Config, Dialect, Metrics, MAX_NAMESPACE_LEN,
};
use crate::{
    health::{Health, Status as HealthStatus},
    swarm::command::Command,
};

/// Requests waiting for the server thread. When it is full the swarm task answers
/// `E_UNAVAILABLE` at once (without decoding), so a flood costs the node no memory.
pub const QUEUE_CAPACITY: usize = 1024;
/// Largest DISCOVER response: what rust-libp2p's codec reads (1 MiB), less room for framing.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024 - 4096;
/// Bytes a registration adds to a response besides its record and namespace.
const REGISTRATION_OVERHEAD: usize = 24;
/// Most registrations expired in one go, so a burst of expiries never stalls requests long.
const EXPIRY_BATCH: usize = 10_000;
/// How often gauges and health are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(2);
/// Longest the thread sleeps before re-checking expiry and shutdown.
const TICK: Duration = Duration::from_millis(250);
/// A database error this recent makes the component `degraded`.
const DB_ERROR_WINDOW: Duration = Duration::from_secs(60);

/// The server's open database failed.
pub type Error = store::Error;

/// Wall-clock now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A request handed from the swarm task to the server thread.
pub struct Inbound {
    pub peer: PeerId,
    pub dialect: Dialect,
    pub request: Vec<u8>,
    pub channel: ResponseChannel<Vec<u8>>,
    pub received: Instant,
}

/// The swarm task's end of the queue into the server thread.
#[derive(Clone)]
pub struct Inbox {
    tx: std_mpsc::SyncSender<Inbound>,
    metrics: Metrics,
}

impl Inbox {
    /// Counts a request the swarm task answered itself.
    pub fn count(&self, kind: &'static str, outcome: &'static str) {
        self.metrics.request(kind, outcome);
    }

    /// Queues a request; gives it back when the queue is full or the server has stopped.
    pub fn offer(&self, inbound: Inbound) -> Result<(), Box<Inbound>> {
        self.tx.try_send(inbound).map_err(|e| match e {
            std_mpsc::TrySendError::Full(i) | std_mpsc::TrySendError::Disconnected(i) => {
                Box::new(i)
            }
        })
    }
}

/// TTL bounds and page size, in the units the wire uses.
#[derive(Debug, Clone, Copy)]
struct Settings {
    min_ttl: u64,
    max_ttl: u64,
    default_ttl: u64,
    max_discover_limit: u64,
}

/// What handling one request produced.
#[derive(Debug)]
pub struct Reply {
    /// `None` for UNREGISTER, which has no response.
    pub response: Option<Vec<u8>>,
    pub kind: &'static str,
    pub outcome: &'static str,
}

/// Which records a DISCOVER client can read, and in what form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// Every signed record as it was registered; go- and nim-libp2p skip flavours they do not
    /// know, Roost reads them all.
    Signed,
    /// rust-libp2p ≤ 0.18 fails a whole response on one record it cannot read: legacy only.
    Legacy,
    /// The original go client reads `PeerInfo` only: every record, converted.
    PeerInfo,
    /// nwaku on `/vac/waku/rendezvous/1.0.0`: `WakuPeerRecord`s only.
    Waku,
}

impl Reader {
    /// A client reads what it writes: the flavour of its own latest registration decides,
    /// and the nwaku protocol reads only nwaku's records.
    fn of(dialect: Dialect, own: Option<Flavour>) -> Reader {
        match (dialect, own) {
            (Dialect::Waku, _) => Reader::Waku,
            (_, Some(Flavour::Legacy)) => Reader::Legacy,
            (_, Some(Flavour::PeerInfo)) => Reader::PeerInfo,
            _ => Reader::Signed,
        }
    }

    fn reads(self, flavour: Flavour) -> bool {
        match self {
            Reader::Signed => flavour != Flavour::PeerInfo,
            Reader::Legacy => flavour == Flavour::Legacy,
            Reader::Waku => flavour == Flavour::Waku,
            Reader::PeerInfo => true,
        }
    }
}

type Refusal = (Status, String);

/// The server state: table, store, policy. Used by the thread ([`Runner`]); also directly by
/// tests and benchmarks.
pub struct Server {
    table: Table,
    store: Store,
    policy: Arc<dyn Policy>,
    settings: Settings,
    metrics: Metrics,
    health: Health,
    db_errors: u64,
    last_db_error: Option<(Instant, String)>,
    labelled: HashSet<String>,
}

impl Server {
    /// Opens the database under `data_dir` and loads the live registrations.
    pub fn open(
        config: &Config,
        data_dir: &Path,
        metrics: Metrics,
        health: Health,
        policy: Arc<dyn Policy>,
    ) -> Result<Server, Error> {
        let (store, loaded) = Store::open(&data_dir.join(store::DIR), now_ms())?;
        let mut table = Table::new(
            config.max_registrations_per_peer,
            config.max_registrations,
            loaded.next_seq,
        );
        let count = loaded.entries.len();
        for entry in loaded.entries {
            table.insert(entry);
        }
        tracing::info!(
            registrations = count,
            expired = loaded.expired,
            unreadable = loaded.unreadable,
            took_ms = loaded.took.as_millis() as u64,
            "rendezvous registrations loaded"
        );
        metrics.expirations.inc_by(loaded.expired as u64);
        let mut server = Server {
            table,
            store,
            policy,
            settings: Settings {
                min_ttl: config.min_ttl.as_secs(),
                max_ttl: config.max_ttl.as_secs(),
                default_ttl: config.default_ttl.as_secs(),
                max_discover_limit: u64::from(config.max_discover_limit),
            },
            metrics,
            health,
            db_errors: 0,
            last_db_error: None,
            labelled: HashSet::new(),
        };
        server.refresh_gauges();
        Ok(server)
    }

    /// Live registrations.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Starts the server thread's loop in a [`Runner`]; the [`Inbox`] goes to the swarm task.
    pub fn start(self, commands: mpsc::Sender<Command>) -> (Inbox, Runner) {
        let (tx, rx) = std_mpsc::sync_channel(QUEUE_CAPACITY);
        (
            Inbox {
                tx,
                metrics: self.metrics.clone(),
            },
            Runner {
                server: self,
                inbox: rx,
                commands,
            },
        )
    }

    /// Handles one request from `peer` as of `now_ms`.
    pub fn handle(&mut self, peer: PeerId, dialect: Dialect, request: &[u8], now_ms: u64) -> Reply {
        let message = match proto::Message::decode(request) {
            Ok(m) => m,
            Err(e) => return malformed(request, format!("malformed message: {e}")),
        };
        // proto3 writers (go-libp2p-rendezvous) leave out a zero `type`: absent is REGISTER.
        let kind = MessageType::from_i32(message.r#type.unwrap_or(0));
        match kind {
            Some(MessageType::Register) => {
                match self.register(peer, message.register.as_deref(), now_ms) {
                    Ok(ttl) => Reply {
                        response: Some(proto::register_response(Status::Ok, "", Some(ttl))),
                        kind: "register",
                        outcome: Status::Ok.label(),
                    },
                    Err((status, text)) => {
                        tracing::debug!(%peer, %status, %text, "REGISTER refused");
                        Reply {
                            response: Some(proto::register_response(status, &text, None)),
                            kind: "register",
                            outcome: status.label(),
                        }
                    }
                }
            }
            Some(MessageType::Discover) => {
                match self.discover(peer, dialect, message.discover.as_deref(), now_ms) {
                    Ok((registrations, cookie)) => Reply {
                        response: Some(proto::discover_response(
                            Status::Ok,
                            "",
                            registrations,
                            Some(cookie),
                        )),
                        kind: "discover",
                        outcome: Status::Ok.label(),
                    },
                    Err((status, text)) => {
                        tracing::debug!(%peer, %status, %text, "DISCOVER refused");
                        Reply {
                            response: Some(proto::discover_response(
                                status,
                                &text,
                                Vec::new(),
                                None,
                            )),
                            kind: "discover",
                            outcome: status.label(),
                        }
                    }
                }
            }
            Some(MessageType::Unregister) => Reply {
                response: None,
                kind: "unregister",
                outcome: match self.unregister(peer, message.unregister.as_deref()) {
                    Ok(outcome) => outcome,
                    Err((status, text)) => {
                        tracing::debug!(%peer, %status, %text, "UNREGISTER refused");
                        status.label()
                    }
                },
            },
            Some(other) => malformed(
                request,
                format!("a {other:?} is not a request; send REGISTER, UNREGISTER or DISCOVER"),
            ),
            None => malformed(
                request,
                format!(
                    "message type {} is not a rendezvous request type",
                    message.r#type.unwrap_or(0)
                ),
            ),
        }
    }

    fn register(&mut self, peer: PeerId, body: Option<&[u8]>, now_ms: u64) -> Result<u64, Refusal> {
        let body = body.ok_or_else(|| {
            (
                Status::InvalidSignedPeerRecord,
                "REGISTER has no register field".to_owned(),
            )
        })?;
        let reg = proto::Register::decode(body).map_err(|e| {
            (
                Status::InvalidSignedPeerRecord,
                format!("malformed REGISTER: {e}"),
            )
        })?;
        let namespace = namespace(reg.ns.as_deref())?;
        let s = self.settings;
        let ttl = reg.ttl.unwrap_or(s.default_ttl);
        if ttl < s.min_ttl || ttl > s.max_ttl {
            return Err((
                Status::InvalidTtl,
                format!(
                    "TTL {ttl}s is outside this point's bounds [{}s, {}s]",
                    s.min_ttl, s.max_ttl
                ),
            ));
        }
        let bytes = reg.signed_peer_record.unwrap_or_default();
        let record =
            record::verify(&bytes).map_err(|e| (Status::InvalidSignedPeerRecord, e.to_string()))?;
        if record.peer != peer {
            return Err((
                Status::NotAuthorized,
                format!(
                    "the record is for peer {} but the request came from {peer}; a peer may only register itself",
                    record.peer
                ),
            ));
        }
        if let Verdict::Deny(why) = self.policy.may_register(&peer, namespace) {
            return Err((Status::NotAuthorized, why));
        }
        self.table.has_room(&peer, namespace).map_err(|full| match full {
            Full::Peer { max } => (
                Status::Unavailable,
                format!("this peer already has {max} registrations, the most this point keeps per peer; unregister some first"),
            ),
            Full::Table { max } => (
                Status::Unavailable,
                format!("this point holds its maximum of {max} registrations; try another point"),
            ),
        })?;
        let replaced = self.table.get(&peer, namespace).map(|e| e.seq);
        let entry = Entry {
            seq: self.table.allocate_seq(),
            namespace: Arc::from(namespace),
            peer,
            flavour: record.flavour,
            record: bytes.into_boxed_slice(),
            ttl,
            expires_at_ms: now_ms.saturating_add(ttl.saturating_mul(1000)),
        };
        if let Err(e) = self.store.put(&entry, replaced, self.table.next_seq()) {
            self.db_error(&e);
            return Err((
                Status::InternalError,
                format!("cannot store the registration: {e}"),
            ));
        }
        self.metrics
            .registrations_accepted
            .get_or_create(&super::metrics::FlavourLabels {
                flavour: record.flavour.label(),
            })
            .inc();
        self.table.insert(entry);
        Ok(ttl)
    }

    fn discover(
        &self,
        peer: PeerId,
        dialect: Dialect,
        body: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<(Vec<proto::Register>, Vec<u8>), Refusal> {
        // An absent body is an empty Discover: every namespace, default limit, no cookie.
        let d = proto::Discover::decode(body.unwrap_or_default())
            .map_err(|e| (Status::InvalidNamespace, format!("malformed DISCOVER: {e}")))?;
        let ns = match d.ns.as_deref() {
            None | Some([]) => None,
            some => Some(namespace(some)?),
        };
        if let Verdict::Deny(why) = self.policy.may_discover(&peer, ns) {
            return Err((Status::NotAuthorized, why));
        }
        let limit = match d.limit {
            None | Some(0) => self.settings.max_discover_limit,
            Some(l) => l.min(self.settings.max_discover_limit),
        };
        let after = match d.cookie.as_deref() {
            None | Some([]) => 0,
            Some(cookie) => self.read_cookie(cookie, ns)?,
        };
        let reader = Reader::of(dialect, self.table.peer_flavour(&peer));
        let mut size = 0usize;
        let (entries, last) = self.table.page(ns, after, limit as usize, now_ms, |e| {
            if !reader.reads(e.flavour) {
                return Pick::Skip;
            }
            let add = e.record.len() + e.namespace.len() + REGISTRATION_OVERHEAD;
            if size + add > MAX_RESPONSE_BYTES {
                return Pick::Stop;
            }
            size += add;
            Pick::Take
        });
        let registrations = entries
            .into_iter()
            .filter_map(|e| {
                let record = match reader {
                    Reader::PeerInfo => record::to_peer_info(e.flavour, &e.record)?,
                    _ => e.record.to_vec(),
                };
                Some(proto::Register {
                    ns: Some(e.namespace.as_bytes().to_vec()),
                    signed_peer_record: Some(record),
                    ttl: Some(e.expires_at_ms.saturating_sub(now_ms).div_ceil(1000).max(1)),
                })
            })
            .collect();
        Ok((registrations, cookie(last, ns)))
    }

    /// The sequence number in a cookie this point issued for `ns`.
    fn read_cookie(&self, cookie: &[u8], ns: Option<&str>) -> Result<u64, Refusal> {
        let invalid = |text: String| (Status::InvalidCookie, text);
        let (seq, cookie_ns) = cookie
            .split_first_chunk::<8>()
            .map(|(seq, rest)| (u64::from_be_bytes(*seq), rest))
            .ok_or_else(|| {
                invalid("the cookie is shorter than 8 bytes; discover without a cookie".into())
            })?;
        if cookie_ns != ns.unwrap_or_default().as_bytes() {
            return Err(invalid(format!(
                "the cookie is for namespace {:?}, not {:?}; discover without a cookie",
                String::from_utf8_lossy(cookie_ns),
                ns.unwrap_or_default()
            )));
        }
        if seq >= self.table.next_seq() {
            return Err(invalid(
                "the cookie was not issued by this point; discover without a cookie".into(),
            ));
        }
        Ok(seq)
    }

    fn unregister(&mut self, peer: PeerId, body: Option<&[u8]>) -> Result<&'static str, Refusal> {
        let u = proto::Unregister::decode(body.unwrap_or_default()).map_err(|e| {
            (
                Status::InvalidNamespace,
                format!("malformed UNREGISTER: {e}"),
            )
        })?;
        let ns = namespace(u.ns.as_deref())?;
        let Some(entry) = self.table.remove(&peer, ns) else {
            return Ok("not_registered");
        };
        if let Err(e) = self.store.delete([entry.seq]) {
            // The registration is gone from the table; on disk it lingers until it expires.
            self.db_error(&e);
        }
        Ok(Status::Ok.label())
    }

    /// Removes registrations whose TTL ran out by `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let mut total = 0;
        loop {
            let expired = self.table.pop_expired(now_ms, EXPIRY_BATCH);
            if expired.is_empty() {
                break;
            }
            total += expired.len();
            if let Err(e) = self.store.delete(expired.iter().map(|e| e.seq)) {
                // They are out of the table; the next load drops them from disk anyway.
                self.db_error(&e);
            }
            if expired.len() < EXPIRY_BATCH {
                break;
            }
        }
        if total > 0 {
            self.metrics.expirations.inc_by(total as u64);
            tracing::debug!(expired = total, "rendezvous registrations expired");
        }
        total
    }

    fn db_error(&mut self, e: &rocksdb::Error) {
        self.db_errors += 1;
        tracing::warn!(error = %e, "rendezvous database write failed");
        self.last_db_error = Some((Instant::now(), e.to_string()));
    }

    /// Updates the table gauges and the `rendezvous` health component.
    pub fn refresh_gauges(&mut self) {
        self.metrics.set_table(
            self.table.len(),
            self.table.namespace_sizes().map(|(ns, n)| (&**ns, n)),
            &mut self.labelled,
        );
        let recent_error = self
            .last_db_error
            .as_ref()
            .filter(|(at, _)| at.elapsed() < DB_ERROR_WINDOW);
        let status = if recent_error.is_some() {
            HealthStatus::Degraded
        } else {
            HealthStatus::Ok
        };
        self.health.set(
            "rendezvous",
            status,
            serde_json::json!({
                "registrations": self.table.len(),
                "namespaces": self.table.namespace_count(),
                "db_errors": self.db_errors,
                "last_db_error": recent_error.map(|(_, e)| e.clone()),
            }),
        );
    }
}

/// The answer to a request that cannot be read as a request.
fn malformed(request: &[u8], text: String) -> Reply {
    let response = match proto::peek_type(request) {
        Some(MessageType::Discover) => {
            proto::discover_response(Status::InvalidNamespace, &text, Vec::new(), None)
        }
        _ => proto::register_response(Status::InvalidSignedPeerRecord, &text, None),
    };
    Reply {
        response: Some(response),
        kind: "unknown",
        outcome: "malformed",
    }
}

/// A valid namespace: 1 to 255 bytes of UTF-8.
fn namespace(raw: Option<&[u8]>) -> Result<&str, Refusal> {
    let invalid = |text: String| (Status::InvalidNamespace, text);
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return Err(invalid("the namespace is missing or empty".into()));
    }
    if raw.len() > MAX_NAMESPACE_LEN {
        return Err(invalid(format!(
            "the namespace is {} bytes long; at most {MAX_NAMESPACE_LEN} are allowed",
            raw.len()
        )));
    }
    std::str::from_utf8(raw).map_err(|_| invalid("the namespace is not UTF-8".into()))
}

/// A cookie: the last sequence number returned (8 bytes, big-endian), then the namespace —
/// the layout rust-libp2p's client parses.
fn cookie(seq: u64, ns: Option<&str>) -> Vec<u8> {
    let ns = ns.unwrap_or_default().as_bytes();
    let mut out = Vec::with_capacity(8 + ns.len());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(ns);
    out
}

/// The server thread's loop.
pub struct Runner {
    server: Server,
    inbox: std_mpsc::Receiver<Inbound>,
    commands: mpsc::Sender<Command>,
}

impl Runner {
    /// Serves requests, expires registrations and refreshes gauges until shutdown or until
    /// the swarm task drops the [`Inbox`]. Runs on a blocking thread.
    pub fn run(mut self, shutdown: watch::Receiver<bool>) {
        let mut next_gauges = Instant::now() + GAUGE_INTERVAL;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = now_ms();
            if self.server.table.next_expiry().is_some_and(|at| at <= now) {
                self.server.expire(now);
            }
            if Instant::now() >= next_gauges {
                self.server.refresh_gauges();
                next_gauges = Instant::now() + GAUGE_INTERVAL;
            }
            let until_expiry = self
                .server
                .table
                .next_expiry()
                .map(|at| Duration::from_millis(at.saturating_sub(now)))
                .unwrap_or(TICK);
            match self.inbox.recv_timeout(until_expiry.min(TICK)) {
                Ok(inbound) => self.serve(inbound),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        tracing::debug!("rendezvous server thread stopped");
    }

    fn serve(&mut self, inbound: Inbound) {
        let reply = self
            .server
            .handle(inbound.peer, inbound.dialect, &inbound.request, now_ms());
        let metrics = &self.server.metrics;
        metrics.request(reply.kind, reply.outcome);
        metrics
            .request_seconds
            .get_or_create(&KindLabels { kind: reply.kind })
            .observe(inbound.received.elapsed().as_secs_f64());
        if let Some(response) = reply.response {
            // A full command channel makes this thread wait: back-pressure, nothing dropped.
            let _ = self.commands.blocking_send(Command::Respond {
                protocol: inbound.dialect.protocol(),
                channel: inbound.channel,
                response,
            });
        }
        // UNREGISTER: the channel is dropped, which closes the stream without a response.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rendezvous::{policy::ReservedNamespaces, proto::Register as _Register};
    use libp2p::{identity::Keypair, Multiaddr};
    use prometheus_client::registry::Registry;

    struct Fixture {
        server: Server,
        _dir: tempfile::TempDir,
    }

    fn config() -> Config {
        Config {
            min_ttl: Duration::from_secs(10),
            max_registrations_per_peer: 3,
            max_registrations: 5,
            max_discover_limit: 4,
            ..Config::default()
        }
    }

    fn open(dir: &Path, config: &Config) -> Server {
        let metrics = Metrics::register(&mut Registry::default());
        Server::open(
            config,
            dir,
            metrics,
            Health::default(),
            Arc::new(ReservedNamespaces),
        )
        .unwrap()
    }

    fn fixture() -> Fixture {
        fixture_with(config())
    }

    fn fixture_with(config: Config) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        Fixture {
            server: open(dir.path(), &config),
            _dir: dir,
        }
    }

    fn addr() -> Multiaddr {
        "/ip4/127.0.0.1/tcp/1".parse().unwrap()
    }

    fn register(key: &Keypair, ns: &str, ttl: Option<u64>) -> Vec<u8> {
        let record = record::standard_envelope(key, vec![addr()]).unwrap();
        proto::register_request(ns, record, ttl)
    }

    fn status_of(reply: &Reply) -> (Status, Option<String>, Option<u64>) {
        let m = proto::Message::decode(&reply.response.as_ref().unwrap()[..]).unwrap();
        let body = proto::RegisterResponse::decode(&m.register_response.unwrap()[..]).unwrap();
        (
            Status::from_i32(body.status.unwrap()).unwrap(),
            body.status_text,
            body.ttl,
        )
    }

    fn discover_of(reply: &Reply) -> proto::DiscoverResponse {
        let m = proto::Message::decode(&reply.response.as_ref().unwrap()[..]).unwrap();
        assert_eq!(m.r#type, Some(MessageType::DiscoverResponse as i32));
        proto::DiscoverResponse::decode(&m.discover_response.unwrap()[..]).unwrap()
    }

    fn peers_in(resp: &proto::DiscoverResponse) -> Vec<PeerId> {
        resp.registrations
            .iter()
            .map(|r: &_Register| {
                record::verify(r.signed_peer_record.as_deref().unwrap())
                    .unwrap()
                    .peer
            })
            .collect()
    }

    #[test]
    fn register_then_discover_with_default_and_explicit_ttl() {
        let mut f = fixture();
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let r = f.server.handle(
            peer,
            Dialect::Libp2p,
            &register(&key, "rs/1/0", None),
            1_000,
        );
        assert_eq!(status_of(&r), (Status::Ok, None, Some(7200)));
        let r = f.server.handle(
            peer,
            Dialect::Libp2p,
            &register(&key, "rs/1/1", Some(30)),
            1_000,
        );
        assert_eq!(status_of(&r).2, Some(30));
        let d = f.server.handle(
            peer,
            Dialect::Libp2p,
            &proto::discover_request(Some("rs/1/1"), None, None),
            11_000,
        );
        let resp = discover_of(&d);
        assert_eq!(peers_in(&resp), vec![peer]);
        assert_eq!(resp.registrations[0].ttl, Some(20), "remaining TTL");
        assert_eq!(resp.status, Some(0));
    }

    #[test]
    fn bad_requests_get_their_status_codes() {
        let mut f = fixture();
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let cases: Vec<(Vec<u8>, Status)> = vec![
            (register(&key, "", None), Status::InvalidNamespace),
            (
                register(&key, &"x".repeat(256), None),
                Status::InvalidNamespace,
            ),
            (register(&key, "ns", Some(5)), Status::InvalidTtl),
            (register(&key, "ns", Some(73 * 3600)), Status::InvalidTtl),
            (
                proto::register_request("ns", vec![1, 2, 3], None),
                Status::InvalidSignedPeerRecord,
            ),
            (
                register(&Keypair::generate_ed25519(), "ns", None),
                Status::NotAuthorized,
            ),
            (
                register(&key, "/roost/f/relay", None),
                Status::NotAuthorized,
            ),
            (vec![0xff, 0xff, 0xff], Status::InvalidSignedPeerRecord),
        ];
        for (request, want) in cases {
            let reply = f.server.handle(peer, Dialect::Libp2p, &request, 0);
            let (got, text, _) = status_of(&reply);
            assert_eq!(got, want, "text: {text:?}");
            assert!(text.is_some_and(|t| !t.is_empty()), "{want} needs a text");
        }
        // Non-UTF-8 namespace, hand-built.
        let body = proto::Register {
            ns: Some(vec![0xc3, 0x28]),
            signed_peer_record: Some(record::standard_envelope(&key, vec![addr()]).unwrap()),
            ttl: None,
        };
        let msg = proto::Message {
            r#type: Some(0),
            register: Some(body.encode_to_vec()),
            ..Default::default()
        };
        let reply = f
            .server
            .handle(peer, Dialect::Libp2p, &msg.encode_to_vec(), 0);
        assert_eq!(status_of(&reply).0, Status::InvalidNamespace);
        assert!(f.server.is_empty(), "nothing was registered");

        // Cookie problems.
        let bad_cookies = [
            vec![1u8, 2],
            {
                let mut c = 0u64.to_be_bytes().to_vec();
                c.extend_from_slice(b"other");
                c
            },
            u64::MAX.to_be_bytes().to_vec(),
        ];
        for c in bad_cookies {
            let d = f.server.handle(
                peer,
                Dialect::Libp2p,
                &proto::discover_request(Some("ns"), None, Some(c)),
                0,
            );
            assert_eq!(discover_of(&d).status, Some(Status::InvalidCookie as i32));
        }
    }

    #[test]
    fn caps_refuse_new_namespaces_but_allow_refreshes() {
        let mut f = fixture();
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        for ns in ["a", "b", "c"] {
            let r = f
                .server
                .handle(peer, Dialect::Libp2p, &register(&key, ns, None), 0);
            assert_eq!(status_of(&r).0, Status::Ok);
        }
        let r = f
            .server
            .handle(peer, Dialect::Libp2p, &register(&key, "d", None), 0);
        let (status, text, _) = status_of(&r);
        assert_eq!(status, Status::Unavailable);
        assert!(text.unwrap().contains("per peer"));
        // Refreshing an existing one replaces it: no growth.
        for _ in 0..10 {
            let r = f
                .server
                .handle(peer, Dialect::Libp2p, &register(&key, "a", None), 0);
            assert_eq!(status_of(&r).0, Status::Ok);
        }
        assert_eq!(f.server.len(), 3);
        // Total cap (5).
        let other = Keypair::generate_ed25519();
        for (ns, want) in [
            ("a", Status::Ok),
            ("b", Status::Ok),
            ("c", Status::Unavailable),
        ] {
            let r = f.server.handle(
                other.public().to_peer_id(),
                Dialect::Libp2p,
                &register(&other, ns, None),
                0,
            );
            assert_eq!(status_of(&r).0, want);
        }
    }

    #[test]
    fn discover_pages_with_cookies_and_caps_the_limit() {
        let mut f = fixture_with(Config {
            max_registrations: 100,
            ..config()
        });
        let keys: Vec<Keypair> = (0..10).map(|_| Keypair::generate_ed25519()).collect();
        for k in &keys {
            let r = f.server.handle(
                k.public().to_peer_id(),
                Dialect::Libp2p,
                &register(k, "ns", None),
                0,
            );
            assert_eq!(status_of(&r).0, Status::Ok);
        }
        let asker = keys[0].public().to_peer_id();
        let mut cookie = None;
        let mut seen = Vec::new();
        loop {
            let d = f.server.handle(
                asker,
                Dialect::Libp2p,
                &proto::discover_request(Some("ns"), Some(1000), cookie.clone()),
                0,
            );
            let resp = discover_of(&d);
            assert!(
                resp.registrations.len() <= 4,
                "limit capped at max_discover_limit"
            );
            if resp.registrations.is_empty() {
                break;
            }
            seen.extend(peers_in(&resp));
            cookie = resp.cookie;
        }
        let want: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
        assert_eq!(seen, want);
        // A smaller requested limit is honoured.
        let d = f.server.handle(
            asker,
            Dialect::Libp2p,
            &proto::discover_request(Some("ns"), Some(2), None),
            0,
        );
        assert_eq!(discover_of(&d).registrations.len(), 2);
    }

    #[test]
    fn readers_get_records_they_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        c.max_registrations = 100;
        let mut server = open(dir.path(), &c);
        let std_key = Keypair::generate_ed25519();
        let legacy_key = Keypair::generate_ed25519();
        let info_key = Keypair::generate_ed25519();
        let legacy = libp2p::core::PeerRecord::new(&legacy_key, vec![addr()])
            .unwrap()
            .into_signed_envelope()
            .into_protobuf_encoding();
        let info = proto::PeerInfo {
            id: Some(info_key.public().to_peer_id().to_bytes()),
            addrs: vec![addr().to_vec()],
        }
        .encode_to_vec();
        for (key, bytes) in [
            (
                &std_key,
                record::standard_envelope(&std_key, vec![addr()]).unwrap(),
            ),
            (&legacy_key, legacy),
            (&info_key, info),
        ] {
            let r = server.handle(
                key.public().to_peer_id(),
                Dialect::Libp2p,
                &proto::register_request("ns", bytes, None),
                0,
            );
            assert_eq!(status_of(&r).0, Status::Ok);
        }
        let ask = |server: &mut Server, who: PeerId, dialect| {
            let d = server.handle(
                who,
                dialect,
                &proto::discover_request(Some("ns"), None, None),
                0,
            );
            let resp = discover_of(&d);
            resp.registrations
                .iter()
                .map(|r| record::verify(r.signed_peer_record.as_deref().unwrap()).unwrap())
                .map(|r| (r.peer, r.flavour))
                .collect::<Vec<_>>()
        };
        let (s, l, i) = (
            std_key.public().to_peer_id(),
            legacy_key.public().to_peer_id(),
            info_key.public().to_peer_id(),
        );
        // A standard client (and an unknown one) gets every signed record.
        assert_eq!(
            ask(&mut server, s, Dialect::Libp2p),
            vec![(s, Flavour::Standard), (l, Flavour::Legacy)]
        );
        assert_eq!(ask(&mut server, PeerId::random(), Dialect::Libp2p).len(), 2);
        // A rust-libp2p client only legacy records.
        assert_eq!(
            ask(&mut server, l, Dialect::Libp2p),
            vec![(l, Flavour::Legacy)]
        );
        // An old go client everything, as PeerInfo.
        assert_eq!(
            ask(&mut server, i, Dialect::Libp2p),
            vec![
                (s, Flavour::PeerInfo),
                (l, Flavour::PeerInfo),
                (i, Flavour::PeerInfo)
            ]
        );
        // nwaku only WakuPeerRecords (none here).
        assert!(ask(&mut server, s, Dialect::Waku).is_empty());
    }

    #[test]
    fn registrations_survive_a_restart_and_expire_on_load_and_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let now = now_ms();
        {
            let mut server = open(dir.path(), &config());
            for (ns, ttl) in [("short", 10), ("long", 3600)] {
                let r = server.handle(peer, Dialect::Libp2p, &register(&key, ns, Some(ttl)), now);
                assert_eq!(status_of(&r).0, Status::Ok);
            }
            let r = server.handle(
                peer,
                Dialect::Libp2p,
                &register(&key, "gone", Some(10)),
                now,
            );
            assert_eq!(status_of(&r).0, Status::Ok);
            server.handle(
                peer,
                Dialect::Libp2p,
                &proto::unregister_request("gone"),
                now,
            );
            assert_eq!(server.len(), 2);
        }
        let mut server = open(dir.path(), &config());
        assert_eq!(server.len(), 2, "both live registrations reloaded");
        assert!(server.table.get(&peer, "gone").is_none());
        assert_eq!(server.expire(now + 11_000), 1);
        assert!(server.table.get(&peer, "short").is_none());
        drop(server);
        let server = open(dir.path(), &config());
        assert_eq!(server.len(), 1);
        assert!(server.table.get(&peer, "long").is_some());
        assert_eq!(server.table.peer_flavour(&peer), Some(Flavour::Standard));
    }
}

/// Property test: a REGISTER of any valid record (either flavour a libp2p client writes, on
/// either protocol) comes back, verified and unchanged, from a libp2p DISCOVER of its namespace;
/// nwaku's protocol, which reads only `WakuPeerRecord`s, is never sent it.
#[cfg(test)]
mod props {
    use libp2p::{identity::Keypair, Multiaddr};
    use prometheus_client::registry::Registry;
    use proptest::{collection::vec, option, prelude::*};

    use super::*;
    use crate::rendezvous::{client, policy::ReservedNamespaces};

    fn address() -> impl Strategy<Value = Multiaddr> {
        (any::<[u8; 4]>(), 1u16.., any::<bool>()).prop_map(|(ip, port, ws)| {
            let ip = std::net::Ipv4Addr::from(ip);
            let text = if ws {
                format!("/ip4/{ip}/tcp/{port}/ws")
            } else {
                format!("/ip4/{ip}/tcp/{port}")
            };
            text.parse().unwrap()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn registrations_round_trip_through_discover(
            ns in "[a-z0-9/]{1,40}",
            addresses in vec(address(), 1..6),
            ttl in option::of(60u64..=7200),
            legacy in any::<bool>(),
            waku in any::<bool>(),
        ) {
            prop_assume!(!crate::rendezvous::policy::is_reserved(&ns));
            let dir = tempfile::tempdir().unwrap();
            let mut server = Server::open(
                &Config::default(),
                dir.path(),
                Metrics::register(&mut Registry::default()),
                Health::default(),
                Arc::new(ReservedNamespaces),
            )
            .unwrap();
            let key = Keypair::generate_ed25519();
            let peer = key.public().to_peer_id();
            let record = if legacy {
                libp2p::core::PeerRecord::new(&key, addresses.clone())
                    .unwrap()
                    .into_signed_envelope()
                    .into_protobuf_encoding()
            } else {
                record::standard_envelope(&key, addresses.clone()).unwrap()
            };
            let dialect = if waku { Dialect::Waku } else { Dialect::Libp2p };
            let now = 1_700_000_000_000;
            let reply = server.handle(peer, dialect, &proto::register_request(&ns, record.clone(), ttl), now);
            let granted = client::read_register_response(&reply.response.unwrap()).unwrap();
            prop_assert_eq!(granted, ttl.unwrap_or(Config::default().default_ttl.as_secs()));

            let asker = PeerId::random();
            let discover = proto::discover_request(Some(&ns), None, None);
            let reply = server.handle(asker, Dialect::Waku, &discover, now + 1);
            let (found, _) = client::read_discover_response(&reply.response.unwrap()).unwrap();
            prop_assert!(found.is_empty());
            let reply = server.handle(asker, Dialect::Libp2p, &discover, now + 1);
            let (found, cookie) = client::read_discover_response(&reply.response.unwrap()).unwrap();
            prop_assert!(cookie.is_some());
            prop_assert_eq!(found.len(), 1);
            let found = &found[0];
            prop_assert_eq!(&found.namespace, &ns);
            let verified = found.record.as_ref().unwrap();
            prop_assert_eq!(verified.peer, peer);
            prop_assert_eq!(&verified.addresses, &addresses);
        }
    }
}
