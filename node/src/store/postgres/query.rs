//! Store v3 queries answered from the PostgreSQL archive, with the semantics of the RocksDB
//! archive's [`Archive::query`](crate::store::Archive::query), so that the store protocol cannot
//! tell the engines apart:
//! - a page holds at most `limit` messages in ascending (timestamp, hash) order whichever the
//!   direction; a backward query takes the newest ones;
//! - the cursor is the hash of the page's last message in query order, given only when more
//!   remain; a cursor that is not in the archive is [`QueryError::InvalidCursor`];
//! - time ranges include their start and exclude their end (store v3);
//! - with data asked for, a page stops early at the response byte budget (the cursor then
//!   points at the last message sent); both engines assemble pages with one function.
//!
//! Hash lookups go through `messages_lookup` and join `messages` on (timestamp, hash), so every
//! probe of the partitioned table carries its timestamp and touches one partition (nwaku's
//! lesson: a lookup by hash alone scans every partition). The RocksDB archive ends a page of a
//! pubsub-topic-only query early after a scan budget; this engine has an index for that query
//! and fills the page, so only the page boundaries of such queries can differ.

use tokio_postgres::{types::ToSql, Client};

use crate::store::{
    archive::{assemble_page, Page, QueryError},
    keys::{self, Position},
    rpc::{Filter, Query},
};

/// Builds a statement's parameter list: each value pushed gives its `$n`.
#[derive(Default)]
struct Params(Vec<Box<dyn ToSql + Sync + Send>>);

