//! Graph user endpoints: list/get/create/update/delete, `assignLicense`, `subscribedSkus`,
//! `domains` and `directory/deletedItems`. Validation follows the "Create user", "Update
//! user" and "user resource type" pages: required properties on create, UPN on a verified
//! domain, mailNickname and displayName rules, read-only `proxyAddresses`, uniqueness of the
//! UPN and of every address across all objects (soft-deleted ones included).

use super::odata;
use super::{Answer, GraphError, url};
use crate::propagation::Reader;
use crate::shared::{Shared, lock};
use crate::store::{
    Origin, Store, StoreError, User, domain_of, now_millis, valid_mail_nickname, valid_smtp,
};
use crate::util::{b64url, b64url_decode, fold};
use crate::wire::Req;
use serde_json::{Map, Value, json};

/// Every property the emulator models (for `$select`).
pub const ALL_PROPS: &[&str] = &[
    "id",
    "userPrincipalName",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "mailNickname",
    "accountEnabled",
    "employeeId",
    "usageLocation",
    "department",
    "jobTitle",
    "officeLocation",
    "mobilePhone",
    "companyName",
    "preferredLanguage",
    "businessPhones",
    "otherMails",
    "proxyAddresses",
    "onPremisesExtensionAttributes",
    "assignedLicenses",
    "assignedPlans",
    "licenseAssignmentStates",
    "createdDateTime",
    "deletedDateTime",
    "onPremisesSyncEnabled",
    "userType",
];

/// What Graph v1.0 returns for a user without `$select`.
pub const DEFAULT_PROPS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
];

/// Properties Graph refuses to write.
const READ_ONLY: &[&str] = &[
    "id",
    "proxyAddresses",
    "assignedLicenses",
    "assignedPlans",
    "licenseAssignmentStates",
    "createdDateTime",
    "deletedDateTime",
    "onPremisesSyncEnabled",
];

/// Properties Entra refuses to update on an object created by `New-MailUser` ("originated
/// within an external service"), in strict mode. Confirmed for `employeeId` and the extension
/// attributes; the address-book fields are deliberately included (see README).
const EXTERNAL_ORIGIN_LOCKED: &[&str] = &[
    "employeeId",
    "onPremisesExtensionAttributes",
    "mail",
    "otherMails",
    "proxyAddresses",
    "givenName",
    "surname",
    "displayName",
    "department",
    "jobTitle",
    "officeLocation",
    "businessPhones",
    "mobilePhone",
    "companyName",
    "userPrincipalName",
];

/// Writable properties the emulator accepts but does not model.
const IGNORED_WRITABLE: &[&str] = &["showInAddressList", "passwordPolicies", "preferredLanguage"];

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 999;

pub fn select_props(req: &Req) -> Result<Option<Vec<String>>, GraphError> {
    let Some(sel) = req.query("$select") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for s in sel.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match ALL_PROPS.iter().find(|p| p.eq_ignore_ascii_case(s)) {
            Some(p) => out.push(p.to_string()),
            None => {
                return Err(GraphError::bad(format!(
                    "Could not find a property named '{s}' on type 'microsoft.graph.user'."
                )));
            }
        }
    }
    Ok(Some(out))
}

pub fn project(view: &Map<String, Value>, select: &Option<Vec<String>>) -> Value {
    let mut m = Map::new();
    match select {
        Some(sel) => {
            for p in sel {
                m.insert(p.clone(), view.get(p).cloned().unwrap_or(Value::Null));
            }
        }
        None => {
            for p in DEFAULT_PROPS {
                m.insert(p.to_string(), view.get(*p).cloned().unwrap_or(Value::Null));
            }
        }
    }
    Value::Object(m)
}

fn context(sh: &Shared, entity: &str, select: &Option<Vec<String>>) -> String {
    match select {
        Some(s) => url(sh, &format!("/$metadata#{entity}({})", s.join(","))),
        None => url(sh, &format!("/$metadata#{entity}")),
    }
}

