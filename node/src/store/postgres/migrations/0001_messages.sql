-- Roost store archive, schema version 1 (applied by node/src/store/postgres/mod.rs).
-- Timestamps are Unix nanoseconds, hashes the 32-byte Waku message hash; every order is
-- (timestamp, hash), the order store v3 pages in, and the cursor is that pair.

-- One row per message, partitioned by time so retention drops whole partitions (never row
-- DELETEs). The node creates the partitions ahead of time (`roost_partitions`).
CREATE TABLE messages (
    timestamp     BIGINT NOT NULL,
    hash          BYTEA  NOT NULL CHECK (octet_length(hash) = 32),
    pubsub_topic  TEXT   NOT NULL,
    content_topic TEXT   NOT NULL,
    -- The encoded WakuMessage, as the RocksDB archive keeps it.
    message       BYTEA  NOT NULL,
    PRIMARY KEY (timestamp, hash)
) PARTITION BY RANGE (timestamp);

-- Content-filtered queries: one range per (pubsub topic, content topic) in page order.
CREATE INDEX messages_topics ON messages (pubsub_topic, content_topic, timestamp, hash);
-- Pubsub-only queries.
CREATE INDEX messages_pubsub ON messages (pubsub_topic, timestamp, hash);

-- Hash -> timestamp, so a hash lookup (and the insert-once check across nodes) reads one index
-- entry instead of probing every partition (nwaku's `messages_lookup` lesson). Not
-- partitioned: a unique constraint on the hash alone cannot span partitions keyed by time.
CREATE TABLE messages_lookup (
    hash      BYTEA  PRIMARY KEY CHECK (octet_length(hash) = 32),
    timestamp BIGINT NOT NULL
);
CREATE INDEX messages_lookup_timestamp ON messages_lookup (timestamp);
