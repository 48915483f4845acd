//! IMAP migration cmdlets (`ldap2exo migrate`): `New-MigrationEndpoint -IMAP`,
//! `Get-MigrationEndpoint`, `New-MigrationBatch`, `Get-MigrationBatch`, `Get-MigrationUser`,
//! `Complete-MigrationBatch`. Parameter names and checks follow Microsoft Learn's cmdlet
//! pages and "Migrate your IMAP mailboxes to Microsoft 365" (see README, "IMAP migration").
//!
//! A batch started with `-AutoStart` is `Syncing`, then `Synced` after
//! [`MigrationState::sync_delay_ms`]; `Complete-MigrationBatch` (or `-AutoComplete`) makes it
//! `Completed`. The CSV's passwords are kept only in [`MigrationState::received`], which the
//! state dump and the logs never show (tests read it through `Emulator::migration_csvs`).

use base64::Engine;
use serde_json::{Map, Value, json};

use super::cmdlets::{Params, resolve};
use super::{ExoError, Output};
use crate::store::{RecipientKind, Store, now_millis, valid_smtp};
use crate::util::fold;

/// Exchange Online's limits for a migration batch CSV: 50,000 rows and 10 MB ("CSV files for
/// mailbox migration", Microsoft Learn); 10 MB read as 10,000,000 bytes (chosen).
pub const MAX_ROWS: usize = 50_000;
pub const MAX_BYTES: usize = 10_000_000;

/// How long a started batch syncs before it is `Synced`, unless set otherwise.
pub const DEFAULT_SYNC_DELAY_MS: u64 = 1_500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub remote_server: String,
    pub port: u16,
    pub security: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub name: String,
    pub source_endpoint: String,
    /// The target mailboxes (the CSV's EmailAddress column), in order.
    pub users: Vec<String>,
    /// Wall-clock ms when it started syncing; `None` until started.
    pub started_ms: Option<u64>,
    pub auto_complete: bool,
    pub completed: bool,
}

/// The tenant's migration objects.
#[derive(Debug, Clone)]
pub struct MigrationState {
    pub endpoints: Vec<Endpoint>,
    pub batches: Vec<Batch>,
    /// Every CSV received, with its batch name: the test side door. Never dumped or logged.
    pub received: Vec<(String, String)>,
    pub sync_delay_ms: u64,
}

impl Default for MigrationState {
    fn default() -> Self {
        MigrationState {
            endpoints: Vec::new(),
            batches: Vec::new(),
            received: Vec::new(),
            sync_delay_ms: DEFAULT_SYNC_DELAY_MS,
        }
    }
}

impl MigrationState {
    fn status(&self, b: &Batch) -> &'static str {
        match b.started_ms {
            None => "Created",
            Some(_) if b.completed => "Completed",
            Some(t) if now_millis().saturating_sub(t) < self.sync_delay_ms => "Syncing",
            Some(_) if b.auto_complete => "Completed",
            Some(_) => "Synced",
        }
    }

    fn batch_view(&self, b: &Batch) -> Value {
        let status = self.status(b);
        let synced = matches!(status, "Synced" | "Completed");
        let n = b.users.len();
        json!({
            "Identity": b.name,
            "Status": status,
            "State": status,
            "MigrationType": "IMAP",
            "SourceEndpoint": b.source_endpoint,
            "TotalCount": n,
            "SyncedCount": if synced { n } else { 0 },
            "FinalizedCount": if status == "Completed" { n } else { 0 },
            "FailedCount": 0,
        })
    }

    fn user_view(&self, b: &Batch, email: &str) -> Value {
        let status = match self.status(b) {
            "Created" => "Queued",
            s => s,
        };
        json!({
            "Identity": email,
            "BatchId": b.name,
            "RecipientType": "Mailbox",
            "Status": status,
            "SyncedItemCount": if matches!(status, "Synced" | "Completed") { 42 } else { 0 },
            "SkippedItemCount": 0,
            "ErrorSummary": "",
        })
    }
}

