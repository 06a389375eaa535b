-- acode-sync local schema, migration 0010: a capture with one index less, and
-- a queue whose size is known without counting it.
--
-- Apply with `acode-sync migrate --local` (or any command: a workspace gets the
-- migrations it lacks when opened), or by hand:
--     sqlite3 .agent/workspace.db < 0010_queue_tally.sql
-- (a second run ends in the same state; the tally is counted again).
--
-- 1. Every captured row entered 0006's sync_outbox_open_state, keyed by an
--    expression (status || ':' || entity_type) computed per insert: about 6%
--    of a captured insert's instructions (docs/BENCHMARKS.md, branch capture3).
--    The queue counts read only its small groups (pending chats, waiting and
--    failed rows); the bulk, pending messages, is counted as the rest of all
--    open rows. So the index now holds just those groups: a captured message
--    (Pending, a message) only tests the condition and enters nothing. The key
--    and the queries that name it stay those of 0006 (acode_sync.outbox), so
--    no other query of the outbox is planned onto it.
--
-- 2. The number of open (Pending or Failed) rows was a count of a million
--    entries of sync_outbox_open for a million-row queue (60-90 ms, the most
--    of `acode-sync queue` after Python's start). sync_queue_tally keeps that
--    number for the rows up to a seq mark (upto_seq); the rows after the mark
--    are counted as a range of sync_outbox_open (seq > upto_seq). A capture
--    inserts after the mark, so no capture pays for the tally: no trigger on
--    INSERT. What changes rows at or below the mark (the mover marking rows
--    done, retention, a conflict, by hand too) keeps the tally right through
--    the two triggers below. The reader (acode_sync.outbox.summary) moves the
--    mark to the newest row, adding the open rows it passes, when many rows
--    lie after it ('fold_queue_tally' in queries.sql).
--
--    Why the mark stays valid: SQLite gives a new row the largest seq in the
--    table plus one, so a row inserted later lands after the mark as long as
--    the mark is not above the largest seq. Deleting the last rows can break
--    that, so the delete trigger lowers the mark to the largest seq left
--    (nothing lies between them, the tally stays what it was). A row inserted
--    with an explicit seq at or below the mark (only the acknowledgement's
--    put-back does that, with Synced rows) is not counted; a table rebuilt
--    like 0008 did must rebuild the tally and its triggers too.

BEGIN IMMEDIATE;

DROP INDEX IF EXISTS sync_outbox_open_state;
CREATE INDEX IF NOT EXISTS sync_outbox_open_few
    ON sync_outbox ((status || ':' || entity_type), next_retry_at)
    WHERE status = 'Failed' OR (status = 'Pending' AND entity_type = 'chat');

CREATE TABLE IF NOT EXISTS sync_queue_tally (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    upto_seq   INTEGER NOT NULL,   -- the tally covers the outbox rows with seq <= upto_seq
    open_rows  INTEGER NOT NULL    -- how many of them are Pending or Failed
);
INSERT OR REPLACE INTO sync_queue_tally (id, upto_seq, open_rows)
VALUES (1, (SELECT coalesce(max(seq), 0) FROM sync_outbox),
        (SELECT count(*) FROM sync_outbox WHERE status IN ('Pending', 'Failed')));

-- A row at or below the mark that opens or closes (or moves) changes the tally.
DROP TRIGGER IF EXISTS sync_outbox_tally_update;
CREATE TRIGGER sync_outbox_tally_update
AFTER UPDATE OF seq, status ON sync_outbox
WHEN OLD.seq IS NOT NEW.seq
  OR (OLD.status = 'Pending' OR OLD.status = 'Failed')
     <> (NEW.status = 'Pending' OR NEW.status = 'Failed')
BEGIN
    UPDATE sync_queue_tally
    SET open_rows = open_rows
            + ((NEW.status = 'Pending' OR NEW.status = 'Failed') AND NEW.seq <= upto_seq)
            - ((OLD.status = 'Pending' OR OLD.status = 'Failed') AND OLD.seq <= upto_seq),
        upto_seq = min(upto_seq, (SELECT coalesce(max(seq), 0) FROM sync_outbox))
    WHERE id = 1;
END;

-- An open row at or below the mark that goes leaves the tally; a row at or
-- above the mark that goes may have been the last: the mark follows.
DROP TRIGGER IF EXISTS sync_outbox_tally_delete;
CREATE TRIGGER sync_outbox_tally_delete
AFTER DELETE ON sync_outbox
WHEN OLD.status = 'Pending' OR OLD.status = 'Failed'
  OR OLD.seq >= (SELECT upto_seq FROM sync_queue_tally WHERE id = 1)
BEGIN
    UPDATE sync_queue_tally
    SET open_rows = open_rows
            - ((OLD.status = 'Pending' OR OLD.status = 'Failed') AND OLD.seq <= upto_seq),
        upto_seq = min(upto_seq, (SELECT coalesce(max(seq), 0) FROM sync_outbox))
    WHERE id = 1;
END;

INSERT OR IGNORE INTO sync_migrations (name, applied_at)
VALUES ('0010_queue_tally', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

COMMIT;
