//! The GAL audit: per mapped LDAP person, what the tenant lacks or gets wrong, and the
//! completeness ratio. Pure: inputs are the desired recipients and the tenant inventory.
//!
//! A person "should be" in the GAL when LDAP maps them (not quarantined, not disabled) and
//! `ldap.rules.hidden_filter` does not hide them; they are "resolvable" when a recipient the
//! address lists show owns their primary SMTP address as any of its SMTP proxy addresses
//! (chosen: Exchange routes and resolves a recipient by every proxy address it holds, not
//! only by the primary, so an object that holds the address as an alias still resolves).

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use crate::desired::{Desired, Kind, Quarantined, Recipient};
use crate::ids::Anchor;
use crate::inventory::{Inventory, TenantObject};
use crate::plan::Field;

/// What is wrong, as a stable snake_case code (JSON and CSV carry it; scripts match on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// No Exchange recipient carries the person's anchor.
    MissingFromTenant,
    /// `HiddenFromAddressListsEnabled` is true although LDAP does not hide the person.
    HiddenInGal,
    /// The recipient's primary SMTP address is not the LDAP mail.
    PrimaryAddressWrong,
    /// An LDAP alias (or a mailbox's forward target) is not among the recipient's addresses.
    AddressMissing,
    /// A MailUser's `ExternalEmailAddress` is not the on-prem routing address.
    ExternalAddressWrong,
    /// The person's EXO mailbox does not own the address LDAP forwards to: bounce or loop.
    ForwardTargetNotOwned,
    /// LDAP forwards into the tenant while the tenant holds a MailUser routed back on-prem.
    ForwardLoop,
    /// A stamped object, still in the GAL, whose LDAP person is gone.
    ManagedObjectWithoutPerson,
    /// An address of the person belongs to an object ldap2exo does not manage.
    AddressHeldByUnmanaged,
    /// A person who must stay a MailUser carries an Exchange Online plan.
    MailUserLicensed,
}

impl Code {
    /// Every code, in the order findings of one person are listed.
    pub const ALL: [Code; 10] = [
        Code::MissingFromTenant,
        Code::HiddenInGal,
        Code::PrimaryAddressWrong,
        Code::AddressMissing,
        Code::ExternalAddressWrong,
        Code::ForwardTargetNotOwned,
        Code::ForwardLoop,
        Code::ManagedObjectWithoutPerson,
        Code::AddressHeldByUnmanaged,
        Code::MailUserLicensed,
    ];

    /// The snake_case code JSON and CSV carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::MissingFromTenant => "missing_from_tenant",
            Code::HiddenInGal => "hidden_in_gal",
            Code::PrimaryAddressWrong => "primary_address_wrong",
            Code::AddressMissing => "address_missing",
            Code::ExternalAddressWrong => "external_address_wrong",
            Code::ForwardTargetNotOwned => "forward_target_not_owned",
            Code::ForwardLoop => "forward_loop",
            Code::ManagedObjectWithoutPerson => "managed_object_without_person",
            Code::AddressHeldByUnmanaged => "address_held_by_unmanaged",
            Code::MailUserLicensed => "mail_user_licensed",
        }
    }
}

/// One thing wrong about one person (or one stamped object whose person is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: Code,
    /// The LDAP uid; for [`Code::ManagedObjectWithoutPerson`], the object's Exchange `Alias`
    /// (ldap2exo sets it from the uid) or its UPN.
    pub uid: String,
    pub anchor: Anchor,
    /// The Exchange property at fault (`PrimarySmtpAddress`, `EmailAddresses`,
    /// `ExternalEmailAddress`, `HiddenFromAddressListsEnabled`, `RecipientTypeDetails`), or
    /// Graph's `assignedPlans`.
    pub field: String,
    /// What LDAP says the value must be (an address, `false`, …), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What the tenant shows instead, when it shows anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// The object that holds the address instead (`Name (RecipientTypeDetails)` or the UPN).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// One sentence naming the person, the address or field, and what is wrong.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// The completeness of the GAL and the counts behind the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// People LDAP maps to a recipient (quarantined and disabled entries not counted).
    pub people: usize,
    /// Of these, the people that are not hidden by `hidden_filter`: who should be in the GAL.
    pub should_be: usize,
    /// Of those, the people a visible recipient resolves by their primary address.
    pub resolvable: usize,
    /// `resolvable / should_be`, from 0 to 1; 1 when nobody should be in the GAL.
    pub ratio: f64,
    pub findings: usize,
    pub quarantined: usize,
    /// Entries matching `disabled_filter`: leaving, so not expected in the GAL.
    pub disabled: usize,
    /// People migrating by IMAP (`migrate start`, before cutover): audited as the mailboxes
    /// forwarding to on-prem that they are meanwhile.
    pub migrating: usize,
}

