//! Incremental reads of Exchange recipients: `WhenChanged`/`WhenChangedUTC` (and the
//! `WhenCreated` pair) on every recipient view, moved by every write Exchange shows, and
//! `Get-Recipient -Filter "WhenChangedUTC -gt 'M/d/yyyy h:mm:ss AM|PM'"` ("Filterable
//! properties for the Filter parameter on Exchange cmdlets", sections WhenChanged /
//! WhenChangedUTC). Tests that are not about the propagation delay use instant mode.

mod common;
use common::*;
use ldap2exo_emulator::{MailObject, Realism, RecipientKind, Seed, User};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const EXCHANGE_SKU: &str = "4b9405b0-7788-4568-add1-99614e613b69";
/// 2020-09-13T12:26:40Z: seeded objects "created" long ago.
const LONG_AGO: u64 = 1_600_000_000;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Unix seconds as the documented en-US filter value `M/d/yyyy h:mm:ss AM|PM`.
fn en_us(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let (h12, half) = match h {
        0 => (12, "AM"),
        1..=11 => (h, "AM"),
        12 => (12, "PM"),
        _ => (h - 12, "PM"),
    };
    format!("{m}/{d}/{y} {h12}:{min:02}:{s:02} {half}")
}

/// Unix seconds of `2026-07-15T16:40:06.0000000Z` / `2021-10-21T12:49:09+00:00`, checking
/// the exact form.
fn shown(v: &Value, prop: &str) -> i64 {
    let s = v[prop]
        .as_str()
        .unwrap_or_else(|| panic!("{prop} missing in {v}"));
    let utc = prop.ends_with("UTC");
    let (head, tail) = s.split_at(19);
    if utc {
        assert_eq!(tail, ".0000000Z", "{prop} = {s}");
    } else {
        assert_eq!(tail, "+00:00", "{prop} = {s}");
    }
    let b = head.as_bytes();
    assert!(
        head.len() == 19
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && head
                .bytes()
                .enumerate()
                .all(|(i, c)| [4, 7, 10, 13, 16].contains(&i) || c.is_ascii_digit()),
        "{prop} = {s}"
    );
    let n = |r: std::ops::Range<usize>| head[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant).
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// Both forms of both dates are there and agree (the server's zone is UTC).
fn dates_of(v: &Value) -> (i64, i64) {
    let changed = shown(v, "WhenChangedUTC");
    assert_eq!(shown(v, "WhenChanged"), changed, "{v}");
    let created = shown(v, "WhenCreatedUTC");
    assert_eq!(shown(v, "WhenCreated"), created, "{v}");
    (created, changed)
}

/// The `Name`s `Get-Recipient -Filter <filter> -ResultSize Unlimited` answers, sorted.
async fn names(env: &Env, cmdlet: &str, filter: &str) -> Vec<String> {
    let a = env
        .exo(cmdlet, json!({"Filter": filter, "ResultSize": "Unlimited"}))
        .await;
    assert_eq!(a.status, 200, "{filter}: {}", a.body);
    let mut v: Vec<String> = a.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

async fn changed_since(env: &Env, since: i64) -> Vec<String> {
    names(
        env,
        "Get-Recipient",
        &format!("WhenChangedUTC -gt '{}'", en_us(since)),
    )
    .await
}

fn old_mail_user(alias: &str) -> User {
    User {
        user_principal_name: format!("{alias}@example.edu"),
        mail_nickname: alias.into(),
        display_name: Some(alias.into()),
        proxy_addresses: vec![format!("SMTP:{alias}@example.edu")],
        external_email_address: Some(format!("{alias}@example.edu")),
        recipient_type_details: Some(RecipientKind::MailUser),
        usage_location: Some("DE".into()),
        created_unix: LONG_AGO,
        ..Default::default()
    }
}

fn seed_tenant(env: &Env) {
    env.emu
        .seed(Seed {
            users: ["ann", "bob", "cid", "dee", "eve", "fay"]
                .into_iter()
                .map(old_mail_user)
                .chain([User {
                    user_principal_name: "plain@example.edu".into(),
                    mail_nickname: "plain".into(),
                    created_unix: LONG_AGO,
                    ..Default::default()
                }])
                .collect(),
            groups: vec![MailObject {
                name: "Staff".into(),
                proxy_addresses: vec!["SMTP:staff@example.edu".into()],
                created_unix: LONG_AGO,
                ..Default::default()
            }],
            contacts: vec![MailObject {
                name: "Ext Ivan".into(),
                proxy_addresses: vec!["SMTP:ivan@example.edu".into()],
                external_email_address: Some("ivan@elsewhere.org".into()),
                created_unix: LONG_AGO,
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
}

#[tokio::test]
async fn every_recipient_view_carries_the_dates_in_the_live_forms() {
    let env = start_instant().await;
    seed_tenant(&env);
    let seeded_at = now_secs();
    env.emu
        .seed(Seed {
            contacts: vec![MailObject {
                name: "Ext Jo".into(),
                proxy_addresses: vec!["SMTP:jo@example.edu".into()],
                external_email_address: Some("jo@elsewhere.org".into()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
    let a = env
        .exo("Get-Recipient", json!({"ResultSize": "Unlimited"}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    for v in a.body["value"].as_array().unwrap() {
        let (created, changed) = dates_of(v);
        match v["Name"].as_str().unwrap() {
            // A seeded contact without `createdUnix` was created when seeded; seeded objects
            // were last changed when created.
            "Ext Jo" => assert!(created >= seeded_at && created <= now_secs(), "{v}"),
            _ => assert_eq!(created, LONG_AGO as i64, "{v}"),
        }
        assert_eq!(changed, created, "{v}");
    }
    // The exact strings for a known instant.
    let g = env.exo("Get-Recipient", json!({"Identity": "Staff"})).await;
    assert_eq!(
        g.body["value"][0]["WhenChangedUTC"],
        "2020-09-13T12:26:40.0000000Z"
    );
    assert_eq!(
        g.body["value"][0]["WhenCreated"],
        "2020-09-13T12:26:40+00:00"
    );
    for cmdlet in ["Get-MailUser", "Get-User", "Get-EXORecipient"] {
        let a = env
            .exo(
                cmdlet,
                json!({"Identity": "ann", "Properties": ["WhenChangedUTC"]}),
            )
            .await;
        // Get-EXORecipient alone takes -Properties; the others refuse it.
        if cmdlet != "Get-EXORecipient" {
            assert_eq!(a.status, 400, "{cmdlet}: {}", a.body);
            let a = env.exo(cmdlet, json!({"Identity": "ann"})).await;
            assert_eq!(a.status, 200, "{cmdlet}: {}", a.body);
            assert_eq!(dates_of(&a.body["value"][0]).1, LONG_AGO as i64);
        } else {
            assert_eq!(a.status, 200, "{}", a.body);
            assert_eq!(
                a.body["value"][0]["WhenChangedUTC"],
                "2020-09-13T12:26:40.0000000Z"
            );
        }
    }
    // Get-User lists users that are no recipient too.
    let a = env.exo("Get-User", json!({"Identity": "plain"})).await;
    assert_eq!(
        dates_of(&a.body["value"][0]),
        (LONG_AGO as i64, LONG_AGO as i64)
    );
}

#[tokio::test]
async fn exchange_writes_move_when_changed_and_the_filter_finds_them() {
    let env = start_instant().await;
    seed_tenant(&env);
    let before = now_secs() - 1;
    assert_eq!(changed_since(&env, before).await, Vec::<String>::new());

    // Set-MailUser (a custom attribute), Set-MailUser -EmailAddresses, Set-User.
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "ann", "CustomAttribute1": "x"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "bob", "EmailAddresses": {
            "@odata.type": "#Exchange.GenericHashTable", "Add": ["smtp:bob2@example.edu"]}}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = env
        .exo(
            "Set-User",
            json!({"Identity": "cid", "Department": "Physics"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // A Set-* that changes nothing only warns and moves nothing.
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "dee", "HiddenFromAddressListsEnabled": false}),
        )
        .await;
    assert_eq!(
        a.body["@adminapi.warnings"].as_array().map(Vec::len),
        Some(1),
        "{}",
        a.body
    );
    // A licence with an Exchange plan converts eve into a mailbox (instant: at once).
    let a = env
        .post(
            &format!("/users/{}/assignLicense", "eve@example.edu"),
            json!({"addLicenses": [{"skuId": EXCHANGE_SKU, "disabledPlans": []}], "removeLicenses": []}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    // Remove-MailUser: fay is soft-deleted, and Get-MailUser -SoftDeletedMailUser filters too.
    let a = env.exo("Remove-MailUser", json!({"Identity": "fay"})).await;
    assert_eq!(a.status, 200, "{}", a.body);

    assert_eq!(
        changed_since(&env, before).await,
        ["ann", "bob", "cid", "eve"]
    );
    let a = env
        .exo(
            "Get-MailUser",
            json!({"SoftDeletedMailUser": true, "Filter": format!("WhenChangedUTC -gt '{}'", en_us(before))}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["value"][0]["Name"], "fay");
    assert_eq!(a.body["value"].as_array().unwrap().len(), 1);
    let deleted = &a.body["value"][0];
    dates_of(deleted);
    assert!(
        deleted["WhenSoftDeleted"]
            .as_str()
            .is_some_and(|s| s.ends_with("+00:00")),
        "{deleted}"
    );
    let a = env
        .exo(
            "Get-Mailbox",
            json!({"Filter": format!("WhenChanged -ge '{}'", en_us(before + 1))}),
        )
        .await;
    assert_eq!(a.body["value"][0]["Name"], "eve", "{}", a.body);
    let (created, changed) = dates_of(&a.body["value"][0]);
    assert_eq!(created, LONG_AGO as i64);
    assert!(changed > before && changed <= now_secs());

    // Nothing changed after `after` (WhenChanged keeps whole seconds).
    let after = now_secs();
    assert_eq!(changed_since(&env, after).await, Vec::<String>::new());
    // The other operators and properties.
    let old = names(
        &env,
        "Get-Recipient",
        &format!("WhenChangedUTC -le '{}'", en_us(before)),
    )
    .await;
    assert_eq!(old, ["Ext Ivan", "Staff", "dee"]);
    let created_before = names(
        &env,
        "Get-Recipient",
        &format!(
            "(WhenCreatedUTC -lt '{}') -and (WhenCreated -eq '{}')",
            en_us(before),
            en_us(LONG_AGO as i64)
        ),
    )
    .await;
    assert_eq!(
        created_before,
        ["Ext Ivan", "Staff", "ann", "bob", "cid", "dee", "eve"]
    );
    assert_eq!(
        names(
            &env,
            "Get-Recipient",
            &format!("WhenCreatedUTC -gt '{}'", en_us(before)),
        )
        .await,
        Vec::<String>::new(),
    );
    // Get-User (users that are no recipient too) filters the same way.
    assert_eq!(
        names(
            &env,
            "Get-User",
            &format!("WhenChangedUTC -gt '{}'", en_us(before))
        )
        .await,
        ["ann", "bob", "cid", "eve"]
    );
}

#[tokio::test]
async fn new_mail_users_are_created_and_changed_now() {
    let env = start_instant().await;
    let before = now_secs() - 1;
    let a = env
        .exo(
            "New-MailUser",
            json!({
                "Name": "gil", "Alias": "gil", "ExternalEmailAddress": "gil@example.edu",
                "MicrosoftOnlineServicesID": "gil@example.edu", "Password": "Secr3t-Passw0rd!",
            }),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (created, changed) = dates_of(&a.body["value"][0]);
    assert_eq!(created, changed);
    assert!(created > before && created <= now_secs());
    assert_eq!(
        names(
            &env,
            "Get-Recipient",
            &format!("WhenCreatedUTC -gt '{}'", en_us(before))
        )
        .await,
        ["gil"]
    );
}

/// Strict mode: a Graph write moves Exchange's `WhenChanged` when Exchange sees it, and its
/// `WhenChanged` is that moment, not the write's: a reader that read just before the write
/// reached Exchange finds it with the time of that read.
#[tokio::test]
async fn graph_writes_move_when_changed_once_exchange_sees_them() {
    let delay_ms = 3000;
    let env = start_realism(Realism {
        graph_to_exchange_ms: delay_ms,
        ..Realism::default()
    })
    .await;
    seed_tenant(&env);
    let before = now_secs() - 1;
    let started = Instant::now();
    let patched_at = now_secs();
    let a = env
        .patch(
            "/users/ann@example.edu",
            json!({"onPremisesExtensionAttributes": {"extensionAttribute2": "from graph"}}),
        )
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    // Graph writes Exchange does not show (here the usage location) move nothing.
    let a = env
        .patch("/users/bob@example.edu", json!({"usageLocation": "FR"}))
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    let not_yet = changed_since(&env, before).await;
    let read_at = now_secs();
    // Inside the delay, and early enough that the write reaches Exchange in a later second
    // than `read_at`.
    assert!(
        started.elapsed() < Duration::from_millis(delay_ms - 1100),
        "the check ran too late: {:?}",
        started.elapsed()
    );
    assert_eq!(
        not_yet,
        Vec::<String>::new(),
        "Exchange does not see it yet"
    );
    let a = env.exo("Get-Recipient", json!({"Identity": "ann"})).await;
    assert_eq!(a.body["value"][0]["CustomAttribute2"], "");
    assert_eq!(dates_of(&a.body["value"][0]).1, LONG_AGO as i64);

    tokio::time::sleep(Duration::from_millis(delay_ms + 300)).await;
    assert_eq!(changed_since(&env, before).await, ["ann"]);
    // Found by a reader whose last read was after the write but before Exchange saw it.
    assert_eq!(changed_since(&env, read_at).await, ["ann"]);
    let a = env.exo("Get-Recipient", json!({"Identity": "ann"})).await;
    assert_eq!(a.body["value"][0]["CustomAttribute2"], "from graph");
    let changed = dates_of(&a.body["value"][0]).1;
    assert!(
        changed >= patched_at + (delay_ms / 1000) as i64 && changed <= now_secs(),
        "WhenChanged {changed} is when Exchange saw the write (patched at {patched_at})"
    );
    let after = now_secs();
    assert_eq!(changed_since(&env, after).await, Vec::<String>::new());
}

#[tokio::test]
async fn date_filters_are_refused_unless_in_the_documented_form() {
    let env = start_instant().await;
    seed_tenant(&env);
    let bad_dates = [
        "'2017-08-01T14:00:00Z'",
        "'2017-08-01 14:00:00'",
        "'8/1/2017'",
        "'8/1/2017 14:00:00'",
        "'8/1/2017 2:00 PM'",
        "'8/1/2017 2:00:00 pm'",
        "'13/1/2017 2:00:00 PM'",
        "'2/29/2017 2:00:00 PM'",
        "'8/1/2017 13:00:00 PM'",
        "'8/1/17 2:00:00 PM'",
        "'yesterday'",
        "$null",
        "1501596000",
    ];
    for v in bad_dates {
        let filter = format!("WhenChangedUTC -gt {v}");
        let a = env.exo("Get-Recipient", json!({"Filter": filter})).await;
        assert_eq!(a.status, 400, "{filter}: {}", a.body);
        let text = a.body["error"]["details"][0]["message"].as_str().unwrap();
        assert!(
            text.contains("|System.Management.Automation.ParameterBindingException|Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"The value \"")
                && text.contains("\" of property \"WhenChangedUTC\" couldn't be converted to System.DateTime. Use the format M/d/yyyy h:mm:ss AM|PM, for example '8/1/2017 2:00:00 PM'."),
            "{filter}: {text}"
        );
    }
    // Leading zeros, midnight and noon are fine.
    for v in [
        "08/01/2017 02:00:00 PM",
        "2/29/2016 12:00:00 AM",
        "12/31/9999 11:59:59 PM",
    ] {
        let a = env
            .exo(
                "Get-Recipient",
                json!({"Filter": format!("WhenChanged -lt '{v}'")}),
            )
            .await;
        assert_eq!(a.status, 200, "{v}: {}", a.body);
    }
    // The ordering operators are for dates, -like is not.
    for (filter, prop, op) in [
        ("Alias -gt 'a'", "Alias", "gt"),
        ("CustomAttribute1 -le 'z'", "CustomAttribute1", "le"),
        ("WhenChanged -like '8/1/2017*'", "WhenChanged", "like"),
    ] {
        let a = env.exo("Get-Recipient", json!({"Filter": filter})).await;
        assert_eq!(a.status, 400, "{filter}: {}", a.body);
        let text = a.body["error"]["details"][0]["message"].as_str().unwrap();
        assert!(
            text.ends_with(&format!("Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": \"The operator \"-{op}\" can't be used with the property \"{prop}\".\"")),
            "{filter}: {text}"
        );
    }
    // Unknown operators keep the syntax error.
    let a = env
        .exo(
            "Get-Recipient",
            json!({"Filter": "WhenChanged -after '8/1/2017 2:00:00 PM'"}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        a.body["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("Invalid filter syntax."),
        "{}",
        a.body
    );
}

/// Every page of `cmdlet` from page size `size` on, following `@odata.nextLink`: the values
/// in order and every warning.
async fn all_pages(
    env: &Env,
    cmdlet: &str,
    params: &Value,
    size: usize,
) -> (Vec<Value>, Vec<Value>) {
    let url = env.emu.exchange_url();
    let mut a = env.exo_at(&url, cmdlet, params.clone(), Some(size)).await;
    let (mut values, mut warnings) = (Vec::new(), Vec::new());
    loop {
        assert_eq!(a.status, 200, "{cmdlet} {params}: {}", a.body);
        let page = a.body["value"].as_array().unwrap();
        assert!(
            page.len() <= size,
            "{cmdlet} {params}: page of {}",
            page.len()
        );
        values.extend(page.iter().cloned());
        warnings.extend(
            a.body["@adminapi.warnings"]
                .as_array()
                .into_iter()
                .flatten()
                .cloned(),
        );
        match a.body["@odata.nextLink"].as_str() {
            Some(next) => a = env.exo_at(next, cmdlet, params.clone(), Some(size)).await,
            None => return (values, warnings),
        }
    }
}

/// A listing builds only its page's views when it can count its result without them (no
/// filter, or a lone change-time bound); the pages must still make up exactly the one-page
/// answer, with and without a filter that needs every view, and under `-ResultSize`.
#[tokio::test]
async fn a_listing_answers_the_same_whatever_its_page_size() {
    let env = start_instant().await;
    seed_tenant(&env);
    let before = now_secs() - 1;
    for alias in ["bob", "eve"] {
        let a = env
            .exo(
                "Set-MailUser",
                json!({"Identity": alias, "CustomAttribute3": "x"}),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let since = en_us(before);
    let filters = [
        None,
        Some(format!("WhenChangedUTC -gt '{since}'")),
        Some(format!("WhenChanged -ge '{since}'")),
        Some(format!("WhenChangedUTC -gt '{since}' -and Alias -ne 'bob'")),
        Some(format!(
            "WhenChangedUTC -gt '{}'",
            en_us(LONG_AGO as i64 - 10)
        )),
        Some("Alias -like '*e*'".to_string()),
    ];
    let mut seen_changed = false;
    for cmdlet in [
        "Get-Recipient",
        "Get-EXORecipient",
        "Get-MailUser",
        "Get-User",
    ] {
        for filter in &filters {
            for result_size in [json!("Unlimited"), json!(3)] {
                let mut params = json!({"ResultSize": result_size});
                if let Some(f) = filter {
                    params["Filter"] = json!(f);
                }
                let (whole, whole_warnings) = all_pages(&env, cmdlet, &params, 1000).await;
                for size in [1, 2, 4] {
                    let (paged, warnings) = all_pages(&env, cmdlet, &params, size).await;
                    assert_eq!(paged, whole, "{cmdlet} {params} in pages of {size}");
                    assert!(
                        warnings.iter().all(|w| whole_warnings.contains(w))
                            && warnings.is_empty() == whole_warnings.is_empty(),
                        "{cmdlet} {params}: {warnings:?} against {whole_warnings:?}"
                    );
                }
                if filter
                    .as_deref()
                    .is_some_and(|f| f.ends_with(&format!("'{since}'")))
                    && cmdlet == "Get-Recipient"
                    && result_size == json!("Unlimited")
                {
                    let names: Vec<&str> =
                        whole.iter().filter_map(|v| v["Name"].as_str()).collect();
                    assert_eq!(names, ["bob", "eve"], "{params}");
                    seen_changed = true;
                }
            }
        }
    }
    assert!(seen_changed);
    // The bound is exact to the second: objects last changed at LONG_AGO (everything seeded
    // and not written since) are out of `-gt` and in `-ge`.
    let at = en_us(LONG_AGO as i64);
    assert_eq!(
        names(&env, "Get-Recipient", &format!("WhenChangedUTC -gt '{at}'")).await,
        ["bob", "eve"]
    );
    assert_eq!(
        names(&env, "Get-Recipient", &format!("WhenChanged -ge '{at}'")).await,
        names(&env, "Get-Recipient", "Alias -like '*'").await
    );
    assert_eq!(
        names(&env, "Get-Recipient", &format!("WhenChanged -ge '{at}'"))
            .await
            .len(),
        8,
        "six mail users, a group and a contact"
    );
}
