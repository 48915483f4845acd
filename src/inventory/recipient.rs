//! recipient: one Exchange recipient as the inventory keeps it between the listing and the
//! sort. Exchange sends some 150 properties per recipient (no documented way to select them
//! through the admin API's `Get-Recipient`); the inventory reads 21 of them ([`Col`]). Each
//! object is reduced to those as its page arrives, into a fixed array of cells rather than a
//! `serde_json` map: a map keeps a heap string per key and a 32-byte value per property, a
//! cell array neither, which is about a third of the memory at 40,000 recipients.

use serde_json::Value;

use crate::plan::Field;

use super::StampAttribute;

/// How many properties the inventory reads of a recipient.
const COLUMNS: usize = 21;

/// The Exchange properties the inventory reads of a recipient, in the order of
/// [`Recipient`]'s cells. `Stamp` is the configured `CustomAttributeN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Col {
    ExternalDirectoryObjectId,
    RecipientTypeDetails,
    EmailAddresses,
    PrimarySmtpAddress,
    WindowsLiveID,
    HiddenFromAddressListsEnabled,
    Guid,
    Name,
    Alias,
    DisplayName,
    FirstName,
    LastName,
    ExternalEmailAddress,
    ForwardingSmtpAddress,
    Department,
    Title,
    Phone,
    MobilePhone,
    Office,
    Company,
    Stamp,
}

impl Col {
    const ALL: [Col; COLUMNS] = [
        Col::ExternalDirectoryObjectId,
        Col::RecipientTypeDetails,
        Col::EmailAddresses,
        Col::PrimarySmtpAddress,
        Col::WindowsLiveID,
        Col::HiddenFromAddressListsEnabled,
        Col::Guid,
        Col::Name,
        Col::Alias,
        Col::DisplayName,
        Col::FirstName,
        Col::LastName,
        Col::ExternalEmailAddress,
        Col::ForwardingSmtpAddress,
        Col::Department,
        Col::Title,
        Col::Phone,
        Col::MobilePhone,
        Col::Office,
        Col::Company,
        Col::Stamp,
    ];

    /// The Exchange property's name; `None` for the stamp, whose name is configured.
    fn property(self) -> Option<&'static str> {
        Some(match self {
            Col::ExternalDirectoryObjectId => "ExternalDirectoryObjectId",
            Col::RecipientTypeDetails => "RecipientTypeDetails",
            Col::EmailAddresses => "EmailAddresses",
            Col::PrimarySmtpAddress => "PrimarySmtpAddress",
            Col::WindowsLiveID => "WindowsLiveID",
            Col::HiddenFromAddressListsEnabled => "HiddenFromAddressListsEnabled",
            Col::Guid => "Guid",
            Col::Name => "Name",
            Col::Alias => "Alias",
            Col::DisplayName => "DisplayName",
            Col::FirstName => "FirstName",
            Col::LastName => "LastName",
            Col::ExternalEmailAddress => "ExternalEmailAddress",
            Col::ForwardingSmtpAddress => "ForwardingSmtpAddress",
            Col::Department => "Department",
            Col::Title => "Title",
            Col::Phone => "Phone",
            Col::MobilePhone => "MobilePhone",
            Col::Office => "Office",
            Col::Company => "Company",
            Col::Stamp => return None,
        })
    }

    /// The column holding a field's Exchange property ([`Field::exchange_property`]); `None`
    /// for fields Exchange does not master, and for the UPN, which the inventory reads from
    /// `WindowsLiveID`.
    pub(super) fn of_field(f: Field) -> Option<Col> {
        if f == Field::UserPrincipalName {
            return None;
        }
        let property = f.exchange_property()?;
        Col::ALL
            .into_iter()
            .find(|c| c.property() == Some(property))
    }
}

/// What a listing showed of one property. "Absent" and "null" differ: a listing that does
/// not carry a property leaves its field unknown, one that carries it empty says it is empty.
#[derive(Debug, Clone, PartialEq, Default)]
enum Cell {
    #[default]
    Absent,
    Null,
    Bool(bool),
    Text(Box<str>),
    /// The strings of an array (anything else in it is dropped: no property the inventory
    /// reads holds other values).
    List(Box<[Box<str>]>),
    /// A number or an object: present, but nothing the inventory reads as text.
    Other,
}

impl From<Option<Value>> for Cell {
    fn from(v: Option<Value>) -> Cell {
        match v {
            None => Cell::Absent,
            Some(Value::Null) => Cell::Null,
            Some(Value::Bool(b)) => Cell::Bool(b),
            Some(Value::String(s)) => Cell::Text(s.into_boxed_str()),
            Some(Value::Array(items)) => Cell::List(
                items
                    .into_iter()
                    .filter_map(|i| match i {
                        Value::String(s) => Some(s.into_boxed_str()),
                        _ => None,
                    })
                    .collect(),
            ),
            Some(_) => Cell::Other,
        }
    }
}

