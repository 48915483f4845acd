//! Tests for mapping, validation, classification and duplicate settling. Each test builds
//! entries the way `source` delivers them and checks the [`Desired`] that comes out.

use std::collections::BTreeSet;
use std::path::Path;

use super::*;

const CONFIG: &str = r#"
[ldap]
url = "ldap://127.0.0.1:3890"
base_dn = "ou=people,dc=example,dc=edu"

[ldap.attributes]
aliases = ["mailAlternateAddress", "mailLocalAddress"]

[tenant]
accepted_domains = ["example.edu", "Staff.Example.edu"]
onmicrosoft_domain = "exampleedu.onmicrosoft.com"
routing_domain = "exampleedu.mail.onmicrosoft.com"
upn_domain = "example.edu"
"#;

fn config() -> Config {
    Config::from_toml(
        CONFIG,
        Path::new("test.toml"),
        std::iter::empty::<(String, String)>(),
    )
    .unwrap()
}

fn dn(uid: &str) -> String {
    format!("uid={uid},ou=people,dc=example,dc=edu")
}

/// A well-formed person: anchor `uuid-<uid>`, mail `<uid>@example.edu`, given name and surname.
fn person(uid: &str) -> RawEntry {
    let mut e = RawEntry {
        dn: dn(uid),
        ..Default::default()
    };
    set(&mut e, "entryUUID", &[&format!("uuid-{uid}")]);
    set(&mut e, "uid", &[uid]);
    set(&mut e, "mail", &[&format!("{uid}@example.edu")]);
    set(&mut e, "givenName", &["Jane"]);
    set(&mut e, "sn", &["Doe"]);
    e
}

fn set(e: &mut RawEntry, attr: &str, values: &[&str]) {
    e.attrs.insert(
        attr.to_ascii_lowercase(),
        values.iter().map(|v| v.to_string()).collect(),
    );
}

fn with(mut e: RawEntry, attr: &str, values: &[&str]) -> RawEntry {
    set(&mut e, attr, values);
    e
}

fn without(mut e: RawEntry, attr: &str) -> RawEntry {
    e.attrs.remove(&attr.to_ascii_lowercase());
    e
}

fn binary(mut e: RawEntry, attr: &str) -> RawEntry {
    e.binary.insert(attr.to_ascii_lowercase());
    e
}

fn run(entries: &[RawEntry]) -> Desired {
    build(entries, &config(), &BTreeSet::new())
}

fn run_known(entries: &[RawEntry], known: &[&str]) -> Desired {
    let known = known.iter().map(|a| Anchor::new(a).unwrap()).collect();
    build(entries, &config(), &known)
}

/// Maps one entry that must be valid.
fn one(entry: RawEntry) -> Recipient {
    let d = run(&[entry]);
    assert!(
        d.quarantined.is_empty(),
        "unexpected quarantine: {:?}",
        d.quarantined
    );
    assert_eq!(d.recipients.len(), 1, "{d:?}");
    d.recipients.into_iter().next().unwrap()
}

/// Maps one entry that must be quarantined.
fn rejected(entry: RawEntry) -> Quarantined {
    let d = run(&[entry]);
    assert!(
        d.recipients.is_empty(),
        "unexpectedly valid: {:?}",
        d.recipients
    );
    assert_eq!(d.quarantined.len(), 1, "{d:?}");
    d.quarantined.into_iter().next().unwrap()
}

fn addr(a: &str) -> SmtpAddress {
    SmtpAddress::parse(a).unwrap()
}

fn addrs(list: &[&str]) -> BTreeSet<SmtpAddress> {
    list.iter().map(|a| addr(a)).collect()
}

// ---- mapping ---------------------------------------------------------------------------

#[test]
fn plain_person_becomes_a_mail_user_with_every_field() {
    let e = person("jdoe");
    let e = with(e, "displayName", &["Jane Doe"]);
    let e = with(e, "ou", &["Physics"]);
    let e = with(e, "title", &["Professor"]);
    let e = with(e, "telephoneNumber", &["+49 30 1234"]);
    let e = with(e, "mobile", &["+49 170 1234"]);
    let e = with(e, "roomNumber", &["B 2.17"]);
    let e = with(e, "o", &["Example University"]);
    let e = with(e, "mailAlternateAddress", &["jane.doe@example.edu"]);
    let r = one(e);
    assert_eq!(r.anchor.as_str(), "uuid-jdoe");
    assert_eq!(r.dn, dn("jdoe"));
    assert_eq!(r.uid, "jdoe");
    assert_eq!(r.kind, Kind::MailUser);
    assert_eq!(r.upn.as_str(), "jdoe@example.edu");
    assert_eq!(r.alias, "jdoe");
    assert_eq!(r.name, "jdoe");
    assert_eq!(r.display_name, "Jane Doe");
    assert_eq!(r.given_name.as_deref(), Some("Jane"));
    assert_eq!(r.surname.as_deref(), Some("Doe"));
    assert_eq!(r.primary, addr("jdoe@example.edu"));
    assert_eq!(r.secondary, addrs(&["jane.doe@example.edu"]));
    assert_eq!(r.external_address, Some(addr("jdoe@example.edu")));
    assert_eq!(r.forward, None);
    assert_eq!(r.department.as_deref(), Some("Physics"));
    assert_eq!(r.job_title.as_deref(), Some("Professor"));
    assert_eq!(r.phone.as_deref(), Some("+49 30 1234"));
    assert_eq!(r.mobile.as_deref(), Some("+49 170 1234"));
    assert_eq!(r.office.as_deref(), Some("B 2.17"));
    assert_eq!(r.company.as_deref(), Some("Example University"));
    assert!(!r.hidden);
}

