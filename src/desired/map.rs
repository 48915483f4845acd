//! Maps raw LDAP entries to desired recipients.
//!
//! Two phases. First each entry is judged on its own: its configured attributes are read,
//! every value is checked against what Exchange Online and Entra ID accept, and the person is
//! classified (a forward into the tenant's own domains means an EXO mailbox, anything else a
//! MailUser routed to on-prem). That phase never looks at another entry. Then [`claims`]
//! settles what entries contest between them (anchor, UPN, Name, alias, addresses) in a fixed
//! order, so the result does not depend on the order LDAP returned the entries in.
//!
//! Every problem becomes a [`Quarantined`] record naming the configuration field at fault and
//! one sentence built only from the entry's own data (plus, for a clash, the other entry's
//! DN). Nothing here panics on bad input: LDAP content is untrusted.

use std::collections::BTreeSet;

use tracing::warn;

use super::{Desired, Disabled, Kind, Quarantined, Recipient};
use crate::config::{AttributeMap, Config, TenantConfig};
use crate::ids::{Anchor, IdError, SmtpAddress, Upn};
use crate::source::{RawEntry, Selection};

mod claims;
mod read;
#[cfg(test)]
mod tests;

use crate::plan::Warning;
use crate::plan::partial::{self, Key};
use read::{Fault, Note, Reader};

/// `New-MailUser -Name`: at most 64 characters.
const MAX_NAME: usize = 64;
/// Graph `displayName`: at most 256 characters.
const MAX_DISPLAY_NAME: usize = 256;
/// Exchange `Alias` / Graph `mailNickname`: at most 64 characters.
const MAX_ALIAS: usize = 64;

/// Exchange Online's limits for the address-book attributes, in characters.
const MAX_GIVEN_NAME: usize = 64;
const MAX_SURNAME: usize = 64;
const MAX_DEPARTMENT: usize = 64;
const MAX_JOB_TITLE: usize = 64;
const MAX_COMPANY: usize = 64;
const MAX_OFFICE: usize = 128;
const MAX_PHONE: usize = 64;
const MAX_MOBILE: usize = 64;

/// Maps one LDAP read to what the tenant should hold.
///
/// `known` holds the anchors already provisioned: when two entries claim the same address,
/// the one already in the tenant keeps it, so an existing person never loses an address to a
/// newcomer.
pub fn build(entries: &[RawEntry], config: &Config, known: &BTreeSet<Anchor>) -> Desired {
    let mut mapper = Mapper::new(config);
    for entry in entries {
        mapper.push(entry);
    }
    mapper.finish(known)
}

/// [`build`] one entry at a time, so entries can be mapped while LDAP is still sending them
/// and none has to be kept: only what each becomes (a candidate or a quarantine record).
pub struct Mapper<'a> {
    config: &'a Config,
    claimants: Vec<claims::Claimant>,
    contest: claims::Contest,
    quarantined: Vec<Quarantined>,
    skipped_no_mail: Vec<String>,
    warnings: Vec<Warning>,
    count: usize,
    /// The uids an `--only` run asked for, and (lower case) those LDAP returned.
    asked: Vec<String>,
    found: BTreeSet<String>,
    /// The anchors of people migrating by IMAP, and the on-prem routing domain their mailbox
    /// forwards to until cutover.
    migrating: BTreeSet<Anchor>,
    onprem_routing_domain: Option<String>,
}

impl<'a> Mapper<'a> {
    pub fn new(config: &'a Config) -> Self {
        Mapper {
            config,
            claimants: Vec::new(),
            contest: claims::Contest::default(),
            quarantined: Vec::new(),
            skipped_no_mail: Vec::new(),
            warnings: Vec::new(),
            count: 0,
            asked: Vec::new(),
            found: BTreeSet::new(),
            migrating: BTreeSet::new(),
            onprem_routing_domain: None,
        }
    }

