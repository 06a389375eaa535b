-- The full local schema of a fresh install: what the migrations in this folder
-- add up to (tests/migration checks it). Reference only; the runner applies the
-- numbered files. Regenerate: sqlite3 NEW.db < each migration; sqlite3 NEW.db .schema
-- Before the first table: freed pages go back to the file system (0007).
PRAGMA auto_vacuum = INCREMENTAL;
CREATE TABLE sync_migrations (
    name        TEXT PRIMARY KEY,
    applied_at  TEXT NOT NULL
);
CREATE TABLE sync_migration_checksums (
    name    TEXT PRIMARY KEY NOT NULL,
    sha256  TEXT NOT NULL
);
CREATE TABLE sync_state (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    applying      INTEGER NOT NULL DEFAULT 0 CHECK (applying IN (0, 1)),
    paused        INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    pull_cursor   INTEGER NOT NULL DEFAULT 0,
    last_push_at  TEXT,
    last_pull_at  TEXT,
    last_error    TEXT,
    last_error_at TEXT
);
CREATE TABLE chats (
    id           TEXT PRIMARY KEY NOT NULL,
    title        TEXT NOT NULL DEFAULT '',
    privacy      TEXT NOT NULL DEFAULT 'FULL'
                 CHECK (privacy IN ('FULL', 'REDACTED', 'LOCAL_ONLY')),
    version      INTEGER NOT NULL DEFAULT 0,
    sync_status  TEXT NOT NULL DEFAULT 'Pending'
                 CHECK (sync_status IN ('Pending', 'Synced', 'Conflict', 'Failed')),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    deleted_at   TEXT
);
CREATE TABLE messages (
    id           TEXT PRIMARY KEY NOT NULL,
    chat_id      TEXT NOT NULL REFERENCES chats (id),
    role         TEXT NOT NULL,
    content      TEXT NOT NULL DEFAULT '',
    privacy      TEXT NOT NULL DEFAULT 'FULL'
                 CHECK (privacy IN ('FULL', 'REDACTED', 'LOCAL_ONLY')),
    version      INTEGER NOT NULL DEFAULT 0,
    sync_status  TEXT NOT NULL DEFAULT 'Pending'
                 CHECK (sync_status IN ('Pending', 'Synced', 'Conflict', 'Failed')),
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    deleted_at   TEXT
);
CREATE INDEX messages_chat ON messages (chat_id, created_at);
CREATE TABLE "sync_outbox" (
    seq              INTEGER PRIMARY KEY,
    idempotency_key  TEXT NOT NULL,
    entity_type      TEXT NOT NULL CHECK (entity_type IN ('chat', 'message')),
    entity_id        TEXT NOT NULL,
    op               TEXT NOT NULL DEFAULT 'upsert' CHECK (op IN ('upsert', 'withdraw')),
    base_version     INTEGER NOT NULL,
    payload          TEXT CHECK (payload IS NOT NULL OR status NOT IN ('Pending', 'Failed')),
    status           TEXT NOT NULL DEFAULT 'Pending'
                     CHECK (status = 'Pending' OR status = 'Synced' OR status = 'Failed'
                            OR status = 'Conflict' OR status = 'Superseded'),
    retry_count      INTEGER NOT NULL DEFAULT 0,
    next_retry_at    TEXT,
    last_error       TEXT,
    changed_at       TEXT NOT NULL,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    synced_at        TEXT
);
CREATE INDEX sync_outbox_open ON sync_outbox (seq)
    WHERE status IN ('Pending', 'Failed');
CREATE INDEX sync_outbox_entity ON sync_outbox (entity_id, seq)
    WHERE status IN ('Pending', 'Failed');
CREATE INDEX sync_outbox_failed
    ON sync_outbox ((status || ':' || entity_type), next_retry_at)
    WHERE status = 'Failed';
CREATE INDEX sync_outbox_open_chats
    ON sync_outbox ((status || ':' || entity_type), seq)
    WHERE entity_type = 'chat' AND status IN ('Pending', 'Failed');
CREATE INDEX sync_outbox_synced ON sync_outbox (synced_at)
    WHERE status = 'Synced';
CREATE INDEX sync_outbox_open_errors ON sync_outbox (status)
    WHERE status IN ('Pending', 'Failed') AND last_error IS NOT NULL;
