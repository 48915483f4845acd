//! [`Field`]: every attribute a plan can change, with the API that writes it and the API the
//! inventory reads it from. This table is the contract between `plan` and `apply`: the
//! executor matches on it exhaustively and proves, per action, that every changed field was
//! handled, so a change can never be recorded as applied without being sent.
//!
//! The split follows which directory masters a property (TENANT_FACTS, "Two directories, one
//! object"): Exchange masters addresses, the hidden flag, the external address, `Name`,
//! `Alias` and, for objects that `New-MailUser` created, the address-book attributes, which
//! Entra refuses to change through Graph ("Unable to update the specified properties for
//! objects that have originated within an external service": microsoftgraph/
//! microsoft-graph-docs-contrib#8048, msgraph-sdk-powershell#1854, microsoft-graph-docs-contrib
//! #3564). Graph masters sign-in and licences. A value is read back from the API that wrote
//! it, so a value still propagating to the other directory never looks like drift.

use std::fmt;
use std::str::FromStr;

/// Fields `New-MailUser` sets when apply creates a MailUser (`apply/steps.rs`); the bill
/// counts the rest as a second call.
pub const NEW_MAIL_USER_FIELDS: [Field; 7] = [
    Field::UserPrincipalName,
    Field::MailNickname,
    Field::Name,
    Field::DisplayName,
    Field::GivenName,
    Field::Surname,
    Field::ExternalEmailAddress,
];

/// Fields Graph `POST /users` sets when apply creates a mailbox person's user.
pub const POST_USER_FIELDS: [Field; 11] = [
    Field::UserPrincipalName,
    Field::MailNickname,
    Field::DisplayName,
    Field::GivenName,
    Field::Surname,
    Field::Department,
    Field::JobTitle,
    Field::BusinessPhones,
    Field::MobilePhone,
    Field::OfficeLocation,
    Field::CompanyName,
];

/// Which service a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Api {
    /// Microsoft Graph v1.0.
    Graph,
    /// The Exchange Online admin API (cmdlets).
    Exchange,
}

/// The request that writes a field on an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Writer {
    /// `Set-MailUser` / `Set-Mailbox`: addresses, hidden flag, external address, Name, Alias,
    /// UPN (`-MicrosoftOnlineServicesID`).
    SetRecipient,
    /// `Set-User`: display name and the address-book attributes (valid for MailUsers and
    /// mailboxes alike, whichever API created the object).
    SetUser,
    /// Graph `PATCH /users/{id}`: only `accountEnabled`.
    GraphPatch,
    /// Graph `assignLicense` (a MailUser licensed in place becomes a mailbox).
    License,
}

impl Writer {
    pub fn api(self) -> Api {
        match self {
            Writer::SetRecipient | Writer::SetUser => Api::Exchange,
            Writer::GraphPatch | Writer::License => Api::Graph,
        }
    }
}

/// An attribute of a planned change, by its wire name (INTERFACE.md's JSON plan keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    UserPrincipalName,
    MailNickname,
    Name,
    DisplayName,
    GivenName,
    Surname,
    PrimarySmtpAddress,
    EmailAddresses,
    /// Former primary addresses kept as aliases after a rename (state only; written as
    /// addresses).
    RetainedAddresses,
    ExternalEmailAddress,
    /// For a mailbox whose person is migrating by IMAP: `Set-Mailbox -ForwardingSmtpAddress`
    /// to the on-prem mailbox until cutover (always with `-DeliverToMailboxAndForward
    /// $false`); absent otherwise, so cutover clears it. Read back only where a listing
    /// carries it: Get-Recipient does not (scripts read it from Get-Mailbox), so it is
    /// normally unknown to the inventory and diffed against the state store alone.
    ForwardingSmtpAddress,
    HiddenFromAddressLists,
    AccountEnabled,
    /// `mail_user` / `mailbox`: changed by licensing.
    Kind,
    Department,
    JobTitle,
    BusinessPhones,
    MobilePhone,
    OfficeLocation,
    CompanyName,
    /// The stamp's anchor (`ldap2exo:<anchor>` in `tenant.anchor_attribute`): changed only
    /// when a person's LDAP anchor changed and nothing else proves them a different person
    /// (a re-anchor). Not read back as a field: the stamp is how the inventory finds objects.
    Anchor,
}

