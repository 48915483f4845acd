//! Shapes real directories have and the campus fixture does not: an attribute stored as two
//! instances in one entry (what `slapadd -q` keeps from non-adjacent LDIF lines), a name
//! with two values, an LDAP server presenting an X.509 version 1 certificate.
//!
//! Each test loads its entries with `slapadd -q` into a private slapd (see
//! [`SlapdOptions::with_ldif`]) and runs the real binary against it and the tenant emulator.

use std::process::Command;

use ldap2exo::plan::{Op, Plan};
use ldap2exo::source::{self, Selection};
use serde_json::{Value, json};

use crate::support::cli::Install;
use crate::support::slapd::{self, OPENSSL, PEOPLE_DN, ServerCertificate, Slapd, SlapdOptions};
use crate::sync::{assert_settled, by_upn, campus_emulator, live, runtime, show_run, sync};

/// Two people whose LDIF repeats an attribute on non-adjacent lines: `tvoss` has two
/// `mailAlternateAddress` instances (with `givenName` between them), `rduo` two `mail`s.
const REPEATED: &str = "\
dn: uid=tvoss,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
objectClass: mailRecipientExt
uid: tvoss
cn: Tilde Voss
mail: tvoss@example.edu
mailAlternateAddress: tilde.voss@example.edu
givenName: Tilde
mailAlternateAddress: t.voss@example.edu
sn: Voss
displayName: Tilde Voss
entryUUID: 5d0c7a3e-2b4f-4e61-9c8a-00000000a001

dn: uid=rduo,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
uid: rduo
cn: Ruth Duo
mail: rduo@example.edu
sn: Duo
mail: ruth.duo@example.edu
entryUUID: 5d0c7a3e-2b4f-4e61-9c8a-00000000a002
";

const TVOSS: &str = "uid=tvoss,ou=people,dc=example,dc=edu";
const RDUO: &str = "uid=rduo,ou=people,dc=example,dc=edu";

/// A person with two surnames, the first (in the server's order) sorting last.
const TWO_SURNAMES: &str = "\
dn: uid=wzweig,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
uid: wzweig
cn: Wanda Zweig
sn: Zweig
givenName: Wanda
displayName: Wanda Zweig
mail: wzweig@example.edu
sn: Twain
entryUUID: 5d0c7a3e-2b4f-4e61-9c8a-00000000a003
";

const WZWEIG: &str = "uid=wzweig,ou=people,dc=example,dc=edu";

/// The attribute names of one entry as `ldapsearch` prints them, in the server's order.
fn attribute_lines(server: &Slapd, uid: &str, attrs: &[&str]) -> Vec<String> {
    let out = Command::new(slapd::LDAPSEARCH)
        .args(["-x", "-LLL", "-o", "ldif-wrap=no", "-H", &server.ldap_url()])
        .args(["-b", PEOPLE_DN, &format!("(uid={uid})")])
        .args(attrs)
        .output()
        .expect("run ldapsearch");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("dn:") && !l.is_empty())
        .map(|l| l.split(':').next().unwrap_or_default().to_owned())
        .collect()
}

fn action<'a>(plan: &'a Plan, op: Op, uid: &str) -> &'a ldap2exo::plan::Action {
    plan.actions
        .iter()
        .find(|a| a.op == op && a.uid == uid)
        .unwrap_or_else(|| panic!("no {op:?} for {uid}: {:#?}", plan.actions))
}

fn after<'a>(a: &'a ldap2exo::plan::Action, field: &str) -> &'a Value {
    a.changes
        .get(field)
        .and_then(|(_, after)| after.as_ref())
        .unwrap_or_else(|| panic!("{field} not changed: {:#?}", a.changes))
}

fn has_proxy(addresses: &[String], address: &str) -> bool {
    addresses
        .iter()
        .any(|p| p.eq_ignore_ascii_case(&format!("smtp:{address}")))
}

