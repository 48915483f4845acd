//! The cmdlets ldap2exo runs, over the shared [`Store`]. Parameter names are matched
//! case-insensitively like PowerShell; an unknown parameter is refused ("A parameter cannot
//! be found that matches parameter name ..."), so a typo in ldap2exo fails here as it would
//! against Exchange. Hashtables (`@{Add=...;Remove=...}`) arrive as JSON objects tagged
//! `"@odata.type":"#Exchange.GenericHashTable"`.

use super::opath;
use super::{ExoError, Output};
use crate::store::{
    RecipientKind, Store, User, domain_of, strip_smtp, valid_mail_nickname, valid_smtp,
};
use crate::util::fold;
use serde_json::{Map, Value, json};

/// Exchange's default `-ResultSize` for Get-Recipient / Get-MailUser / Get-Mailbox /
/// Get-EXORecipient.
const DEFAULT_RESULT_SIZE: usize = 1000;

/// Parameters common to every cmdlet that are accepted and ignored.
const COMMON: &[&str] = &[
    "ErrorAction",
    "WarningAction",
    "Confirm",
    "WhatIf",
    "Verbose",
    "Debug",
];

/// Case-insensitive parameter access with unknown-parameter detection.
struct Params {
    map: Vec<(String, Value)>,
}

impl Params {
    fn new(m: Map<String, Value>, allowed: &[&str]) -> Result<Params, ExoError> {
        let mut map = Vec::new();
        for (k, v) in m {
            let Some(canon) = allowed
                .iter()
                .chain(COMMON)
                .find(|a| a.eq_ignore_ascii_case(&k))
            else {
                return Err(ExoError::Parameter(format!(
                    "A parameter cannot be found that matches parameter name '{k}'."
                )));
            };
            map.push((canon.to_string(), v));
        }
        Ok(Params { map })
    }

    fn get(&self, k: &str) -> Option<&Value> {
        self.map.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }

    fn has(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    fn string(&self, k: &str) -> Result<Option<String>, ExoError> {
        match self.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(ExoError::Parameter(format!(
                "Cannot process argument transformation on parameter '{k}'. Cannot convert value \"{other}\" to type \"System.String\"."
            ))),
        }
    }

    fn required(&self, k: &str) -> Result<String, ExoError> {
        self.string(k)?.filter(|s| !s.is_empty()).ok_or_else(|| {
            ExoError::Parameter(format!("Cannot validate argument on parameter '{k}'. The argument is null or empty. Provide an argument that is not null or empty, and then try the command again."))
        })
    }

