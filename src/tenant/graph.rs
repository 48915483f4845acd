//! Microsoft Graph v1.0 client for the calls ldap2exo makes: users (create, read, update,
//! delete, list, advanced queries, delta), licences, deleted-item restore, domains and JSON
//! `$batch`.
//!
//! Typed models cover what we read and write; writes take any `Serialize` so a PATCH can set
//! `null` to clear a property (an absent field leaves it alone). Every request goes through
//! the service's [`Executor`], so throttling and retries apply to paging and to `$batch`
//! sub-requests as well: a throttled page is retried, never taken for the end of a listing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::error::{Service, TenantError};
use super::http::{Call, Executor, Repeat, Reply, error_message, parse_retry_after};
use crate::secret::Secret;

/// Graph allows at most 20 requests in one `$batch`.
pub const BATCH_LIMIT: usize = 20;

/// The properties [`GraphUser`] models; asked for with `$select` when the caller gives none,
/// because Graph's default set lacks most of them.
pub const USER_PROPERTIES: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "mail",
    "mailNickname",
    "accountEnabled",
    "proxyAddresses",
    "onPremisesExtensionAttributes",
    "assignedLicenses",
    "givenName",
    "surname",
    "department",
    "jobTitle",
    "officeLocation",
    "businessPhones",
    "mobilePhone",
    "companyName",
    "usageLocation",
];

/// A Graph user as far as ldap2exo cares. `None` fields were not selected or are empty;
/// when serialised (create), `None` fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_nickname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_enabled: Option<bool>,
    /// Read-only in Graph: addresses are managed through Exchange.
    #[serde(default, skip_serializing)]
    pub proxy_addresses: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_premises_extension_attributes: Option<ExtensionAttributes>,
    /// Read-only here: licences change through [`Graph::assign_license`].
    #[serde(default, skip_serializing)]
    pub assigned_licenses: Option<Vec<AssignedLicense>>,
    /// The service plans the licences give (read-only): a licence counts as a mailbox
    /// licence only when one of its plans is `service: "exchange"` and enabled. Graph
    /// `assignedLicenses` alone cannot tell: it includes licences without any Exchange plan
    /// and group-assigned ones (learn.microsoft.com/graph/api/resources/assignedplan).
    #[serde(default, skip_serializing)]
    pub assigned_plans: Option<Vec<AssignedPlan>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub office_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_phones: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_location: Option<String>,
}

/// One entry of `assignedPlans`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedPlan {
    #[serde(default)]
    pub service: Option<String>,
    /// `Enabled`, `Warning`, `Suspended`, `Deleted`, `LockedOut`.
    #[serde(default)]
    pub capability_status: Option<String>,
    #[serde(default)]
    pub service_plan_id: Option<String>,
}

impl AssignedPlan {
    /// An enabled Exchange Online plan: this is what gives (or will give) a mailbox.
    pub fn is_exchange(&self) -> bool {
        self.service
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("exchange"))
            && self.capability_status.as_deref().is_none_or(|c| {
                c.eq_ignore_ascii_case("enabled") || c.eq_ignore_ascii_case("warning")
            })
    }
}

/// `onPremisesExtensionAttributes`: the same values as Exchange `CustomAttribute1..15`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionAttributes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute3: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute4: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute7: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute8: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute9: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute10: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute11: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute12: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute13: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute14: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_attribute15: Option<String>,
}

impl ExtensionAttributes {
    /// `extensionAttributeN` by its name (`extensionAttribute15`), as the configuration
    /// names the anchor attribute.
    pub fn get(&self, name: &str) -> Option<&str> {
        let n: u8 = name.strip_prefix("extensionAttribute")?.parse().ok()?;
        let v = match n {
            1 => &self.extension_attribute1,
            2 => &self.extension_attribute2,
            3 => &self.extension_attribute3,
            4 => &self.extension_attribute4,
            5 => &self.extension_attribute5,
            6 => &self.extension_attribute6,
            7 => &self.extension_attribute7,
            8 => &self.extension_attribute8,
            9 => &self.extension_attribute9,
            10 => &self.extension_attribute10,
            11 => &self.extension_attribute11,
            12 => &self.extension_attribute12,
            13 => &self.extension_attribute13,
            14 => &self.extension_attribute14,
            15 => &self.extension_attribute15,
            _ => return None,
        };
        v.as_deref()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedLicense {
    pub sku_id: String,
    #[serde(default)]
    pub disabled_plans: Vec<String>,
}

/// A purchased licence (`GET /subscribedSkus`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribedSku {
    pub sku_id: String,
    pub sku_part_number: String,
    #[serde(default)]
    pub consumed_units: u32,
    #[serde(default)]
    pub prepaid_units: PrepaidUnits,
    /// `Enabled`, `Warning`, `Suspended`, `Deleted` or `LockedOut`.
    #[serde(default)]
    pub capability_status: Option<String>,
}

impl SubscribedSku {
    /// Whether `sku` (a part number such as `EXCHANGESTANDARD`, any case, or a GUID) names
    /// this SKU: how the configuration's `tenant.mailbox_sku` is resolved.
    pub fn is(&self, sku: &str) -> bool {
        self.sku_part_number.eq_ignore_ascii_case(sku)
            || (is_guid(sku) && self.sku_id.eq_ignore_ascii_case(sku))
    }

