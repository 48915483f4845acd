//! `source`: reading the campus fixture and generated people from a real slapd.
//!
//! Each test starts its own server (a second or so), so tests stay independent.

use std::collections::{BTreeSet, HashSet};

use ldap2exo::config::LdapConfig;
use ldap2exo::secret::Secret;
use ldap2exo::source::{self, RawEntry, Selection, SourceError, TlsMode};
use ldap3::{LdapConnAsync, Scope};

use crate::support::slapd::{
    self, GENERATED_DN, LIMITED_DN, LIMITED_PASSWORD, SERVICE_DN, SERVICE_PASSWORD,
};
use crate::support::slapd::{Slapd, SlapdOptions};

/// People in `campus.ldif` that the default filter matches (everyone with mail).
const CAMPUS_WITH_MAIL: usize = 49;

fn uids(entries: &[RawEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e.first("uid").unwrap_or_default().to_owned())
        .collect()
}

fn find<'a>(entries: &'a [RawEntry], uid: &str) -> &'a RawEntry {
    entries
        .iter()
        .find(|e| e.first("uid") == Some(uid))
        .unwrap_or_else(|| panic!("no entry with uid {uid}"))
}

fn only(uids: &[&str]) -> Selection {
    Selection::Only(uids.iter().map(|s| s.to_string()).collect())
}

#[tokio::test]
async fn full_read_returns_every_entry_with_the_mapped_attributes_only() {
    let ldap = Slapd::start(SlapdOptions::default());
    let config = ldap.ldap_config();
    let entries = source::read(&config, &Selection::All).await.unwrap();

    assert_eq!(entries.len(), CAMPUS_WITH_MAIL, "{:?}", uids(&entries));
    // Server order is load order: the LDIF's order.
    let got = uids(&entries);
    assert_eq!(got.first().map(String::as_str), Some("adavis"));
    assert_eq!(got.last().map(String::as_str), Some("pnovak"));
    assert!(
        !got.contains(&"yyamada".to_owned()),
        "the person without mail is not matched"
    );

    let requested: BTreeSet<String> = config
        .attributes
        .requested()
        .iter()
        .map(|a| a.to_ascii_lowercase())
        .collect();
    let mut anchors = HashSet::new();
    for e in &entries {
        assert!(e.dn.ends_with(",ou=people,dc=example,dc=edu"), "{}", e.dn);
        for name in e.attrs.keys() {
            assert!(
                requested.contains(name),
                "{} has unrequested attribute {name}",
                e.dn
            );
            assert_eq!(name, &name.to_ascii_lowercase());
        }
        assert!(e.binary.is_empty(), "{}: {:?}", e.dn, e.binary);
        assert!(
            anchors.insert(e.first("entryUUID").expect("entryUUID").to_owned()),
            "duplicate anchor"
        );
        assert!(e.first("mail").is_some());
    }

    let obrien = find(&entries, "obrien");
    assert_eq!(obrien.first("displayName"), Some("Seán O'Brien"));
    assert_eq!(
        obrien.first("entryuuid"),
        Some("5d0c7a3e-2b4f-4e61-9c8a-000000000011")
    );
    assert_eq!(
        obrien.values("mailAlternateAddress"),
        ["o'brien@example.edu", "sean.obrien@staff.example.edu"]
    );
    assert_eq!(
        find(&entries, "annguyen").first("displayname"),
        Some("Nguyễn Văn An")
    );
    assert_eq!(
        find(&entries, "lwisniewski").first("givenName"),
        Some("Łukasz")
    );
    assert_eq!(find(&entries, "jmueller").first("sn"), Some("Müller"));
    assert_eq!(
        find(&entries, "bmiller").first("mailForwardingAddress"),
        Some("bmiller@exampleedu.mail.onmicrosoft.com")
    );
    assert_eq!(
        find(&entries, "adavis").values("telephonenumber"),
        ["+1 617 555 0101"]
    );
    assert!(
        find(&entries, "hwolfe")
            .first("displayName")
            .unwrap()
            .chars()
            .count()
            > 256
    );
    assert!(
        find(&entries, "anna maria")
            .dn
            .starts_with("uid=anna maria,")
    );
}