fn exists(kind: &str, name: &str) -> ExoError {
    ExoError::Task(format!("The {kind} '{name}' already exists."))
}

/// `New-MigrationEndpoint -IMAP -Name -RemoteServer [-Port] [-Security]`.
pub fn new_endpoint(store: &mut Store, m: Map<String, Value>) -> Result<Value, ExoError> {
    let p = Params::new(
        m,
        &[
            "IMAP",
            "Name",
            "RemoteServer",
            "Port",
            "Security",
            "Authentication",
            "AcceptUntrustedCertificates",
            "MaxConcurrentMigrations",
            "MaxConcurrentIncrementalSyncs",
            "SkipVerification",
            "DomainController",
            "Partition",
        ],
    )?;
    if p.bool("IMAP")? != Some(true) {
        return Err(ExoError::Parameter(
            "Parameter set cannot be resolved using the specified named parameters.".into(),
        ));
    }
    let name = p.required("Name")?;
    let server = p.required("RemoteServer")?;
    let port = match p.get("Port") {
        None | Some(Value::Null) => 993,
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|n| (1..=65535).contains(n))
            .ok_or_else(|| ExoError::Parameter(format!("Cannot validate argument on parameter 'Port'. {n} is not a port.")))? as u16,
        Some(Value::String(s)) => s.parse::<u16>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ExoError::Parameter(format!("Cannot bind parameter 'Port'. Cannot convert value \"{s}\" to type \"System.Int32\"."))
        })?,
        Some(other) => {
            return Err(ExoError::Parameter(format!(
                "Cannot bind parameter 'Port' to value {other}."
            )));
        }
    };
    let security = match p.string("Security")?.as_deref() {
        None => "Ssl".to_owned(),
        Some(s) => ["Ssl", "Tls", "None"]
            .into_iter()
            .find(|k| k.eq_ignore_ascii_case(s))
            .ok_or_else(|| ExoError::Parameter(format!("Cannot bind parameter 'Security'. Cannot convert value \"{s}\" to type \"Microsoft.Exchange.Data.Transport.IMAPSecurityMechanism\". Specify one of the following enumerator names and try again: None, Ssl, Tls")))?
            .to_owned(),
    };
    let st = &mut store.migration;
    if st.endpoints.iter().any(|e| fold(&e.name) == fold(&name)) {
        return Err(exists("migration endpoint", &name));
    }
    let e = Endpoint {
        name,
        remote_server: server,
        port,
        security,
    };
    let v = endpoint_view(&e);
    st.endpoints.push(e);
    Ok(v)
}

fn endpoint_view(e: &Endpoint) -> Value {
    json!({
        "Identity": e.name,
        "EndpointType": "IMAP",
        "RemoteServer": e.remote_server,
        "Port": e.port,
        "Security": e.security,
    })
}

/// `Get-MigrationEndpoint [-Identity]`.
pub fn get_endpoints(store: &mut Store, m: Map<String, Value>) -> Result<Output, ExoError> {
    let p = Params::new(m, &["Identity", "Type"])?;
    let identity = p.string("Identity")?;
    let values: Vec<Value> = store
        .migration
        .endpoints
        .iter()
        .filter(|e| identity.as_ref().is_none_or(|i| fold(i) == fold(&e.name)))
        .map(endpoint_view)
        .collect();
    if let (Some(i), true) = (&identity, values.is_empty()) {
        return Err(ExoError::NotFound(i.clone()));
    }
    Ok(Output {
        values,
        warnings: vec![],
        total: None,
    })
}

/// Splits one CSV line into fields (RFC 4180 quoting).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (false, '"') if at_start => {
                quoted = true;
                at_start = false;
            }
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            (true, '"') => quoted = false,
            (false, ',') => {
                out.push(std::mem::take(&mut cur));
                at_start = true;
            }
            (false, '"') => return Err("a quote inside an unquoted field".into()),
            (_, c) => {
                cur.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("an unterminated quoted field".into());
    }
    out.push(cur);
    Ok(out)
}

