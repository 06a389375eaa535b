-- acode-sync: the named statements of the local store (SQLite).
--
-- Not a migration: nothing here changes the schema. Each block starts with
-- `-- name: NAME` and the comment lines after it say what it is for;
-- acode_sync/queries.py reads the file once per process and hands a statement
-- out by name (acode_sync.queries.query). Values are always parameters, named
-- (:now) except in the statements that take a page of rows as tuples (?).
-- The order follows the data: upload (outbox, mover, acknowledgement), then
-- download (inbox, own changes, recapture), conflicts, apply, the rest.

-- ---------------------------------------------------------------- upload ----

-- name: claim_due
-- The open rows that may be due, in seq order after :after up to :upto (with
-- :seqs, a JSON array, only those), each with what the send-time checks need, read by
-- SQLite in the same pass so Python looks nothing up again: why the payload
-- is unfit for the server (NULL where fit: it parses, is an object, carries
-- the row's id, and a message's chat is in this workspace), and, for an
-- upsert, the entity's privacy now: a message's is the stricter of its own
-- and its chat's; an entity no longer in the workspace has none (NULL: FULL).
SELECT o.seq, o.idempotency_key, o.entity_type, o.entity_id, o.op, o.base_version,
       o.payload, o.status, o.retry_count, o.next_retry_at, o.last_error,
       o.changed_at, o.created_at, o.synced_at,
       CASE WHEN NOT json_valid(o.payload) THEN 'payload: not valid JSON'
            WHEN json_type(o.payload) <> 'object' THEN 'payload: not a JSON object'
            WHEN json_extract(o.payload, '$.id') IS NOT o.entity_id
                THEN 'id: the payload''s id ' || quote(json_extract(o.payload, '$.id'))
                     || ' differs from the item''s ' || quote(o.entity_id)
            WHEN o.entity_type = 'message' AND o.op = 'upsert'
                 AND json_type(o.payload, '$.chat_id') IS NOT 'text'
                THEN 'chat_id: missing'
            WHEN o.entity_type = 'message' AND o.op = 'upsert'
                 AND NOT EXISTS (SELECT 1 FROM chats c
                                 WHERE c.id = json_extract(o.payload, '$.chat_id'))
                THEN 'chat_id: no chat ' || quote(json_extract(o.payload, '$.chat_id'))
                     || ' in this workspace'
       END,
       CASE WHEN o.op <> 'upsert' THEN NULL
            WHEN o.entity_type = 'chat'
                THEN (SELECT c.privacy FROM chats c WHERE c.id = o.entity_id)
            ELSE (SELECT CASE WHEN 'LOCAL_ONLY' IN (m.privacy, c.privacy) THEN 'LOCAL_ONLY'
                              WHEN 'REDACTED' IN (m.privacy, c.privacy) THEN 'REDACTED'
                              ELSE 'FULL' END
                  FROM messages m LEFT JOIN chats c ON c.id = m.chat_id
                  WHERE m.id = o.entity_id)
       END
FROM sync_outbox o
WHERE o.status IN ('Pending', 'Failed') AND (o.status = 'Pending' OR o.next_retry_at IS NOT NULL)
  AND o.seq > :after AND o.seq <= :upto
  AND (:seqs IS NULL OR o.seq IN (SELECT value FROM json_each(:seqs)))
ORDER BY o.seq LIMIT :limit;

-- name: fail_for_good
-- A row that cannot go as it is (rejected, or unfit): Failed without a next
-- attempt; only `retry` puts it back.
UPDATE sync_outbox SET status = 'Failed', next_retry_at = NULL, last_error = :error
WHERE seq = :seq;

-- name: supersede_older_by_seq
-- The older open rows of the entity of row :seq are carried by it.
UPDATE sync_outbox SET status = 'Superseded', synced_at = :now, payload = NULL
WHERE status IN ('Pending', 'Failed') AND seq < :seq
  AND (entity_type, entity_id) = (SELECT entity_type, entity_id FROM sync_outbox
                                  WHERE seq = :seq);

