-- acode-sync server schema, migration 0007: a cheaper push(), the same answers.
-- Run by an admin role like 0001 (psql -v ON_ERROR_STOP=1 -f FILE, or
-- `acode-sync migrate --remote`); idempotent.
--
-- push(batch_id, device, items) keeps 0004's contract: the same arguments,
-- result rows, verdicts and reasons, conflict log, writes and change-log rows
-- (the same statements write, in the same order). What a call cost before
-- (measured on a scratch server, docs/BENCHMARKS.md, push7):
--
-- * `SET plan_cache_mode = force_custom_plan` on push() held for everything
--   under it: the foreign-key check of each message written (a cached plan
--   elsewhere) and the change-log trigger were planned again for every row
--   and statement. About 2 ms of a push of 50 (11 ms) and 30 ms of a push of
--   1,000 (110 ms).
-- * The parts push_probe, push_judge and push_settle were SQL functions with
--   a SET clause, so not inlined: each call parsed and planned its body anew
--   (about 1.3 ms each at 50 items), and the parts handed arrays of composite
--   rows to each other.
-- * wire_row() (four times to_char, a jsonb object) was built for every row
--   the batch updates, though only a conflict answer uses it.
--
-- Now push() is one PL/pgSQL body. The statements that look rows up in the
-- tables (parse + probe + judge in one, the withdrawals, the conflicts) run
-- by EXECUTE: planned for each call on the statistics and table sizes of the
-- moment, as force_custom_plan did (a cached generic plan made on early
-- statistics can scan a grown table for every batch;
-- tests/integration/test_push_plans.py). The upserts look up nothing but
-- their arbiter index, so they keep cached plans, and so do the foreign-key
-- checks and the change-log trigger under them. The server's rows are
-- rendered, and the conflict log written, by a statement of its own that
-- runs only when a conflict was judged. The parts of 0004 are dropped;
-- push_problem (the one validation) and the push_item type stay.
-- tests/integration/test_push_0007_against_0006.py holds the answers, the
-- writes and both logs to 0006's on random batches.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(4902700101); END $$;  -- one migrator at a time