CREATE TABLE "sync_inbox" (
    seq              INTEGER PRIMARY KEY,          -- the server's change seq
    idempotency_key  TEXT NOT NULL,
    entity_type      TEXT NOT NULL CHECK (entity_type IN ('chat', 'message')),
    entity_id        TEXT NOT NULL,
    op               TEXT NOT NULL DEFAULT 'upsert' CHECK (op IN ('upsert', 'withdraw')),
    version          INTEGER NOT NULL,
    origin_device    TEXT,
    changed_at       TEXT NOT NULL,
    payload          TEXT,                         -- NULL: this device's own change
    status           TEXT NOT NULL DEFAULT 'Pending'
                     CHECK (status IN ('Pending', 'Applied', 'Skipped', 'Conflict')),
    received_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    applied_at       TEXT
);
CREATE INDEX sync_inbox_pending ON sync_inbox (seq) WHERE status = 'Pending';
CREATE TABLE sync_conflicts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_type      TEXT NOT NULL CHECK (entity_type IN ('chat', 'message')),
    entity_id        TEXT NOT NULL,
    detected_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    detected_by      TEXT NOT NULL CHECK (detected_by IN ('push', 'pull')),
    policy           TEXT NOT NULL,
    winner           TEXT NOT NULL CHECK (winner IN ('local', 'remote')),
    local_version    INTEGER NOT NULL,
    local_changed_at TEXT,
    local_payload    TEXT,
    remote_version   INTEGER NOT NULL,
    remote_changed_at TEXT,
    remote_payload   TEXT,
    preserved_path   TEXT,
    acknowledged_at  TEXT
);
CREATE VIEW sync_new_key AS
SELECT substr(pairs, ((t >> 40) & 1023) * 2 + 1, 2) ||
       substr(pairs, ((t >> 30) & 1023) * 2 + 1, 2) ||
       substr(pairs, ((t >> 20) & 1023) * 2 + 1, 2) ||
       substr(pairs, ((t >> 10) & 1023) * 2 + 1, 2) ||
       substr(pairs, (t & 1023) * 2 + 1, 2) ||
       hex(randomblob(8)) AS key
