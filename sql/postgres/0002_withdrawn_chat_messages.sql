-- acode-sync server schema, migration 0002: a message of a withdrawn chat is a
-- conflict, never a rejection and never a write. Run by an admin role like 0001
-- (psql -v ON_ERROR_STOP=1 -f FILE, or `acode-sync migrate --remote`);
-- idempotent.
--
-- Under 0001, a device that had not yet heard of a chat's withdrawal and
-- edited or added one of its messages got:
--   * an edit of a message the server holds withdrawn, or a new message:
--     "rejected: chat ... is not on the server" (ACODE-SYNC-005), an item no
--     retry could ever deliver, so `check` failed for good;
--   * a new message sent in the same batch as an edit of its chat: written,
--     content and all, into the withdrawn chat (the chat's own edit being a
--     conflict), which is a privacy failure; so was a message sent in the
--     same batch as its chat's withdrawal (no client of ours sends one: the
--     send-time privacy check withholds it; the server no longer relies on that).
-- Now both are conflicts with the message's withdrawn row (made up, version 0,
-- for a message the server never had): logged on the server, answered with
-- that row, so the device applies the withdrawal (it always wins) and keeps
-- its own side in its conflict log. Everything else is 0001's push().

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(4902700101); END $$;  -- one migrator at a time

