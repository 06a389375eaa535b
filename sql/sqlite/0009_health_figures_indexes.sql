-- acode-sync local schema, migration 0009: indexes for the health figures.
--
-- Apply with `acode-sync migrate --local` (or any command: a workspace gets the
-- migrations it lacks when opened), or by hand:
--     sqlite3 .agent/workspace.db < 0009_health_figures_indexes.sql
-- (a second run changes nothing).
--
-- `status` counts the rows synced today and in the last 24 hours, and `queue
-- --json` (and `queue --errors`) how many open rows carry an error. Without
-- an index each of those reads every row of the outbox: with a million open
-- rows, about 0.2 s per count for the synced ones, 35 ms for ten thousand
-- failed ones. With these, each is a range of a small index.
--
-- Both are partial and hold no row the capture triggers write: a captured row
-- is Pending without an error, so a capture only tests the two conditions.
-- The entries are written by the mover (an acknowledged row becomes Synced, a
-- failed one gets its error) and removed by retention.

BEGIN IMMEDIATE;

CREATE INDEX IF NOT EXISTS sync_outbox_synced ON sync_outbox (synced_at)
    WHERE status = 'Synced';

CREATE INDEX IF NOT EXISTS sync_outbox_open_errors ON sync_outbox (status)
    WHERE status IN ('Pending', 'Failed') AND last_error IS NOT NULL;

INSERT OR IGNORE INTO sync_migrations (name, applied_at)
VALUES ('0009_health_figures_indexes', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

COMMIT;