    fn bool(&self, k: &str) -> Result<Option<bool>, ExoError> {
        match self.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s))
                if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("$true") =>
            {
                Ok(Some(true))
            }
            Some(Value::String(s))
                if s.eq_ignore_ascii_case("false") || s.eq_ignore_ascii_case("$false") =>
            {
                Ok(Some(false))
            }
            Some(other) => Err(ExoError::Parameter(format!(
                "Cannot process argument transformation on parameter '{k}'. Cannot convert value \"{other}\" to type \"System.Boolean\"."
            ))),
        }
    }

    /// An array, or a comma-separated string (PowerShell binds both to `string[]`/enums).
    fn list(&self, k: &str) -> Result<Option<Vec<String>>, ExoError> {
        match self.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect(),
            )),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str().map(str::to_string).ok_or_else(|| {
                        ExoError::Parameter(format!(
                            "Cannot bind parameter '{k}': array of strings expected."
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(ExoError::Parameter(format!(
                "Cannot bind parameter '{k}' to value {other}."
            ))),
        }
    }

    /// `-ResultSize N|Unlimited`.
    fn result_size(&self) -> Result<Option<usize>, ExoError> {
        match self.get("ResultSize") {
            None | Some(Value::Null) => Ok(Some(DEFAULT_RESULT_SIZE)),
            Some(Value::String(s)) if s.eq_ignore_ascii_case("unlimited") => Ok(None),
            Some(Value::String(s)) => s.parse().map(Some).map_err(|_| ExoError::Parameter(format!("Cannot bind parameter 'ResultSize'. Cannot convert value \"{s}\" to type \"Microsoft.Exchange.Data.Unlimited`1[System.UInt32]\"."))),
            Some(Value::Number(n)) => n.as_u64().map(|n| Some(n as usize)).ok_or_else(|| ExoError::Parameter("Cannot bind parameter 'ResultSize'.".into())),
            Some(_) => Err(ExoError::Parameter("Cannot bind parameter 'ResultSize'.".into())),
        }
    }
}

const CUSTOM_ATTRS: [&str; 15] = [
    "CustomAttribute1",
    "CustomAttribute2",
    "CustomAttribute3",
    "CustomAttribute4",
    "CustomAttribute5",
    "CustomAttribute6",
    "CustomAttribute7",
    "CustomAttribute8",
    "CustomAttribute9",
    "CustomAttribute10",
    "CustomAttribute11",
    "CustomAttribute12",
    "CustomAttribute13",
    "CustomAttribute14",
    "CustomAttribute15",
];

fn with_custom(base: &[&'static str]) -> Vec<&'static str> {
    let mut v = base.to_vec();
    v.extend_from_slice(&CUSTOM_ATTRS);
    v
}

pub fn run(
    store: &mut Store,
    cmdlet: &str,
    params: Map<String, Value>,
) -> Result<Output, ExoError> {
    let one = |v: Value| Output {
        values: vec![v],
        warnings: vec![],
    };
    let none = || Output {
        values: vec![],
        warnings: vec![],
    };
    match cmdlet.to_ascii_lowercase().as_str() {
        "new-mailuser" => new_mail_user(store, params).map(one),
        "set-mailuser" => set_recipient(store, params, RecipientKind::MailUser).map(|_| none()),
        "set-mailbox" => set_recipient(store, params, RecipientKind::UserMailbox).map(|_| none()),
        "remove-mailuser" => remove_mail_user(store, params).map(|_| none()),
        "get-mailuser" => get_recipients(store, params, GetKind::MailUser),
        "get-mailbox" => get_recipients(store, params, GetKind::Mailbox),
        "get-recipient" => get_recipients(store, params, GetKind::Recipient),
        "get-exorecipient" => get_recipients(store, params, GetKind::ExoRecipient),
        "get-accepteddomain" => accepted_domains(store, params),
        "get-inboundconnector" => connectors(&store.inbound_connectors, params),
        "get-outboundconnector" => connectors(&store.outbound_connectors, params),
        _ => Err(ExoError::UnknownCmdlet(cmdlet.to_string())),
    }
}

/// Finds one recipient by any of its identities: Name, Alias, object id, Guid, UPN or any
/// e-mail address.
fn resolve(
    store: &Store,
    identity: &str,
    kinds: &[RecipientKind],
    deleted: bool,
) -> Result<String, ExoError> {
    let id = fold(identity);
    let bare = fold(strip_smtp(identity));
    let hits: Vec<&User> = store
        .users
        .values()
        .filter(|u| u.is_deleted() == deleted)
        .filter(|u| u.recipient_type_details.is_some_and(|k| kinds.contains(&k)))
        .filter(|u| {
            fold(&u.name()) == id
                || fold(&u.mail_nickname) == id
                || u.id == id
                || fold(&u.exchange_guid) == id
                || fold(&u.user_principal_name) == bare
                || u.proxy_addresses
                    .iter()
                    .any(|p| fold(strip_smtp(p)) == bare)
        })
        .collect();
    match hits.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => Err(ExoError::NotFound(identity.to_string())),
        _ => Err(ExoError::Ambiguous(identity.to_string())),
    }
}

fn check_address(
    store: &Store,
    shown: &str,
    bare: &str,
    owner: Option<&str>,
) -> Result<(), ExoError> {
    if !valid_smtp(bare) {
        return Err(ExoError::Validation(format!(
            "The e-mail address \"{bare}\" isn't correct. Please use this format: user name, the @ sign, followed by the domain name. For example, tonysmith@contoso.com or tony.smith@contoso.com."
        )));
    }
    if !store.is_accepted(domain_of(bare)) {
        return Err(ExoError::Task(format!(
            "You can't use the domain {} because it's not an accepted domain for your organization.",
            domain_of(bare)
        )));
    }
    if store.address_owner(bare, owner).is_some() {
        return Err(ExoError::ProxyInUse(shown.to_string()));
    }
    Ok(())
}

/// Normalises one proxy address: no prefix or `smtp:`/`SMTP:` keep their case meaning;
/// other types (`X500:`, `SIP:`) are kept as they are.
fn split_proxy(p: &str) -> (bool, bool, String) {
    // (is_smtp, is_primary, address)
    match p.split_once(':') {
        Some(("SMTP", a)) => (true, true, a.to_string()),
        Some((t, a)) if t.eq_ignore_ascii_case("smtp") => (true, false, a.to_string()),
        Some(_) if !p.contains('@') || p.find(':') < p.find('@') => (false, false, p.to_string()),
        _ => (true, false, p.to_string()),
    }
}

fn alias_invalid(alias: &str) -> ExoError {
    ExoError::Validation(format!(
        "The alias \"{alias}\" isn't valid. An alias can contain only letters, digits and the characters ! # $ % & ' * + - / = ? ^ _ ` {{ | }} ~ and periods that are not at the beginning or end; it can have at most 64 characters."
    ))
}

/// Applies `-EmailAddresses` (a whole list, or an Add/Remove hashtable) to `u`.
fn apply_email_addresses(store: &Store, u: &mut User, v: &Value) -> Result<(), ExoError> {
    let as_list = |x: Option<&Value>| -> Result<Vec<String>, ExoError> {
        match x {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::String(s)) => Ok(vec![s.clone()]),
            Some(Value::Array(a)) => a
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_string).ok_or_else(|| {
                        ExoError::Parameter("EmailAddresses: strings expected.".into())
                    })
                })
                .collect(),
            Some(_) => Err(ExoError::Parameter(
                "EmailAddresses: strings expected.".into(),
            )),
        }
    };
    let mut addrs = u.proxy_addresses.clone();
    let mut added: Vec<(String, String)> = Vec::new(); // (as shown, bare)
    let add_one = |addrs: &mut Vec<String>, added: &mut Vec<(String, String)>, p: &str| {
        let (smtp, primary, a) = split_proxy(p);
        if !smtp {
            if !addrs.iter().any(|x| x.eq_ignore_ascii_case(p)) {
                addrs.push(p.to_string());
            }
            return;
        }
        let existing = addrs
            .iter()
            .position(|x| fold(strip_smtp(x)) == fold(&a) && split_proxy(x).0);
        if primary {
            for x in addrs.iter_mut() {
                if x.starts_with("SMTP:") {
                    *x = format!("smtp:{}", &x[5..]);
                }
            }
        }
        let shown = if primary {
            format!("SMTP:{a}")
        } else {
            format!("smtp:{a}")
        };
        match existing {
            Some(i) => {
                if primary {
                    addrs[i] = shown;
                }
            }
            None => {
                addrs.push(shown.clone());
                added.push((shown, a));
            }
        }
    };
    match v {
        Value::Object(h) => {
            for k in h.keys() {
                if !["@odata.type", "add", "remove"].contains(&k.to_ascii_lowercase().as_str()) {
                    return Err(ExoError::Parameter(format!(
                        "Cannot convert the hashtable key '{k}' for parameter 'EmailAddresses': only Add and Remove are allowed."
                    )));
                }
            }
            let get = |name: &str| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            };
            for r in as_list(get("Remove"))? {
                let (smtp, _, a) = split_proxy(&r);
                let pos = addrs.iter().position(|x| {
                    if smtp {
                        split_proxy(x).0 && fold(strip_smtp(x)) == fold(&a)
                    } else {
                        x.eq_ignore_ascii_case(&r)
                    }
                });
                if let Some(i) = pos {
                    if addrs[i].starts_with("SMTP:") {
                        return Err(ExoError::Validation(format!(
                            "The primary SMTP address \"{}\" can't be removed. Make another address primary first.",
                            addrs[i]
                        )));
                    }
                    addrs.remove(i);
                }
            }
            for a in as_list(get("Add"))? {
                add_one(&mut addrs, &mut added, &a);
            }
        }
        other => {
            let list = as_list(Some(other))?;
            let primaries = list.iter().filter(|p| split_proxy(p).1).count();
            if primaries > 1 {
                return Err(ExoError::Validation("There are multiple primary SMTP addresses. Please ensure there is only one primary address for each address type.".into()));
            }
            let before = addrs.clone();
            addrs.clear();
            for (i, p) in list.iter().enumerate() {
                // Without any `SMTP:` the first address becomes primary.
                let p = if primaries == 0 && i == 0 && split_proxy(p).0 {
                    format!("SMTP:{}", split_proxy(p).2)
                } else {
                    p.clone()
                };
                add_one(&mut addrs, &mut added, &p);
            }
            // Addresses that were there already are not "added" (no conflict with oneself).
            added.retain(|(_, a)| !before.iter().any(|b| fold(strip_smtp(b)) == fold(a)));
        }
    }
    for (shown, bare) in &added {
        check_address(store, shown, bare, Some(&u.id))?;
    }
    if !addrs.iter().any(|a| a.starts_with("SMTP:")) {
        return Err(ExoError::Validation(
            "The e-mail address list must contain a primary SMTP address.".into(),
        ));
    }
    u.proxy_addresses = addrs;
    Ok(())
}