#[test]
fn every_instance_of_a_repeated_attribute_reaches_the_plan_and_the_tenant() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::with_ldif(REPEATED));

    // The shape is real: slapd returns the alias attribute twice, with another between.
    assert_eq!(
        attribute_lines(
            &server,
            "tvoss",
            &["mail", "mailAlternateAddress", "givenName"]
        ),
        [
            "mail",
            "mailAlternateAddress",
            "givenName",
            "mailAlternateAddress"
        ],
        "slapd no longer returns two instances: this test would prove nothing"
    );
    assert_eq!(
        attribute_lines(&server, "rduo", &["mail", "sn"]),
        ["mail", "sn", "mail"]
    );

    // The reader keeps both instances, in the server's order.
    let read = rt
        .block_on(source::read(
            &server.ldap_config(),
            &Selection::Only(vec!["tvoss".into(), "rduo".into()]),
        ))
        .unwrap();
    let tvoss = read.iter().find(|e| e.dn == TVOSS).unwrap();
    assert_eq!(
        tvoss.values("mailAlternateAddress"),
        ["tilde.voss@example.edu", "t.voss@example.edu"]
    );
    let rduo = read.iter().find(|e| e.dn == RDUO).unwrap();
    assert_eq!(
        rduo.values("mail"),
        ["rduo@example.edu", "ruth.duo@example.edu"]
    );

    let install = Install::with_tenant(&server, &emu);
    let plan = install.dry_run(0, &[]);
    let create = action(&plan, Op::Create, "tvoss");
    assert_eq!(
        after(create, "emailAddresses"),
        &json!(["t.voss@example.edu", "tilde.voss@example.edu"]),
        "both aliases are planned"
    );
    assert_eq!(
        after(create, "primarySmtpAddress"),
        &json!("tvoss@example.edu")
    );
    // Two mail instances are two primaries: quarantined, not the second one silently used.
    assert!(
        plan.actions.iter().all(|a| a.uid != "rduo"),
        "{:#?}",
        plan.actions
    );
    let q = plan
        .quarantined
        .iter()
        .find(|q| q.dn == RDUO)
        .unwrap_or_else(|| panic!("rduo not quarantined: {:#?}", plan.quarantined));
    assert_eq!(q.field, "mail");
    assert!(q.reason.contains("has 2 values"), "{}", q.reason);

    let run = sync(&install, 0);
    let state = emu.state();
    let user = by_upn(&state, "tvoss@example.edu");
    for alias in ["tilde.voss@example.edu", "t.voss@example.edu"] {
        assert!(
            has_proxy(&user.proxy_addresses, alias),
            "{alias} missing: {:?}\n{}",
            user.proxy_addresses,
            show_run(&run)
        );
    }
    assert!(
        user.proxy_addresses
            .contains(&"SMTP:tvoss@example.edu".to_owned()),
        "{:?}",
        user.proxy_addresses
    );
    assert!(
        live(&state)
            .iter()
            .all(|u| u.user_principal_name != "rduo@example.edu"
                && !has_proxy(&u.proxy_addresses, "ruth.duo@example.edu")),
        "the quarantined person reached the tenant"
    );

    assert_settled(&install, &emu);
}