    /// Marks `anchors` as migrating by IMAP: whatever LDAP says, each becomes a mailbox (its
    /// MailUser is licensed in place) that forwards to `<uid>@<onprem_routing_domain>`, so
    /// sync provisions the migration target and never converts it back before cutover.
    /// Someone LDAP already forwards into the tenant is left to the ordinary rule.
    pub fn migrating(mut self, anchors: BTreeSet<Anchor>, onprem_routing_domain: &str) -> Self {
        self.migrating = anchors;
        self.onprem_routing_domain = Some(onprem_routing_domain.to_owned());
        self
    }

    /// Maps the entries read for `selection`: an `--only` uid that no entry carries becomes a
    /// warning, since a typo in an on-demand provisioning would otherwise pass silently.
    pub fn selecting(mut self, selection: &Selection) -> Self {
        if let Selection::Only(uids) = selection {
            self.asked = uids.clone();
        }
        self
    }

    /// Judges one entry on its own; clashes between entries are settled in [`Mapper::finish`].
    pub fn push(&mut self, entry: &RawEntry) {
        self.count += 1;
        if !self.asked.is_empty() {
            // LDAP matches uids case-insensitively, and an entry may carry several.
            for uid in entry.values(&self.config.ldap.attributes.uid) {
                self.found.insert(uid.to_lowercase());
            }
        }
        let mut notes = Vec::new();
        match judge(entry, self.config, &mut notes) {
            Judged::Valid(c) => {
                // Notes only for entries that pass on their own: a quarantined entry has its
                // reason, and the value chosen for it matters to nobody. (One that loses a
                // clash in `finish` keeps its note; the quarantine names the clash.)
                for note in notes {
                    let warning = Warning {
                        dn: entry.dn.clone(),
                        uid: Some(c.recipient.uid.clone()),
                        field: note.field.to_owned(),
                        message: note.message,
                    };
                    warn!(
                        dn = %warning.dn,
                        uid = %c.recipient.uid,
                        field = %warning.field,
                        detail = %warning.message,
                        "an entry has several values for a field the tenant holds once; the first is used"
                    );
                    self.warnings.push(warning);
                }
                self.claim(claims::Claimant::Recipient(Box::new(c)));
            }
            Judged::Disabled(d) => self.claim(claims::Claimant::Disabled(d)),
            Judged::NoMail(dn) => self.skipped_no_mail.push(dn),
            Judged::Quarantined(q) => self.quarantined.push(q),
        }
    }

    fn claim(&mut self, claimant: claims::Claimant) {
        self.contest.enter(&claimant);
        self.claimants.push(claimant);
    }

    /// Settles what entries contest between them and returns the sorted result.
    pub fn finish(self, known: &BTreeSet<Anchor>) -> Desired {
        let Mapper {
            claimants,
            contest,
            mut quarantined,
            mut skipped_no_mail,
            mut warnings,
            count,
            asked,
            found,
            config,
            migrating,
            onprem_routing_domain,
        } = self;
        for uid in asked {
            if found.contains(&uid.to_lowercase()) {
                continue;
            }
            let warning = Warning {
                dn: String::new(),
                uid: Some(uid.clone()),
                field: "only".into(),
                message: format!(
                    "no LDAP entry under {} matching {} has {} `{uid}`: nobody was planned for it",
                    config.ldap.base_dn, config.ldap.filter, config.ldap.attributes.uid
                ),
            };
            warn!(uid = %uid, "--only names a uid LDAP does not have");
            warnings.push(warning);
        }
        let settled = contest.settle(claimants, known);
        quarantined.extend(settled.quarantined);

        let mut recipients = settled.recipients;
        if let Some(domain) = &onprem_routing_domain {
            for r in recipients
                .iter_mut()
                .filter(|r| migrating.contains(&r.anchor))
            {
                migrate_in_place(r, domain, &config.tenant.routing_domain);
            }
        }
        recipients.sort_by(|a, b| a.anchor.cmp(&b.anchor));
        let mut disabled = settled.disabled;
        disabled.sort_by(|a, b| a.anchor.cmp(&b.anchor));
        // DNs can repeat only in malformed input; the extra keys keep the order total anyway.
        quarantined.sort_by(|a, b| (&a.dn, &a.field, &a.reason).cmp(&(&b.dn, &b.field, &b.reason)));
        skipped_no_mail.sort();
        warnings.sort_by(|a, b| (&a.dn, &a.field, &a.message).cmp(&(&b.dn, &b.field, &b.message)));

        Desired {
            recipients,
            quarantined,
            disabled,
            skipped_no_mail,
            warnings,
            source_count: count,
        }
    }
}

