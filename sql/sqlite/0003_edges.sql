-- acode-sync local schema, migration 0003: the kind of the last failure.
--
-- Apply with `acode-sync migrate --local` (opening a workspace applies it too),
-- or by hand: sqlite3 .agent/workspace.db < 0003_edges.sql (a second run
-- changes nothing).
--
-- `status` tells being offline (the link: nobody answers; changes queue and go
-- when it does) from a remote that answers and refuses us (the set-up: a
-- password, database, role, grant or schema to fix; mode `error`). The kind is
-- recorded when the failure is, not read back out of the message's code.
-- It is a one-row table beside sync_state rather than a column of it: SQLite
-- has no ADD COLUMN IF NOT EXISTS, and a second run by hand must not fail.

BEGIN IMMEDIATE;

-- The kind of sync_state.last_error: 'link', 'setup', or NULL for anything
-- else (an item's failure) and for no error. Written with last_error, in the
-- same transaction.
CREATE TABLE IF NOT EXISTS sync_last_error (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    kind  TEXT CHECK (kind IN ('link', 'setup'))
);
INSERT OR IGNORE INTO sync_last_error (id) VALUES (1);

INSERT OR IGNORE INTO sync_migrations (name, applied_at)
VALUES ('0003_edges', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

COMMIT;
