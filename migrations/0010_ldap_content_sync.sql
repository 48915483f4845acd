-- Incremental LDAP reads (RFC 4533 content synchronisation, `ldap.content_sync`): the entries
-- as the last committed refresh left them, and the cookie that refresh ended with. Both are
-- written together, only after a real run applied every change they cover, so the next
-- refresh starts from a cookie whose changes are all in the tenant.
CREATE TABLE ldap_entries (
    -- entryUUID, 8-4-4-4-12 lower case.
    uuid TEXT PRIMARY KEY NOT NULL,
    -- JSON of the entry as read: dn, attrs (requested attributes only), binary, hidden, disabled.
    entry TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE ldap_sync (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cookie BLOB NOT NULL,
    -- The search the cookie belongs to (URL, base, scope, filter, rules, attributes): another
    -- search starts with a full refresh.
    search TEXT NOT NULL,
    -- Unix seconds of the last full refresh (for ldap.full_reconcile_interval_hours).
    full_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