impl Summary {
    /// `GAL completeness: 11/12 people (91.7 %)`.
    pub fn line(&self) -> String {
        format!(
            "GAL completeness: {}/{} people ({:.1} %)",
            self.resolvable,
            self.should_be,
            self.ratio * 100.0
        )
    }
}

/// The audit's outcome: the findings, sorted by uid then code, the LDAP entries quarantined
/// (bad input, not a fault of the tenant), and the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GalAudit {
    pub summary: Summary,
    pub findings: Vec<Finding>,
    pub quarantined: Vec<Quarantined>,
    /// `--only` uids no LDAP entry carries: nobody was audited for them.
    pub not_in_ldap: Vec<String>,
}

/// Audits the GAL. `full` says the whole directory was read (no `--only`): only then can a
/// stamped object be known to have lost its person.
pub fn audit_gal(desired: &Desired, inventory: &Inventory, full: bool) -> GalAudit {
    let mut findings = Vec::new();
    let tenant = Tenant::of(inventory);
    for r in &desired.recipients {
        person(&mut findings, r, &tenant);
    }
    if full {
        orphans(&mut findings, desired, inventory);
    }
    findings.sort_by(|a, b| (&a.uid, a.code, &a.expected).cmp(&(&b.uid, b.code, &b.expected)));
    let should: Vec<&Recipient> = desired.recipients.iter().filter(|r| !r.hidden).collect();
    let resolvable = should
        .iter()
        .filter(|r| inventory.visible_addresses.contains(r.primary.as_str()))
        .count();
    let ratio = match should.len() {
        0 => 1.0,
        n => resolvable as f64 / n as f64,
    };
    GalAudit {
        summary: Summary {
            people: desired.recipients.len(),
            should_be: should.len(),
            resolvable,
            ratio,
            findings: findings.len(),
            quarantined: desired.quarantined.len(),
            disabled: desired.disabled.len(),
            migrating: desired
                .recipients
                .iter()
                .filter(|r| r.forwarding.is_some())
                .count(),
        },
        findings,
        quarantined: desired.quarantined.clone(),
        not_in_ldap: desired
            .warnings
            .iter()
            .filter(|w| w.field == "only")
            .filter_map(|w| w.uid.clone())
            .collect(),
    }
}

const SYNC: &str = "run `ldap2exo sync`";

/// The inventory with an index of the managed objects' addresses, built once: looking up
/// who holds a forward target must not scan every object for every finding.
struct Tenant<'i> {
    inv: &'i Inventory,
    /// Every SMTP address of a managed object (lower case) → that object.
    managed_by_address: HashMap<String, &'i TenantObject>,
}

impl<'i> Tenant<'i> {
    fn of(inv: &'i Inventory) -> Self {
        let mut managed_by_address = HashMap::new();
        for o in inv.managed.values() {
            for a in held(o) {
                managed_by_address.insert(a, o);
            }
        }
        Tenant {
            inv,
            managed_by_address,
        }
    }

    /// The unmanaged object holding `address`, described with its type. The inventory
    /// describes a recipient as `Name (RecipientTypeDetails)` or `UPN (type "Name")`, and an
    /// Entra user that Exchange does not show by its UPN alone: that one gets its type here.
    fn unmanaged_holder(&self, address: &str) -> Option<String> {
        let h = self.inv.foreign.get(address)?;
        Some(match h.contains('(') {
            true => h.clone(),
            false => format!("{h} (Entra user without an Exchange recipient)"),
        })
    }
}