fn external_address(raw: &str) -> Result<String, ExoError> {
    let a = strip_smtp(raw).to_string();
    if !valid_smtp(&a) {
        return Err(ExoError::Validation(format!(
            "The e-mail address \"{a}\" isn't correct. Please use this format: user name, the @ sign, followed by the domain name. For example, tonysmith@contoso.com or tony.smith@contoso.com."
        )));
    }
    Ok(a)
}

fn apply_custom_attributes(p: &Params, u: &mut User) -> Result<(), ExoError> {
    for (i, name) in CUSTOM_ATTRS.iter().enumerate() {
        if p.has(name) {
            match p.string(name)? {
                Some(s) if !s.is_empty() => {
                    if s.chars().count() > 1024 {
                        return Err(ExoError::Validation(format!(
                            "The length of the property is too long. The maximum length is 1024 and the length of the value provided is {}. Property: {name}",
                            s.chars().count()
                        )));
                    }
                    u.extension_attributes.insert(i as u8 + 1, s);
                }
                _ => {
                    u.extension_attributes.remove(&(i as u8 + 1));
                }
            }
        }
    }
    Ok(())
}

fn new_mail_user(store: &mut Store, m: Map<String, Value>) -> Result<Value, ExoError> {
    let p = Params::new(
        m,
        &[
            "Name",
            "Alias",
            "DisplayName",
            "FirstName",
            "LastName",
            "ExternalEmailAddress",
            "MicrosoftOnlineServicesID",
            "Password",
            "PrimarySmtpAddress",
        ],
    )?;
    let name = p.required("Name")?;
    if name.chars().count() > 64 {
        return Err(ExoError::Validation(format!(
            "The length of the property is too long. The maximum length is 64 and the length of the value provided is {}.",
            name.chars().count()
        )));
    }
    let external = external_address(&p.required("ExternalEmailAddress")?)?;
    let alias = match p.string("Alias")? {
        Some(a) => a,
        None => name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c))
            .collect(),
    };
    if !valid_mail_nickname(&alias) || alias.starts_with('.') || alias.ends_with('.') {
        return Err(alias_invalid(&alias));
    }
    if store.users.values().any(|u| {
        !u.is_deleted() && u.recipient_type_details.is_some() && fold(&u.name()) == fold(&name)
    }) {
        return Err(ExoError::NameInUse(name));
    }
    let upn = p.string("MicrosoftOnlineServicesID")?;
    if upn.is_some() && p.string("Password")?.is_none() {
        return Err(ExoError::Parameter("Parameter set cannot be resolved using the specified named parameters: -MicrosoftOnlineServicesID needs -Password.".into()));
    }
    let mut u = User {
        id: store.rng.uuid(),
        mail_nickname: alias.clone(),
        exchange_name: Some(name.clone()),
        ..Default::default()
    };
    let primary = match (p.string("PrimarySmtpAddress")?, &upn) {
        (Some(ps), _) => strip_smtp(&ps).to_string(),
        (None, Some(upn)) => upn.clone(),
        (None, None) if store.is_accepted(domain_of(&external)) => external.clone(),
        (None, None) => store.free_moera(&alias, &u.id),
    };
    let upn = match upn {
        Some(upn) => {
            if !valid_smtp(&upn) {
                return Err(ExoError::Validation(format!(
                    "The value \"{upn}\" of property MicrosoftOnlineServicesID isn't a valid user principal name."
                )));
            }
            if !store.is_accepted(domain_of(&upn)) {
                return Err(ExoError::Task(format!(
                    "You can't use the domain {} because it's not an accepted domain for your organization.",
                    domain_of(&upn)
                )));
            }
            if store.upn_owner(&upn, None).is_some() {
                return Err(ExoError::ProxyInUse(format!("SMTP:{upn}")));
            }
            upn
        }
        None => primary.clone(),
    };
    check_address(store, &format!("SMTP:{primary}"), &primary, None)?;
    let moera = store.free_moera(&alias, &u.id);
    u.user_principal_name = upn.clone();
    u.proxy_addresses = vec![format!("SMTP:{primary}")];
    if fold(&upn) != fold(&primary) {
        check_address(store, &format!("smtp:{upn}"), &upn, None)?;
        u.proxy_addresses.push(format!("smtp:{upn}"));
    }
    if fold(&moera) != fold(&primary) && fold(&moera) != fold(&upn) {
        u.proxy_addresses.push(format!("smtp:{moera}"));
    }
    u.display_name = Some(p.string("DisplayName")?.unwrap_or_else(|| name.clone()));
    u.given_name = p.string("FirstName")?;
    u.surname = p.string("LastName")?;
    u.external_email_address = Some(external);
    u.recipient_type_details = Some(RecipientKind::MailUser);
    u.account_enabled = true;
    let id = store.insert(u);
    Ok(Value::Object(store.exchange_view(&store.users[&id])))
}

