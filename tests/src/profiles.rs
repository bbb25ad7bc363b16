//! Honest client profiles: what real light clients do to a service node, driven with Roost's
//! own [`Client`] the way js-waku (@waku/sdk 0.0.36) issues the requests. The throttle tests
//! check that the shipped quotas never refuse them; the throttle benchmark (B9) times them and
//! prints them next to the attacker profiles.
//!
//! Request counts follow js-waku:
//! - light push: one request per message (`lightPush.send`), no batching;
//! - store: one request per page (`store.queryGenerator` follows the cursor back to back);
//! - filter: `filter.subscribe(decoders)` sends one SUBSCRIBE per pubsub topic carrying all of
//!   that shard's content topics (it does not split further; the node takes up to 100 per
//!   request), and each subscription pings its peer once per `keepAliveIntervalMs` (60 s).
//!   Re-subscribing (unsubscribe, then subscribe) is one UNSUBSCRIBE and one SUBSCRIBE per
//!   pubsub topic. Autosharding puts an app's content topics (same application and version)
//!   on one shard, so a 100-topic subscription costs 1 request and each minute of
//!   re-subscribing 3; an app calling `subscribe` once per topic costs 100 requests up front.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use libp2p::Multiaddr;
use roost_node::{
    client::Client,
    filter::{RequestType, Status as FilterStatus},
    lightpush::Version,
    message::WakuMessage,
    store::rpc::StoreQueryRequest,
};

/// How an honest profile fared: every request, whether it was served, how long it took.
#[derive(Debug, Default, Clone)]
pub struct ProfileRun {
    pub requests: u64,
    /// Refused by the throttle (429, or the connection refused before any answer).
    pub refused: u64,
    /// Requests that failed for any other reason (a bug, not a quota).
    pub failed: u64,
    /// One line per refused or failed request, for assertion messages.
    pub problems: Vec<String>,
    pub latencies: Vec<Duration>,
}

impl ProfileRun {
    /// Adds another run's figures (e.g. one client of many).
    pub fn merge(&mut self, other: ProfileRun) {
        self.requests += other.requests;
        self.refused += other.refused;
        self.failed += other.failed;
        self.problems.extend(other.problems);
        self.latencies.extend(other.latencies);
    }

    /// The `p` quantile (0..=1) of the latencies, in milliseconds; NaN without any.
    pub fn quantile_ms(&self, p: f64) -> f64 {
        let mut l = self.latencies.clone();
        if l.is_empty() {
            return f64::NAN;
        }
        l.sort_unstable();
        let i = ((l.len() as f64 - 1.0) * p).round() as usize;
        l[i.min(l.len() - 1)].as_secs_f64() * 1e3
    }

    fn record(&mut self, started: Instant, outcome: Outcome, what: impl FnOnce() -> String) {
        self.requests += 1;
        self.latencies.push(started.elapsed());
        match outcome {
            Outcome::Served => {}
            Outcome::Refused => {
                self.refused += 1;
                self.problems.push(format!("refused: {}", what()));
            }
            Outcome::Failed(why) => {
                self.failed += 1;
                self.problems.push(format!("failed: {} ({why})", what()));
            }
        }
    }
}

enum Outcome {
    Served,
    Refused,
    Failed(String),
}

/// Light pushes `count` messages on `content_topic`, one every `interval` (zero: as fast as
/// the client goes, each push waiting for the previous answer, like an outbox resent in a
/// loop).
pub async fn light_pushes(
    client: &Client,
    addr: &Multiaddr,
    content_topic: &str,
    count: usize,
    interval: Duration,
) -> ProfileRun {
    let mut run = ProfileRun::default();
    let mut tick = (!interval.is_zero()).then(|| tokio::time::interval(interval));
    for i in 0..count {
        if let Some(t) = tick.as_mut() {
            t.tick().await;
        }
        let message = WakuMessage::new(content_topic, format!("honest push {i}").into_bytes());
        let started = Instant::now();
        let outcome = match client.light_push(addr, Version::V3, None, &message).await {
            Ok(reply) if reply.is_success() => Outcome::Served,
            Ok(reply) if reply.status.0 == 429 => Outcome::Refused,
            Ok(reply) => Outcome::Failed(format!("{reply:?}")),
            Err(e) => Outcome::from_error(e.to_string()),
        };
        run.record(started, outcome, || format!("light push {i}"));
    }
    run
}

