-- acode-sync local schema, migration 0003: the link's own state and the kind
-- of the last failure.
--
-- Apply with `acode-sync migrate --local` (opening a workspace applies it too),
-- or by hand: sqlite3 .agent/workspace.db < 0003_edges.sql (a second run
-- changes nothing).
--
-- One-row tables beside sync_state rather than columns of it: SQLite has no
-- ADD COLUMN IF NOT EXISTS, and a second run by hand must not fail.

BEGIN IMMEDIATE;

-- `status` tells being offline (the link: nobody answers; changes queue and go
-- when it does) from a remote that answers and refuses us (the set-up: a
-- password, database, role, grant or schema to fix; mode `error`). The kind is
-- recorded when the failure is, not read back out of the message's code:
-- 'link', 'setup', or NULL for anything else (an item's failure) and for no
-- error. Written with sync_state.last_error, in the same transaction.
CREATE TABLE IF NOT EXISTS sync_last_error (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    kind  TEXT CHECK (kind IN ('link', 'setup'))
);
INSERT OR IGNORE INTO sync_last_error (id) VALUES (1);

-- `last_contact_at` is the last time the server answered (a connection made, a
-- batch or a page acknowledged), even in a cycle that then lost its link;
-- `down_since` the first link failure after it (NULL while the link works).
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