fn set_recipient(
    store: &mut Store,
    m: Map<String, Value>,
    kind: RecipientKind,
) -> Result<(), ExoError> {
    let p = match kind {
        RecipientKind::MailUser => Params::new(
            m,
            &with_custom(&[
                "Identity",
                "EmailAddresses",
                "ExternalEmailAddress",
                "HiddenFromAddressListsEnabled",
                "DisplayName",
                "Alias",
                "Name",
                "FirstName",
                "LastName",
                "PrimarySmtpAddress",
                "WindowsEmailAddress",
            ]),
        )?,
        RecipientKind::UserMailbox => Params::new(
            m,
            &with_custom(&[
                "Identity",
                "EmailAddresses",
                "HiddenFromAddressListsEnabled",
                "ForwardingSmtpAddress",
                "DeliverToMailboxAndForward",
                "DisplayName",
                "Alias",
                "Name",
                "PrimarySmtpAddress",
                "WindowsEmailAddress",
            ]),
        )?,
    };
    let identity = p.required("Identity")?;
    let id = resolve(store, &identity, &[kind], false)?;
    let before = store.users[&id].clone();
    let mut u = before.clone();
    if let Some(v) = p.get("EmailAddresses") {
        apply_email_addresses(store, &mut u, v)?;
    }
    for k in ["PrimarySmtpAddress", "WindowsEmailAddress"] {
        if let Some(ps) = p.string(k)? {
            let ps = strip_smtp(&ps).to_string();
            apply_email_addresses(store, &mut u, &json!({"Add": [format!("SMTP:{ps}")]}))?;
        }
    }
    if kind == RecipientKind::MailUser {
        if let Some(e) = p.string("ExternalEmailAddress")? {
            // The old external address is not kept as a proxy address.
            u.external_email_address = Some(external_address(&e)?);
        }
        if p.has("FirstName") {
            u.given_name = p.string("FirstName")?;
        }
        if p.has("LastName") {
            u.surname = p.string("LastName")?;
        }
    } else {
        if p.has("ForwardingSmtpAddress") {
            u.forwarding_smtp_address = match p.string("ForwardingSmtpAddress")? {
                Some(f) if !f.is_empty() => Some(external_address(&f)?),
                _ => None,
            };
        }
        if let Some(b) = p.bool("DeliverToMailboxAndForward")? {
            u.deliver_to_mailbox_and_forward = b;
        }
    }
    if let Some(h) = p.bool("HiddenFromAddressListsEnabled")? {
        u.hidden_from_address_lists_enabled = h;
    }
    if let Some(d) = p.string("DisplayName")? {
        if d.is_empty() || d.chars().count() > 256 {
            return Err(ExoError::Validation(
                "DisplayName must be 1 to 256 characters.".into(),
            ));
        }
        u.display_name = Some(d);
    }
    if let Some(a) = p.string("Alias")? {
        if !valid_mail_nickname(&a) || a.starts_with('.') || a.ends_with('.') {
            return Err(alias_invalid(&a));
        }
        u.mail_nickname = a;
    }
    if let Some(n) = p.string("Name")? {
        if n.is_empty() || n.chars().count() > 64 {
            return Err(ExoError::Validation(
                "Name must be 1 to 64 characters.".into(),
            ));
        }
        if store.users.values().any(|o| {
            o.id != u.id
                && !o.is_deleted()
                && o.recipient_type_details.is_some()
                && fold(&o.name()) == fold(&n)
        }) {
            return Err(ExoError::NameInUse(n));
        }
        u.exchange_name = Some(n);
    }
    apply_custom_attributes(&p, &mut u)?;
    if u != before {
        store.users.insert(id.clone(), u);
        store.touch(&id);
    }
    Ok(())
}

