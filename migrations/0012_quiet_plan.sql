-- A run whose inputs did not change since a converged run takes that run's plan as it is
-- (`plan::quiet`): a no-op cycle then costs the reads that prove nothing changed, not a
-- mapping and planning of the whole directory.
--
-- `planning_generation` counts every write to the tables the planner reads (the managed
-- objects, the journal, the IMAP migration cohort), whoever makes it: a run, `restore`,
-- `migrate`, an operator with sqlite3. A stored plan is only taken again at the generation
-- it was made at. A later migration that rebuilds one of these tables must create its
-- triggers again.
CREATE TABLE planning_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL
);
INSERT INTO planning_generation (id, generation) VALUES (1, 0);

CREATE TRIGGER managed_objects_insert AFTER INSERT ON managed_objects
BEGIN UPDATE planning_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER managed_objects_update AFTER UPDATE ON managed_objects
BEGIN UPDATE planning_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER managed_objects_delete AFTER DELETE ON managed_objects
BEGIN UPDATE planning_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER journal_insert AFTER INSERT ON journal
BEGIN UPDATE planning_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER journal_update AFTER UPDATE ON journal
BEGIN UPDATE planning_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER journal_delete AFTER DELETE ON journal
BEGIN UPDATE planning_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER migration_people_insert AFTER INSERT ON migration_people
BEGIN UPDATE planning_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER migration_people_update AFTER UPDATE ON migration_people
BEGIN UPDATE planning_generation SET generation = generation + 1 WHERE id = 1; END;
CREATE TRIGGER migration_people_delete AFTER DELETE ON migration_people
BEGIN UPDATE planning_generation SET generation = generation + 1 WHERE id = 1; END;

CREATE TABLE quiet_plan (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    -- SHA-256 (hex) of everything the plan was made from that is not in the tables above:
    -- the build of ldap2exo, the configuration (secrets redacted), the LDAP cookie and Graph
    -- delta link the run committed, the soft-deleted MailUsers and licence counts it read,
    -- the baseline, and the planning generation.
    inputs TEXT NOT NULL,
    -- Unix seconds: the `now` the plan was made with (a grace period ending after it makes
    -- the plan stale).
    planned_at INTEGER NOT NULL,
    -- The run that made the plan first.
    run_id INTEGER NOT NULL,
    -- The plan, JSON (without its read reports).
    plan TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
