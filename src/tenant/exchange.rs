//! Exchange Online admin API client: cmdlets over REST, the endpoint the
//! ExchangeOnlineManagement v3 module uses (`POST {exchange}/adminapi/beta/{tenant}/
//! InvokeCommand`, see TENANT_FACTS.md).
//!
//! Results are the cmdlets' objects as JSON (`Vec<Value>`), from `value` of every page.
//! Microsoft publishes no throttling figures for this endpoint, so the service's limiter
//! starts with two requests in flight and never exceeds a few.
//!
//! What live tenants answer, and how it is read (sources: rknightion/graph2otel
//! `internal/exoclient/errors_test.go` and `errors.go`, bodies captured 2026-07-23;
//! GreyCorbel/ExoHelper `Get-ExoException.ps1`; KelvinTegelaar/CIPP-API `New-ExoRequest.ps1`):
//! - Errors: `{"error":{"code":"BadRequest","message":"Error executing cmdlet" | "Invalid
//!   Operation","details":[{"code":"Client","message":"Ex6F9304|<exception type>|<text>"}],
//!   "innererror":{…,"internalexception":{"message":…,"type":…}}}}`. `error.message` is a
//!   generic literal; the reason is in `details[].message` after the second `|`, the exception
//!   type between the first two. `internalexception` (lower case) is read only when there are
//!   no details, and never when it is the wrapper "Exception of type '…' was thrown.". Some
//!   403 bodies are not JSON at all (NUL bytes). See [`exchange_error`].
//! - Non-terminating errors come inside a 200 as a non-empty `@adminapi.errors` array: the
//!   call failed ([`TenantError::Refused`] or a more specific variant), it did not succeed.
//! - `@adminapi.warnings` (an array of strings, present and empty on clean answers):
//!   "no settings … have been modified" and "address already exists" are logged at DEBUG
//!   (an idempotent `Set-*` says them on every run), anything else at WARN.
//! - Paging: `@odata.nextLink`, POSTed with the same body. A replay can answer 400 "Expired
//!   or Invalid pagination request" (graph2otel measured it; the skip token is bound to one
//!   backend): the listing starts again from its first page, at most
//!   [`MAX_LISTING_RESTARTS`] times, then fails. A short listing is never returned.

use std::sync::Arc;

use reqwest::{Method, Url};
use serde_json::{Map, Value, json};

use super::error::{Service, TenantError};
use super::http::{Call, Executor, Repeat, Reply};
use crate::secret::Secret;

/// The system mailbox requests are routed by, for app-only access.
const ANCHOR_MAILBOX: &str = "APP:SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}@";

/// A PowerShell hashtable `@{Add=...; Remove=...}` as the REST endpoint expects it, for
/// multi-valued parameters such as `-EmailAddresses`.
pub fn hashtable(add: &[String], remove: &[String]) -> Value {
    let mut m = Map::new();
    m.insert("@odata.type".into(), json!("#Exchange.GenericHashTable"));
    if !add.is_empty() {
        m.insert("Add".into(), json!(add));
    }
    if !remove.is_empty() {
        m.insert("Remove".into(), json!(remove));
    }
    Value::Object(m)
}

/// What `New-MailUser` needs. The password is only there because Exchange requires one
/// with `-MicrosoftOnlineServicesID`; it is random and nobody uses it.
#[derive(Debug, Clone)]
pub struct NewMailUser {
    /// `-Name`: unique among recipients, at most 64 characters.
    pub name: String,
    pub alias: String,
    pub display_name: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Where mail for this person goes: the on-premises routing address.
    pub external_email_address: String,
    /// The user principal name (`-MicrosoftOnlineServicesID`).
    pub user_principal_name: Option<String>,
    pub password: Option<Secret>,
}

/// How often a listing starts again from its first page after Exchange refused a next link
/// ("Expired or Invalid pagination request").
pub const MAX_LISTING_RESTARTS: u32 = 3;

/// An Exchange admin API client. Cheap to clone; clones share the limiter and counters.
#[derive(Debug, Clone)]
pub struct Exchange {
    inner: Arc<ExchangeInner>,
}

#[derive(Debug)]
struct ExchangeInner {
    exec: Arc<Executor>,
    url: Url,
    anchor: String,
}

/// Verbs whose cmdlets may be sent twice without doing anything twice.
/// A UTC instant in the date form of Microsoft's OPATH examples, `M/d/yyyy h:mm:ss AM|PM`
/// (en-US, the form "Filterable properties for the Filter parameter" shows).
fn opath_date(unix: i64) -> String {
    use chrono::{DateTime, Utc};
    let t = DateTime::<Utc>::from_timestamp(unix, 0).unwrap_or_default();
    t.format("%-m/%-d/%Y %-I:%M:%S %p").to_string()
}

fn repeat_for(cmdlet: &str) -> Repeat {
    let verb = cmdlet.split('-').next().unwrap_or("").to_ascii_lowercase();
    match verb.as_str() {
        "get" | "set" | "remove" | "test" => Repeat::Safe,
        _ => Repeat::Unsafe,
    }
}

/// What an Exchange error says: the exception type (may be empty), the service's own text,
/// and `error.code` (may be empty).
#[derive(Debug, PartialEq, Eq)]
struct Reason {
    kind: String,
    text: String,
    code: String,
}

