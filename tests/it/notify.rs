//! Notifications by mail, sent to a local SMTP listener over real STARTTLS, with a real state
//! store and notices built from real plans and apply results.

use std::collections::BTreeSet;
use std::path::Path;

use ldap2exo::apply::{self, ActionResult};
use ldap2exo::config::{Config, SafetyConfig};
use ldap2exo::desired::{Desired, Kind, Recipient};
use ldap2exo::ids::{Anchor, SmtpAddress, Upn};
use ldap2exo::notify::{self, Delivery, Notice};
use ldap2exo::plan::{self, Op, Plan, Verdict};
use ldap2exo::state::{ManagedObject, Outcome, RunEnd, RunMode, RunScope, Stage, Store};

use crate::support::emulator::LogCapture;
use crate::support::smtp::{Auth, SmtpOptions, SmtpServer};

const HOST: &str = "mx1.example.edu";
const SMTP_PASSWORD: &str = "smtp-Pa55word-zq81";
const BIND_PASSWORD: &str = "ldap-bind-Secret-77xk";
const CLIENT_SECRET: &str = "tenant-Client-Secret-4f0e";
const NOW: i64 = 1_800_000_000;
const MINUTE: i64 = 60;

/// A configuration whose `[notify]` points at `server` (or at nothing, `to = []`), with an
/// SMTP login and the LDAP and tenant secrets all set through the environment.
fn config(server: &SmtpServer, notify: &str) -> Config {
    let text = format!(
        r#"
[ldap]
url = "ldap://127.0.0.1:3890"
base_dn = "ou=people,dc=example,dc=edu"
bind_dn = "cn=admin,dc=example,dc=edu"

[tenant]
accepted_domains = ["example.edu"]
onmicrosoft_domain = "exampleedu.onmicrosoft.com"
routing_domain = "exampleedu.mail.onmicrosoft.com"
upn_domain = "example.edu"

[notify]
from = "ldap2exo <ldap2exo@example.edu>"
smtp_host = "127.0.0.1"
smtp_port = {}
ca_file = {:?}
username = "ldap2exo-relay"
{notify}
"#,
        server.port,
        server.ca_file.display().to_string(),
    );
    let env = [
        ("LDAP2EXO__NOTIFY__PASSWORD", SMTP_PASSWORD),
        ("LDAP2EXO__LDAP__BIND_PASSWORD", BIND_PASSWORD),
        ("LDAP2EXO__TENANT__CLIENT_SECRET", CLIENT_SECRET),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    Config::from_toml(&text, Path::new("notify-test.toml"), env).expect("configuration")
}

const TO_OPS: &str = r#"to = ["ops@example.edu", "Mail Team <mailteam@example.edu>"]"#;

async fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("state.db"))
        .await
        .expect("state store")
}

fn person(uid: &str) -> Recipient {
    let mail = SmtpAddress::parse(&format!("{uid}@example.edu")).unwrap();
    Recipient {
        anchor: Anchor::new(&format!("anchor-{uid}")).unwrap(),
        dn: format!("uid={uid},ou=people,dc=example,dc=edu"),
        uid: uid.into(),
        kind: Kind::MailUser,
        upn: Upn::new(uid, "example.edu").unwrap(),
        alias: uid.into(),
        name: uid.into(),
        display_name: format!("Person {uid}"),
        given_name: None,
        surname: None,
        primary: mail.clone(),
        secondary: BTreeSet::new(),
        external_address: Some(mail),
        forward: None,
        forwarding: None,
        department: None,
        job_title: None,
        phone: None,
        mobile: None,
        office: None,
        company: None,
        hidden: false,
    }
}

fn managed(r: &Recipient) -> ManagedObject {
    ManagedObject {
        anchor: r.anchor.clone(),
        kind: r.kind,
        uid: r.uid.clone(),
        dn: r.dn.clone(),
        tenant_object_id: Some(format!("oid-{}", r.uid)),
        attributes: r.fields(),
        stage: Stage::Active,
        created_at: NOW - 100 * 86_400,
        updated_at: NOW - 100 * 86_400,
        disabled_at: None,
        delete_due_at: None,
        deleted_at: None,
    }
}

