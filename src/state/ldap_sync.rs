//! The incremental LDAP read's memory (`ldap_entries`, `ldap_sync`, migration 0010): the
//! directory's entries as the last committed content-sync refresh left them, and its cookie.
//! `source::incremental` reads them to turn a refresh's changes into the whole directory; a real
//! run commits the next pair once every change it covers has been applied.

use sqlx::Row;

use super::{StateError, Store, replace_rows};

/// Where the last committed refresh ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapSyncMark {
    /// The server's opaque cookie (RFC 4533 `syncCookie`).
    pub cookie: Vec<u8>,
    /// The search the cookie belongs to (`source::incremental` writes and compares it).
    pub search: String,
    /// Unix seconds of the last full refresh.
    pub full_at: i64,
    /// Unix seconds: when the run that stored the cookie started.
    pub updated_at: i64,
}

/// What a run commits after applying everything a refresh covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LdapSyncCommit {
    /// The refresh was full: the entries below replace every stored one.
    pub full: bool,
    /// `(entryUUID, entry as JSON)` of every entry added or changed.
    pub upserts: Vec<(String, String)>,
    /// entryUUIDs of entries that left.
    pub removes: Vec<String>,
    pub cookie: Vec<u8>,
    pub search: String,
    pub full_at: i64,
}

impl Store {
    /// The last committed refresh, if any.
    pub async fn ldap_sync(&self) -> Result<Option<LdapSyncMark>, StateError> {
        let row =
            sqlx::query("SELECT cookie, search, full_at, updated_at FROM ldap_sync WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| LdapSyncMark {
            cookie: r.get(0),
            search: r.get(1),
            full_at: r.get(2),
            updated_at: r.get(3),
        }))
    }

    /// Hands every stored entry to `each` as `(entryUUID, JSON)`, a chunk of rows at a time
    /// (a 100,000-person directory is never in memory twice). Stops at the first error `each`
    /// returns.
    pub async fn each_ldap_entry<E>(
        &self,
        each: impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<Result<(), E>, StateError> {
        self.each_row("ldap_entries", "uuid", "entry", each).await
    }

    /// How many entries are stored.
    pub async fn ldap_entry_count(&self) -> Result<i64, StateError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM ldap_entries")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Writes the entries and the cookie of a refresh in one transaction.
    pub async fn commit_ldap_sync(&self, c: &LdapSyncCommit, now: i64) -> Result<(), StateError> {
        let mut tx = self.pool.begin().await?;
        if c.full {
            sqlx::query("DELETE FROM ldap_entries")
                .execute(&mut *tx)
                .await?;
        }
        replace_rows(
            &mut tx,
            "ldap_entries",
            "uuid",
            "entry",
            &c.removes,
            &c.upserts,
        )
        .await?;
        sqlx::query(
            "INSERT INTO ldap_sync (id, cookie, search, full_at, updated_at) VALUES (1, ?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE SET cookie = ?1, search = ?2, full_at = ?3, updated_at = ?4",
        )
        .bind(&c.cookie)
        .bind(&c.search)
        .bind(c.full_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