/// Makes a migrating person's MailUser the mailbox that forwards to on-prem (see
/// [`Mapper::migrating`]). The forwarding target is never the person's primary address: the
/// new mailbox owns that, so the mail would loop (TENANT_FACTS, "IMAP migration").
///
/// The mailbox also owns `<alias>@<tenant.routing_domain>` from now on: cutover points the
/// LDAP forward there, and the on-prem server forwards to it at once, before any sync could
/// add it; a mailbox without it would bounce that mail.
fn migrate_in_place(r: &mut Recipient, onprem_routing_domain: &str, tenant_routing_domain: &str) {
    if r.kind == Kind::Mailbox {
        return;
    }
    match SmtpAddress::parse(&format!("{}@{onprem_routing_domain}", r.uid)) {
        Ok(target) => {
            r.kind = Kind::Mailbox;
            r.external_address = None;
            r.forwarding = Some(target);
            match SmtpAddress::parse(&format!("{}@{tenant_routing_domain}", r.alias)) {
                Ok(routing) if routing != r.primary => {
                    r.secondary.insert(routing);
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(uid = %r.uid, error = %e, "the alias makes no tenant routing address; cutover will refuse this person")
                }
            }
        }
        Err(e) => {
            warn!(uid = %r.uid, error = %e, "the uid makes no on-prem routing address; left a MailUser")
        }
    }
}

/// A valid recipient before duplicates across entries are settled.
#[derive(Debug, Clone)]
struct Candidate {
    recipient: Recipient,
    /// Every address the recipient claims (primary first) with the field it came from, so a
    /// clash names the field the administrator has to fix.
    addresses: Vec<(SmtpAddress, &'static str)>,
}

/// The verdict on one entry taken alone.
#[allow(
    clippy::large_enum_variant,
    reason = "almost every entry is valid; boxing would only add an allocation each"
)]
enum Judged {
    Valid(Candidate),
    Disabled(Disabled),
    NoMail(String),
    Quarantined(Quarantined),
}

/// `notes` collects what the operator should know about an entry that is provisioned anyway.
fn judge(entry: &RawEntry, config: &Config, notes: &mut Vec<Note>) -> Judged {
    let attrs = &config.ldap.attributes;
    let reader = Reader::new(entry);
    let anchor = read_anchor(&reader, attrs);
    let uid = reader.loose(&attrs.uid);

    // A leaver stays a leaver whatever else is wrong with the entry: quarantining them would
    // keep their account enabled in the tenant.
    if entry.disabled
        && let Ok(anchor) = &anchor
    {
        return Judged::Disabled(Disabled {
            anchor: anchor.clone(),
            dn: entry.dn.clone(),
            uid,
        });
    }
    if !reader.has_value(&attrs.mail) {
        return Judged::NoMail(entry.dn.clone());
    }
    let quarantine = |anchor: Option<Anchor>, fault: Fault| {
        Judged::Quarantined(Quarantined {
            dn: entry.dn.clone(),
            anchor,
            uid: uid.clone(),
            field: fault.field.to_owned(),
            reason: fault.reason,
        })
    };
    let anchor = match anchor {
        Ok(anchor) => anchor,
        Err(fault) => return quarantine(None, fault),
    };
    match recipient(&reader, config, anchor.clone(), notes) {
        Ok(candidate) => Judged::Valid(candidate),
        Err(fault) => quarantine(Some(anchor), fault),
    }
}