/// A plan the safety gate blocks: 23 newcomers and 3 leavers, with a cap of one removal.
fn blocked_plan() -> Plan {
    let newcomers: Vec<Recipient> = (1..=23).map(|n| person(&format!("new{n:02}"))).collect();
    let leavers: Vec<ManagedObject> = ["left1", "left2", "left3"]
        .iter()
        .map(|u| managed(&person(u)))
        .collect();
    let safety = SafetyConfig {
        max_deletes_per_run: 1,
        ..SafetyConfig::default()
    };
    let p = plan::plan(plan::Input {
        desired: Desired {
            source_count: newcomers.len(),
            recipients: newcomers,
            ..Default::default()
        },
        objects: &leavers,
        baseline: None,
        scope: plan::Scope::Full,
        safety: &safety,
        max_deletes: None,
        approval: None,
        recent_removals: Default::default(),
        tenant: None,
        journaled_creates: &BTreeSet::new(),
        outside: Default::default(),
        now: NOW,
    });
    assert_eq!(p.safety.verdict, Verdict::Blocked, "{:?}", p.safety);
    assert_eq!(p.summary.removals(), 3);
    p
}

/// What apply made of `plan`: new01's create in conflict, the other creates failed, the
/// removals skipped by the gate.
fn results(plan: &Plan) -> Vec<ActionResult> {
    plan.actions
        .iter()
        .map(|a| ActionResult {
            op: a.op,
            anchor: a.anchor.clone(),
            uid: a.uid.clone(),
            outcome: match a.op {
                Op::Create if a.uid == "new01" => apply::Outcome::Conflict(format!(
                    "{}@example.edu belongs to an object ldap2exo does not manage",
                    a.uid
                )),
                Op::Create => {
                    apply::Outcome::Failed("Graph answered 503 Service Unavailable".into())
                }
                _ => apply::Outcome::Skipped("held back by the safety gate".into()),
            },
        })
        .collect()
}

/// Records a real run that ended `outcome`; returns its id.
async fn run(store: &Store, outcome: Outcome, at: i64) -> i64 {
    let id = store
        .begin_run(RunMode::Apply, RunScope::Full, "daemon", at)
        .await
        .unwrap();
    let end = RunEnd {
        outcome,
        source_count: Some(10),
        verdict: Some("ok"),
        summary: None,
        results: None,
        error: None,
    };
    store.finish_run(id, &end, at).await.unwrap();
    id
}

fn failure(id: i64) -> Notice {
    Notice::of_run(
        Some(id),
        "daemon",
        Outcome::Failed,
        HOST,
        None,
        None,
        Some("reading LDAP failed: connection refused"),
    )
}

/// The message as a reader sees it: headers unfolded (RFC 5322: a CRLF before white space is
/// removed), the body decoded from its Content-Transfer-Encoding (lines of 76 characters or
/// more make lettre choose quoted-printable or base64).
fn unfolded(data: &str) -> String {
    use base64::Engine as _;
    let (head, body) = data.split_once("\r\n\r\n").expect("headers and body");
    let head = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let encoding = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Transfer-Encoding: "))
        .unwrap_or("7bit")
        .to_ascii_lowercase();
    let body = match encoding.as_str() {
        "quoted-printable" => {
            let joined = body.replace("=\r\n", "");
            let (mut out, mut bytes) = (Vec::new(), joined.bytes());
            while let Some(b) = bytes.next() {
                if b == b'=' {
                    let hex: Vec<u8> = bytes.by_ref().take(2).collect();
                    let hex = std::str::from_utf8(&hex).unwrap();
                    out.push(u8::from_str_radix(hex, 16).expect("a quoted-printable escape"));
                } else {
                    out.push(b);
                }
            }
            String::from_utf8(out).expect("UTF-8 body")
        }
        "base64" => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(body.replace("\r\n", ""))
                .expect("a base64 body");
            String::from_utf8(raw).expect("UTF-8 body")
        }
        _ => body.to_owned(),
    };
    format!("{head}\r\n\r\n{body}")
}