/// Reads the reason out of an error body, in this order:
/// 1. the first `error.details[].message` with text, split as `[context]|Type|text`;
/// 2. `error.innererror.internalexception` (any case of the key) `message` and `type`,
///    unless it is the wrapper "Exception of type '…' was thrown.";
/// 3. `error.message` (generic, "Invalid Operation"), split the same way;
/// 4. a body that is not the JSON envelope: its text if it is printable, else the status's
///    reason phrase, saying that the body was not JSON (live 403s are NUL bytes).
fn reason(reply: &Reply) -> Reason {
    let v: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let e = &v["error"];
    let code = e["code"].as_str().unwrap_or("").to_owned();
    let found = |kind: &str, text: &str| Reason {
        kind: kind.to_owned(),
        text: text.to_owned(),
        code: code.clone(),
    };
    for d in e["details"].as_array().into_iter().flatten() {
        if let Some(m) = d["message"].as_str() {
            let (kind, text) = split_exception(m);
            if !text.is_empty() {
                return found(kind, text);
            }
        }
    }
    let inner = e["innererror"].as_object().and_then(|o| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("internalexception"))
            .map(|(_, v)| v)
    });
    if let Some(inner) = inner {
        let text = inner["message"].as_str().unwrap_or("").trim();
        if !text.is_empty() && !is_wrapper(text) {
            let (kind, text) = split_exception(text);
            let kind = inner["type"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or(kind);
            return found(kind, text);
        }
    }
    if let Some(m) = e["message"].as_str() {
        let (kind, text) = split_exception(m);
        if !text.is_empty() {
            return found(kind, text);
        }
    }
    let phrase = reply
        .status
        .canonical_reason()
        .unwrap_or("no reason phrase");
    let text = if v.is_null() {
        let raw = String::from_utf8_lossy(&reply.body);
        let raw = raw.trim();
        if raw.is_empty() || raw.chars().any(|c| c.is_control() && !c.is_whitespace()) {
            format!("{phrase} (the body is not JSON)")
        } else {
            format!("{phrase}: {}", truncate(raw, 300))
        }
    } else {
        format!("{phrase}: {}", truncate(&v.to_string(), 300))
    };
    found("", &text)
}