/// The keys ([`Key`]) of what `entry` claims, whether or not it keeps it: its anchor as
/// read and, for a person usable on their own, every value `desired` contests, every address
/// it owns or routes to, and the tenant routing address an IMAP migration would give it.
/// What [`crate::plan::partial`] finds the entries that share a value with by.
pub fn entry_keys(entry: &RawEntry, config: &Config) -> Vec<Key> {
    let mut keys: Vec<Key> = entry
        .values(&config.ldap.attributes.anchor)
        .iter()
        .filter_map(|v| Anchor::new(v).ok())
        .map(|a| Key::anchor(&a))
        .collect();
    if let Judged::Valid(c) = judge(entry, config, &mut Vec::new()) {
        partial::recipient_keys(&c.recipient, &mut keys);
        keys.extend(c.addresses.iter().map(|(a, _)| Key::identity(a.as_str())));
        let routing = format!("{}@{}", c.recipient.alias, config.tenant.routing_domain);
        keys.push(Key::identity(&routing));
    }
    keys
}

/// The anchor of `entry` as the mapping reads it; `None` when it has no usable one.
pub fn anchor_of(entry: &RawEntry, attrs: &AttributeMap) -> Option<Anchor> {
    read_anchor(&Reader::new(entry), attrs).ok()
}

fn read_anchor(reader: &Reader, attrs: &AttributeMap) -> Result<Anchor, Fault> {
    let value = reader.required("anchor", &attrs.anchor)?;
    Anchor::new(&value).map_err(|e| Fault::new("anchor", format!("anchor {e}")))
}

/// Builds the recipient of a valid entry, or the first fault found. Fields are checked in a
/// fixed order so the same entry always yields the same reason.
fn recipient(
    reader: &Reader,
    config: &Config,
    anchor: Anchor,
    notes: &mut Vec<Note>,
) -> Result<Candidate, Fault> {
    let attrs = &config.ldap.attributes;
    let tenant = &config.tenant;

    let id = identity(reader, attrs, tenant)?;
    let primary = parse_address("mail", &reader.required("mail", &attrs.mail)?)?;
    if !is_accepted(primary.domain(), tenant) {
        return Err(not_accepted("mail", &primary));
    }
    let aliases = read_aliases(reader, attrs, tenant)?;
    let forwards = reader
        .all("forward", &attrs.forward)?
        .iter()
        .map(|v| parse_address("forward", v))
        .collect::<Result<Vec<_>, _>>()?;
    let names = person_names(reader, attrs, &id.uid, notes)?;
    let book = address_book(reader, attrs)?;

    let route = classify(&primary, &forwards, tenant);
    let (secondary, addresses) = owned_addresses(&primary, aliases, route.owned);

    let recipient = Recipient {
        anchor,
        dn: reader.dn().to_owned(),
        uid: id.uid,
        kind: route.kind,
        upn: id.upn,
        alias: id.alias,
        name: id.name,
        display_name: names.display_name,
        given_name: names.given_name,
        surname: names.surname,
        primary,
        secondary,
        external_address: route.external_address,
        forward: route.forward,
        forwarding: None,
        department: book.department,
        job_title: book.job_title,
        phone: book.phone,
        mobile: book.mobile,
        office: book.office,
        company: book.company,
        hidden: reader.hidden(),
    };
    Ok(Candidate {
        recipient,
        addresses,
    })
}

/// Everything derived from the uid.
struct Identity {
    uid: String,
    name: String,
    upn: Upn,
    alias: String,
}

fn identity(
    reader: &Reader,
    attrs: &AttributeMap,
    tenant: &TenantConfig,
) -> Result<Identity, Fault> {
    let uid = reader.required("uid", &attrs.uid)?;
    let name = checked_name(&uid)?;
    // Entra accepts only ASCII in a UPN: a Unicode uid (müller) is transliterated (muller),
    // while characters no transliteration fixes (a space) still quarantine the entry.
    let upn = Upn::new(&deunicode::deunicode(&uid), &tenant.upn_domain)
        .map_err(|e| upn_fault(&uid, e))?;
    let alias = mail_nickname(&uid).ok_or_else(|| {
        Fault::new(
            "uid",
            format!(
                "uid `{}` leaves no usable alias (mailNickname) once made ASCII",
                read::shown(&uid)
            ),
        )
    })?;
    Ok(Identity {
        uid,
        name,
        upn,
        alias,
    })
}