impl Outcome {
    /// A request that got no answer. The node refuses a throttled or banned peer's
    /// connection (before or right after the handshake), which the client sees as a denied,
    /// reset or closed connection; anything else is a failure.
    fn from_error(error: String) -> Outcome {
        let refused = ["denied", "refused", "banned", "reset", "closed"];
        if refused.iter().any(|w| error.to_lowercase().contains(w)) {
            Outcome::Refused
        } else {
            Outcome::Failed(error)
        }
    }
}

/// A history sync: `pages` store queries of `page_size` on `content_topic` back to back, each
/// continuing from the previous page's cursor (js-waku's `queryGenerator`). The store should
/// hold at least `pages × page_size` messages on that topic.
pub async fn store_pages(
    client: &Client,
    addr: &Multiaddr,
    pubsub_topic: &str,
    content_topic: &str,
    pages: usize,
    page_size: u64,
) -> ProfileRun {
    let mut run = ProfileRun::default();
    let mut cursor = None;
    for page in 0..pages {
        let request = StoreQueryRequest::new(roost_node::client::request_id())
            .content(pubsub_topic, [content_topic])
            .forward(false)
            .limit(page_size)
            .cursor(cursor);
        let started = Instant::now();
        let outcome = match client.store_query(addr, &request).await {
            Ok(r) if r.code() == 200 => {
                cursor = r.cursor();
                Outcome::Served
            }
            Ok(r) if r.code() == 429 => Outcome::Refused,
            Ok(r) => Outcome::Failed(format!("{} {}", r.code(), r.desc())),
            Err(e) => Outcome::from_error(e.to_string()),
        };
        run.record(started, outcome, || format!("store page {page}"));
    }
    run
}

/// `count` content topics of one app, grouped by the pubsub topic autosharding puts them on
/// (as js-waku does: one subscription per pubsub topic).
pub fn topics_by_shard(app: &str, count: usize) -> BTreeMap<String, Vec<String>> {
    let relay = roost_node::Config::default().relay;
    let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..count {
        let topic = format!("/{app}/1/topic-{i}/proto");
        let shard = relay
            .autoshard(&topic)
            .map(|s| s.to_string())
            .unwrap_or_else(|e| panic!("{topic} is a valid content topic: {e}"));
        shards.entry(shard).or_default().push(topic);
    }
    shards
}

/// A filter subscription to `shards` (from [`topics_by_shard`]): one SUBSCRIBE per pubsub
/// topic (or, with `one_call_per_topic`, per content topic), then `minutes` rounds of what js-waku sends in a minute of re-subscribing (one
/// UNSUBSCRIBE, one SUBSCRIBE and one keep-alive PING per pubsub topic). With `minute` zero the
/// rounds run back to back: fewer refills than the real pace, so a quota that admits it
/// compressed admits it in real time too.
pub async fn filter_resubscribes(
    client: &Client,
    addr: &Multiaddr,
    shards: &BTreeMap<String, Vec<String>>,
    one_call_per_topic: bool,
    minutes: usize,
    minute: Duration,
) -> ProfileRun {
    let mut run = ProfileRun::default();
    for (shard, topics) in shards {
        let calls: Vec<&[String]> = if one_call_per_topic {
            topics.iter().map(std::slice::from_ref).collect()
        } else {
            vec![topics.as_slice()]
        };
        for call in calls {
            filter_request(client, addr, &mut run, RequestType::Subscribe, shard, call).await;
        }
    }
    for _ in 0..minutes {
        if !minute.is_zero() {
            tokio::time::sleep(minute).await;
        }
        for (shard, topics) in shards {
            filter_request(
                client,
                addr,
                &mut run,
                RequestType::Unsubscribe,
                shard,
                topics,
            )
            .await;
            filter_request(
                client,
                addr,
                &mut run,
                RequestType::Subscribe,
                shard,
                topics,
            )
            .await;
            filter_request(client, addr, &mut run, RequestType::Ping, shard, &[]).await;
        }
    }
    run
}

async fn filter_request(
    client: &Client,
    addr: &Multiaddr,
    run: &mut ProfileRun,
    kind: RequestType,
    shard: &str,
    topics: &[String],
) {
    let pubsub = (kind != RequestType::Ping).then_some(shard);
    let started = Instant::now();
    let outcome = match client.filter(addr, kind, pubsub, topics).await {
        Ok(reply) if reply.status == FilterStatus::OK => Outcome::Served,
        Ok(reply) if reply.status == FilterStatus::TOO_MANY_REQUESTS => Outcome::Refused,
        Ok(reply) => Outcome::Failed(format!("{reply:?}")),
        Err(e) => Outcome::from_error(e.to_string()),
    };
    run.record(started, outcome, || format!("filter {kind:?} on {shard}"));
}