/// A finding about `r` without the optional parts.
fn finding(code: Code, r: &Recipient, field: &str, message: String, fix: String) -> Finding {
    Finding {
        code,
        uid: r.uid.clone(),
        anchor: r.anchor.clone(),
        field: field.to_owned(),
        expected: None,
        found: None,
        holder: None,
        message,
        fix,
    }
}

/// Every finding about one mapped person.
fn person(out: &mut Vec<Finding>, r: &Recipient, t: &Tenant) {
    let inv = t.inv;
    held_elsewhere(out, r, t);
    let Some(o) = inv.managed.get(&r.anchor).filter(|o| o.in_exchange) else {
        out.push(missing(r, inv));
        return;
    };
    if !r.hidden && o.fields.get(Field::HiddenFromAddressLists.as_str()) == Some(&Value::Bool(true))
    {
        let mut f = finding(
            Code::HiddenInGal,
            r,
            "HiddenFromAddressListsEnabled",
            format!(
                "{}: the recipient {} is hidden from the address lists (HiddenFromAddressListsEnabled), though LDAP does not hide the person",
                r.uid, r.primary
            ),
            format!("{SYNC}: it sets HiddenFromAddressListsEnabled to false"),
        );
        f.expected = Some("false".into());
        f.found = Some("true".into());
        out.push(f);
    }
    addresses(out, r, o, inv);
    match r.kind {
        Kind::Mailbox => forward(out, r, o, t),
        Kind::MailUser => mail_user(out, r, o),
    }
}

/// [`Code::MissingFromTenant`], saying why when the inventory knows.
fn missing(r: &Recipient, inv: &Inventory) -> Finding {
    let why = if let Some(ids) = inv.duplicates.get(&r.anchor) {
        format!(
            "; its anchor is stamped on {} objects ({}), so none counts as the person's",
            ids.len(),
            ids.join(", ")
        )
    } else if inv.own_deleted.contains_key(&r.anchor) {
        "; its MailUser is in the recycle bin (soft-deleted)".to_owned()
    } else if inv.managed.contains_key(&r.anchor) {
        "; Entra shows the user, Exchange no recipient yet (a mailbox being provisioned)".to_owned()
    } else {
        String::new()
    };
    let mut f = finding(
        Code::MissingFromTenant,
        r,
        "RecipientTypeDetails",
        format!(
            "{}: no recipient in the tenant for {} ({}){why}",
            r.uid,
            r.primary,
            r.kind.as_str()
        ),
        format!(
            "{SYNC} (or `ldap2exo sync --only {}`); its report names what stops the create",
            r.uid
        ),
    );
    f.expected = Some(r.primary.to_string());
    f
}

/// Every SMTP address the object holds, lower case.
fn held(o: &TenantObject) -> BTreeSet<String> {
    let mut all: BTreeSet<String> = o
        .fields
        .get(Field::EmailAddresses.as_str())
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_ascii_lowercase)
        .collect();
    if let Some(p) = field_text(o, Field::PrimarySmtpAddress) {
        all.insert(p);
    }
    all
}

fn field_text(o: &TenantObject, f: Field) -> Option<String> {
    o.fields
        .get(f.as_str())
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
}

/// The person's own addresses: each one held by an unmanaged object.
fn held_elsewhere(out: &mut Vec<Finding>, r: &Recipient, t: &Tenant) {
    for a in std::iter::once(&r.primary).chain(&r.secondary) {
        let Some(holder) = t.unmanaged_holder(a.as_str()) else {
            continue;
        };
        let mut f = finding(
            Code::AddressHeldByUnmanaged,
            r,
            "EmailAddresses",
            format!(
                "{}: the address {a} is held by {holder}, which ldap2exo does not manage",
                r.uid
            ),
            format!(
                "remove {a} from {holder} (or, if it is this person's object, set the stamp `ldap2exo:{}` in its stamp attribute (tenant.anchor_attribute; Exchange's CustomAttributeN) so that sync adopts it), then {SYNC}",
                r.anchor
            ),
        );
        f.expected = Some(a.to_string());
        f.holder = Some(holder);
        out.push(f);
    }
}