struct Names {
    display_name: String,
    given_name: Option<String>,
    surname: Option<String>,
}

/// Display, given and surname, kept exactly as written (Unicode included) apart from trimming.
/// Each is held once by the tenant; several values give the first and a note (names identify
/// nobody, so they never quarantine a person).
fn person_names(
    reader: &Reader,
    attrs: &AttributeMap,
    uid: &str,
    notes: &mut Vec<Note>,
) -> Result<Names, Fault> {
    let mut name = |field: &'static str, attr: &str, max: usize| {
        read::limit(field, attr, reader.first_noted(field, attr, notes)?, max)
    };
    let given_name = name("given_name", &attrs.given_name, MAX_GIVEN_NAME)?;
    let surname = name("surname", &attrs.surname, MAX_SURNAME)?;
    // Every recipient needs a display name: fall back to the full name, then to the uid.
    let display_name = match name("display_name", &attrs.display_name, MAX_DISPLAY_NAME)? {
        Some(d) => d,
        None => match (&given_name, &surname) {
            (Some(g), Some(s)) => format!("{g} {s}"),
            _ => uid.to_owned(),
        },
    };
    Ok(Names {
        display_name,
        given_name,
        surname,
    })
}

struct AddressBook {
    department: Option<String>,
    job_title: Option<String>,
    phone: Option<String>,
    mobile: Option<String>,
    office: Option<String>,
    company: Option<String>,
}

fn address_book(reader: &Reader, attrs: &AttributeMap) -> Result<AddressBook, Fault> {
    // Address-book attributes are often multi-valued in LDAP (several `ou` or `roomNumber`
    // values); the GAL holds one, and losing a person from the GAL over that would be worse
    // than showing the first value.
    let first = |field: &'static str, attr: &str, max: usize| {
        read::limit(field, attr, reader.first(field, attr)?, max)
    };
    Ok(AddressBook {
        department: first("department", &attrs.department, MAX_DEPARTMENT)?,
        job_title: first("job_title", &attrs.job_title, MAX_JOB_TITLE)?,
        phone: first("phone", &attrs.phone, MAX_PHONE)?,
        mobile: first("mobile", &attrs.mobile, MAX_MOBILE)?,
        office: first("office", &attrs.office, MAX_OFFICE)?,
        company: first("company", &attrs.company, MAX_COMPANY)?,
    })
}

/// The secondary addresses, and every address the recipient claims with the field it came
/// from (primary first).
fn owned_addresses(
    primary: &SmtpAddress,
    aliases: Vec<SmtpAddress>,
    forward_targets: Vec<SmtpAddress>,
) -> (BTreeSet<SmtpAddress>, Vec<(SmtpAddress, &'static str)>) {
    let mut addresses = vec![(primary.clone(), "mail")];
    let mut secondary = BTreeSet::new();
    let tagged = aliases
        .into_iter()
        .map(|a| (a, "aliases"))
        .chain(forward_targets.into_iter().map(|a| (a, "forward")));
    for (address, field) in tagged {
        // The primary is never repeated as a secondary, and an address listed both as alias
        // and as forward is claimed once, under the field where it appeared first.
        if address != *primary && secondary.insert(address.clone()) {
            addresses.push((address, field));
        }
    }
    (secondary, addresses)
}

/// `New-MailUser -Name` is the uid; Exchange refuses more than 64 characters.
fn checked_name(uid: &str) -> Result<String, Fault> {
    let len = uid.chars().count();
    if len > MAX_NAME {
        return Err(Fault::new(
            "uid",
            format!(
                "uid `{}` is {len} characters long; New-MailUser -Name allows at most {MAX_NAME}",
                read::shown(uid)
            ),
        ));
    }
    Ok(uid.to_owned())
}

fn upn_fault(uid: &str, e: IdError) -> Fault {
    let why = match e {
        IdError::BadAddress(_, why) => why.to_owned(),
        other => other.to_string(),
    };
    Fault::new(
        "uid",
        format!(
            "uid `{}` cannot be a user principal name: {why}",
            read::shown(uid)
        ),
    )
}

/// Derives the Exchange `Alias` (Graph `mailNickname`) from a uid: transliterated to ASCII,
/// reduced to the dot-atom characters Exchange accepts, dots neither leading, trailing nor
/// doubled, at most 64 characters. `None` when nothing usable remains.
///
/// The allowed set contains none of the characters Graph forbids in a mailNickname
/// (`@ ( ) \ [ ] " ; : < > ,` and space), so none can survive.
pub(crate) fn mail_nickname(uid: &str) -> Option<String> {
    let ascii = deunicode::deunicode(uid);
    let mut alias = String::with_capacity(ascii.len().min(MAX_ALIAS));
    for c in ascii.chars().filter(|&c| is_nickname_char(c)) {
        if alias.len() == MAX_ALIAS {
            break;
        }
        if c == '.' && (alias.is_empty() || alias.ends_with('.')) {
            continue;
        }
        alias.push(c);
    }
    // Truncation may have stopped right after a dot.
    while alias.ends_with('.') {
        alias.pop();
    }
    (!alias.is_empty()).then_some(alias)
}

fn is_nickname_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
}