-- name: supersede_older
-- The older open rows of an entity are carried by its row :seq.
UPDATE sync_outbox SET status = 'Superseded', synced_at = :now, payload = NULL
WHERE entity_type = :entity_type AND entity_id = :entity_id AND seq < :seq
  AND status IN ('Pending', 'Failed');

-- name: withhold
-- The entity became LOCAL_ONLY after capture: its row never leaves.
UPDATE sync_outbox SET status = 'Superseded', synced_at = :now, payload = NULL,
       last_error = 'withheld: the entity is LOCAL_ONLY now'
WHERE seq = :seq;

-- name: fail_with_backoff
-- A batch failed for a transient reason: the row and the older rows it stands
-- for wait together, so the entity keeps its place in the queue.
UPDATE sync_outbox SET status = 'Failed', retry_count = :retry_count,
       next_retry_at = :next_retry_at, last_error = :error
WHERE entity_type = :entity_type AND entity_id = :entity_id AND seq <= :seq
  AND status IN ('Pending', 'Failed');

-- name: create_acked
-- The rows the server acknowledged in one batch, for the set-based marking
-- below: one pass per statement, driven through the entity index.
CREATE TEMP TABLE IF NOT EXISTS sync_acked (
    seq          INTEGER PRIMARY KEY,
    entity_type  TEXT NOT NULL,
    entity_id    TEXT NOT NULL,
    base_version INTEGER NOT NULL,
    version      INTEGER NOT NULL
);

