-- acode-sync local schema, migration 0006: an index that counts the queue.
--
-- Apply with `acode-sync migrate --local` (or any command), or by hand:
--     sqlite3 .agent/workspace.db < 0006_queue_figures_index.sql
-- (a second run changes nothing).
--
-- The queue's figures (pending / waiting / failed, by entity type, the next
-- retry) are counts over the open outbox rows. Without this index each count
-- reads every open row from the table (2 s for a million rows); with it, each
-- is a range of one index and the next retry a single seek (about 80 ms for a
-- million rows). Its key is an expression, status || ':' || entity_type, that
-- only those counts name (outbox.py): an index on the plain columns would be
-- taken by the planner for other queries of the outbox (without ANALYZE it
-- preferred it to sync_outbox_entity in the pull's rebase, and to
-- sync_outbox_open for the claim's ORDER BY seq).

BEGIN IMMEDIATE;

CREATE INDEX IF NOT EXISTS sync_outbox_open_state
    ON sync_outbox ((status || ':' || entity_type), next_retry_at)
    WHERE status IN ('Pending', 'Failed');

INSERT OR IGNORE INTO sync_migrations (name, applied_at)
VALUES ('0006_queue_figures_index', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

COMMIT;
