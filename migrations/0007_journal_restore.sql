-- One more journal op:
--   restore - `ldap2exo restore <uid>`: an object of ours brought back from the tenant's
--             recycle bin by the operator (a removal that was wrong).
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt.
CREATE TABLE journal_new (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       INTEGER NOT NULL REFERENCES runs (id),
    anchor       TEXT    NOT NULL,
    op           TEXT    NOT NULL CHECK (op IN ('create', 'update', 'convert', 'disable', 'enable', 'delete', 'purge', 'restore')),
    -- The step inside the action (e.g. New-MailUser, Set-MailUser, assignLicense).
    step         TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    result       TEXT    NOT NULL CHECK (result IN ('pending', 'ok', 'failed', 'skipped', 'unknown', 'deferred')),
    detail       TEXT
);
INSERT INTO journal_new (id, run_id, anchor, op, step, started_at, finished_at, result, detail)
    SELECT id, run_id, anchor, op, step, started_at, finished_at, result, detail FROM journal;
DROP TABLE journal;
ALTER TABLE journal_new RENAME TO journal;
CREATE INDEX journal_anchor ON journal (anchor, id);
CREATE INDEX journal_run ON journal (run_id);
