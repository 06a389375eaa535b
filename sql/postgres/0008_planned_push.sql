-- acode-sync server schema, migration 0008: push() with cached plans, the same
-- answers. Run by an admin role like 0001 (psql -v ON_ERROR_STOP=1 -f FILE, or
-- `acode-sync migrate --remote`); idempotent.
--
-- push(batch_id, device, items) keeps 0007's contract: the same arguments,
-- result rows, verdicts and reasons, conflict log, writes and change-log rows,
-- seq for seq. What a call of 50 cost under 0007 (docs/BENCHMARKS.md, push8):
--
-- * Planning the look-up statement (parse + probe + judge) on every call,
--   by EXECUTE: 1-2.4 ms (p50, quiet and busy machine). 0007 did it so that
--   a plan made while the tables were small could never scan them once
--   grown. Every look-up in it is a LATERAL probe of one row by primary key
--   or by the unique idempotency index, driven by the batch's own rows: an
--   index probe is the one sane plan at any size, and the one the planner
--   takes once sequential scans are disabled (below). So it is static SQL
--   now, planned once per session, and so are the conflict log and the
--   conflict answers.
-- * push_problem() (the one validation) was called in FROM, so not inlined:
--   a call of its own per item, its body run by the SQL-function executor.
--   It is an expression now, inlined by the planner, and skipped for a
--   duplicate (whose answer never carries the reason).
-- * 0007 wrote each table's upsert twice (a static statement, and one by
--   EXECUTE beside the withdrawals), and kept a no-op UPDATE in the static
--   one only so that the statement's update trigger fired after its insert
--   trigger (the change log numbers inserted rows before updated ones). Now
--   one static statement per table holds the upsert and the withdrawals:
--   with no withdrawal its UPDATE writes no row and plays the no-op's part.
--
-- `SET enable_seqscan = off` on push() is the guard: whatever the statistics
-- of the moment when a plan is cached, the planner takes an index wherever
-- one reaches the rows (tests/integration/test_push_plans.py grows the tables
-- behind a session's cached plans and reads its scan counters). It holds for
-- what runs under push() too: the foreign-key checks probe by key, and the
-- change-log trigger scans nothing but its transition rows. The one
-- statement whose plan depends on sizes, the withdrawal of a chat's
-- messages (a chat may hold a few or many), still runs by EXECUTE.
-- tests/integration/test_push_0008_against_0007.py holds the answers, the
-- writes and both logs to 0007's on random batches.

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
SET enable_seqscan = off
AS $$
DECLARE
    items acode_sync.push_item[];  -- in idx order; result NULL: to be written
    made_up jsonb;  -- idx -> [changed_at, origin] of a withdrawal a message never had
    judged_rows jsonb := '{}';  -- 'type:id' -> the server's row a conflict was judged on
    has_chats boolean;  -- any unresolved chat item
    has_messages boolean;
    withdraws_chats boolean;  -- any unresolved chat withdrawal
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
    -- `early` is what the item is answered before any write: '' for a
    -- duplicate (no problem reads ''), push_problem's reason for a rejected
    -- item, NULL for one to judge. validated is read twice, so materialized:
    -- the validation runs once per item.
    --
    -- Then each item's verdict: duplicate, rejected, conflict, or NULL (to be
    -- written; `version` then holds the server's current version, NULL for a
    -- new entity). A message of a withdrawn chat (on the server, or by this
    -- batch) is never written: it conflicts with the message's withdrawn row,
    -- made up (version 0) for one the server never had; a chat shared again
    -- in the same batch (an upsert made on its withdrawn version) takes its
    -- messages back. A device never conflicts with itself: a row it wrote
    -- last is a version it has, told or not.
    WITH parsed AS MATERIALIZED (
        SELECT e.ord::integer AS idx, e.item->>'key' AS key,
               e.item->>'entity_type' AS entity_type, e.item->>'entity_id' AS entity_id,
               coalesce(e.item->>'op', 'upsert') AS op,
               CASE WHEN jsonb_typeof(e.item->'base_version') = 'number'
                    THEN (e.item->>'base_version')::numeric::bigint END AS base_version,
               CASE WHEN acode_sync.iso_time_ok(e.item->'changed_at')
                    THEN least((e.item->>'changed_at')::timestamptz, now()) END AS changed_at,
               e.item->'payload' AS payload, e.item->'payload'->>'chat_id' AS chat_id
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e(item, ord)
    ), batch AS (  -- the chats this batch carries (any op): a message may name one
        SELECT coalesce(array_agg(p.entity_id) FILTER (WHERE p.entity_type = 'chat'), '{}')
               AS chats
        FROM parsed p
    ), validated AS (
        SELECT p.*, logged.version AS logged_version,
               coalesce(ch.version, m.version) AS current_version,
               coalesce(ch.origin_device, m.origin_device) AS current_origin,
               parent.privacy AS parent_privacy, parent.changed_at AS parent_changed_at,
               parent.origin_device AS parent_origin,
               CASE WHEN logged.version IS NOT NULL THEN ''
                    ELSE acode_sync.push_problem(
                        p.key, p.entity_type, p.entity_id, p.op, p.base_version, p.changed_at,
                        p.payload, parent.privacy IS NOT NULL OR p.chat_id = ANY (batch.chats))
               END AS early
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
            SELECT c.version, c.origin_device FROM acode_sync.chats c
            WHERE p.entity_type = 'chat' AND c.owner_id = current_user::text
              AND c.id = p.entity_id
            FOR UPDATE
        ) ch ON true
        LEFT JOIN LATERAL (
            SELECT mm.version, mm.origin_device FROM acode_sync.messages mm
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
    ), withdrawing AS (  -- chats this batch withdraws, and the ones it shares again
        SELECT jsonb_object_agg(w.entity_id, w.changed_at) FILTER (WHERE w.op = 'withdraw')
                   AS chats,
               coalesce(array_agg(w.entity_id) FILTER (
                   WHERE w.op = 'upsert' AND w.current_version = w.base_version), '{}')
                   AS reshared
        FROM validated w
        WHERE w.early IS NULL AND w.entity_type = 'chat'
    ), judged AS (
        SELECT va.*, g.changed_at AS withdrawn_at, g.origin AS withdrawn_by,
               CASE WHEN va.early = '' THEN 'duplicate'
                    WHEN va.early IS NOT NULL THEN 'rejected'
                    WHEN g.changed_at IS NOT NULL THEN 'conflict'
                    WHEN va.op = 'upsert' AND va.current_version <> va.base_version
                         AND va.current_origin IS DISTINCT FROM p_device
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
                        ELSE p_device END AS origin
            WHERE va.entity_type = 'message' AND va.op = 'upsert' AND va.early IS NULL
        ) g ON true
    )
    SELECT array_agg(ROW(a.idx, a.key, a.entity_type, a.entity_id, a.op, a.base_version,
                         a.changed_at, a.payload, a.result,
                         coalesce(a.logged_version, a.current_version,
                                  CASE WHEN a.result = 'conflict' THEN 0 END),
                         CASE WHEN a.result = 'rejected' THEN a.early END
                     )::acode_sync.push_item ORDER BY a.idx),
           coalesce(jsonb_object_agg(a.idx, jsonb_build_array(a.withdrawn_at, a.withdrawn_by))
                    FILTER (WHERE a.result = 'conflict' AND a.withdrawn_at IS NOT NULL
                            AND a.current_version IS NULL), '{}'),
           coalesce(bool_or(a.result IS NULL AND a.entity_type = 'chat'), false),
           coalesce(bool_or(a.result IS NULL AND a.entity_type = 'message'), false),
           coalesce(bool_or(a.result IS NULL AND a.entity_type = 'chat'
                            AND a.op = 'withdraw'), false),
           coalesce(bool_or(a.result = 'conflict'), false)
    INTO items, made_up, has_chats, has_messages, withdraws_chats, has_conflicts
    FROM judged a;

    IF has_conflicts THEN
        -- The server's row each conflict was judged on, logged: the entity's
        -- row (locked above, so as it was judged), or for a message the server
        -- never had, its withdrawn row made up at version 0.
        WITH answered AS (
            SELECT i.*, CASE
                       WHEN made_up ? i.idx::text THEN acode_sync.wire_row(jsonb_populate_record(
                           NULL::acode_sync.messages, jsonb_build_object(
                               'id', i.entity_id, 'chat_id', i.payload->>'chat_id',
                               'role', i.payload->>'role', 'privacy', 'LOCAL_ONLY',
                               'created_at', i.payload->'created_at',
                               'updated_at', i.payload->'updated_at', 'version', 0,
                               'changed_at', made_up -> i.idx::text -> 0,
                               'origin_device', made_up -> i.idx::text -> 1)))
                       ELSE now_row.row END AS server_row
            FROM unnest(items) i
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
            SELECT a.entity_type, a.entity_id, a.key, p_device, a.base_version, a.version,
                   jsonb_build_object('op', a.op, 'changed_at', a.changed_at,
                                      'payload', a.payload),
                   a.server_row
            FROM answered a
        )
        SELECT coalesce(jsonb_object_agg(a.entity_type || ':' || a.entity_id, a.server_row)
                        FILTER (WHERE a.server_row IS NOT NULL), '{}')
        INTO judged_rows
        FROM answered a;
    END IF;

    -- The writes, chats first (a chat travels before what refers to it). Each
    -- upsert gives the next version, and only if the row is still at the
    -- version judged (a concurrent writer makes it a conflict below instead).
    -- A withdrawal is never a conflict: it is the owner's privacy decision.
    -- The withdrawals are an UPDATE in the same statement as the upsert, so
    -- they share its change-log block (as 0004-0007), and that UPDATE is
    -- there even when it writes no row: the statement's update trigger then
    -- fires after its insert trigger, so the change log numbers the
    -- statement's inserted rows before its updated ones.
    IF has_chats THEN
        WITH upserted AS (
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
        ), withdrawn AS (
            UPDATE acode_sync.chats c
            SET title = '', privacy = 'LOCAL_ONLY', version = c.version + 1,
                changed_at = i.changed_at, origin_device = p_device,
                idempotency_key = i.key, batch_id = p_batch_id
            FROM unnest(items) i
            WHERE i.result IS NULL AND i.entity_type = 'chat'
              AND i.op = 'withdraw' AND c.owner_id = current_user::text AND c.id = i.entity_id
            RETURNING c.id
        )
        SELECT coalesce(jsonb_object_agg('chat:' || w.id, true), '{}')
        INTO written
        FROM (SELECT u.id FROM upserted u UNION ALL SELECT d.id FROM withdrawn d) w;
        done := done || written;
    END IF;

    IF withdraws_chats THEN
        -- A withdrawn chat takes its messages with it. How many rows that is
        -- depends on the chat, so this one is planned for each call.
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

    IF has_messages THEN
        WITH upserted AS (
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
        ), withdrawn AS (
            UPDATE acode_sync.messages m
            SET content = NULL, privacy = 'LOCAL_ONLY', version = m.version + 1,
                changed_at = i.changed_at, origin_device = p_device,
                idempotency_key = i.key, batch_id = p_batch_id
            FROM unnest(items) i
            WHERE i.result IS NULL AND i.entity_type = 'message'
              AND i.op = 'withdraw' AND m.owner_id = current_user::text AND m.id = i.entity_id
            RETURNING m.id
        )
        SELECT coalesce(jsonb_object_agg('message:' || w.id, true), '{}')
        INTO written
        FROM (SELECT u.id FROM upserted u UNION ALL SELECT d.id FROM withdrawn d) w;
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
    RETURN QUERY
    SELECT i.idx, i.key, r.result,
           CASE WHEN i.result IS NOT NULL THEN i.version
                WHEN r.written THEN coalesce(i.version, 0) + 1
                ELSE coalesce(i.version, 0) END,
           i.reason,
           CASE WHEN r.result = 'conflict'
                THEN coalesce(now_row.row, judged_rows -> (i.entity_type || ':' || i.entity_id))
           END
    FROM unnest(items) i
    CROSS JOIN LATERAL (SELECT i.result IS NULL
                               AND done ? (i.entity_type || ':' || i.entity_id) AS written) w
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
    ORDER BY i.idx;
END
$$;

INSERT INTO acode_sync.migrations (name) VALUES ('0008_planned_push')
ON CONFLICT (name) DO NOTHING;

COMMIT;