-- name: ack_synced
-- Acknowledged: the key, entity and status stay for the retention period, the
-- payload is not needed any more. Replaced (deleted and inserted again, in
-- one pass) rather than updated: an UPDATE that shrinks a row leaves its page
-- as sparse as before (SQLite rebalances a b-tree page after a delete, not
-- after a shrinking update), so synced history would keep the space of every
-- payload for the retention period; deleted, the pages merge and go to the
-- free list (given back by acode_sync.retention.reclaim). One statement
-- where a copy out, a DELETE and an INSERT were three. The REPLACE deletes
-- the old row only because a delete trigger (the queue tally's) fires, which
-- needs recursive_triggers on (acode_sync.workspace.connect); without one
-- SQLite overwrites the row in place and the page stays sparse
-- (tests/integration/test_acknowledge.py checks the pages come free).
REPLACE INTO sync_outbox (seq, idempotency_key, entity_type, entity_id, op, base_version,
                          status, retry_count, changed_at, created_at, synced_at)
SELECT seq, idempotency_key, entity_type, entity_id, op, base_version, 'Synced', retry_count,
       changed_at, created_at, :now
FROM sync_outbox WHERE seq IN (SELECT seq FROM temp.sync_acked) ORDER BY seq;

-- name: ack_open_left
-- Whether an acknowledged entity has open rows left (older ones to supersede,
-- later ones to rebase, more owed): mostly none, and then the three
-- statements that look for them are not needed.
SELECT 1 FROM temp.sync_acked a JOIN sync_outbox o
  ON o.entity_id = a.entity_id AND o.status IN ('Pending', 'Failed')
  AND o.entity_type = a.entity_type
LIMIT 1;

-- name: ack_supersede_older
-- What an acknowledged row stands for, its entity's older open rows, is done.
UPDATE sync_outbox SET status = 'Superseded', synced_at = :now, payload = NULL
WHERE seq IN (SELECT o.seq FROM temp.sync_acked a JOIN sync_outbox o
              ON o.entity_id = a.entity_id AND o.status IN ('Pending', 'Failed')
              AND o.seq < a.seq AND o.entity_type = a.entity_type);

-- name: ack_rebase_later
-- A device never conflicts with itself: its rows captured on the base just
-- acknowledged are rebased onto the new version.
UPDATE sync_outbox SET base_version = a.version FROM temp.sync_acked a
WHERE sync_outbox.entity_id = a.entity_id AND sync_outbox.status IN ('Pending', 'Failed')
  AND sync_outbox.entity_type = a.entity_type AND sync_outbox.seq > a.seq
  AND sync_outbox.base_version = a.base_version;

-- name: ack_chats
-- The acknowledged chats take the server's version; Synced unless more is owed.
UPDATE chats SET version = max(chats.version, a.version),
       sync_status = CASE WHEN EXISTS (SELECT 1 FROM sync_outbox o
                                       WHERE o.entity_id = a.entity_id
                                         AND o.status IN ('Pending', 'Failed')
                                         AND o.entity_type = 'chat')
                          THEN 'Pending' ELSE 'Synced' END
FROM temp.sync_acked a WHERE a.entity_type = 'chat' AND chats.id = a.entity_id;

-- name: ack_messages
-- The acknowledged messages take the server's version; Synced unless more is owed.
UPDATE messages SET version = max(messages.version, a.version),
       sync_status = CASE WHEN EXISTS (SELECT 1 FROM sync_outbox o
                                       WHERE o.entity_id = a.entity_id
                                         AND o.status IN ('Pending', 'Failed')
                                         AND o.entity_type = 'message')
                          THEN 'Pending' ELSE 'Synced' END
FROM temp.sync_acked a WHERE a.entity_type = 'message' AND messages.id = a.entity_id;

-- name: ack_chats_synced
-- ack_chats when no acknowledged entity has an open row left (ack_open_left).
UPDATE chats SET version = max(chats.version, a.version), sync_status = 'Synced'
FROM temp.sync_acked a WHERE a.entity_type = 'chat' AND chats.id = a.entity_id;

-- name: ack_messages_synced
-- ack_messages when no acknowledged entity has an open row left (ack_open_left).
UPDATE messages SET version = max(messages.version, a.version), sync_status = 'Synced'
FROM temp.sync_acked a WHERE a.entity_type = 'message' AND messages.id = a.entity_id;

-- -------------------------------------------------------------- download ----

-- name: pull_past_own_push
-- The pull cursor steps over a push's own changes, in the push's last marking
-- transaction: the server read the owner's newest seq (:before, :after) in the
-- push's own transaction, before and after push(), and its :written items log
-- one change each. A cursor at :before with exactly :written seqs up to :after
-- means every one of them is this batch's write, at the version just marked:
-- the pull would only bring them back as versions this device has. Anything
-- else in the span (another device's commit before the push took the owner's
-- clock, a chat's messages withdrawn with it) leaves the cursor for the pull.
UPDATE sync_state SET pull_cursor = :after
WHERE id = 1 AND pull_cursor = :before AND :after - :before = :written;

-- name: insert_inbox_page
-- A page of the server's change log, as pull_page returns it (tuples).
INSERT OR IGNORE INTO sync_inbox (seq, idempotency_key, entity_type, entity_id, op, version,
                                  origin_device, changed_at, payload)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: own_rows_known
-- Of a page's own changes ([seq, entity_type, entity_id, version] as a JSON
-- array), the seqs whose entity has that version or a newer one here already:
-- the push's answer gave it, so the pull has nothing to store or do for them.
SELECT json_extract(j.value, '$[0]') FROM json_each(:rows) j
WHERE CASE json_extract(j.value, '$[1]')
          WHEN 'chat' THEN (SELECT c.version FROM chats c
                            WHERE c.id = json_extract(j.value, '$[2]'))
          WHEN 'message' THEN (SELECT m.version FROM messages m
                               WHERE m.id = json_extract(j.value, '$[2]'))
      END >= json_extract(j.value, '$[3]');

-- name: own_versions_rebase_chats
-- An inbox row carries its entity's current state, so one whose origin is this
-- device (:me) means the server's current version came from this device's own
-- change: open rows captured on the version before are rebased onto it ...
WITH own AS (SELECT entity_id, max(version) AS version FROM sync_inbox
             WHERE status = 'Pending' AND origin_device = :me AND entity_type = 'chat'
             GROUP BY entity_id)
UPDATE sync_outbox SET base_version = own.version
FROM own JOIN chats e ON e.id = own.entity_id
WHERE sync_outbox.entity_id = own.entity_id AND sync_outbox.status IN ('Pending', 'Failed')
  AND sync_outbox.entity_type = 'chat'
  AND sync_outbox.base_version = e.version AND e.version < own.version;

-- name: own_versions_chats
-- ... and the entity takes the version.
WITH own AS (SELECT entity_id, max(version) AS version FROM sync_inbox
             WHERE status = 'Pending' AND origin_device = :me AND entity_type = 'chat'
             GROUP BY entity_id)
UPDATE chats SET version = own.version FROM own
WHERE chats.id = own.entity_id AND chats.version < own.version;

-- name: own_versions_rebase_messages
-- As own_versions_rebase_chats, for messages.
WITH own AS (SELECT entity_id, max(version) AS version FROM sync_inbox
             WHERE status = 'Pending' AND origin_device = :me AND entity_type = 'message'
             GROUP BY entity_id)
UPDATE sync_outbox SET base_version = own.version
FROM own JOIN messages e ON e.id = own.entity_id
WHERE sync_outbox.entity_id = own.entity_id AND sync_outbox.status IN ('Pending', 'Failed')
  AND sync_outbox.entity_type = 'message'
  AND sync_outbox.base_version = e.version AND e.version < own.version;

-- name: own_versions_messages
-- As own_versions_chats, for messages.
WITH own AS (SELECT entity_id, max(version) AS version FROM sync_inbox
             WHERE status = 'Pending' AND origin_device = :me AND entity_type = 'message'
             GROUP BY entity_id)
UPDATE messages SET version = own.version FROM own
WHERE messages.id = own.entity_id AND messages.version < own.version;

-- name: inbox_conflicting
-- Remote changes for entities with local changes pending (conflict candidates),
-- found through the outbox's index of open rows, one probe per change.
SELECT * FROM sync_inbox i
WHERE i.status = 'Pending'
  AND EXISTS (SELECT 1 FROM sync_outbox o WHERE o.entity_id = i.entity_id
              AND o.status IN ('Pending', 'Failed') AND o.entity_type = i.entity_type)
ORDER BY i.seq;

-- A chat's privacy is its messages' privacy too (the stricter of the two goes
-- to the server). When a chat's level changes on another device, that device
-- captures again the messages it has; the ones only this device holds, or holds
-- with content the other has not, are this device's to capture again at their
-- new level: REDACTED takes their content off the server, FULL puts it back.
-- Each page notes the level a chat had before the pull changed it (in a table,
-- so that a pull cut short keeps it), and the capture waits until the pull has
-- caught up: messages on later pages may bring the new level themselves.

-- name: note_chat_levels
-- The level of each chat the page changes, as it was before the page.
INSERT OR IGNORE INTO sync_recapture (chat_id, level_before, after_seq)
SELECT c.id, c.privacy, (SELECT min(seq) FROM sync_inbox WHERE status = 'Pending') - 1
FROM chats c
WHERE c.id IN (SELECT entity_id FROM sync_inbox WHERE status = 'Pending' AND entity_type = 'chat');

-- name: recapture_level_changed
-- Whether a chat went FULL <-> REDACTED during the pull.
SELECT 1 FROM sync_recapture r JOIN chats c ON c.id = r.chat_id
WHERE r.level_before <> c.privacy
  AND r.level_before IN ('FULL', 'REDACTED') AND c.privacy IN ('FULL', 'REDACTED')
LIMIT 1;

-- name: recapture_messages
-- Messages of their own level FULL (a REDACTED one stays REDACTED, a LOCAL_ONLY
-- one never travels) in a chat that went FULL <-> REDACTED, except those that
-- arrived during the pull at that level and those already owed to the server
-- (the send-time privacy check covers them). The same payload as the capture
-- triggers'. CROSS JOIN fixes the order: from the few chats to their messages.
INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version, payload,
                         changed_at)