/// Refuses system query options the emulator does not implement, rather than silently
/// returning something Graph would not.
fn refuse_unsupported(req: &Req, allowed: &[&str]) -> Result<(), GraphError> {
    for (k, _) in &req.query {
        if k.starts_with('$') && !allowed.contains(&k.as_str()) {
            return Err(GraphError::UnsupportedQuery(format!(
                "The query option '{k}' is not supported by the ldap2exo emulator on this endpoint."
            )));
        }
    }
    Ok(())
}

fn parse_top(req: &Req) -> Result<usize, GraphError> {
    match req.query("$top") {
        None => Ok(DEFAULT_PAGE),
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
            _ => Err(GraphError::bad(format!(
                "Invalid page size specified: '{t}'. Must be between 1 and {MAX_PAGE} inclusive."
            ))),
        },
    }
}

fn is_eventual(req: &Req) -> bool {
    req.header("consistencylevel")
        .is_some_and(|v| v.eq_ignore_ascii_case("eventual"))
}

/// Parses `$filter` and enforces the advanced-query rule.
fn parse_filter(req: &Req) -> Result<(Option<odata::Expr>, bool), GraphError> {
    let Some(f) = req.query("$filter") else {
        return Ok((None, false));
    };
    let map = |e: odata::ODataError| match e {
        odata::ODataError::NotFilterable(_) => GraphError::UnsupportedQuery(e.to_string()),
        _ => GraphError::bad(e.to_string()),
    };
    let mut expr = odata::parse(f).map_err(map)?;
    let advanced = odata::check(&mut expr).map_err(map)?;
    if let Some(reason) = &advanced
        && !(is_eventual(req) && req.query("$count") == Some("true"))
    {
        let prop = reason
            .split_whitespace()
            .next()
            .unwrap_or(reason)
            .rsplit('/')
            .next()
            .unwrap_or(reason)
            .to_string();
        return Err(GraphError::UnsupportedQuery(format!(
            "Unsupported or invalid query filter clause specified for property '{prop}' of resource 'User'."
        )));
    }
    Ok((Some(expr), advanced.is_some()))
}

/// Pages a list sorted by id: `$skiptoken` is the last id of the previous page.
/// The id a `$skiptoken` says the previous page ended with.
fn skip_after(req: &Req) -> Result<Option<String>, GraphError> {
    match req.query("$skiptoken") {
        Some(t) => Ok(Some(
            b64url_decode(t)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| GraphError::bad("The specified page token value has expired and can no longer be included in your request."))?,
        )),
        None => Ok(None),
    }
}

/// One page of `items` (in id order; those the `$skiptoken` already passed may be left out
/// beforehand) with its `@odata.nextLink`; `total` is the whole result's size, for `$count`.
fn paged(
    sh: &Shared,
    req: &Req,
    path: &str,
    entity: &str,
    items: Vec<(String, Value)>,
    total: usize,
    select: &Option<Vec<String>>,
) -> Result<Answer, GraphError> {
    let top = parse_top(req)?;
    let after = skip_after(req)?;
    let mut rest: Vec<(String, Value)> = items
        .into_iter()
        .filter(|(id, _)| after.as_ref().is_none_or(|a| id > a))
        .collect();
    let more = rest.len() > top;
    rest.truncate(top);
    let mut body = json!({"@odata.context": context(sh, entity, select)});
    if req.query("$count") == Some("true") && is_eventual(req) {
        body["@odata.count"] = json!(total);
    }
    if more {
        let last = rest.last().map(|(id, _)| id.clone()).unwrap_or_default();
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in req.query.iter().filter(|(k, _)| k != "$skiptoken") {
            ser.append_pair(k, v);
        }
        ser.append_pair("$skiptoken", &b64url(last.as_bytes()));
        body["@odata.nextLink"] = json!(url(sh, &format!("{path}?{}", ser.finish())));
    }
    body["value"] = Value::Array(rest.into_iter().map(|(_, v)| v).collect());
    Ok(Answer::ok(body))
}