fn parse_address(field: &'static str, value: &str) -> Result<SmtpAddress, Fault> {
    // IdError already quotes the value and says what is wrong with it.
    SmtpAddress::parse(value).map_err(|e| Fault::new(field, e.to_string()))
}

fn is_accepted(domain: &str, tenant: &TenantConfig) -> bool {
    tenant
        .accepted_domains
        .iter()
        .any(|d| d.eq_ignore_ascii_case(domain))
}

/// The tenant's own Microsoft domains: a forward there means the mailbox is in EXO.
fn is_tenant_domain(domain: &str, tenant: &TenantConfig) -> bool {
    domain.eq_ignore_ascii_case(&tenant.onmicrosoft_domain)
        || domain.eq_ignore_ascii_case(&tenant.routing_domain)
}

fn not_accepted(field: &'static str, address: &SmtpAddress) -> Fault {
    Fault::new(
        field,
        format!(
            "`{address}`: domain {} is not an accepted domain of the tenant",
            address.domain()
        ),
    )
}

/// Every value of every alias attribute; each must be an address the tenant can own.
fn read_aliases(
    reader: &Reader,
    attrs: &AttributeMap,
    tenant: &TenantConfig,
) -> Result<Vec<SmtpAddress>, Fault> {
    let mut out = Vec::new();
    for attr in &attrs.aliases {
        for value in reader.all("aliases", attr)? {
            let address = parse_address("aliases", &value)?;
            // The tenant owns its onmicrosoft domains too, even when they are not listed as
            // accepted domains in the configuration.
            if !is_accepted(address.domain(), tenant) && !is_tenant_domain(address.domain(), tenant)
            {
                return Err(not_accepted("aliases", &address));
            }
            out.push(address);
        }
    }
    Ok(out)
}

/// Where a person's mail lives, decided by their forwards.
struct Route {
    kind: Kind,
    forward: Option<SmtpAddress>,
    external_address: Option<SmtpAddress>,
    /// Forward targets the recipient must own as proxy addresses (tenant domains only).
    owned: Vec<SmtpAddress>,
}

fn classify(primary: &SmtpAddress, forwards: &[SmtpAddress], tenant: &TenantConfig) -> Route {
    let owned: Vec<SmtpAddress> = forwards
        .iter()
        .filter(|f| is_tenant_domain(f.domain(), tenant))
        .cloned()
        .collect();
    match owned.first() {
        // The mailbox moved to EXO: it must own the forward target or the forward bounces.
        Some(first) => Route {
            kind: Kind::Mailbox,
            forward: Some(first.clone()),
            external_address: None,
            owned,
        },
        // Mail stays on-prem, which applies any external forward itself; the forward is only
        // informational here.
        None => Route {
            kind: Kind::MailUser,
            forward: forwards.first().cloned(),
            external_address: Some(primary.clone()),
            owned,
        },
    }
}
