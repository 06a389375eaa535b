-- The full local schema of a fresh install: what the migrations in this folder
-- add up to (tests/migration checks it). Reference only; the runner applies the
-- numbered files. Regenerate: sqlite3 NEW.db < each migration; sqlite3 NEW.db .schema
-- Before the first table: freed pages go back to the file system (0007).
PRAGMA auto_vacuum = INCREMENTAL;
CREATE TABLE sync_migrations (
    name        TEXT PRIMARY KEY,
    applied_at  TEXT NOT NULL
);
CREATE TABLE sync_migration_checksums (
    name    TEXT PRIMARY KEY NOT NULL,
    sha256  TEXT NOT NULL
);
CREATE TABLE sync_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    applying      INTEGER NOT NULL DEFAULT 0 CHECK (applying IN (0, 1)),
    paused        INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    pull_cursor   INTEGER NOT NULL DEFAULT 0,
    last_push_at  TEXT,
    last_pull_at  TEXT,
    last_error    TEXT,
    last_error_at TEXT
);
CREATE TABLE chats (
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
CREATE TABLE messages (
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
CREATE INDEX messages_chat ON messages (chat_id, created_at);
CREATE TABLE "sync_outbox" (
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
CREATE INDEX sync_outbox_open ON sync_outbox (seq)
    WHERE status IN ('Pending', 'Failed');
CREATE INDEX sync_outbox_entity ON sync_outbox (entity_id, seq)
    WHERE status IN ('Pending', 'Failed');
CREATE INDEX sync_outbox_open_state ON sync_outbox ((status || ':' || entity_type), next_retry_at)
    WHERE status IN ('Pending', 'Failed');
CREATE INDEX sync_outbox_synced ON sync_outbox (synced_at)
    WHERE status = 'Synced';
CREATE INDEX sync_outbox_open_errors ON sync_outbox (status)
    WHERE status IN ('Pending', 'Failed') AND last_error IS NOT NULL;
CREATE TABLE "sync_inbox" (
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
CREATE INDEX sync_inbox_pending ON sync_inbox (seq) WHERE status = 'Pending';
CREATE TABLE sync_conflicts (
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
CREATE VIEW sync_new_key AS
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
    substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', (random() & 31) + 1, 1) AS key
;
CREATE TRIGGER chats_capture_insert
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
CREATE TRIGGER chats_capture_withdraw
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
CREATE TRIGGER messages_capture_insert
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
CREATE TRIGGER messages_capture_update
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
CREATE TRIGGER messages_capture_withdraw
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
CREATE TABLE sync_recapture (
    chat_id       TEXT PRIMARY KEY,
    level_before  TEXT NOT NULL,
    after_seq     INTEGER NOT NULL
);
CREATE TRIGGER chats_capture_update
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
      -- only messages whose effective level changes: a REDACTED message stays
      -- REDACTED whatever its chat, and sending it again would overwrite what
      -- another device holds of it (when OLD was LOCAL_ONLY, every one changes)
      AND (OLD.privacy = 'LOCAL_ONLY' OR m.privacy = 'FULL')
    ORDER BY m.created_at, m.id;
    UPDATE messages SET sync_status = 'Pending'
    WHERE OLD.privacy IS NOT NEW.privacy
      AND chat_id = NEW.id AND privacy <> 'LOCAL_ONLY' AND sync_status <> 'Pending'
      AND (OLD.privacy = 'LOCAL_ONLY' OR privacy = 'FULL');
    UPDATE chats SET sync_status = 'Pending' WHERE id = NEW.id AND sync_status <> 'Pending';
END;
CREATE TABLE sync_last_error (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    kind  TEXT CHECK (kind IN ('link', 'setup'))
);
CREATE TABLE sync_link (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    last_contact_at  TEXT,
    down_since       TEXT
);
