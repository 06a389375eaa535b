-- acode-sync local schema, migration 0005: the checksum of each migration file
-- applied by the runner.
--
-- Apply with `acode-sync migrate --local` (or any command), or by hand:
--     sqlite3 .agent/workspace.db < 0005_migration_checksums.sql
-- (a second run changes nothing).
--
-- Released migrations are never edited. The runner records the sha256 of each
-- file it applies here and refuses to go on when a recorded one ships changed.
-- A table of its own rather than a column of sync_migrations: SQLite has no
-- ADD COLUMN IF NOT EXISTS, and this file must be safe to run twice by hand.
-- A migration applied by hand (or before this one) has no row: unknown, accepted.

BEGIN IMMEDIATE;

CREATE TABLE IF NOT EXISTS sync_migration_checksums (
    name    TEXT PRIMARY KEY NOT NULL,
    sha256  TEXT NOT NULL
);

INSERT OR IGNORE INTO sync_migrations (name, applied_at)
VALUES ('0005_migration_checksums', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

COMMIT;