pub fn list(sh: &Shared, req: &Req) -> Result<Answer, GraphError> {
    refuse_unsupported(req, &["$select", "$filter", "$top", "$count", "$skiptoken"])?;
    let select = select_props(req)?;
    let (filter, advanced) = parse_filter(req)?;
    if req.query("$count") == Some("true") && !is_eventual(req) {
        return Err(GraphError::bad(
            "$count is not currently supported without the ConsistencyLevel header set to eventual.",
        ));
    }
    let lag = sh.settings.advanced_query_lag.as_millis() as u64;
    let cutoff = now_millis().saturating_sub(lag);
    let top = parse_top(req)?;
    let after = skip_after(req)?;
    // Without `$count` only this page's users need a view: those the skiptoken passed are
    // skipped unseen and the walk stops one past the page (every page building every view
    // made listing 100,000 users quadratic). Users come in id order.
    let counting = req.query("$count") == Some("true");
    let mut store = lock(&sh.store);
    store.purge_expired();
    let (mut items, mut total) = (Vec::new(), 0);
    let users = store.graph_users();
    for u in users
        .iter()
        .filter(|u| !u.is_deleted())
        // Advanced queries read an eventually consistent index: recent changes are not in it.
        .filter(|u| !(advanced && lag > 0 && u.changed_ms > cutoff))
    {
        let passed = after.as_deref().is_some_and(|a| u.id.as_str() <= a);
        if passed && !counting {
            continue;
        }
        let view = store.graph_view(u);
        if filter.as_ref().is_some_and(|f| !odata::eval(f, &view)) {
            continue;
        }
        total += 1;
        if !passed && items.len() <= top {
            items.push((u.id.clone(), project(&view, &select)));
        } else if !counting && items.len() > top {
            break;
        }
    }
    drop(users);
    drop(store);
    paged(sh, req, "/users", "users", items, total, &select)
}

pub fn get(sh: &Shared, req: &Req, key: &str) -> Result<Answer, GraphError> {
    refuse_unsupported(req, &["$select"])?;
    let select = select_props(req)?;
    let store = lock(&sh.store);
    let u = store
        .graph_user(key)
        .map_err(|_| GraphError::NotFound(key.to_string()))?;
    let mut v = project(&store.graph_view(&u), &select);
    v["@odata.context"] = json!(match &select {
        Some(s) => url(sh, &format!("/$metadata#users({})/$entity", s.join(","))),
        None => url(sh, "/$metadata#users/$entity"),
    });
    Ok(Answer::ok(v))
}

fn body_object(req: &Req) -> Result<Map<String, Value>, GraphError> {
    match req.json() {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(GraphError::bad("The request body must be a JSON object.")),
        Err(e) => Err(GraphError::bad(format!(
            "Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format. ({e})"
        ))),
    }
}

fn opt_string(k: &str, v: &Value, max: usize) -> Result<Option<String>, GraphError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.chars().count() <= max => Ok(Some(s.clone())),
        _ => Err(GraphError::invalid_value(k)),
    }
}

fn req_string(k: &str, v: &Value, max: usize) -> Result<String, GraphError> {
    match opt_string(k, v, max)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(GraphError::invalid_value(k)),
    }
}

fn string_list(k: &str, v: &Value) -> Result<Vec<String>, GraphError> {
    match v {
        Value::Null => Ok(vec![]),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| GraphError::invalid_value(k))
            })
            .collect(),
        _ => Err(GraphError::invalid_value(k)),
    }
}

fn password_ok(p: &str) -> bool {
    let classes = [
        p.chars().any(|c| c.is_ascii_lowercase()),
        p.chars().any(|c| c.is_ascii_uppercase()),
        p.chars().any(|c| c.is_ascii_digit()),
        p.chars().any(|c| !c.is_ascii_alphanumeric()),
    ];
    (8..=256).contains(&p.chars().count()) && classes.iter().filter(|x| **x).count() >= 3
}