#[tokio::test]
async fn hidden_and_disabled_flags_follow_the_rules() {
    let ldap = Slapd::start(SlapdOptions::default());
    let mut config = ldap.ldap_config();
    let entries = source::read(&config, &Selection::All).await.unwrap();
    let hidden: BTreeSet<String> = entries
        .iter()
        .filter(|e| e.hidden)
        .map(|e| e.first("uid").unwrap().to_owned())
        .collect();
    let disabled: BTreeSet<String> = entries
        .iter()
        .filter(|e| e.disabled)
        .map(|e| e.first("uid").unwrap().to_owned())
        .collect();
    assert_eq!(
        hidden,
        BTreeSet::from(["admissions", "helpdesk", "noreply"].map(String::from))
    );
    assert_eq!(
        disabled,
        BTreeSet::from(["fschmidt", "jsmith", "rsilva"].map(String::from))
    );

    // With --only, the rule searches are narrowed the same way and still flag correctly.
    let some = source::read(&config, &only(&["helpdesk", "fschmidt", "adavis"]))
        .await
        .unwrap();
    // Server order: fschmidt (staff) comes before helpdesk (service accounts) in the LDIF.
    assert_eq!(uids(&some), ["adavis", "fschmidt", "helpdesk"]);
    let set: BTreeSet<String> = uids(&some).into_iter().collect();
    assert_eq!(
        set,
        BTreeSet::from(["adavis", "fschmidt", "helpdesk"].map(String::from))
    );
    assert!(find(&some, "helpdesk").hidden && !find(&some, "helpdesk").disabled);
    assert!(find(&some, "fschmidt").disabled && !find(&some, "fschmidt").hidden);
    assert!(!find(&some, "adavis").hidden && !find(&some, "adavis").disabled);

    // Without rules nobody is flagged.
    config.rules = Default::default();
    let plain = source::read(&config, &Selection::All).await.unwrap();
    assert_eq!(plain.len(), CAMPUS_WITH_MAIL);
    assert!(plain.iter().all(|e| !e.hidden && !e.disabled));
}

#[tokio::test]
async fn paged_reading_goes_beyond_the_unpaged_size_limit() {
    let ldap = Slapd::start(SlapdOptions::with_generated(200, 7));
    let mut config = ldap.ldap_config();
    config.base_dn = GENERATED_DN.into();
    config.page_size = 7;
    let entries = source::read(&config, &Selection::All).await.unwrap();
    assert_eq!(entries.len(), 200);
    let anchors: Vec<String> = entries
        .iter()
        .map(|e| e.first("entryUUID").unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..200).map(|i| slapd::generated_uuid(7, i)).collect();
    assert_eq!(
        anchors, expected,
        "every generated person, once, in server order"
    );

    // The limit is real: the same account without paging gets 10 entries and rc 4.
    let (conn, mut client) = LdapConnAsync::new(&ldap.ldap_url()).await.unwrap();
    ldap3::drive!(conn);
    client
        .simple_bind(SERVICE_DN, SERVICE_PASSWORD)
        .await
        .unwrap()
        .success()
        .unwrap();
    let ldap3::SearchResult(found, res) = client
        .search(
            GENERATED_DN,
            Scope::Subtree,
            "(objectClass=inetOrgPerson)",
            vec!["1.1"],
        )
        .await
        .unwrap();
    assert_eq!(res.rc, 4, "sizeLimitExceeded: {res:?}");
    assert_eq!(found.len(), 10);
    client.unbind().await.unwrap();
}