impl Field {
    pub const ALL: [Field; 21] = [
        Field::UserPrincipalName,
        Field::MailNickname,
        Field::Name,
        Field::DisplayName,
        Field::GivenName,
        Field::Surname,
        Field::PrimarySmtpAddress,
        Field::EmailAddresses,
        Field::RetainedAddresses,
        Field::ExternalEmailAddress,
        Field::ForwardingSmtpAddress,
        Field::HiddenFromAddressLists,
        Field::AccountEnabled,
        Field::Kind,
        Field::Department,
        Field::JobTitle,
        Field::BusinessPhones,
        Field::MobilePhone,
        Field::OfficeLocation,
        Field::CompanyName,
        Field::Anchor,
    ];

    /// The plan's key for this field.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::UserPrincipalName => "userPrincipalName",
            Field::MailNickname => "mailNickname",
            Field::Name => "name",
            Field::DisplayName => "displayName",
            Field::GivenName => "givenName",
            Field::Surname => "surname",
            Field::PrimarySmtpAddress => "primarySmtpAddress",
            Field::EmailAddresses => "emailAddresses",
            Field::RetainedAddresses => "retainedAddresses",
            Field::ExternalEmailAddress => "externalEmailAddress",
            Field::ForwardingSmtpAddress => "forwardingSmtpAddress",
            Field::HiddenFromAddressLists => "hiddenFromAddressLists",
            Field::AccountEnabled => "accountEnabled",
            Field::Kind => "kind",
            Field::Department => "department",
            Field::JobTitle => "jobTitle",
            Field::BusinessPhones => "businessPhones",
            Field::MobilePhone => "mobilePhone",
            Field::OfficeLocation => "officeLocation",
            Field::CompanyName => "companyName",
            Field::Anchor => "anchor",
        }
    }

    /// The position of [`Field::as_str`] among all names in byte order: what
    /// [`super::Fields`] keeps its fields sorted by, compared without comparing strings.
    pub const fn rank(self) -> u8 {
        match self {
            Field::AccountEnabled => 0,
            Field::Anchor => 1,
            Field::BusinessPhones => 2,
            Field::CompanyName => 3,
            Field::Department => 4,
            Field::DisplayName => 5,
            Field::EmailAddresses => 6,
            Field::ExternalEmailAddress => 7,
            Field::ForwardingSmtpAddress => 8,
            Field::GivenName => 9,
            Field::HiddenFromAddressLists => 10,
            Field::JobTitle => 11,
            Field::Kind => 12,
            Field::MailNickname => 13,
            Field::MobilePhone => 14,
            Field::Name => 15,
            Field::OfficeLocation => 16,
            Field::PrimarySmtpAddress => 17,
            Field::RetainedAddresses => 18,
            Field::Surname => 19,
            Field::UserPrincipalName => 20,
        }
    }

    /// Which request writes this field on an existing object.
    pub fn writer(self) -> Writer {
        match self {
            Field::UserPrincipalName
            | Field::MailNickname
            | Field::Name
            | Field::PrimarySmtpAddress
            | Field::EmailAddresses
            | Field::RetainedAddresses
            | Field::ExternalEmailAddress
            | Field::ForwardingSmtpAddress
            | Field::HiddenFromAddressLists
            | Field::Anchor => Writer::SetRecipient,
            Field::DisplayName
            | Field::GivenName
            | Field::Surname
            | Field::Department
            | Field::JobTitle
            | Field::BusinessPhones
            | Field::MobilePhone
            | Field::OfficeLocation
            | Field::CompanyName => Writer::SetUser,
            Field::AccountEnabled => Writer::GraphPatch,
            Field::Kind => Writer::License,
        }
    }

    /// Where the inventory reads the field: the API that writes it, so that a value still
    /// propagating to the other directory is never taken for drift. `None`: not read back
    /// (state-only bookkeeping).
    pub fn read_from(self) -> Option<Api> {
        match self {
            Field::RetainedAddresses | Field::Anchor => None,
            // Exchange's RecipientTypeDetails, never the licences (a licence without an
            // Exchange plan converts nothing).
            Field::Kind => Some(Api::Exchange),
            f => Some(f.writer().api()),
        }
    }

    /// The `Set-User` / `Set-MailUser` parameter, and the `Get-Recipient` property, that
    /// carry this field (`None` for fields Exchange holds in another shape).
    pub fn exchange_property(self) -> Option<&'static str> {
        Some(match self {
            Field::UserPrincipalName => "MicrosoftOnlineServicesID",
            Field::MailNickname => "Alias",
            Field::Name => "Name",
            Field::DisplayName => "DisplayName",
            Field::GivenName => "FirstName",
            Field::Surname => "LastName",
            Field::ExternalEmailAddress => "ExternalEmailAddress",
            Field::ForwardingSmtpAddress => "ForwardingSmtpAddress",
            Field::HiddenFromAddressLists => "HiddenFromAddressListsEnabled",
            Field::Department => "Department",
            Field::JobTitle => "Title",
            Field::BusinessPhones => "Phone",
            Field::MobilePhone => "MobilePhone",
            Field::OfficeLocation => "Office",
            Field::CompanyName => "Company",
            Field::PrimarySmtpAddress
            | Field::EmailAddresses
            | Field::RetainedAddresses
            | Field::AccountEnabled
            | Field::Kind
            // `CustomAttributeN`, N from the configuration.
            | Field::Anchor => return None,
        })
    }

    /// Address fields: written together as one `EmailAddresses` change.
    pub fn is_address(self) -> bool {
        matches!(
            self,
            Field::PrimarySmtpAddress | Field::EmailAddresses | Field::RetainedAddresses
        )
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A plan key that names no [`Field`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a field ldap2exo plans")]
pub struct UnknownField(pub String);

impl FromStr for Field {
    type Err = UnknownField;

    /// By the name [`Field::as_str`] gives. A `match`, not a search of [`Field::ALL`]: every
    /// key of every stored row is parsed here.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "userPrincipalName" => Field::UserPrincipalName,
            "mailNickname" => Field::MailNickname,
            "name" => Field::Name,
            "displayName" => Field::DisplayName,
            "givenName" => Field::GivenName,
            "surname" => Field::Surname,
            "primarySmtpAddress" => Field::PrimarySmtpAddress,
            "emailAddresses" => Field::EmailAddresses,
            "retainedAddresses" => Field::RetainedAddresses,
            "externalEmailAddress" => Field::ExternalEmailAddress,
            "forwardingSmtpAddress" => Field::ForwardingSmtpAddress,
            "hiddenFromAddressLists" => Field::HiddenFromAddressLists,
            "accountEnabled" => Field::AccountEnabled,
            "kind" => Field::Kind,
            "department" => Field::Department,
            "jobTitle" => Field::JobTitle,
            "businessPhones" => Field::BusinessPhones,
            "mobilePhone" => Field::MobilePhone,
            "officeLocation" => Field::OfficeLocation,
            "companyName" => Field::CompanyName,
            "anchor" => Field::Anchor,
            _ => return Err(UnknownField(s.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranks_are_the_byte_order_of_the_names_and_names_parse_back() {
        let mut by_name = super::Field::ALL;
        by_name.sort_by_key(|f| f.as_str());
        for (i, f) in by_name.into_iter().enumerate() {
            assert_eq!(usize::from(f.rank()), i, "{f:?}");
            assert_eq!(f.as_str().parse::<super::Field>(), Ok(f));
        }
        assert!("Name".parse::<super::Field>().is_err());
    }
    use super::*;

    #[test]
    fn every_field_round_trips_and_has_one_writer() {
        for f in Field::ALL {
            assert_eq!(f.as_str().parse::<Field>(), Ok(f));
            // Each field Exchange writes by a parameter has that parameter named.
            if f.writer() == Writer::SetUser {
                assert!(f.exchange_property().is_some(), "{f}");
            }
        }
        assert!("showInAddressList".parse::<Field>().is_err());
    }

    #[test]
    fn only_sign_in_and_licences_go_through_graph() {
        let graph: Vec<Field> = Field::ALL
            .into_iter()
            .filter(|f| f.writer().api() == Api::Graph)
            .collect();
        assert_eq!(graph, [Field::AccountEnabled, Field::Kind]);
        // Read where written, except the kind, which only Exchange can tell.
        assert_eq!(Field::DisplayName.read_from(), Some(Api::Exchange));
        assert_eq!(Field::AccountEnabled.read_from(), Some(Api::Graph));
        assert_eq!(Field::Kind.read_from(), Some(Api::Exchange));
    }
}