fn remove_mail_user(store: &mut Store, m: Map<String, Value>) -> Result<(), ExoError> {
    let p = Params::new(m, &["Identity", "PermanentlyDelete"])?;
    let identity = p.required("Identity")?;
    if p.bool("PermanentlyDelete")? == Some(true) {
        // Permanently deleting applies to soft-deleted mail users.
        let id = resolve(store, &identity, &[RecipientKind::MailUser], true)?;
        store
            .purge(&id)
            .map_err(|_| ExoError::NotFound(identity.clone()))?;
        return Ok(());
    }
    let id = resolve(store, &identity, &[RecipientKind::MailUser], false)?;
    store
        .soft_delete(&id)
        .map_err(|_| ExoError::NotFound(identity))
}

#[derive(Clone, Copy, PartialEq)]
enum GetKind {
    MailUser,
    Mailbox,
    Recipient,
    ExoRecipient,
}

/// Properties Get-EXORecipient returns without `-Properties`/`-PropertySets` (its
/// "Minimum" set); others must be asked for, as with the real cmdlet.
const EXO_MINIMUM: &[&str] = &[
    "ExternalDirectoryObjectId",
    "Identity",
    "Alias",
    "EmailAddresses",
    "DisplayName",
    "Name",
    "PrimarySmtpAddress",
    "RecipientType",
    "RecipientTypeDetails",
    "Guid",
    "Id",
];

