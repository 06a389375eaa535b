-- acode-sync local schema, migration 0001.
--
-- Apply with `acode-sync migrate --local`, or by hand:
--     sqlite3 .agent/workspace.db < 0001_local_schema.sql
-- Every statement is IF NOT EXISTS, so a second run by hand changes nothing.
-- Times are UTC ISO-8601 with milliseconds: strftime('%Y-%m-%dT%H:%M:%fZ', 'now').

BEGIN IMMEDIATE;

CREATE TABLE IF NOT EXISTS sync_migrations (
    name        TEXT PRIMARY KEY,
    applied_at  TEXT NOT NULL
);

-- One row. `applying` is the echo guard: the apply of a remote change raises it
-- inside its own transaction and lowers it before COMMIT, and every capture
-- trigger tests it, so remote applies never come back as outbox rows.
CREATE TABLE IF NOT EXISTS sync_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    applying      INTEGER NOT NULL DEFAULT 0 CHECK (applying IN (0, 1)),
    paused        INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    pull_cursor   INTEGER NOT NULL DEFAULT 0,
    last_push_at  TEXT,
    last_pull_at  TEXT,
    last_error    TEXT,
    last_error_at TEXT
);
INSERT OR IGNORE INTO sync_state (id) VALUES (1);

CREATE TABLE IF NOT EXISTS chats (
    id           TEXT PRIMARY KEY NOT NULL,
    title        TEXT NOT NULL DEFAULT '',
    privacy      TEXT NOT NULL DEFAULT 'FULL'
                 CHECK (privacy IN ('FULL', 'REDACTED', 'LOCAL_ONLY')),
    version      INTEGER NOT NULL DEFAULT 0,
    sync_status  TEXT NOT NULL DEFAULT 'Pending'
                 CHECK (sync_status IN ('Pending', 'Synced', 'Conflict', 'Failed')),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    deleted_at   TEXT
);

CREATE TABLE IF NOT EXISTS messages (
    id           TEXT PRIMARY KEY NOT NULL,
    chat_id      TEXT NOT NULL REFERENCES chats (id),
    role         TEXT NOT NULL,
    content      TEXT NOT NULL DEFAULT '',
    privacy      TEXT NOT NULL DEFAULT 'FULL'
                 CHECK (privacy IN ('FULL', 'REDACTED', 'LOCAL_ONLY')),
    version      INTEGER NOT NULL DEFAULT 0,
    sync_status  TEXT NOT NULL DEFAULT 'Pending'
                 CHECK (sync_status IN ('Pending', 'Synced', 'Conflict', 'Failed')),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    deleted_at   TEXT
);
CREATE INDEX IF NOT EXISTS messages_chat ON messages (chat_id, created_at);

-- The outbox. `seq` orders it (ULIDs made in one millisecond are unordered, so
-- the key is only an idempotency key). No AUTOINCREMENT and no local UNIQUE on
-- the key: each costs every captured write an extra page write, and neither
-- buys anything here (a new row always takes max(seq) + 1; 80 random bits do
-- not collide; the server's per-owner unique index is the one that counts). `op` is 'upsert', or 'withdraw' for the
-- last change of an entity that became LOCAL_ONLY. Status: Pending, Synced,
-- Failed, Conflict (the server had moved on; see sync_conflicts), Superseded
-- (a newer row of the same entity carried it).
CREATE TABLE IF NOT EXISTS sync_outbox (
    seq              INTEGER PRIMARY KEY,
    idempotency_key  TEXT NOT NULL,
    entity_type      TEXT NOT NULL CHECK (entity_type IN ('chat', 'message')),
    entity_id        TEXT NOT NULL,
    op               TEXT NOT NULL DEFAULT 'upsert' CHECK (op IN ('upsert', 'withdraw')),
    base_version     INTEGER NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'Pending'
                     CHECK (status IN ('Pending', 'Synced', 'Failed', 'Conflict', 'Superseded')),
    retry_count      INTEGER NOT NULL DEFAULT 0,
    next_retry_at    TEXT,
    last_error       TEXT,
    changed_at       TEXT NOT NULL,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    synced_at        TEXT
);
-- Only open rows are indexed: synced history leaves the indexes small.
CREATE INDEX IF NOT EXISTS sync_outbox_open ON sync_outbox (seq)
    WHERE status IN ('Pending', 'Failed');
CREATE INDEX IF NOT EXISTS sync_outbox_entity ON sync_outbox (entity_id, seq)
    WHERE status IN ('Pending', 'Failed');

-- Changes pulled from the server, written with the new cursor in one
-- transaction, then applied and marked.
CREATE TABLE IF NOT EXISTS sync_inbox (
    seq              INTEGER PRIMARY KEY,          -- the server's change seq
    idempotency_key  TEXT NOT NULL,
    entity_type      TEXT NOT NULL CHECK (entity_type IN ('chat', 'message')),
    entity_id        TEXT NOT NULL,
    op               TEXT NOT NULL DEFAULT 'upsert' CHECK (op IN ('upsert', 'withdraw')),
    version          INTEGER NOT NULL,
    origin_device    TEXT,
    changed_at       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'Pending'
                     CHECK (status IN ('Pending', 'Applied', 'Skipped', 'Conflict')),
    received_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    applied_at       TEXT
);
-- Only rows still to apply are indexed.
CREATE INDEX IF NOT EXISTS sync_inbox_pending ON sync_inbox (seq) WHERE status = 'Pending';

-- Every conflict, with both sides; the losing side is never lost.
CREATE TABLE IF NOT EXISTS sync_conflicts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_type      TEXT NOT NULL CHECK (entity_type IN ('chat', 'message')),
    entity_id        TEXT NOT NULL,
    detected_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    detected_by      TEXT NOT NULL CHECK (detected_by IN ('push', 'pull')),
    policy           TEXT NOT NULL,
    winner           TEXT NOT NULL CHECK (winner IN ('local', 'remote')),
    local_version    INTEGER NOT NULL,
    local_changed_at TEXT,
    local_payload    TEXT,
    remote_version   INTEGER NOT NULL,
    remote_changed_at TEXT,
    remote_payload   TEXT,
    preserved_path   TEXT,
    acknowledged_at  TEXT
);

