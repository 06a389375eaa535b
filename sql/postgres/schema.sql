-- The full server schema of a fresh install: what the migrations in this
-- folder add up to (tests/migration/test_postgres_migrations.py checks it:
-- tables, constraints, indexes, triggers, function bodies, policies, grants).
-- For reading, and for a fresh install by hand, run by an admin role:
--     psql -v ON_ERROR_STOP=1 -f schema.sql "postgresql://admin@host/db"
-- It records the migrations it stands for (without checksums: unknown), so
-- `acode-sync migrate --remote` afterwards has nothing to do. An existing
-- server is upgraded with the numbered files, never with this one.
--
-- When a migration changes the schema, change this file the same way.

BEGIN;
SET LOCAL client_min_messages = warning;  -- no NOTICE per IF NOT EXISTS
DO $$ BEGIN PERFORM pg_advisory_xact_lock(4902700101); END $$;  -- one migrator at a time

CREATE SCHEMA IF NOT EXISTS acode_sync;

CREATE TABLE IF NOT EXISTS acode_sync.migrations (
    name        text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    sha256      text
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'acode_sync_device') THEN
        CREATE ROLE acode_sync_device NOLOGIN;
    END IF;
END
$$;

-- ------------------------------------------------------------- entities ----
-- privacy LOCAL_ONLY on the server marks a withdrawn entity: a tombstone with
-- its data removed, kept so that versions stay ordered.

