-- Incremental tenant reads (`tenant.incremental_read`): the Graph users and Exchange
-- recipients as the last real run read them, the Graph `/users/delta` link and the time the
-- Exchange listing started. A run reads only what changed since and fills in the rest from
-- here, so it plans against the same whole tenant a full read gives.
CREATE TABLE tenant_users (
    -- Entra object id.
    id TEXT PRIMARY KEY NOT NULL,
    -- The user as `/users/delta` returned it (the inventory's $select), JSON.
    user TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE tenant_recipients (
    -- Exchange Guid.
    guid TEXT PRIMARY KEY NOT NULL,
    -- The properties the inventory reads of a `Get-Recipient` object, JSON.
    recipient TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE tenant_sync (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    delta_link TEXT NOT NULL,
    -- Unix seconds: when the last Exchange listing started (the next one asks for recipients
    -- changed since, with a margin).
    exchange_since INTEGER NOT NULL,
    -- What the stored rows depend on (endpoints, stamp attribute): another value reads in full.
    key TEXT NOT NULL,
    full_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
