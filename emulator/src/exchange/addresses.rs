//! `-EmailAddresses`, `-WindowsEmailAddress` and `-MicrosoftOnlineServicesID`: the address
//! rules of Set-MailUser / Set-Mailbox.
//!
//! Strict rules (documented as best guesses in the README):
//! - A hashtable `Add` of an upper-case `SMTP:new` while the recipient has another primary is
//!   refused unless the same call demotes the old primary (`Remove` holds `SMTP:old`/`smtp:old`,
//!   or `Add` holds `smtp:old`); with the demotion, `new` becomes primary.
//! - A full list (array) replaces every address as given and must hold exactly one `SMTP:`.
//! - Adding an address the recipient already has changes nothing (the cmdlet then only warns
//!   that nothing was modified).
//!
//! In instant mode the old lenient rules apply: an added `SMTP:` demotes the old primary by
//! itself, and a list without `SMTP:` makes its first address primary.

use super::ExoError;
use crate::store::{Store, User, domain_of, strip_smtp, valid_smtp};
use crate::util::fold;
use serde_json::{Map, Value};

const MULTIPLE_PRIMARIES: &str = "There are multiple primary SMTP addresses. Please ensure there is only one primary address for each address type.";

/// An address must be well formed, on an accepted domain and not used by anyone else.
pub fn check_address(
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
    if store.address_taken(bare, owner) {
        return Err(ExoError::ProxyInUse(
            shown.to_string(),
            holder(store, bare, owner),
        ));
    }
    Ok(())
}

/// Who holds `bare`, as Exchange's refusal names it.
fn holder(store: &Store, bare: &str, owner: Option<&str>) -> String {
    let name = store
        .address_owner(bare, owner)
        .map(|u| u.name())
        .or_else(|| {
            let a = fold(bare);
            store
                .mail_objects
                .iter()
                .find(|o| o.proxy_addresses.iter().any(|p| fold(strip_smtp(p)) == a))
                .map(|o| o.name.clone())
        })
        .or_else(|| {
            // Released a moment ago: still reserved for the recipient that gave it up.
            let (by, _) = store.released.get(&fold(bare))?;
            store.users.get(&fold(by)).map(|u| u.name())
        })
        .unwrap_or_default();
    format!(
        "EMUPR01MB0001.prod.outlook.com/Microsoft Exchange Hosted Organizations/{}/{name}",
        store.tenant.initial_domain()
    )
}

/// A UPN (`-MicrosoftOnlineServicesID`) must be well formed, on an accepted domain and unique.
pub fn check_upn(store: &Store, upn: &str, owner: Option<&str>) -> Result<(), ExoError> {
    if !valid_smtp(upn) {
        return Err(ExoError::Validation(format!(
            "The value \"{upn}\" of property MicrosoftOnlineServicesID isn't a valid user principal name."
        )));
    }
    if !store.is_accepted(domain_of(upn)) {
        return Err(ExoError::Task(format!(
            "You can't use the domain {} because it's not an accepted domain for your organization.",
            domain_of(upn)
        )));
    }
    if store.upn_owner(upn, owner).is_some() || store.address_taken(upn, owner) {
        return Err(ExoError::ProxyInUse(
            format!("SMTP:{upn}"),
            holder(store, upn, owner),
        ));
    }
    Ok(())
}

/// `(is_smtp, is_primary, address)`: no prefix or `smtp:`/`SMTP:` keep their case meaning;
/// other types (`X500:`, `SIP:`) are kept as they are.
pub fn split_proxy(p: &str) -> (bool, bool, String) {
    match p.split_once(':') {
        Some(("SMTP", a)) => (true, true, a.to_string()),
        Some((t, a)) if t.eq_ignore_ascii_case("smtp") => (true, false, a.to_string()),
        Some(_) if !p.contains('@') || p.find(':') < p.find('@') => (false, false, p.to_string()),
        _ => (true, false, p.to_string()),
    }
}

fn same_smtp(p: &str, bare: &str) -> bool {
    let (smtp, _, a) = split_proxy(p);
    smtp && fold(&a) == fold(bare)
}

fn as_list(x: Option<&Value>) -> Result<Vec<String>, ExoError> {
    let bad = || ExoError::Parameter("EmailAddresses: strings expected.".into());
    match x {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        Some(_) => Err(bad()),
    }
}

/// Adds one proxy address to `addrs` (an `SMTP:` demotes the current primary); an address
/// already there only changes case meaning when promoted or demoted in the same call.
fn add_one(addrs: &mut Vec<String>, p: &str, demote_allowed: bool) {
    let (smtp, primary, a) = split_proxy(p);
    if !smtp {
        if !addrs.iter().any(|x| x.eq_ignore_ascii_case(p)) {
            addrs.push(p.to_string());
        }
        return;
    }
    if primary {
        for x in addrs.iter_mut() {
            if let Some(old) = x.strip_prefix("SMTP:") {
                *x = format!("smtp:{old}");
            }
        }
    }
    let shown = format!("{}:{a}", if primary { "SMTP" } else { "smtp" });
    match addrs.iter().position(|x| same_smtp(x, &a)) {
        Some(i) if primary || demote_allowed => addrs[i] = shown,
        Some(_) => {}
        None => addrs.push(shown),
    }
}