/// Applies a POST/PATCH body to a copy of the user, validating every property.
fn apply_body(
    store: &Store,
    u: &mut User,
    body: &Map<String, Value>,
    creating: bool,
) -> Result<(), GraphError> {
    let mut password_seen = false;
    for (k, v) in body {
        match k.as_str() {
            "@odata.type" => {
                if v != "#microsoft.graph.user" {
                    return Err(GraphError::bad(format!(
                        "Invalid @odata.type {v} for a user."
                    )));
                }
            }
            "accountEnabled" => {
                u.account_enabled = v.as_bool().ok_or_else(|| GraphError::invalid_value(k))?
            }
            "displayName" => u.display_name = Some(req_string(k, v, 256)?),
            "mailNickname" => {
                let n = req_string(k, v, 64)?;
                if !valid_mail_nickname(&n) {
                    return Err(GraphError::invalid_value(k));
                }
                u.mail_nickname = n;
            }
            "userPrincipalName" => {
                let upn = req_string(k, v, 113)?;
                if !valid_smtp(&upn) {
                    return Err(GraphError::invalid_value(k));
                }
                if !store.is_accepted(domain_of(&upn))
                    || fold(domain_of(&upn)) == store.tenant.mail_domain()
                {
                    return Err(GraphError::BadRequest {
                        code: "Request_BadRequest",
                        message: "The domain portion of the userPrincipalName property is invalid. You must use one of the verified domain names in your organization.".into(),
                        details: vec![json!({"code": "InvalidValue", "target": "userPrincipalName"})],
                    });
                }
                u.user_principal_name = upn;
            }
            "passwordProfile" => {
                let p = v
                    .get("password")
                    .and_then(Value::as_str)
                    .ok_or_else(|| GraphError::invalid_value("passwordProfile"))?;
                if let Some(obj) = v.as_object() {
                    for key in obj.keys() {
                        if ![
                            "password",
                            "forceChangePasswordNextSignIn",
                            "forceChangePasswordNextSignInWithMfa",
                        ]
                        .contains(&key.as_str())
                        {
                            return Err(GraphError::bad(format!(
                                "Property '{key}' does not exist as a declared property or extension property."
                            )));
                        }
                    }
                }
                if !password_ok(p) {
                    return Err(GraphError::bad(
                        "The specified password does not comply with password complexity requirements. Please provide a different password.",
                    ));
                }
                password_seen = true;
            }
            "givenName" => u.given_name = opt_string(k, v, 64)?,
            "surname" => u.surname = opt_string(k, v, 64)?,
            "department" => u.department = opt_string(k, v, 64)?,
            "jobTitle" => u.job_title = opt_string(k, v, 128)?,
            "officeLocation" => u.office_location = opt_string(k, v, 128)?,
            "mobilePhone" => u.mobile_phone = opt_string(k, v, 64)?,
            "companyName" => u.company_name = opt_string(k, v, 64)?,
            "employeeId" => u.employee_id = opt_string(k, v, 16)?,
            "usageLocation" => {
                let l = opt_string(k, v, 2)?;
                if l.as_ref()
                    .is_some_and(|l| l.len() != 2 || !l.chars().all(|c| c.is_ascii_uppercase()))
                {
                    return Err(GraphError::invalid_value(k));
                }
                u.usage_location = l;
            }
            "mail" => {
                let m = opt_string(k, v, 256)?;
                if let Some(m) = &m
                    && !valid_smtp(m)
                {
                    return Err(GraphError::invalid_value(k));
                }
                set_mail(store, u, m)?;
            }
            "businessPhones" => {
                let l = string_list(k, v)?;
                // A collection in the schema, but the directory keeps a single number.
                if l.len() > 1 {
                    return Err(GraphError::invalid_value(k));
                }
                u.business_phones = l;
            }
            "otherMails" => {
                let l = string_list(k, v)?;
                if l.iter().any(|m| !valid_smtp(m)) {
                    return Err(GraphError::invalid_value(k));
                }
                u.other_mails = l;
            }
            "onPremisesExtensionAttributes" => {
                let Value::Object(m) = v else {
                    return Err(GraphError::invalid_value(k));
                };
                for (ek, ev) in m {
                    let idx = ek
                        .strip_prefix("extensionAttribute")
                        .and_then(|n| n.parse::<u8>().ok())
                        .filter(|n| (1..=15).contains(n))
                        .ok_or_else(|| GraphError::bad(format!("Property '{ek}' does not exist as a declared property or extension property.")))?;
                    match opt_string(ek, ev, 1024)? {
                        Some(s) => u.extension_attributes.insert(idx, s),
                        None => u.extension_attributes.remove(&idx),
                    };
                }
            }
            ro if READ_ONLY.contains(&ro) => {
                return Err(GraphError::bad(format!(
                    "Property '{ro}' is read-only and cannot be set."
                )));
            }
            ig if IGNORED_WRITABLE.contains(&ig) => {}
            other => {
                return Err(GraphError::bad(format!(
                    "Property '{other}' does not exist as a declared property or extension property."
                )));
            }
        }
    }
    if creating {
        for (p, present) in [
            ("accountEnabled", body.contains_key("accountEnabled")),
            ("displayName", body.contains_key("displayName")),
            ("mailNickname", body.contains_key("mailNickname")),
            ("userPrincipalName", body.contains_key("userPrincipalName")),
            ("passwordProfile", password_seen),
        ] {
            if !present {
                return Err(GraphError::invalid_value(p));
            }
        }
    }
    Ok(())
}

