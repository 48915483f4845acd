-- no-transaction
-- What the daemon and the operator's view need from a run:
--   outcome 'interrupted' - SIGTERM/SIGINT stopped the run, or its process died (the next run
--                           marks such a 'running' row once it holds the run lock);
--   command               - what started it: sync, sync --dry-run, plan, apply, daemon;
--   results               - JSON object: the applied outcome counts (done, pending, skipped,
--                           conflict, failed), beside the plan's summary;
-- and a record of the notifications mailed, so that rate limiting survives restarts.
-- SQLite cannot change a CHECK constraint in place, so the runs table is rebuilt. The journal
-- refers to it, so this follows SQLite's own recipe (lang_altertable.html, "Making Other Kinds
-- Of Table Schema Changes"): foreign keys off, which only works outside a transaction (hence
-- `no-transaction` above), and the rebuild in one transaction.
PRAGMA foreign_keys = OFF;
BEGIN;
-- Safe to run again after a crash between the commit and sqlx's bookkeeping.
DROP TABLE IF EXISTS runs_new;
CREATE TABLE runs_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    mode          TEXT    NOT NULL CHECK (mode IN ('dry_run', 'plan', 'apply')),
    -- full: everyone the filter matches; only: `--only uid...` (never a baseline).
    scope         TEXT    NOT NULL CHECK (scope IN ('full', 'only')),
    -- Entries LDAP returned; the shrink guard compares it with the last good full apply.
    source_count  INTEGER,
    verdict       TEXT    CHECK (verdict IN ('ok', 'blocked')),
    -- JSON object: the plan summary (create, update, ... counts).
    summary       TEXT,
    outcome       TEXT    NOT NULL DEFAULT 'running'
                  CHECK (outcome IN ('running', 'ok', 'partial', 'failed', 'blocked', 'interrupted')),
    error         TEXT,
    command       TEXT,
    results       TEXT
);
INSERT INTO runs_new (id, started_at, finished_at, mode, scope, source_count, verdict, summary, outcome, error)
    SELECT id, started_at, finished_at, mode, scope, source_count, verdict, summary, outcome, error FROM runs;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;

-- One row per notification mailed (or suppressed by the rate limit).
CREATE TABLE IF NOT EXISTS notifications (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id    INTEGER,
    sent_at   INTEGER NOT NULL,
    -- failed | blocked | partial | interrupted
    kind      TEXT    NOT NULL,
    -- sent | suppressed | failed
    result    TEXT    NOT NULL,
    detail    TEXT
);
CREATE INDEX IF NOT EXISTS notifications_sent ON notifications (sent_at);
COMMIT;
PRAGMA foreign_keys = ON;