fn get_recipients(
    store: &mut Store,
    m: Map<String, Value>,
    kind: GetKind,
) -> Result<Output, ExoError> {
    let allowed: &[&str] = match kind {
        GetKind::MailUser => &["Identity", "Filter", "ResultSize", "SoftDeletedMailUser"],
        GetKind::Mailbox => &[
            "Identity",
            "Filter",
            "ResultSize",
            "RecipientTypeDetails",
            "SoftDeletedMailbox",
        ],
        GetKind::Recipient => &["Identity", "Filter", "ResultSize", "RecipientTypeDetails"],
        GetKind::ExoRecipient => &[
            "Identity",
            "Filter",
            "ResultSize",
            "RecipientTypeDetails",
            "Properties",
            "PropertySets",
        ],
    };
    let p = Params::new(m, allowed)?;
    let deleted = p.bool("SoftDeletedMailUser")?.unwrap_or(false)
        || p.bool("SoftDeletedMailbox")?.unwrap_or(false);
    let base_kinds: Vec<RecipientKind> = match kind {
        GetKind::MailUser => vec![RecipientKind::MailUser],
        GetKind::Mailbox => vec![RecipientKind::UserMailbox],
        _ => vec![RecipientKind::MailUser, RecipientKind::UserMailbox],
    };
    let kinds: Vec<RecipientKind> = match p.list("RecipientTypeDetails")? {
        None => base_kinds,
        Some(list) => {
            let mut out = Vec::new();
            for t in list {
                match t.to_ascii_lowercase().as_str() {
                    "mailuser" => out.push(RecipientKind::MailUser),
                    "usermailbox" => out.push(RecipientKind::UserMailbox),
                    // Real types the emulator has no objects of: valid, matching nothing.
                    "mailcontact"
                    | "sharedmailbox"
                    | "roommailbox"
                    | "equipmentmailbox"
                    | "mailuniversaldistributiongroup"
                    | "guestmailuser"
                    | "groupmailbox" => {}
                    _ => {
                        return Err(ExoError::Parameter(format!(
                            "Cannot bind parameter 'RecipientTypeDetails'. Cannot convert value \"{t}\" to type \"Microsoft.Exchange.Data.Directory.Recipient.RecipientTypeDetails\"."
                        )));
                    }
                }
            }
            out.retain(|k| base_kinds.contains(k));
            out
        }
    };
    let filter = match p.string("Filter")? {
        Some(f) => Some(opath::parse(&f).map_err(|e| ExoError::Parameter(e.to_string()))?),
        None => None,
    };
    let limit = p.result_size()?;
    let ids: Vec<String> = match p.string("Identity")? {
        Some(i) => vec![resolve(store, &i, &kinds, deleted)?],
        None => store
            .users
            .values()
            .filter(|u| {
                u.is_deleted() == deleted
                    && u.recipient_type_details.is_some_and(|k| kinds.contains(&k))
            })
            .map(|u| u.id.clone())
            .collect(),
    };
    let extra: Option<Vec<String>> = if kind == GetKind::ExoRecipient {
        let mut e = p.list("Properties")?.unwrap_or_default();
        for set in p.list("PropertySets")?.unwrap_or_default() {
            if set.eq_ignore_ascii_case("All") || set.eq_ignore_ascii_case("Custom") {
                e.extend(CUSTOM_ATTRS.iter().map(|s| s.to_string()));
                e.extend(
                    ["ExternalEmailAddress", "HiddenFromAddressListsEnabled"].map(String::from),
                );
            }
        }
        Some(e)
    } else {
        None
    };
    let mut values = Vec::new();
    for id in ids {
        let view = store.exchange_view(&store.users[&id]);
        if let Some(f) = &filter
            && !opath::eval(f, &view)
        {
            continue;
        }
        let out = match &extra {
            None => view,
            Some(extra) => {
                let mut o = Map::new();
                for k in EXO_MINIMUM
                    .iter()
                    .map(|s| s.to_string())
                    .chain(extra.iter().cloned())
                {
                    if let Some((name, v)) = view.iter().find(|(n, _)| n.eq_ignore_ascii_case(&k)) {
                        o.insert(name.clone(), v.clone());
                    }
                }
                o
            }
        };
        values.push(Value::Object(out));
    }
    let mut warnings = Vec::new();
    if let Some(limit) = limit
        && values.len() > limit
    {
        values.truncate(limit);
        warnings.push("There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter.".to_string());
    }
    Ok(Output { values, warnings })
}

