//! desired: what the tenant should hold, computed from LDAP entries. Pure, no I/O.
//!
//! Maps each entry through the configured attributes, validates it against what Exchange
//! Online and Entra ID accept, and classifies it: a forward into the tenant's own domains
//! means the person's mailbox lives in Exchange Online; everything else is a MailUser whose
//! mail is routed back to the Linux server. An unusable entry becomes a [`Quarantined`]
//! record naming the field and the reason; it never stops the others. An entry that is usable
//! but needed a choice (two surnames: the first is used) is provisioned with a warning.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{Anchor, SmtpAddress, Upn};
use crate::plan::{Field, Fields};

mod map;

pub use map::{Mapper, anchor_of, build, entry_keys};

/// What kind of Exchange recipient a person becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Mailbox on the Linux server; EXO holds a MailUser routed there.
    MailUser,
    /// Mailbox in Exchange Online (the LDAP entry forwards into the tenant).
    Mailbox,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MailUser => "mail_user",
            Kind::Mailbox => "mailbox",
        }
    }
}

/// One person as the tenant should hold them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub anchor: Anchor,
    pub dn: String,
    pub uid: String,
    pub kind: Kind,
    pub upn: Upn,
    /// Exchange `Alias` / Graph `mailNickname`: ASCII, at most 64 characters.
    pub alias: String,
    /// `New-MailUser -Name`: at most 64 characters, unique in the tenant.
    pub name: String,
    pub display_name: String,
    pub given_name: Option<String>,
    pub surname: Option<String>,
    pub primary: SmtpAddress,
    /// Every other address the recipient owns: LDAP aliases, and for a mailbox the forward
    /// target in the tenant's domains. Never contains `primary`.
    pub secondary: BTreeSet<SmtpAddress>,
    /// For a MailUser: where Exchange Online sends its mail (the on-prem routing address).
    pub external_address: Option<SmtpAddress>,
    /// The LDAP forward target, whatever its domain.
    pub forward: Option<SmtpAddress>,
    /// For a mailbox whose person is migrating by IMAP (before cutover): the on-prem
    /// mailbox Exchange Online forwards to, `<uid>@<migration.onprem_routing_domain>`, so no
    /// mail stays in the new mailbox before the move. `None` for everybody else.
    pub forwarding: Option<SmtpAddress>,
    pub department: Option<String>,
    pub job_title: Option<String>,
    pub phone: Option<String>,
    pub mobile: Option<String>,
    pub office: Option<String>,
    pub company: Option<String>,
    pub hidden: bool,
}

impl Recipient {
    /// The tenant-facing attributes, by the names Graph and Exchange use. The plan diffs these
    /// maps, and the state store keeps the last applied one; absent values are left out.
    pub fn fields(&self) -> Fields {
        self.clone().into_fields()
    }

    /// [`Recipient::fields`], moving the values instead of copying them: planning 50,000
    /// people then holds each value once.
    pub fn into_fields(self) -> Fields {
        let text = |v: Option<String>| v.map(Value::String);
        let address = |a: SmtpAddress| Value::String(a.into());
        [
            (
                Field::UserPrincipalName,
                Some(Value::String(self.upn.into())),
            ),
            (Field::MailNickname, Some(Value::String(self.alias))),
            (Field::Name, Some(Value::String(self.name))),
            (Field::DisplayName, Some(Value::String(self.display_name))),
            (Field::GivenName, text(self.given_name)),
            (Field::Surname, text(self.surname)),
            (Field::PrimarySmtpAddress, Some(address(self.primary))),
            (
                Field::EmailAddresses,
                Some(Value::Array(
                    self.secondary.into_iter().map(address).collect(),
                )),
            ),
            (
                Field::ExternalEmailAddress,
                self.external_address.map(address),
            ),
            (Field::ForwardingSmtpAddress, self.forwarding.map(address)),
            (Field::Department, text(self.department)),
            (Field::JobTitle, text(self.job_title)),
            (Field::BusinessPhones, text(self.phone)),
            (Field::MobilePhone, text(self.mobile)),
            (Field::OfficeLocation, text(self.office)),
            (Field::CompanyName, text(self.company)),
            (
                Field::HiddenFromAddressLists,
                Some(Value::Bool(self.hidden)),
            ),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect()
    }
}

/// An entry that cannot be provisioned, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    pub dn: String,
    /// Known when the anchor itself was readable: the plan then leaves this person's tenant
    /// object alone instead of treating them as leaving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<Anchor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The configuration field name (`mail`, `aliases`, `forward`, `display_name`, …).
    pub field: String,
    pub reason: String,
}

/// An entry that matches `ldap.rules.disabled_filter`: present in LDAP, but leaving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    pub anchor: Anchor,
    pub dn: String,
    pub uid: Option<String>,
}

/// The outcome of mapping one LDAP read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Sorted by anchor.
    pub recipients: Vec<Recipient>,
    pub quarantined: Vec<Quarantined>,
    pub disabled: Vec<Disabled>,
    /// DNs of entries without a mail address: skipped and counted, not an error.
    pub skipped_no_mail: Vec<String>,
    /// Provisioned people whose entry needed a choice (several values of a name the tenant
    /// holds once: the first is used), sorted by DN. The plan carries them to the reports.
    pub warnings: Vec<crate::plan::Warning>,
    /// How many entries the source returned (the shrink guard compares this).
    pub source_count: usize,
}