SELECT (SELECT key FROM sync_new_key WHERE length(m.id) >= 0), 'message', m.id, 'upsert',
       m.version,
       json_object('id', m.id, 'chat_id', m.chat_id, 'role', m.role,
                   'content', CASE WHEN c.privacy = 'FULL' THEN m.content END,
                   'privacy', c.privacy,
                   'created_at', m.created_at, 'updated_at', m.updated_at,
                   'deleted_at', m.deleted_at),
       strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
FROM sync_recapture r
CROSS JOIN chats c ON c.id = r.chat_id
CROSS JOIN messages m ON m.chat_id = c.id
WHERE r.level_before <> c.privacy
  AND r.level_before IN ('FULL', 'REDACTED') AND c.privacy IN ('FULL', 'REDACTED')
  AND m.privacy = 'FULL'
  AND (m.id, c.privacy) NOT IN (SELECT i.entity_id, json_extract(i.payload, '$.privacy')
                                FROM sync_inbox i
                                WHERE i.seq > (SELECT min(after_seq) FROM sync_recapture)
                                  AND i.status = 'Applied' AND i.entity_type = 'message'
                                  AND json_extract(i.payload, '$.privacy') IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM sync_outbox o WHERE o.entity_id = m.id
                  AND o.status IN ('Pending', 'Failed') AND o.entity_type = 'message')
