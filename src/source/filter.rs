//! Search filters (RFC 4515) and DN comparison.
//!
//! Values that come from outside the configuration (the uids of `sync --only`) are always
//! escaped with [`ldap3::ldap_escape`], so a value like `o'brien*)(uid=*` is matched literally
//! and can never widen the filter.

use super::Selection;

/// The filter that selects the people of `selection` within `filter` (the configured one).
///
/// `None` means there is nobody to search for (`Selection::Only` with no usable uid): the
/// caller must not search at all, rather than fall back to everyone.
pub fn selection_filter(filter: &str, uid_attr: &str, selection: &Selection) -> Option<String> {
    match selection {
        Selection::All => Some(filter.trim().to_owned()),
        Selection::Only(uids) => {
            let clause = only_clause(uid_attr, uids)?;
            Some(and(&[filter, &clause]))
        }
    }
}

/// `(|(uid=v1)(uid=v2)…)` with every value escaped; duplicates and empty values dropped.
/// `None` when no value is left.
pub fn only_clause(uid_attr: &str, uids: &[String]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    let parts: Vec<String> = uids
        .iter()
        .filter(|u| !u.is_empty() && seen.insert(u.as_str()))
        .map(|u| format!("({}={})", uid_attr.trim(), ldap3::ldap_escape(u.as_str())))
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(format!("(|{})", parts.concat()))
    }
}

/// `(&f1 f2 …)` of complete filters (each already in parentheses).
pub fn and(filters: &[&str]) -> String {
    let mut s = String::from("(&");
    for f in filters {
        s.push_str(f.trim());
    }
    s.push(')');
    s
}

/// True when `filter` parses as an LDAP filter.
pub fn is_valid(filter: &str) -> bool {
    ldap3::parse_filter(filter).is_ok()
}

/// A DN in a form for comparison: lower case, no whitespace around the separators
/// `,` `+` `=` (unless escaped), no leading or trailing whitespace.
///
/// Two DNs that name the same entry as the server returns it from two searches compare
/// equal; this is not a full RFC 4514 normaliser (no schema-aware matching, no hex forms).
pub fn normalize_dn(dn: &str) -> String {
    let mut out = String::with_capacity(dn.len());
    let mut chars = dn.trim().chars().peekable();
    let mut pending_space = String::new();
    let mut after_separator = true;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push_str(&pending_space);
                pending_space.clear();
                out.push('\\');
                if let Some(n) = chars.next() {
                    out.extend(n.to_lowercase());
                }
                after_separator = false;
            }
            ',' | '+' | '=' => {
                // Whitespace before a separator is dropped.
                pending_space.clear();
                out.push(c);
                after_separator = true;
            }
            c if c.is_whitespace() => {
                if !after_separator {
                    pending_space.push(' ');
                }
            }
            c => {
                out.push_str(&pending_space);
                pending_space.clear();
                out.extend(c.to_lowercase());
                after_separator = false;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "(&(objectClass=inetOrgPerson)(mail=*))";

    fn only(uids: &[&str]) -> Selection {
        Selection::Only(uids.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn all_uses_the_configured_filter() {
        assert_eq!(selection_filter(F, "uid", &Selection::All).unwrap(), F);
    }

    #[test]
    fn only_ands_an_or_of_exact_matches() {
        let f = selection_filter(F, "uid", &only(&["jdoe", "obrien"])).unwrap();
        assert_eq!(
            f,
            "(&(&(objectClass=inetOrgPerson)(mail=*))(|(uid=jdoe)(uid=obrien)))"
        );
        assert!(is_valid(&f));
    }

    #[test]
    fn only_escapes_every_special_character() {
        let f = selection_filter(F, "uid", &only(&["o'brien*)(uid=*"])).unwrap();
        assert_eq!(
            f,
            "(&(&(objectClass=inetOrgPerson)(mail=*))(|(uid=o'brien\\2a\\29\\28uid=\\2a)))"
        );
        assert!(is_valid(&f));
        // Nothing of the value survives as filter syntax.
        let clause = only_clause(
            "uid",
            &[
                "a)(|(uid=*".into(),
                "b\\c".into(),
                "*".into(),
                "x\0y".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            clause,
            "(|(uid=a\\29\\28|\\28uid=\\2a)(uid=b\\5cc)(uid=\\2a)(uid=x\\00y))"
        );
        assert!(is_valid(&clause));
        assert_eq!(
            clause.matches('(').count(),
            5,
            "one OR plus four equality items: {clause}"
        );
    }

    #[test]
    fn only_keeps_unicode_and_drops_duplicates_and_empties() {
        let clause = only_clause(
            "uid",
            &["müller".into(), "".into(), "müller".into(), "Łukasz".into()],
        )
        .unwrap();
        assert_eq!(clause, "(|(uid=müller)(uid=Łukasz))");
        assert!(is_valid(&clause));
    }

    #[test]
    fn empty_only_means_no_search() {
        assert_eq!(selection_filter(F, "uid", &only(&[])), None);
        assert_eq!(selection_filter(F, "uid", &only(&[""])), None);
    }

    #[test]
    fn rule_filters_combine() {
        let f = and(&[F, "(employeeType=service)", "(|(uid=a))"]);
        assert_eq!(
            f,
            "(&(&(objectClass=inetOrgPerson)(mail=*))(employeeType=service)(|(uid=a)))"
        );
        assert!(is_valid(&f));
        assert!(!is_valid("(&(uid=a)"));
    }

    #[test]
    fn dns_compare_case_and_space_insensitively() {
        let a = normalize_dn("uid=JDoe, ou=People ,dc=Example,  dc=edu");
        let b = normalize_dn("UID = jdoe,ou=people,dc=example,dc=edu ");
        assert_eq!(a, b);
        assert_eq!(a, "uid=jdoe,ou=people,dc=example,dc=edu");
        // Spaces inside a value stay, escapes stay escapes.
        assert_eq!(
            normalize_dn("uid=anna maria,ou=people"),
            "uid=anna maria,ou=people"
        );
        assert_eq!(
            normalize_dn("cn=Smith\\, John,ou=x"),
            "cn=smith\\, john,ou=x"
        );
        assert_ne!(
            normalize_dn("uid=annamaria,ou=people"),
            normalize_dn("uid=anna maria,ou=people")
        );
        assert_eq!(normalize_dn("uid=Jürgen,ou=x"), "uid=jürgen,ou=x");
    }
}
