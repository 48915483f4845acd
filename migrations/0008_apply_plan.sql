-- The reviewed plan an `apply plan.json` carries out: SHA-256 (hex) of the canonical JSON of
-- the plan file's actions. `apply --resume` accepts a plan whose actions vanished only when a
-- run of the same digest journaled them done; NULL for every other run.
ALTER TABLE runs ADD COLUMN plan_digest TEXT;