#[tokio::test]
async fn a_blocked_run_is_mailed_over_starttls_with_reasons_approval_and_failures() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let config = config(&server, TO_OPS);
    let plan = blocked_plan();
    let results = results(&plan);
    let id = run(&store, Outcome::Blocked, NOW).await;

    let notice = Notice::of_run(
        Some(id),
        "daemon",
        Outcome::Blocked,
        HOST,
        Some(&plan),
        Some(&results),
        None,
    );
    let delivery = notify::after_run(&config, &store, notice, NOW).await;
    assert_eq!(delivery, Some(Delivery::Sent));

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert!(m.tls, "the mail went over STARTTLS");
    assert_eq!(m.mail_from, "ldap2exo@example.edu");
    assert_eq!(m.rcpt_to, ["ops@example.edu", "mailteam@example.edu"]);
    assert_eq!(
        server.auths(),
        [Auth {
            user: "ldap2exo-relay".into(),
            password: SMTP_PASSWORD.into(),
            tls: true,
        }],
        "credentials are sent, and only over TLS"
    );

    let data = unfolded(&m.data);
    assert!(
        data.contains(&format!(
            "Subject: [ldap2exo] {HOST}: run #{id} was blocked by the safety gate\r\n"
        )),
        "{data}"
    );
    assert!(data.contains("Content-Type: text/plain"), "{data}");
    assert!(
        data.contains("Auto-Submitted: auto-generated\r\n"),
        "{data}"
    );
    assert!(data.contains("Message-ID: <"), "{data}");
    for reason in &plan.safety.reasons {
        assert!(data.contains(reason.as_str()), "reason {reason:?}: {data}");
    }
    assert!(
        data.contains("more than safety.max_deletes_per_run = 1"),
        "{data}"
    );
    assert!(
        data.contains("3 removals are held (3 disables, 0 deletes)"),
        "{data}"
    );
    assert!(
        data.contains("\r\n  ldap2exo sync --max-deletes 3\r\n"),
        "the command that approves the held run: {data}"
    );
    assert!(
        data.contains("ldap2exo sync --dry-run --max-deletes 3"),
        "{data}"
    );
    assert!(
        data.contains("Actions: 0 done, 0 pending, 3 skipped, 1 in conflict, 22 failed"),
        "{data}"
    );
    assert!(
        data.contains(
            "  - new01 (create): conflict: new01@example.edu belongs to an object ldap2exo does not manage\r\n"
        ),
        "{data}"
    );
    assert!(
        data.contains("  - new02 (create): failed: Graph answered 503 Service Unavailable\r\n"),
        "{data}"
    );
    // Twenty listed (new01 … new20), the other three counted.
    assert!(data.contains("  - new20 (create)"), "{data}");
    assert!(!data.contains("new21"), "{data}");
    assert!(data.contains("  ... and 3 more\r\n"), "{data}");
    assert!(data.contains("ldap2exo status"), "{data}");

    for secret in [SMTP_PASSWORD, BIND_PASSWORD, CLIENT_SECRET] {
        assert!(!m.data.contains(secret), "{secret} in the mail: {}", m.data);
        assert!(!data.contains(secret), "{secret} in the mail: {data}");
    }

    let recorded = store.notifications(10).await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (
            recorded[0].run_id,
            recorded[0].kind.as_str(),
            recorded[0].result.as_str()
        ),
        (Some(id), "blocked", "sent")
    );
}

#[tokio::test]
async fn a_failure_is_mailed_with_its_error_and_any_secret_in_it_redacted() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let config = config(&server, TO_OPS);
    let id = run(&store, Outcome::Failed, NOW).await;
    // An error that quotes more than it should: the last guard scrubs it.
    let error = format!("reading LDAP failed: bind with password {BIND_PASSWORD} was refused");
    let notice = Notice::of_run(
        Some(id),
        "sync",
        Outcome::Failed,
        HOST,
        None,
        None,
        Some(&error),
    );
    assert_eq!(
        notify::after_run(&config, &store, notice, NOW).await,
        Some(Delivery::Sent)
    );
    let m = &server.messages()[0];
    let data = unfolded(&m.data);
    assert!(
        data.contains(&format!(
            "Subject: [ldap2exo] {HOST}: run #{id} failed: reading LDAP failed: bind with password [redacted] was refused\r\n"
        )),
        "{data}"
    );
    assert!(
        data.contains(&format!("ldap2exo on {HOST}: run #{id} (`sync`) failed")),
        "{data}"
    );
    for secret in [SMTP_PASSWORD, BIND_PASSWORD, CLIENT_SECRET] {
        assert!(!m.data.contains(secret), "{secret} in the mail: {}", m.data);
        assert!(!data.contains(secret), "{secret} in the mail: {data}");
    }
}

