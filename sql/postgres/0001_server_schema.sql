-- acode-sync server schema, migration 0001. Run by an admin role:
--     psql -v ON_ERROR_STOP=1 -f 0001_server_schema.sql "postgresql://admin@host/db"
-- or `acode-sync migrate --remote`. Every statement is idempotent, so running
-- the file again changes nothing.
--
-- Shape: entity tables (chats, messages) keyed (owner_id, id); a change log
-- written only by statement-level triggers, numbered per owner from a counter
-- row whose lock is held to commit (so seq order is commit order); a unique
-- (owner_id, idempotency_key); a conflict log; row-level security per owner.
-- No session state anywhere: it runs behind PgBouncer in transaction mode.
--
-- owner_id is COLLATE "C", the collation of current_user (type name), and is
-- compared with `current_user::text` (text = text): only so is it an index
-- condition that also gives the index order (with the database's default
-- collation, or the cross-type text = name operator, a pull scans and sorts
-- the whole change log for every page).

BEGIN;
SET LOCAL client_min_messages = warning;  -- no NOTICE per IF NOT EXISTS
DO $$ BEGIN PERFORM pg_advisory_xact_lock(4902700101); END $$;  -- one migrator at a time

CREATE SCHEMA IF NOT EXISTS acode_sync;

CREATE TABLE IF NOT EXISTS acode_sync.migrations (
    name        text PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
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

    SELECT array_agg(c.id) INTO known_chats
    FROM acode_sync.chats c
    WHERE c.owner_id = current_user::text AND c.id = ANY (named_chats) AND c.privacy <> 'LOCAL_ONLY';

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
            THEN format('chat %s is not on the server', i.payload->>'chat_id')
        END AS problem) AS v;

    -- Conflicts: the change was made on a version the server has moved past.
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
    ), logged AS (
        INSERT INTO acode_sync.conflicts (entity_type, entity_id, idempotency_key,
                                          origin_device, base_version, server_version,
                                          incoming, server_row)
        SELECT i.entity_type, i.entity_id, i.key, p_device, i.base_version, f.version,
               jsonb_build_object('op', i.op, 'changed_at', i.changed_at,
                                  'payload', i.payload),
               f.row
        FROM unnest(items) i
        JOIN found f ON f.entity_type = i.entity_type AND f.id = i.entity_id
        WHERE i.result IS NULL AND i.op = 'upsert' AND f.version <> i.base_version
        RETURNING entity_type, entity_id
    )
    SELECT array_agg(ROW(i.idx, i.key, i.entity_type, i.entity_id, i.op,
                         i.base_version, i.changed_at, i.payload,
                         CASE WHEN l.entity_id IS NULL THEN i.result ELSE 'conflict' END,
                         coalesce(i.version, f.version), i.reason)::acode_sync.push_item
                     ORDER BY i.idx)
    INTO items
    FROM unnest(items) i
    LEFT JOIN found f ON f.entity_type = i.entity_type AND f.id = i.entity_id
    LEFT JOIN logged l ON l.entity_type = i.entity_type AND l.entity_id = i.entity_id
                      AND i.result IS NULL;

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
    SELECT coalesce(jsonb_object_agg('chat:' || c.id, to_jsonb(c) - 'owner_id'), '{}')
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

-- ------------------------------------------------------------------ pull ----
-- A page of this owner's change log after the cursor, each change with its
-- entity's current state (the log does not repeat payloads: a puller needs
-- only the latest state). Times come back in the local format (UTC, ms, Z).
-- op 'withdraw' marks an entity withdrawn from every device (privacy
-- LOCAL_ONLY on its origin device).

CREATE OR REPLACE FUNCTION acode_sync.utc_ms(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

CREATE OR REPLACE FUNCTION acode_sync.pull(p_after bigint, p_limit integer)
RETURNS TABLE (seq bigint, idempotency_key text, entity_type text, entity_id text, op text,
               version bigint, origin_device text, changed_at text, payload text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.seq, c.idempotency_key, c.entity_type, c.entity_id,
           CASE WHEN e.privacy = 'LOCAL_ONLY' THEN 'withdraw' ELSE 'upsert' END,
           e.version, e.origin_device, acode_sync.utc_ms(e.changed_at), e.payload
    FROM acode_sync.changes c
    JOIN LATERAL (
        SELECT ch.version, ch.origin_device, ch.changed_at, ch.privacy,
               jsonb_build_object(
                   'id', ch.id, 'title', ch.title, 'privacy', ch.privacy,
                   'created_at', acode_sync.utc_ms(ch.created_at),
                   'updated_at', acode_sync.utc_ms(ch.updated_at),
                   'deleted_at', acode_sync.utc_ms(ch.deleted_at))::text AS payload
        FROM acode_sync.chats ch
        WHERE c.entity_type = 'chat' AND ch.owner_id = c.owner_id AND ch.id = c.entity_id
        UNION ALL
        SELECT m.version, m.origin_device, m.changed_at, m.privacy,
               jsonb_build_object(
                   'id', m.id, 'chat_id', m.chat_id, 'role', m.role, 'content', m.content,
                   'privacy', m.privacy,
                   'created_at', acode_sync.utc_ms(m.created_at),
                   'updated_at', acode_sync.utc_ms(m.updated_at),
                   'deleted_at', acode_sync.utc_ms(m.deleted_at))::text
        FROM acode_sync.messages m
        WHERE c.entity_type = 'message' AND m.owner_id = c.owner_id AND m.id = c.entity_id
    ) e ON true
    WHERE c.owner_id = current_user::text AND c.seq > p_after
    ORDER BY c.seq
    LIMIT p_limit
$$;

-- -------------------------------------------------------------- security ----

ALTER TABLE acode_sync.chats ENABLE ROW LEVEL SECURITY;
ALTER TABLE acode_sync.messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE acode_sync.changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE acode_sync.conflicts ENABLE ROW LEVEL SECURITY;
ALTER TABLE acode_sync.owner_clock ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['chats', 'messages', 'changes', 'conflicts', 'owner_clock'] LOOP
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

INSERT INTO acode_sync.migrations (name) VALUES ('0001_server_schema')
ON CONFLICT (name) DO NOTHING;

COMMIT;
