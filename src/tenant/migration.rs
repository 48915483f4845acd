//! The Exchange Online migration cmdlets that `ldap2exo migrate` runs: the IMAP endpoint,
//! migration batches and their users (Microsoft Learn, module exchange:
//! `New-MigrationEndpoint`, `Get-MigrationEndpoint`, `New-MigrationBatch`,
//! `Get-MigrationBatch`, `Get-MigrationUser`).

use base64::Engine;
use serde_json::{Value, json};

use super::{Exchange, Repeat, TenantError};
use crate::secret::Secret;

/// An IMAP migration endpoint to create.
#[derive(Debug, Clone)]
pub struct ImapEndpoint<'a> {
    pub name: &'a str,
    pub remote_server: &'a str,
    pub port: u16,
    /// `Ssl`, `Tls` or `None`.
    pub security: &'a str,
}

impl Exchange {
    /// `Get-MigrationEndpoint`: every migration endpoint of the tenant.
    pub async fn migration_endpoints(&self) -> Result<Vec<Value>, TenantError> {
        self.invoke("Get-MigrationEndpoint", json!({})).await
    }

    /// `New-MigrationEndpoint -IMAP -Name -RemoteServer -Port -Security`. Never replayed
    /// after it may have run: the caller looks for the endpoint by name instead.
    pub async fn new_imap_endpoint(&self, e: &ImapEndpoint<'_>) -> Result<Value, TenantError> {
        let p = json!({
            "IMAP": true,
            "Name": e.name,
            "RemoteServer": e.remote_server,
            "Port": e.port,
            "Security": e.security,
        });
        let out = self
            .invoke_with("New-MigrationEndpoint", p, Repeat::Unsafe)
            .await?;
        Ok(out.into_iter().next().unwrap_or(Value::Null))
    }

    /// `Get-MigrationBatch [-Identity] -ResultSize Unlimited`: not found is an empty list.
    /// Without `-ResultSize` Exchange returns 1,000 batches at most (Get-MigrationBatch,
    /// Microsoft Learn: "-ResultSize ... The default value is 1000").
    pub async fn migration_batches(
        &self,
        identity: Option<&str>,
    ) -> Result<Vec<Value>, TenantError> {
        let p = match identity {
            Some(i) => json!({"Identity": i, "ResultSize": "Unlimited"}),
            None => json!({"ResultSize": "Unlimited"}),
        };
        match self.invoke("Get-MigrationBatch", p).await {
            Err(TenantError::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// `New-MigrationBatch -Name -SourceEndpoint -CSVData -AutoStart` (never `-AutoComplete`:
    /// completing a batch is the operator's, with `Complete-MigrationBatch`, after cutover;
    /// ldap2exo never completes or removes batches, and until then Exchange Online runs an
    /// incremental sync every day). `csv` is the whole CSV file, which holds the
    /// IMAP password: it goes out only in this request body.
    ///
    /// `-CSVData` is a `Byte[]`; over the REST `InvokeCommand` endpoint it is sent as a base64
    /// string, the JSON form of a .NET byte array (chosen, unconfirmed: Microsoft documents
    /// no example; see emulator/README.md).
    pub async fn new_migration_batch(
        &self,
        name: &str,
        source_endpoint: &str,
        csv: &Secret,
    ) -> Result<Value, TenantError> {
        let data = base64::engine::general_purpose::STANDARD.encode(csv.expose().as_bytes());
        let p = json!({
            "Name": name,
            "SourceEndpoint": source_endpoint,
            "CSVData": data,
            "AutoStart": true,
        });
        let out = self
            .invoke_with("New-MigrationBatch", p, Repeat::Unsafe)
            .await?;
        Ok(out.into_iter().next().unwrap_or(Value::Null))
    }

    /// `Get-MigrationUser [-BatchId] -ResultSize Unlimited`: the users of one batch, or of
    /// all. Without `-ResultSize` Exchange returns 1,000 users at most (Get-MigrationUser,
    /// Microsoft Learn: "-ResultSize ... The default value is 1000").
    pub async fn migration_users(&self, batch: Option<&str>) -> Result<Vec<Value>, TenantError> {
        let p = match batch {
            Some(b) => json!({"BatchId": b, "ResultSize": "Unlimited"}),
            None => json!({"ResultSize": "Unlimited"}),
        };
        match self.invoke("Get-MigrationUser", p).await {
            Err(TenantError::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }
}