    /// Units that can still be assigned.
    pub fn available(&self) -> u32 {
        self.prepaid_units
            .enabled
            .saturating_sub(self.consumed_units)
    }
}

/// `prepaidUnits` (Graph's `licenseUnitsDetail`): purchased units by the state of their
/// subscription. Only `enabled` units can be assigned: `warning` units belong to an expired
/// subscription in its grace period, `suspended` ones to a cancelled one ("The units can't
/// be assigned"), `lockedOut` ones to a cancelled one past that ("licenseUnitsDetail resource
/// type", Microsoft Graph v1.0).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrepaidUnits {
    #[serde(default)]
    pub enabled: u32,
    #[serde(default)]
    pub warning: u32,
    #[serde(default)]
    pub suspended: u32,
    #[serde(default)]
    pub locked_out: u32,
}

/// A domain of the tenant (`GET /domains`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Domain {
    pub id: String,
    #[serde(default)]
    pub is_verified: bool,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default)]
    pub is_initial: bool,
}

/// What `list_users` asks for.
#[derive(Debug, Clone, Default)]
pub struct UserQuery {
    /// Properties to return; empty means [`USER_PROPERTIES`].
    pub select: Vec<String>,
    /// An OData filter; build literals with [`odata_string`].
    pub filter: Option<String>,
    /// Page size, 1 to 999.
    pub top: Option<u32>,
    /// Send `ConsistencyLevel: eventual` and `$count=true`. Turned on by itself for filters
    /// on `onPremises*` properties, which Graph refuses otherwise.
    pub advanced: bool,
}

/// One round of `/users/delta`, each changed user kept as `T`.
#[derive(Debug, Clone, Default)]
pub struct DeltaRoundOf<T> {
    /// Users created or changed (only the selected properties; the same change may come
    /// more than once).
    pub changed: Vec<T>,
    /// Users deleted since the last round.
    pub removed: Vec<RemovedUser>,
    /// Where the next round starts.
    pub delta_link: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedUser {
    pub id: String,
    /// `changed`: soft-deleted, still restorable; `deleted`: gone for good.
    pub reason: String,
}

/// One round of `/users/delta` with the users parsed.
pub type DeltaRound = DeltaRoundOf<GraphUser>;

/// One request inside a `$batch`. `url` is relative to the version root (`/users/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct BatchRequest {
    pub id: String,
    pub method: String,
    pub url: String,
    #[serde(rename = "dependsOn", skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Whether the request may be sent again after a 500/502/504 (it may have run).
    #[serde(skip)]
    pub repeat: Repeat,
}

impl BatchRequest {
    pub fn new(id: impl Into<String>, method: Method, url: impl Into<String>) -> Self {
        let repeat = if method == Method::POST {
            Repeat::Unsafe
        } else {
            Repeat::Safe
        };
        Self {
            id: id.into(),
            method: method.as_str().to_owned(),
            url: url.into(),
            depends_on: Vec::new(),
            headers: BTreeMap::new(),
            body: None,
            repeat,
        }
    }

    /// A JSON body (with the Content-Type header `$batch` requires).
    pub fn json(mut self, body: Value) -> Self {
        self.headers
            .insert("Content-Type".into(), "application/json".into());
        self.body = Some(body);
        self
    }

    /// Run only after `id` succeeded (Graph answers 424 otherwise).
    pub fn depends_on(mut self, id: impl Into<String>) -> Self {
        self.depends_on.push(id.into());
        self
    }

    pub fn repeat(mut self, repeat: Repeat) -> Self {
        self.repeat = repeat;
        self
    }
}

/// The final answer to one `$batch` request, after its retries.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchResponse {
    pub id: String,
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, Value>,
    #[serde(default)]
    pub body: Option<Value>,
    /// The ids the request depended on (filled in by [`Graph::batch`], so a 424 can name
    /// them without parsing Graph's message).
    #[serde(skip)]
    pub depends_on: Vec<String>,
}