#[tokio::test]
async fn a_page_larger_than_the_page_limit_is_an_error() {
    // With size.pr=10 the server refuses pages above 10 entries: page_size 7 reads
    // everything, page_size 50 fails instead of returning a short result.
    let options = SlapdOptions {
        service_limits: "size.soft=10 size.hard=10 size.pr=10 size.prtotal=unlimited".into(),
        ..SlapdOptions::with_generated(60, 3)
    };
    let ldap = Slapd::start(options);
    let mut config = ldap.ldap_config();
    config.base_dn = GENERATED_DN.into();
    config.page_size = 7;
    assert_eq!(
        source::read(&config, &Selection::All).await.unwrap().len(),
        60
    );
    config.page_size = 50;
    let err = source::read(&config, &Selection::All).await.unwrap_err();
    eprintln!("page above the limit: {err}");
    assert!(
        matches!(
            err,
            SourceError::Limit {
                rc: 11,
                entries: 0,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(GENERATED_DN), "{err}");
}

#[tokio::test]
async fn a_hard_size_limit_is_an_error_not_a_short_list() {
    let ldap = Slapd::start(SlapdOptions::default());
    let mut config = ldap.ldap_config();
    config.bind_dn = Some(LIMITED_DN.into());
    config.bind_password = Some(Secret::new(LIMITED_PASSWORD.into()));
    config.page_size = 7;
    let err = source::read(&config, &Selection::All).await.unwrap_err();
    match &err {
        SourceError::Limit {
            rc,
            entries,
            base_dn,
            ..
        } => {
            assert_eq!(*rc, 4);
            assert_eq!(*entries, 20);
            assert_eq!(base_dn, "ou=people,dc=example,dc=edu");
        }
        other => panic!("expected a size limit error, got {other:?}"),
    }
    let text = err.to_string();
    eprintln!("size limit: {text}");
    assert!(
        text.contains("sizeLimitExceeded") && text.contains("never used"),
        "{text}"
    );
    // Narrowed with --only, the same account reads fine.
    assert_eq!(
        source::read(&config, &only(&["adavis", "obrien"]))
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn an_admin_limit_is_an_error() {
    let options = SlapdOptions {
        limited_limits: "size.unchecked=5".into(),
        ..SlapdOptions::default()
    };
    let ldap = Slapd::start(options);
    let mut config = ldap.ldap_config();
    config.bind_dn = Some(LIMITED_DN.into());
    config.bind_password = Some(Secret::new(LIMITED_PASSWORD.into()));
    let err = source::read(&config, &Selection::All).await.unwrap_err();
    eprintln!("admin limit: {err}");
    assert!(matches!(err, SourceError::Limit { rc: 11, .. }), "{err:?}");
}

#[tokio::test]
async fn starttls_and_ldaps_verify_the_server_certificate() {
    let ldap = Slapd::start(SlapdOptions::default());
    let base = ldap.ldap_config();

    // StartTLS with the test CA, by IP and by name.
    assert_eq!(
        source::read(&base, &only(&["obrien"])).await.unwrap().len(),
        1
    );
    let by_name = LdapConfig {
        url: ldap.ldap_url_localhost(),
        ..base.clone()
    };
    assert_eq!(
        source::read(&by_name, &only(&["obrien"]))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(source::check(&base).await.unwrap().tls, TlsMode::StartTls);

    // LDAPS with the test CA.
    let ldaps = LdapConfig {
        url: ldap.ldaps_url(),
        starttls: false,
        ..base.clone()
    };
    assert_eq!(
        source::read(&ldaps, &Selection::All).await.unwrap().len(),
        CAMPUS_WITH_MAIL
    );
    assert_eq!(source::check(&ldaps).await.unwrap().tls, TlsMode::Ldaps);

    // Without the CA the certificate is not trusted: no connection, no fallback to plain.
    for config in [
        LdapConfig {
            ca_file: None,
            ..base.clone()
        },
        LdapConfig {
            ca_file: None,
            ..ldaps.clone()
        },
    ] {
        let err = source::read(&config, &Selection::All).await.unwrap_err();
        assert!(
            matches!(err, SourceError::Tls { .. }),
            "{}: {err:?}",
            config.url
        );
        let text = err.to_string();
        eprintln!("no CA: {text}");
        assert!(text.contains("certificate"), "{text}");
        assert!(text.contains(&config.url), "{text}");
    }

    // A CA that did not sign the server's certificate is no better.
    let other_ca = tempfile::NamedTempFile::new().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(other_ca.path(), params.self_signed(&key).unwrap().pem()).unwrap();
    let wrong = LdapConfig {
        ca_file: Some(other_ca.path().to_owned()),
        ..base.clone()
    };
    assert!(matches!(
        source::read(&wrong, &Selection::All).await.unwrap_err(),
        SourceError::Tls { .. }
    ));

    // Plain ldap:// still works (tests and labs), and check() says it is not encrypted.
    let plain = LdapConfig {
        starttls: false,
        ca_file: None,
        ..base.clone()
    };
    let report = source::check(&plain).await.unwrap();
    assert_eq!(report.tls, TlsMode::None);
    assert!(
        report.warnings.iter().any(|w| w.contains("not encrypted")),
        "{:?}",
        report.warnings
    );
}

#[tokio::test]
async fn only_matches_exact_uids_and_escapes_filter_syntax() {
    let ldap = Slapd::start(SlapdOptions::default());
    let config = ldap.ldap_config();

    let got = source::read(&config, &only(&["obrien"])).await.unwrap();
    assert_eq!(uids(&got), ["obrien"]);

    // Injection attempts match nothing: the value is compared literally.
    for attack in [
        "o'brien*)(uid=*",
        "*",
        "obrien)(|(uid=*",
        "*)(objectClass=*",
        "ob*",
        "\\2a",
    ] {
        let got = source::read(&config, &only(&[attack])).await.unwrap();
        assert!(got.is_empty(), "{attack:?} matched {:?}", uids(&got));
    }
    // Mixed with real uids, only the real ones come back.
    let got = source::read(
        &config,
        &only(&["o'brien*)(uid=*", "jmueller", "obrien", "nobody"]),
    )
    .await
    .unwrap();
    assert_eq!(
        uids(&got).into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from(["jmueller".into(), "obrien".into()])
    );
    // A uid with a space, and unicode in the filter value, match exactly.
    assert_eq!(
        uids(&source::read(&config, &only(&["anna maria"])).await.unwrap()),
        ["anna maria"]
    );
    // The person without mail stays outside the configured filter.
    assert!(
        source::read(&config, &only(&["yyamada"]))
            .await
            .unwrap()
            .is_empty()
    );

    // An empty selection reads nothing and does not even connect.
    let unreachable = LdapConfig {
        url: "ldap://127.0.0.1:1".into(),
        ..config.clone()
    };
    assert!(
        source::read(&unreachable, &Selection::Only(vec![]))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        source::read(&unreachable, &Selection::All)
            .await
            .unwrap_err(),
        SourceError::Connect { .. }
    ));
}

#[tokio::test]
async fn a_wrong_bind_password_is_a_clear_error_without_the_password() {
    let ldap = Slapd::start(SlapdOptions::default());
    let password = "Wr0ng-but-Secret-Passw0rd";
    let config = LdapConfig {
        bind_password: Some(Secret::new(password.into())),
        ..ldap.ldap_config()
    };
    let err = source::read(&config, &Selection::All).await.unwrap_err();
    assert!(matches!(err, SourceError::Bind { rc: 49, .. }), "{err:?}");
    let text = err.to_string();
    eprintln!("wrong password: {text}");
    assert!(
        text.contains("invalidCredentials")
            && text.contains(SERVICE_DN)
            && text.contains(&ldap.ldap_url()),
        "{text}"
    );
    assert!(!text.contains(password), "{text}");
    assert!(!format!("{err:?}").contains(password));
    let err = source::check(&config).await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains(password));

    // An anonymous bind is allowed by this server and reads the same people.
    let anonymous = LdapConfig {
        bind_dn: None,
        bind_password: None,
        ..ldap.ldap_config()
    };
    assert_eq!(
        source::read(&anonymous, &Selection::All)
            .await
            .unwrap()
            .len(),
        CAMPUS_WITH_MAIL
    );
    // A bind DN without a password is refused before anything is sent.
    let no_pw = LdapConfig {
        bind_password: None,
        ..ldap.ldap_config()
    };
    assert!(matches!(
        source::read(&no_pw, &Selection::All).await.unwrap_err(),
        SourceError::Bind { .. }
    ));
}

#[tokio::test]
async fn a_referral_in_scope_is_an_error() {
    let ldap = Slapd::start(SlapdOptions::default());
    let config = ldap.ldap_config();
    ldap.add_ldif(
        "dn: ou=annex,ou=people,dc=example,dc=edu\n\
         objectClass: referral\n\
         objectClass: extensibleObject\n\
         ou: annex\n\
         ref: ldap://ldap.annex.example.edu/ou=people,dc=annex,dc=example,dc=edu\n",
    );
    let err = source::read(&config, &Selection::All).await.unwrap_err();
    match &err {
        SourceError::Referral { refs, .. } => {
            assert!(
                refs.iter().any(|r| r.contains("ldap.annex.example.edu")),
                "{refs:?}"
            )
        }
        other => panic!("expected a referral error, got {other:?}"),
    }
    eprintln!("referral: {err}");
    assert!(err.to_string().contains("not followed"), "{err}");

    // A base DN that is itself a referral: result code 10.
    let at_referral = LdapConfig {
        base_dn: "ou=annex,ou=people,dc=example,dc=edu".into(),
        ..config.clone()
    };
    let err = source::read(&at_referral, &Selection::All)
        .await
        .unwrap_err();
    assert!(matches!(err, SourceError::Referral { .. }), "{err:?}");

    // Once the referral is gone, the read is complete again.
    ldap.delete("ou=annex,ou=people,dc=example,dc=edu");
    assert_eq!(
        source::read(&config, &Selection::All).await.unwrap().len(),
        CAMPUS_WITH_MAIL
    );
}

#[tokio::test]
async fn changes_between_runs_are_seen() {
    let ldap = Slapd::start(SlapdOptions::default());
    let config = ldap.ldap_config();
    ldap.modify(
        "dn: uid=obrien,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: mail\nmail: sean.obrien@example.edu\n",
    );
    ldap.add_ldif(
        "dn: uid=newperson,ou=people,dc=example,dc=edu\nobjectClass: inetOrgPerson\nuid: newperson\ncn: New Person\n\
         sn: Person\nmail: newperson@example.edu\nentryUUID: 5d0c7a3e-2b4f-4e61-9c8a-000000000999\n",
    );
    let entries = source::read(&config, &Selection::All).await.unwrap();
    assert_eq!(entries.len(), CAMPUS_WITH_MAIL + 1);
    assert_eq!(
        find(&entries, "obrien").first("mail"),
        Some("sean.obrien@example.edu")
    );
    assert_eq!(
        find(&entries, "newperson").first("entryUUID"),
        Some("5d0c7a3e-2b4f-4e61-9c8a-000000000999")
    );
}

#[tokio::test]
async fn check_reports_the_server_and_a_missing_base() {
    let ldap = Slapd::start(SlapdOptions::default());
    let config = ldap.ldap_config();
    let report = source::check(&config).await.unwrap();
    assert_eq!(report.base_dn, "ou=people,dc=example,dc=edu");
    assert_eq!(report.bind_dn.as_deref(), Some(SERVICE_DN));
    assert!(
        report
            .naming_contexts
            .iter()
            .any(|c| c == "dc=example,dc=edu"),
        "{report:?}"
    );
    assert_eq!(report.paged_results, Some(true));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    // With content_sync on, a server without syncprov is a warning with the fix.
    let plain = Slapd::start(SlapdOptions {
        syncprov: false,
        ..SlapdOptions::default()
    });
    let wants_sync = LdapConfig {
        content_sync: true,
        ..plain.ldap_config()
    };
    let warned = source::check(&wants_sync).await.unwrap();
    assert!(
        warned
            .warnings
            .iter()
            .any(|w| w.contains("load the syncprov overlay")),
        "{:?}",
        warned.warnings
    );
    let synced = LdapConfig {
        content_sync: true,
        ..config.clone()
    };
    assert!(source::check(&synced).await.unwrap().warnings.is_empty());

    let missing = LdapConfig {
        base_dn: "ou=nobody,dc=example,dc=edu".into(),
        ..config.clone()
    };
    let err = source::check(&missing).await.unwrap_err();
    assert!(matches!(err, SourceError::NoSuchBase { .. }), "{err:?}");
    assert!(err.to_string().contains("ou=nobody,dc=example,dc=edu"));
    // A read under a missing base is an error too, not an empty directory.
    assert!(matches!(
        source::read(&missing, &Selection::All).await.unwrap_err(),
        SourceError::NoSuchBase { .. }
    ));

    let bad_filter = LdapConfig {
        filter: "(&(uid=a)".into(),
        ..config
    };
    assert!(matches!(
        source::check(&bad_filter).await.unwrap_err(),
        SourceError::Filter { .. }
    ));
}

/// A TCP relay that closes both sides after `limit` bytes from the server.
async fn cutting_proxy(target: String, limit: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = tokio::net::TcpStream::connect(&target).await.unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let up = tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            tokio::spawn(async move {
                let mut sent = 0usize;
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = n.min(limit - sent);
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                    if sent >= limit {
                        break;
                    }
                }
                let _ = cw.shutdown().await;
                up.abort();
            });
        }
    });
    port
}