#[tokio::test]
async fn the_rate_limit_holds_back_a_repeat_but_not_a_change_of_kind_or_a_failure_after_success() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    // `recovered` left out, so the reset after a success is the previous run's doing alone.
    let config = config(
        &server,
        &format!("{TO_OPS}\nmin_interval_minutes = 60\non = [\"failed\", \"blocked\"]"),
    );
    let mut expect = Vec::new();
    let mut step = async |outcome: Outcome, minutes: i64, want: Delivery| {
        let at = NOW + minutes * MINUTE;
        let id = run(&store, outcome, at).await;
        let notice = match outcome {
            Outcome::Blocked => {
                let plan = blocked_plan();
                Notice::of_run(Some(id), "daemon", outcome, HOST, Some(&plan), None, None)
            }
            Outcome::Ok => Notice::of_run(Some(id), "daemon", outcome, HOST, None, None, None),
            _ => failure(id),
        };
        let got = notify::send(&config.notify, &store, &notice, at)
            .await
            .unwrap();
        assert_eq!(got, want, "{outcome:?} at +{minutes} min");
        if want == Delivery::Sent {
            expect.push(notice.subject);
        }
    };
    step(Outcome::Failed, 0, Delivery::Sent).await;
    step(Outcome::Failed, 15, Delivery::Suppressed).await;
    step(Outcome::Blocked, 30, Delivery::Sent).await;
    step(Outcome::Failed, 45, Delivery::Sent).await; // a change of kind
    step(Outcome::Failed, 60, Delivery::Suppressed).await;
    step(Outcome::Ok, 75, Delivery::NotWanted).await;
    step(Outcome::Failed, 90, Delivery::Sent).await; // the first failure after a success
    step(Outcome::Failed, 105, Delivery::Suppressed).await;
    step(Outcome::Failed, 150, Delivery::Sent).await; // the interval is over

    let subjects: Vec<String> = server
        .messages()
        .iter()
        .map(|m| {
            let data = unfolded(&m.data);
            data.lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .expect("a subject")
                .to_owned()
        })
        .collect();
    assert_eq!(subjects, expect);
    assert_eq!(subjects.len(), 5);

    let mut rows = store.notifications(100).await.unwrap();
    rows.reverse();
    let rows: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.kind.as_str(), r.result.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("failed", "sent"),
            ("failed", "suppressed"),
            ("blocked", "sent"),
            ("failed", "sent"),
            ("failed", "suppressed"),
            ("failed", "sent"),
            ("failed", "suppressed"),
            ("failed", "sent"),
        ]
    );
}

#[tokio::test]
async fn a_success_after_a_mailed_failure_is_mailed_once_as_recovered() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let config = config(&server, TO_OPS);
    let ok = |id| Notice::of_run(Some(id), "daemon", Outcome::Ok, HOST, None, None, None);

    let id = run(&store, Outcome::Ok, NOW).await;
    let got = notify::send(&config.notify, &store, &ok(id), NOW).await;
    assert_eq!(got.unwrap(), Delivery::Nothing, "nothing was wrong before");

    let id = run(&store, Outcome::Failed, NOW + MINUTE).await;
    let got = notify::send(&config.notify, &store, &failure(id), NOW + MINUTE).await;
    assert_eq!(got.unwrap(), Delivery::Sent);

    let id = run(&store, Outcome::Ok, NOW + 2 * MINUTE).await;
    let got = notify::send(&config.notify, &store, &ok(id), NOW + 2 * MINUTE).await;
    assert_eq!(got.unwrap(), Delivery::Sent);
    let id = run(&store, Outcome::Ok, NOW + 3 * MINUTE).await;
    let got = notify::send(&config.notify, &store, &ok(id), NOW + 3 * MINUTE).await;
    assert_eq!(
        got.unwrap(),
        Delivery::Nothing,
        "one recovered mail per problem"
    );

    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    let data = unfolded(&messages[1].data);
    assert!(
        data.contains(&format!(
            "Subject: [ldap2exo] {HOST}: run #{} ended ok again\r\n",
            id - 1
        )),
        "{data}"
    );
}