impl BatchResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_str())
    }

    /// The typed error of a failed request, `None` on success.
    pub fn error(&self) -> Option<TenantError> {
        if self.is_success() {
            return None;
        }
        let body = self.body.clone().unwrap_or(Value::Null);
        Some(match self.status {
            424 => TenantError::FailedDependency {
                id: self.id.clone(),
                depends_on: self.depends_on.join(", "),
            },
            429 => TenantError::Throttled {
                service: Service::Graph,
                attempts: 0,
                retry_after: self.header("Retry-After").and_then(parse_retry_after),
            },
            s => graph_error(s, &body, &format!("batch request {}", self.id)),
        })
    }

    /// The body as `T` on success, else the typed error.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<Option<T>, TenantError> {
        if let Some(e) = self.error() {
            return Err(e);
        }
        match self.body {
            None | Some(Value::Null) => Ok(None),
            Some(b) => serde_json::from_value(b)
                .map(Some)
                .map_err(|e| TenantError::Protocol {
                    service: Service::Graph,
                    message: format!("batch response {}: {e}", self.id),
                }),
        }
    }
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// A Graph client. Cheap to clone; clones share the limiter, counters and SKU cache.
#[derive(Debug, Clone)]
pub struct Graph {
    inner: Arc<GraphInner>,
}

#[derive(Debug)]
struct GraphInner {
    exec: Arc<Executor>,
    /// `{graph}/v1.0`.
    base: Url,
    skus: Mutex<Option<Vec<SubscribedSku>>>,
}

/// An OData string literal: quoted, with a quote inside doubled (`O'Brien` → `'O''Brien'`).
pub fn odata_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Percent-encodes a query value. Spaces become `%20` (Graph does not read `+` as a space
/// everywhere); the characters OData syntax uses stay readable.
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'\''
            | b'('
            | b')'
            | b','
            | b'/'
            | b':'
            | b'$'
            | b'@'
            | b'*'
            | b'!' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn with_query(mut url: Url, pairs: &[(&str, String)]) -> Url {
    if pairs.is_empty() {
        return url;
    }
    let q: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode_query(k), encode_query(v)))
        .collect();
    url.set_query(Some(&q.join("&")));
    url
}

