-- acode-sync server schema, migration 0009: push()'s validation reads fewer
-- times with a regular expression, the same verdicts. Run by an admin role
-- like 0001 (psql -v ON_ERROR_STOP=1 -f FILE, or `acode-sync migrate
-- --remote`); idempotent.
--
-- push_problem(), inlined into push() (0008), checked each item's created_at
-- and updated_at with iso_time_ok(), a regular expression of about 3 us a
-- call on this project's machine (the change time, a third, is checked in
-- push() itself): with the foreign-key checks and the change log, the one
-- cost a push has over INSERTing the same rows. A row the client captured
-- new carries one time three times. Now created_at is taken as well-formed
-- without the expression when it is the change time's text as utc_ms()
-- renders it (about 0.6 us; a format the expression accepts), and updated_at
-- when it is the same JSON value as created_at, checked just before it. Any
-- other value is checked as before. Measured: `python
-- benchmarks/push_interleaved.py --batch 1000 --calls 40 --reference
-- 0008_planned_push`, p50 56.4 -> 51.7 ms a push of 1,000 (docs/BENCHMARKS.md).
-- tests/integration/test_push_problem_0009.py holds every verdict to 0004's
-- on a product of hostile times and change times.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(4902700101); END $$;  -- one migrator at a time

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

INSERT INTO acode_sync.migrations (name) VALUES ('0009_one_time_check_fewer')
ON CONFLICT (name) DO NOTHING;

COMMIT;
