-- acode-sync local schema, migration 0004: history keeps no payloads.
--
-- Apply with `acode-sync migrate --local` (or any command: a workspace gets the
-- migrations it lacks when opened), or by hand:
--     sqlite3 .agent/workspace.db < 0004_lean_history.sql
-- (a second run rebuilds the two tables again and ends in the same state).
--
-- An acknowledged outbox row needs its key, entity and status for the
-- retention period, not its payload; a change of this device's own that the
-- pull brings back needs its seq and version, not its data (the server sends
-- none, acode_sync.pull with a device, server migration 0003). Both payload
-- columns become nullable; an open outbox row must still carry one.
--
-- SQLite cannot drop a NOT NULL in place: each table is rebuilt. The capture
-- triggers name sync_outbox; legacy_alter_table keeps the rename from checking
-- them while the old table is gone (they are valid again once it is renamed).

PRAGMA legacy_alter_table = ON;
BEGIN IMMEDIATE;

CREATE TABLE sync_outbox_lean (
    seq              INTEGER PRIMARY KEY,
    idempotency_key  TEXT NOT NULL,
    entity_type      TEXT NOT NULL CHECK (entity_type IN ('chat', 'message')),
    entity_id        TEXT NOT NULL,
    op               TEXT NOT NULL DEFAULT 'upsert' CHECK (op IN ('upsert', 'withdraw')),
    base_version     INTEGER NOT NULL,
    payload          TEXT CHECK (payload IS NOT NULL OR status NOT IN ('Pending', 'Failed')),
    status           TEXT NOT NULL DEFAULT 'Pending'
                     CHECK (status IN ('Pending', 'Synced', 'Failed', 'Conflict', 'Superseded')),
    retry_count      INTEGER NOT NULL DEFAULT 0,
    next_retry_at    TEXT,
    last_error       TEXT,
    changed_at       TEXT NOT NULL,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    synced_at        TEXT
);
INSERT INTO sync_outbox_lean (seq, idempotency_key, entity_type, entity_id, op, base_version,
                              payload, status, retry_count, next_retry_at, last_error,
                              changed_at, created_at, synced_at)
SELECT seq, idempotency_key, entity_type, entity_id, op, base_version,
       CASE WHEN status IN ('Synced', 'Superseded') THEN NULL ELSE payload END,
       status, retry_count, next_retry_at, last_error, changed_at, created_at, synced_at
FROM sync_outbox;
DROP TABLE sync_outbox;
ALTER TABLE sync_outbox_lean RENAME TO sync_outbox;
-- Only open rows are indexed: synced history leaves the indexes small.
CREATE INDEX sync_outbox_open ON sync_outbox (seq)
    WHERE status IN ('Pending', 'Failed');
CREATE INDEX sync_outbox_entity ON sync_outbox (entity_id, seq)
    WHERE status IN ('Pending', 'Failed');

CREATE TABLE sync_inbox_lean (
    seq              INTEGER PRIMARY KEY,          -- the server's change seq
    idempotency_key  TEXT NOT NULL,
    entity_type      TEXT NOT NULL CHECK (entity_type IN ('chat', 'message')),
    entity_id        TEXT NOT NULL,
    op               TEXT NOT NULL DEFAULT 'upsert' CHECK (op IN ('upsert', 'withdraw')),
    version          INTEGER NOT NULL,
    origin_device    TEXT,
    changed_at       TEXT NOT NULL,
    payload          TEXT,                         -- NULL: this device's own change
    status           TEXT NOT NULL DEFAULT 'Pending'
                     CHECK (status IN ('Pending', 'Applied', 'Skipped', 'Conflict')),
    received_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    applied_at       TEXT
);
INSERT INTO sync_inbox_lean (seq, idempotency_key, entity_type, entity_id, op, version,
                             origin_device, changed_at, payload, status, received_at,
                             applied_at)
SELECT seq, idempotency_key, entity_type, entity_id, op, version, origin_device, changed_at,
       payload, status, received_at, applied_at
FROM sync_inbox;
DROP TABLE sync_inbox;
ALTER TABLE sync_inbox_lean RENAME TO sync_inbox;
-- Only rows still to apply are indexed.
CREATE INDEX sync_inbox_pending ON sync_inbox (seq) WHERE status = 'Pending';

INSERT OR IGNORE INTO sync_migrations (name, applied_at)
VALUES ('0004_lean_history', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

COMMIT;
PRAGMA legacy_alter_table = OFF;
