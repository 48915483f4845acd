-- Quiet runs (`tenant.incremental_read`) ask whether a Graph user that changed belongs to a
-- stored Exchange recipient carrying our stamp: the recipients by the Entra id they belong
-- to. An index on the expression, so that rows stored before this migration are found too.
CREATE INDEX tenant_recipients_by_user
    ON tenant_recipients (lower(json_extract(recipient, '$.ExternalDirectoryObjectId')));