/// The rows of an IMAP migration CSV (header `EmailAddress,UserName,Password`, any order,
/// case-insensitive), as `(email, user name)`; errors say what is wrong without quoting any
/// password.
fn parse_csv(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!(
            "The CSV file is {} bytes; a migration batch CSV file can't be larger than 10 MB.",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "The CSV file isn't valid UTF-8 text.")?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let header = csv_fields(lines.next().unwrap_or_default())
        .map_err(|e| format!("The CSV header is invalid: {e}."))?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(e), Some(u), Some(pw)) = (col("EmailAddress"), col("UserName"), col("Password"))
    else {
        return Err("The CSV file must have the columns EmailAddress, UserName and Password for an IMAP migration.".into());
    };
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let f = csv_fields(line)
            .map_err(|e| format!("Row {} of the CSV file is invalid: {e}.", i + 1))?;
        if f.len() != header.len() {
            return Err(format!(
                "Row {} of the CSV file has {} fields; the header has {}.",
                i + 1,
                f.len(),
                header.len()
            ));
        }
        if f[u].is_empty() || f[pw].is_empty() {
            return Err(format!(
                "Row {} of the CSV file has no UserName or Password.",
                i + 1
            ));
        }
        rows.push((f[e].trim().to_owned(), f[u].clone()));
    }
    if rows.is_empty() {
        return Err("The CSV file has no rows.".into());
    }
    if rows.len() > MAX_ROWS {
        return Err(format!(
            "The CSV file has {} rows; a migration batch can't have more than 50,000.",
            rows.len()
        ));
    }
    Ok(rows)
}

/// `-CSVData`: a `Byte[]`, accepted as a base64 string (the JSON form of a .NET byte array;
/// chosen, unconfirmed).
fn csv_bytes(p: &Params) -> Result<Vec<u8>, ExoError> {
    match p.get("CSVData") {
        Some(Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|_| {
                ExoError::Parameter(
                    "Cannot bind parameter 'CSVData'. Cannot convert the value to type \"System.Byte[]\".".into(),
                )
            }),
        None | Some(Value::Null) => Err(ExoError::Parameter(
            "The CSVData parameter is required for an IMAP migration batch.".into(),
        )),
        Some(_) => Err(ExoError::Parameter(
            "Cannot bind parameter 'CSVData'. Cannot convert the value to type \"System.Byte[]\".".into(),
        )),
    }
}

