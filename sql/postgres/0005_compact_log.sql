-- acode-sync server schema, migration 0005: a bounded change log. Run by an
-- admin role like 0001 (psql -v ON_ERROR_STOP=1 -f FILE, or `acode-sync
-- migrate --remote`); idempotent.
--
-- * compact_owner(owner, keep_keys) removes the owner's change-log rows that a
--   later change of the same entity supersedes (pull() sends an entity's
--   current state with each of its rows, so only the latest one carries
--   anything), except a chat row that is the last one of its chat before a
--   message row that stays: a puller still meets a chat before its messages.
--   A withdrawal is an entity's latest change, so it stays. compact(keep_keys)
--   does every owner. Every statement is keyed by one owner_id.
-- * applied_keys keeps the idempotency keys of removed rows, with the version
--   they were logged at, for keep_keys: push_probe (0004's, redefined here with
--   the same signature) looks there too, so a resend of a batch acknowledged
--   before compaction is still a duplicate, never applied again. Keys older
--   than keep_keys are dropped.
-- * pull_head() is the owner's last seq: a device whose cursor is ahead of it
--   (the server was restored) starts its pull over.

BEGIN;
SET LOCAL client_min_messages = warning;
DO $$ BEGIN PERFORM pg_advisory_xact_lock(4902700101); END $$;  -- one migrator at a time

-- -------------------------------------------------------- applied keys ----

CREATE TABLE IF NOT EXISTS acode_sync.applied_keys (
    owner_id         text COLLATE "C" NOT NULL,
    idempotency_key  text NOT NULL,
    version          bigint NOT NULL,
    seq              bigint NOT NULL,
    logged_at        timestamptz NOT NULL,
    PRIMARY KEY (owner_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS applied_keys_age ON acode_sync.applied_keys (owner_id, logged_at);

ALTER TABLE acode_sync.applied_keys ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS own_rows ON acode_sync.applied_keys;
CREATE POLICY own_rows ON acode_sync.applied_keys
    USING (owner_id = current_user::text) WITH CHECK (owner_id = current_user::text);

-- ------------------------------------------------------------------ push ----
-- 0004's probe, word for word, but for the duplicate look-up: a key is logged
-- when the change log has it, or applied_keys keeps it from a compacted row.
CREATE OR REPLACE FUNCTION acode_sync.push_probe(p_items jsonb)
RETURNS TABLE (idx integer, key text, entity_type text, entity_id text, op text,
               base_version bigint, changed_at timestamptz, payload jsonb, chat_id text,
               in_batch boolean, logged_version bigint, current_version bigint,
               current_row jsonb, parent_privacy text, parent_changed_at timestamptz,
               parent_origin text)
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
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
    )
    SELECT p.*, p.chat_id = ANY (batch.chats), logged.version,
           coalesce(ch.version, m.version), coalesce(ch.row, m.row),
           parent.privacy, parent.changed_at, parent.origin_device
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
        SELECT c.version, acode_sync.wire_row(c) AS row FROM acode_sync.chats c
        WHERE p.entity_type = 'chat' AND c.owner_id = current_user::text AND c.id = p.entity_id
        FOR UPDATE
    ) ch ON true
    LEFT JOIN LATERAL (
        SELECT mm.version, acode_sync.wire_row(mm) AS row FROM acode_sync.messages mm
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

-- ------------------------------------------------------------- security ----
-- Compaction is an admin's; a device reads its own kept keys (through
-- push_probe, as the caller) and its own head.

REVOKE ALL ON acode_sync.applied_keys FROM PUBLIC;
REVOKE ALL ON FUNCTION acode_sync.compact_owner(text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION acode_sync.compact(interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION acode_sync.pull_head() FROM PUBLIC;
GRANT SELECT ON acode_sync.applied_keys, acode_sync.owner_clock TO acode_sync_device;
GRANT EXECUTE ON FUNCTION acode_sync.pull_head() TO acode_sync_device;

INSERT INTO acode_sync.migrations (name) VALUES ('0005_compact_log')
ON CONFLICT (name) DO NOTHING;

COMMIT;