ORDER BY m.created_at, m.id;

-- name: recapture_mark_pending
-- The messages captured again show Pending.
UPDATE messages SET sync_status = 'Pending'
WHERE sync_status <> 'Pending'
  AND chat_id IN (SELECT r.chat_id FROM sync_recapture r JOIN chats c ON c.id = r.chat_id
                  WHERE r.level_before <> c.privacy)
  AND EXISTS (SELECT 1 FROM sync_outbox o WHERE o.entity_id = messages.id
              AND o.status IN ('Pending', 'Failed') AND o.entity_type = 'message');

-- ------------------------------------------------------------- conflicts ----

-- name: newest_open_outbox_row
-- An entity's newest open outbox row: it carries the local side of a conflict.
SELECT seq, payload, changed_at FROM sync_outbox
WHERE entity_type = :entity_type AND entity_id = :entity_id AND status IN ('Pending', 'Failed')
ORDER BY seq DESC LIMIT 1;

-- name: insert_conflict
-- Both sides of a conflict, and where the loser was written.
INSERT INTO sync_conflicts (entity_type, entity_id, detected_by, policy, winner,
                            local_version, local_changed_at, local_payload,
                            remote_version, remote_changed_at, remote_payload, preserved_path)
VALUES (:entity_type, :entity_id, :detected_by, :policy, :winner,
        :local_version, :local_changed_at, :local_payload,
        :remote_version, :remote_changed_at, :remote_payload, :preserved_path);

-- name: outbox_lost_conflict
-- The remote side won: this device's open rows of the entity (from :from_seq
-- on) become Conflict history.
UPDATE sync_outbox SET status = 'Conflict', synced_at = :now, last_error = :error
WHERE entity_type = :entity_type AND entity_id = :entity_id AND seq >= :from_seq
  AND status IN ('Pending', 'Failed');

-- name: requeue_on_server_version
-- The local side won a push conflict: the row goes again, made on top of the
-- server's version.
UPDATE sync_outbox SET status = 'Pending', base_version = :version, next_retry_at = NULL,
       last_error = :error
WHERE seq = :seq;

-- name: rebase_open_outbox_rows
-- The local side won: the entity's open rows after :after_seq stand on the
-- server's version now.
UPDATE sync_outbox SET base_version = :version
WHERE entity_type = :entity_type AND entity_id = :entity_id AND seq > :after_seq
  AND status IN ('Pending', 'Failed');

-- name: unacknowledged_conflicts
-- The conflicts `conflicts --ack` acknowledges: one (:id), or all (:id NULL).
SELECT id, entity_type, entity_id FROM sync_conflicts
WHERE acknowledged_at IS NULL AND (:id IS NULL OR id = :id);

