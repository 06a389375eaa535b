-- acode-sync local schema, migration 0002: a chat's privacy change captures
-- again only the messages whose effective level it changes, and a change of a
-- chat's level pulled from another device gets its messages captured here.
--
-- Apply with `acode-sync migrate --local` (or `init`, which is idempotent), or
-- by hand: sqlite3 .agent/workspace.db < 0002_recapture_changed_levels.sql
-- (a second run changes nothing).
--
-- Under 0001, making a chat FULL again captured its REDACTED messages too,
-- unchanged but at a new version; a device holding one of them with content
-- (its author) then took that empty copy over its own, and the content it
-- should now have shared was gone from it. FULL <-> REDACTED changes a
-- message's effective level only when the message itself is FULL; leaving
-- LOCAL_ONLY changes every message's (none of them was ever captured).

BEGIN IMMEDIATE;

-- Chats whose level a pull is changing: the level each had before, and the
-- last change seq before it. The puller captures their messages again once it
-- has caught up with the log, then empties this; a pull cut short keeps it.
CREATE TABLE IF NOT EXISTS sync_recapture (
    chat_id       TEXT PRIMARY KEY,
    level_before  TEXT NOT NULL,
    after_seq     INTEGER NOT NULL
);

DROP TRIGGER IF EXISTS chats_capture_update;
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

INSERT OR IGNORE INTO sync_migrations (name, applied_at)
VALUES ('0002_recapture_changed_levels', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

COMMIT;
