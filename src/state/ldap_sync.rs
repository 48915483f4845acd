//! The incremental LDAP read's memory (`ldap_entries`, `ldap_sync`, migration 0010): the
//! directory's entries as the last committed content-sync refresh left them, and its cookie.
//! `source::incremental` reads them to turn a refresh's changes into the whole directory; a real
//! run commits the next pair once every change it covers has been applied.

use std::collections::HashSet;

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

    /// The entryUUIDs among `rows` (`(entryUUID, entry as JSON)`) whose stored entry is
    /// exactly that JSON: a refresh hands over an entry whenever anything in it changed
    /// (a password), also when every attribute ldap2exo reads is as stored.
    /// Compared in SQL, a few hundred rows per query, so only the keys come back.
    pub async fn ldap_entries_as_stored(
        &self,
        rows: &[(String, String)],
    ) -> Result<HashSet<String>, StateError> {
        // 2 variables a row: far below SQLite's limit of 32,766 a statement.
        const ROWS_PER_QUERY: usize = 250;
        let mut same = HashSet::new();
        for chunk in rows.chunks(ROWS_PER_QUERY) {
            let values = vec!["(?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "WITH fresh (uuid, entry) AS (VALUES {values})
                 SELECT fresh.uuid FROM fresh JOIN ldap_entries USING (uuid)
                 WHERE ldap_entries.entry = fresh.entry"
            );
            let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
            for (uuid, json) in chunk {
                query = query.bind(uuid).bind(json);
            }
            same.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(same)
    }

    /// The stored entries among `uuids`, as `(entryUUID, entry as JSON)` in entryUUID order.
    pub async fn ldap_entries_of(
        &self,
        uuids: &[String],
    ) -> Result<Vec<(String, String)>, StateError> {
        let uuids: Vec<&str> = uuids.iter().map(String::as_str).collect();
        let sql =
            "SELECT uuid, entry FROM ldap_entries WHERE uuid IN (SELECT value FROM json_each(?))";
        super::pairs_of(&self.pool, sql, &uuids).await
    }

    /// Hands the entryUUID of every stored entry to `each`, in order, without the entries.
    pub async fn each_ldap_uuid(&self, mut each: impl FnMut(&str)) -> Result<(), StateError> {
        let read = super::chunked::each_row(&self.pool, "ldap_entries", "uuid", &["uuid"], |row| {
            each(row[0].unwrap_or_default());
            Ok::<_, std::convert::Infallible>(())
        })
        .await?;
        let Ok(()) = read;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// More rows than one query takes: every row as stored is found, none that differs in
    /// its entry or is not stored at all.
    #[tokio::test]
    async fn entries_as_stored_are_found_across_queries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let row = |i: usize, v: &str| (format!("uuid-{i:04}"), format!("{{\"dn\":\"{v}{i}\"}}"));
        let stored: Vec<_> = (0..600).map(|i| row(i, "uid=a")).collect();
        let commit = LdapSyncCommit {
            full: true,
            upserts: stored,
            cookie: b"c".to_vec(),
            ..LdapSyncCommit::default()
        };
        store.commit_ldap_sync(&commit, 0).await.unwrap();
        let mut asked: Vec<_> = (0..600)
            .map(|i| row(i, if i % 3 == 0 { "uid=b" } else { "uid=a" }))
            .collect();
        asked.push(row(700, "uid=a"));
        let same = store.ldap_entries_as_stored(&asked).await.unwrap();
        let expected: HashSet<String> = (0..600)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("uuid-{i:04}"))
            .collect();
        assert_eq!(same, expected);
        let mut uuids = Vec::new();
        store
            .each_ldap_uuid(|u| uuids.push(u.to_owned()))
            .await
            .unwrap();
        assert_eq!(uuids.len(), 600);
        assert!(uuids.is_sorted());
    }
}
