-- acode-sync server schema, migration 0006: plans that stay on the index for
-- an owner the planner's statistics do not know. Run by an admin role like 0001
-- (psql -v ON_ERROR_STOP=1 -f FILE, or `acode-sync migrate --remote`);
-- idempotent.
--
-- The case: statistics gathered when every owner fitted in the owner_id
-- most-common-values list (fewer owners than the statistics target), then a
-- new owner writes. The planner takes the new owner for an empty one (1 row)
-- and may join by filter instead of by index, reading all of that owner's
-- rows for each item: measured on 200,000 changes over 100 owners, a pull page
-- of 1,000 took 9.6x and a push of 50 2.3x the same on an empty server
-- (docs/BENCHMARKS.md, scale-out). Until autovacuum analyzes again, which may
-- be long on a big table.
--
-- * owner_id keeps a statistics target of 1 on chats, messages and changes:
--   at most one most-common owner, so an owner the statistics have not seen
--   is estimated like an average one (table rows / owners), not as empty.
--   The tables are analyzed here so that existing statistics follow.
-- * pull(after, limit, device) is 0004's, answer for answer, with the entity
--   of each change found by a LATERAL look-up that can only be an index probe
--   on (owner_id, id), whatever the estimates.
-- * utc_ms(t) is STABLE, as its body is (to_char of a timestamp is): declared
--   IMMUTABLE, the planner could not inline it, and every time rendered by
--   pull() and the wire shapes (four per change sent) was a call of its own.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(4902700101); END $$;  -- one migrator at a time

-- ------------------------------------------------------------------ time ----

CREATE OR REPLACE FUNCTION acode_sync.utc_ms(t timestamptz) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
$$;

-- ------------------------------------------------------------------ pull ----

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

-- ------------------------------------------------------------ statistics ----

ALTER TABLE acode_sync.chats ALTER COLUMN owner_id SET STATISTICS 1;
ALTER TABLE acode_sync.messages ALTER COLUMN owner_id SET STATISTICS 1;
ALTER TABLE acode_sync.changes ALTER COLUMN owner_id SET STATISTICS 1;
ANALYZE acode_sync.chats, acode_sync.messages, acode_sync.changes;

INSERT INTO acode_sync.migrations (name) VALUES ('0006_plans_for_new_owners')
ON CONFLICT (name) DO NOTHING;

COMMIT;