CREATE TABLE IF NOT EXISTS acode_sync.chats (
    owner_id         text COLLATE "C" NOT NULL DEFAULT current_user,
    id               text NOT NULL,
    title            text NOT NULL DEFAULT '',
    privacy          text NOT NULL DEFAULT 'FULL'
                     CHECK (privacy IN ('FULL', 'REDACTED', 'LOCAL_ONLY')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    version          bigint NOT NULL DEFAULT 1,
    changed_at       timestamptz NOT NULL DEFAULT now(),
    origin_device    text,
    idempotency_key  text,
    batch_id         text,
    PRIMARY KEY (owner_id, id),
    CHECK (privacy <> 'LOCAL_ONLY' OR title = '')
);

CREATE TABLE IF NOT EXISTS acode_sync.messages (
    owner_id         text COLLATE "C" NOT NULL DEFAULT current_user,
    id               text NOT NULL,
    chat_id          text NOT NULL,
    role             text NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content          text,
    privacy          text NOT NULL DEFAULT 'FULL'
                     CHECK (privacy IN ('FULL', 'REDACTED', 'LOCAL_ONLY')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    version          bigint NOT NULL DEFAULT 1,
    changed_at       timestamptz NOT NULL DEFAULT now(),
    origin_device    text,
    idempotency_key  text,
    batch_id         text,
    PRIMARY KEY (owner_id, id),
    FOREIGN KEY (owner_id, chat_id) REFERENCES acode_sync.chats (owner_id, id),
    CHECK (privacy = 'FULL' OR content IS NULL)
);
CREATE INDEX IF NOT EXISTS messages_chat ON acode_sync.messages (owner_id, chat_id);

-- ----------------------------------------------------------- change log ----

CREATE TABLE IF NOT EXISTS acode_sync.owner_clock (
    owner_id  text COLLATE "C" PRIMARY KEY,
    seq       bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS acode_sync.changes (
    owner_id         text COLLATE "C" NOT NULL,
    seq              bigint NOT NULL,
    entity_type      text NOT NULL CHECK (entity_type IN ('chat', 'message')),
    entity_id        text NOT NULL,
    version          bigint NOT NULL,
    op               text NOT NULL CHECK (op IN ('upsert', 'withdraw')),
    idempotency_key  text NOT NULL,
    batch_id         text,
    origin_device    text,
    changed_at       timestamptz NOT NULL,
    logged_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, seq)
);
-- Scoped per owner on purpose: with one global index, one owner could claim
-- another's keys first and have their real changes answered as duplicates.
CREATE UNIQUE INDEX IF NOT EXISTS changes_idempotency
    ON acode_sync.changes (owner_id, idempotency_key);

-- Statistics keep at most one most-common owner (0006): an owner they have not
-- seen is then estimated like an average one, not as empty, and keeps its
-- plans on the (owner_id, ...) indexes until the next ANALYZE.
ALTER TABLE acode_sync.chats ALTER COLUMN owner_id SET STATISTICS 1;
ALTER TABLE acode_sync.messages ALTER COLUMN owner_id SET STATISTICS 1;
ALTER TABLE acode_sync.changes ALTER COLUMN owner_id SET STATISTICS 1;

-- The keys of compacted change-log rows, kept for a retention window (0005).
CREATE TABLE IF NOT EXISTS acode_sync.applied_keys (
    owner_id         text COLLATE "C" NOT NULL,
    idempotency_key  text NOT NULL,
    version          bigint NOT NULL,
    seq              bigint NOT NULL,
    logged_at        timestamptz NOT NULL,
    PRIMARY KEY (owner_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS applied_keys_age ON acode_sync.applied_keys (owner_id, logged_at);

CREATE TABLE IF NOT EXISTS acode_sync.conflicts (
    owner_id         text COLLATE "C" NOT NULL DEFAULT current_user,
    id               bigint GENERATED ALWAYS AS IDENTITY,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    entity_type      text NOT NULL,
    entity_id        text NOT NULL,
    idempotency_key  text NOT NULL,
    origin_device    text,
    base_version     bigint NOT NULL,
    server_version   bigint NOT NULL,
    incoming         jsonb NOT NULL,   -- the change that was not applied as sent
    server_row       jsonb NOT NULL,   -- the server's row when it arrived
    resolution       text NOT NULL DEFAULT 'reported',
    PRIMARY KEY (owner_id, id)
);

-- Versioning of writes that do not come through push(): an admin's UPDATE in
-- psql, another tool. They get the next version, the server's clock and a
-- fresh key, so that they are logged and reach every device like any change.
CREATE OR REPLACE FUNCTION acode_sync.version_direct_write() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        NEW.version := OLD.version + 1;
    END IF;
    NEW.changed_at := now();
    NEW.idempotency_key := 'srv-' || gen_random_uuid();
    NEW.origin_device := 'server';
    NEW.batch_id := NULL;
    RETURN NEW;
END
$$;

-- One function for both tables and both events: number the statement's rows
-- in one block per owner and log them. Runs as the schema owner, so devices
-- need no rights on owner_clock or INSERT on changes.
CREATE OR REPLACE FUNCTION acode_sync.log_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    WITH touched AS (
        SELECT owner_id, id, version, privacy, idempotency_key, batch_id, origin_device,
               changed_at,
               row_number() OVER (PARTITION BY owner_id ORDER BY changed_at, id) AS n
        FROM new_rows
    ), per_owner AS (
        SELECT owner_id, count(*) AS n FROM touched GROUP BY owner_id
    ), block AS (
        -- The row lock taken here is held until COMMIT: a later commit can
        -- never carry a smaller seq than one a puller has already seen.
        INSERT INTO acode_sync.owner_clock AS clock (owner_id, seq)
        SELECT owner_id, n FROM per_owner ORDER BY owner_id
        ON CONFLICT (owner_id) DO UPDATE SET seq = clock.seq + EXCLUDED.seq
        RETURNING clock.owner_id, clock.seq AS last_seq
    )
    INSERT INTO acode_sync.changes (owner_id, seq, entity_type, entity_id, version, op,
                                    idempotency_key, batch_id, origin_device, changed_at)
    SELECT t.owner_id, b.last_seq - p.n + t.n,
           CASE TG_TABLE_NAME WHEN 'chats' THEN 'chat' ELSE 'message' END,
           t.id, t.version,
           CASE WHEN t.privacy = 'LOCAL_ONLY' THEN 'withdraw' ELSE 'upsert' END,
           t.idempotency_key, t.batch_id, t.origin_device, t.changed_at
    FROM touched t
    JOIN per_owner p USING (owner_id)
    JOIN block b USING (owner_id);
    RETURN NULL;
END
$$;

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['chats', 'messages'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS version_direct_insert ON acode_sync.%I', tbl);
        EXECUTE format(
            'CREATE TRIGGER version_direct_insert BEFORE INSERT ON acode_sync.%I '
            'FOR EACH ROW WHEN (NEW.idempotency_key IS NULL) '
            'EXECUTE FUNCTION acode_sync.version_direct_write()', tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS version_direct_update ON acode_sync.%I', tbl);
        EXECUTE format(
            'CREATE TRIGGER version_direct_update BEFORE UPDATE ON acode_sync.%I '
            'FOR EACH ROW WHEN (NEW.idempotency_key IS NOT DISTINCT FROM OLD.idempotency_key) '
            'EXECUTE FUNCTION acode_sync.version_direct_write()', tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS log_inserts ON acode_sync.%I', tbl);
        EXECUTE format(
            'CREATE TRIGGER log_inserts AFTER INSERT ON acode_sync.%I '
            'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
            'EXECUTE FUNCTION acode_sync.log_changes()', tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS log_updates ON acode_sync.%I', tbl);
        EXECUTE format(
            'CREATE TRIGGER log_updates AFTER UPDATE ON acode_sync.%I '
            'REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT '
            'EXECUTE FUNCTION acode_sync.log_changes()', tbl);
    END LOOP;
END
$$;

-- ------------------------------------------------------------------ push ----
-- One batch, one round trip, one transaction. Each item of p_items:
--   {"key", "entity_type", "entity_id", "op": "upsert"|"withdraw",
--    "base_version", "changed_at", "payload": {...}}
-- Each gets one result: applied, duplicate (its key is already logged: that is
-- success), conflict (base_version behind the server: not applied, logged,
-- the server's row returned) or rejected (invalid; a reason is returned).
-- SECURITY INVOKER: row-level security holds the caller to its own rows.

DO $$
BEGIN
    IF to_regtype('acode_sync.push_item') IS NULL THEN
        CREATE TYPE acode_sync.push_item AS (
            idx             integer,
            key             text,
            entity_type     text,
            entity_id       text,
            op              text,
            base_version    bigint,
            changed_at      timestamptz,
            payload         jsonb,
            result          text,
            version         bigint,
            reason          text
        );
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION acode_sync.iso_time_ok(value jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_typeof(value) = 'string'
       AND value #>> '{}' ~ '^\d{4}-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]\d\d:?\d\d)$'
$$;

-- ------------------------------------------------------------------ time ----
-- Times go out in the local format (UTC, ms, Z). STABLE, as its body is: the
-- planner inlines it where a time is rendered (four times per change pulled).

CREATE OR REPLACE FUNCTION acode_sync.utc_ms(t timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- ------------------------------------------------------------ wire shape ----
-- STABLE SQL with no SET clause: the planner inlines them into the caller,
-- so pull() still reads a message's content only for a payload it sends.

CREATE OR REPLACE FUNCTION acode_sync.wire_payload(c acode_sync.chats) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', c.id, 'title', c.title, 'privacy', c.privacy,
        'created_at', acode_sync.utc_ms(c.created_at),
        'updated_at', acode_sync.utc_ms(c.updated_at),
        'deleted_at', acode_sync.utc_ms(c.deleted_at))
$$;

CREATE OR REPLACE FUNCTION acode_sync.wire_payload(m acode_sync.messages) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', m.id, 'chat_id', m.chat_id, 'role', m.role, 'content', m.content,
        'privacy', m.privacy,
        'created_at', acode_sync.utc_ms(m.created_at),
        'updated_at', acode_sync.utc_ms(m.updated_at),
        'deleted_at', acode_sync.utc_ms(m.deleted_at))
$$;

CREATE OR REPLACE FUNCTION acode_sync.wire_row(c acode_sync.chats) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT acode_sync.wire_payload(c) || jsonb_build_object(
        'version', c.version, 'changed_at', acode_sync.utc_ms(c.changed_at),
        'origin_device', c.origin_device, 'idempotency_key', c.idempotency_key,
        'batch_id', c.batch_id)
$$;

CREATE OR REPLACE FUNCTION acode_sync.wire_row(m acode_sync.messages) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT acode_sync.wire_payload(m) || jsonb_build_object(
        'version', m.version, 'changed_at', acode_sync.utc_ms(m.changed_at),
        'origin_device', m.origin_device, 'idempotency_key', m.idempotency_key,
        'batch_id', m.batch_id)
$$;

-- ------------------------------------------------------------------ pull ----
-- A page of this owner's change log after the cursor, each change with its
-- entity's current state (the log does not repeat payloads: a puller needs
-- only the latest state); op 'withdraw' marks an entity withdrawn from every
-- device. No payload (NULL) where that state is p_device's own write: it needs
-- only the seq and version. The device is compared with `=`, so
-- pull(after, limit, NULL) leaves out no payload: that is pull(after, limit),
-- kept for clients older than server migration 0003.

CREATE OR REPLACE FUNCTION acode_sync.pull(p_after bigint, p_limit integer, p_device text)
RETURNS TABLE (seq bigint, idempotency_key text, entity_type text, entity_id text, op text,
               version bigint, origin_device text, changed_at text, payload text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.seq, c.idempotency_key, c.entity_type, c.entity_id,
           CASE WHEN e.privacy = 'LOCAL_ONLY' THEN 'withdraw' ELSE 'upsert' END,
           e.version, e.origin_device, acode_sync.utc_ms(e.changed_at), e.payload
    FROM acode_sync.changes c
    -- One probe of one table per change (the other branch is skipped by its
    -- entity_type test); a change whose entity is gone has no row here.
    CROSS JOIN LATERAL (
        SELECT ch.privacy, ch.version, ch.origin_device, ch.changed_at,
               -- The payload is built (and a message's content read) only when sent.
               CASE WHEN ch.origin_device = p_device THEN NULL
                    ELSE acode_sync.wire_payload(ch)::text END AS payload
        FROM acode_sync.chats ch
        WHERE c.entity_type = 'chat' AND ch.owner_id = c.owner_id AND ch.id = c.entity_id
        UNION ALL
        SELECT m.privacy, m.version, m.origin_device, m.changed_at,
               CASE WHEN m.origin_device = p_device THEN NULL
                    ELSE acode_sync.wire_payload(m)::text END
        FROM acode_sync.messages m
        WHERE c.entity_type = 'message' AND m.owner_id = c.owner_id AND m.id = c.entity_id
        LIMIT 1
    ) e
    WHERE c.owner_id = current_user::text AND c.seq > p_after
    ORDER BY c.seq
    LIMIT p_limit
$$;

CREATE OR REPLACE FUNCTION acode_sync.pull(p_after bigint, p_limit integer)
RETURNS TABLE (seq bigint, idempotency_key text, entity_type text, entity_id text, op text,
               version bigint, origin_device text, changed_at text, payload text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM acode_sync.pull(p_after, p_limit, NULL)
$$;

-- ------------------------------------------------------------------ push ----
-- What the server will not store, item by item (NULL: nothing wrong).
-- p_chat_known: the message's chat is on the server or in the same batch.

CREATE OR REPLACE FUNCTION acode_sync.push_problem(
    p_key text, p_entity_type text, p_entity_id text, p_op text, p_base_version bigint,
    p_changed_at timestamptz, p_payload jsonb, p_chat_known boolean
) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN coalesce(p_key, '') = '' THEN 'missing idempotency key'
        WHEN coalesce(p_entity_id, '') = '' THEN 'missing entity_id'
        WHEN p_entity_type IS DISTINCT FROM 'chat' AND p_entity_type IS DISTINCT FROM 'message'
            THEN format('unknown entity_type %L', p_entity_type)
        WHEN p_op NOT IN ('upsert', 'withdraw') THEN format('unknown op %L', p_op)
        WHEN p_base_version IS NULL OR p_base_version < 0 THEN 'base_version must be >= 0'
        WHEN p_changed_at IS NULL THEN 'changed_at must be an ISO-8601 time'
        WHEN p_op = 'withdraw' THEN NULL
        WHEN jsonb_typeof(p_payload) IS DISTINCT FROM 'object' THEN 'payload must be an object'
        WHEN p_payload->>'id' IS DISTINCT FROM p_entity_id THEN 'payload id differs from entity_id'
        WHEN coalesce(p_payload->>'privacy', '') NOT IN ('FULL', 'REDACTED')
            THEN format('privacy %L cannot be uploaded', p_payload->>'privacy')
        -- A time is checked by a regular expression (iso_time_ok), unless it
        -- is the text of the change time as pull() renders it (utc_ms: the
        -- format the expression accepts), or, for updated_at, created_at's
        -- value, checked just above: a new row's three times are mostly one.
        WHEN p_payload->>'created_at' IS DISTINCT FROM acode_sync.utc_ms(p_changed_at)
             AND NOT acode_sync.iso_time_ok(p_payload->'created_at')
            THEN 'created_at must be an ISO-8601 time'
        WHEN p_payload->'updated_at' IS DISTINCT FROM p_payload->'created_at'
             AND NOT acode_sync.iso_time_ok(p_payload->'updated_at')
            THEN 'updated_at must be an ISO-8601 time'
        WHEN jsonb_typeof(p_payload->'deleted_at') NOT IN ('null', 'string')
             OR (jsonb_typeof(p_payload->'deleted_at') = 'string'
                 AND NOT acode_sync.iso_time_ok(p_payload->'deleted_at'))
            THEN 'deleted_at must be null or an ISO-8601 time'
        WHEN p_entity_type = 'chat' AND jsonb_typeof(p_payload->'title') IS DISTINCT FROM 'string'
            THEN 'chat title must be a string'
        WHEN p_entity_type = 'message'
             AND coalesce(p_payload->>'role', '') NOT IN ('user', 'assistant', 'system', 'tool')
            THEN format('unknown message role %L', p_payload->>'role')
        WHEN p_entity_type = 'message' AND p_payload->>'privacy' = 'FULL'
             AND jsonb_typeof(p_payload->'content') IS DISTINCT FROM 'string'
            THEN 'message content must be a string'
        WHEN p_entity_type = 'message' AND coalesce(p_payload->>'chat_id', '') = ''
            THEN 'message chat_id missing'
        WHEN p_entity_type = 'message' AND NOT p_chat_known
            THEN format('chat %s is not on the server', p_payload->>'chat_id')
    END
$$;

-- One batch, one round trip, one transaction; 0002's answers, in one body (0007).
-- Its look-ups are static SQL with plans cached by the session (0008): each is
-- a LATERAL probe of one row by a unique index, driven by the batch's rows,
-- and `SET enable_seqscan = off` keeps every plan made under push() on the
-- indexes whatever the statistics were when it was cached. The one statement
-- whose plan depends on sizes (a withdrawn chat's messages) runs by EXECUTE,
-- planned for each call. Each table's upsert and withdrawals are one
-- statement: the change log numbers its inserted rows before its updated ones.
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

-- ------------------------------------------------------------------ head ----
-- The owner's last seq handed out (0 before any change).
CREATE OR REPLACE FUNCTION acode_sync.pull_head() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT k.seq FROM acode_sync.owner_clock k
                     WHERE k.owner_id = current_user::text), 0)
$$;

-- ------------------------------------------------------------- compact ----
-- One owner's log, in one transaction: superseded rows out, their keys kept
-- in applied_keys while younger than p_keep_keys, older kept keys dropped.
-- Concurrent pushes are safe: a key moves from the log to applied_keys in one
-- commit, and a row committed after this statement's snapshot is never removed.
CREATE OR REPLACE FUNCTION acode_sync.compact_owner(p_owner text, p_keep_keys interval)
RETURNS TABLE (owner_id text, removed bigint, kept_rows bigint, keys_kept bigint,
               keys_dropped bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n_removed bigint;
    n_keys bigint;
    n_dropped bigint;
    n_left bigint;
BEGIN
    WITH log AS (
        SELECT c.seq, c.entity_type,
               CASE WHEN c.entity_type = 'chat' THEN c.entity_id ELSE m.chat_id END AS chat_id,
               c.seq = max(c.seq) OVER (PARTITION BY c.entity_type, c.entity_id) AS latest
        FROM acode_sync.changes c
        LEFT JOIN acode_sync.messages m
               ON c.entity_type = 'message' AND m.owner_id = c.owner_id AND m.id = c.entity_id
        WHERE c.owner_id = p_owner
    ), placed AS (  -- each row with the last chat row of its chat up to it
        SELECT l.*, max(l.seq) FILTER (WHERE l.entity_type = 'chat')
                        OVER (PARTITION BY l.chat_id ORDER BY l.seq) AS chat_before
        FROM log l
    ), needed AS (  -- chat rows that a message row which stays comes after
        SELECT DISTINCT p.chat_before AS seq FROM placed p
        WHERE p.entity_type = 'message' AND p.latest AND p.chat_before IS NOT NULL
    ), removed AS (
        DELETE FROM acode_sync.changes c
        USING placed p
        WHERE c.owner_id = p_owner AND c.seq = p.seq AND NOT p.latest
          AND NOT EXISTS (SELECT 1 FROM needed n WHERE n.seq = p.seq)
        RETURNING c.owner_id, c.idempotency_key, c.version, c.seq, c.logged_at
    ), kept AS (
        INSERT INTO acode_sync.applied_keys AS a (owner_id, idempotency_key, version, seq,
                                                  logged_at)
        SELECT r.owner_id, r.idempotency_key, r.version, r.seq, r.logged_at FROM removed r
        WHERE r.logged_at >= now() - p_keep_keys
        ON CONFLICT ON CONSTRAINT applied_keys_pkey DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM removed), (SELECT count(*) FROM kept)
    INTO n_removed, n_keys;

    DELETE FROM acode_sync.applied_keys a
    WHERE a.owner_id = p_owner AND a.logged_at < now() - p_keep_keys;
    GET DIAGNOSTICS n_dropped = ROW_COUNT;

    SELECT count(*) INTO n_left FROM acode_sync.changes c WHERE c.owner_id = p_owner;
    RETURN QUERY SELECT p_owner, n_removed, n_left, n_keys, n_dropped;
END
$$;

-- Every owner, in one transaction (for psql and cron; `acode-sync server
-- compact` calls compact_owner once per owner, a transaction each).
CREATE OR REPLACE FUNCTION acode_sync.compact(p_keep_keys interval DEFAULT interval '30 days')
RETURNS TABLE (owner_id text, removed bigint, kept_rows bigint, keys_kept bigint,
               keys_dropped bigint)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.* FROM acode_sync.owner_clock k
    CROSS JOIN LATERAL acode_sync.compact_owner(k.owner_id, p_keep_keys) r
    ORDER BY k.owner_id
$$;

-- -------------------------------------------------------------- security ----

ALTER TABLE acode_sync.chats ENABLE ROW LEVEL SECURITY;
ALTER TABLE acode_sync.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE acode_sync.changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE acode_sync.conflicts ENABLE ROW LEVEL SECURITY;
ALTER TABLE acode_sync.owner_clock ENABLE ROW LEVEL SECURITY;
ALTER TABLE acode_sync.applied_keys ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['chats', 'messages', 'changes', 'conflicts', 'owner_clock',
                               'applied_keys'] LOOP
        EXECUTE format('DROP POLICY IF EXISTS own_rows ON acode_sync.%I', tbl);
        EXECUTE format(
            'CREATE POLICY own_rows ON acode_sync.%I '
            'USING (owner_id = current_user::text) WITH CHECK (owner_id = current_user::text)', tbl);
    END LOOP;
END
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA acode_sync FROM PUBLIC;
REVOKE ALL ON FUNCTION acode_sync.log_changes() FROM PUBLIC;
REVOKE ALL ON FUNCTION acode_sync.version_direct_write() FROM PUBLIC;
GRANT USAGE ON SCHEMA acode_sync TO acode_sync_device;
GRANT SELECT, INSERT, UPDATE ON acode_sync.chats, acode_sync.messages TO acode_sync_device;
GRANT SELECT ON acode_sync.changes TO acode_sync_device;
GRANT SELECT, INSERT ON acode_sync.conflicts TO acode_sync_device;
GRANT EXECUTE ON FUNCTION acode_sync.push(text, text, jsonb) TO acode_sync_device;
GRANT EXECUTE ON FUNCTION acode_sync.iso_time_ok(jsonb) TO acode_sync_device;
GRANT EXECUTE ON FUNCTION acode_sync.pull(bigint, integer) TO acode_sync_device;
GRANT EXECUTE ON FUNCTION acode_sync.utc_ms(timestamptz) TO acode_sync_device;

-- The parts run as the caller (row-level security applies); only push(),
-- pull() and the shapes are a device's to call.

REVOKE ALL ON FUNCTION acode_sync.push_problem(text, text, text, text, bigint, timestamptz,
                                               jsonb, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION acode_sync.push_problem(text, text, text, text, bigint, timestamptz,
                                                  jsonb, boolean),
                          acode_sync.wire_payload(acode_sync.chats),
                          acode_sync.wire_payload(acode_sync.messages),
                          acode_sync.wire_row(acode_sync.chats),
                          acode_sync.wire_row(acode_sync.messages)
    TO acode_sync_device;
GRANT EXECUTE ON FUNCTION acode_sync.push(text, text, jsonb),
                          acode_sync.pull(bigint, integer),
                          acode_sync.pull(bigint, integer, text)
    TO acode_sync_device;

REVOKE ALL ON FUNCTION acode_sync.compact_owner(text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION acode_sync.compact(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION acode_sync.pull_head() FROM PUBLIC;
GRANT SELECT ON acode_sync.applied_keys, acode_sync.owner_clock TO acode_sync_device;
GRANT EXECUTE ON FUNCTION acode_sync.pull_head() TO acode_sync_device;

INSERT INTO acode_sync.migrations (name)
VALUES ('0001_server_schema'), ('0002_withdrawn_chat_messages'), ('0003_lean_pull'),
       ('0004_named_push'), ('0005_compact_log'),
       ('0006_plans_for_new_owners'), ('0007_lean_push'), ('0008_planned_push'),
       ('0009_one_time_check_fewer')
ON CONFLICT (name) DO NOTHING;

COMMIT;