/// "Exception of type 'Microsoft.Exchange.…DirectInvokeCmdletExecutionException' was
/// thrown.": the envelope around every cmdlet failure, never the reason.
fn is_wrapper(text: &str) -> bool {
    text.starts_with("Exception of type '") && text.trim_end_matches('.').ends_with("was thrown")
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// An Exchange error answer → typed error (see [`reason`] for where the text comes from):
/// - `ProxyAddressExistsException`, or "proxy address … is already being used" →
///   [`TenantError::AddressInUse`] with the address from the quoted `"SMTP:x"`;
/// - `ADObjectAlreadyExistsException`, or a name "is already being used" →
///   [`TenantError::Conflict`] on `Name`, the message naming it;
/// - 404, `ManagementObjectNotFoundException` or "couldn't be found" →
///   [`TenantError::NotFound`] (`what` = the identity, else the cmdlet);
/// - 401 → `Unauthorized`, 403 → `Forbidden`, with the text;
/// - anything else → [`TenantError::Refused`] with `code` = the exception type (else
///   `error.code`) and `message` = `<cmdlet>: <the service's text>`.
fn exchange_error(reply: &Reply, cmdlet: &str, identity: Option<&str>) -> TenantError {
    classify(reason(reply), reply.status.as_u16(), cmdlet, identity)
}

fn classify(r: Reason, status: u16, cmdlet: &str, identity: Option<&str>) -> TenantError {
    let Reason { kind, text, code } = r;
    if kind.ends_with("ProxyAddressExistsException")
        || (text.contains("proxy address") && text.contains("already being used"))
    {
        // `… "SMTP:a@x" is already being used by "<server>/…/<tenant>.onmicrosoft.com/Holder".`
        // (Microsoft's troubleshooting page) or `… LegacyExchangeDN of "Holder".` (older
        // reports): the second quoted token names who has it, its last path segment the Name.
        let holder = text
            .split('"')
            .nth(3)
            .map(|h| h.rsplit('/').next().unwrap_or(h))
            .filter(|h| !h.is_empty())
            .map(str::to_owned);
        return TenantError::AddressInUse {
            address: quoted(&text).map(strip_prefix).unwrap_or_default(),
            holder,
        };
    }
    if kind.ends_with("ADObjectAlreadyExistsException") || text.contains("is already being used") {
        return TenantError::Conflict {
            service: Service::Exchange,
            property: "Name".into(),
            message: text,
        };
    }
    if status == 404
        || kind.ends_with("ManagementObjectNotFoundException")
        || text.contains("couldn't be found")
    {
        return TenantError::NotFound {
            service: Service::Exchange,
            what: identity.unwrap_or(cmdlet).to_owned(),
        };
    }
    match status {
        401 => TenantError::Unauthorized {
            service: Service::Exchange,
            message: text,
        },
        403 => TenantError::Forbidden {
            service: Service::Exchange,
            message: format!("{cmdlet}: {text}"),
        },
        _ => TenantError::Refused {
            service: Service::Exchange,
            status,
            code: if kind.is_empty() { code } else { kind },
            message: format!("{cmdlet}: {text}"),
        },
    }
}

/// Non-terminating errors of a 200 answer (`@adminapi.errors`) → the error of the call, or
/// `None` when there are none. Entries are strings or objects with a message; each is read
/// like a `details[].message`, the first decides the kind, all texts are kept.
fn non_terminating_error(v: &Value, cmdlet: &str, identity: Option<&str>) -> Option<TenantError> {
    let errors = v["@adminapi.errors"].as_array().filter(|a| !a.is_empty())?;
    let texts: Vec<String> = errors
        .iter()
        .map(|e| match e {
            Value::String(s) => s.clone(),
            Value::Object(o) => ["message", "Message", "ErrorMessage", "Exception"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| e.to_string()),
            other => other.to_string(),
        })
        .collect();
    let (kind, first) = split_exception(&texts[0]);
    let rest: Vec<&str> = texts[1..].iter().map(|t| split_exception(t).1).collect();
    let text = std::iter::once(first)
        .chain(rest)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let code = if kind.is_empty() {
        "NonTerminatingError"
    } else {
        kind
    };
    Some(classify(
        Reason {
            kind: kind.to_owned(),
            text: if text.is_empty() {
                "non-terminating error without text".into()
            } else {
                text
            },
            code: code.to_owned(),
        },
        200,
        cmdlet,
        identity,
    ))
}

/// Warnings every idempotent write repeats: not worth a WARN line.
fn is_benign_warning(w: &str) -> bool {
    let w = w.to_ascii_lowercase();
    (w.contains("no settings") && w.contains("modified"))
        || (w.contains("address") && w.contains("already exist"))
}

/// `[context]|Type|text` (`Ex6F9304|…Exception|text` or `|…Exception|text`) → (type, text);
/// a message without the prefix is all text.
fn split_exception(m: &str) -> (&str, &str) {
    let Some((_, rest)) = m.split_once('|') else {
        return ("", m.trim());
    };
    match rest.split_once('|') {
        Some((kind, text)) if !kind.trim().contains(' ') => (kind.trim(), text.trim()),
        _ => ("", rest.trim()),
    }
}

/// The first `"..."` in a message.
fn quoted(text: &str) -> Option<&str> {
    let start = text.find('"')? + 1;
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

/// `smtp:a@b` → `a@b`.
fn strip_prefix(a: &str) -> String {
    match a.split_once(':') {
        Some((t, rest)) if t.eq_ignore_ascii_case("smtp") => rest.to_owned(),
        _ => a.to_owned(),
    }
}

/// Exchange's answer to a next link it no longer honours.
fn is_expired_page(reply: &Reply) -> bool {
    const NEEDLE: &[u8] = b"expired or invalid pagination request";
    reply.status.as_u16() == 400
        && reply
            .body
            .windows(NEEDLE.len())
            .any(|w| w.eq_ignore_ascii_case(NEEDLE))
}

impl Exchange {
    pub(crate) fn new(exec: Arc<Executor>, url: Url, tenant_id: &str) -> Self {
        Self {
            inner: Arc::new(ExchangeInner {
                exec,
                url,
                anchor: format!("{ANCHOR_MAILBOX}{tenant_id}"),
            }),
        }
    }

    /// Runs a cmdlet and answers all its output objects, following `@odata.nextLink` (the
    /// same body POSTed to the link). `Get-`, `Set-`, `Remove-` and `Test-` cmdlets are
    /// retried after a server error or a dropped connection; others are not (use
    /// [`Self::invoke_with`]).
    pub async fn invoke(&self, cmdlet: &str, parameters: Value) -> Result<Vec<Value>, TenantError> {
        self.invoke_with(cmdlet, parameters, repeat_for(cmdlet))
            .await
    }

    /// Like [`Self::invoke`], saying whether a replay is harmless.
    ///
    /// Errors: the typed error of the answer ([`exchange_error`]), also for a 200 carrying
    /// `@adminapi.errors`; [`TenantError::Ambiguous`] (naming the cmdlet) when a
    /// [`Repeat::Unsafe`] call may have run without an answer; [`TenantError::Protocol`] when
    /// a listing's next page kept being refused as expired.
    pub async fn invoke_with(
        &self,
        cmdlet: &str,
        parameters: Value,
        repeat: Repeat,
    ) -> Result<Vec<Value>, TenantError> {
        self.invoke_map(cmdlet, parameters, repeat, |v| v).await
    }

    /// Like [`Self::invoke_with`], passing each output object through `each` as its page
    /// arrives: a long listing stays in memory only in the form the caller keeps, not as
    /// the some 150 properties per object Exchange sends. An expired next link that restarts
    /// the listing discards what `each` made of the earlier pages.
    pub async fn invoke_map<T: Send>(
        &self,
        cmdlet: &str,
        parameters: Value,
        repeat: Repeat,
        mut each: impl FnMut(Value) -> T + Send,
    ) -> Result<Vec<T>, TenantError> {
        let identity = parameters
            .get("Identity")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let label = match (&identity, parameters.get("Name").and_then(Value::as_str)) {
            (Some(id), _) => format!("{cmdlet} -Identity {id}"),
            (None, Some(name)) => format!("{cmdlet} -Name {name}"),
            (None, None) => cmdlet.to_owned(),
        };
        let parameters = match parameters {
            Value::Null => json!({}),
            p => p,
        };
        let body = json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}});
        let mut out = Vec::new();
        let mut url = self.inner.url.clone();
        let mut page = 0u32;
        let mut restarts = 0u32;
        loop {
            let call = Call::new(Method::POST, url)
                .json(body.clone())
                .header("x-anchormailbox", &self.inner.anchor)
                .header("x-responseformat", "json")
                .header("prefer", "odata.maxpagesize=1000")
                .repeat(repeat);
            let reply = match self.inner.exec.send(&call).await {
                Ok(r) => r,
                Err(TenantError::Ambiguous {
                    service, message, ..
                }) => {
                    return Err(TenantError::Ambiguous {
                        service,
                        what: label,
                        message,
                    });
                }
                Err(e) => return Err(e),
            };
            if !reply.status.is_success() {
                if page > 0 && is_expired_page(&reply) {
                    restarts += 1;
                    if restarts > MAX_LISTING_RESTARTS {
                        return Err(TenantError::Protocol {
                            service: Service::Exchange,
                            message: format!(
                                "{cmdlet}: page {} was refused as \"Expired or Invalid pagination request\" on {} attempts of the whole listing; no partial listing is used",
                                page + 1,
                                restarts
                            ),
                        });
                    }
                    tracing::info!(
                        cmdlet,
                        page = page + 1,
                        restart = restarts,
                        "Exchange refused the next link as expired; reading the listing again from its start"
                    );
                    out.clear();
                    page = 0;
                    url = self.inner.url.clone();
                    continue;
                }
                return Err(exchange_error(&reply, cmdlet, identity.as_deref()));
            }
            let mut v = reply.value();
            if let Some(e) = non_terminating_error(&v, cmdlet, identity.as_deref()) {
                return Err(e);
            }
            if let Some(w) = v["@adminapi.warnings"].as_array() {
                for w in w.iter().filter_map(Value::as_str) {
                    if is_benign_warning(w) {
                        tracing::debug!(cmdlet, warning = w, "Exchange warned");
                    } else {
                        tracing::warn!(cmdlet, warning = w, "Exchange warned");
                    }
                }
            }
            match v.get_mut("value").map(Value::take) {
                Some(Value::Array(items)) => out.extend(items.into_iter().map(&mut each)),
                None | Some(Value::Null) => {}
                Some(other) => out.push(each(other)),
            }
            match v["@odata.nextLink"].as_str() {
                Some(link) => {
                    url = self.inner.exec.same_origin(link)?;
                    page += 1;
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// `New-MailUser -Name -Alias -DisplayName -ExternalEmailAddress [-FirstName] [-LastName]
    /// [-MicrosoftOnlineServicesID -Password]`, which creates the Entra user and the MailUser
    /// together; answers the new object (its `ExternalDirectoryObjectId` is the Entra id).
    ///
    /// Never replayed after it may have run ([`Repeat::Unsafe`]): a replay of a create that
    /// did happen fails with `AddressInUse`, and the object it made is then mistaken for a
    /// foreign one. A timeout, reset or 500/502/504 after sending is
    /// [`TenantError::Ambiguous`]; the caller must look for the object (by UPN or address).
    /// 503 and 429 are still retried (not executed). `-PrimarySmtpAddress` is never sent: it
    /// is "functional only in on-premises Exchange" (office-docs-powershell `New-MailUser.md`);
    /// Exchange Online makes `ExternalEmailAddress` (on an accepted domain) or the MOERA the
    /// primary, and the caller sets the primary afterwards with a full `-EmailAddresses` list.
    pub async fn new_mail_user(&self, m: &NewMailUser) -> Result<Value, TenantError> {
        let mut p = json!({
            "Name": m.name,
            "Alias": m.alias,
            "DisplayName": m.display_name,
            "ExternalEmailAddress": m.external_email_address,
        });
        let opt = [
            ("FirstName", &m.first_name),
            ("LastName", &m.last_name),
            ("MicrosoftOnlineServicesID", &m.user_principal_name),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                p[k] = json!(v);
            }
        }
        if let Some(pw) = &m.password {
            p["Password"] = json!(pw.expose());
        }
        let out = self.invoke_with("New-MailUser", p, Repeat::Unsafe).await?;
        out.into_iter().next().ok_or_else(|| TenantError::Protocol {
            service: Service::Exchange,
            message: "New-MailUser returned no object".into(),
        })
    }

    /// `Set-MailUser -Identity <identity>` with further parameters (an object such as
    /// `{"EmailAddresses": hashtable(..), "CustomAttribute15": ".."}`).
    pub async fn set_mail_user(
        &self,
        identity: &str,
        parameters: Value,
    ) -> Result<(), TenantError> {
        self.invoke("Set-MailUser", with_identity(identity, parameters))
            .await
            .map(drop)
    }

    /// `Get-MailUser -Identity`; not found is `Ok(None)`.
    pub async fn get_mail_user(&self, identity: &str) -> Result<Option<Value>, TenantError> {
        self.get_one("Get-MailUser", identity).await
    }

    /// `Remove-MailUser -Identity` (a soft delete). Answers whether it was there.
    pub async fn remove_mail_user(&self, identity: &str) -> Result<bool, TenantError> {
        match self
            .invoke(
                "Remove-MailUser",
                json!({"Identity": identity, "Confirm": false}),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(TenantError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `Get-Recipient -RecipientTypeDetails MailUser,UserMailbox` with an optional OPATH
    /// filter; `result_size` `None` is `Unlimited` (Exchange's own default is 1,000, which
    /// would silently cut a large tenant short).
    pub async fn get_recipients(
        &self,
        filter: Option<&str>,
        result_size: Option<u32>,
    ) -> Result<Vec<Value>, TenantError> {
        let mut p = json!({
            "RecipientTypeDetails": ["MailUser", "UserMailbox"],
            "ResultSize": result_size.map_or_else(|| json!("Unlimited"), |n| json!(n.to_string())),
        });
        if let Some(f) = filter {
            p["Filter"] = json!(f);
        }
        self.invoke("Get-Recipient", p).await
    }

    /// Every recipient: `Get-Recipient -ResultSize Unlimited` without
    /// `-RecipientTypeDetails`, so users, mail users, mailboxes, groups, mail contacts and
    /// public folders all come back (each holds addresses a new recipient cannot take). All
    /// pages; an expired next link restarts the listing (see the module docs).
    ///
    /// Of each recipient only `properties` are kept, page by page: Exchange sends every
    /// property (no documented way to select them through this endpoint), and 40,000
    /// recipients with all of theirs would hold hundreds of megabytes until the inventory is
    /// sorted. An object that is not a JSON object is kept as it is.
    pub async fn list_recipients(&self, properties: &[&str]) -> Result<Vec<Value>, TenantError> {
        self.list_recipients_as(|v| keep_properties(v, properties))
            .await
    }

    /// Like [`Self::list_recipients`], keeping of each recipient what `each` makes of it as
    /// its page arrives (the inventory's compact form).
    pub async fn list_recipients_as<T: Send>(
        &self,
        each: impl FnMut(Value) -> T + Send,
    ) -> Result<Vec<T>, TenantError> {
        self.invoke_map(
            "Get-Recipient",
            json!({"ResultSize": "Unlimited"}),
            repeat_for("Get-Recipient"),
            each,
        )
        .await
    }

    /// Like [`Self::list_recipients_as`], for the recipients changed after `since` (Unix
    /// seconds, UTC): `Get-Recipient -Filter "WhenChangedUTC -gt '<since>'"`, the filterable
    /// property and the date form of Microsoft's "Filterable properties for the Filter
    /// parameter on Exchange cmdlets" (example `WhenChangedUTC -gt '8/1/2017 2:00:00 PM'`).
    /// Deleted recipients are not in it: a caller learns of those elsewhere.
    pub async fn list_recipients_changed_since_as<T: Send>(
        &self,
        since: i64,
        each: impl FnMut(Value) -> T + Send,
    ) -> Result<Vec<T>, TenantError> {
        let filter = format!("WhenChangedUTC -gt '{}'", opath_date(since));
        self.invoke_map(
            "Get-Recipient",
            json!({"Filter": filter, "ResultSize": "Unlimited"}),
            repeat_for("Get-Recipient"),
            each,
        )
        .await
    }

    /// `Remove-MailUser -Identity <identity> -PermanentlyDelete`: purges a soft-deleted mail
    /// user ("Remove-MailUser": the switch "permanently deletes … a soft-deleted mail user",
    /// cloud only). False when Exchange does not find it.
    pub async fn purge_mail_user(&self, identity: &str) -> Result<bool, TenantError> {
        match self
            .invoke(
                "Remove-MailUser",
                json!({"Identity": identity, "PermanentlyDelete": true, "Confirm": false}),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(TenantError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Mail users in the recycle bin: `Get-MailUser -SoftDeletedMailUser -ResultSize
    /// Unlimited`. They keep their addresses (and block them) until purged. Of each only
    /// `properties` are kept, as in [`Self::list_recipients`].
    pub async fn list_soft_deleted_mail_users(
        &self,
        properties: &[&str],
    ) -> Result<Vec<Value>, TenantError> {
        self.list_soft_deleted_mail_users_as(|v| keep_properties(v, properties))
            .await
    }

    /// Like [`Self::list_soft_deleted_mail_users`], keeping of each what `each` makes of it.
    pub async fn list_soft_deleted_mail_users_as<T: Send>(
        &self,
        each: impl FnMut(Value) -> T + Send,
    ) -> Result<Vec<T>, TenantError> {
        self.invoke_map(
            "Get-MailUser",
            json!({"SoftDeletedMailUser": true, "ResultSize": "Unlimited"}),
            repeat_for("Get-MailUser"),
            each,
        )
        .await
    }

    /// `Set-User -Identity <identity>` with further parameters: the address-book fields
    /// (`DisplayName`, `FirstName`, `LastName`, `Department`, `Title`, `Office`, `Phone`,
    /// `MobilePhone`, `Company`), which Entra may refuse to take through Graph for objects
    /// Exchange created. Not found is [`TenantError::NotFound`].
    pub async fn set_user(&self, identity: &str, parameters: Value) -> Result<(), TenantError> {
        self.invoke("Set-User", with_identity(identity, parameters))
            .await
            .map(drop)
    }

    /// `Get-Recipient -Identity`; not found is `Ok(None)`.
    pub async fn get_recipient(&self, identity: &str) -> Result<Option<Value>, TenantError> {
        self.get_one("Get-Recipient", identity).await
    }

    /// `Get-User -Identity`; not found is `Ok(None)`.
    pub async fn get_user(&self, identity: &str) -> Result<Option<Value>, TenantError> {
        self.get_one("Get-User", identity).await
    }

    /// `Get-User -ResultSize Unlimited`: every user object Exchange knows, all pages.
    pub async fn list_users(&self) -> Result<Vec<Value>, TenantError> {
        self.invoke("Get-User", json!({"ResultSize": "Unlimited"}))
            .await
    }

    /// `Set-Mailbox -Identity` with further parameters.
    pub async fn set_mailbox(&self, identity: &str, parameters: Value) -> Result<(), TenantError> {
        self.invoke("Set-Mailbox", with_identity(identity, parameters))
            .await
            .map(drop)
    }

    /// `Get-Mailbox -Identity`; not found is `Ok(None)`.
    pub async fn get_mailbox(&self, identity: &str) -> Result<Option<Value>, TenantError> {
        self.get_one("Get-Mailbox", identity).await
    }

    /// `Get-AcceptedDomain`.
    pub async fn get_accepted_domains(&self) -> Result<Vec<Value>, TenantError> {
        self.invoke("Get-AcceptedDomain", json!({})).await
    }

    pub(crate) fn executor(&self) -> &Arc<Executor> {
        &self.inner.exec
    }

    async fn get_one(&self, cmdlet: &str, identity: &str) -> Result<Option<Value>, TenantError> {
        match self.invoke(cmdlet, json!({"Identity": identity})).await {
            Ok(v) => Ok(v.into_iter().next()),
            Err(TenantError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn with_identity(identity: &str, parameters: Value) -> Value {
    let mut p = match parameters {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    p.insert("Identity".into(), json!(identity));
    Value::Object(p)
}

/// `v` with only the named properties, when it is an object.
fn keep_properties(v: Value, properties: &[&str]) -> Value {
    match v {
        Value::Object(mut m) => {
            m.retain(|k, _| properties.contains(&k.as_str()));
            Value::Object(m)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn opath_dates_take_the_documented_form() {
        // 2017-08-01 14:00:00 UTC, the instant of Microsoft's example.
        assert_eq!(opath_date(1_501_596_000), "8/1/2017 2:00:00 PM");
        assert_eq!(opath_date(1_501_545_605), "8/1/2017 12:00:05 AM");
        assert_eq!(opath_date(1_788_264_000), "9/1/2026 12:00:00 PM");
    }

    use super::*;
    use crate::tenant::http::mock::{Answer, Server};

    fn raw(status: u16, body: &[u8]) -> Reply {
        Reply {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: body.to_vec(),
        }
    }

    fn reply(status: u16, body: Value) -> Reply {
        raw(status, &serde_json::to_vec(&body).unwrap())
    }

    /// The shape of a live cmdlet failure: generic `error.message`, the reason only in
    /// `details[0].message`, the wrapper in `innererror.internalexception` (CSS capture of a
    /// live NotFound; graph2otel `errors_test.go`).
    fn live_body(code: &str, kind: &str, text: &str) -> Value {
        json!({"error": {
            "code": code,
            "message": "Error executing cmdlet",
            "details": [{"code": "Client", "target": "", "message": format!("Ex6F9304|{kind}|{text}")}],
            "innererror": {
                "message": "Error executing cmdlet",
                "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                "stacktrace": "",
                "internalexception": {
                    "message": "Exception of type 'Microsoft.Exchange.AdminApi.CommandInvocation.DirectInvokeCmdletExecutionException' was thrown.",
                    "type": "Microsoft.Exchange.AdminApi.CommandInvocation.DirectInvokeCmdletExecutionException",
                    "stacktrace": "",
                },
            },
            "adminapi.warnings@odata.type": "#Collection(String)",
            "@adminapi.warnings": [],
        }})
    }

    const PROXY: &str = "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException";

    #[test]
    fn live_error_bodies_are_read_from_the_details() {
        let r = reply(
            400,
            live_body(
                "BadRequest",
                PROXY,
                "The proxy address \"SMTP:a@example.edu\" is already being used by the proxy addresses or LegacyExchangeDN of \"b\". Please choose another proxy address.",
            ),
        );
        match exchange_error(&r, "New-MailUser", None) {
            TenantError::AddressInUse { address, holder } => {
                assert_eq!(address, "a@example.edu");
                assert_eq!(holder.as_deref(), Some("b"));
            }
            e => panic!("{e:?}"),
        }

        let r = reply(
            400,
            live_body(
                "BadRequest",
                "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException",
                "The name \"Jane Doe\" is already being used. Please try another name.",
            ),
        );
        match exchange_error(&r, "New-MailUser", None) {
            TenantError::Conflict {
                property, message, ..
            } => {
                assert_eq!(property, "Name");
                assert!(message.contains("Jane Doe"), "{message}");
            }
            e => panic!("{e:?}"),
        }

        // Not found comes as 404, but the type alone is enough too.
        for status in [404, 400] {
            let r = reply(
                status,
                live_body(
                    "NotFound",
                    "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                    "The operation couldn't be performed because object 'x' couldn't be found on 'AM0PR01A001DC01.EURPR01A001.prod.outlook.com'.",
                ),
            );
            assert!(
                matches!(exchange_error(&r, "Get-MailUser", Some("x")), TenantError::NotFound { what, .. } if what == "x"),
                "{status}"
            );
        }

        // Any other refusal: the reason after the last `|`, the type as the code, never the
        // generic message or the wrapper.
        let r = reply(
            400,
            live_body(
                "BadRequest",
                "Microsoft.Exchange.Data.DataValidationException",
                "The length of the property is too long. The maximum length is 64.",
            ),
        );
        match exchange_error(&r, "New-MailUser", None) {
            TenantError::Refused {
                status,
                code,
                message,
                ..
            } => {
                assert_eq!(status, 400);
                assert_eq!(code, "Microsoft.Exchange.Data.DataValidationException");
                assert_eq!(
                    message,
                    "New-MailUser: The length of the property is too long. The maximum length is 64."
                );
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn graph2otel_live_bodies() {
        // Verbatim from graph2otel errors_test.go (live, 2026-07-23): no details, the reason
        // in innererror.internalexception (not a wrapper here).
        let invalid_enum = br##"{"error":{"code":"BadRequest","message":"Invalid Operation","innererror":{"message":"Invalid Operation","type":"Microsoft.Exchange.Admin.OData.Core.ODataServiceException","stacktrace":"","internalexception":{"message":"Cannot process argument transformation on parameter 'QuarantineTypes'. Cannot convert value \"Nonsense\" to type \"Microsoft.Exchange.Management.FfoQuarantine.QuarantineMessageTypeEnum[]\".","type":"Microsoft.Exchange.AdminApi.CommandInvocation.ParameterTransformationException","stacktrace":""}},"adminapi.warnings@odata.type":"#Collection(String)","@adminapi.warnings":[]}}"##;
        match exchange_error(&raw(400, invalid_enum), "Get-QuarantineMessage", None) {
            TenantError::Refused { code, message, .. } => {
                assert_eq!(
                    code,
                    "Microsoft.Exchange.AdminApi.CommandInvocation.ParameterTransformationException"
                );
                assert!(
                    message.contains("Cannot process argument transformation"),
                    "{message}"
                );
            }
            e => panic!("{e:?}"),
        }
        // Details without the `Ex…` context prefix.
        let unknown_param = br#"{"error":{"code":"BadRequest","message":"Invalid Operation","details":[{"code":"Client","target":"","message":"|Microsoft.Exchange.AdminApi.CommandInvocation.AmbiguousParameterSetException|Parameter set cannot be resolved using the specified named parameters. Invalid cmdlet parameters specified. BogusParameter"}],"innererror":{"message":"Invalid Operation","type":"Microsoft.Exchange.Admin.OData.Core.ODataServiceException","stacktrace":"","internalexception":{"message":"Parameter set cannot be resolved using the specified named parameters. Invalid cmdlet parameters specified. BogusParameter","type":"Microsoft.Exchange.AdminApi.CommandInvocation.AmbiguousParameterSetException","stacktrace":""}}}}"#;
        match exchange_error(&raw(400, unknown_param), "Get-QuarantineMessage", None) {
            TenantError::Refused { code, message, .. } => {
                assert!(code.ends_with("AmbiguousParameterSetException"), "{code}");
                assert_eq!(
                    message,
                    "Get-QuarantineMessage: Parameter set cannot be resolved using the specified named parameters. Invalid cmdlet parameters specified. BogusParameter"
                );
            }
            e => panic!("{e:?}"),
        }
        // Nothing but the generic message: that is all there is.
        let bare = br#"{"error":{"code":"BadRequest","message":"Invalid Operation"}}"#;
        match exchange_error(&raw(400, bare), "Get-X", None) {
            TenantError::Refused { code, message, .. } => {
                assert_eq!(code, "BadRequest");
                assert_eq!(message, "Get-X: Invalid Operation");
            }
            e => panic!("{e:?}"),
        }
        // A wrapper and nothing else is not a reason either.
        let wrapped = json!({"error": {"code": "BadRequest", "message": "Error executing cmdlet", "innererror": {"internalexception": {"message": "Exception of type 'Microsoft.Exchange.AdminApi.CommandInvocation.DirectInvokeCmdletExecutionException' was thrown.", "type": "Microsoft.Exchange.AdminApi.CommandInvocation.DirectInvokeCmdletExecutionException"}}}});
        match exchange_error(&reply(400, wrapped), "Set-X", None) {
            TenantError::Refused { code, message, .. } => {
                assert_eq!(code, "BadRequest");
                assert_eq!(message, "Set-X: Error executing cmdlet");
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn non_json_bodies_say_so_without_raw_bytes() {
        // Live 403s are NUL bytes.
        let err = exchange_error(&raw(403, &[0u8; 4096]), "Get-Recipient", None);
        match &err {
            TenantError::Forbidden { message, .. } => {
                assert!(message.contains("not JSON"), "{message}");
                assert!(!message.contains('\0'));
            }
            e => panic!("{e:?}"),
        }
        let err = exchange_error(&raw(502, b"<html>gateway blew up</html>"), "Get-X", None);
        assert!(err.to_string().contains("gateway blew up"), "{err}");
        let err = exchange_error(&raw(400, b""), "Get-X", None);
        assert!(err.to_string().contains("not JSON"), "{err}");
    }

    #[test]
    fn the_holder_of_an_address_is_named_in_both_published_forms() {
        for (text, holder) in [
            (
                "The proxy address \"SMTP:a@example.edu\" is already being used by \"EUR01.prod.outlook.com/Microsoft Exchange Hosted Organizations/contoso.onmicrosoft.com/Jane Doe\". Choose another proxy address.",
                Some("Jane Doe"),
            ),
            (
                "The proxy address \"SMTP:a@example.edu\" is already being used by the proxy addresses or LegacyExchangeDN. Please choose another proxy address.",
                None,
            ),
        ] {
            let body = json!({"error": {"code": "BadRequest", "message": "Error executing cmdlet",
                "details": [{"message": format!("Ex6F9304|{PROXY}|{text}")}]}});
            match exchange_error(&reply(400, body), "Set-MailUser", None) {
                TenantError::AddressInUse { address, holder: h } => {
                    assert_eq!(address, "a@example.edu");
                    assert_eq!(h.as_deref(), holder);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_emulators_shape_still_reads() {
        // The emulator also writes `|Type|text` into error.message and a camelCase
        // internalException with the plain text.
        let text = "The proxy address \"SMTP:a@example.edu\" is already being used.";
        let body = json!({"error": {
            "code": "BadRequest",
            "message": format!("|{PROXY}|{text}"),
            "details": [{"message": format!("Ex6F9304|{PROXY}|{text}")}],
            "innererror": {"internalException": {"message": text, "type": PROXY}},
        }});
        assert!(matches!(
            exchange_error(&reply(400, body), "New-MailUser", None),
            TenantError::AddressInUse { address, holder: None } if address == "a@example.edu"
        ));
    }

    #[test]
    fn adminapi_errors_in_a_200_are_failures() {
        assert!(
            non_terminating_error(&json!({"value": [], "@adminapi.errors": []}), "Set-X", None)
                .is_none()
        );
        assert!(non_terminating_error(&json!({"value": []}), "Set-X", None).is_none());
        let v = json!({"value": [], "@adminapi.errors": [format!("Ex1|{PROXY}|The proxy address \"smtp:b@example.edu\" is already being used by \"x\".")]});
        assert!(matches!(
            non_terminating_error(&v, "Set-MailUser", Some("id")),
            Some(TenantError::AddressInUse { address, .. }) if address == "b@example.edu"
        ));
        let v = json!({"@adminapi.errors": [{"message": "Couldn't set the attribute."}, "second"]});
        match non_terminating_error(&v, "Set-MailUser", Some("id")) {
            Some(TenantError::Refused {
                status, message, ..
            }) => {
                assert_eq!(status, 200);
                assert_eq!(message, "Set-MailUser: Couldn't set the attribute.; second");
            }
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn benign_warnings_are_told_apart() {
        assert!(is_benign_warning(
            "The command completed successfully but no settings of 'x' have been modified."
        ));
        assert!(is_benign_warning(
            "The email address \"smtp:a@example.edu\" already exists on this recipient."
        ));
        assert!(!is_benign_warning(
            "The mailbox will be deleted in 30 days."
        ));
    }

    #[test]
    fn hashtables_carry_their_odata_type() {
        assert_eq!(
            hashtable(&["smtp:a@x".into()], &["smtp:b@x".into()]),
            json!({"@odata.type": "#Exchange.GenericHashTable", "Add": ["smtp:a@x"], "Remove": ["smtp:b@x"]})
        );
        assert_eq!(repeat_for("Get-Recipient"), Repeat::Safe);
        assert_eq!(repeat_for("New-MailUser"), Repeat::Unsafe);
    }

    fn exchange(server: &Server) -> Exchange {
        let url = server.base.join("adminapi/beta/t/InvokeCommand").unwrap();
        Exchange::new(server.executor(Service::Exchange), url, "t")
    }

    fn cmdlet(seen: &crate::tenant::http::mock::Seen) -> (String, Value) {
        let c = &seen.body["CmdletInput"];
        (
            c["CmdletName"].as_str().unwrap().to_owned(),
            c["Parameters"].clone(),
        )
    }

    #[tokio::test]
    async fn a_200_with_adminapi_errors_is_not_a_success() {
        let server = Server::start(|_, _| {
            Answer::json(
                200,
                json!({"value": [], "@adminapi.warnings": [], "@adminapi.errors": ["|Microsoft.Exchange.Management.Tasks.RecipientTaskException|Couldn't update the user."]}),
            )
        });
        let err = exchange(&server)
            .set_user("id", json!({"Department": "X"}))
            .await
            .unwrap_err();
        match err {
            TenantError::Refused { code, message, .. } => {
                assert_eq!(
                    code,
                    "Microsoft.Exchange.Management.Tasks.RecipientTaskException"
                );
                assert_eq!(message, "Set-User: Couldn't update the user.");
            }
            e => panic!("{e:?}"),
        }
    }

    fn page(server_base: &Url, n: usize, next: bool) -> Value {
        let mut v = json!({"value": [{"Name": format!("r{n}")}], "@adminapi.warnings": []});
        if next {
            v["@odata.nextLink"] = json!(format!(
                "{server_base}adminapi/beta/t/InvokeCommand?$skiptoken={}",
                n + 1
            ));
        }
        v
    }

    const EXPIRED: &str = r#"{"error":{"code":"BadRequest","message":"Expired or Invalid pagination request. Default Expiry time is 00:30:00"}}"#;

    #[tokio::test]
    async fn an_expired_next_link_restarts_the_listing() {
        // Three pages; the second page's link is refused once.
        let base = std::sync::Arc::new(std::sync::Mutex::new(None::<Url>));
        let b = base.clone();
        let server = Server::start(move |n, seen| {
            let base = b.lock().unwrap().clone().unwrap();
            let p: usize = seen
                .target
                .rsplit('=')
                .next()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            if n == 1 {
                return Answer::Reply(400, vec![], EXPIRED.as_bytes().to_vec());
            }
            Answer::json(200, page(&base, p, p < 2))
        });
        *base.lock().unwrap() = Some(server.base.clone());
        let all = exchange(&server).list_recipients(&["Name"]).await.unwrap();
        let names: Vec<&str> = all.iter().map(|r| r["Name"].as_str().unwrap()).collect();
        assert_eq!(names, ["r0", "r1", "r2"], "no page twice, none missing");
        // First page, refused second, first again, second, third.
        assert_eq!(server.seen().len(), 5);
        let (name, params) = cmdlet(&server.seen()[0]);
        assert_eq!(name, "Get-Recipient");
        // Every kind of recipient: no RecipientTypeDetails.
        assert_eq!(params, json!({"ResultSize": "Unlimited"}));
    }

    #[tokio::test]
    async fn a_next_link_that_keeps_expiring_fails_the_listing() {
        let base = std::sync::Arc::new(std::sync::Mutex::new(None::<Url>));
        let b = base.clone();
        let server = Server::start(move |_, seen| {
            let base = b.lock().unwrap().clone().unwrap();
            if seen.target.contains("skiptoken") {
                Answer::Reply(400, vec![], EXPIRED.as_bytes().to_vec())
            } else {
                Answer::json(200, page(&base, 0, true))
            }
        });
        *base.lock().unwrap() = Some(server.base.clone());
        let err = exchange(&server).list_users().await.unwrap_err();
        assert!(
            matches!(&err, TenantError::Protocol { message, .. } if message.contains("Get-User") && message.contains("Expired or Invalid pagination request")),
            "{err:?}"
        );
        // The first listing and three restarts, two requests each.
        assert_eq!(server.seen().len(), 8);
        // A first page refused that way is an ordinary error, not a restart.
        let server = Server::start(|_, _| Answer::Reply(400, vec![], EXPIRED.as_bytes().to_vec()));
        let err = exchange(&server).list_users().await.unwrap_err();
        assert!(matches!(err, TenantError::Refused { .. }), "{err:?}");
        assert_eq!(server.seen().len(), 1);
    }

    #[tokio::test]
    async fn new_calls_send_the_documented_cmdlets() {
        let server = Server::start(|_, seen| {
            let name = seen.body["CmdletInput"]["CmdletName"]
                .as_str()
                .unwrap_or("");
            if name == "Get-User" && seen.body["CmdletInput"]["Parameters"]["Identity"] == "gone" {
                return Answer::json(
                    404,
                    live_body(
                        "NotFound",
                        "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                        "The operation couldn't be performed because object 'gone' couldn't be found.",
                    ),
                );
            }
            Answer::json(
                200,
                json!({"value": [{"Name": "x"}], "@adminapi.warnings": ["The command completed successfully but no settings of 'x' have been modified."]}),
            )
        });
        let x = exchange(&server);
        assert_eq!(x.list_soft_deleted_mail_users(&[]).await.unwrap().len(), 1);
        x.set_user("id1", json!({"Department": "Chemistry", "Title": "Dr"}))
            .await
            .unwrap();
        assert!(x.get_user("id1").await.unwrap().is_some());
        assert!(x.get_user("gone").await.unwrap().is_none());
        assert_eq!(x.list_users().await.unwrap().len(), 1);
        assert!(server.seen().iter().all(|s| s.method == "POST"));
        let seen: Vec<(String, Value)> = server.seen().iter().map(cmdlet).collect();
        assert_eq!(
            seen,
            [
                (
                    "Get-MailUser".into(),
                    json!({"SoftDeletedMailUser": true, "ResultSize": "Unlimited"})
                ),
                (
                    "Set-User".into(),
                    json!({"Identity": "id1", "Department": "Chemistry", "Title": "Dr"})
                ),
                ("Get-User".into(), json!({"Identity": "id1"})),
                ("Get-User".into(), json!({"Identity": "gone"})),
                ("Get-User".into(), json!({"ResultSize": "Unlimited"})),
            ]
        );
    }

    fn mail_user() -> NewMailUser {
        NewMailUser {
            name: "jdoe".into(),
            alias: "jdoe".into(),
            display_name: "Jane Doe".into(),
            first_name: Some("Jane".into()),
            last_name: None,
            external_email_address: "jdoe@onprem.example.org".into(),
            user_principal_name: Some("jdoe@example.edu".into()),
            password: Some(Secret::new("Pw-1234567890-unused".into())),
        }
    }

    #[tokio::test]
    async fn new_mail_user_is_never_replayed_and_sends_no_primary() {
        let server = Server::start(|_, _| {
            Answer::json(
                504,
                json!({"error": {"code": "GatewayTimeout", "message": "Invalid Operation"}}),
            )
        });
        let err = exchange(&server)
            .new_mail_user(&mail_user())
            .await
            .unwrap_err();
        match &err {
            TenantError::Ambiguous { what, message, .. } => {
                assert_eq!(what, "New-MailUser -Name jdoe");
                assert!(message.contains("504"), "{message}");
            }
            e => panic!("{e:?}"),
        }
        assert!(!err.to_string().contains("Pw-1234567890"));
        let seen = server.seen();
        assert_eq!(
            seen.len(),
            1,
            "a create that may have run is not sent again"
        );
        let (name, params) = cmdlet(&seen[0]);
        assert_eq!(name, "New-MailUser");
        assert!(params.get("PrimarySmtpAddress").is_none(), "{params}");
        assert_eq!(params["MicrosoftOnlineServicesID"], "jdoe@example.edu");
        assert_eq!(params["ExternalEmailAddress"], "jdoe@onprem.example.org");

        // A dropped connection after sending: the same.
        let server = Server::start(|_, _| Answer::Drop);
        let err = exchange(&server)
            .new_mail_user(&mail_user())
            .await
            .unwrap_err();
        assert!(err.is_ambiguous(), "{err:?}");
        assert_eq!(server.seen().len(), 1);
    }
}