/// Graph `mail`: stored as is for plain users; for Exchange recipients it is the primary
/// SMTP address, so setting it makes that address primary (on an accepted domain only).
fn set_mail(store: &Store, u: &mut User, m: Option<String>) -> Result<(), GraphError> {
    if u.recipient_type_details.is_none() {
        u.mail = m;
        return Ok(());
    }
    let Some(m) = m else {
        return Err(GraphError::invalid_value("mail"));
    };
    if !store.is_accepted(domain_of(&m)) {
        return Err(GraphError::invalid_value("mail"));
    }
    let mut addrs: Vec<String> = u
        .proxy_addresses
        .iter()
        .map(|p| match p.strip_prefix("SMTP:") {
            Some(a) => format!("smtp:{a}"),
            None => p.clone(),
        })
        .filter(|p| fold(crate::store::strip_smtp(p)) != fold(&m))
        .collect();
    addrs.insert(0, format!("SMTP:{m}"));
    u.proxy_addresses = addrs;
    Ok(())
}

/// Entra's password complexity rule (also used by New-MailUser in strict mode).
pub fn password_complex(p: &str) -> bool {
    password_ok(p)
}

/// UPN and addresses must be unique across all objects, soft-deleted ones included.
fn check_unique(store: &Store, u: &User, before: Option<&User>) -> Result<(), GraphError> {
    let changed = |f: &dyn Fn(&User) -> String| before.is_none_or(|b| fold(&f(b)) != fold(&f(u)));
    if changed(&|x: &User| x.user_principal_name.clone())
        && (store
            .upn_owner(&u.user_principal_name, Some(&u.id))
            .is_some()
            || store.address_taken(&u.user_principal_name, Some(&u.id)))
    {
        return Err(GraphError::conflict("userPrincipalName"));
    }
    let mail = |x: &User| {
        if x.recipient_type_details.is_some() {
            x.primary_smtp()
        } else {
            x.mail.clone()
        }
    };
    if let Some(m) = mail(u)
        && before.is_none_or(|b| mail(b).map(|x| fold(&x)) != Some(fold(&m)))
        && store.address_taken(&m, Some(&u.id))
    {
        return Err(GraphError::conflict("proxyAddresses"));
    }
    Ok(())
}

pub fn create(sh: &Shared, req: &Req) -> Result<Answer, GraphError> {
    let body = body_object(req)?;
    let mut store = lock(&sh.store);
    let mut u = User {
        id: store.rng.uuid(),
        account_enabled: false,
        ..Default::default()
    };
    apply_body(&store, &mut u, &body, true)?;
    check_unique(&store, &u, None)?;
    let id = store.create(u, Origin::Graph);
    let view = store.graph_view(&store.users[&id]);
    let mut v = project(&view, &None);
    v["@odata.context"] = json!(url(sh, "/$metadata#users/$entity"));
    Ok(Answer {
        status: 201,
        body: Some(v),
        headers: vec![("location".into(), url(sh, &format!("/users/{id}")))],
    })
}

pub fn patch(sh: &Shared, req: &Req, key: &str) -> Result<Answer, GraphError> {
    let body = body_object(req)?;
    let mut store = lock(&sh.store);
    let id = visible_id(&store, key)?;
    let before = store.users[&id].clone();
    if store.realism.strict_rules && before.origin == Origin::Exchange {
        refuse_external_origin(&body)?;
    }
    let mut u = before.clone();
    apply_body(&store, &mut u, &body, false)?;
    check_unique(&store, &u, Some(&before))?;
    if u != before {
        store.commit(u, Origin::Graph);
    }
    Ok(Answer::status(204, None))
}