-- ------------------------------------------------------------------ push ----
-- One batch, one round trip, one transaction; 0002's answers.
CREATE OR REPLACE FUNCTION acode_sync.push(p_batch_id text, p_device text, p_items jsonb)
RETURNS TABLE (idx integer, idempotency_key text, result text, version bigint,
               reason text, server_row jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    items acode_sync.push_item[];  -- in idx order; result NULL: to be written
    made_up jsonb;  -- idx -> [changed_at, origin] of a withdrawal a message never had
    judged_rows jsonb := '{}';  -- 'type:id' -> the server's row a conflict was judged on
    has_chats boolean;  -- any unresolved chat item
    has_messages boolean;
    has_withdrawals boolean;
    has_conflicts boolean;
    done jsonb := '{}';  -- 'chat:<id>' / 'message:<id>' actually written -> true
    written jsonb;
BEGIN
    -- Each item parsed (the client's change time is kept unless it lies in
    -- the future, where it is clamped to the server's clock: last-write-wins
    -- compares them), with what the server holds for it: the version its key
    -- was logged at (a duplicate; the change log, or applied_keys for a
    -- compacted row), its entity's current row, locked FOR UPDATE so that the
    -- versions compared are the ones the writes see, and a message's chat.
    -- parsed is MATERIALIZED so that the probes compare keys with plain
    -- columns: with `item->>'key'` inlined (->> is not leakproof) row-level
    -- security keeps the comparison out of the index condition.
    --
    -- Then each item's verdict: duplicate, rejected, conflict, or NULL (to be
    -- written; `version` then holds the server's current version, NULL for a
    -- new entity). A message of a withdrawn chat (on the server, or by this
    -- batch) is never written: it conflicts with the message's withdrawn row,
    -- made up (version 0) for one the server never had; a chat shared again
    -- in the same batch (an upsert made on its withdrawn version) takes its
    -- messages back. A device never conflicts with itself: a row it wrote
    -- last is a version it has, told or not.
    EXECUTE $q$
    WITH parsed AS MATERIALIZED (
        SELECT e.ord::integer AS idx, e.item->>'key' AS key,
               e.item->>'entity_type' AS entity_type, e.item->>'entity_id' AS entity_id,
               coalesce(e.item->>'op', 'upsert') AS op,
               CASE WHEN jsonb_typeof(e.item->'base_version') = 'number'
                    THEN (e.item->>'base_version')::numeric::bigint END AS base_version,
               CASE WHEN acode_sync.iso_time_ok(e.item->'changed_at')
                    THEN least((e.item->>'changed_at')::timestamptz, now()) END AS changed_at,
               e.item->'payload' AS payload, e.item->'payload'->>'chat_id' AS chat_id
        FROM jsonb_array_elements($1) WITH ORDINALITY AS e(item, ord)
    ), batch AS (  -- the chats this batch carries (any op): a message may name one
        SELECT coalesce(array_agg(p.entity_id) FILTER (WHERE p.entity_type = 'chat'), '{}')
               AS chats
        FROM parsed p
    ), validated AS (
        SELECT p.*, logged.version AS logged_version,
               coalesce(ch.version, m.version) AS current_version,
               coalesce(ch.origin_device, m.origin_device) AS current_origin,
               ch.version AS chat_version, ch.row AS chat_row, m.row AS message_row,
               parent.privacy AS parent_privacy, parent.changed_at AS parent_changed_at,
               parent.origin_device AS parent_origin,
               CASE WHEN logged.version IS NOT NULL THEN 'duplicate'
                    WHEN v.problem IS NOT NULL THEN 'rejected' END AS early_result,
               v.problem
        FROM parsed p
        CROSS JOIN batch
        LEFT JOIN LATERAL (
            SELECT c.version FROM acode_sync.changes c
            WHERE c.owner_id = current_user::text AND c.idempotency_key = p.key
            UNION ALL
            SELECT a.version FROM acode_sync.applied_keys a
            WHERE a.owner_id = current_user::text AND a.idempotency_key = p.key
            LIMIT 1
        ) logged ON true
        LEFT JOIN LATERAL (
            SELECT c.version, c.origin_device, c AS row FROM acode_sync.chats c
            WHERE p.entity_type = 'chat' AND c.owner_id = current_user::text
              AND c.id = p.entity_id
            FOR UPDATE
        ) ch ON true
        LEFT JOIN LATERAL (
            SELECT mm.version, mm.origin_device, mm AS row FROM acode_sync.messages mm
            WHERE p.entity_type = 'message' AND mm.owner_id = current_user::text
              AND mm.id = p.entity_id
            FOR UPDATE
        ) m ON true
        LEFT JOIN LATERAL (
            SELECT pc.privacy, pc.changed_at, pc.origin_device FROM acode_sync.chats pc
            WHERE p.entity_type = 'message' AND pc.owner_id = current_user::text
              AND pc.id = p.chat_id
            LIMIT 1
        ) parent ON true
        CROSS JOIN LATERAL acode_sync.push_problem(
            p.key, p.entity_type, p.entity_id, p.op, p.base_version, p.changed_at, p.payload,
            parent.privacy IS NOT NULL OR p.chat_id = ANY (batch.chats)) AS v(problem)
    ), withdrawing AS (  -- chats this batch withdraws, and the ones it shares again
        SELECT jsonb_object_agg(w.entity_id, w.changed_at) FILTER (WHERE w.op = 'withdraw')
                   AS chats,
               coalesce(array_agg(w.entity_id) FILTER (
                   WHERE w.op = 'upsert' AND w.current_version = w.base_version), '{}')
                   AS reshared
        FROM validated w
        WHERE w.early_result IS NULL AND w.entity_type = 'chat'
    ), judged AS (
        SELECT va.*, g.changed_at AS withdrawn_at, g.origin AS withdrawn_by,
               CASE WHEN va.early_result IS NOT NULL THEN va.early_result
                    WHEN g.changed_at IS NOT NULL THEN 'conflict'
                    WHEN va.op = 'upsert' AND va.current_version <> va.base_version
                         AND va.current_origin IS DISTINCT FROM $2
                        THEN 'conflict'
               END AS result
        FROM validated va
        CROSS JOIN withdrawing b
        LEFT JOIN LATERAL (
            SELECT CASE WHEN va.parent_privacy = 'LOCAL_ONLY'
                             AND NOT va.chat_id = ANY (b.reshared) THEN va.parent_changed_at
                        ELSE (b.chats ->> va.chat_id)::timestamptz END AS changed_at,
                   CASE WHEN va.parent_privacy = 'LOCAL_ONLY'
                             AND NOT va.chat_id = ANY (b.reshared) THEN va.parent_origin
                        ELSE $2 END AS origin
            WHERE va.entity_type = 'message' AND va.op = 'upsert' AND va.early_result IS NULL
        ) g ON true
    )
    SELECT array_agg(ROW(a.idx, a.key, a.entity_type, a.entity_id, a.op, a.base_version,
                         a.changed_at, a.payload, a.result,
                         coalesce(a.logged_version, a.current_version,
                                  CASE WHEN a.result = 'conflict' THEN 0 END),
                         CASE WHEN a.result = 'rejected' THEN a.problem END
                     )::acode_sync.push_item ORDER BY a.idx),
           coalesce(jsonb_object_agg(a.idx, jsonb_build_array(a.withdrawn_at, a.withdrawn_by))
                    FILTER (WHERE a.result = 'conflict' AND a.withdrawn_at IS NOT NULL
                            AND a.current_version IS NULL), '{}'),
           coalesce(bool_or(a.result IS NULL AND a.entity_type = 'chat'), false),
           coalesce(bool_or(a.result IS NULL AND a.entity_type = 'message'), false),
           coalesce(bool_or(a.result IS NULL AND a.op = 'withdraw'), false),
           coalesce(bool_or(a.result = 'conflict'), false)
    FROM judged a
    $q$
    INTO items, made_up, has_chats, has_messages, has_withdrawals, has_conflicts
    USING p_items, p_device;

    IF has_conflicts THEN
        -- The server's row each conflict was judged on, logged: the entity's
        -- row (locked above, so as it was judged), or for a message the server
        -- never had, its withdrawn row made up at version 0.
        EXECUTE $q$
        WITH answered AS (
            SELECT i.*, CASE
                       WHEN $2 ? i.idx::text THEN acode_sync.wire_row(jsonb_populate_record(
                           NULL::acode_sync.messages, jsonb_build_object(
                               'id', i.entity_id, 'chat_id', i.payload->>'chat_id',
                               'role', i.payload->>'role', 'privacy', 'LOCAL_ONLY',
                               'created_at', i.payload->'created_at',
                               'updated_at', i.payload->'updated_at', 'version', 0,
                               'changed_at', $2 -> i.idx::text -> 0,
                               'origin_device', $2 -> i.idx::text -> 1)))
                       ELSE now_row.row END AS server_row
            FROM unnest($1) i
            LEFT JOIN LATERAL (
                SELECT acode_sync.wire_row(c) AS row FROM acode_sync.chats c
                WHERE i.entity_type = 'chat' AND c.owner_id = current_user::text
                  AND c.id = i.entity_id
                UNION ALL
                SELECT acode_sync.wire_row(m) FROM acode_sync.messages m
                WHERE i.entity_type = 'message' AND m.owner_id = current_user::text
                  AND m.id = i.entity_id
                LIMIT 1
            ) now_row ON true
            WHERE i.result = 'conflict'
        ), logged AS (
            INSERT INTO acode_sync.conflicts (entity_type, entity_id, idempotency_key,
                                              origin_device, base_version, server_version,
                                              incoming, server_row)
            SELECT a.entity_type, a.entity_id, a.key, $3, a.base_version, a.version,
                   jsonb_build_object('op', a.op, 'changed_at', a.changed_at,
                                      'payload', a.payload),
                   a.server_row
            FROM answered a
        )
        SELECT coalesce(jsonb_object_agg(a.entity_type || ':' || a.entity_id, a.server_row)
                        FILTER (WHERE a.server_row IS NOT NULL), '{}')
        FROM answered a
        $q$
        INTO judged_rows
        USING items, made_up, p_device;
    END IF;

    -- The writes, chats first (a chat travels before what refers to it). Each
    -- gives the next version, and only if the row is still at the version
    -- judged (a concurrent writer makes it a conflict below instead).
    IF has_chats AND NOT has_withdrawals THEN
        WITH w AS (
            INSERT INTO acode_sync.chats AS c (owner_id, id, title, privacy, created_at,
                                               updated_at, deleted_at, version, changed_at,
                                               origin_device, idempotency_key, batch_id)
            SELECT current_user, i.entity_id, i.payload->>'title', i.payload->>'privacy',
                   (i.payload->>'created_at')::timestamptz,
                   (i.payload->>'updated_at')::timestamptz,
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
            RETURNING c.id
        ), no_withdrawals AS (
            -- An UPDATE of no row, as 0004's empty withdrawal: the statement's
            -- update trigger then fires after its insert trigger, so the
            -- change log numbers its inserted rows before its updated ones.
            UPDATE acode_sync.chats c SET version = c.version WHERE false
        )
        SELECT coalesce(jsonb_object_agg('chat:' || w.id, true), '{}') INTO written FROM w;
        done := done || written;
    ELSIF has_chats THEN
        -- The same upsert, the withdrawals beside it in one statement (as
        -- 0004: the same change-log blocks), then a withdrawn chat's messages.
        -- A withdrawal is never a conflict: it is the owner's privacy decision.
        EXECUTE $q$
        WITH written AS (
            INSERT INTO acode_sync.chats AS c (owner_id, id, title, privacy, created_at,
                                               updated_at, deleted_at, version, changed_at,
                                               origin_device, idempotency_key, batch_id)
            SELECT current_user, i.entity_id, i.payload->>'title', i.payload->>'privacy',
                   (i.payload->>'created_at')::timestamptz,
                   (i.payload->>'updated_at')::timestamptz,
                   (i.payload->>'deleted_at')::timestamptz,
                   coalesce(i.version, 0) + 1, i.changed_at, $3, i.key, $2
            FROM unnest($1) i
            WHERE i.result IS NULL AND i.entity_type = 'chat' AND i.op = 'upsert'
            ON CONFLICT (owner_id, id) DO UPDATE SET
                title = EXCLUDED.title, privacy = EXCLUDED.privacy,
                created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,
                deleted_at = EXCLUDED.deleted_at, version = c.version + 1,
                changed_at = EXCLUDED.changed_at, origin_device = EXCLUDED.origin_device,
                idempotency_key = EXCLUDED.idempotency_key, batch_id = EXCLUDED.batch_id
            WHERE c.version = EXCLUDED.version - 1
            RETURNING c.id
        ), withdrawn AS (
            UPDATE acode_sync.chats c
            SET title = '', privacy = 'LOCAL_ONLY', version = c.version + 1,
                changed_at = i.changed_at, origin_device = $3,
                idempotency_key = i.key, batch_id = $2
            FROM unnest($1) i
            WHERE i.result IS NULL AND i.entity_type = 'chat'
              AND i.op = 'withdraw' AND c.owner_id = current_user::text AND c.id = i.entity_id
            RETURNING c.id
        )
        SELECT coalesce(jsonb_object_agg('chat:' || w.id, true), '{}')
        FROM (SELECT id FROM written UNION ALL SELECT id FROM withdrawn) w
        $q$
        INTO written
        USING items, p_batch_id, p_device;
        done := done || written;

        -- A withdrawn chat takes its messages with it.
        EXECUTE $q$
        UPDATE acode_sync.messages m
        SET content = NULL, privacy = 'LOCAL_ONLY', version = m.version + 1,
            changed_at = i.changed_at, origin_device = $3,
            idempotency_key = i.key || ':' || m.id, batch_id = $2
        FROM unnest($1) i
        WHERE i.result IS NULL AND i.entity_type = 'chat' AND i.op = 'withdraw'
          AND m.owner_id = current_user::text AND m.chat_id = i.entity_id
          AND m.privacy <> 'LOCAL_ONLY'
        $q$
        USING items, p_batch_id, p_device;
    END IF;

    IF has_messages AND NOT has_withdrawals THEN
        WITH w AS (
            INSERT INTO acode_sync.messages AS m (owner_id, id, chat_id, role, content, privacy,
                                                  created_at, updated_at, deleted_at, version,
                                                  changed_at, origin_device, idempotency_key,
                                                  batch_id)
            SELECT current_user, i.entity_id, i.payload->>'chat_id', i.payload->>'role',
                   CASE WHEN i.payload->>'privacy' = 'FULL' THEN i.payload->>'content' END,
                   i.payload->>'privacy',
                   (i.payload->>'created_at')::timestamptz,
                   (i.payload->>'updated_at')::timestamptz,
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
            RETURNING m.id
        ), no_withdrawals AS (
            -- An UPDATE of no row, as 0004's empty withdrawal: the statement's
            -- update trigger then fires after its insert trigger, so the
            -- change log numbers its inserted rows before its updated ones.
            UPDATE acode_sync.messages m SET version = m.version WHERE false
        )
        SELECT coalesce(jsonb_object_agg('message:' || w.id, true), '{}') INTO written FROM w;
        done := done || written;
    ELSIF has_messages THEN
        EXECUTE $q$
        WITH written AS (
            INSERT INTO acode_sync.messages AS m (owner_id, id, chat_id, role, content, privacy,
                                                  created_at, updated_at, deleted_at, version,
                                                  changed_at, origin_device, idempotency_key,
                                                  batch_id)
            SELECT current_user, i.entity_id, i.payload->>'chat_id', i.payload->>'role',
                   CASE WHEN i.payload->>'privacy' = 'FULL' THEN i.payload->>'content' END,
                   i.payload->>'privacy',
                   (i.payload->>'created_at')::timestamptz,
                   (i.payload->>'updated_at')::timestamptz,
                   (i.payload->>'deleted_at')::timestamptz,
                   coalesce(i.version, 0) + 1, i.changed_at, $3, i.key, $2
            FROM unnest($1) i
            WHERE i.result IS NULL AND i.entity_type = 'message' AND i.op = 'upsert'
            ON CONFLICT (owner_id, id) DO UPDATE SET
                chat_id = EXCLUDED.chat_id, role = EXCLUDED.role, content = EXCLUDED.content,
                privacy = EXCLUDED.privacy, created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at,
                version = m.version + 1, changed_at = EXCLUDED.changed_at,
                origin_device = EXCLUDED.origin_device,
                idempotency_key = EXCLUDED.idempotency_key, batch_id = EXCLUDED.batch_id
            WHERE m.version = EXCLUDED.version - 1
            RETURNING m.id
        ), withdrawn AS (
            UPDATE acode_sync.messages m
            SET content = NULL, privacy = 'LOCAL_ONLY', version = m.version + 1,
                changed_at = i.changed_at, origin_device = $3,
                idempotency_key = i.key, batch_id = $2
            FROM unnest($1) i
            WHERE i.result IS NULL AND i.entity_type = 'message'
              AND i.op = 'withdraw' AND m.owner_id = current_user::text AND m.id = i.entity_id
            RETURNING m.id
        )
        SELECT coalesce(jsonb_object_agg('message:' || w.id, true), '{}')
        FROM (SELECT id FROM written UNION ALL SELECT id FROM withdrawn) w
        $q$
        INTO written
        USING items, p_batch_id, p_device;
        done := done || written;
    END IF;

    -- The answers. An unresolved item that was written is applied at the next
    -- version; a withdrawal of something the server never had is applied as a
    -- no-op (version 0); one that lost a race for its row is a conflict. A
    -- conflict carries the server's row as it is now, or the made-up
    -- withdrawn row it was judged against (judged_rows).
    IF NOT has_conflicts AND (done ?& ARRAY(
            SELECT i.entity_type || ':' || i.entity_id FROM unnest(items) i
            WHERE i.result IS NULL AND (i.op = 'upsert' OR i.version IS NOT NULL))) THEN
        -- No conflict judged and every write that had to happen happened (what
        -- is left unwritten is a withdrawal of something the server never
        -- had): no item is a conflict, nothing to look up.
        RETURN QUERY
        SELECT i.idx, i.key, coalesce(i.result, 'applied'),
               CASE WHEN i.result IS NOT NULL THEN i.version
                    WHEN done ? (i.entity_type || ':' || i.entity_id)
                        THEN coalesce(i.version, 0) + 1
                    ELSE coalesce(i.version, 0) END,
               i.reason, NULL::jsonb
        FROM unnest(items) i
        ORDER BY i.idx;
        RETURN;
    END IF;
    RETURN QUERY EXECUTE $q$
    SELECT i.idx, i.key, r.result,
           CASE WHEN i.result IS NOT NULL THEN i.version
                WHEN r.written THEN coalesce(i.version, 0) + 1
                ELSE coalesce(i.version, 0) END,
           i.reason,
           CASE WHEN r.result = 'conflict'
                THEN coalesce(now_row.row, $3 -> (i.entity_type || ':' || i.entity_id))
           END
    FROM unnest($1) i
    CROSS JOIN LATERAL (SELECT i.result IS NULL AND $2 ? (i.entity_type || ':' || i.entity_id)
                               AS written) w
    CROSS JOIN LATERAL (SELECT w.written,
                               CASE WHEN i.result IS NOT NULL THEN i.result
                                    WHEN w.written THEN 'applied'
                                    WHEN i.op = 'withdraw' AND i.version IS NULL THEN 'applied'
                                    ELSE 'conflict' END AS result) r
    LEFT JOIN LATERAL (
        SELECT acode_sync.wire_row(c) AS row FROM acode_sync.chats c
        WHERE r.result = 'conflict' AND i.entity_type = 'chat'
          AND c.owner_id = current_user::text AND c.id = i.entity_id
        UNION ALL
        SELECT acode_sync.wire_row(m) FROM acode_sync.messages m
        WHERE r.result = 'conflict' AND i.entity_type = 'message'
          AND m.owner_id = current_user::text AND m.id = i.entity_id
        LIMIT 1
    ) now_row ON true
    ORDER BY i.idx
    $q$
    USING items, done, judged_rows;
END
$$;

-- The parts of 0004, now inside push().
DROP FUNCTION IF EXISTS acode_sync.push_settle(acode_sync.push_item[], text[], jsonb);
DROP FUNCTION IF EXISTS acode_sync.push_write_messages(acode_sync.push_item[], text, text,
                                                       boolean);
DROP FUNCTION IF EXISTS acode_sync.push_write_chats(acode_sync.push_item[], text, text,
                                                    boolean);
DROP FUNCTION IF EXISTS acode_sync.push_judge(text, jsonb);
DROP FUNCTION IF EXISTS acode_sync.push_probe(jsonb);

INSERT INTO acode_sync.migrations (name) VALUES ('0007_lean_push')
ON CONFLICT (name) DO NOTHING;

COMMIT;
