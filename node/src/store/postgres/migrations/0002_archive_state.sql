-- Roost store archive, schema version 2: facts about the archive as a whole, shared by every
-- node on the database. `cutoff`: Unix ns before which retention dropped everything (messages
-- older than it are refused, so a late copy cannot bring a dropped partition back).
CREATE TABLE roost_archive_state (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
