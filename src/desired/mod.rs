//! desired: what the tenant should hold, computed from LDAP entries. Pure, no I/O.
//!
//! Maps each entry through the configured attributes, validates it against what Exchange
//! Online and Entra ID accept, and classifies it: a forward into the tenant's own domains
//! means the person's mailbox lives in Exchange Online; everything else is a MailUser whose
//! mail is routed back to the Linux server. An unusable entry becomes a [`Quarantined`]
//! record naming the field and the reason; it never stops the others.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::{Anchor, SmtpAddress, Upn};

mod map;

pub use map::build;

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
    pub fn fields(&self) -> BTreeMap<String, Value> {
        let mut f = BTreeMap::new();
        let mut put = |k: &str, v: Value| {
            if !v.is_null() {
                f.insert(k.to_owned(), v);
            }
        };
        let opt = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
        put("userPrincipalName", Value::String(self.upn.to_string()));
        put("mailNickname", Value::String(self.alias.clone()));
        put("name", Value::String(self.name.clone()));
        put("displayName", Value::String(self.display_name.clone()));
        put("givenName", opt(&self.given_name));
        put("surname", opt(&self.surname));
        put(
            "primarySmtpAddress",
            Value::String(self.primary.to_string()),
        );
        put(
            "emailAddresses",
            Value::Array(
                self.secondary
                    .iter()
                    .map(|a| Value::String(a.to_string()))
                    .collect(),
            ),
        );
        put(
            "externalEmailAddress",
            self.external_address
                .as_ref()
                .map(|a| Value::String(a.to_string()))
                .unwrap_or(Value::Null),
        );
        put("department", opt(&self.department));
        put("jobTitle", opt(&self.job_title));
        put("businessPhones", opt(&self.phone));
        put("mobilePhone", opt(&self.mobile));
        put("officeLocation", opt(&self.office));
        put("companyName", opt(&self.company));
        put("hiddenFromAddressLists", Value::Bool(self.hidden));
        f
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
    /// How many entries the source returned (the shrink guard compares this).
    pub source_count: usize,
}
