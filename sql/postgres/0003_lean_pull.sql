-- acode-sync server schema, migration 0003: a pull sends a device nothing it
-- already has. Run by an admin role like 0001 (psql -v ON_ERROR_STOP=1 -f FILE,
-- or `acode-sync migrate --remote`); idempotent.
--
-- pull(after, limit) answers every change with its entity's current state,
-- payload included, even when that state is the pulling device's own write: a
-- device that pushed 100,000 messages downloaded all of them back. It only
-- needs their seq, version and origin, to rebase on. pull(after, limit, device)
-- leaves the payload out (NULL) of a change whose entity was last written by
-- `device`, and builds payloads only for the others. The two-argument form
-- stays for clients that predate this migration.

BEGIN;

CREATE OR REPLACE FUNCTION acode_sync.pull(p_after bigint, p_limit integer, p_device text)
RETURNS TABLE (seq bigint, idempotency_key text, entity_type text, entity_id text, op text,
               version bigint, origin_device text, changed_at text, payload text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.seq, c.idempotency_key, c.entity_type, c.entity_id,
           CASE WHEN coalesce(ch.privacy, m.privacy) = 'LOCAL_ONLY'
                THEN 'withdraw' ELSE 'upsert' END,
           coalesce(ch.version, m.version),
           coalesce(ch.origin_device, m.origin_device),
           acode_sync.utc_ms(coalesce(ch.changed_at, m.changed_at)),
           -- The payload is built (and a message's content read) only when sent.
           CASE WHEN coalesce(ch.origin_device, m.origin_device) IS NOT DISTINCT FROM p_device
                THEN NULL
                WHEN c.entity_type = 'chat' THEN
                    jsonb_build_object(
                        'id', ch.id, 'title', ch.title, 'privacy', ch.privacy,
                        'created_at', acode_sync.utc_ms(ch.created_at),
                        'updated_at', acode_sync.utc_ms(ch.updated_at),
                        'deleted_at', acode_sync.utc_ms(ch.deleted_at))::text
                ELSE
                    jsonb_build_object(
                        'id', m.id, 'chat_id', m.chat_id, 'role', m.role,
                        'content', m.content, 'privacy', m.privacy,
                        'created_at', acode_sync.utc_ms(m.created_at),
                        'updated_at', acode_sync.utc_ms(m.updated_at),
                        'deleted_at', acode_sync.utc_ms(m.deleted_at))::text
           END
    FROM acode_sync.changes c
    LEFT JOIN acode_sync.chats ch
           ON c.entity_type = 'chat' AND ch.owner_id = c.owner_id AND ch.id = c.entity_id
    LEFT JOIN acode_sync.messages m
           ON c.entity_type = 'message' AND m.owner_id = c.owner_id AND m.id = c.entity_id
    WHERE c.owner_id = current_user::text AND c.seq > p_after
      AND (ch.id IS NOT NULL OR m.id IS NOT NULL)
    ORDER BY c.seq
    LIMIT p_limit
$$;

GRANT EXECUTE ON FUNCTION acode_sync.pull(bigint, integer, text) TO acode_sync_device;

INSERT INTO acode_sync.migrations (name) VALUES ('0003_lean_pull')
ON CONFLICT (name) DO NOTHING;

COMMIT;
