//! Exchange Online admin API client: cmdlets over REST, the endpoint the
//! ExchangeOnlineManagement v3 module uses (`POST {exchange}/adminapi/beta/{tenant}/
//! InvokeCommand`, see TENANT_FACTS.md).
//!
//! Results are the cmdlets' objects as JSON (`Vec<Value>`); errors are parsed from
//! `error.message`, `error.details[].message` and `error.innererror.internalException` into
//! [`TenantError`]. Microsoft publishes no throttling figures for this endpoint, so the
//! service's limiter starts with two requests in flight and never exceeds a few.

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
fn repeat_for(cmdlet: &str) -> Repeat {
    let verb = cmdlet.split('-').next().unwrap_or("").to_ascii_lowercase();
    match verb.as_str() {
        "get" | "set" | "remove" | "test" => Repeat::Safe,
        _ => Repeat::Unsafe,
    }
}

/// An Exchange error body → typed error. Exchange prefixes messages with
/// `|Exception.Type|`; the type tells the kinds apart better than the text.
fn exchange_error(reply: &Reply, cmdlet: &str, identity: Option<&str>) -> TenantError {
    let v = reply.value();
    let e = &v["error"];
    let candidates: Vec<&str> = [
        e["innererror"]["internalException"]["message"].as_str(),
        e["message"].as_str(),
    ]
    .into_iter()
    .flatten()
    .chain(
        e["details"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["message"].as_str()),
    )
    .collect();
    let (kind, text) = candidates
        .iter()
        .map(|m| split_exception(m))
        .find(|(_, t)| !t.is_empty())
        .unwrap_or(("", ""));
    let kind = e["innererror"]["internalException"]["type"]
        .as_str()
        .filter(|t| !t.is_empty())
        .unwrap_or(kind);
    let text = if text.is_empty() {
        reply.status.canonical_reason().unwrap_or("no message")
    } else {
        text
    };
    let status = reply.status.as_u16();
    if text.contains("proxy address") && text.contains("already being used") {
        return TenantError::AddressInUse {
            address: quoted(text).map(strip_prefix).unwrap_or_default(),
        };
    }
    if kind.ends_with("ADObjectAlreadyExistsException") || text.contains("is already being used") {
        return TenantError::Conflict {
            service: Service::Exchange,
            property: "Name".into(),
            message: text.to_owned(),
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
            message: text.to_owned(),
        },
        403 => TenantError::Forbidden {
            service: Service::Exchange,
            message: text.to_owned(),
        },
        _ => TenantError::Refused {
            service: Service::Exchange,
            status,
            code: if kind.is_empty() {
                e["code"].as_str().unwrap_or("").to_owned()
            } else {
                kind.to_owned()
            },
            message: format!("{cmdlet}: {text}"),
        },
    }
}

