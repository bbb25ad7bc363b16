-- Roost store archive, schema version 3: messages and bytes per partition, kept by every
-- insert in the same transaction, so gauges, `/health` and capacity retention read a few rows
-- instead of counting the archive (which at fleet rates means scanning gigabytes).
-- `partition_start`: the partition's first timestamp (Unix ns, a multiple of one hour).
CREATE TABLE roost_partition_counts (
    partition_start BIGINT PRIMARY KEY,
    messages        BIGINT NOT NULL,
    bytes           BIGINT NOT NULL
);

-- What is archived already (an archive from schema 2).
INSERT INTO roost_partition_counts (partition_start, messages, bytes)
SELECT timestamp - (((timestamp % 3600000000000) + 3600000000000) % 3600000000000),
       count(*), COALESCE(sum(octet_length(message)), 0)
FROM messages
GROUP BY 1;