impl Params {
    fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.0.push(Box::new(value));
        format!("${}", self.0.len())
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.0
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// The clauses of a time range: start included, end excluded.
fn time_range(
    start: Option<i64>,
    end: Option<i64>,
    clauses: &mut Vec<String>,
    params: &mut Params,
) {
    if let Some(start) = start {
        clauses.push(format!("m.timestamp >= {}", params.push(start)));
    }
    if let Some(end) = end {
        clauses.push(format!("m.timestamp < {}", params.push(end)));
    }
}

fn read_error(e: tokio_postgres::Error) -> QueryError {
    QueryError::Read(format!("PostgreSQL: {}", super::describe(&e)))
}

/// Where `hash` is in the archive, if it is.
async fn position_of(
    client: &Client,
    hash: &crate::message::MessageHash,
) -> Result<Option<Position>, QueryError> {
    let row = client
        .query_opt(
            "SELECT timestamp FROM messages_lookup WHERE hash = $1",
            &[&&hash.0[..]],
        )
        .await
        .map_err(read_error)?;
    row.map(|r| r.try_get::<_, i64>(0).map(|ts| Position::new(ts, hash)))
        .transpose()
        .map_err(read_error)
}

/// Answers one validated query.
pub async fn query(client: &Client, query: &Query) -> Result<Page, QueryError> {
    let cursor = match &query.cursor {
        None => None,
        Some(hash) => Some(
            position_of(client, hash)
                .await?
                .ok_or(QueryError::InvalidCursor(*hash))?,
        ),
    };
    let mut params = Params::default();
    let mut clauses: Vec<String> = Vec::new();
    // Content filters: the (pubsub topic, content topic) conditions, one page branch each.
    let mut topic_pairs: Vec<String> = Vec::new();
    let from = match &query.filter {
        Filter::Content {
            pubsub_topics,
            content_topics,
            time_start,
            time_end,
        } => {
            if pubsub_topics.is_empty() || content_topics.is_empty() {
                // Nothing this node archives matches (see `rpc::nothing_archived`).
                return Ok(Page::default());
            }
            time_range(*time_start, *time_end, &mut clauses, &mut params);
            // One branch per (pubsub topic, content topic), each with `=`: PostgreSQL (before
            // 17) reads the topics index in order only under `=`, not `= ANY(…)`, and without
            // that order a page sorts every match in its window (p99 8x in the store bench).
            for pubsub in pubsub_topics {
                let pubsub = params.push(pubsub.clone());
                for content in content_topics {
                    let content = params.push(content.clone());
                    topic_pairs.push(format!(
                        "m.pubsub_topic = {pubsub} AND m.content_topic = {content}"
                    ));
                }
            }
            "messages m"
        }
        Filter::All {
            pubsub_topic,
            time_start,
            time_end,
        } => {
            time_range(*time_start, *time_end, &mut clauses, &mut params);
            if let Some(topic) = pubsub_topic {
                clauses.push(format!("m.pubsub_topic = {}", params.push(topic.clone())));
            }
            "messages m"
        }
        Filter::Hashes { hashes, scope } => {
            if hashes.is_empty() {
                return Ok(Page::default());
            }
            time_range(scope.time_start, scope.time_end, &mut clauses, &mut params);
            let hashes: Vec<Vec<u8>> = hashes.iter().map(|h| h.0.to_vec()).collect();
            clauses.push(format!("l.hash = ANY({})", params.push(hashes)));
            if let Some(topic) = &scope.pubsub_topic {
                clauses.push(format!("m.pubsub_topic = {}", params.push(topic.clone())));
            }
            if !scope.content_topics.is_empty() {
                clauses.push(format!(
                    "m.content_topic = ANY({})",
                    params.push(scope.content_topics.clone())
                ));
            }
            "messages_lookup l JOIN messages m ON m.timestamp = l.timestamp AND m.hash = l.hash"
        }
    };
    if let Some(c) = cursor {
        let (ts, hash) = (params.push(c.ts), params.push(c.hash.to_vec()));
        let op = if query.forward { ">" } else { "<" };
        clauses.push(format!("(m.timestamp, m.hash) {op} ({ts}, {hash})"));
    }
    let order = if query.forward { "ASC" } else { "DESC" };
    // One more than the page, to learn whether more remain.
    let want = params.push(
        i64::try_from(query.limit)
            .unwrap_or(i64::MAX)
            .saturating_add(1),
    );
    let columns = if query.include_data {
        "m.timestamp, m.hash, m.pubsub_topic, m.message"
    } else {
        "m.timestamp, m.hash"
    };
    let page_of = |extra: Option<&str>| {
        let all: Vec<&str> = clauses.iter().map(String::as_str).chain(extra).collect();
        let filter = if all.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", all.join(" AND "))
        };
        format!(
            "SELECT {columns} FROM {from} {filter} \
             ORDER BY m.timestamp {order}, m.hash {order} LIMIT {want}"
        )
    };
    let sql = if topic_pairs.is_empty() {
        page_of(None)
    } else {
        // Each branch reads its topics' index in page order and stops after a page; the union
        // of those pages holds the page.
        let branches: Vec<String> = topic_pairs
            .iter()
            .map(|pair| format!("({})", page_of(Some(pair))))
            .collect();
        format!(
            "SELECT {columns} FROM ({}) m ORDER BY m.timestamp {order}, m.hash {order} LIMIT {want}",
            branches.join(" UNION ALL ")
        )
    };
    let rows = client
        .query(sql.as_str(), &params.refs())
        .await
        .map_err(read_error)?;

    let more = rows.len() > query.limit;
    let mut found = Vec::with_capacity(rows.len().min(query.limit));
    for row in rows.iter().take(query.limit) {
        let ts: i64 = row.try_get(0).map_err(read_error)?;
        let hash: &[u8] = row.try_get(1).map_err(read_error)?;
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| QueryError::Read(format!("a stored hash of {} bytes", hash.len())))?;
        let record = if query.include_data {
            let pubsub_topic: &str = row.try_get(2).map_err(read_error)?;
            let message: &[u8] = row.try_get(3).map_err(read_error)?;
            Some(keys::encode_record(pubsub_topic, message))
        } else {
            None
        };
        found.push((Position { ts, hash }, record));
    }
    Ok(assemble_page(found, more, query))
}