/// `|Type|text` (optionally behind a `Ex6F9304` context prefix) → (type, text).
fn split_exception(m: &str) -> (&str, &str) {
    let rest = match m.find('|') {
        Some(i) => &m[i + 1..],
        None => return ("", m.trim()),
    };
    match rest.split_once('|') {
        Some((kind, text)) => (kind.trim(), text.trim()),
        None => ("", rest.trim()),
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
    pub async fn invoke_with(
        &self,
        cmdlet: &str,
        parameters: Value,
        repeat: Repeat,
    ) -> Result<Vec<Value>, TenantError> {
        let identity = parameters
            .get("Identity")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let parameters = match parameters {
            Value::Null => json!({}),
            p => p,
        };
        let body = json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}});
        let mut out = Vec::new();
        let mut url = self.inner.url.clone();
        loop {
            let call = Call::new(Method::POST, url)
                .json(body.clone())
                .header("x-anchormailbox", &self.inner.anchor)
                .header("x-responseformat", "json")
                .header("prefer", "odata.maxpagesize=1000")
                .repeat(repeat);
            let reply = self.inner.exec.send(&call).await?;
            if !reply.status.is_success() {
                return Err(exchange_error(&reply, cmdlet, identity.as_deref()));
            }
            let v = reply.value();
            if let Some(w) = v["@adminapi.warnings"].as_array() {
                for w in w.iter().filter_map(Value::as_str) {
                    tracing::warn!(cmdlet, warning = w, "Exchange warned");
                }
            }
            match v.get("value") {
                Some(Value::Array(items)) => out.extend(items.iter().cloned()),
                None | Some(Value::Null) => {}
                Some(other) => out.push(other.clone()),
            }
            match v["@odata.nextLink"].as_str() {
                Some(link) => url = self.inner.exec.same_origin(link)?,
                None => break,
            }
        }
        Ok(out)
    }

    /// `New-MailUser`, which creates the Entra user and the MailUser together. Retried like
    /// an idempotent call: `-Name` and the addresses are unique, so a replay of a create that
    /// did happen fails (`Conflict` or `AddressInUse`) rather than making a duplicate.
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

    /// `Get-Recipient -ResultSize Unlimited` with no type filter: every recipient the tenant
    /// has (MailUsers, mailboxes, distribution groups, mail contacts, ...), paged. This is the
    /// listing that knows every address Exchange keeps unique, which Graph's user listing
    /// does not (TENANT_FACTS: groups and contacts own addresses too).
    pub async fn list_recipients(&self) -> Result<Vec<Value>, TenantError> {
        self.invoke("Get-Recipient", json!({"ResultSize": "Unlimited"}))
            .await
    }

    /// `Get-MailUser -SoftDeletedMailUser -ResultSize Unlimited`: removed MailUsers whose
    /// addresses Exchange still reserves.
    pub async fn list_soft_deleted_mail_users(&self) -> Result<Vec<Value>, TenantError> {
        self.invoke(
            "Get-MailUser",
            json!({"SoftDeletedMailUser": true, "ResultSize": "Unlimited"}),
        )
        .await
    }

    /// `Get-Recipient -Identity`; not found is `Ok(None)`.
    pub async fn get_recipient(&self, identity: &str) -> Result<Option<Value>, TenantError> {
        self.get_one("Get-Recipient", identity).await
    }

    /// `Get-User -Identity` (any user, mail-enabled or not); not found is `Ok(None)`.
    pub async fn get_user(&self, identity: &str) -> Result<Option<Value>, TenantError> {
        self.get_one("Get-User", identity).await
    }

    /// `Set-User -Identity` with further parameters (`DisplayName`, `FirstName`, `LastName`,
    /// `Department`, `Title`, `Office`, `Phone`, `MobilePhone`, `Company`): the address-book
    /// attributes, for MailUsers and mailboxes alike.
    pub async fn set_user(&self, identity: &str, parameters: Value) -> Result<(), TenantError> {
        self.invoke("Set-User", with_identity(identity, parameters))
            .await
            .map(drop)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: Value) -> Reply {
        Reply {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    fn exo_body(kind: &str, text: &str) -> Value {
        json!({"error": {
            "code": "BadRequest",
            "message": format!("|{kind}|{text}"),
            "details": [{"message": format!("Ex6F9304|{kind}|{text}")}],
            "innererror": {"internalException": {"message": text, "type": kind}},
        }})
    }

    #[test]
    fn errors_are_typed() {
        let r = reply(
            400,
            exo_body(
                "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException",
                "The proxy address \"SMTP:a@example.edu\" is already being used by the proxy addresses or LegacyExchangeDN. Please choose another proxy address.",
            ),
        );
        match exchange_error(&r, "New-MailUser", None) {
            TenantError::AddressInUse { address } => assert_eq!(address, "a@example.edu"),
            e => panic!("{e:?}"),
        }
        let r = reply(
            404,
            exo_body(
                "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                "The operation couldn't be performed because object 'x' couldn't be found.",
            ),
        );
        assert!(
            matches!(exchange_error(&r, "Get-MailUser", Some("x")), TenantError::NotFound { what, .. } if what == "x")
        );
        // Only the details carry the text.
        let r = reply(
            400,
            json!({"error": {"details": [{"message": "Ex1|Some.Exception|Bad thing."}]}}),
        );
        match exchange_error(&r, "Set-MailUser", None) {
            TenantError::Refused { code, message, .. } => {
                assert_eq!(code, "Some.Exception");
                assert!(message.contains("Bad thing."));
            }
            e => panic!("{e:?}"),
        }
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
}