/// `New-MigrationBatch -Name -SourceEndpoint -CSVData [-AutoStart] [-AutoComplete]`.
pub fn new_batch(store: &mut Store, m: Map<String, Value>) -> Result<Value, ExoError> {
    let p = Params::new(
        m,
        &[
            "Name",
            "SourceEndpoint",
            "CSVData",
            "AutoStart",
            "AutoComplete",
            "NotificationEmails",
            "BadItemLimit",
            "TargetDeliveryDomain",
            "ExcludeFolders",
        ],
    )?;
    let name = p.required("Name")?;
    if name.chars().count() > 64 {
        // New-MigrationBatch.md, -Name: "The maximum length is 64 characters."
        return Err(ExoError::Validation(format!(
            "The migration batch name '{name}' is longer than 64 characters."
        )));
    }
    let endpoint = p.required("SourceEndpoint")?;
    if store
        .migration
        .batches
        .iter()
        .any(|b| fold(&b.name) == fold(&name))
    {
        return Err(exists("migration batch", &name));
    }
    if !store
        .migration
        .endpoints
        .iter()
        .any(|e| fold(&e.name) == fold(&endpoint))
    {
        return Err(ExoError::NotFound(endpoint));
    }
    let bytes = csv_bytes(&p)?;
    let rows = parse_csv(&bytes).map_err(ExoError::Validation)?;
    let mut users: Vec<String> = Vec::new();
    for (email, _) in &rows {
        if users.iter().any(|u| fold(u) == fold(email)) {
            return Err(ExoError::Validation(format!(
                "The user '{email}' appears more than once in the CSV file."
            )));
        }
        if !valid_smtp(email) {
            return Err(ExoError::Validation(format!(
                "The EmailAddress '{email}' in the CSV file isn't a valid SMTP address."
            )));
        }
        let id = resolve(store, email, &[Some(RecipientKind::UserMailbox)], false).map_err(
            |_| {
                ExoError::Validation(format!(
                    "The user '{email}' in the CSV file doesn't have a mailbox in Exchange Online. Create a licensed mailbox first."
                ))
            },
        )?;
        if store.users[&id].all_licenses().is_empty() {
            return Err(ExoError::Validation(format!(
                "The mailbox '{email}' in the CSV file isn't licensed."
            )));
        }
        let in_other = store
            .migration
            .batches
            .iter()
            .find(|b| b.users.iter().any(|u| fold(u) == fold(email)) && !b.completed);
        if let Some(b) = in_other {
            return Err(ExoError::Validation(format!(
                "The user '{email}' already exists in the migration batch '{}'.",
                b.name
            )));
        }
        users.push(email.to_ascii_lowercase());
    }
    let text = String::from_utf8(bytes).unwrap_or_default();
    let batch = Batch {
        name: name.clone(),
        source_endpoint: endpoint,
        users,
        started_ms: p.bool("AutoStart")?.unwrap_or(false).then(now_millis),
        auto_complete: p.bool("AutoComplete")?.unwrap_or(false),
        completed: false,
    };
    let st = &mut store.migration;
    st.received.push((name, text));
    let v = st.batch_view(&batch);
    st.batches.push(batch);
    Ok(v)
}

/// `Get-MigrationBatch [-Identity]`.
pub fn get_batches(store: &mut Store, m: Map<String, Value>) -> Result<Output, ExoError> {
    let p = Params::new(
        m,
        &[
            "Identity",
            "Status",
            "Endpoint",
            "IncludeReport",
            "ResultSize",
            "Partition",
            "DomainController",
            "Diagnostic",
            "DiagnosticArgument",
            "DiagnosticInfo",
        ],
    )?;
    let identity = p.string("Identity")?;
    let st = &store.migration;
    let values: Vec<Value> = st
        .batches
        .iter()
        .filter(|b| identity.as_ref().is_none_or(|i| fold(i) == fold(&b.name)))
        .map(|b| st.batch_view(b))
        .collect();
    if let (Some(i), true) = (&identity, values.is_empty()) {
        return Err(ExoError::NotFound(i.clone()));
    }
    capped(values, &p)
}

/// Get-MigrationBatch and Get-MigrationUser return 1,000 objects unless `-ResultSize` says
/// otherwise ("-ResultSize ... The default value is 1000", their Microsoft Learn pages), with
/// the warning Exchange gives for a cut list (as Get-Recipient in `cmdlets`).
fn capped(mut values: Vec<Value>, p: &Params) -> Result<Output, ExoError> {
    let bad = || ExoError::Parameter("Cannot bind parameter 'ResultSize'.".into());
    let limit = match p.get("ResultSize") {
        None | Some(Value::Null) => Some(DEFAULT_RESULT_SIZE),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("unlimited") => None,
        Some(Value::String(s)) => Some(s.parse::<usize>().map_err(|_| bad())?),
        Some(Value::Number(n)) => Some(n.as_u64().ok_or_else(bad)? as usize),
        Some(_) => return Err(bad()),
    };
    let mut warnings = Vec::new();
    if let Some(limit) = limit
        && values.len() > limit
    {
        values.truncate(limit);
        warnings.push("There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter.".to_string());
    }
    Ok(Output {
        values,
        warnings,
        total: None,
    })
}

/// Exchange's default `-ResultSize` of Get-MigrationBatch and Get-MigrationUser.
pub const DEFAULT_RESULT_SIZE: usize = 1000;

