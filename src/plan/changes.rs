//! The per-field changes of one action: field name → `[before, after]`.
//!
//! A sorted vector rather than a `BTreeMap`: a plan for 50,000 new people holds 800,000 of
//! these pairs, and B-tree nodes sized for eleven entries cost about twice the memory of the
//! pairs themselves. Field names are `Cow<'static, str>`: the planner's names are constants,
//! so those 800,000 pairs need no allocation for their names. Serialises as the JSON object
//! INTERFACE.md specifies.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Index;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// One field's value before and after; `None` is "absent". Serialises as `[before, after]`.
pub type Change = (Option<Value>, Option<Value>);

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes(Vec<(Cow<'static, str>, Change)>);

impl Changes {
    pub fn get(&self, field: &str) -> Option<&Change> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(field))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, field: &str) -> bool {
        self.get(field).is_some()
    }

    /// Sets `field`, replacing an earlier change of it.
    pub fn insert(&mut self, field: impl Into<Cow<'static, str>>, change: Change) {
        let field = field.into();
        match self
            .0
            .binary_search_by(|(k, _)| k.as_ref().cmp(field.as_ref()))
        {
            Ok(i) => self.0[i].1 = change,
            Err(i) => self.0.insert(i, (field, change)),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Change)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl FromIterator<(String, Change)> for Changes {
    fn from_iter<I: IntoIterator<Item = (String, Change)>>(iter: I) -> Self {
        Changes::sorted(iter.into_iter().map(|(k, c)| (Cow::Owned(k), c)).collect())
    }
}

/// The planner's own field names (constants).
impl FromIterator<(&'static str, Change)> for Changes {
    fn from_iter<I: IntoIterator<Item = (&'static str, Change)>>(iter: I) -> Self {
        Changes::sorted(
            iter.into_iter()
                .map(|(k, c)| (Cow::Borrowed(k), c))
                .collect(),
        )
    }
}

impl Changes {
    /// Sorted by field, the last change of a field winning, as with repeated inserts.
    fn sorted(mut v: Vec<(Cow<'static, str>, Change)>) -> Self {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.reverse();
        v.dedup_by(|later, earlier| later.0 == earlier.0);
        v.reverse();
        v.shrink_to_fit();
        Changes(v)
    }
}

impl<'a> IntoIterator for &'a Changes {
    type Item = (&'a str, &'a Change);
    type IntoIter = Box<dyn Iterator<Item = (&'a str, &'a Change)> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

impl Index<&str> for Changes {
    type Output = Change;
    fn index(&self, field: &str) -> &Change {
        self.get(field)
            .unwrap_or_else(|| panic!("no change of `{field}`"))
    }
}

impl Serialize for Changes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for Changes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, Change>::deserialize(deserializer)?
            .into_iter()
            .collect())
    }
}

/// A value for people: strings quoted, lists joined in brackets, absence as `∅` (the report
/// and the stale-plan lines).
pub fn show_value(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => "∅".into(),
        Some(Value::String(s)) => format!("\"{s}\""),
        Some(Value::Array(items)) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect();
            format!("[{}]", parts.join(", "))
        }
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keeps_fields_sorted_and_unique() {
        let mut c: Changes = [
            ("b".to_string(), (None, Some(json!(1)))),
            ("a".to_string(), (None, Some(json!(2)))),
        ]
        .into_iter()
        .collect();
        c.insert("c", (Some(json!(0)), None));
        c.insert("a", (None, Some(json!(3))));
        let fields: Vec<&str> = c.iter().map(|(k, _)| k).collect();
        assert_eq!(fields, ["a", "b", "c"]);
        assert_eq!(c["a"], (None, Some(json!(3))));
        assert!(c.get("z").is_none());
    }

    #[test]
    fn serialises_as_the_interface_object() {
        let c: Changes = [("displayName".to_string(), (None, Some(json!("Jane Doe"))))]
            .into_iter()
            .collect();
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(text, r#"{"displayName":[null,"Jane Doe"]}"#);
        assert_eq!(serde_json::from_str::<Changes>(&text).unwrap(), c);
    }
}