#[tokio::test]
async fn a_connection_dropped_mid_search_is_an_error() {
    let ldap = Slapd::start(SlapdOptions::with_generated(300, 11));
    let target = ldap.ldap_url().trim_start_matches("ldap://").to_owned();
    let port = cutting_proxy(target, 30_000).await;
    let config = LdapConfig {
        url: format!("ldap://127.0.0.1:{port}"),
        starttls: false,
        ca_file: None,
        base_dn: GENERATED_DN.into(),
        page_size: 25,
        ..ldap.ldap_config()
    };
    let err = source::read(&config, &Selection::All).await.unwrap_err();
    eprintln!("dropped: {err}");
    match &err {
        SourceError::Dropped { entries, .. } => assert!(*entries > 0 && *entries < 300, "{err}"),
        other => panic!("expected a dropped connection, got {other:?}"),
    }
}

#[tokio::test]
async fn non_utf8_values_are_recorded_as_binary() {
    // Only an octet-string attribute can hold bytes that are not UTF-8; map one.
    let ldap = Slapd::start(SlapdOptions::default());
    ldap.modify(
        "dn: uid=epatel,ou=people,dc=example,dc=edu\nchangetype: modify\nadd: audio\naudio:: /w==\n",
    );
    let mut config = ldap.ldap_config();
    config.attributes.office = "audio".into();
    let entries = source::read(&config, &only(&["epatel", "adavis"]))
        .await
        .unwrap();
    let epatel = find(&entries, "epatel");
    assert!(
        epatel.is_binary("audio") && epatel.values("audio").is_empty(),
        "{epatel:?}"
    );
    assert!(!find(&entries, "adavis").is_binary("audio"));
    // Entries still parse, and nothing else about them is lost.
    assert_eq!(epatel.first("mail"), Some("epatel@staff.example.edu"));
}