fn accepted_domains(store: &Store, m: Map<String, Value>) -> Result<Output, ExoError> {
    let p = Params::new(m, &["Identity"])?;
    let initial = store.tenant.initial_domain();
    let default = store
        .tenant
        .domains
        .iter()
        .find(|d| d.verified)
        .map(|d| d.name.to_ascii_lowercase())
        .unwrap_or(initial.clone());
    let values: Vec<Value> = store
        .accepted_domains()
        .into_iter()
        .filter(|d| p.get("Identity").and_then(Value::as_str).is_none_or(|i| i.eq_ignore_ascii_case(d)))
        .map(|d| json!({"Name": d, "Identity": d, "DomainName": d, "DomainType": "Authoritative", "Default": d == default, "InitialDomain": d == initial, "SendingFromDomainDisabled": false}))
        .collect();
    if values.is_empty() {
        return Err(ExoError::NotFound(
            p.string("Identity")?.unwrap_or_default(),
        ));
    }
    Ok(Output {
        values,
        warnings: vec![],
    })
}

fn connectors(list: &[Value], m: Map<String, Value>) -> Result<Output, ExoError> {
    let p = Params::new(m, &["Identity"])?;
    let values: Vec<Value> = match p.string("Identity")? {
        None => list.to_vec(),
        Some(i) => {
            let hit: Vec<Value> = list
                .iter()
                .filter(|c| {
                    ["Identity", "Name"].iter().any(|k| {
                        c.get(k)
                            .and_then(Value::as_str)
                            .is_some_and(|n| n.eq_ignore_ascii_case(&i))
                    })
                })
                .cloned()
                .collect();
            if hit.is_empty() {
                return Err(ExoError::NotFound(i));
            }
            hit
        }
    };
    Ok(Output {
        values,
        warnings: vec![],
    })
}
