-- acode-sync local schema, migration 0007: the file gives freed pages back.
--
-- Apply with `acode-sync migrate --local` (or any command: a workspace gets the
-- migrations it lacks when opened), or by hand:
--     sqlite3 .agent/workspace.db < 0007_incremental_vacuum.sql
-- (a second run compacts the file once more and ends in the same state).
--
-- Retention deletes history, but SQLite keeps the freed pages in the file.
-- With auto_vacuum = INCREMENTAL the engine hands them back after each prune
-- (PRAGMA incremental_vacuum, in short slices). A new workspace gets the mode
-- before its first table (acode_sync.workspace.connect); an existing file only
-- changes mode through a VACUUM, which rewrites the whole file and cannot run
-- inside a transaction: it runs here, once, before the migration is recorded,
-- so a crash during it leaves the migration to run again. It holds the write
-- lock for the whole rewrite (docs/BENCHMARKS.md, issue 9, has its cost).

PRAGMA auto_vacuum = INCREMENTAL;
VACUUM;

BEGIN IMMEDIATE;

INSERT OR IGNORE INTO sync_migrations (name, applied_at)
VALUES ('0007_incremental_vacuum', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

COMMIT;
