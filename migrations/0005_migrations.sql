-- IMAP migration (`ldap2exo migrate`): one row per person of a cohort.
--   stage 'started'  - recorded by `migrate start`: sync makes them a licensed mailbox that
--                      forwards to the on-prem mailbox until cutover;
--         'batched'  - in the Exchange Online migration batch `batch`;
--         'cutover'  - LDAP forward points into the tenant (`migrate cutover --apply`): the
--                      ordinary mapping rule takes over, sync removes the forwarding.
-- No secret is ever stored here (the IMAP master password travels only in the batch's CSV).
CREATE TABLE IF NOT EXISTS migration_people (
    anchor      TEXT    PRIMARY KEY,
    uid         TEXT    NOT NULL,
    -- The target mailbox's primary address: the CSV's EmailAddress, Get-MigrationUser's key.
    email       TEXT    NOT NULL,
    batch       TEXT,
    stage       TEXT    NOT NULL CHECK (stage IN ('started', 'batched', 'cutover')),
    started_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    cutover_at  INTEGER
);
CREATE INDEX IF NOT EXISTS migration_people_batch ON migration_people (batch);