-- ----------------------------------------------------------------- apply ----
-- Every statement here runs with the echo guard up (acode_sync.apply).

-- name: apply_withdrawn_chat_messages
-- A withdrawn chat (op withdraw) takes its messages with it ...
DELETE FROM messages WHERE chat_id IN (SELECT entity_id FROM sync_inbox
                                       WHERE status = 'Pending' AND op = 'withdraw'
                                         AND entity_type = 'chat');

-- name: apply_withdrawn_messages
-- ... a withdrawn message goes ...
DELETE FROM messages WHERE id IN (SELECT entity_id FROM sync_inbox
                                  WHERE status = 'Pending' AND op = 'withdraw'
                                    AND entity_type = 'message');

-- name: apply_withdrawn_chats
-- ... and so does the withdrawn chat itself.
DELETE FROM chats WHERE id IN (SELECT entity_id FROM sync_inbox
                               WHERE status = 'Pending' AND op = 'withdraw'
                                 AND entity_type = 'chat');

-- name: apply_chats
-- The page's chats that need no decision, over an older local version only.
-- (SQLite's upsert needs a WHERE on its SELECT: the inbox filter is it.)
INSERT INTO chats (id, title, privacy, version, sync_status, created_at, updated_at,
                   deleted_at)
SELECT i.entity_id, json_extract(i.payload, '$.title'), json_extract(i.payload, '$.privacy'),
       i.version, 'Synced', json_extract(i.payload, '$.created_at'),
       json_extract(i.payload, '$.updated_at'), json_extract(i.payload, '$.deleted_at')
FROM sync_inbox i
WHERE i.status = 'Pending' AND i.entity_type = 'chat' AND i.op = 'upsert'
ORDER BY i.seq
ON CONFLICT (id) DO UPDATE SET
    title = excluded.title, privacy = excluded.privacy, version = excluded.version,
    sync_status = 'Synced', created_at = excluded.created_at,
    updated_at = excluded.updated_at, deleted_at = excluded.deleted_at
WHERE excluded.version > chats.version;

-- name: create_inbox_done
-- The rows a slice applied, on their way back into the inbox (inbox_done_*).
CREATE TEMP TABLE IF NOT EXISTS sync_inbox_done (
    seq INTEGER PRIMARY KEY, idempotency_key TEXT, entity_type TEXT, entity_id TEXT, op TEXT,
    version INTEGER, origin_device TEXT, changed_at TEXT, payload TEXT, received_at TEXT
);

-- name: inbox_done_take
-- Applied: a message's row keeps of its payload only the privacy (what
-- recapture_messages reads); the rest is in the messages table now. Taken
-- out and stored again (inbox_done_put), not updated: an UPDATE that shrinks
-- rows leaves their pages as sparse as before (see ack_synced), and one that
-- grows them (applied_at) splits pages half full.
INSERT INTO temp.sync_inbox_done
SELECT seq, idempotency_key, entity_type, entity_id, op, version, origin_device, changed_at,
       CASE WHEN entity_type = 'message' AND payload IS NOT NULL
            THEN json_object('privacy', json_extract(payload, '$.privacy')) ELSE payload END,
       received_at
FROM sync_inbox WHERE status = 'Pending' ORDER BY seq;

-- name: inbox_done_put
INSERT INTO sync_inbox (seq, idempotency_key, entity_type, entity_id, op, version,
                        origin_device, changed_at, payload, status, received_at, applied_at)
SELECT seq, idempotency_key, entity_type, entity_id, op, version, origin_device, changed_at,
       payload, 'Applied', received_at, :now
FROM temp.sync_inbox_done ORDER BY seq;

