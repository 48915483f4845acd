//! [`Fields`]: one person's values by [`Field`], as LDAP wants them (`desired`), as the state
//! store last applied them, or as the tenant shows them.
//!
//! A sorted list keyed by the one-byte [`Field`], not a map of strings: planning a semester
//! rollover holds several of these per person at once (the state rows, the tenant's objects,
//! the desired values), and a `BTreeMap<String, Value>` spent about 2 KB on tree nodes and
//! key strings for each (heaptrack, `plan` of 20,000 people). In the state store's
//! `attributes` column it is the same JSON object as before, keyed by [`Field::as_str`] in
//! name order.

use std::fmt;
use std::ops::Index;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::Field;

/// Field → value, at most one value per field, kept in the order of the fields' names (the
/// order of the JSON object it serialises to).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields(Vec<(Field, Value)>);

impl Fields {
    pub fn new() -> Self {
        Fields(Vec::new())
    }

    /// Where `name` is (`Ok`) or would go (`Err`); a name of no field is nowhere.
    fn position(&self, name: &str) -> Result<usize, usize> {
        match name.parse::<Field>() {
            Ok(field) => self.position_of(field),
            Err(_) => Err(self.0.len()),
        }
    }

    /// Where `field` is (`Ok`) or would go (`Err`). Fields mostly arrive in name order (a
    /// stored row, a listing mapped in order), so the end is tried first.
    fn position_of(&self, field: Field) -> Result<usize, usize> {
        let rank = field.rank();
        match self.0.last() {
            None => Err(0),
            Some((last, _)) if last.rank() < rank => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&rank, |(f, _)| f.rank()),
        }
    }

    /// The value of the field named `name` (a [`Field::as_str`]); `None` when absent or when
    /// `name` names no field.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    /// The value of `field`: [`Fields::get`] without going through its name, for the loops
    /// over every field of every object (reconciliation).
    pub fn field(&self, field: Field) -> Option<&Value> {
        self.position_of(field).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Value> {
        self.position(name).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets `field`, returning its earlier value.
    pub fn insert(&mut self, field: Field, value: Value) -> Option<Value> {
        match self.position_of(field) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (field, value));
                None
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        self.position(name).ok().map(|i| self.0.remove(i).1)
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The fields present, in name order.
    pub fn keys(&self) -> impl Iterator<Item = Field> + '_ {
        self.0.iter().map(|(f, _)| *f)
    }

    /// Field and value, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (Field, &Value)> {
        self.0.iter().map(|(f, v)| (*f, v))
    }
}

impl Index<&str> for Fields {
    type Output = Value;

    /// The value of `name`. Panics when it is absent, as a map's index does.
    fn index(&self, name: &str) -> &Value {
        self.get(name)
            .unwrap_or_else(|| panic!("no field `{name}` in {self:?}"))
    }
}

impl FromIterator<(Field, Value)> for Fields {
    /// Later values of a field replace earlier ones, as inserting them one by one would.
    fn from_iter<I: IntoIterator<Item = (Field, Value)>>(iter: I) -> Self {
        let mut fields = Fields::new();
        for (f, v) in iter {
            fields.insert(f, v);
        }
        fields.0.shrink_to_fit();
        fields
    }
}

impl IntoIterator for Fields {
    type Item = (Field, Value);
    type IntoIter = std::vec::IntoIter<(Field, Value)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Serialize for Fields {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (f, v) in &self.0 {
            map.serialize_entry(f.as_str(), v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Fields {
    /// A JSON object keyed by field names. A key that names no [`Field`] is an error: a row
    /// or plan this version does not understand is refused, not half read.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object keyed by field names")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let field = name.parse::<Field>().map_err(de::Error::custom)?;
                    fields.push((field, map.next_value::<Value>()?));
                }
                Ok(fields.into_iter().collect())
            }
        }

        deserializer.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_name_order_and_round_trips_as_a_json_object() {
        let mut f = Fields::new();
        f.insert(Field::Surname, json!("Smith"));
        f.insert(Field::DisplayName, json!("Ann Smith"));
        f.insert(Field::AccountEnabled, json!(false));
        assert_eq!(
            f.insert(Field::DisplayName, json!("Ann")),
            Some(json!("Ann Smith"))
        );
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(
            text,
            r#"{"accountEnabled":false,"displayName":"Ann","surname":"Smith"}"#
        );
        assert_eq!(serde_json::from_str::<Fields>(&text).unwrap(), f);
        assert_eq!(f["surname"], json!("Smith"));
        assert_eq!(f.field(Field::Surname), Some(&json!("Smith")));
        assert_eq!(f.field(Field::Name), None);
        assert_eq!(f.remove("accountEnabled"), Some(json!(false)));
        assert!(!f.contains_key("accountEnabled"));
        assert_eq!(f.get("noSuchField"), None);
        assert_eq!(
            f.keys().collect::<Vec<_>>(),
            [Field::DisplayName, Field::Surname]
        );
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let e = serde_json::from_str::<Fields>(r#"{"displayName":"A","showInAddressList":true}"#)
            .unwrap_err();
        assert!(e.to_string().contains("`showInAddressList`"), "{e}");
    }

    #[test]
    fn a_repeated_key_keeps_the_last_value() {
        let f: Fields = serde_json::from_str(r#"{"name":"a","name":"b"}"#).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f["name"], json!("b"));
    }
}