/// The primary and the aliases. An address an unmanaged object holds is reported there
/// (its fix comes first); a mailbox's forward target is checked by [`forward`].
fn addresses(out: &mut Vec<Finding>, r: &Recipient, o: &TenantObject, inv: &Inventory) {
    let taken = |a: &str| inv.foreign.contains_key(a);
    if !o.unknown.contains(&Field::PrimarySmtpAddress) && !taken(r.primary.as_str()) {
        let primary = field_text(o, Field::PrimarySmtpAddress);
        if primary.as_deref() != Some(r.primary.as_str()) {
            let shown = primary.clone().unwrap_or_else(|| "none".into());
            let mut f = finding(
                Code::PrimaryAddressWrong,
                r,
                "PrimarySmtpAddress",
                format!(
                    "{}: the primary address is {shown} in the tenant, LDAP says {} (PrimarySmtpAddress)",
                    r.uid, r.primary
                ),
                format!("{SYNC}: it sets the primary address"),
            );
            f.expected = Some(r.primary.to_string());
            f.found = primary;
            out.push(f);
        }
    }
    if o.unknown.contains(&Field::EmailAddresses) {
        return;
    }
    let has = held(o);
    let forward = (r.kind == Kind::Mailbox)
        .then_some(r.forward.as_ref())
        .flatten();
    for a in &r.secondary {
        if has.contains(a.as_str()) || taken(a.as_str()) || Some(a) == forward {
            continue;
        }
        let mut f = finding(
            Code::AddressMissing,
            r,
            "EmailAddresses",
            format!(
                "{}: the alias {a} is not among the recipient's addresses (EmailAddresses)",
                r.uid
            ),
            format!("{SYNC}: it adds the address"),
        );
        f.expected = Some(a.to_string());
        out.push(f);
    }
}

/// Who else owns `address`: an unmanaged object, or another person's managed object.
fn owner_of(address: &str, me: &Anchor, t: &Tenant) -> Option<String> {
    if let Some(h) = t.unmanaged_holder(address) {
        return Some(h);
    }
    t.managed_by_address
        .get(address)
        .filter(|o| &o.anchor != me)
        .map(|o| format!("{} (managed, anchor {})", o.upn, o.anchor))
}

/// A person whose mailbox is in EXO: LDAP forwards into the tenant, so the tenant must hold a
/// mailbox (not a MailUser) that owns the forward target.
fn forward(out: &mut Vec<Finding>, r: &Recipient, o: &TenantObject, t: &Tenant) {
    // A person migrating by IMAP is a mailbox because the state store says so, not because
    // LDAP forwards into the tenant: their LDAP forward (if any, e.g. to a gmail address) is
    // the on-prem server's business until cutover, and no tenant object must own it.
    if r.forwarding.is_some() {
        return;
    }
    let Some(target) = &r.forward else {
        return;
    };
    if o.kind == Kind::MailUser {
        let routed = field_text(o, Field::ExternalEmailAddress);
        let mut f = finding(
            Code::ForwardLoop,
            r,
            "RecipientTypeDetails",
            format!(
                "{}: LDAP forwards to {target}, into the tenant, but the tenant holds a MailUser for the person that routes back to {} (ExternalEmailAddress): mail loops",
                r.uid,
                routed.as_deref().unwrap_or("nowhere")
            ),
            format!(
                "{SYNC} with the mailbox licence configured (tenant.mailbox_sku; a free unit): it licenses the MailUser, which converts it into a mailbox; or, if the person's mailbox is still on-prem, remove the forward from LDAP"
            ),
        );
        f.expected = Some("UserMailbox".into());
        f.found = Some("MailUser".into());
        out.push(f);
        return;
    }
    if o.unknown.contains(&Field::EmailAddresses) || held(o).contains(target.as_str()) {
        return;
    }
    let owner = owner_of(target.as_str(), &r.anchor, t);
    let what = match &owner {
        Some(h) => format!("{h} owns it instead: the forward loops or lands there"),
        None => "no recipient owns it: the forward bounces".to_owned(),
    };
    let mut f = finding(
        Code::ForwardTargetNotOwned,
        r,
        "EmailAddresses",
        format!(
            "{}: LDAP forwards to {target}, but the person's mailbox does not own that address; {what}",
            r.uid
        ),
        format!(
            "{SYNC}: it adds {target} to the mailbox{}; or correct the forward in LDAP",
            if owner.is_some() {
                " once the other object gives it up"
            } else {
                ""
            }
        ),
    );
    f.expected = Some(target.to_string());
    f.holder = owner;
    out.push(f);
}