-- A fresh ULID (Crockford base32, 48-bit millisecond time + 80 random bits),
-- computed with built-in functions only, so that a write from any client (the
-- sqlite3 shell included) gets a key without a Python-registered function.
-- No FROM clause on purpose: a view with one is materialized once per
-- statement, and a multi-row INSERT ... SELECT would then reuse one key.
CREATE VIEW IF NOT EXISTS sync_new_key AS
SELECT
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) >> 45) & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) >> 40) & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) >> 35) & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) >> 30) & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) >> 25) & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) >> 20) & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) >> 15) & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) >> 10) & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) >> 5) & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', ((CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) >> 0) & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) ||
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) AS key;

-- A message's effective privacy is the stricter of its own and its chat's.
-- Rank: FULL 0 < REDACTED 1 < LOCAL_ONLY 2.

-- ---------------------------------------------------------------- chats ----

CREATE TRIGGER IF NOT EXISTS chats_capture_insert
AFTER INSERT ON chats
WHEN NEW.privacy <> 'LOCAL_ONLY'
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    VALUES ((SELECT key FROM sync_new_key), 'chat', NEW.id, 'upsert', NEW.version,
            json_object('id', NEW.id, 'title', NEW.title, 'privacy', NEW.privacy,
                        'created_at', NEW.created_at, 'updated_at', NEW.updated_at,
                        'deleted_at', NEW.deleted_at),
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;

CREATE TRIGGER IF NOT EXISTS chats_capture_update
AFTER UPDATE OF title, privacy, deleted_at ON chats
WHEN NEW.privacy <> 'LOCAL_ONLY'
 AND (OLD.title IS NOT NEW.title OR OLD.privacy IS NOT NEW.privacy
      OR OLD.deleted_at IS NOT NEW.deleted_at)
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    VALUES ((SELECT key FROM sync_new_key), 'chat', NEW.id, 'upsert', NEW.version,
            json_object('id', NEW.id, 'title', NEW.title, 'privacy', NEW.privacy,
                        'created_at', NEW.created_at, 'updated_at', NEW.updated_at,
                        'deleted_at', NEW.deleted_at),
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
    -- A chat's privacy is its messages' privacy too: when it changes to a
    -- level that still syncs, every message is captured again at its new
    -- effective level (REDACTED drops content everywhere; leaving LOCAL_ONLY
    -- uploads messages never captured), after the chat's own row.
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    SELECT (SELECT key FROM sync_new_key WHERE length(m.id) >= 0), 'message', m.id, 'upsert',
           m.version,
           json_object('id', m.id, 'chat_id', m.chat_id, 'role', m.role,
                       'content', CASE WHEN m.privacy = 'FULL' AND NEW.privacy = 'FULL'
                                       THEN m.content END,
                       'privacy', CASE WHEN m.privacy = 'FULL' AND NEW.privacy = 'FULL'
                                       THEN 'FULL' ELSE 'REDACTED' END,
                       'created_at', m.created_at, 'updated_at', m.updated_at,
                       'deleted_at', m.deleted_at),
           strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM messages AS m
    WHERE OLD.privacy IS NOT NEW.privacy
      AND m.chat_id = NEW.id AND m.privacy <> 'LOCAL_ONLY'
    ORDER BY m.created_at, m.id;
    UPDATE messages SET sync_status = 'Pending'
    WHERE OLD.privacy IS NOT NEW.privacy
      AND chat_id = NEW.id AND privacy <> 'LOCAL_ONLY' AND sync_status <> 'Pending';
    UPDATE chats SET sync_status = 'Pending' WHERE id = NEW.id AND sync_status <> 'Pending';
END;

-- A chat that becomes LOCAL_ONLY sends one last change that withdraws it (and,
-- on the server, its messages) from everywhere else; then nothing of it syncs.
CREATE TRIGGER IF NOT EXISTS chats_capture_withdraw
AFTER UPDATE OF privacy ON chats
WHEN NEW.privacy = 'LOCAL_ONLY' AND OLD.privacy <> 'LOCAL_ONLY'
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    VALUES ((SELECT key FROM sync_new_key), 'chat', NEW.id, 'withdraw', NEW.version,
            json_object('id', NEW.id),
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;

-- ------------------------------------------------------------- messages ----

CREATE TRIGGER IF NOT EXISTS messages_capture_insert
AFTER INSERT ON messages
WHEN NEW.privacy <> 'LOCAL_ONLY'
 AND coalesce((SELECT privacy FROM chats WHERE id = NEW.chat_id), 'FULL') <> 'LOCAL_ONLY'
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    SELECT (SELECT key FROM sync_new_key), 'message', NEW.id, 'upsert', NEW.version,
           json_object('id', NEW.id, 'chat_id', NEW.chat_id, 'role', NEW.role,
                       'content', CASE WHEN ep = 'FULL' THEN NEW.content END,
                       'privacy', ep,
                       'created_at', NEW.created_at, 'updated_at', NEW.updated_at,
                       'deleted_at', NEW.deleted_at),
           strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM (SELECT CASE WHEN NEW.privacy = 'REDACTED'
                        OR (SELECT privacy FROM chats WHERE id = NEW.chat_id) = 'REDACTED'
                      THEN 'REDACTED' ELSE 'FULL' END AS ep);
END;

CREATE TRIGGER IF NOT EXISTS messages_capture_update
AFTER UPDATE OF chat_id, role, content, privacy, deleted_at ON messages
WHEN NEW.privacy <> 'LOCAL_ONLY'
 AND coalesce((SELECT privacy FROM chats WHERE id = NEW.chat_id), 'FULL') <> 'LOCAL_ONLY'
 AND (OLD.chat_id IS NOT NEW.chat_id OR OLD.role IS NOT NEW.role
      OR OLD.content IS NOT NEW.content OR OLD.privacy IS NOT NEW.privacy
      OR OLD.deleted_at IS NOT NEW.deleted_at)
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    SELECT (SELECT key FROM sync_new_key), 'message', NEW.id, 'upsert', NEW.version,
           json_object('id', NEW.id, 'chat_id', NEW.chat_id, 'role', NEW.role,
                       'content', CASE WHEN ep = 'FULL' THEN NEW.content END,
                       'privacy', ep,
                       'created_at', NEW.created_at, 'updated_at', NEW.updated_at,
                       'deleted_at', NEW.deleted_at),
           strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM (SELECT CASE WHEN NEW.privacy = 'REDACTED'
                        OR (SELECT privacy FROM chats WHERE id = NEW.chat_id) = 'REDACTED'
                      THEN 'REDACTED' ELSE 'FULL' END AS ep);
    UPDATE messages SET sync_status = 'Pending' WHERE id = NEW.id AND sync_status <> 'Pending';
END;

CREATE TRIGGER IF NOT EXISTS messages_capture_withdraw
AFTER UPDATE OF privacy ON messages
WHEN NEW.privacy = 'LOCAL_ONLY' AND OLD.privacy <> 'LOCAL_ONLY'
 AND coalesce((SELECT privacy FROM chats WHERE id = NEW.chat_id), 'FULL') <> 'LOCAL_ONLY'
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    VALUES ((SELECT key FROM sync_new_key), 'message', NEW.id, 'withdraw', NEW.version,
            json_object('id', NEW.id, 'chat_id', NEW.chat_id),
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;

INSERT OR IGNORE INTO sync_migrations (name, applied_at)
VALUES ('0001_local_schema', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

COMMIT;