FROM (SELECT CAST(round((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER) AS t,
             x'303030313032303330343035303630373038303930413042304330443045304630473048304A304B304D304E305030513052305330543056305730583059305A313031313132313331343135313631373138313931413142314331443145314631473148314A314B314D314E315031513152315331543156315731583159315A323032313232323332343235323632373238323932413242324332443245324632473248324A324B324D324E325032513252325332543256325732583259325A333033313332333333343335333633373338333933413342334333443345334633473348334A334B334D334E335033513352335333543356335733583359335A343034313432343334343435343634373438343934413442344334443445344634473448344A344B344D344E345034513452345334543456345734583459345A353035313532353335343535353635373538353935413542354335443545354635473548354A354B354D354E355035513552355335543556355735583559355A363036313632363336343635363636373638363936413642364336443645364636473648364A364B364D364E365036513652365336543656365736583659365A373037313732373337343735373637373738373937413742374337443745374637473748374A374B374D374E375037513752375337543756375737583759375A383038313832383338343835383638373838383938413842384338443845384638473848384A384B384D384E385038513852385338543856385738583859385A393039313932393339343935393639373938393939413942394339443945394639473948394A394B394D394E395039513952395339543956395739583959395A413041314132413341344135413641374138413941414142414341444145414641474148414A414B414D414E415041514152415341544156415741584159415A423042314232423342344235423642374238423942414242424342444245424642474248424A424B424D424E425042514252425342544256425742584259425A433043314332433343344335433643374338433943414342434343444345434643474348434A434B434D434E435043514352435343544356435743584359435A443044314432443344344435443644374438443944414442444344444445444644474448444A444B444D444E445044514452445344544456445744584459445A453045314532453345344535453645374538453945414542454345444545454645474548454A454B454D454E455045514552455345544556455745584559455A463046314632463346344635463646374638463946414642464346444645464646474648464A464B464D464E465046514652465346544656465746584659465A473047314732473347344735473647374738473947414742474347444745474647474748474A474B474D474E475047514752475347544756475747584759475A483048314832483348344835483648374838483948414842484348444845484648474848484A484B484D484E485048514852485348544856485748584859485A4A304A314A324A334A344A354A364A374A384A394A414A424A434A444A454A464A474A484A4A4A4B4A4D4A4E4A504A514A524A534A544A564A574A584A594A5A4B304B314B324B334B344B354B364B374B384B394B414B424B434B444B454B464B474B484B4A4B4B4B4D4B4E4B504B514B524B534B544B564B574B584B594B5A4D304D314D324D334D344D354D364D374D384D394D414D424D434D444D454D464D474D484D4A4D4B4D4D4D4E4D504D514D524D534D544D564D574D584D594D5A4E304E314E324E334E344E354E364E374E384E394E414E424E434E444E454E464E474E484E4A4E4B4E4D4E4E4E504E514E524E534E544E564E574E584E594E5A503050315032503350345035503650375038503950415042504350445045504650475048504A504B504D504E505050515052505350545056505750585059505A513051315132513351345135513651375138513951415142514351445145514651475148514A514B514D514E515051515152515351545156515751585159515A523052315232523352345235523652375238523952415242524352445245524652475248524A524B524D524E525052515252525352545256525752585259525A533053315332533353345335533653375338533953415342534353445345534653475348534A534B534D534E535053515352535353545356535753585359535A543054315432543354345435543654375438543954415442544354445445544654475448544A544B544D544E545054515452545354545456545754585459545A563056315632563356345635563656375638563956415642564356445645564656475648564A564B564D564E565056515652565356545656565756585659565A573057315732573357345735573657375738573957415742574357445745574657475748574A574B574D574E575057515752575357545756575757585759575A583058315832583358345835583658375838583958415842584358445845584658475848584A584B584D584E585058515852585358545856585758585859585A593059315932593359345935593659375938593959415942594359445945594659475948594A594B594D594E595059515952595359545956595759585959595A5A305A315A325A335A345A355A365A375A385A395A415A425A435A445A455A465A475A485A4A5A4B5A4D5A4E5A505A515A525A535A545A565A575A585A595A5A' AS pairs);
CREATE TRIGGER chats_capture_insert
AFTER INSERT ON chats
WHEN NEW.privacy <> 'LOCAL_ONLY'
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    VALUES ((SELECT key FROM sync_new_key), 'chat', NEW.id, 'upsert', NEW.version,
            json_object('id', NEW.id, 'title', NEW.title, 'privacy', NEW.privacy,
                        'created_at', NEW.created_at, 'updated_at', NEW.updated_at,
                        'deleted_at', NEW.deleted_at),
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
CREATE TRIGGER chats_capture_withdraw
AFTER UPDATE OF privacy ON chats
WHEN NEW.privacy = 'LOCAL_ONLY' AND OLD.privacy <> 'LOCAL_ONLY'
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    VALUES ((SELECT key FROM sync_new_key), 'chat', NEW.id, 'withdraw', NEW.version,
            json_object('id', NEW.id),
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
CREATE TRIGGER messages_capture_insert
AFTER INSERT ON messages
WHEN NEW.privacy <> 'LOCAL_ONLY'
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at, created_at)
    SELECT (SELECT key FROM sync_new_key), 'message', NEW.id, 'upsert', NEW.version,
           json_object('id', NEW.id, 'chat_id', NEW.chat_id, 'role', NEW.role,
                       'content', CASE WHEN ep = 'FULL' THEN NEW.content END,
                       'privacy', ep,
                       'created_at', NEW.created_at, 'updated_at', NEW.updated_at,
                       'deleted_at', NEW.deleted_at),
           now, now
    FROM (SELECT CASE WHEN NEW.privacy = 'REDACTED' OR c.privacy = 'REDACTED'
                      THEN 'REDACTED' ELSE 'FULL' END AS ep,
                 strftime('%Y-%m-%dT%H:%M:%fZ', 'now') AS now
          FROM sync_state AS s LEFT JOIN chats AS c ON c.id = NEW.chat_id
          -- not while a pull applies (the echo guard), not in a LOCAL_ONLY chat
          WHERE s.id = 1 AND s.applying = 0 AND coalesce(c.privacy, 'FULL') <> 'LOCAL_ONLY');
END;
CREATE TRIGGER messages_capture_update
AFTER UPDATE OF chat_id, role, content, privacy, deleted_at ON messages
WHEN NEW.privacy <> 'LOCAL_ONLY'
 AND coalesce((SELECT privacy FROM chats WHERE id = NEW.chat_id), 'FULL') <> 'LOCAL_ONLY'
 AND (OLD.chat_id IS NOT NEW.chat_id OR OLD.role IS NOT NEW.role
      OR OLD.content IS NOT NEW.content OR OLD.privacy IS NOT NEW.privacy
      OR OLD.deleted_at IS NOT NEW.deleted_at)
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    SELECT (SELECT key FROM sync_new_key), 'message', NEW.id, 'upsert', NEW.version,
           json_object('id', NEW.id, 'chat_id', NEW.chat_id, 'role', NEW.role,
                       'content', CASE WHEN ep = 'FULL' THEN NEW.content END,
                       'privacy', ep,
                       'created_at', NEW.created_at, 'updated_at', NEW.updated_at,
                       'deleted_at', NEW.deleted_at),
           strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM (SELECT CASE WHEN NEW.privacy = 'REDACTED'
                        OR (SELECT privacy FROM chats WHERE id = NEW.chat_id) = 'REDACTED'
                      THEN 'REDACTED' ELSE 'FULL' END AS ep);
    UPDATE messages SET sync_status = 'Pending' WHERE id = NEW.id AND sync_status <> 'Pending';
END;
CREATE TRIGGER messages_capture_withdraw
AFTER UPDATE OF privacy ON messages
WHEN NEW.privacy = 'LOCAL_ONLY' AND OLD.privacy <> 'LOCAL_ONLY'
 AND coalesce((SELECT privacy FROM chats WHERE id = NEW.chat_id), 'FULL') <> 'LOCAL_ONLY'
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    VALUES ((SELECT key FROM sync_new_key), 'message', NEW.id, 'withdraw', NEW.version,
            json_object('id', NEW.id, 'chat_id', NEW.chat_id),
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
END;
CREATE TABLE sync_recapture (
    chat_id       TEXT PRIMARY KEY,
    level_before  TEXT NOT NULL,
    after_seq     INTEGER NOT NULL
);
CREATE TRIGGER chats_capture_update
AFTER UPDATE OF title, privacy, deleted_at ON chats
WHEN NEW.privacy <> 'LOCAL_ONLY'
 AND (OLD.title IS NOT NEW.title OR OLD.privacy IS NOT NEW.privacy
      OR OLD.deleted_at IS NOT NEW.deleted_at)
 AND (SELECT applying FROM sync_state WHERE id = 1) = 0
BEGIN
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    VALUES ((SELECT key FROM sync_new_key), 'chat', NEW.id, 'upsert', NEW.version,
            json_object('id', NEW.id, 'title', NEW.title, 'privacy', NEW.privacy,
                        'created_at', NEW.created_at, 'updated_at', NEW.updated_at,
                        'deleted_at', NEW.deleted_at),
            strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
    -- A chat's privacy is its messages' privacy too: when it changes to a
    -- level that still syncs, every message is captured again at its new
    -- effective level (REDACTED drops content everywhere; leaving LOCAL_ONLY
    -- uploads messages never captured), after the chat's own row.
    INSERT INTO sync_outbox (idempotency_key, entity_type, entity_id, op, base_version,
                             payload, changed_at)
    SELECT (SELECT key FROM sync_new_key WHERE length(m.id) >= 0), 'message', m.id, 'upsert',
           m.version,
           json_object('id', m.id, 'chat_id', m.chat_id, 'role', m.role,
                       'content', CASE WHEN m.privacy = 'FULL' AND NEW.privacy = 'FULL'
                                       THEN m.content END,
                       'privacy', CASE WHEN m.privacy = 'FULL' AND NEW.privacy = 'FULL'
                                       THEN 'FULL' ELSE 'REDACTED' END,
                       'created_at', m.created_at, 'updated_at', m.updated_at,
                       'deleted_at', m.deleted_at),
           strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    FROM messages AS m
    WHERE OLD.privacy IS NOT NEW.privacy
      AND m.chat_id = NEW.id AND m.privacy <> 'LOCAL_ONLY'
      -- only messages whose effective level changes: a REDACTED message stays
      -- REDACTED whatever its chat, and sending it again would overwrite what
      -- another device holds of it (when OLD was LOCAL_ONLY, every one changes)
      AND (OLD.privacy = 'LOCAL_ONLY' OR m.privacy = 'FULL')
    ORDER BY m.created_at, m.id;
    UPDATE messages SET sync_status = 'Pending'
    WHERE OLD.privacy IS NOT NEW.privacy
      AND chat_id = NEW.id AND privacy <> 'LOCAL_ONLY' AND sync_status <> 'Pending'
      AND (OLD.privacy = 'LOCAL_ONLY' OR privacy = 'FULL');
    UPDATE chats SET sync_status = 'Pending' WHERE id = NEW.id AND sync_status <> 'Pending';
END;
CREATE TABLE sync_last_error (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    kind  TEXT CHECK (kind IN ('link', 'setup'))
);
CREATE TABLE sync_link (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    last_contact_at  TEXT,
    down_since       TEXT
);
CREATE TABLE sync_queue_tally (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    upto_seq    INTEGER NOT NULL,   -- the tally covers the outbox rows with seq <= upto_seq
    open_rows   INTEGER NOT NULL,   -- how many of them are Pending or Failed
    open_chats  INTEGER NOT NULL    -- and how many of those are chats
);
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