/// `Get-MigrationUser [-Identity] [-BatchId]`.
pub fn get_users(store: &mut Store, m: Map<String, Value>) -> Result<Output, ExoError> {
    let p = Params::new(
        m,
        &[
            "Identity",
            "EmailAddress",
            "BatchId",
            "Status",
            "StatusSummary",
            "MailboxGuid",
            "IncludeAssociatedUsers",
            "ResultSize",
            "Partition",
            "DomainController",
        ],
    )?;
    let identity = p.string("Identity")?.or(p.string("EmailAddress")?);
    let batch = p.string("BatchId")?;
    let st = &store.migration;
    if let Some(b) = &batch
        && !st.batches.iter().any(|x| fold(&x.name) == fold(b))
    {
        return Err(ExoError::NotFound(b.clone()));
    }
    let mut values = Vec::new();
    for b in &st.batches {
        if batch.as_ref().is_some_and(|x| fold(x) != fold(&b.name)) {
            continue;
        }
        for u in &b.users {
            if identity.as_ref().is_none_or(|i| fold(i) == fold(u)) {
                values.push(st.user_view(b, u));
            }
        }
    }
    if let (Some(i), true) = (&identity, values.is_empty()) {
        return Err(ExoError::NotFound(i.clone()));
    }
    capped(values, &p)
}

/// `Complete-MigrationBatch -Identity`: only a synced batch can be completed.
pub fn complete_batch(store: &mut Store, m: Map<String, Value>) -> Result<(), ExoError> {
    let p = Params::new(m, &["Identity", "NotificationEmails", "SyncAndComplete"])?;
    let identity = p.required("Identity")?;
    let st = &mut store.migration;
    let Some(i) = st
        .batches
        .iter()
        .position(|b| fold(&b.name) == fold(&identity))
    else {
        return Err(ExoError::NotFound(identity));
    };
    let status = st.status(&st.batches[i]);
    if status != "Synced" {
        return Err(ExoError::Task(format!(
            "The migration batch '{identity}' can't be completed while its status is {status}."
        )));
    }
    st.batches[i].completed = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_are_read_with_quotes_and_checked() {
        let rows =
            parse_csv(b"EmailAddress,UserName,Password\r\na@x.edu,a*m,\"p,\"\"w\"\r\n").unwrap();
        assert_eq!(rows, [("a@x.edu".to_owned(), "a*m".to_owned())]);
        assert!(parse_csv(b"EmailAddress,UserName\r\na@x.edu,a\r\n").is_err());
        assert!(parse_csv(b"EmailAddress,UserName,Password\r\n").is_err());
        let many = format!(
            "EmailAddress,UserName,Password\n{}",
            "a@x.edu,a,p\n".repeat(MAX_ROWS + 1)
        );
        assert!(parse_csv(many.as_bytes()).unwrap_err().contains("50,000"));
        let err = parse_csv(b"EmailAddress,UserName,Password\na@x.edu,a,\n").unwrap_err();
        assert!(!err.contains("a@x.edu,a"));
    }

    #[test]
    fn lists_stop_at_1000_with_the_warning_unless_result_size_says_otherwise() {
        let values: Vec<Value> = (0..1001).map(|i| json!({"Identity": i})).collect();
        let params = |v: Option<Value>| {
            let mut m = Map::new();
            if let Some(v) = v {
                m.insert("ResultSize".into(), v);
            }
            Params::new(m, &["ResultSize"]).unwrap()
        };
        let out = capped(values.clone(), &params(None)).unwrap();
        assert_eq!(out.values.len(), 1000);
        assert!(out.warnings[0].contains("ResultSize"), "{:?}", out.warnings);
        let out = capped(values.clone(), &params(Some(json!("Unlimited")))).unwrap();
        assert_eq!((out.values.len(), out.warnings.len()), (1001, 0));
        let out = capped(values.clone(), &params(Some(json!(5)))).unwrap();
        assert_eq!(out.values.len(), 5);
        assert!(capped(values, &params(Some(json!("lots")))).is_err());
    }
}