/// Applies `-EmailAddresses` (a whole list, or an Add/Remove hashtable) to `u`.
pub fn apply_email_addresses(
    store: &Store,
    u: &mut User,
    v: &Value,
    strict: bool,
) -> Result<(), ExoError> {
    let before = u.proxy_addresses.clone();
    let addrs = match v {
        Value::Object(h) => apply_hashtable(&before, h, strict)?,
        other => apply_list(&as_list(Some(other))?, strict)?,
    };
    for p in &addrs {
        let (smtp, _, a) = split_proxy(p);
        if smtp && !before.iter().any(|b| same_smtp(b, &a)) {
            check_address(store, p, &a, Some(&u.id))?;
        }
    }
    if !addrs.iter().any(|a| a.starts_with("SMTP:")) {
        return Err(ExoError::Validation(
            "The e-mail address list must contain a primary SMTP address.".into(),
        ));
    }
    u.proxy_addresses = addrs;
    Ok(())
}

fn apply_hashtable(
    before: &[String],
    h: &Map<String, Value>,
    strict: bool,
) -> Result<Vec<String>, ExoError> {
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
    let removes = as_list(get("Remove"))?;
    let adds = as_list(get("Add"))?;
    let new_primaries: Vec<String> = adds
        .iter()
        .map(|p| split_proxy(p))
        .filter(|(_, primary, _)| *primary)
        .map(|(_, _, a)| a)
        .collect();
    if new_primaries.len() > 1 {
        return Err(ExoError::Validation(MULTIPLE_PRIMARIES.into()));
    }
    let old_primary = before
        .iter()
        .find_map(|p| p.strip_prefix("SMTP:").map(str::to_string));
    let changes_primary = matches!((new_primaries.first(), &old_primary),
        (Some(n), Some(o)) if fold(n) != fold(o));
    if strict && changes_primary {
        let old = old_primary.clone().unwrap_or_default();
        let demoted = removes.iter().any(|r| same_smtp(r, &old))
            || adds.iter().any(|p| same_smtp(p, &old) && !split_proxy(p).1);
        if !demoted {
            return Err(ExoError::Validation(MULTIPLE_PRIMARIES.into()));
        }
    }
    let mut addrs = before.to_vec();
    for r in &removes {
        let (smtp, _, a) = split_proxy(r);
        let pos = addrs.iter().position(|x| {
            if smtp {
                same_smtp(x, &a)
            } else {
                x.eq_ignore_ascii_case(r)
            }
        });
        if let Some(i) = pos {
            if addrs[i].starts_with("SMTP:") && !changes_primary {
                return Err(ExoError::Validation(format!(
                    "The primary SMTP address \"{}\" can't be removed. Make another address primary first.",
                    addrs[i]
                )));
            }
            addrs.remove(i);
        }
    }
    for a in &adds {
        add_one(&mut addrs, a, changes_primary);
    }
    Ok(addrs)
}

fn apply_list(list: &[String], strict: bool) -> Result<Vec<String>, ExoError> {
    let primaries = list.iter().filter(|p| split_proxy(p).1).count();
    if primaries > 1 {
        return Err(ExoError::Validation(MULTIPLE_PRIMARIES.into()));
    }
    if strict && primaries == 0 {
        return Err(ExoError::Validation(
            "The e-mail address list must contain a primary SMTP address.".into(),
        ));
    }
    let mut addrs = Vec::new();
    for (i, p) in list.iter().enumerate() {
        // Instant mode: without any `SMTP:` the first address becomes primary.
        let p = if primaries == 0 && i == 0 && split_proxy(p).0 {
            format!("SMTP:{}", split_proxy(p).2)
        } else {
            p.clone()
        };
        add_one(&mut addrs, &p, false);
    }
    Ok(addrs)
}

/// `-WindowsEmailAddress` (and `-PrimarySmtpAddress`): the address becomes the primary SMTP
/// address; the old primary stays as a secondary `smtp:`.
pub fn set_primary(store: &Store, u: &mut User, addr: &str) -> Result<(), ExoError> {
    let bare = strip_smtp(addr).to_string();
    if !u.proxy_addresses.iter().any(|p| same_smtp(p, &bare)) {
        check_address(store, &format!("SMTP:{bare}"), &bare, Some(&u.id))?;
    }
    add_one(&mut u.proxy_addresses, &format!("SMTP:{bare}"), true);
    Ok(())
}