#[test]
fn a_second_surname_gives_the_first_and_a_warning_never_a_frozen_person() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::with_ldif(TWO_SURNAMES));
    let install = Install::with_tenant(&server, &emu);

    // A new person with two surnames is created with the first one the server returned.
    let plan = install.dry_run(0, &[]);
    assert!(
        plan.quarantined.iter().all(|q| q.dn != WZWEIG),
        "{:#?}",
        plan.quarantined
    );
    assert_eq!(
        after(action(&plan, Op::Create, "wzweig"), "surname"),
        &json!("Zweig")
    );
    assert_eq!(plan.warnings.len(), 1, "{:#?}", plan.warnings);
    let w = &plan.warnings[0];
    assert_eq!(
        (w.dn.as_str(), w.uid.as_deref(), w.field.as_str()),
        (WZWEIG, Some("wzweig"), "surname")
    );
    assert!(
        w.message.contains(
            "attribute sn has 2 values; the first the server returned, \"Zweig\", is used"
        ),
        "{}",
        w.message
    );
    assert!(w.message.contains("\"Twain\""), "{}", w.message);

    // The text report shows it, naming the entry and the field; the log has it too.
    let text = install.run(&["sync", "--dry-run"]);
    assert_eq!(text.code, 0, "{}", show_run(&text));
    assert!(
        text.stdout.contains(&format!(
            "Warnings (1)\n  ? {WZWEIG}\n      surname: attribute sn has 2 values"
        )),
        "{}",
        text.stdout
    );
    assert!(
        text.stderr.contains("WARN") && text.stderr.contains("the first is used"),
        "{}",
        text.stderr
    );

    let run = sync(&install, 0);
    assert!(run.stdout.contains("Warnings (1)"), "{}", show_run(&run));
    assert_eq!(
        by_upn(&emu.state(), "wzweig@example.edu")
            .surname
            .as_deref(),
        Some("Zweig")
    );
    assert_settled(&install, &emu);

    // An existing person who gets a second surname is updated, not frozen in quarantine.
    server.modify(
        "dn: uid=epatel,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: sn\nsn: Shah\nsn: Patel\n",
    );
    let plan = install.dry_run(0, &[]);
    assert!(
        plan.quarantined
            .iter()
            .all(|q| q.uid.as_deref() != Some("epatel")),
        "{:#?}",
        plan.quarantined
    );
    let update = action(&plan, Op::Update, "epatel");
    assert_eq!(
        update.changes.get("surname"),
        Some(&(Some(json!("Patel")), Some(json!("Shah"))))
    );
    let fields: Vec<(&str, &str)> = plan
        .warnings
        .iter()
        .map(|w| (w.uid.as_deref().unwrap_or(""), w.field.as_str()))
        .collect();
    assert_eq!(fields, [("epatel", "surname"), ("wzweig", "surname")]);

    // The real run's JSON report carries the warnings as well.
    let run = install.run(&["sync", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", show_run(&run));
    let warnings = run.json()["warnings"].clone();
    assert_eq!(
        warnings[0]["dn"],
        json!("uid=epatel,ou=people,dc=example,dc=edu"),
        "{warnings:#}"
    );
    assert_eq!(warnings[0]["field"], json!("surname"), "{warnings:#}");
    assert_eq!(
        by_upn(&emu.state(), "epatel@example.edu")
            .surname
            .as_deref(),
        Some("Shah")
    );
    assert_settled(&install, &emu);
}

/// What the binary prints when slapd presents an X.509 v1 certificate signed by the
/// configured CA: the one fault is the version.
const V1_SENTENCE: &str = "failed: the server's certificate is X.509 version 1; only version 3 \
     certificates are accepted: reissue it with v3 extensions (subjectAltName, basicConstraints)";

#[test]
fn an_x509_v1_ldap_certificate_is_refused_in_words() {
    let server = Slapd::start(SlapdOptions {
        certificate: ServerCertificate::V1,
        ..SlapdOptions::default()
    });
    let text = Command::new(OPENSSL)
        .arg("x509")
        .arg("-in")
        .arg(server.dir().join("server.pem"))
        .args(["-noout", "-text"])
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Version: 1 (0x0)"), "{text}");
    assert!(!text.contains("X509v3"), "{text}");

    // check-config over StartTLS, with the CA that signed the certificate.
    let install = Install::new(&server);
    let run = install.run(&["check-config"]);
    assert_eq!(run.code, 1, "{}", show_run(&run));
    assert!(
        run.stdout.contains(&format!(
            "ldap: FAILED: TLS with {} {V1_SENTENCE}",
            server.ldap_url()
        )),
        "{}",
        show_run(&run)
    );
    assert!(!run.stdout.contains("OtherError"), "{}", run.stdout);

    // A sync over LDAPS stops with the same sentence.
    let ldaps = Install::with_toml(
        &server
            .ldap_toml()
            .replace(&server.ldap_url(), &server.ldaps_url())
            .replace("starttls = true", "starttls = false"),
    );
    let run = ldaps.run(&["sync", "--dry-run"]);
    assert_eq!(run.code, 1, "{}", show_run(&run));
    assert!(
        run.stderr
            .contains(&format!("TLS with {} {V1_SENTENCE}", server.ldaps_url())),
        "{}",
        show_run(&run)
    );

    // The same server with a v3 certificate passes check-config, so the version was the
    // one fault; without the CA, the refusal says to set ldap.ca_file.
    let good = Slapd::start(SlapdOptions::default());
    let install = Install::new(&good);
    let run = install.run(&["check-config"]);
    assert!(run.stdout.contains("ldap: ok ("), "{}", show_run(&run));
    let no_ca = Install::with_toml(&good.ldap_toml().replace(
        &format!("ca_file = {:?}\n", good.ca_pem_path().display().to_string()),
        "",
    ));
    let run = no_ca.run(&["check-config"]);
    assert_eq!(run.code, 1, "{}", show_run(&run));
    assert!(
        run.stdout.contains(&format!(
            "ldap: FAILED: TLS with {} failed: the server's certificate is not signed by a CA \
             this host trusts: set ldap.ca_file",
            good.ldap_url()
        )),
        "{}",
        show_run(&run)
    );
}