#[tokio::test]
async fn a_relay_without_starttls_is_sent_nothing_and_the_error_says_why() {
    let server = SmtpServer::start(SmtpOptions {
        starttls: false,
        ..SmtpOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let config = config(&server, TO_OPS);
    let id = run(&store, Outcome::Failed, NOW).await;

    let err = notify::send(&config.notify, &store, &failure(id), NOW)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{}", server.port)) && err.contains("STARTTLS"),
        "{err}"
    );
    assert!(!err.contains(SMTP_PASSWORD), "{err}");
    assert_eq!(server.connections(), 1);
    assert!(server.messages().is_empty());
    assert!(
        server.auths().is_empty(),
        "no credentials over a connection in clear"
    );
    let recorded = store.notifications(10).await.unwrap();
    assert_eq!(
        (recorded[0].kind.as_str(), recorded[0].result.as_str()),
        ("failed", "failed")
    );
    assert_eq!(recorded[0].detail.as_deref(), Some(err.as_str()));

    // The one-line call for the end of a run logs the problem and carries on.
    let log = LogCapture::start();
    let got = notify::after_run(&config, &store, failure(id), NOW + 1).await;
    assert_eq!(got, None);
    let text = log.text();
    assert!(
        text.contains("WARN") && text.contains("cannot mail the notification"),
        "{text}"
    );
    assert!(text.contains("STARTTLS"), "{text}");
    for secret in [SMTP_PASSWORD, BIND_PASSWORD, CLIENT_SECRET] {
        assert!(!text.contains(secret), "{secret} in the log: {text}");
    }
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn without_recipients_nothing_is_sent_recorded_or_connected() {
    let server = SmtpServer::start(SmtpOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let config = config(&server, "to = []");
    assert!(!config.notify.enabled());
    let id = run(&store, Outcome::Failed, NOW).await;
    let got = notify::send(&config.notify, &store, &failure(id), NOW).await;
    assert_eq!(got.unwrap(), Delivery::Disabled);
    assert_eq!(server.connections(), 0);
    assert!(store.notifications(10).await.unwrap().is_empty());

    // `on` decides which outcomes are mailed at all.
    let config = self::config(&server, &format!("{TO_OPS}\non = [\"blocked\"]"));
    let got = notify::send(&config.notify, &store, &failure(id), NOW).await;
    assert_eq!(got.unwrap(), Delivery::NotWanted);
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn implicit_tls_delivers_and_an_untrusted_relay_certificate_gets_nothing() {
    let server = SmtpServer::start(SmtpOptions {
        starttls: false,
        implicit_tls: true,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir).await;
    let config = config(&server, &format!("{TO_OPS}\ntls = \"tls\""));
    let id = run(&store, Outcome::Failed, NOW).await;
    let got = notify::send(&config.notify, &store, &failure(id), NOW).await;
    assert_eq!(got.unwrap(), Delivery::Sent);
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].tls);
    assert_eq!(server.auths().len(), 1);
    assert!(server.auths()[0].tls);

    // A relay whose certificate no trusted CA signed (here: without notify.ca_file, so only
    // the system roots) is sent neither the mail nor the password.
    let other = SmtpServer::start(SmtpOptions::default()).await;
    let mut config = self::config(&other, TO_OPS);
    config.notify.ca_file = None;
    let err = notify::send(&config.notify, &store, &failure(id), NOW + 3600)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{}", other.port)) && err.contains("certificate"),
        "{err}"
    );
    assert!(other.messages().is_empty());
    assert!(other.auths().is_empty());
}

#[test]
fn an_empty_read_offers_no_approval_and_an_interrupted_run_counts_what_is_left() {
    let leavers: Vec<ManagedObject> = ["left1", "left2"]
        .iter()
        .map(|u| managed(&person(u)))
        .collect();
    let plan = plan::plan(plan::Input {
        desired: Desired::default(),
        objects: &leavers,
        baseline: Some(2),
        scope: plan::Scope::Full,
        safety: &SafetyConfig::default(),
        max_deletes: Some(5),
        approval: None,
        recent_removals: Default::default(),
        tenant: None,
        journaled_creates: &BTreeSet::new(),
        outside: Default::default(),
        now: NOW,
    });
    assert_eq!(plan.safety.verdict, Verdict::Blocked);
    let n = Notice::of_run(
        Some(4),
        "sync",
        Outcome::Blocked,
        HOST,
        Some(&plan),
        None,
        None,
    );
    assert!(n.body.contains("LDAP returned no entries"), "{}", n.body);
    assert!(
        n.body.contains("No flag approves an empty read"),
        "{}",
        n.body
    );
    assert!(!n.body.contains("--max-deletes"), "{}", n.body);

    let results: Vec<ActionResult> = leavers
        .iter()
        .enumerate()
        .map(|(i, o)| ActionResult {
            op: Op::Disable,
            anchor: o.anchor.clone(),
            uid: o.uid.clone(),
            outcome: if i == 0 {
                apply::Outcome::Done
            } else {
                apply::Outcome::NotStarted("stopped by SIGTERM".into())
            },
        })
        .collect();
    let n = Notice::of_run(
        Some(5),
        "daemon",
        Outcome::Interrupted,
        HOST,
        None,
        Some(&results),
        None,
    );
    assert_eq!(
        n.subject,
        format!(
            "[ldap2exo] {HOST}: run #5 was interrupted: 1 actions not started, the next run does them"
        )
    );
    assert!(
        n.body.contains(
            "Actions: 1 done, 0 pending, 0 skipped, 0 in conflict, 0 failed, 1 not started."
        ),
        "{}",
        n.body
    );
}

/// End to end: a real `sync` whose tenant read fails mails the failure through the relay,
/// over STARTTLS, with the error, and with none of the secrets the run holds; the next
/// failure within the interval is held back; a good run after it is mailed as recovered.
#[test]
fn a_failing_sync_mails_the_operator_without_a_secret() {
    use crate::support::slapd::{SERVICE_PASSWORD, Slapd, SlapdOptions};
    use crate::sync::{campus_emulator, runtime};
    use ldap2exo_emulator::{FaultAction, FaultConfig, FaultRule};

    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = crate::support::cli::Install::with_tenant(&server, &emu);
    let relay = rt.block_on(SmtpServer::start(SmtpOptions::default()));
    let mut text = std::fs::read_to_string(&install.config).unwrap();
    text.push_str(&format!(
        "\n[notify]\nto = [\"idm-team@example.edu\"]\nfrom = \"ldap2exo <ldap2exo@example.edu>\"\n\
         smtp_host = \"127.0.0.1\"\nsmtp_port = {}\nca_file = {:?}\nusername = \"ldap2exo-relay\"\n",
        relay.port,
        relay.ca_file.display().to_string()
    ));
    std::fs::write(&install.config, text).unwrap();
    install
        .env
        .push(("LDAP2EXO__NOTIFY__PASSWORD".into(), SMTP_PASSWORD.into()));
    let client_secret = emu.tenant().client_secret.clone().unwrap();
    let check = install.run(&["check-config"]);
    assert!(
        check.stdout.contains(&format!(
            "notify: mails failed/partial/blocked/recovered to idm-team@example.edu via 127.0.0.1:{} (starttls, with a login)",
            relay.port
        )) && check.stdout.contains("daemon: ok (schedule `0 */15 * * * *`"),
        "{}",
        check.stdout
    );

    emu.set_faults(FaultConfig {
        rules: vec![FaultRule {
            endpoint: "EXO Get-Recipient".into(),
            action: FaultAction::Fail { status: 403 },
            count: 1_000,
        }],
        ..Default::default()
    })
    .unwrap();
    let run = install.run(&["sync"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let mails = relay.messages();
    assert_eq!(mails.len(), 1, "one mail for the failure:\n{}", run.stderr);
    let mail = &mails[0];
    assert!(mail.tls, "sent over STARTTLS");
    assert_eq!(mail.rcpt_to, ["idm-team@example.edu"]);
    let read = unfolded(&mail.data);
    assert!(read.contains("failed"), "{read}");
    assert!(
        read.contains("denied the request"),
        "the tenant's refusal is in the mail:\n{read}"
    );
    assert!(read.contains("ldap2exo status"), "{read}");
    for secret in [SMTP_PASSWORD, SERVICE_PASSWORD, client_secret.as_str()] {
        assert!(
            !mail.data.contains(secret) && !read.contains(secret),
            "a secret in the mail:\n{read}"
        );
    }
    assert!(
        relay.auths().iter().all(|a| a.tls),
        "the login went over TLS only"
    );

    // The same failure again within the interval: held back.
    let again = install.run(&["sync"]);
    assert_eq!(again.code, 1);
    assert_eq!(relay.messages().len(), 1, "rate-limited:\n{}", again.stderr);

    // The tenant is back: the good run says so, once.
    emu.set_faults(FaultConfig::default()).unwrap();
    let good = install.run(&["sync"]);
    assert_eq!(good.code, 0, "{}\n{}", good.stdout, good.stderr);
    let mails = relay.messages();
    assert_eq!(mails.len(), 2, "a recovery mail");
    assert!(
        unfolded(&mails[1].data).contains("ok again"),
        "{}",
        mails[1].data
    );
}