/// Turns a Graph error body into a typed error.
fn graph_error(status: u16, body: &Value, what: &str) -> TenantError {
    let e = &body["error"];
    let code = e["code"].as_str().unwrap_or("").to_owned();
    let message = e["message"].as_str().unwrap_or("").to_owned();
    let conflict = e["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["code"] == "ObjectConflict");
    match status {
        404 => TenantError::NotFound {
            service: Service::Graph,
            what: what.to_owned(),
        },
        401 => TenantError::Unauthorized {
            service: Service::Graph,
            message,
        },
        403 => TenantError::Forbidden {
            service: Service::Graph,
            message,
        },
        400 if conflict.is_some() || message.contains("already exists") => TenantError::Conflict {
            service: Service::Graph,
            property: conflict
                .and_then(|d| d["target"].as_str())
                .unwrap_or("unknown")
                .to_owned(),
            message,
        },
        _ => TenantError::Refused {
            service: Service::Graph,
            status,
            code,
            message,
        },
    }
}

fn reply_error(reply: &Reply, what: &str) -> TenantError {
    let body = reply.value();
    if body["error"]["message"].is_null() {
        return TenantError::Refused {
            service: Service::Graph,
            status: reply.status.as_u16(),
            code: String::new(),
            message: error_message(reply),
        };
    }
    graph_error(reply.status.as_u16(), &body, what)
}

fn is_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn extension_attribute_name(attribute: &str) -> Result<&str, TenantError> {
    match attribute
        .strip_prefix("extensionAttribute")
        .and_then(|n| n.parse::<u8>().ok())
    {
        Some(1..=15) => Ok(attribute),
        _ => Err(TenantError::Config(format!(
            "`{attribute}` is not extensionAttribute1 … extensionAttribute15"
        ))),
    }
}

impl Graph {
    pub(crate) fn new(exec: Arc<Executor>, base: Url) -> Self {
        Self {
            inner: Arc::new(GraphInner {
                exec,
                base,
                skus: Mutex::new(None),
            }),
        }
    }

    fn exec(&self) -> &Executor {
        &self.inner.exec
    }

    /// `{graph}/v1.0/` plus path segments (each percent-encoded as needed).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().extend(segments);
        }
        url
    }

    async fn send(&self, call: Call) -> Result<Reply, TenantError> {
        self.exec().send(&call).await
    }

    /// `POST /users`. Needs accountEnabled, displayName, mailNickname and
    /// userPrincipalName; the password goes in `passwordProfile` and is not to be changed at
    /// first sign-in (nobody signs in with it; it only satisfies Graph).
    ///
    /// Retried after a 5xx or a dropped connection although it is a POST: the UPN is unique,
    /// so a replay of a create that did happen fails with a `Conflict` instead of making a
    /// duplicate. The caller then finds the object by its stamp.
    pub async fn create_user(
        &self,
        user: &GraphUser,
        password: &Secret,
    ) -> Result<GraphUser, TenantError> {
        let mut body = serde_json::to_value(user).map_err(|e| TenantError::Protocol {
            service: Service::Graph,
            message: e.to_string(),
        })?;
        body["passwordProfile"] = json!({
            "password": password.expose(),
            "forceChangePasswordNextSignIn": false,
        });
        let reply = self
            .send(
                Call::new(Method::POST, self.url(&["users"]))
                    .json(body)
                    .repeat(Repeat::Safe),
            )
            .await?;
        if !reply.status.is_success() {
            return Err(reply_error(&reply, "user"));
        }
        reply.json(Service::Graph)
    }

    /// `GET /users/{id or UPN}` with `$select` (empty: [`USER_PROPERTIES`]). Not found is
    /// `Ok(None)`.
    pub async fn get_user(
        &self,
        id_or_upn: &str,
        select: &[&str],
    ) -> Result<Option<GraphUser>, TenantError> {
        let select = if select.is_empty() {
            USER_PROPERTIES
        } else {
            select
        };
        let url = with_query(
            self.url(&["users", id_or_upn]),
            &[("$select", select.join(","))],
        );
        let reply = self.send(Call::new(Method::GET, url)).await?;
        match reply.status.as_u16() {
            404 => Ok(None),
            s if (200..300).contains(&s) => reply.json(Service::Graph).map(Some),
            _ => Err(reply_error(&reply, id_or_upn)),
        }
    }

    /// `PATCH /users/{id}` with any serialisable patch (a [`GraphUser`] with only the
    /// changed fields, or a `json!` object where `null` clears a property).
    pub async fn update_user(&self, id: &str, patch: &impl Serialize) -> Result<(), TenantError> {
        let body = serde_json::to_value(patch).map_err(|e| TenantError::Protocol {
            service: Service::Graph,
            message: e.to_string(),
        })?;
        let reply = self
            .send(Call::new(Method::PATCH, self.url(&["users", id])).json(body))
            .await?;
        if !reply.status.is_success() {
            return Err(reply_error(&reply, id));
        }
        Ok(())
    }

    /// `PATCH /users/{id}` for many users at once, across people: through `POST /$batch`, 20
    /// per request (Microsoft's "Combine multiple HTTP requests using JSON batching",
    /// learn.microsoft.com/graph/json-batching: at most 20 requests per batch, answered with
    /// one `responses` entry per request `id` carrying its own `status`, headers and body; each
    /// request counts against the throttling limits on its own, so a 429 comes per request,
    /// and [`Self::batch`] retries just that one after its own `Retry-After`). One update
    /// alone goes as a plain request. Answers one result per update, in order, each the error
    /// a single request would have given.
    pub async fn update_users(
        &self,
        updates: &[(String, Value)],
    ) -> Result<Vec<Result<(), TenantError>>, TenantError> {
        if let [(id, patch)] = updates {
            return Ok(vec![self.update_user(id, patch).await]);
        }
        let requests = updates
            .iter()
            .enumerate()
            .map(|(i, (id, patch))| {
                // Relative to the version root, encoded as the plain request's URL is.
                let url = self.url(&["users", id]);
                let root = self.inner.base.path().trim_end_matches('/').len();
                let path = url.path().get(root..).unwrap_or_default().to_owned();
                BatchRequest::new(i.to_string(), Method::PATCH, path).json(patch.clone())
            })
            .collect();
        Ok(self
            .batch(requests)
            .await?
            .into_iter()
            .map(|r| r.error().map_or(Ok(()), Err))
            .collect())
    }

    /// `DELETE /users/{id}` (a soft delete, restorable for 30 days). Answers whether the
    /// user was there: a replayed delete finds nothing and that is fine.
    pub async fn delete_user(&self, id: &str) -> Result<bool, TenantError> {
        let reply = self
            .send(Call::new(Method::DELETE, self.url(&["users", id])))
            .await?;
        match reply.status.as_u16() {
            404 => Ok(false),
            s if (200..300).contains(&s) => Ok(true),
            _ => Err(reply_error(&reply, id)),
        }
    }

    /// `DELETE /directory/deletedItems/{id}`: permanently deletes a user from the recycle
    /// bin, freeing its UPN and addresses (Microsoft Graph v1.0, "Permanently delete an
    /// item (directory object)"). False when the recycle bin does not hold it (404).
    pub async fn purge_deleted_user(&self, id: &str) -> Result<bool, TenantError> {
        let reply = self
            .send(Call::new(
                Method::DELETE,
                self.url(&["directory", "deletedItems", id]),
            ))
            .await?;
        match reply.status.as_u16() {
            404 => Ok(false),
            s if (200..300).contains(&s) => Ok(true),
            _ => Err(reply_error(&reply, &format!("deleted user {id}"))),
        }
    }

    /// `GET /directory/deletedItems/{id}`: the user in the tenant's recycle bin ("Get
    /// deleted item (directory object)") with the properties that identify it, the stamp
    /// included (`onPremisesExtensionAttributes` is not among the default properties).
    /// `Ok(None)` when the recycle bin does not hold it: purged, past its 30 days, or never
    /// deleted.
    pub async fn get_deleted_user(&self, id: &str) -> Result<Option<GraphUser>, TenantError> {
        let url = with_query(
            self.url(&["directory", "deletedItems", id]),
            &[(
                "$select",
                "id,userPrincipalName,onPremisesExtensionAttributes".to_owned(),
            )],
        );
        let reply = self.send(Call::new(Method::GET, url)).await?;
        match reply.status.as_u16() {
            404 => Ok(None),
            s if (200..300).contains(&s) => reply.json(Service::Graph).map(Some),
            _ => Err(reply_error(&reply, &format!("deleted user {id}"))),
        }
    }

    /// `POST /directory/deletedItems/{id}/restore`.
    pub async fn restore_user(&self, id: &str) -> Result<GraphUser, TenantError> {
        let reply = self
            .send(
                Call::new(
                    Method::POST,
                    self.url(&["directory", "deletedItems", id, "restore"]),
                )
                .json(json!({})),
            )
            .await?;
        if !reply.status.is_success() {
            return Err(reply_error(&reply, &format!("deleted user {id}")));
        }
        reply.json(Service::Graph)
    }

    /// Every user matching `query`, following `@odata.nextLink` to the end.
    pub async fn list_users(&self, query: &UserQuery) -> Result<Vec<GraphUser>, TenantError> {
        let select = if query.select.is_empty() {
            USER_PROPERTIES.join(",")
        } else {
            query.select.join(",")
        };
        let mut pairs = vec![("$select", select)];
        let advanced = query.advanced
            || query
                .filter
                .as_deref()
                .is_some_and(|f| f.contains("onPremises"));
        if let Some(f) = &query.filter {
            pairs.push(("$filter", f.clone()));
        }
        if let Some(t) = query.top {
            pairs.push(("$top", t.to_string()));
        }
        if advanced {
            pairs.push(("$count", "true".into()));
        }
        let url = with_query(self.url(&["users"]), &pairs);
        self.collect(url, advanced).await
    }

    /// Follows a listing to its end. Each page is a full request through the executor, so a
    /// 429 or 503 on page 7 is waited out and page 7 fetched again.
    async fn collect<T: DeserializeOwned>(
        &self,
        first: Url,
        advanced: bool,
    ) -> Result<Vec<T>, TenantError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut pages = 0u32;
        while let Some(url) = next.take() {
            let mut call = Call::new(Method::GET, url);
            if advanced {
                call = call.header("consistencylevel", "eventual");
            }
            let reply = self.send(call).await?;
            if !reply.status.is_success() {
                return Err(reply_error(&reply, "users"));
            }
            let page: Page<T> = reply.json(Service::Graph)?;
            pages += 1;
            out.extend(page.value);
            if let Some(link) = page.next_link {
                next = Some(self.exec().same_origin(&link)?);
            }
        }
        tracing::debug!(pages, items = out.len(), "listing complete");
        Ok(out)
    }

    /// Users whose `attribute` (`extensionAttribute1..15`) equals `value`: the objects that
    /// carry our stamp for one anchor. An advanced query, so eventually consistent: an object
    /// stamped seconds ago may be missing yet.
    pub async fn find_by_stamp(
        &self,
        attribute: &str,
        value: &str,
    ) -> Result<Vec<GraphUser>, TenantError> {
        let attribute = extension_attribute_name(attribute)?;
        self.list_users(&UserQuery {
            filter: Some(format!(
                "onPremisesExtensionAttributes/{attribute} eq {}",
                odata_string(value)
            )),
            advanced: true,
            ..Default::default()
        })
        .await
    }

    /// `GET /subscribedSkus` (fresh, and refreshes the cache `assign_license` uses).
    pub async fn subscribed_skus(&self) -> Result<Vec<SubscribedSku>, TenantError> {
        let skus: Vec<SubscribedSku> = self.collect(self.url(&["subscribedSkus"]), false).await?;
        *self.inner.skus.lock().await = Some(skus.clone());
        Ok(skus)
    }

    /// A SKU by part number (`EXCHANGESTANDARD`, any case) or by its GUID.
    pub async fn resolve_sku(&self, sku: &str) -> Result<SubscribedSku, TenantError> {
        let find = |list: &[SubscribedSku]| list.iter().find(|s| s.is(sku)).cloned();
        if let Some(list) = self.inner.skus.lock().await.as_deref()
            && let Some(s) = find(list)
        {
            return Ok(s);
        }
        // Not cached, or bought since: read again once.
        let list = self.subscribed_skus().await?;
        find(&list).ok_or_else(|| TenantError::UnknownSku {
            sku: sku.to_owned(),
            known: list
                .iter()
                .map(|s| s.sku_part_number.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// `POST /users/{id}/assignLicense` adding `sku` (part number or GUID). The user needs a
    /// `usageLocation`. Assigning a licence the user has is a no-op, so it is retried like
    /// an idempotent request. No free units is [`TenantError::NoLicensesLeft`].
    pub async fn assign_license(&self, user_id: &str, sku: &str) -> Result<GraphUser, TenantError> {
        let resolved = self.resolve_sku(sku).await?;
        let body = json!({
            "addLicenses": [{"skuId": resolved.sku_id, "disabledPlans": []}],
            "removeLicenses": [],
        });
        let reply = self
            .send(
                Call::new(Method::POST, self.url(&["users", user_id, "assignLicense"]))
                    .json(body)
                    .repeat(Repeat::Safe),
            )
            .await?;
        if reply.status.is_success() {
            return reply.json(Service::Graph);
        }
        let message = error_message(&reply);
        if message.contains("does not have any available licenses") {
            return Err(TenantError::NoLicensesLeft {
                sku: resolved.sku_part_number,
            });
        }
        Err(reply_error(&reply, user_id))
    }

    /// `GET /domains`.
    pub async fn domains(&self) -> Result<Vec<Domain>, TenantError> {
        self.collect(self.url(&["domains"]), false).await
    }

    /// One round of `/users/delta`: from scratch (`delta_link` `None`, tracking `select`) or
    /// from the previous round's link, following `@odata.nextLink` to the new delta link.
    /// An expired token is [`TenantError::DeltaExpired`]: read everything, then start over.
    pub async fn users_delta(
        &self,
        select: &[&str],
        delta_link: Option<&str>,
    ) -> Result<DeltaRound, TenantError> {
        self.users_delta_as(select, delta_link, |item| {
            serde_json::from_value(item).map_err(|e| TenantError::Protocol {
                service: Service::Graph,
                message: format!("delta item: {e}"),
            })
        })
        .await
    }

    /// [`Self::users_delta`], keeping of each changed user what `each` makes of its JSON as
    /// its page arrives.
    pub async fn users_delta_as<T>(
        &self,
        select: &[&str],
        delta_link: Option<&str>,
        mut each: impl FnMut(Value) -> Result<T, TenantError>,
    ) -> Result<DeltaRoundOf<T>, TenantError> {
        let mut next = Some(match delta_link {
            Some(link) => self.exec().same_origin(link)?,
            None => {
                let select = if select.is_empty() {
                    USER_PROPERTIES
                } else {
                    select
                };
                with_query(
                    self.url(&["users", "delta"]),
                    &[("$select", select.join(","))],
                )
            }
        });
        let mut round = DeltaRoundOf {
            changed: Vec::new(),
            removed: Vec::new(),
            delta_link: String::new(),
        };
        while let Some(url) = next.take() {
            let reply = self.send(Call::new(Method::GET, url)).await?;
            if !reply.status.is_success() {
                let body = reply.value();
                let code = body["error"]["code"].as_str().unwrap_or("");
                // 410 Gone per the delta documentation; directory objects have answered
                // 400 syncStateNotFound / resyncRequired as well.
                if reply.status.as_u16() == 410
                    || ["syncStateNotFound", "resyncRequired", "SyncStateNotFound"].contains(&code)
                {
                    return Err(TenantError::DeltaExpired);
                }
                return Err(reply_error(&reply, "users/delta"));
            }
            let page: Page<Value> = reply.json(Service::Graph)?;
            for item in page.value {
                if let Some(removed) = item.get("@removed") {
                    round.removed.push(RemovedUser {
                        id: item["id"].as_str().unwrap_or_default().to_owned(),
                        reason: removed["reason"].as_str().unwrap_or("deleted").to_owned(),
                    });
                } else {
                    round.changed.push(each(item)?);
                }
            }
            match (page.next_link, page.delta_link) {
                (Some(link), _) => next = Some(self.exec().same_origin(&link)?),
                (None, Some(link)) => round.delta_link = link,
                (None, None) => {
                    return Err(TenantError::Protocol {
                        service: Service::Graph,
                        message: "delta page with neither nextLink nor deltaLink".into(),
                    });
                }
            }
        }
        Ok(round)
    }

    /// Runs requests through `POST /$batch`: in chunks of 20 (requests linked by `dependsOn`
    /// stay in one chunk), chunks concurrently under the service limiter. A sub-request
    /// answered 429 (or 503, or 500/502/504 when safe to repeat) is sent again in a later
    /// batch after its own `Retry-After`; a 424 whose dependency is being retried goes along
    /// with it. Answers one final response per request, in the order given.
    pub async fn batch(
        &self,
        requests: Vec<BatchRequest>,
    ) -> Result<Vec<BatchResponse>, TenantError> {
        let chunks = chunk_requests(&requests)?;
        let order: Vec<(String, Vec<String>)> = requests
            .iter()
            .map(|r| (r.id.clone(), r.depends_on.clone()))
            .collect();
        let mut by_id: HashMap<String, BatchRequest> =
            requests.into_iter().map(|r| (r.id.clone(), r)).collect();
        let runs = chunks.into_iter().map(|ids| {
            let chunk: Vec<BatchRequest> = ids.iter().filter_map(|id| by_id.remove(id)).collect();
            self.run_chunk(chunk)
        });
        let mut done: HashMap<String, BatchResponse> = HashMap::new();
        for result in futures_util::future::join_all(runs).await {
            for r in result? {
                done.insert(r.id.clone(), r);
            }
        }
        order
            .into_iter()
            .map(|(id, depends_on)| {
                let mut r = done.remove(&id).ok_or_else(|| TenantError::Protocol {
                    service: Service::Graph,
                    message: format!("no answer for batch request {id}"),
                })?;
                r.depends_on = depends_on;
                Ok(r)
            })
            .collect()
    }

    async fn run_chunk(&self, chunk: Vec<BatchRequest>) -> Result<Vec<BatchResponse>, TenantError> {
        let exec = self.exec();
        let max = exec.max_attempts();
        let mut finals: HashMap<String, BatchResponse> = HashMap::new();
        let mut attempts: HashMap<String, u32> = HashMap::new();
        // (due, request) in the original order.
        let mut pending: Vec<(Instant, BatchRequest)> =
            chunk.into_iter().map(|r| (Instant::now(), r)).collect();
        while !pending.is_empty() {
            let earliest = pending
                .iter()
                .map(|(d, _)| *d)
                .min()
                .unwrap_or_else(Instant::now);
            if earliest > Instant::now() {
                let wait = earliest - Instant::now();
                exec.pause(wait).await;
            }
            let now = Instant::now();
            // A request whose dependency waits longer goes with the dependency.
            let mut ready: Vec<BatchRequest> = Vec::new();
            let mut later: Vec<(Instant, BatchRequest)> = Vec::new();
            let snapshot: Vec<(Instant, String, Vec<String>)> = pending
                .iter()
                .map(|(d, r)| (*d, r.id.clone(), r.depends_on.clone()))
                .collect();
            for (due, mut req) in std::mem::take(&mut pending) {
                let dep_due = req
                    .depends_on
                    .iter()
                    .filter_map(|d| {
                        snapshot
                            .iter()
                            .find(|(_, id, _)| id == d)
                            .map(|(due, _, _)| *due)
                    })
                    .max();
                let effective = dep_due.map_or(due, |d| d.max(due));
                if effective <= now {
                    // Dependencies already answered for good are no longer in this batch.
                    req.depends_on
                        .retain(|d| snapshot.iter().any(|(_, id, _)| id == d));
                    ready.push(req);
                } else {
                    later.push((due, req));
                }
            }
            if ready.is_empty() {
                pending = later;
                continue;
            }
            let repeat = if ready.iter().all(|r| r.repeat == Repeat::Safe) {
                Repeat::Safe
            } else {
                Repeat::Unsafe
            };
            let reply = exec
                .send(
                    &Call::new(Method::POST, self.url(&["$batch"]))
                        .json(json!({ "requests": ready }))
                        .repeat(repeat),
                )
                .await?;
            if !reply.status.is_success() {
                return Err(reply_error(&reply, "$batch"));
            }
            #[derive(Deserialize)]
            struct Envelope {
                responses: Vec<BatchResponse>,
            }
            let envelope: Envelope = reply.json(Service::Graph)?;
            let mut answers: HashMap<String, BatchResponse> = envelope
                .responses
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect();
            let mut retry_at: HashMap<String, Instant> = HashMap::new();
            let mut deferred: Vec<(BatchRequest, BatchResponse)> = Vec::new();
            for req in ready {
                let Some(resp) = answers.remove(&req.id) else {
                    return Err(TenantError::Protocol {
                        service: Service::Graph,
                        message: format!("$batch answered nothing for request {}", req.id),
                    });
                };
                let n = attempts.entry(req.id.clone()).or_insert(0);
                let retryable = match resp.status {
                    429 | 503 => true,
                    500 | 502 | 504 => req.repeat == Repeat::Safe,
                    _ => false,
                };
                if resp.status == 424 {
                    deferred.push((req, resp));
                    continue;
                }
                *n += 1;
                if retryable && *n < max {
                    let ra = resp.header("Retry-After").and_then(parse_retry_after);
                    let wait = ra.unwrap_or_else(|| exec.backoff(*n));
                    if resp.status == 429 {
                        super::http::Counters::bump(&exec.counters.throttled);
                        match ra {
                            Some(ra) => exec.limiter.throttled(ra),
                            None => exec.limiter.refused_now(),
                        }
                    } else {
                        super::http::Counters::bump(&exec.counters.server_errors);
                    }
                    tracing::debug!(id = %req.id, status = resp.status, attempt = *n, wait_ms = wait.as_millis() as u64, "batch request refused; retrying it");
                    retry_at.insert(req.id.clone(), Instant::now() + wait);
                    later.push((Instant::now() + wait, req));
                } else {
                    finals.insert(req.id.clone(), resp);
                }
            }
            // A 424 is retried with its dependency when that one is retried; else it stands.
            for (req, resp) in deferred {
                match req.depends_on.iter().find_map(|d| retry_at.get(d)) {
                    Some(due) => later.push((*due, req)),
                    None => {
                        finals.insert(req.id.clone(), resp);
                    }
                }
            }
            pending = later;
        }
        Ok(finals.into_values().collect())
    }

    /// The executor's counters, for tests and statistics.
    pub(crate) fn executor(&self) -> &Arc<Executor> {
        &self.inner.exec
    }
}

/// Splits requests into batches of at most 20, keeping every `dependsOn` chain together
/// (Graph resolves `dependsOn` only inside one batch).
fn chunk_requests(requests: &[BatchRequest]) -> Result<Vec<Vec<String>>, TenantError> {
    let bad = |m: String| TenantError::Protocol {
        service: Service::Graph,
        message: m,
    };
    // Union-find over request indices.
    let index: HashMap<&str, usize> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    if index.len() != requests.len() {
        return Err(bad("batch request ids must be unique".into()));
    }
    let mut parent: Vec<usize> = (0..requests.len()).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for (i, r) in requests.iter().enumerate() {
        for d in &r.depends_on {
            let j = *index.get(d.as_str()).filter(|j| **j < i).ok_or_else(|| {
                bad(format!(
                    "request {} depends on {d}, which is not an earlier request",
                    r.id
                ))
            })?;
            let (a, b) = (root(&mut parent, i), root(&mut parent, j));
            parent[a] = b;
        }
    }
    let mut groups: Vec<(usize, Vec<String>)> = Vec::new();
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    for (i, r) in requests.iter().enumerate() {
        let g = root(&mut parent, i);
        let slot = *group_of.entry(g).or_insert_with(|| {
            groups.push((i, Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push(r.id.clone());
    }
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for (_, ids) in groups {
        if ids.len() > BATCH_LIMIT {
            return Err(bad(format!(
                "{} requests are linked by dependsOn; a batch holds at most {BATCH_LIMIT}",
                ids.len()
            )));
        }
        if current.len() + ids.len() > BATCH_LIMIT {
            chunks.push(std::mem::take(&mut current));
        }
        current.extend(ids);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odata_literals_double_quotes() {
        assert_eq!(odata_string("O'Brien"), "'O''Brien'");
        assert_eq!(odata_string("''"), "''''''");
        assert_eq!(
            encode_query("onPremisesExtensionAttributes/extensionAttribute15 eq 'a&b+c'"),
            "onPremisesExtensionAttributes/extensionAttribute15%20eq%20'a%26b%2Bc'"
        );
    }

    #[test]
    fn chunks_keep_dependency_chains_together() {
        let mut reqs: Vec<BatchRequest> = (0..19)
            .map(|i| BatchRequest::new(format!("a{i}"), Method::GET, "/users"))
            .collect();
        reqs.push(BatchRequest::new("x", Method::GET, "/users"));
        reqs.push(BatchRequest::new("y", Method::GET, "/users").depends_on("x"));
        reqs.push(BatchRequest::new("z", Method::GET, "/users").depends_on("y"));
        let chunks = chunk_requests(&reqs).unwrap();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].len(), 19);
        assert_eq!(chunks[1], ["x", "y", "z"]);
        let bad = vec![BatchRequest::new("y", Method::GET, "/u").depends_on("x")];
        assert!(chunk_requests(&bad).is_err());
    }

    #[test]
    fn users_serialise_without_read_only_or_empty_fields() {
        let u = GraphUser {
            display_name: Some("A".into()),
            proxy_addresses: Some(vec!["SMTP:a@b".into()]),
            on_premises_extension_attributes: Some(ExtensionAttributes {
                extension_attribute15: Some("ldap2exo:1".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(&u).unwrap();
        assert_eq!(
            v,
            json!({"displayName": "A", "onPremisesExtensionAttributes": {"extensionAttribute15": "ldap2exo:1"}})
        );
        let ext = u.on_premises_extension_attributes.unwrap();
        assert_eq!(ext.get("extensionAttribute15"), Some("ldap2exo:1"));
        assert_eq!(ext.get("extensionAttribute16"), None);
    }
}