#[test]
fn source_count_counts_every_entry_whatever_became_of_it() {
    let entries = [
        person("a"),
        without(person("b"), "mail"),
        without(person("c"), "uid"),
        RawEntry {
            disabled: true,
            ..person("d")
        },
    ];
    let d = run(&entries);
    assert_eq!(d.source_count, 4);
    assert_eq!(
        (
            d.recipients.len(),
            d.skipped_no_mail.len(),
            d.quarantined.len(),
            d.disabled.len()
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(run(&[]), Desired::default());
}

#[test]
fn hidden_flag_is_carried() {
    assert!(
        one(RawEntry {
            hidden: true,
            ..person("svc")
        })
        .hidden
    );
    assert!(!one(person("jdoe")).hidden);
}

#[test]
fn values_are_trimmed_and_blank_counts_as_absent() {
    let e = with(person("jdoe"), "uid", &["  jdoe \t"]);
    let e = with(e, "mail", &[" JDoe@Example.EDU "]);
    let e = with(e, "displayName", &["   "]);
    let e = with(e, "givenName", &[" Jane "]);
    let e = with(e, "ou", &["", "  Physics  "]);
    let r = one(e);
    assert_eq!(r.uid, "jdoe");
    assert_eq!(r.primary.as_str(), "jdoe@example.edu");
    assert_eq!(
        r.display_name, "Jane Doe",
        "blank displayName falls back to the names"
    );
    assert_eq!(r.department.as_deref(), Some("Physics"));
}

#[test]
fn unmapped_attributes_are_ignored() {
    let text = CONFIG.replace(
        "[ldap.attributes]",
        "[ldap.attributes]\ndisplay_name = \"\"\ndepartment = \"\"\nforward = \"\"",
    );
    let config = Config::from_toml(
        &text,
        Path::new("t.toml"),
        std::iter::empty::<(String, String)>(),
    )
    .unwrap();
    let e = with(person("jdoe"), "displayName", &["Ignored"]);
    let e = with(e, "ou", &["Ignored"]);
    let e = with(
        e,
        "mailForwardingAddress",
        &["jdoe@exampleedu.mail.onmicrosoft.com"],
    );
    let d = build(&[e], &config, &BTreeSet::new());
    let r = &d.recipients[0];
    assert_eq!(r.display_name, "Jane Doe");
    assert_eq!(r.department, None);
    assert_eq!((r.kind, r.forward.as_ref()), (Kind::MailUser, None));
}

// ---- required fields and value counts --------------------------------------------------

#[test]
fn missing_anchor_is_quarantined() {
    let q = rejected(without(person("jdoe"), "entryUUID"));
    assert_eq!((q.field.as_str(), q.anchor.as_ref()), ("anchor", None));
    assert_eq!(q.uid.as_deref(), Some("jdoe"));
    assert!(
        q.reason.contains("entryUUID") && q.reason.contains("no value"),
        "{}",
        q.reason
    );
}

#[test]
fn invalid_anchor_is_quarantined() {
    let long = "x".repeat(Anchor::MAX_LEN + 1);
    let q = rejected(with(person("jdoe"), "entryUUID", &[&long]));
    assert_eq!(q.field, "anchor");
    assert!(q.reason.contains("too long"), "{}", q.reason);
    let q = rejected(binary(person("jdoe"), "entryUUID"));
    assert_eq!(q.field, "anchor");
    assert!(q.reason.contains("not UTF-8"), "{}", q.reason);
}

#[test]
fn missing_uid_is_quarantined() {
    let q = rejected(without(person("jdoe"), "uid"));
    assert_eq!(q.field, "uid");
    assert_eq!(q.anchor.as_ref().map(Anchor::as_str), Some("uuid-jdoe"));
    assert_eq!(q.uid, None);
    assert_eq!(q.dn, dn("jdoe"));
}

#[test]
fn missing_mail_is_skipped_not_quarantined() {
    let d = run(&[
        without(person("nomail"), "mail"),
        with(person("blank"), "mail", &["  "]),
        person("ok"),
    ]);
    assert_eq!(d.skipped_no_mail, vec![dn("blank"), dn("nomail")]);
    assert!(d.quarantined.is_empty());
    assert_eq!(d.recipients.len(), 1);
    // Without mail the entry is not meant for the tenant, so a broken anchor does not matter.
    let d = run(&[without(without(person("x"), "mail"), "entryUUID")]);
    assert_eq!((d.skipped_no_mail.len(), d.quarantined.len()), (1, 0));
}

#[test]
fn identity_attributes_with_several_values_are_quarantined() {
    // Picking one anchor, uid or primary address would be a guess about who the person is.
    for (attr, field) in [("entryUUID", "anchor"), ("uid", "uid"), ("mail", "mail")] {
        let e = person("jdoe");
        let first = e.first(attr).unwrap().to_owned();
        let second = format!("x{first}");
        let d = run(&[with(e, attr, &[&first, &second])]);
        assert!(d.recipients.is_empty(), "{attr}");
        assert!(d.warnings.is_empty(), "{attr}: {:?}", d.warnings);
        let q = &d.quarantined[0];
        assert_eq!(q.field, field, "{attr}");
        assert!(
            q.reason.contains(attr) && q.reason.contains("has 2 values; expected one"),
            "{}",
            q.reason
        );
    }
}

#[test]
fn names_with_several_values_take_the_first_with_a_warning() {
    for (attr, field) in [
        ("displayName", "display_name"),
        ("givenName", "given_name"),
        ("sn", "surname"),
    ] {
        // The order is the server's, not alphabetical: the first value is "Zeta".
        let d = run(&[with(person("jdoe"), attr, &["Zeta", "Alpha"])]);
        assert!(d.quarantined.is_empty(), "{attr}: {:?}", d.quarantined);
        let r = &d.recipients[0];
        let got = match field {
            "display_name" => Some(r.display_name.as_str()),
            "given_name" => r.given_name.as_deref(),
            _ => r.surname.as_deref(),
        };
        assert_eq!(got, Some("Zeta"), "{attr}");
        assert_eq!(d.warnings.len(), 1, "{attr}: {:?}", d.warnings);
        let w = &d.warnings[0];
        assert_eq!(w.dn, dn("jdoe"));
        assert_eq!(w.uid.as_deref(), Some("jdoe"));
        assert_eq!(w.field, field);
        assert!(
            w.message.contains(attr)
                && w.message.contains("has 2 values")
                && w.message.contains("\"Zeta\", is used")
                && w.message.contains("\"Alpha\""),
            "{}",
            w.message
        );
    }
}

#[test]
fn a_repeated_or_blank_second_value_is_no_choice_and_no_warning() {
    // Two instances of an attribute can carry the same value; trimming can make two equal.
    let d = run(&[with(person("jdoe"), "sn", &["Doe", " Doe ", "  "])]);
    assert_eq!(d.recipients[0].surname.as_deref(), Some("Doe"));
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
}

#[test]
fn a_quarantined_entry_gets_no_warning_and_warnings_are_sorted() {
    let broken = with(
        with(person("bbb"), "sn", &["One", "Two"]),
        "mail",
        &["not an address"],
    );
    let d = run(&[
        with(person("zed"), "givenName", &["Z1", "Z2"]),
        broken,
        with(
            with(person("abe"), "sn", &["A1", "A2"]),
            "givenName",
            &["G1", "G2"],
        ),
    ]);
    assert_eq!(d.quarantined.len(), 1);
    let seen: Vec<(&str, &str)> = d
        .warnings
        .iter()
        .map(|w| (w.uid.as_deref().unwrap(), w.field.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("abe", "given_name"),
            ("abe", "surname"),
            ("zed", "given_name")
        ]
    );
}

#[test]
fn an_overlong_first_name_value_is_still_quarantined() {
    // Taking the first value does not relax the limits on it.
    let long = "x".repeat(65);
    let q = rejected(with(person("jdoe"), "sn", &[&long, "Short"]));
    assert_eq!(q.field, "surname");
    assert!(q.reason.contains("65 characters"), "{}", q.reason);
}

#[test]
fn phone_and_address_book_attributes_take_the_first_value() {
    let e = with(person("jdoe"), "telephoneNumber", &["+49 1", "+49 2"]);
    let e = with(e, "ou", &["Physics", "people"]);
    let e = with(e, "roomNumber", &["A1", "B2"]);
    let r = one(e);
    assert_eq!(r.phone.as_deref(), Some("+49 1"));
    assert_eq!(r.department.as_deref(), Some("Physics"));
    assert_eq!(r.office.as_deref(), Some("A1"));
}

#[test]
fn non_utf8_values_are_quarantined_naming_the_field() {
    for (attr, field) in [
        ("uid", "uid"),
        ("mail", "mail"),
        ("mailAlternateAddress", "aliases"),
        ("mailLocalAddress", "aliases"),
        ("mailForwardingAddress", "forward"),
        ("displayName", "display_name"),
        ("givenName", "given_name"),
        ("sn", "surname"),
        ("ou", "department"),
        ("title", "job_title"),
        ("telephoneNumber", "phone"),
        ("mobile", "mobile"),
        ("roomNumber", "office"),
        ("o", "company"),
    ] {
        let q = rejected(binary(person("jdoe"), attr));
        assert_eq!(q.field, field, "{attr}");
        assert!(
            q.reason.contains(attr) && q.reason.contains("not UTF-8"),
            "{}",
            q.reason
        );
    }
    // A mail that is only binary is still a mail: quarantined, not skipped.
    let q = rejected(binary(without(person("jdoe"), "mail"), "mail"));
    assert_eq!(q.field, "mail");
}

#[test]
fn control_characters_are_quarantined_and_escaped_in_the_reason() {
    let q = rejected(with(person("jdoe"), "displayName", &["Jane\u{1b}[31m Doe"]));
    assert_eq!(q.field, "display_name");
    assert!(!q.reason.contains('\u{1b}'), "{:?}", q.reason);
    assert!(q.reason.contains("control character"), "{}", q.reason);
}

// ---- uid, UPN, alias, Name -------------------------------------------------------------

#[test]
fn uid_that_cannot_be_a_upn_is_quarantined() {
    let q = rejected(with(person("x"), "uid", &["ab cd"]));
    assert_eq!(q.field, "uid");
    assert!(
        q.reason
            .starts_with("uid `ab cd` cannot be a user principal name: "),
        "{}",
        q.reason
    );
    // A character no transliteration fixes still quarantines, naming the uid as written.
    let q = rejected(with(person("x"), "uid", &["jürgen müller"]));
    assert_eq!(q.field, "uid");
    assert!(q.reason.contains("`jürgen müller`"), "{}", q.reason);
}

#[test]
fn unicode_uid_gets_an_ascii_upn_and_keeps_its_name() {
    // Entra refuses non-ASCII in a UPN: the uid is transliterated for it, and for the alias.
    let r = one(with(person("x"), "uid", &["müller"]));
    assert_eq!(r.upn.as_str(), "muller@example.edu");
    assert_eq!(r.alias, "muller");
    assert_eq!(r.name, "müller");
    assert_eq!(r.uid, "müller");
}

#[test]
fn upn_is_uid_at_upn_domain() {
    let r = one(with(person("x"), "uid", &["O'Brien"]));
    assert_eq!(r.upn.as_str(), "o'brien@example.edu");
    assert_eq!(r.name, "O'Brien");
    assert_eq!(r.alias, "O'Brien");
}

#[test]
fn uid_longer_than_64_characters_is_quarantined() {
    let ok = "a".repeat(64);
    assert_eq!(one(with(person("x"), "uid", &[&ok])).name, ok);
    let long = "a".repeat(65);
    let q = rejected(with(person("x"), "uid", &[&long]));
    assert_eq!(q.field, "uid");
    assert!(
        q.reason.contains("65 characters") && q.reason.contains("at most 64"),
        "{}",
        q.reason
    );
}

#[test]
fn mail_nickname_is_ascii_and_valid() {
    for (uid, alias) in [
        ("müller", Some("muller")),
        ("Łukasz", Some("Lukasz")),
        ("nguyễn", Some("nguyen")),
        ("o'brien", Some("o'brien")),
        ("ab cd", Some("abcd")),
        ("a..b", Some("a.b")),
        (".a.", Some("a")),
        ("a(b)c@d\\e[f]\"g;h:i<j>k,l", Some("abcdefghijkl")),
        ("j.doe+x", Some("j.doe+x")),
        ("()@", None),
        ("...", None),
        ("", None),
    ] {
        assert_eq!(mail_nickname(uid).as_deref(), alias, "{uid:?}");
    }
    assert_eq!(mail_nickname(&"a".repeat(100)).unwrap().len(), 64);
    // Truncation right after a dot must not leave a trailing dot.
    let dotted = format!("{}.b", "a".repeat(63));
    assert_eq!(mail_nickname(&dotted).unwrap(), "a".repeat(63));
}

#[test]
fn mail_nickname_never_contains_what_graph_forbids() {
    let forbidden = [
        '@', '(', ')', '\\', '[', ']', '"', ';', ':', '<', '>', ',', ' ',
    ];
    let samples = [
        "Ærøskøbing Ünïcödé",
        "中文名字",
        "Владимир Путин",
        "a@b(c)d\\e[f]g\"h;i:j<k>l,m n",
        "«ﬁ»",
        "😀x😀",
        "Ｆｕｌｌ＠ｗｉｄｔｈ",
        "tab\there",
        ". . .a. .",
    ];
    for s in samples {
        if let Some(a) = mail_nickname(s) {
            assert!(
                a.is_ascii() && !a.chars().any(|c| forbidden.contains(&c)),
                "{s:?} -> {a:?}"
            );
            assert!(
                !a.starts_with('.') && !a.ends_with('.') && !a.contains(".."),
                "{s:?} -> {a:?}"
            );
            assert!(a.len() <= 64);
        }
    }
}

// ---- names and lengths -----------------------------------------------------------------

#[test]
fn display_name_falls_back_to_names_then_uid() {
    assert_eq!(
        one(with(person("jdoe"), "displayName", &["Dr. Jane Doe"])).display_name,
        "Dr. Jane Doe"
    );
    assert_eq!(one(person("jdoe")).display_name, "Jane Doe");
    assert_eq!(one(without(person("jdoe"), "sn")).display_name, "jdoe");
    assert_eq!(
        one(without(person("jdoe"), "givenName")).display_name,
        "jdoe"
    );
}

#[test]
fn display_name_longer_than_256_characters_is_quarantined() {
    let ok = "ü".repeat(256);
    assert_eq!(
        one(with(person("jdoe"), "displayName", &[&ok])).display_name,
        ok
    );
    let q = rejected(with(person("jdoe"), "displayName", &[&"x".repeat(257)]));
    assert_eq!(q.field, "display_name");
    assert!(
        q.reason.contains("257 characters") && q.reason.contains("at most 256"),
        "{}",
        q.reason
    );
    assert!(
        q.reason.len() < 200,
        "the value is abbreviated: {}",
        q.reason
    );
}

#[test]
fn unicode_names_pass_through_intact_with_an_ascii_alias() {
    for (display, given, sn) in [
        ("Nguyễn Văn An", "Văn An", "Nguyễn"),
        ("Łukasz Żółć", "Łukasz", "Żółć"),
        ("Jürgen Müller", "Jürgen", "Müller"),
        ("Siobhán O'Brien", "Siobhán", "O'Brien"),
    ] {
        let e = with(person("an.nguyen"), "displayName", &[display]);
        let e = with(e, "givenName", &[given]);
        let r = one(with(e, "sn", &[sn]));
        assert_eq!(r.display_name, display);
        assert_eq!(r.given_name.as_deref(), Some(given));
        assert_eq!(r.surname.as_deref(), Some(sn));
        assert_eq!(r.alias, "an.nguyen");
    }
    // Derived display names keep the unicode too.
    let e = with(person("jm"), "givenName", &["Jürgen"]);
    assert_eq!(
        one(with(e, "sn", &["Müller"])).display_name,
        "Jürgen Müller"
    );
}

#[test]
fn address_book_lengths_are_limited_in_characters() {
    for (attr, field, max) in [
        ("givenName", "given_name", 64),
        ("sn", "surname", 64),
        ("ou", "department", 64),
        ("title", "job_title", 64),
        ("o", "company", 64),
        ("roomNumber", "office", 128),
        ("telephoneNumber", "phone", 64),
        ("mobile", "mobile", 64),
    ] {
        // Multi-byte characters count once each.
        let ok = "é".repeat(max);
        one(with(person("jdoe"), attr, &[&ok]));
        let q = rejected(with(person("jdoe"), attr, &[&"é".repeat(max + 1)]));
        assert_eq!(q.field, field, "{attr}");
        let expect = format!("{} characters long; at most {max}", max + 1);
        assert!(
            q.reason.contains(&expect) && q.reason.contains(attr),
            "{}",
            q.reason
        );
    }
}

// ---- addresses -------------------------------------------------------------------------

#[test]
fn bad_mail_syntax_is_quarantined_quoting_the_value() {
    for bad in [
        "jane doe@example.edu",
        "jane",
        "jürgen@example.edu",
        "a..b@example.edu",
    ] {
        let q = rejected(with(person("jdoe"), "mail", &[bad]));
        assert_eq!(q.field, "mail");
        assert!(q.reason.contains(&format!("`{bad}`")), "{}", q.reason);
    }
}

#[test]
fn mail_must_be_in_an_accepted_domain() {
    let q = rejected(with(person("jdoe"), "mail", &["x@example.org"]));
    assert_eq!(q.field, "mail");
    assert_eq!(
        q.reason,
        "`x@example.org`: domain example.org is not an accepted domain of the tenant"
    );
    // Exact match only: a subdomain is a different domain.
    assert_eq!(
        rejected(with(person("jdoe"), "mail", &["x@sub.example.edu"])).field,
        "mail"
    );
    // The tenant's Microsoft domains are not for primaries.
    assert_eq!(
        rejected(with(
            person("jdoe"),
            "mail",
            &["x@exampleedu.onmicrosoft.com"]
        ))
        .field,
        "mail"
    );
    // Case-insensitive on both sides.
    assert_eq!(
        one(with(person("jdoe"), "mail", &["X@STAFF.example.EDU"]))
            .primary
            .as_str(),
        "x@staff.example.edu"
    );
}

#[test]
fn aliases_come_from_every_alias_attribute() {
    let e = with(
        person("jdoe"),
        "mailAlternateAddress",
        &["jane.doe@example.edu", "JDoe@Example.edu"],
    );
    let e = with(
        e,
        "mailLocalAddress",
        &[
            "jd@staff.example.edu",
            "jdoe@exampleedu.mail.onmicrosoft.com",
        ],
    );
    let r = one(e);
    // The alias equal to the primary is dropped silently; the routing domain is the tenant's own.
    assert_eq!(
        r.secondary,
        addrs(&[
            "jane.doe@example.edu",
            "jd@staff.example.edu",
            "jdoe@exampleedu.mail.onmicrosoft.com"
        ])
    );
    assert!(!r.secondary.contains(&r.primary));
    assert_eq!(
        r.kind,
        Kind::MailUser,
        "an alias in the routing domain is not a forward"
    );
}

#[test]
fn bad_aliases_are_quarantined_naming_the_value() {
    let q = rejected(with(
        person("jdoe"),
        "mailLocalAddress",
        &["ok@example.edu", "not an address"],
    ));
    assert_eq!(q.field, "aliases");
    assert!(q.reason.contains("`not an address`"), "{}", q.reason);
    let q = rejected(with(
        person("jdoe"),
        "mailAlternateAddress",
        &["jdoe@gmail.com"],
    ));
    assert_eq!(q.field, "aliases");
    assert_eq!(
        q.reason,
        "`jdoe@gmail.com`: domain gmail.com is not an accepted domain of the tenant"
    );
}

// ---- classification --------------------------------------------------------------------

#[test]
fn forward_into_the_routing_domain_makes_a_mailbox() {
    let r = one(with(
        person("jdoe"),
        "mailForwardingAddress",
        &["jdoe@exampleedu.mail.onmicrosoft.com"],
    ));
    assert_eq!(r.kind, Kind::Mailbox);
    assert_eq!(
        r.forward,
        Some(addr("jdoe@exampleedu.mail.onmicrosoft.com"))
    );
    assert_eq!(
        r.secondary,
        addrs(&["jdoe@exampleedu.mail.onmicrosoft.com"])
    );
    assert_eq!(r.external_address, None);
}

#[test]
fn forward_into_the_moera_makes_a_mailbox() {
    let r = one(with(
        person("jdoe"),
        "mailForwardingAddress",
        &["JDoe@ExampleEDU.onmicrosoft.com"],
    ));
    assert_eq!(r.kind, Kind::Mailbox);
    assert_eq!(r.forward, Some(addr("jdoe@exampleedu.onmicrosoft.com")));
    assert!(
        r.secondary
            .contains(&addr("jdoe@exampleedu.onmicrosoft.com"))
    );
    assert_eq!(r.external_address, None);
}

#[test]
fn external_forward_stays_a_mail_user() {
    let r = one(with(
        person("jdoe"),
        "mailForwardingAddress",
        &["jane@gmail.com"],
    ));
    assert_eq!(r.kind, Kind::MailUser);
    assert_eq!(r.forward, Some(addr("jane@gmail.com")));
    assert_eq!(r.external_address, Some(addr("jdoe@example.edu")));
    assert!(
        r.secondary.is_empty(),
        "an external target is not the recipient's address"
    );
}

#[test]
fn forward_to_an_accepted_domain_stays_a_mail_user() {
    let r = one(with(
        person("jdoe"),
        "mailForwardingAddress",
        &["office@staff.example.edu"],
    ));
    assert_eq!(r.kind, Kind::MailUser);
    assert_eq!(r.forward, Some(addr("office@staff.example.edu")));
    assert!(r.secondary.is_empty());
}

#[test]
fn every_tenant_forward_target_is_owned_and_the_first_is_the_forward() {
    let e = with(
        person("jdoe"),
        "mailForwardingAddress",
        &[
            "jane@gmail.com",
            "jdoe@exampleedu.mail.onmicrosoft.com",
            "jdoe@exampleedu.onmicrosoft.com",
        ],
    );
    let r = one(e);
    assert_eq!(r.kind, Kind::Mailbox);
    assert_eq!(
        r.forward,
        Some(addr("jdoe@exampleedu.mail.onmicrosoft.com"))
    );
    assert_eq!(
        r.secondary,
        addrs(&[
            "jdoe@exampleedu.mail.onmicrosoft.com",
            "jdoe@exampleedu.onmicrosoft.com"
        ])
    );
}

#[test]
fn bad_forward_is_quarantined() {
    let q = rejected(with(
        person("jdoe"),
        "mailForwardingAddress",
        &["|/usr/bin/vacation"],
    ));
    assert_eq!(q.field, "forward");
    assert!(q.reason.contains("`|/usr/bin/vacation`"), "{}", q.reason);
}

// ---- disabled --------------------------------------------------------------------------

#[test]
fn disabled_entries_are_leavers_even_when_otherwise_broken() {
    let broken = with(person("gone"), "mailAlternateAddress", &["gone@gmail.com"]);
    let d = run(&[
        RawEntry {
            disabled: true,
            ..broken
        },
        RawEntry {
            disabled: true,
            ..without(person("nomail"), "mail")
        },
        RawEntry {
            disabled: true,
            ..binary(person("bin"), "displayName")
        },
    ]);
    assert!(
        d.recipients.is_empty() && d.quarantined.is_empty() && d.skipped_no_mail.is_empty(),
        "{d:?}"
    );
    let got: Vec<_> = d
        .disabled
        .iter()
        .map(|x| (x.anchor.as_str(), x.dn.clone(), x.uid.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("uuid-bin", dn("bin"), Some("bin")),
            ("uuid-gone", dn("gone"), Some("gone")),
            ("uuid-nomail", dn("nomail"), Some("nomail")),
        ]
    );
}

#[test]
fn disabled_entry_without_a_valid_anchor_is_quarantined() {
    let d = run(&[RawEntry {
        disabled: true,
        ..without(person("gone"), "entryUUID")
    }]);
    assert!(d.disabled.is_empty());
    assert_eq!(d.quarantined[0].field, "anchor");
}

// ---- duplicates ------------------------------------------------------------------------

#[test]
fn address_claimed_twice_quarantines_the_later_entry_in_either_input_order() {
    let a = person("aaa");
    let b = with(person("bbb"), "mail", &["aaa@example.edu"]);
    for entries in [[a.clone(), b.clone()], [b, a]] {
        let d = run(&entries);
        assert_eq!(d.recipients.len(), 1);
        assert_eq!(d.recipients[0].uid, "aaa");
        let q = &d.quarantined[0];
        assert_eq!((q.dn.clone(), q.field.as_str()), (dn("bbb"), "mail"));
        assert_eq!(
            q.reason,
            format!(
                "address aaa@example.edu is already claimed by {}, so {} cannot have it too",
                dn("aaa"),
                dn("bbb")
            )
        );
        assert_eq!(q.anchor.as_ref().map(Anchor::as_str), Some("uuid-bbb"));
    }
}

#[test]
fn an_already_provisioned_person_keeps_their_address_against_a_newcomer() {
    // `zzz` sorts after `aaa` by DN, but is already in the tenant.
    let old = with(person("zzz"), "mailAlternateAddress", &["team@example.edu"]);
    let new = with(person("aaa"), "mailAlternateAddress", &["team@example.edu"]);
    for entries in [[old.clone(), new.clone()], [new.clone(), old.clone()]] {
        let d = run_known(&entries, &["uuid-zzz"]);
        assert_eq!(
            d.recipients
                .iter()
                .map(|r| r.uid.as_str())
                .collect::<Vec<_>>(),
            ["zzz"]
        );
        let q = &d.quarantined[0];
        assert_eq!((q.dn.clone(), q.field.as_str()), (dn("aaa"), "aliases"));
        assert!(
            q.reason.contains(&dn("zzz")) && q.reason.contains(&dn("aaa")),
            "{}",
            q.reason
        );
        assert!(q.reason.contains("already provisioned"), "{}", q.reason);
    }
    // Without the known anchor, DN order decides.
    let d = run(&[old, new]);
    assert_eq!(d.recipients[0].uid, "aaa");
    assert_eq!(d.quarantined[0].dn, dn("zzz"));
}

#[test]
fn dn_order_ignores_case() {
    let mut a = with(
        person("bbb"),
        "mailAlternateAddress",
        &["shared@example.edu"],
    );
    a.dn = "UID=bbb,ou=people,dc=example,dc=edu".into();
    let mut b = with(
        person("aaa"),
        "mailAlternateAddress",
        &["shared@example.edu"],
    );
    b.dn = "uid=aaa,ou=people,dc=example,dc=edu".into();
    // Byte order would put `UID=bbb` first.
    assert!(a.dn < b.dn);
    let d = run(&[a, b]);
    assert_eq!(
        d.recipients[0].uid, "aaa",
        "aaa sorts before BBB case-insensitively"
    );
    assert_eq!(
        (
            d.quarantined[0].dn.as_str(),
            d.quarantined[0].field.as_str()
        ),
        ("UID=bbb,ou=people,dc=example,dc=edu", "aliases")
    );
}

#[test]
fn tenant_forward_target_claimed_twice_names_the_forward() {
    let a = with(
        person("aaa"),
        "mailForwardingAddress",
        &["shared@exampleedu.mail.onmicrosoft.com"],
    );
    let b = with(
        person("bbb"),
        "mailForwardingAddress",
        &["shared@exampleedu.mail.onmicrosoft.com"],
    );
    let d = run(&[b, a]);
    assert_eq!(d.recipients[0].uid, "aaa");
    assert_eq!(
        (d.quarantined[0].dn.clone(), d.quarantined[0].field.as_str()),
        (dn("bbb"), "forward")
    );
    // An external forward target is not owned, so two people may forward to the same place.
    let a = with(person("aaa"), "mailForwardingAddress", &["x@gmail.com"]);
    let b = with(person("bbb"), "mailForwardingAddress", &["x@gmail.com"]);
    assert_eq!(run(&[a, b]).recipients.len(), 2);
}

#[test]
fn same_uid_in_another_case_clashes_on_the_upn() {
    let a = person("jdoe");
    let mut b = with(person("JDoe2"), "uid", &["JDoe"]);
    b.dn = dn("zdoe");
    let d = run(&[b, a]);
    assert_eq!(d.recipients[0].uid, "jdoe");
    let q = &d.quarantined[0];
    assert_eq!(q.field, "uid");
    assert!(
        q.reason
            .starts_with("user principal name jdoe@example.edu is already claimed by"),
        "{}",
        q.reason
    );
}

#[test]
fn upn_and_addresses_share_one_namespace() {
    // `aaa`'s alias is the UPN `bbb` would get.
    let a = with(person("aaa"), "mailAlternateAddress", &["bbb@example.edu"]);
    let b = with(person("bbb"), "mail", &["b.b@example.edu"]);
    let d = run(&[a.clone(), b.clone()]);
    let q = &d.quarantined[0];
    assert_eq!((q.dn.clone(), q.field.as_str()), (dn("bbb"), "uid"));
    assert!(q.reason.contains("as its address"), "{}", q.reason);
    // The other way round: `bbb` holds the UPN first because it is already provisioned.
    let d = run_known(&[a, b], &["uuid-bbb"]);
    let q = &d.quarantined[0];
    assert_eq!((q.dn.clone(), q.field.as_str()), (dn("aaa"), "aliases"));
    assert!(
        q.reason.contains("as its user principal name"),
        "{}",
        q.reason
    );
    // A person's own UPN and address may coincide.
    assert_eq!(
        one(person("jdoe")).upn.as_str(),
        one(person("jdoe")).primary.as_str()
    );
}

#[test]
fn duplicate_anchor_quarantines_the_later_entry() {
    let a = person("aaa");
    let b = with(person("bbb"), "entryUUID", &["UUID-AAA"]);
    let d = run(&[b.clone(), a.clone()]);
    assert_eq!(d.recipients.len(), 1);
    assert_eq!(d.recipients[0].dn, dn("aaa"));
    let q = &d.quarantined[0];
    assert_eq!((q.dn.clone(), q.field.as_str()), (dn("bbb"), "anchor"));
    assert!(
        q.reason.contains("uuid-aaa") && q.reason.contains(&dn("aaa")),
        "{}",
        q.reason
    );
    // A leaver holds its anchor too.
    let d = run(&[
        RawEntry {
            disabled: true,
            ..a
        },
        b,
    ]);
    assert_eq!(d.disabled.len(), 1);
    assert_eq!(
        (d.quarantined[0].dn.clone(), d.quarantined[0].field.as_str()),
        (dn("bbb"), "anchor")
    );
}

#[test]
fn quarantined_entries_claim_nothing() {
    // `aaa` would win the address by DN order, but it is invalid, so `bbb` keeps it.
    let a = with(
        with(
            person("aaa"),
            "mailAlternateAddress",
            &["shared@example.edu"],
        ),
        "mail",
        &["aaa@example.edu", "aaa2@example.edu"],
    );
    let b = with(
        person("bbb"),
        "mailAlternateAddress",
        &["shared@example.edu"],
    );
    let d = run(&[a, b]);
    assert_eq!(
        d.recipients
            .iter()
            .map(|r| r.uid.as_str())
            .collect::<Vec<_>>(),
        ["bbb"]
    );
    assert_eq!(d.quarantined[0].field, "mail");
    // A clash loser claims nothing either: `ccc` loses to `aaa` and must not block `ddd`.
    let a = with(person("aaa"), "mailAlternateAddress", &["one@example.edu"]);
    let c = with(
        person("ccc"),
        "mailAlternateAddress",
        &["one@example.edu", "two@example.edu"],
    );
    let e = with(person("ddd"), "mailAlternateAddress", &["two@example.edu"]);
    let d = run(&[e, c, a]);
    assert_eq!(
        d.recipients
            .iter()
            .map(|r| r.uid.as_str())
            .collect::<Vec<_>>(),
        ["aaa", "ddd"]
    );
    assert_eq!(
        d.quarantined
            .iter()
            .map(|q| q.dn.clone())
            .collect::<Vec<_>>(),
        [dn("ccc")]
    );
}

// ---- output order and determinism ------------------------------------------------------

/// A directory with something of everything, including clashes.
fn campus() -> Vec<RawEntry> {
    let mut v = Vec::new();
    for i in 0..40 {
        let uid = format!("user{i:02}");
        let mut e = person(&uid);
        // Anchors sort differently from DNs.
        set(
            &mut e,
            "entryUUID",
            &[&format!("{:08x}-anchor", (i * 7919) % 1000)],
        );
        match i % 8 {
            0 => set(
                &mut e,
                "mailForwardingAddress",
                &[&format!("{uid}@exampleedu.mail.onmicrosoft.com")],
            ),
            1 => set(&mut e, "mailAlternateAddress", &["shared@example.edu"]),
            2 => e.attrs.remove("mail").map(|_| ()).unwrap_or(()),
            3 => set(&mut e, "mail", &["bad address"]),
            4 => e.disabled = true,
            5 => set(&mut e, "displayName", &["Nguyễn Văn An"]),
            6 => set(&mut e, "mailLocalAddress", &["shared@example.edu"]),
            _ => e.hidden = true,
        }
        v.push(e);
    }
    v
}

#[test]
fn shuffled_input_gives_identical_output() {
    let entries = campus();
    // user14 (one of those wanting `shared@`) and user00 are already provisioned.
    let known = ["00000362-anchor", "00000000-anchor"];
    let expected = run_known(&entries, &known);
    let shared = addr("shared@example.edu");
    let holders: Vec<_> = expected
        .recipients
        .iter()
        .filter(|r| r.secondary.contains(&shared))
        .collect();
    assert_eq!(holders.len(), 1);
    assert_eq!(
        holders[0].uid, "user14",
        "the known anchor wins over DN order"
    );
    let mut shuffled = entries.clone();
    // A fixed pseudo-random permutation (LCG), plus reversal and rotation.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..shuffled.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        shuffled.swap(i, (seed >> 33) as usize % (i + 1));
    }
    assert_eq!(run_known(&shuffled, &known), expected);
    shuffled.reverse();
    assert_eq!(run_known(&shuffled, &known), expected);
    shuffled.rotate_left(13);
    assert_eq!(run_known(&shuffled, &known), expected);
}

#[test]
fn outputs_are_sorted() {
    let d = run(&campus());
    let anchors: Vec<_> = d.recipients.iter().map(|r| r.anchor.clone()).collect();
    assert!(
        anchors.windows(2).all(|w| w[0] < w[1]),
        "recipients by anchor"
    );
    assert!(
        d.quarantined.windows(2).all(|w| w[0].dn <= w[1].dn),
        "quarantined by dn"
    );
    assert!(
        d.disabled.windows(2).all(|w| w[0].anchor < w[1].anchor),
        "disabled by anchor"
    );
    assert!(
        d.skipped_no_mail.windows(2).all(|w| w[0] <= w[1]),
        "skipped sorted"
    );
    assert_eq!(d.source_count, 40);
    assert_eq!(d.skipped_no_mail.len(), 5);
    assert_eq!(d.disabled.len(), 5);
    // 5 bad mails, and 9 of the 10 entries that want `shared@` lose it.
    assert_eq!(d.quarantined.len(), 5 + 9);
    assert_eq!(d.recipients.len(), 40 - 5 - 5 - 14);
}

#[test]
fn a_migrating_person_is_a_mailbox_forwarding_to_on_prem_until_ldap_forwards_into_the_tenant() {
    let config = config();
    let entries = [
        person("jdoe"),
        person("asmith"),
        with(
            person("moved"),
            "mailForwardingAddress",
            &["moved@exampleedu.mail.onmicrosoft.com"],
        ),
    ];
    let migrating: BTreeSet<Anchor> = ["uuid-jdoe", "uuid-moved"]
        .into_iter()
        .map(|a| Anchor::new(a).unwrap())
        .collect();
    let mut mapper = Mapper::new(&config).migrating(migrating, "mbox.example.edu");
    for e in &entries {
        mapper.push(e);
    }
    let d = mapper.finish(&BTreeSet::new());
    let by = |uid: &str| d.recipients.iter().find(|r| r.uid == uid).unwrap();
    let jdoe = by("jdoe");
    assert_eq!(jdoe.kind, Kind::Mailbox);
    assert_eq!(jdoe.external_address, None);
    assert_eq!(
        jdoe.forwarding.as_ref().map(SmtpAddress::as_str),
        Some("jdoe@mbox.example.edu")
    );
    assert_eq!(
        jdoe.fields()["forwardingSmtpAddress"],
        "jdoe@mbox.example.edu"
    );
    // The mailbox owns the tenant routing address before cutover points LDAP at it.
    assert!(
        jdoe.secondary
            .iter()
            .any(|a| a.as_str() == "jdoe@exampleedu.mail.onmicrosoft.com"),
        "{:?}",
        jdoe.secondary
    );
    // Everybody else is unaffected.
    let asmith = by("asmith");
    assert_eq!((asmith.kind, &asmith.forwarding), (Kind::MailUser, &None));
    assert!(!asmith.fields().contains_key("forwardingSmtpAddress"));
    // After cutover LDAP forwards into the tenant: the ordinary rule, no forwarding.
    let moved = by("moved");
    assert_eq!((moved.kind, &moved.forwarding), (Kind::Mailbox, &None));
}

/// Directories full of clashes of every kind (anchors, UPNs in two cases, Names, aliases,
/// addresses that are another's UPN, leavers sharing an anchor, chains where a loser would
/// have blocked a third): settling only the entries that share a value gives exactly what
/// settling everybody in order gives. Names and aliases are drawn on their own here: mapped
/// from a uid they clash only where the UPN does, and the shortcut must not rely on that.
#[test]
fn settling_only_rivals_equals_settling_everybody() {
    let config = config();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut clashes = 0;
    for round in 0..300 {
        let size = 2 + next(30);
        let pool = 1 + next(3 * size);
        let mut entries = Vec::new();
        let mut names = Vec::new();
        for i in 0..size {
            let uid = match next(4) {
                0 => format!("U{}", next(pool)),
                _ => format!("u{}", next(pool)),
            };
            let mut e = person(&uid);
            e.dn = format!("uid={uid}-{i},ou=people,dc=example,dc=edu");
            set(&mut e, "entryUUID", &[&format!("uuid-{}", next(pool * 2))]);
            set(
                &mut e,
                "mail",
                &[&format!("m{}@example.edu", next(pool * 3))],
            );
            let aliases: Vec<String> = (0..next(3))
                .map(|_| match next(2) {
                    0 => format!("u{}@example.edu", next(pool)),
                    _ => format!("a{}@example.edu", next(pool * 2)),
                })
                .collect();
            let aliases: Vec<&str> = aliases.iter().map(String::as_str).collect();
            set(&mut e, "mailAlternateAddress", &aliases);
            e.disabled = next(6) == 0;
            entries.push(e);
            let name = ["n", "N", "ñ", "Ñ"][next(4) as usize];
            let alias = ["x", "X"][next(2) as usize];
            names.push((
                format!("{name}{}", next(pool * 2)),
                format!("{alias}{}", next(pool * 2)),
            ));
        }
        let known: BTreeSet<Anchor> = (0..next(pool))
            .map(|_| Anchor::new(&format!("uuid-{}", next(pool * 2))).unwrap())
            .collect();
        let claimants = || {
            let mut mapper = Mapper::new(&config);
            for e in &entries {
                mapper.push(e);
            }
            let mut claimants = mapper.claimants;
            for (c, (name, alias)) in claimants.iter_mut().zip(&names) {
                if let claims::Claimant::Recipient(c) = c {
                    c.recipient.name = name.clone();
                    c.recipient.alias = alias.clone();
                }
            }
            claimants
        };
        let sorted = |s: claims::Settled| {
            let mut s = (s.recipients, s.disabled, s.quarantined);
            s.0.sort_by(|a, b| (&a.anchor, &a.dn).cmp(&(&b.anchor, &b.dn)));
            s.1.sort_by(|a, b| (&a.anchor, &a.dn).cmp(&(&b.anchor, &b.dn)));
            s.2.sort_by(|a, b| (&a.dn, &a.reason).cmp(&(&b.dn, &b.reason)));
            s
        };
        let everybody = sorted(claims::settle(claimants(), &known));
        let mut contest = claims::Contest::default();
        let rivals = claimants();
        for c in &rivals {
            contest.enter(c);
        }
        let only_rivals = sorted(contest.settle(rivals, &known));
        clashes += everybody.2.len();
        assert_eq!(
            only_rivals, everybody,
            "round {round}: {entries:#?} {names:?}"
        );
    }
    // The rounds must really clash, or the comparison proves nothing.
    assert!(clashes > 1000, "only {clashes} clashes in 300 rounds");
}
