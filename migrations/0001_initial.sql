-- The state store: what ldap2exo believes the tenant holds, what each run did, and which LDAP
-- entries could not be used. Timestamps are Unix seconds (UTC).

-- One row per person ldap2exo manages, keyed by the anchor (entryUUID by default).
CREATE TABLE managed_objects (
    anchor           TEXT    PRIMARY KEY NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN ('mail_user', 'mailbox')),
    uid              TEXT    NOT NULL,
    dn               TEXT    NOT NULL,
    -- Entra ID object id, once the tenant has answered; NULL while unknown.
    tenant_object_id TEXT,
    -- JSON object: the tenant attributes as last applied (field name -> value).
    attributes       TEXT    NOT NULL,
    -- active: provisioned and visible; disabled: hidden and sign-in blocked, waiting for
    -- delete_due_at; deleted: removed from the tenant (soft-deleted there for 30 days).
    stage            TEXT    NOT NULL CHECK (stage IN ('active', 'disabled', 'deleted')),
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    disabled_at      INTEGER,
    delete_due_at    INTEGER,
    deleted_at       INTEGER,
    CHECK (stage <> 'disabled' OR (disabled_at IS NOT NULL AND delete_due_at IS NOT NULL)),
    CHECK (stage <> 'deleted' OR deleted_at IS NOT NULL)
);
CREATE UNIQUE INDEX managed_objects_tenant_id ON managed_objects (tenant_object_id)
    WHERE tenant_object_id IS NOT NULL;
CREATE INDEX managed_objects_stage ON managed_objects (stage, delete_due_at);

-- One row per run of sync, plan or apply.
CREATE TABLE runs (
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
                  CHECK (outcome IN ('running', 'ok', 'partial', 'failed', 'blocked')),
    error         TEXT
);

-- One row per attempted tenant action, written when it starts and again when its outcome
-- is known, so a crash leaves a 'pending' row that the next run can reconcile.
CREATE TABLE journal (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       INTEGER NOT NULL REFERENCES runs (id),
    anchor       TEXT    NOT NULL,
    op           TEXT    NOT NULL CHECK (op IN ('create', 'update', 'convert', 'disable', 'enable', 'delete')),
    -- The step inside the action (e.g. New-MailUser, Set-MailUser, assignLicense).
    step         TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    result       TEXT    NOT NULL CHECK (result IN ('pending', 'ok', 'failed', 'skipped')),
    detail       TEXT
);
CREATE INDEX journal_anchor ON journal (anchor, id);
CREATE INDEX journal_run ON journal (run_id);

-- LDAP entries the last full run could not use, with the field at fault.
CREATE TABLE quarantine (
    dn            TEXT    PRIMARY KEY NOT NULL,
    anchor        TEXT,
    uid           TEXT,
    field         TEXT    NOT NULL,
    reason        TEXT    NOT NULL,
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
);