/// A person whose mailbox stays on-prem: the MailUser routes to on-prem and carries no
/// Exchange plan.
fn mail_user(out: &mut Vec<Finding>, r: &Recipient, o: &TenantObject) {
    if o.exchange_licensed {
        let converted = !o.mailbox_pending;
        let mut f = finding(
            Code::MailUserLicensed,
            r,
            "assignedPlans",
            format!(
                "{}: the MailUser {} carries an Exchange Online plan (assigned directly or by a group){}",
                r.uid,
                r.primary,
                if converted {
                    "; Exchange already converted it into a mailbox, so mail from EXO senders stays in the tenant"
                } else {
                    ": Exchange converts it into a mailbox"
                }
            ),
            "take the person out of the licensing group, or disable the Exchange Online plan in their licence; once converted, removing the licence leaves no recipient in the GAL at all (TENANT_FACTS \"Licensing a cloud MailUser\"): if the mailbox is to stay, forward the person into the tenant in LDAP instead".to_owned(),
        );
        f.expected = Some("no Exchange plan".into());
        f.found = Some(if converted { "UserMailbox" } else { "MailUser" }.into());
        out.push(f);
    }
    let is_mail_user = o.kind == Kind::MailUser || o.mailbox_pending;
    let (Some(want), true) = (&r.external_address, is_mail_user) else {
        return;
    };
    if o.unknown.contains(&Field::ExternalEmailAddress) {
        return;
    }
    let shown = field_text(o, Field::ExternalEmailAddress);
    if shown.as_deref() == Some(want.as_str()) {
        return;
    }
    let mut f = finding(
        Code::ExternalAddressWrong,
        r,
        "ExternalEmailAddress",
        format!(
            "{}: the MailUser routes to {} (ExternalEmailAddress), not to the on-prem address {want}: mail from EXO senders does not reach the Linux mailbox",
            r.uid,
            shown.as_deref().unwrap_or("nowhere")
        ),
        format!("{SYNC}: it sets ExternalEmailAddress to {want}"),
    );
    f.expected = Some(want.to_string());
    f.found = shown;
    out.push(f);
}

/// Stamped objects still in the GAL whose anchor LDAP no longer maps. Quarantined entries
/// whose anchor was readable, and disabled people, are still in LDAP: not gone. A hidden
/// object of a gone person is what `sync` leaves during the grace period: no finding.
fn orphans(out: &mut Vec<Finding>, desired: &Desired, inv: &Inventory) {
    let present: HashSet<&Anchor> = desired
        .recipients
        .iter()
        .map(|r| &r.anchor)
        .chain(desired.quarantined.iter().filter_map(|q| q.anchor.as_ref()))
        .chain(desired.disabled.iter().map(|d| &d.anchor))
        .collect();
    for o in inv.managed.values() {
        let visible = o.in_exchange
            && o.fields.get(Field::HiddenFromAddressLists.as_str()) == Some(&Value::Bool(false));
        if present.contains(&o.anchor) || !visible {
            continue;
        }
        let uid = o
            .fields
            .get(Field::MailNickname.as_str())
            .and_then(Value::as_str)
            .map_or_else(|| o.upn.clone(), str::to_owned);
        let address = field_text(o, Field::PrimarySmtpAddress).unwrap_or_else(|| o.upn.clone());
        out.push(Finding {
            code: Code::ManagedObjectWithoutPerson,
            uid: uid.clone(),
            anchor: o.anchor.clone(),
            field: "CustomAttribute".into(),
            expected: None,
            found: Some(address.clone()),
            holder: None,
            message: format!(
                "{uid}: the managed {} {address} (anchor {}) is still in the GAL, but no LDAP entry maps to its anchor",
                match o.kind {
                    Kind::MailUser => "MailUser",
                    Kind::Mailbox => "mailbox",
                },
                o.anchor
            ),
            fix: format!(
                "{SYNC}: it hides the object and blocks sign-in, and deletes it after the grace period; if the person should still be there, check the LDAP filter and base"
            ),
        });
    }
}

#[cfg(test)]
mod tests;
