-- The operator's approvals of removals, one row per run that carried one:
--   removals    - N of `--max-deletes N` or `--approve-removals N`;
--   scope       - S of `--scope S` (a DN or an LDAP filter); NULL for `--max-deletes`, which
--                 covers every removal of the run;
--   approved_by - the login that ran it ($SUDO_USER, $USER, $LOGNAME, the uid's name, or
--                 'unknown');
--   let_through - JSON array of the uids of the removals it let through (carried out, for a
--                 real run; planned, for a dry run or plan).
CREATE TABLE approvals (
    run_id       INTEGER PRIMARY KEY NOT NULL REFERENCES runs (id),
    removals     INTEGER NOT NULL,
    scope        TEXT,
    approved_by  TEXT    NOT NULL,
    let_through  TEXT    NOT NULL,
    recorded_at  INTEGER NOT NULL
);
-- The rolling removal windows (safety.max_deletes_per_24h, _per_7d) count journaled removals
-- by when they finished.
CREATE INDEX journal_removals ON journal (finished_at) WHERE op IN ('disable', 'delete');