-- name: skip_orphan_messages
-- A message whose chat is not here (withdrawn, or LOCAL_ONLY on this device)
-- stays out: privacy decided elsewhere is not undone here.
UPDATE sync_inbox SET status = 'Skipped', applied_at = :now
WHERE status = 'Pending' AND entity_type = 'message' AND op = 'upsert'
  AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.id = json_extract(sync_inbox.payload, '$.chat_id')
                  AND c.privacy <> 'LOCAL_ONLY');

-- name: apply_messages
-- The page's messages that need no decision, over an older local version only.
INSERT INTO messages (id, chat_id, role, content, privacy, version, sync_status, created_at,
                      updated_at, deleted_at)
SELECT i.entity_id, json_extract(i.payload, '$.chat_id'), json_extract(i.payload, '$.role'),
       coalesce(json_extract(i.payload, '$.content'), ''),
       json_extract(i.payload, '$.privacy'), i.version, 'Synced',
       json_extract(i.payload, '$.created_at'), json_extract(i.payload, '$.updated_at'),
       json_extract(i.payload, '$.deleted_at')
FROM sync_inbox i
WHERE i.status = 'Pending' AND i.entity_type = 'message' AND i.op = 'upsert'
ORDER BY i.seq
ON CONFLICT (id) DO UPDATE SET
    chat_id = excluded.chat_id, role = excluded.role, content = excluded.content,
    privacy = excluded.privacy, version = excluded.version, sync_status = 'Synced',
    created_at = excluded.created_at, updated_at = excluded.updated_at,
    deleted_at = excluded.deleted_at
WHERE excluded.version > messages.version;

-- name: apply_chat_row
-- One chat that won a conflict: over an older or the same local version (the
-- local edits on that version lost), never over a newer one.
INSERT INTO chats (id, title, privacy, version, sync_status, created_at, updated_at,
                   deleted_at)
VALUES (:id, :title, :privacy, :version, :status, :created_at, :updated_at, :deleted_at)
ON CONFLICT (id) DO UPDATE SET
    title = excluded.title, privacy = excluded.privacy, version = excluded.version,
    sync_status = excluded.sync_status, created_at = excluded.created_at,
    updated_at = excluded.updated_at, deleted_at = excluded.deleted_at
WHERE excluded.version >= chats.version;

-- name: apply_message_row
-- One message that won a conflict: as apply_chat_row.
INSERT INTO messages (id, chat_id, role, content, privacy, version, sync_status, created_at,
                      updated_at, deleted_at)
VALUES (:id, :chat_id, :role, :content, :privacy, :version, :status, :created_at,
        :updated_at, :deleted_at)
ON CONFLICT (id) DO UPDATE SET
    chat_id = excluded.chat_id, role = excluded.role, content = excluded.content,
    privacy = excluded.privacy, version = excluded.version,
    sync_status = excluded.sync_status, created_at = excluded.created_at,
    updated_at = excluded.updated_at, deleted_at = excluded.deleted_at
WHERE excluded.version >= messages.version;

-- ------------------------------------------------------- engine, runner ----

-- name: record_cycle
-- The end of a cycle: a push that lost its link is not a sync (last_push_at
-- stays); the first error of the cycle, if any, is the last error.
UPDATE sync_state SET
    last_push_at = CASE WHEN :pushed THEN :now ELSE last_push_at END,
    last_error = :error,
    last_error_at = CASE WHEN :error IS NULL THEN last_error_at ELSE :now END
WHERE id = 1;

-- name: prune_outbox_find
-- Retention: history rows of the outbox synced before :before, :slice at a time
-- (acode_sync.retention: found by a read, deleted by prune_outbox in a short
-- write lock).
SELECT seq FROM sync_outbox
WHERE status IN ('Synced', 'Superseded') AND synced_at < :before LIMIT :slice;

-- name: prune_outbox
-- The rows prune_outbox_find found (:seqs, a JSON array), if still old history.
DELETE FROM sync_outbox
WHERE seq IN (SELECT value FROM json_each(:seqs))
  AND status IN ('Synced', 'Superseded') AND synced_at < :before;

