-- acode-sync local schema, migration 0003: the link's own state.
--
-- Apply with `acode-sync migrate --local` (or `init`, which is idempotent), or
-- by hand: sqlite3 .agent/workspace.db < 0003_edges.sql (a second run changes
-- nothing).
--
-- `sync_link.last_contact_at` is the last time the server answered (a
-- connection made, a batch or a page acknowledged), even in a cycle that then
-- lost its link; `down_since` the first link failure after it (NULL while the
-- link works). A table of its own, not sync_state columns: SQLite has no
-- ADD COLUMN IF NOT EXISTS, and this file must be safe to run twice.

BEGIN IMMEDIATE;

CREATE TABLE IF NOT EXISTS sync_link (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    last_contact_at  TEXT,
    down_since       TEXT
);

-- A workspace of an earlier version: its last complete push or pull is the
-- best known contact.
INSERT OR IGNORE INTO sync_link (id, last_contact_at)
SELECT 1, nullif(max(coalesce(last_push_at, ''), coalesce(last_pull_at, '')), '')
FROM sync_state WHERE id = 1;
INSERT OR IGNORE INTO sync_link (id) VALUES (1);

INSERT OR IGNORE INTO sync_migrations (name, applied_at)
VALUES ('0003_edges', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

COMMIT;