/// The id of a live user Graph can address now (else Graph's 404).
fn visible_id(store: &Store, key: &str) -> Result<String, GraphError> {
    store
        .graph_user(key)
        .map(|u| u.id)
        .map_err(|_| GraphError::NotFound(key.to_string()))
}

/// Entra's refusal to update address-book properties of an object Exchange created.
fn refuse_external_origin(body: &Map<String, Value>) -> Result<(), GraphError> {
    if body
        .keys()
        .any(|k| EXTERNAL_ORIGIN_LOCKED.contains(&k.as_str()))
    {
        return Err(GraphError::bad(
            "Unable to update the specified properties for objects that have originated within an external service.",
        ));
    }
    Ok(())
}

pub fn delete(sh: &Shared, key: &str) -> Result<Answer, GraphError> {
    let mut store = lock(&sh.store);
    let id = visible_id(&store, key)?;
    store
        .soft_delete(&id)
        .map_err(|_| GraphError::NotFound(key.to_string()))?;
    Ok(Answer::status(204, None))
}

pub fn assign_license(sh: &Shared, req: &Req, key: &str) -> Result<Answer, GraphError> {
    let body = body_object(req)?;
    let missing: Vec<&str> = ["addLicenses", "removeLicenses"]
        .into_iter()
        .filter(|k| !body.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(GraphError::bad(format!(
            "One or more parameters of the function import 'assignLicense' are missing from the request payload. The missing parameters are: {}.",
            missing.join(", ")
        )));
    }
    let add: Vec<String> = match &body["addLicenses"] {
        Value::Array(a) => a
            .iter()
            .map(|l| {
                l.get("skuId")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| GraphError::invalid_value("addLicenses"))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(GraphError::invalid_value("addLicenses")),
    };
    let remove = string_list("removeLicenses", &body["removeLicenses"])?;
    let mut store = lock(&sh.store);
    let id = visible_id(&store, key)?;
    let mut u = store.users[&id].clone();
    if !add.is_empty() && u.usage_location.is_none() {
        return Err(GraphError::bad(
            "License assignment cannot be done for user with invalid usage location.",
        ));
    }
    for sku in &add {
        let Some(s) = store.sku(sku) else {
            return Err(GraphError::bad(format!(
                "License {sku} does not correspond to a valid company License."
            )));
        };
        if !u
            .assigned_licenses
            .iter()
            .any(|l| l.eq_ignore_ascii_case(sku))
        {
            if store.consumed(sku) >= s.prepaid_units {
                return Err(GraphError::bad(format!(
                    "Subscription with SKU {sku} does not have any available licenses."
                )));
            }
            u.assigned_licenses.push(s.sku_id.clone());
        }
    }
    u.assigned_licenses
        .retain(|l| !remove.iter().any(|r| r.eq_ignore_ascii_case(l)));
    store.commit(u, Origin::Graph);
    // The licence shows at once; the mailbox it gives comes later (slow provisioning).
    store.schedule_licence_effects(&id);
    let shown = store.render(&store.users[&id], Reader::Graph);
    let mut v = project(&store.graph_view(&shown), &None);
    v["@odata.context"] = json!(url(sh, "/$metadata#users/$entity"));
    Ok(Answer::ok(v))
}

pub fn subscribed_skus(sh: &Shared) -> Result<Answer, GraphError> {
    let store = lock(&sh.store);
    let t = &store.tenant;
    let value: Vec<Value> = t
        .skus
        .iter()
        .map(|s| {
            json!({
                "accountName": t.tenant_name, "accountId": t.tenant_id, "appliesTo": "User",
                "capabilityStatus": "Enabled", "consumedUnits": store.consumed(&s.sku_id),
                "id": format!("{}_{}", t.tenant_id, s.sku_id), "skuId": s.sku_id,
                "skuPartNumber": s.sku_part_number, "subscriptionIds": [],
                "prepaidUnits": {"enabled": s.prepaid_units, "suspended": 0, "warning": 0, "lockedOut": 0},
                "servicePlans": s.service_plans.iter().map(|p| json!({
                    "servicePlanId": p.service_plan_id, "servicePlanName": p.service_plan_name,
                    "provisioningStatus": "Success", "appliesTo": "User"})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Answer::ok(
        json!({"@odata.context": url(sh, "/$metadata#subscribedSkus"), "value": value}),
    ))
}

pub fn domains(sh: &Shared) -> Result<Answer, GraphError> {
    let store = lock(&sh.store);
    let t = &store.tenant;
    let dom = |name: String, verified: bool, initial: bool, default: bool| {
        json!({"id": name, "authenticationType": "Managed", "isAdminManaged": true, "isDefault": default,
               "isInitial": initial, "isRoot": true, "isVerified": verified,
               "supportedServices": if verified { json!(["Email", "OfficeCommunicationsOnline"]) } else { json!([]) }})
    };
    let first_custom = t
        .domains
        .iter()
        .find(|d| d.verified)
        .map(|d| d.name.to_ascii_lowercase());
    let mut value = vec![
        dom(t.initial_domain(), true, true, first_custom.is_none()),
        dom(t.mail_domain(), true, false, false),
    ];
    for d in &t.domains {
        let n = d.name.to_ascii_lowercase();
        value.push(dom(
            n.clone(),
            d.verified,
            false,
            Some(&n) == first_custom.as_ref(),
        ));
    }
    Ok(Answer::ok(
        json!({"@odata.context": url(sh, "/$metadata#domains"), "value": value}),
    ))
}

fn deleted_view(store: &Store, u: &User, select: &Option<Vec<String>>) -> Value {
    let view = store.graph_view(u);
    let mut v = project(&view, select);
    v["deletedDateTime"] = view["deletedDateTime"].clone();
    v
}

pub fn list_deleted(sh: &Shared, req: &Req) -> Result<Answer, GraphError> {
    refuse_unsupported(req, &["$select", "$top", "$skiptoken"])?;
    let select = select_props(req)?;
    let mut store = lock(&sh.store);
    store.purge_expired();
    let items: Vec<(String, Value)> = store
        .users
        .values()
        .filter(|u| u.is_deleted())
        .map(|u| (u.id.clone(), deleted_view(&store, u, &select)))
        .collect();
    drop(store);
    let total = items.len();
    paged(
        sh,
        req,
        "/directory/deletedItems/microsoft.graph.user",
        "directoryObjects/microsoft.graph.user",
        items,
        total,
        &select,
    )
}

pub fn get_deleted(sh: &Shared, req: &Req, id: &str) -> Result<Answer, GraphError> {
    let select = select_props(req)?;
    let mut store = lock(&sh.store);
    store.purge_expired();
    let u = store
        .users
        .get(&fold(id))
        .filter(|u| u.is_deleted())
        .ok_or_else(|| GraphError::NotFound(id.to_string()))?;
    let mut v = deleted_view(&store, u, &select);
    v["@odata.type"] = json!("#microsoft.graph.user");
    Ok(Answer::ok(v))
}

pub fn restore(sh: &Shared, id: &str) -> Result<Answer, GraphError> {
    let mut store = lock(&sh.store);
    store.purge_expired();
    match store.restore(id) {
        Ok(()) => {}
        Err(StoreError::NotFound(_)) => return Err(GraphError::NotFound(id.to_string())),
        Err(StoreError::Conflict { property, .. }) => {
            return Err(GraphError::BadRequest {
                code: "Request_BadRequest",
                message: "A conflicting object with one or more of the specified property values is present in the directory.".into(),
                details: vec![json!({"code": "ObjectConflict", "target": property})],
            });
        }
    }
    let u = &store.users[&fold(id)];
    let mut v = project(&store.graph_view(u), &None);
    v["@odata.type"] = json!("#microsoft.graph.user");
    v["@odata.context"] = json!(url(sh, "/$metadata#directoryObjects/$entity"));
    Ok(Answer::ok(v))
}

pub fn purge(sh: &Shared, id: &str) -> Result<Answer, GraphError> {
    let mut store = lock(&sh.store);
    store
        .purge(id)
        .map_err(|_| GraphError::NotFound(id.to_string()))?;
    Ok(Answer::status(204, None))
}
