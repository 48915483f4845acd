//! The incremental tenant read's memory (`tenant_users`, `tenant_recipients`, `tenant_sync`,
//! migration 0011): the Graph users and Exchange recipients as the last real run read them,
//! the `/users/delta` link and when the Exchange listing started. `inventory::incremental`
//! reads them to turn a round of changes into the whole tenant.

use sqlx::Row;

use super::{StateError, Store, replace_rows};

/// Where the last stored tenant read ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSyncMark {
    pub delta_link: String,
    /// Unix seconds: when the last Exchange listing started.
    pub exchange_since: i64,
    pub key: String,
    /// Unix seconds of the last full read.
    pub full_at: i64,
    /// Unix seconds: when the run that stored the read started.
    pub updated_at: i64,
}

/// What a run stores of its tenant read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantSyncCommit {
    /// The read was full: the rows below replace every stored one.
    pub full: bool,
    /// `(id, JSON)` of Graph users read.
    pub users: Vec<(String, String)>,
    /// Ids of Graph users gone.
    pub users_gone: Vec<String>,
    /// `(guid, JSON)` of Exchange recipients read.
    pub recipients: Vec<(String, String)>,
    /// Guids of recipients gone.
    pub recipients_gone: Vec<String>,
    pub delta_link: String,
    pub exchange_since: i64,
    pub key: String,
    pub full_at: i64,
}

impl Store {
    /// The last stored tenant read, if any.
    pub async fn tenant_sync(&self) -> Result<Option<TenantSyncMark>, StateError> {
        let row = sqlx::query(
            "SELECT delta_link, exchange_since, key, full_at, updated_at FROM tenant_sync WHERE id = 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| TenantSyncMark {
            delta_link: r.get(0),
            exchange_since: r.get(1),
            key: r.get(2),
            full_at: r.get(3),
            updated_at: r.get(4),
        }))
    }

    /// Hands every stored Graph user to `each` as `(id, JSON)`, a chunk of rows at a time.
    pub async fn each_tenant_user<E>(
        &self,
        each: impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<Result<(), E>, StateError> {
        self.each_row("tenant_users", "id", "user", each).await
    }

    /// Hands every stored Exchange recipient to `each` as `(guid, JSON)`, a chunk of rows at a
    /// time.
    pub async fn each_tenant_recipient<E>(
        &self,
        each: impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<Result<(), E>, StateError> {
        self.each_row("tenant_recipients", "guid", "recipient", each)
            .await
    }

    /// The stored JSON of Graph user `id` (lower case), if any.
    pub async fn tenant_user(&self, id: &str) -> Result<Option<String>, StateError> {
        Ok(
            sqlx::query_scalar("SELECT user FROM tenant_users WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The stored JSON of Exchange recipient `guid` (as [`Self::each_tenant_recipient`] keys
    /// it), if any.
    pub async fn tenant_recipient(&self, guid: &str) -> Result<Option<String>, StateError> {
        Ok(
            sqlx::query_scalar("SELECT recipient FROM tenant_recipients WHERE guid = ?")
                .bind(guid)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// The stored JSON of every Exchange recipient that belongs to Entra user `id` (its
    /// `ExternalDirectoryObjectId`, compared in lower case; found by index).
    pub async fn tenant_recipients_of_user(&self, id: &str) -> Result<Vec<String>, StateError> {
        Ok(sqlx::query_scalar(
            "SELECT recipient FROM tenant_recipients
             WHERE lower(json_extract(recipient, '$.ExternalDirectoryObjectId')) = lower(?)",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The stored Graph users among `ids`, as `(id, JSON)`.
    pub async fn tenant_users_of(
        &self,
        ids: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<(String, String)>, StateError> {
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        super::pairs_of(
            &self.pool,
            "SELECT id, user FROM tenant_users WHERE id IN (SELECT value FROM json_each(?))",
            &ids,
        )
        .await
    }

    /// The stored recipients among `guids`, as `(guid, JSON)`.
    pub async fn tenant_recipients_of(
        &self,
        guids: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<(String, String)>, StateError> {
        let guids: Vec<&str> = guids.iter().map(String::as_str).collect();
        let sql = "SELECT guid, recipient FROM tenant_recipients WHERE guid IN (SELECT value FROM json_each(?))";
        super::pairs_of(&self.pool, sql, &guids).await
    }

    /// Stores a tenant read in one transaction.
    pub async fn commit_tenant_sync(
        &self,
        c: &TenantSyncCommit,
        now: i64,
    ) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        if c.full {
            sqlx::query("DELETE FROM tenant_users")
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM tenant_recipients")
                .execute(&mut *tx)
                .await?;
        }
        replace_rows(
            &mut tx,
            "tenant_users",
            "id",
            "user",
            &c.users_gone,
            &c.users,
        )
        .await?;
        replace_rows(
            &mut tx,
            "tenant_recipients",
            "guid",
            "recipient",
            &c.recipients_gone,
            &c.recipients,
        )
        .await?;
        sqlx::query(
            "INSERT INTO tenant_sync (id, delta_link, exchange_since, key, full_at, updated_at)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET delta_link = ?1, exchange_since = ?2, key = ?3,
                 full_at = ?4, updated_at = ?5",
        )
        .bind(&c.delta_link)
        .bind(c.exchange_since)
        .bind(&c.key)
        .bind(c.full_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
