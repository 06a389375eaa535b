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
--    It goes. The queue's small groups (waiting and failed rows) are ranges
--    of sync_outbox_failed, which no captured row enters; open chats are a
--    range of sync_outbox_open_chats, which a captured message does not enter
--    (it only tests the two conditions). Both are keyed by that expression,
--    which only the queue's counts name (acode_sync.outbox), so no other query
--    of the outbox is planned onto them.
--
-- 2. The number of open (Pending or Failed) rows was a count of a million
--    entries of sync_outbox_open for a million-row queue (60-90 ms, the most
--    of `acode-sync queue` after Python's start). sync_queue_tally keeps that
--    number, and the number of open chat rows, for the rows up to a seq mark
--    (upto_seq); the rows after the mark are counted as ranges of
--    sync_outbox_open and sync_outbox_open_chats (seq > upto_seq). A capture
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
CREATE INDEX IF NOT EXISTS sync_outbox_failed
    ON sync_outbox ((status || ':' || entity_type), next_retry_at)
    WHERE status = 'Failed';
CREATE INDEX IF NOT EXISTS sync_outbox_open_chats
    ON sync_outbox ((status || ':' || entity_type), seq)
    WHERE entity_type = 'chat' AND status IN ('Pending', 'Failed');

CREATE TABLE IF NOT EXISTS sync_queue_tally (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    upto_seq    INTEGER NOT NULL,   -- the tally covers the outbox rows with seq <= upto_seq
    open_rows   INTEGER NOT NULL,   -- how many of them are Pending or Failed
    open_chats  INTEGER NOT NULL    -- and how many of those are chats
);
INSERT OR REPLACE INTO sync_queue_tally (id, upto_seq, open_rows, open_chats)
VALUES (1, (SELECT coalesce(max(seq), 0) FROM sync_outbox),
        (SELECT count(*) FROM sync_outbox WHERE status IN ('Pending', 'Failed')),
        (SELECT count(*) FROM sync_outbox
         WHERE status IN ('Pending', 'Failed') AND entity_type = 'chat'));

-- A row at or below the mark that opens or closes (or moves) changes the tally.
DROP TRIGGER IF EXISTS sync_outbox_tally_update;
CREATE TRIGGER sync_outbox_tally_update
AFTER UPDATE OF seq, status, entity_type ON sync_outbox
WHEN OLD.seq IS NOT NEW.seq OR OLD.entity_type IS NOT NEW.entity_type
  OR (OLD.status = 'Pending' OR OLD.status = 'Failed')
     <> (NEW.status = 'Pending' OR NEW.status = 'Failed')
BEGIN
    UPDATE sync_queue_tally
    SET open_rows = open_rows
            + ((NEW.status = 'Pending' OR NEW.status = 'Failed') AND NEW.seq <= upto_seq)
            - ((OLD.status = 'Pending' OR OLD.status = 'Failed') AND OLD.seq <= upto_seq),
        open_chats = open_chats
            + ((NEW.status = 'Pending' OR NEW.status = 'Failed') AND NEW.seq <= upto_seq
               AND NEW.entity_type = 'chat')
            - ((OLD.status = 'Pending' OR OLD.status = 'Failed') AND OLD.seq <= upto_seq
               AND OLD.entity_type = 'chat'),
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
        open_chats = open_chats
            - ((OLD.status = 'Pending' OR OLD.status = 'Failed') AND OLD.seq <= upto_seq
               AND OLD.entity_type = 'chat'),
        upto_seq = min(upto_seq, (SELECT coalesce(max(seq), 0) FROM sync_outbox))
    WHERE id = 1;
END;

INSERT OR IGNORE INTO sync_migrations (name, applied_at)
VALUES ('0010_queue_tally', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

COMMIT;
