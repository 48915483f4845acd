//! The cmdlets ldap2exo runs, over the shared [`Store`]. Parameter names are matched
//! case-insensitively like PowerShell; an unknown parameter is refused ("A parameter cannot
//! be found that matches parameter name ..."), so a typo in ldap2exo fails here as it would
//! against Exchange. Hashtables (`@{Add=...;Remove=...}`) arrive as JSON objects tagged
//! `"@odata.type":"#Exchange.GenericHashTable"`.

use super::addresses::{apply_email_addresses, check_address, check_upn, set_primary};
use super::connectors as conn;
use super::opath;
use super::{ExoError, Output, Window};
use crate::propagation::{Hidden, Reader};
use crate::store::{
    Origin, RecipientKind, Store, User, domain_of, strip_smtp, valid_mail_nickname, valid_smtp,
};
use crate::util::fold;
use serde_json::{Map, Value, json};
use std::borrow::Cow;

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
pub(super) struct Params {
    map: Vec<(String, Value)>,
}

impl Params {
    pub(super) fn new(m: Map<String, Value>, allowed: &[&str]) -> Result<Params, ExoError> {
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

    pub(super) fn get(&self, k: &str) -> Option<&Value> {
        self.map.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }

    pub(super) fn has(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    pub(super) fn string(&self, k: &str) -> Result<Option<String>, ExoError> {
        match self.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(ExoError::Parameter(format!(
                "Cannot process argument transformation on parameter '{k}'. Cannot convert value \"{other}\" to type \"System.String\"."
            ))),
        }
    }

    pub(super) fn required(&self, k: &str) -> Result<String, ExoError> {
        self.string(k)?.filter(|s| !s.is_empty()).ok_or_else(|| {
            ExoError::Parameter(format!("Cannot validate argument on parameter '{k}'. The argument is null or empty. Provide an argument that is not null or empty, and then try the command again."))
        })
    }

    pub(super) fn bool(&self, k: &str) -> Result<Option<bool>, ExoError> {
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
    pub(super) fn list(&self, k: &str) -> Result<Option<Vec<String>>, ExoError> {
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

/// Runs `cmdlet`; a listing builds only the views of `window`'s page.
pub fn run(
    store: &mut Store,
    cmdlet: &str,
    params: Map<String, Value>,
    window: Window,
) -> Result<Output, ExoError> {
    let one = |v: Value| Output {
        values: vec![v],
        warnings: vec![],
        total: None,
    };
    let none = || Output {
        values: vec![],
        warnings: vec![],
        total: None,
    };
    let warn = |w: Vec<String>| Output {
        values: vec![],
        warnings: w,
        total: None,
    };
    match cmdlet.to_ascii_lowercase().as_str() {
        "new-mailuser" => new_mail_user(store, params).map(one),
        "set-mailuser" => set_recipient(store, params, RecipientKind::MailUser).map(warn),
        "set-mailbox" => set_recipient(store, params, RecipientKind::UserMailbox).map(warn),
        "set-user" => set_user(store, params).map(warn),
        "get-user" => get_recipients(store, params, GetKind::User, window),
        "remove-mailuser" => remove_mail_user(store, params).map(|_| none()),
        "get-mailuser" => get_recipients(store, params, GetKind::MailUser, window),
        "get-mailbox" => get_recipients(store, params, GetKind::Mailbox, window),
        "get-recipient" => get_recipients(store, params, GetKind::Recipient, window),
        "get-exorecipient" => get_recipients(store, params, GetKind::ExoRecipient, window),
        "get-accepteddomain" => accepted_domains(store, params),
        "get-inboundconnector" => connectors(&store.inbound_connectors, params),
        "get-outboundconnector" => connectors(&store.outbound_connectors, params),
        // Mail-flow connectors (ldap2exo connectors plan|apply|audit): see connectors.rs.
        "new-inboundconnector" => {
            conn::new_connector(store, conn::Direction::Inbound, params).map(one)
        }
        "set-inboundconnector" => {
            conn::set_connector(store, conn::Direction::Inbound, params).map(warn)
        }
        "remove-inboundconnector" => {
            conn::remove_connector(store, conn::Direction::Inbound, params).map(|_| none())
        }
        "new-outboundconnector" => {
            conn::new_connector(store, conn::Direction::Outbound, params).map(one)
        }
        "set-outboundconnector" => {
            conn::set_connector(store, conn::Direction::Outbound, params).map(warn)
        }
        "remove-outboundconnector" => {
            conn::remove_connector(store, conn::Direction::Outbound, params).map(|_| none())
        }
        // IMAP migration (`ldap2exo migrate`): endpoints, batches, migration users.
        "new-migrationendpoint" => super::migration::new_endpoint(store, params).map(one),
        "get-migrationendpoint" => super::migration::get_endpoints(store, params),
        "new-migrationbatch" => super::migration::new_batch(store, params).map(one),
        "get-migrationbatch" => super::migration::get_batches(store, params),
        "get-migrationuser" => super::migration::get_users(store, params),
        "complete-migrationbatch" => {
            super::migration::complete_batch(store, params).map(|_| none())
        }
        _ => Err(ExoError::UnknownCmdlet(cmdlet.to_string())),
    }
}

/// Finds one recipient (or, with `None` in `kinds`, plain user) by any of its identities:
/// Name, Alias, object id, Guid, UPN or any e-mail address, as Exchange sees them now. Objects
/// inside the 404 window after their create are not found.
pub(super) fn resolve(
    store: &Store,
    identity: &str,
    kinds: &[Option<RecipientKind>],
    deleted: bool,
) -> Result<String, ExoError> {
    let id = fold(identity);
    let bare = fold(strip_smtp(identity));
    let answers = |u: &User| {
        u.is_deleted() == deleted
            && kinds.contains(&u.recipient_type_details)
            && (u.name_str().eq_ignore_ascii_case(&id)
                || u.mail_nickname.eq_ignore_ascii_case(&id)
                || u.id == id
                || u.exchange_guid.eq_ignore_ascii_case(&id)
                || u.user_principal_name.eq_ignore_ascii_case(&bare)
                || u.proxy_addresses
                    .iter()
                    .any(|p| strip_smtp(p).eq_ignore_ascii_case(&bare)))
    };
    // Exchange sees an object as it is unless Graph wrote it recently (`render`): the
    // candidates are those the index names for the identity plus every recently written
    // one, not a render of every user per call.
    let mut candidates = store.index.identified_by(&id, &bare);
    candidates.extend(store.users.get_key_value(&id).map(|(k, _)| k));
    candidates.extend(store.log.keys());
    let seen: Vec<std::borrow::Cow<'_, User>> = candidates
        .into_iter()
        .filter_map(|c| store.users.get(c))
        .filter(|u| store.hidden(u, Reader::Exchange) != Some(Hidden::NotPropagated))
        .map(|u| store.render(u, Reader::Exchange))
        .collect();
    let hits: Vec<&User> = seen
        .iter()
        .map(|u| u.as_ref())
        .filter(|u| answers(u))
        .collect();
    debug_assert_eq!(
        hits.iter().map(|u| &u.id).collect::<Vec<_>>(),
        store
            .exchange_users()
            .iter()
            .filter(|u| answers(u))
            .map(|u| &u.id)
            .collect::<Vec<_>>(),
        "the identity index is out of step for {identity}"
    );
    match hits.as_slice() {
        [one] if store.hidden(one, Reader::Exchange) == Some(Hidden::JustCreated) => {
            Err(ExoError::NotFound(identity.to_string()))
        }
        [one] => Ok(one.id.clone()),
        [] => Err(ExoError::NotFound(identity.to_string())),
        _ => Err(ExoError::Ambiguous(identity.to_string())),
    }
}

/// The warning Exchange gives when a `Set-*` changed nothing.
pub(super) fn unchanged_warning(name: &str) -> String {
    format!("The command completed successfully but no settings of '{name}' have been modified.")
}

fn alias_invalid(alias: &str) -> ExoError {
    ExoError::Validation(format!(
        "The alias \"{alias}\" isn't valid. An alias can contain only letters, digits and the characters ! # $ % & ' * + - / = ? ^ _ ` {{ | }} ~ and periods that are not at the beginning or end; it can have at most 64 characters."
    ))
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
    if name_in_use(store, &name, None) {
        return Err(ExoError::NameInUse(name));
    }
    let upn = p.string("MicrosoftOnlineServicesID")?;
    let password = p.string("Password")?;
    if upn.is_some() && password.is_none() {
        return Err(ExoError::Parameter("Parameter set cannot be resolved using the specified named parameters: -MicrosoftOnlineServicesID needs -Password.".into()));
    }
    if store.realism.strict_rules
        && let Some(pw) = &password
        && !crate::graph::users::password_complex(pw)
    {
        return Err(ExoError::Task("The specified password does not comply with password complexity requirements. Please provide a different password.".into()));
    }
    let mut u = User {
        id: store.rng.uuid(),
        mail_nickname: alias.clone(),
        exchange_name: Some(name.clone()),
        ..Default::default()
    };
    // Exchange Online ignores -PrimarySmtpAddress here (documented for on-premises only):
    // the external address is primary when its domain is accepted, else the MOERA address.
    let primary = if store.is_accepted(domain_of(&external)) {
        external.clone()
    } else {
        store.free_moera(&alias, &u.id)
    };
    let upn = match upn {
        Some(upn) => {
            check_upn(store, &upn, None)?;
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
    let id = store.create(u, Origin::Exchange);
    Ok(Value::Object(store.exchange_view(&store.users[&id])))
}

/// Whether a recipient other than `except` (or a group or contact) has this `Name`.
/// Whether a recipient holds `name`. Soft-deleted recipients keep theirs: re-creating a
/// removed user under the same name fails until the deleted one is purged (see README).
fn name_in_use(store: &Store, name: &str, except: Option<&str>) -> bool {
    let holds = |o: &User| {
        Some(o.id.as_str()) != except
            && o.recipient_type_details.is_some()
            && o.name_str().eq_ignore_ascii_case(name)
    };
    let used = store
        .index
        .named(&fold(name))
        .filter_map(|id| store.users.get(id))
        .any(holds);
    debug_assert_eq!(
        used,
        store.users.values().any(holds),
        "the name index is out of step for {name}"
    );
    used || store
        .mail_objects
        .iter()
        .any(|o| o.name.eq_ignore_ascii_case(name))
}

fn set_recipient(
    store: &mut Store,
    m: Map<String, Value>,
    kind: RecipientKind,
) -> Result<Vec<String>, ExoError> {
    let mut allowed = with_custom(&[
        "Identity",
        "EmailAddresses",
        "HiddenFromAddressListsEnabled",
        "DisplayName",
        "Alias",
        "Name",
        "PrimarySmtpAddress",
        "WindowsEmailAddress",
        "MicrosoftOnlineServicesID",
    ]);
    allowed.extend_from_slice(match kind {
        RecipientKind::MailUser => &["ExternalEmailAddress"],
        RecipientKind::UserMailbox => &["ForwardingSmtpAddress", "DeliverToMailboxAndForward"],
    });
    // Set-MailUser.md lists no -FirstName/-LastName (they are Set-User's); the old lenient
    // emulator accepted them, instant mode still does.
    if kind == RecipientKind::MailUser && !store.realism.strict_rules {
        allowed.extend_from_slice(&["FirstName", "LastName"]);
    }
    let p = Params::new(m, &allowed)?;
    let identity = p.required("Identity")?;
    let id = resolve(store, &identity, &[Some(kind)], false)?;
    let before = store.users[&id].clone();
    let mut u = before.clone();
    if let Some(v) = p.get("EmailAddresses") {
        apply_email_addresses(store, &mut u, v, store.realism.strict_rules)?;
    }
    for k in ["PrimarySmtpAddress", "WindowsEmailAddress"] {
        if let Some(ps) = p.string(k)? {
            set_primary(store, &mut u, &ps)?;
        }
    }
    if let Some(upn) = p.string("MicrosoftOnlineServicesID")?
        && fold(&upn) != fold(&u.user_principal_name)
    {
        check_upn(store, &upn, Some(&u.id))?;
        u.user_principal_name = upn;
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
        if fold(&n) != fold(&u.name()) && name_in_use(store, &n, Some(&u.id)) {
            return Err(ExoError::NameInUse(n));
        }
        u.exchange_name = Some(n);
    }
    apply_custom_attributes(&p, &mut u)?;
    Ok(finish_set(store, u, &before))
}

/// Commits a `Set-*` result as an Exchange write, or answers the "nothing modified" warning.
fn finish_set(store: &mut Store, u: User, before: &User) -> Vec<String> {
    if u == *before {
        return vec![unchanged_warning(&before.name())];
    }
    store.commit(u, Origin::Exchange);
    vec![]
}

/// `Set-User`: the address-book fields of any user (recipient or not).
fn set_user(store: &mut Store, m: Map<String, Value>) -> Result<Vec<String>, ExoError> {
    let p = Params::new(
        m,
        &[
            "Identity",
            "DisplayName",
            "FirstName",
            "LastName",
            "Department",
            "Title",
            "Office",
            "Phone",
            "MobilePhone",
            "Company",
        ],
    )?;
    let identity = p.required("Identity")?;
    let kinds = [
        None,
        Some(RecipientKind::MailUser),
        Some(RecipientKind::UserMailbox),
    ];
    let id = resolve(store, &identity, &kinds, false)?;
    let before = store.users[&id].clone();
    let mut u = before.clone();
    let field = |k: &str, max: usize| -> Result<Option<Option<String>>, ExoError> {
        if !p.has(k) {
            return Ok(None);
        }
        let v = p.string(k)?.filter(|s| !s.is_empty());
        if v.as_ref().is_some_and(|s| s.chars().count() > max) {
            return Err(ExoError::Validation(format!(
                "The length of the property is too long. The maximum length is {max}. Property: {k}"
            )));
        }
        Ok(Some(v))
    };
    if let Some(d) = field("DisplayName", 256)? {
        u.display_name = Some(d.ok_or_else(|| {
            ExoError::Validation("DisplayName must be 1 to 256 characters.".into())
        })?);
    }
    for (k, max, slot) in [
        ("FirstName", 64, &mut u.given_name),
        ("LastName", 64, &mut u.surname),
        ("Department", 64, &mut u.department),
        ("Title", 128, &mut u.job_title),
        ("Office", 128, &mut u.office_location),
        ("MobilePhone", 64, &mut u.mobile_phone),
        ("Company", 64, &mut u.company_name),
    ] {
        if let Some(v) = field(k, max)? {
            *slot = v;
        }
    }
    if let Some(v) = field("Phone", 64)? {
        u.business_phones = v.into_iter().collect();
    }
    Ok(finish_set(store, u, &before))
}

fn remove_mail_user(store: &mut Store, m: Map<String, Value>) -> Result<(), ExoError> {
    let p = Params::new(m, &["Identity", "PermanentlyDelete"])?;
    let identity = p.required("Identity")?;
    if p.bool("PermanentlyDelete")? == Some(true) {
        // Permanently deleting applies to soft-deleted mail users.
        let id = resolve(store, &identity, &[Some(RecipientKind::MailUser)], true)?;
        store
            .purge(&id)
            .map_err(|_| ExoError::NotFound(identity.clone()))?;
        return Ok(());
    }
    let id = resolve(store, &identity, &[Some(RecipientKind::MailUser)], false)?;
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
    User,
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

/// `RecipientTypeDetails` values the emulator has objects of.
const MODELLED_TYPES: &[&str] = &[
    "User",
    "MailUser",
    "UserMailbox",
    "MailContact",
    "MailUniversalDistributionGroup",
];

/// Real `RecipientTypeDetails` values the emulator has no objects of: valid, matching nothing.
const UNMODELLED_TYPES: &[&str] = &[
    "SharedMailbox",
    "RoomMailbox",
    "EquipmentMailbox",
    "GuestMailUser",
    "GroupMailbox",
    "MailUniversalSecurityGroup",
    "DynamicDistributionGroup",
    "PublicFolder",
];

fn allowed_params(kind: GetKind) -> &'static [&'static str] {
    match kind {
        GetKind::MailUser => &["Identity", "Filter", "ResultSize", "SoftDeletedMailUser"],
        GetKind::Mailbox => &[
            "Identity",
            "Filter",
            "ResultSize",
            "RecipientTypeDetails",
            "SoftDeletedMailbox",
        ],
        GetKind::Recipient | GetKind::User => {
            &["Identity", "Filter", "ResultSize", "RecipientTypeDetails"]
        }
        GetKind::ExoRecipient => &[
            "Identity",
            "Filter",
            "ResultSize",
            "RecipientTypeDetails",
            "Properties",
            "PropertySets",
        ],
    }
}

/// The type names a cmdlet may return, narrowed by `-RecipientTypeDetails`.
fn wanted_types(kind: GetKind, p: &Params) -> Result<Vec<&'static str>, ExoError> {
    let base: &[&'static str] = match kind {
        GetKind::MailUser => &["MailUser"],
        GetKind::Mailbox => &["UserMailbox"],
        GetKind::User => &["User", "MailUser", "UserMailbox"],
        _ => &[
            "MailUser",
            "UserMailbox",
            "MailContact",
            "MailUniversalDistributionGroup",
        ],
    };
    let Some(list) = p.list("RecipientTypeDetails")? else {
        return Ok(base.to_vec());
    };
    let mut out = Vec::new();
    for t in list {
        if let Some(m) = MODELLED_TYPES.iter().find(|m| m.eq_ignore_ascii_case(&t)) {
            out.push(*m);
        } else if !UNMODELLED_TYPES.iter().any(|m| m.eq_ignore_ascii_case(&t)) {
            return Err(ExoError::Parameter(format!(
                "Cannot bind parameter 'RecipientTypeDetails'. Cannot convert value \"{t}\" to type \"Microsoft.Exchange.Data.Directory.Recipient.RecipientTypeDetails\"."
            )));
        }
    }
    out.retain(|k| base.contains(k));
    Ok(out)
}

fn user_type(u: &User) -> &'static str {
    u.recipient_type_details
        .map(|k| k.as_str())
        .unwrap_or("User")
}

/// Whether a view answers to `identity` (Name, Alias, ids, UPN or any address).
fn view_matches(v: &Map<String, Value>, identity: &str) -> bool {
    let id = fold(identity);
    let bare = fold(strip_smtp(identity));
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(fold)
            .unwrap_or_default()
    };
    ["Name", "Alias", "ExternalDirectoryObjectId", "Guid"]
        .iter()
        .any(|k| s(k) == id)
        || s("UserPrincipalName") == bare
        || v.get("EmailAddresses")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .any(|p| fold(strip_smtp(p)) == bare)
            })
}

/// One object a Get-* cmdlet may list: a user whose view is built only when it is output
/// (a listing of 100,000 users built every view on every page), or a view built already.
enum Candidate<'a> {
    /// Boxed: an owned (re-rendered) user is large, and most are borrowed.
    User(Box<Cow<'a, User>>),
    View(Map<String, Value>),
}

/// What a Get-* cmdlet lists (before `-Filter`), as Exchange sees them now. Users changed
/// before `changed_since` (Unix seconds, as the view shows them) cannot match the filter and
/// are left out.
fn candidates<'a>(
    store: &'a Store,
    p: &Params,
    types: &[&str],
    deleted: bool,
    changed_since: Option<i64>,
) -> Result<Vec<Candidate<'a>>, ExoError> {
    let identity = p.string("Identity")?;
    let kinds: Vec<Option<RecipientKind>> = [
        None,
        Some(RecipientKind::MailUser),
        Some(RecipientKind::UserMailbox),
    ]
    .into_iter()
    .filter(|k| types.contains(&k.map(|k| k.as_str()).unwrap_or("User")))
    .collect();
    let mut out = Vec::new();
    if let Some(i) = &identity {
        match resolve(store, i, &kinds, deleted) {
            Ok(id) => {
                let u = store.render(&store.users[&id], Reader::Exchange);
                return Ok(vec![Candidate::View(store.exchange_view(&u))]);
            }
            Err(ExoError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    } else {
        let recent = |u: &User| {
            changed_since.is_none_or(|t| (store.exchange_changed_ms(u) / 1000) as i64 >= t)
        };
        for u in store.exchange_users() {
            if u.is_deleted() == deleted && types.contains(&user_type(&u)) && recent(&u) {
                out.push(Candidate::User(Box::new(u)));
            }
        }
    }
    if !deleted {
        for o in &store.mail_objects {
            if types.contains(&o.kind.type_names().0) {
                let v = store.mail_object_view(o);
                if identity.as_ref().is_none_or(|i| view_matches(&v, i)) {
                    out.push(Candidate::View(v));
                }
            }
        }
    }
    match (&identity, out.len()) {
        (Some(i), 0) => Err(ExoError::NotFound(i.clone())),
        (Some(i), n) if n > 1 => Err(ExoError::Ambiguous(i.clone())),
        _ => Ok(out),
    }
}

/// `-Properties` / `-PropertySets` of Get-EXORecipient: the extra properties to return.
fn exo_extra(p: &Params) -> Result<Vec<String>, ExoError> {
    let mut e = p.list("Properties")?.unwrap_or_default();
    for set in p.list("PropertySets")?.unwrap_or_default() {
        if set.eq_ignore_ascii_case("All") || set.eq_ignore_ascii_case("Custom") {
            e.extend(CUSTOM_ATTRS.iter().map(|s| s.to_string()));
            e.extend(["ExternalEmailAddress", "HiddenFromAddressListsEnabled"].map(String::from));
        }
    }
    Ok(e)
}

/// A listed object's view as the cmdlet shows it (before `-Properties` projection).
fn cmdlet_view(store: &Store, c: Candidate, kind: GetKind) -> Map<String, Value> {
    let mut view = match c {
        Candidate::User(u) => store.exchange_view(&u),
        Candidate::View(v) => v,
    };
    if kind != GetKind::Mailbox {
        // Mailbox properties: Get-Mailbox shows them, Get-Recipient and Get-User do not
        // (every published script reads the forwarding from Get-Mailbox).
        view.remove("ForwardingSmtpAddress");
        view.remove("DeliverToMailboxAndForward");
    }
    view
}

/// `view` with only the properties Get-EXORecipient returns (`extra` `None`: all of them).
fn project_exo(view: Map<String, Value>, extra: Option<&[String]>) -> Value {
    let Some(extra) = extra else {
        return Value::Object(view);
    };
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
    Value::Object(o)
}

fn get_recipients(
    store: &mut Store,
    m: Map<String, Value>,
    kind: GetKind,
    window: Window,
) -> Result<Output, ExoError> {
    let p = Params::new(m, allowed_params(kind))?;
    let deleted = p.bool("SoftDeletedMailUser")?.unwrap_or(false)
        || p.bool("SoftDeletedMailbox")?.unwrap_or(false);
    let types = wanted_types(kind, &p)?;
    let filter = match p.string("Filter")? {
        Some(f) => Some(opath::parse(&f).map_err(|e| ExoError::Parameter(e.to_string()))?),
        None => None,
    };
    let limit = p.result_size()?;
    let extra = if kind == GetKind::ExoRecipient {
        Some(exo_extra(&p)?)
    } else {
        None
    };
    let store: &Store = store;
    let since = filter.as_ref().and_then(opath::changed_since);
    // A user the change-time bound let through matches a filter that is only that bound:
    // its view need not be built to know it is listed.
    let decided = filter.as_ref().is_none_or(opath::only_change_time);
    let mut listed = Vec::new();
    for c in candidates(store, &p, &types, deleted, since)? {
        let c = match (c, &filter) {
            (Candidate::User(u), _) if decided => Candidate::User(u),
            (c, Some(f)) => {
                let view = cmdlet_view(store, c, kind);
                if !opath::eval(f, &view) {
                    continue;
                }
                Candidate::View(view)
            }
            (c, None) => c,
        };
        listed.push(c);
    }
    let mut warnings = Vec::new();
    if let Some(limit) = limit
        && listed.len() > limit
    {
        listed.truncate(limit);
        warnings.push("There are more results available than are currently displayed. To view them, increase the value for the ResultSize parameter.".to_string());
    }
    let total = listed.len();
    let values = listed
        .into_iter()
        .skip(window.offset)
        .take(window.size)
        .map(|c| project_exo(cmdlet_view(store, c, kind), extra.as_deref()))
        .collect();
    Ok(Output {
        values,
        warnings,
        total: Some(total),
    })
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
        .map(|d| json!({"Name": d, "Identity": d, "DomainName": d, "DomainType": store.domain_type(&d).as_str(), "Default": d == default, "InitialDomain": d == initial, "SendingFromDomainDisabled": false}))
        .collect();
    if values.is_empty() {
        return Err(ExoError::NotFound(
            p.string("Identity")?.unwrap_or_default(),
        ));
    }
    Ok(Output {
        values,
        warnings: vec![],
        total: None,
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
        total: None,
    })
}