CREATE OR REPLACE FUNCTION acode_sync.push(p_batch_id text, p_device text, p_items jsonb)
RETURNS TABLE (idx integer, idempotency_key text, result text, version bigint,
               reason text, server_row jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- Planned for each call with the real arrays: a cached generic plan guesses
-- their sizes and, on young statistics, scans whole tables for every batch.
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    items acode_sync.push_item[];
    keys text[];           -- every idempotency key of the batch
    chat_ids text[];       -- chats the batch changes
    message_ids text[];    -- messages the batch changes
    named_chats text[];    -- chats the batch's messages belong to
    known_chats text[];    -- ... of those, the ones on the server and not withdrawn
    withdrawn_chats jsonb; -- ... and the withdrawn ones: id -> {changed_at, origin_device}
    ghost_rows jsonb;      -- 'message:<id>' -> the withdrawn row a message conflicts with
    done text[];           -- 'chat:<id>' / 'message:<id>' actually written
    server_rows jsonb;     -- the same keys -> the server's row, for conflicts
BEGIN
    -- Every lookup below goes through `= ANY (array)` on a primary or unique
    -- key: one index probe per id, never a join the planner could turn into a
    -- scan of a whole table per item on a table whose statistics are young.

    -- Parse; the client's change time is kept unless it lies in the future,
    -- where it is clamped to the server's clock (last-write-wins compares them).
    SELECT array_agg(ROW(
        e.ord::integer, e.item->>'key', e.item->>'entity_type', e.item->>'entity_id',
        coalesce(e.item->>'op', 'upsert'),
        CASE WHEN jsonb_typeof(e.item->'base_version') = 'number'
             THEN (e.item->>'base_version')::numeric::bigint END,
        CASE WHEN acode_sync.iso_time_ok(e.item->'changed_at')
             THEN least((e.item->>'changed_at')::timestamptz, now()) END,
        e.item->'payload', NULL, NULL, NULL)::acode_sync.push_item ORDER BY e.ord)
    INTO items
    FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e(item, ord);

    SELECT array_agg(i.key),
           array_agg(i.entity_id) FILTER (WHERE i.entity_type = 'chat'),
           array_agg(i.entity_id) FILTER (WHERE i.entity_type = 'message'),
           array_agg(DISTINCT i.payload->>'chat_id') FILTER (WHERE i.entity_type = 'message'
                                                             AND i.op = 'upsert')
             || array_agg(i.entity_id) FILTER (WHERE i.entity_type = 'chat'
                                                AND i.op = 'upsert')
    INTO keys, chat_ids, message_ids, named_chats
    FROM unnest(items) i;

    SELECT array_agg(c.id) FILTER (WHERE c.privacy <> 'LOCAL_ONLY'),
           coalesce(jsonb_object_agg(c.id, jsonb_build_object(
                        'changed_at', c.changed_at, 'origin_device', c.origin_device))
                    FILTER (WHERE c.privacy = 'LOCAL_ONLY'), '{}')
    INTO known_chats, withdrawn_chats
    FROM acode_sync.chats c
    WHERE c.owner_id = current_user::text AND c.id = ANY (named_chats);

    -- Duplicates: the key is already in this owner's change log.
    WITH logged AS (
        SELECT c.idempotency_key AS key, c.version
        FROM acode_sync.changes c
        WHERE c.owner_id = current_user::text AND c.idempotency_key = ANY (keys)
    )
    SELECT array_agg(ROW(i.idx, i.key, i.entity_type, i.entity_id, i.op, i.base_version,
                         i.changed_at, i.payload,
                         CASE WHEN l.key IS NOT NULL THEN 'duplicate' END, l.version,
                         NULL)::acode_sync.push_item ORDER BY i.idx)
    INTO items
    FROM unnest(items) AS i
    LEFT JOIN logged l ON l.key = i.key;

    -- Validation: what the server will not store, it rejects item by item.
    SELECT array_agg(CASE WHEN i.result IS NOT NULL OR v.problem IS NULL THEN i
                          ELSE ROW(i.idx, i.key, i.entity_type, i.entity_id, i.op,
                                   i.base_version, i.changed_at, i.payload,
                                   'rejected', NULL, v.problem)::acode_sync.push_item END
                     ORDER BY i.idx)
    INTO items
    FROM unnest(items) AS i
    CROSS JOIN LATERAL (SELECT CASE
        WHEN coalesce(i.key, '') = '' THEN 'missing idempotency key'
        WHEN coalesce(i.entity_id, '') = '' THEN 'missing entity_id'
        WHEN i.entity_type IS DISTINCT FROM 'chat' AND i.entity_type IS DISTINCT FROM 'message'
            THEN format('unknown entity_type %L', i.entity_type)
        WHEN i.op NOT IN ('upsert', 'withdraw') THEN format('unknown op %L', i.op)
        WHEN i.base_version IS NULL OR i.base_version < 0 THEN 'base_version must be >= 0'
        WHEN i.changed_at IS NULL THEN 'changed_at must be an ISO-8601 time'
        WHEN i.op = 'withdraw' THEN NULL
        WHEN jsonb_typeof(i.payload) IS DISTINCT FROM 'object' THEN 'payload must be an object'
        WHEN i.payload->>'id' IS DISTINCT FROM i.entity_id THEN 'payload id differs from entity_id'
        WHEN coalesce(i.payload->>'privacy', '') NOT IN ('FULL', 'REDACTED')
            THEN format('privacy %L cannot be uploaded', i.payload->>'privacy')
        WHEN NOT acode_sync.iso_time_ok(i.payload->'created_at')
            THEN 'created_at must be an ISO-8601 time'
        WHEN NOT acode_sync.iso_time_ok(i.payload->'updated_at')
            THEN 'updated_at must be an ISO-8601 time'
        WHEN jsonb_typeof(i.payload->'deleted_at') NOT IN ('null', 'string')
             OR (jsonb_typeof(i.payload->'deleted_at') = 'string'
                 AND NOT acode_sync.iso_time_ok(i.payload->'deleted_at'))
            THEN 'deleted_at must be null or an ISO-8601 time'
        WHEN i.entity_type = 'chat' AND jsonb_typeof(i.payload->'title') IS DISTINCT FROM 'string'
            THEN 'chat title must be a string'
        WHEN i.entity_type = 'message'
             AND coalesce(i.payload->>'role', '') NOT IN ('user', 'assistant', 'system', 'tool')
            THEN format('unknown message role %L', i.payload->>'role')
        WHEN i.entity_type = 'message' AND i.payload->>'privacy' = 'FULL'
             AND jsonb_typeof(i.payload->'content') IS DISTINCT FROM 'string'
            THEN 'message content must be a string'
        WHEN i.entity_type = 'message' AND coalesce(i.payload->>'chat_id', '') = ''
            THEN 'message chat_id missing'
        WHEN i.entity_type = 'message'
             AND NOT (i.payload->>'chat_id' = ANY (coalesce(known_chats, '{}')))
             AND NOT (i.payload->>'chat_id' = ANY (coalesce(chat_ids, '{}')))
             AND NOT withdrawn_chats ? (i.payload->>'chat_id')
            THEN format('chat %s is not on the server', i.payload->>'chat_id')
        END AS problem) AS v;

    -- Conflicts: the change was made on a version the server has moved past;
    -- or it is a message of a chat withdrawn on the server, which no edit or new
    -- message may bring back (a withdrawal always wins): it conflicts with the
    -- message's withdrawn row, made up for a message the server never had.
    -- FOR UPDATE holds the rows, so the versions read here are the ones written.
    WITH cur_chats AS (
        SELECT 'chat' AS entity_type, c.id, c.version, to_jsonb(c) - 'owner_id' AS row
        FROM acode_sync.chats c
        WHERE c.owner_id = current_user::text AND c.id = ANY (chat_ids)
        FOR UPDATE
    ), cur_messages AS (
        SELECT 'message' AS entity_type, m.id, m.version, to_jsonb(m) - 'owner_id' AS row
        FROM acode_sync.messages m
        WHERE m.owner_id = current_user::text AND m.id = ANY (message_ids)
        FOR UPDATE
    ), found AS (
        SELECT * FROM cur_chats UNION ALL SELECT * FROM cur_messages
    ), withdrawing AS (
        -- Chats this very batch withdraws (applied below, before any message).
        SELECT jsonb_object_agg(i.entity_id, jsonb_build_object(
                   'changed_at', i.changed_at, 'origin_device', p_device)) AS chats
        FROM unnest(items) i
        WHERE i.result IS NULL AND i.entity_type = 'chat' AND i.op = 'withdraw'
    ), ghosts AS (
        SELECT i.idx, coalesce(f.version, 0) AS version,
               coalesce(f.row, jsonb_build_object(
                   'id', i.entity_id, 'chat_id', i.payload->>'chat_id',
                   'role', i.payload->>'role', 'content', NULL, 'privacy', 'LOCAL_ONLY',
                   'created_at', i.payload->'created_at', 'updated_at', i.payload->'updated_at',
                   'deleted_at', NULL, 'version', 0,
                   'changed_at', w.chat->'changed_at', 'origin_device', w.chat->'origin_device',
                   'idempotency_key', NULL, 'batch_id', NULL)) AS row
        FROM unnest(items) i
        CROSS JOIN withdrawing b
        CROSS JOIN LATERAL (SELECT coalesce(withdrawn_chats -> (i.payload->>'chat_id'),
                                            b.chats -> (i.payload->>'chat_id')) AS chat) w
        LEFT JOIN found f ON f.entity_type = 'message' AND f.id = i.entity_id
        WHERE i.result IS NULL AND i.entity_type = 'message' AND i.op = 'upsert'
          AND w.chat IS NOT NULL
    ), conflicting AS (
        SELECT g.idx, g.version, g.row, true AS ghost FROM ghosts g
        UNION ALL
        SELECT i.idx, f.version, f.row, false
        FROM unnest(items) i
        JOIN found f ON f.entity_type = i.entity_type AND f.id = i.entity_id
        WHERE i.result IS NULL AND i.op = 'upsert' AND f.version <> i.base_version
          AND NOT EXISTS (SELECT 1 FROM ghosts g WHERE g.idx = i.idx)
    ), logged AS (
        INSERT INTO acode_sync.conflicts (entity_type, entity_id, idempotency_key,
                                          origin_device, base_version, server_version,
                                          incoming, server_row)
        SELECT i.entity_type, i.entity_id, i.key, p_device, i.base_version, c.version,
               jsonb_build_object('op', i.op, 'changed_at', i.changed_at,
                                  'payload', i.payload),
               c.row
        FROM unnest(items) i
        JOIN conflicting c ON c.idx = i.idx
    )
    SELECT array_agg(ROW(i.idx, i.key, i.entity_type, i.entity_id, i.op,
                         i.base_version, i.changed_at, i.payload,
                         CASE WHEN c.idx IS NULL THEN i.result ELSE 'conflict' END,
                         coalesce(i.version, c.version, f.version), i.reason
                        )::acode_sync.push_item
                     ORDER BY i.idx),
           coalesce(jsonb_object_agg('message:' || i.entity_id, c.row) FILTER (WHERE c.ghost),
                    '{}')
    INTO items, ghost_rows
    FROM unnest(items) i
    LEFT JOIN found f ON f.entity_type = i.entity_type AND f.id = i.entity_id
    LEFT JOIN conflicting c ON c.idx = i.idx;

    -- Apply: chats, then messages (a chat travels before what refers to it).
    -- `version` of an unresolved item holds the server's current version (NULL
    -- for a new entity); the write gives the next one, and only if the row is
    -- still at that version (a concurrent writer makes it a conflict instead).
    WITH written AS (
        INSERT INTO acode_sync.chats AS c (owner_id, id, title, privacy, created_at,
                                           updated_at, deleted_at, version, changed_at,
                                           origin_device, idempotency_key, batch_id)
        SELECT current_user, i.entity_id, i.payload->>'title', i.payload->>'privacy',
               (i.payload->>'created_at')::timestamptz, (i.payload->>'updated_at')::timestamptz,
               (i.payload->>'deleted_at')::timestamptz,
               coalesce(i.version, 0) + 1, i.changed_at, p_device, i.key, p_batch_id
        FROM unnest(items) i
        WHERE i.result IS NULL AND i.entity_type = 'chat' AND i.op = 'upsert'
        ON CONFLICT (owner_id, id) DO UPDATE SET
            title = EXCLUDED.title, privacy = EXCLUDED.privacy,
            created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
            deleted_at = EXCLUDED.deleted_at, version = c.version + 1,
            changed_at = EXCLUDED.changed_at, origin_device = EXCLUDED.origin_device,
            idempotency_key = EXCLUDED.idempotency_key, batch_id = EXCLUDED.batch_id
        WHERE c.version = EXCLUDED.version - 1
        RETURNING 'chat:' || c.id AS ref
    ), withdrawn AS (
        -- A withdrawal is never a conflict: it is the owner's privacy decision.
        UPDATE acode_sync.chats c
        SET title = '', privacy = 'LOCAL_ONLY', version = c.version + 1,
            changed_at = i.changed_at, origin_device = p_device,
            idempotency_key = i.key, batch_id = p_batch_id
        FROM unnest(items) i
        WHERE c.owner_id = current_user::text AND c.id = ANY (chat_ids)
          AND i.entity_id = c.id AND i.result IS NULL AND i.entity_type = 'chat'
          AND i.op = 'withdraw'
        RETURNING 'chat:' || c.id AS ref
    )
    SELECT array_agg(ref) INTO done
    FROM (SELECT ref FROM written UNION ALL SELECT ref FROM withdrawn) w;

    -- A withdrawn chat takes its messages with it.
    UPDATE acode_sync.messages m
    SET content = NULL, privacy = 'LOCAL_ONLY', version = m.version + 1,
        changed_at = i.changed_at, origin_device = p_device,
        idempotency_key = i.key || ':' || m.id, batch_id = p_batch_id
    FROM unnest(items) i
    WHERE m.owner_id = current_user::text AND m.chat_id = ANY (chat_ids)
      AND m.chat_id = i.entity_id AND i.result IS NULL AND i.entity_type = 'chat'
      AND i.op = 'withdraw' AND m.privacy <> 'LOCAL_ONLY';

    WITH written AS (
        INSERT INTO acode_sync.messages AS m (owner_id, id, chat_id, role, content, privacy,
                                              created_at, updated_at, deleted_at, version,
                                              changed_at, origin_device, idempotency_key,
                                              batch_id)
        SELECT current_user, i.entity_id, i.payload->>'chat_id', i.payload->>'role',
               CASE WHEN i.payload->>'privacy' = 'FULL' THEN i.payload->>'content' END,
               i.payload->>'privacy',
               (i.payload->>'created_at')::timestamptz, (i.payload->>'updated_at')::timestamptz,
               (i.payload->>'deleted_at')::timestamptz,
               coalesce(i.version, 0) + 1, i.changed_at, p_device, i.key, p_batch_id
        FROM unnest(items) i
        WHERE i.result IS NULL AND i.entity_type = 'message' AND i.op = 'upsert'
        ON CONFLICT (owner_id, id) DO UPDATE SET
            chat_id = EXCLUDED.chat_id, role = EXCLUDED.role, content = EXCLUDED.content,
            privacy = EXCLUDED.privacy, created_at = EXCLUDED.created_at,
            updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at,
            version = m.version + 1, changed_at = EXCLUDED.changed_at,
            origin_device = EXCLUDED.origin_device,
            idempotency_key = EXCLUDED.idempotency_key, batch_id = EXCLUDED.batch_id
        WHERE m.version = EXCLUDED.version - 1
        RETURNING 'message:' || m.id AS ref
    ), withdrawn AS (
        UPDATE acode_sync.messages m
        SET content = NULL, privacy = 'LOCAL_ONLY', version = m.version + 1,
            changed_at = i.changed_at, origin_device = p_device,
            idempotency_key = i.key, batch_id = p_batch_id
        FROM unnest(items) i
        WHERE m.owner_id = current_user::text AND m.id = ANY (message_ids)
          AND i.entity_id = m.id AND i.result IS NULL AND i.entity_type = 'message'
          AND i.op = 'withdraw'
        RETURNING 'message:' || m.id AS ref
    )
    SELECT coalesce(done, '{}') || coalesce(array_agg(ref), '{}') INTO done
    FROM (SELECT ref FROM written UNION ALL SELECT ref FROM withdrawn) w;

    -- Results. An unresolved item that was written is applied at the next
    -- version; a withdrawal of something the server never had is applied as
    -- a no-op (version 0); one that lost a race for its row is a conflict.
    SELECT array_agg(ROW(i.idx, i.key, i.entity_type, i.entity_id, i.op, i.base_version,
                         i.changed_at, i.payload,
                         CASE WHEN i.result IS NOT NULL THEN i.result
                              WHEN d.ref IS NOT NULL THEN 'applied'
                              WHEN i.op = 'withdraw' AND i.version IS NULL THEN 'applied'
                              ELSE 'conflict' END,
                         CASE WHEN i.result IS NOT NULL THEN i.version
                              WHEN d.ref IS NOT NULL THEN coalesce(i.version, 0) + 1
                              ELSE coalesce(i.version, 0) END,
                         i.reason)::acode_sync.push_item ORDER BY i.idx)
    INTO items
    FROM unnest(items) i
    LEFT JOIN unnest(coalesce(done, '{}')) AS d(ref)
           ON d.ref = i.entity_type || ':' || i.entity_id AND i.result IS NULL;

    -- The server's row for each conflict, looked up by key (conflicts are few).
    SELECT array_agg(i.entity_id) FILTER (WHERE i.entity_type = 'chat'),
           array_agg(i.entity_id) FILTER (WHERE i.entity_type = 'message')
    INTO chat_ids, message_ids
    FROM unnest(items) i WHERE i.result = 'conflict';
    SELECT ghost_rows
           || coalesce(jsonb_object_agg('chat:' || c.id, to_jsonb(c) - 'owner_id'), '{}')
    INTO server_rows
    FROM acode_sync.chats c WHERE c.owner_id = current_user::text AND c.id = ANY (chat_ids);
    SELECT server_rows
           || coalesce(jsonb_object_agg('message:' || m.id, to_jsonb(m) - 'owner_id'), '{}')
    INTO server_rows
    FROM acode_sync.messages m WHERE m.owner_id = current_user::text AND m.id = ANY (message_ids);

    RETURN QUERY
    SELECT i.idx, i.key, i.result, i.version, i.reason,
           server_rows -> (i.entity_type || ':' || i.entity_id)
    FROM unnest(items) i
    ORDER BY i.idx;
END
$$;

GRANT EXECUTE ON FUNCTION acode_sync.push(text, text, jsonb) TO acode_sync_device;

INSERT INTO acode_sync.migrations (name) VALUES ('0002_withdrawn_chat_messages')
ON CONFLICT (name) DO NOTHING;

COMMIT;
