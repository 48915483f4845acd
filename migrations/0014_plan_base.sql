-- Partial planning (`plan::partial`): a run with few changes plans only the people the
-- changes touch, and takes everybody else as the last real run planned them.
--
-- `plan_base` is that run's plan and the marks of what it was made from; `base_entries` and
-- `base_counted` are what each LDAP entry and each anchor added to it besides actions;
-- `plan_keys` says which values every stored entry, state row and tenant row holds, so that
-- the people who share a value with a change are found without reading everybody.
CREATE TABLE plan_base (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    run_id INTEGER NOT NULL,
    -- Unix seconds: the `now` the plan was made with.
    planned_at INTEGER NOT NULL,
    -- SHA-256 (hex) of the build and the configuration.
    digest TEXT NOT NULL,
    -- The marks of the reads it was made from.
    ldap_cookie BLOB NOT NULL,
    delta_link TEXT NOT NULL,
    exchange_since INTEGER NOT NULL,
    fixed TEXT NOT NULL,
    -- The plan, JSON (without its read reports).
    plan TEXT NOT NULL
);

CREATE TABLE base_entries (
    dn TEXT PRIMARY KEY NOT NULL,
    -- recipient, disabled, no_mail or quarantined.
    class TEXT NOT NULL,
    -- Its quarantine records and mapping notes, JSON; NULL when it has none.
    share TEXT
) WITHOUT ROWID;

-- Anchors the plan counts as unchanged when it has no action for them.
CREATE TABLE base_counted (anchor TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;

-- `node`: `e:<entryUUID>`, `o:<anchor>`, `u:<Entra id>`, `r:<Exchange Guid>`; `key`: a
-- 64-bit hash of a value (`plan::partial::Key`).
CREATE TABLE plan_keys (
    key INTEGER NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (key, node)
) WITHOUT ROWID;
CREATE INDEX plan_keys_by_node ON plan_keys (node);

-- Every anchor whose state row or IMAP migration changed since the base, with the row's
-- attributes as they were then (NULL: no row), whoever wrote it. (Not `INSERT OR IGNORE`:
-- the conflict clause of the statement that fires a trigger overrides the trigger's own, and
-- an upsert's makes it fail.) A later migration that rebuilds `managed_objects` or
-- `migration_people` must create these triggers again.
CREATE TABLE base_dirty (
    anchor TEXT PRIMARY KEY NOT NULL,
    attributes TEXT
) WITHOUT ROWID;

CREATE TRIGGER base_dirty_object_insert AFTER INSERT ON managed_objects
BEGIN INSERT INTO base_dirty (anchor, attributes) SELECT NEW.anchor, NULL
        WHERE NOT EXISTS (SELECT 1 FROM base_dirty WHERE anchor = NEW.anchor); END;
CREATE TRIGGER base_dirty_object_update AFTER UPDATE ON managed_objects
BEGIN
    INSERT INTO base_dirty (anchor, attributes) SELECT OLD.anchor, OLD.attributes
        WHERE NOT EXISTS (SELECT 1 FROM base_dirty WHERE anchor = OLD.anchor);
    INSERT INTO base_dirty (anchor, attributes) SELECT NEW.anchor, NULL
        WHERE NOT EXISTS (SELECT 1 FROM base_dirty WHERE anchor = NEW.anchor);
END;
CREATE TRIGGER base_dirty_object_delete AFTER DELETE ON managed_objects
BEGIN INSERT INTO base_dirty (anchor, attributes) SELECT OLD.anchor, OLD.attributes
        WHERE NOT EXISTS (SELECT 1 FROM base_dirty WHERE anchor = OLD.anchor); END;
CREATE TRIGGER base_dirty_migration_insert AFTER INSERT ON migration_people
BEGIN
    INSERT INTO base_dirty (anchor, attributes) SELECT NEW.anchor, (SELECT attributes FROM managed_objects WHERE anchor = NEW.anchor)
        WHERE NOT EXISTS (SELECT 1 FROM base_dirty WHERE anchor = NEW.anchor);
END;
CREATE TRIGGER base_dirty_migration_update AFTER UPDATE ON migration_people
BEGIN
    INSERT INTO base_dirty (anchor, attributes) SELECT NEW.anchor, (SELECT attributes FROM managed_objects WHERE anchor = NEW.anchor)
        WHERE NOT EXISTS (SELECT 1 FROM base_dirty WHERE anchor = NEW.anchor);
END;
CREATE TRIGGER base_dirty_migration_delete AFTER DELETE ON migration_people
BEGIN
    INSERT INTO base_dirty (anchor, attributes) SELECT OLD.anchor, (SELECT attributes FROM managed_objects WHERE anchor = OLD.anchor)
        WHERE NOT EXISTS (SELECT 1 FROM base_dirty WHERE anchor = OLD.anchor);
END;