/// One recipient reduced to the columns the inventory reads ([`Col`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Recipient {
    cells: Box<[Cell; COLUMNS]>,
}

impl Recipient {
    /// Keeps the columns of a listed object (a JSON object as Exchange sends it), reading
    /// the stamp from `stamp`'s `CustomAttributeN`. Anything but an object keeps nothing:
    /// every column absent.
    pub fn from_listing(v: Value, stamp: StampAttribute) -> Recipient {
        Recipient::with_stamp_property(v, &stamp.exchange_name())
    }

    /// Like [`Self::from_listing`], with the stamp property's name made once for a whole
    /// listing.
    pub(super) fn with_stamp_property(v: Value, stamp_property: &str) -> Recipient {
        let mut map = match v {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let cells =
            Col::ALL.map(|c| Cell::from(map.remove(c.property().unwrap_or(stamp_property))));
        Recipient {
            cells: Box::new(cells),
        }
    }

    /// The columns back as a JSON object with Exchange's property names (the stamp under
    /// `stamp_property`): what the state store keeps for an incremental tenant read, and what
    /// [`Self::with_stamp_property`] reads back into the same recipient.
    pub(super) fn to_listing(&self, stamp_property: &str) -> Value {
        let mut map = serde_json::Map::new();
        for c in Col::ALL {
            let value = match self.cell(c) {
                Cell::Absent => continue,
                Cell::Null => Value::Null,
                Cell::Bool(b) => Value::Bool(*b),
                Cell::Text(s) => Value::String(s.to_string()),
                Cell::List(items) => items.iter().map(|s| Value::String(s.to_string())).collect(),
                Cell::Other => Value::Object(serde_json::Map::new()),
            };
            map.insert(c.property().unwrap_or(stamp_property).to_owned(), value);
        }
        Value::Object(map)
    }

    fn cell(&self, c: Col) -> &Cell {
        &self.cells[c as usize]
    }

    /// Whether the listing carried the property at all (even empty).
    pub(super) fn has(&self, c: Col) -> bool {
        *self.cell(c) != Cell::Absent
    }

    /// The property as text, trimmed; `None` when absent, null, empty or not text.
    pub(super) fn text(&self, c: Col) -> Option<&str> {
        match self.cell(c) {
            Cell::Text(s) => Some(s.trim()).filter(|s| !s.is_empty()),
            _ => None,
        }
    }

    /// The property as a boolean; `None` when it is not one.
    pub(super) fn flag(&self, c: Col) -> Option<bool> {
        match self.cell(c) {
            Cell::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The strings of an array property; nothing when it is not an array.
    pub(super) fn list(&self, c: Col) -> impl Iterator<Item = &str> {
        let items: &[Box<str>] = match self.cell(c) {
            Cell::List(items) => items,
            _ => &[],
        };
        items.iter().map(|s| &**s)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_field_exchange_masters_has_a_column() {
        for f in Field::ALL {
            if f.exchange_property().is_some() && f != Field::UserPrincipalName {
                let c = Col::of_field(f).unwrap_or_else(|| panic!("{f} has no column"));
                assert_eq!(c.property(), f.exchange_property());
            }
        }
        for (i, c) in Col::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?} is out of order");
        }
    }

    #[test]
    fn a_listed_object_keeps_its_columns_and_tells_absent_from_empty() {
        let r = Recipient::from_listing(
            json!({
                "Name": "  jdoe ",
                "DisplayName": "",
                "Department": null,
                "HiddenFromAddressListsEnabled": true,
                "EmailAddresses": ["SMTP:j@x", 7, "smtp:d@x"],
                "CustomAttribute15": "ldap2exo:a1",
                "CustomAttribute3": "ldap2exo:not-this-one",
                "Guid": 12,
                "DistinguishedName": "CN=jdoe",
            }),
            StampAttribute::parse("extensionAttribute15").unwrap(),
        );
        assert_eq!(r.text(Col::Name), Some("jdoe"));
        assert_eq!(r.text(Col::DisplayName), None);
        assert!(r.has(Col::DisplayName) && r.has(Col::Department));
        assert!(!r.has(Col::Title));
        assert_eq!(r.flag(Col::HiddenFromAddressListsEnabled), Some(true));
        assert_eq!(
            r.list(Col::EmailAddresses).collect::<Vec<_>>(),
            ["SMTP:j@x", "smtp:d@x"]
        );
        assert_eq!(r.text(Col::Stamp), Some("ldap2exo:a1"));
        assert!(r.has(Col::Guid) && r.text(Col::Guid).is_none());
        let again =
            Recipient::with_stamp_property(r.to_listing("CustomAttribute15"), "CustomAttribute15");
        assert_eq!(again, r, "a recipient survives the state store's JSON");
        let nothing = Recipient::from_listing(
            json!("x"),
            StampAttribute::parse("extensionAttribute1").unwrap(),
        );
        assert!(Col::ALL.iter().all(|c| !nothing.has(*c)));
    }
}