-- name: prune_inbox_find
-- Retention: inbox rows applied (or skipped) before :before, :slice at a time.
SELECT seq FROM sync_inbox
WHERE status IN ('Applied', 'Skipped') AND applied_at < :before LIMIT :slice;

-- name: prune_inbox
-- The rows prune_inbox_find found (:seqs, a JSON array), if still old history.
DELETE FROM sync_inbox
WHERE seq IN (SELECT value FROM json_each(:seqs))
  AND status IN ('Applied', 'Skipped') AND applied_at < :before;

-- name: failed_to_requeue
-- What `retry` puts back: failed for good, or out of backoff (every Failed row
-- with :force).
SELECT seq, entity_type, entity_id FROM sync_outbox
WHERE status = 'Failed' AND (:force OR next_retry_at IS NULL OR next_retry_at <= :now)
ORDER BY seq;

-- name: requeue
-- Back in the queue with a fresh attempt count; last_error stays until the
-- outcome is known.
UPDATE sync_outbox SET status = 'Pending', retry_count = 0, next_retry_at = NULL
WHERE seq = :seq;

-- name: requeued_outcome
-- The newest outbox row of a re-queued entity (a Superseded one last): it
-- carries the entity's fate.
SELECT * FROM sync_outbox
WHERE entity_type = :entity_type AND entity_id = :entity_id AND seq >= :from_seq
ORDER BY (status = 'Superseded'), seq DESC LIMIT 1;

-- name: health_state
-- What `status` reads of the engine's state and the kind of its last failure.
SELECT paused, last_push_at, last_pull_at, last_error, last_error_at, kind
FROM sync_state CROSS JOIN sync_last_error USING (id) WHERE id = 1;

-- ----------------------------------------------------------------- store ----

-- name: list_chats
-- The chats (deleted ones too with :include_deleted), each with its count of
-- messages not deleted.
SELECT c.*, (SELECT count(*) FROM messages m
             WHERE m.chat_id = c.id AND m.deleted_at IS NULL) AS message_count
FROM chats c WHERE :include_deleted OR c.deleted_at IS NULL ORDER BY c.created_at, c.id;

-- name: get_chat
-- One chat with its count of messages not deleted.
SELECT c.*, (SELECT count(*) FROM messages m
             WHERE m.chat_id = c.id AND m.deleted_at IS NULL) AS message_count
FROM chats c WHERE id = :id;

-- ----------------------------------------------------------- queue tally ----

-- name: queue_tally_gap
-- How many outbox rows (at most) lie after the queue tally's mark (local
-- migration 0010): two seeks.
SELECT (SELECT coalesce(max(seq), 0) FROM sync_outbox)
       - coalesce((SELECT upto_seq FROM sync_queue_tally WHERE id = 1), 0);

-- name: fold_queue_tally
-- The tally takes in the open rows of the next :chunk seqs after its mark, and
-- the mark moves past them (never past the newest row): one short write
-- transaction per chunk (acode_sync.outbox.fold), so a million rows captured
-- since the last fold never hold the write lock for the time it takes to
-- count them all. SET expressions read the row as it was: upto_seq below is
-- the old mark.
UPDATE sync_queue_tally
SET open_rows = open_rows + (SELECT count(*) FROM sync_outbox
                             WHERE status IN ('Pending', 'Failed')
                               AND seq > sync_queue_tally.upto_seq
                               AND seq <= sync_queue_tally.upto_seq + :chunk),
    open_chats = open_chats + (SELECT count(*) FROM sync_outbox
                               WHERE entity_type = 'chat' AND status IN ('Pending', 'Failed')
                                 AND (status || ':' || entity_type) IN ('Pending:chat',
                                                                        'Failed:chat')
                                 AND seq > sync_queue_tally.upto_seq
                                 AND seq <= sync_queue_tally.upto_seq + :chunk),
    upto_seq = min(upto_seq + :chunk, (SELECT coalesce(max(seq), 0) FROM sync_outbox))
WHERE id = 1 AND upto_seq < (SELECT coalesce(max(seq), 0) FROM sync_outbox);
