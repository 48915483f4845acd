//! Strict-mode Exchange behaviour: live error bodies, warnings and non-terminating errors,
//! address rules, Set-User/Get-User, groups and contacts, concurrency refusals, expiring
//! nextLinks, targeted faults. Tests that are not about timing use instant mode so that the
//! propagation delays do not get in the way; tests about timing say so.

mod common;
use common::*;
use ldap2exo_emulator::{
    EmulatorConfig, FaultAction, FaultConfig, FaultRule, MailObject, Realism, Seed, User,
};
use serde_json::{Value, json};

const WRAPPER: &str =
    "Microsoft.Exchange.Management.PSDirectInvoke.DirectInvokeCmdletExecutionException";

async fn mail_user(env: &Env, alias: &str) -> Value {
    let a = env
        .exo("New-MailUser", json!({
            "Name": alias, "Alias": alias, "ExternalEmailAddress": format!("SMTP:{alias}@example.edu"),
            "MicrosoftOnlineServicesID": format!("{alias}@example.edu"), "Password": "Secr3t-Passw0rd!",
        }))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["value"][0].clone()
}

fn hashtable(add: &[&str], remove: &[&str]) -> Value {
    json!({"@odata.type": "#Exchange.GenericHashTable", "Add": add, "Remove": remove})
}

async fn addresses(env: &Env, identity: &str) -> Vec<String> {
    let a = env
        .exo("Get-Recipient", json!({"Identity": identity}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    serde_json::from_value(a.body["value"][0]["EmailAddresses"].clone()).unwrap()
}

#[tokio::test]
async fn error_bodies_look_like_live_tenants() {
    // Not about timing: instant mode.
    let env = start_instant().await;
    mail_user(&env, "ann").await;
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "ann", "EmailAddresses": hashtable(&["smtp:x@example.edu"], &[])}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    mail_user(&env, "bob").await;
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "bob", "EmailAddresses": hashtable(&["smtp:x@example.edu"], &[])}),
        )
        .await;
    assert_eq!(a.status, 400);
    let e = &a.body["error"];
    assert_eq!(e["code"], "BadRequest");
    assert_eq!(e["message"], "Error executing cmdlet");
    assert_eq!(e["details"][0]["code"], "Client");
    let d = exo_detail(&a);
    assert!(d.starts_with("Ex") && d.as_bytes()[8] == b'|', "{d}");
    assert!(d.contains("|Microsoft.Exchange.Data.Directory.ProxyAddressExistsException|The proxy address \"smtp:x@example.edu\" is already being used"), "{d}");
    assert_eq!(e["innererror"]["internalexception"]["type"], WRAPPER);
    assert!(e["innererror"].get("internalException").is_none());
    assert!(!e["message"].as_str().unwrap().contains("already"));

    let a = env.exo("Get-MailUser", json!({"Identity": "nobody"})).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["error"]["code"], "NotFound");
    assert!(
        exo_detail(&a)
            .contains("|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|")
    );
    let a = env
        .exo("Set-MailUser", json!({"Identity": "ann", "Bogus": 1}))
        .await;
    assert!(exo_detail(&a).contains("|System.Management.Automation.ParameterBindingException|"));
    let a = env
        .exo(
            "New-MailUser",
            json!({"Name": "ann", "ExternalEmailAddress": "z@elsewhere.org"}),
        )
        .await;
    assert!(
        exo_detail(&a)
            .contains("|Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException|"),
        "{}",
        a.body
    );

    // Unknown cmdlet: no details at all.
    let a = env.exo("Get-Nothing", json!({})).await;
    assert_eq!(a.status, 400);
    assert!(a.body["error"].get("details").is_none(), "{}", a.body);

    // Injected 5xx: "Invalid Operation", no details; 403: not JSON.
    env.emu
        .set_faults(FaultConfig {
            rules: vec![
                FaultRule {
                    endpoint: "EXO Get-Recipient".into(),
                    action: FaultAction::Fail { status: 500 },
                    count: 1,
                },
                FaultRule {
                    endpoint: "EXO Get-Mailbox".into(),
                    action: FaultAction::Fail { status: 403 },
                    count: 1,
                },
            ],
            ..Default::default()
        })
        .unwrap();
    let a = env.exo("Get-Recipient", json!({})).await;
    assert_eq!(a.status, 500);
    assert_eq!(a.body["error"]["code"], "InternalServerError");
    assert_eq!(a.body["error"]["message"], "Invalid Operation");
    assert!(a.body["error"].get("details").is_none());
    let a = env.exo("Get-Mailbox", json!({})).await;
    assert_eq!(a.status, 403);
    assert!(a.body.is_string(), "{}", a.body);
    assert_eq!(a.headers["content-type"], "text/plain");
}

#[tokio::test]
async fn unchanged_set_warns_and_non_terminating_errors_do_nothing() {
    // Not about timing: instant mode.
    let env = start_instant().await;
    mail_user(&env, "cy").await;
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "cy", "CustomAttribute1": "x"}),
        )
        .await;
    assert!(a.body.get("@adminapi.warnings").is_none(), "{}", a.body);
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "cy", "CustomAttribute1": "x"}),
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.body["@adminapi.warnings"],
        json!(["The command completed successfully but no settings of 'cy' have been modified."])
    );
    // Adding an address the recipient has is no error, only that warning.
    let before = addresses(&env, "cy").await;
    let a = env
        .exo("Set-MailUser", json!({"Identity": "cy", "EmailAddresses": hashtable(&["smtp:cy@contoso.onmicrosoft.com"], &[])}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["@adminapi.warnings"].as_array().unwrap().len(), 1);
    assert_eq!(addresses(&env, "cy").await, before);

    env.emu
        .set_faults(FaultConfig {
            rules: vec![FaultRule {
                endpoint: "EXO Set-MailUser".into(),
                action: FaultAction::NonTerminatingError,
                count: 1,
            }],
            ..Default::default()
        })
        .unwrap();
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "cy", "CustomAttribute1": "y"}),
        )
        .await;
    assert_eq!(a.status, 200);
    let errs = a.body["@adminapi.errors"].as_array().unwrap();
    assert!(
        errs[0]
            .as_str()
            .unwrap()
            .contains("|Microsoft.Exchange.Configuration.Tasks.TaskException|")
    );
    let r = env.exo("Get-MailUser", json!({"Identity": "cy"})).await;
    assert_eq!(r.body["value"][0]["CustomAttribute1"], "x", "no effect");
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "cy", "CustomAttribute1": "y"}),
        )
        .await;
    assert!(a.body.get("@adminapi.errors").is_none());
    let r = env.exo("Get-MailUser", json!({"Identity": "cy"})).await;
    assert_eq!(r.body["value"][0]["CustomAttribute1"], "y");
}

#[tokio::test]
async fn primary_address_rules() {
    // Instant timing, strict rules: the rules are what this test is about.
    let env = start_realism(Realism {
        strict_rules: true,
        ..Realism::instant()
    })
    .await;
    mail_user(&env, "dee").await;
    assert_eq!(addresses(&env, "dee").await[0], "SMTP:dee@example.edu");

    // SMTP:new without demoting the old primary: refused.
    let a = env
        .exo("Set-MailUser", json!({"Identity": "dee", "EmailAddresses": hashtable(&["SMTP:d.new@example.edu"], &[])}))
        .await;
    assert_eq!(a.status, 400);
    assert!(exo_detail(&a).contains("|Microsoft.Exchange.Data.DataValidationException|There are multiple primary SMTP addresses."), "{}", a.body);

    // Demoted in the same call (smtp:old in Add): accepted, new primary, old secondary.
    let a = env
        .exo("Set-MailUser", json!({"Identity": "dee", "EmailAddresses": hashtable(&["SMTP:d.new@example.edu", "smtp:dee@example.edu"], &[])}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let now = addresses(&env, "dee").await;
    assert!(now.contains(&"SMTP:d.new@example.edu".to_string()));
    assert!(now.contains(&"smtp:dee@example.edu".to_string()));

    // Old primary in Remove: accepted and gone.
    let a = env
        .exo("Set-MailUser", json!({"Identity": "dee", "EmailAddresses": hashtable(&["SMTP:d3@example.edu"], &["smtp:d.new@example.edu"])}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let now = addresses(&env, "dee").await;
    assert_eq!(now.iter().filter(|p| p.starts_with("SMTP:")).count(), 1);
    assert!(now.contains(&"SMTP:d3@example.edu".to_string()));
    assert!(!now.iter().any(|p| p.ends_with("d.new@example.edu")));

    // Full list: exactly one SMTP:, replaces everything.
    let a = env
        .exo("Set-MailUser", json!({"Identity": "dee", "EmailAddresses": ["smtp:d3@example.edu", "smtp:dee@example.edu"]}))
        .await;
    assert_eq!(a.status, 400);
    let a = env
        .exo("Set-MailUser", json!({"Identity": "dee", "EmailAddresses": ["SMTP:dee@example.edu", "smtp:dee@contoso.onmicrosoft.com", "SIP:dee@example.edu"]}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        addresses(&env, "dee").await,
        [
            "SMTP:dee@example.edu",
            "smtp:dee@contoso.onmicrosoft.com",
            "SIP:dee@example.edu"
        ]
    );

    // Set-MailUser has no -FirstName (Set-User has).
    let a = env
        .exo("Set-MailUser", json!({"Identity": "dee", "FirstName": "D"}))
        .await;
    assert_eq!(a.status, 400);
    assert!(exo_detail(&a).contains("ParameterBindingException"));

    // -WindowsEmailAddress: new primary, old kept as smtp:.
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "dee", "WindowsEmailAddress": "dee.w@example.edu"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let now = addresses(&env, "dee").await;
    assert!(now.contains(&"SMTP:dee.w@example.edu".to_string()));
    assert!(now.contains(&"smtp:dee@example.edu".to_string()));
}

#[tokio::test]
async fn new_mail_user_ignores_primary_smtp_address_and_checks_passwords() {
    // Instant timing, strict rules.
    let env = start_realism(Realism {
        strict_rules: true,
        ..Realism::instant()
    })
    .await;
    let a = env
        .exo(
            "New-MailUser",
            json!({"Name": "eve", "ExternalEmailAddress": "eve@elsewhere.org",
            "MicrosoftOnlineServicesID": "eve@example.edu", "Password": "Secr3t-Passw0rd!",
            "PrimarySmtpAddress": "eve.primary@example.edu"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v = &a.body["value"][0];
    // External address not on an accepted domain: the MOERA is primary, the UPN secondary.
    assert_eq!(v["PrimarySmtpAddress"], "eve@contoso.onmicrosoft.com");
    assert_eq!(
        v["EmailAddresses"],
        json!(["SMTP:eve@contoso.onmicrosoft.com", "smtp:eve@example.edu"])
    );
    let a = env
        .exo(
            "New-MailUser",
            json!({"Name": "fay", "ExternalEmailAddress": "fay@elsewhere.org",
            "MicrosoftOnlineServicesID": "fay@example.edu", "Password": "short"}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(exo_detail(&a).contains("password complexity"), "{}", a.body);
}

#[tokio::test]
async fn set_user_get_user_and_upn_change() {
    // Not about timing: instant mode.
    let env = start_instant().await;
    let gid = env.create_user("gus", json!({})).await;
    let a = env
        .exo("Set-User", json!({"Identity": gid, "Department": "Physics", "Title": "Prof", "Office": "B1",
            "Phone": "+49 1", "MobilePhone": "+49 2", "Company": "Uni", "FirstName": "Gus", "LastName": "G"}))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = env
        .exo("Get-User", json!({"Identity": "gus@example.edu"}))
        .await;
    let v = &a.body["value"][0];
    assert_eq!(v["RecipientTypeDetails"], "User");
    assert_eq!(v["ExternalDirectoryObjectId"], gid.as_str());
    assert_eq!(v["Department"], "Physics");
    assert_eq!(v["Phone"], "+49 1");
    let g = env
        .get(&format!(
            "/users/{gid}?$select=department,jobTitle,businessPhones"
        ))
        .await;
    assert_eq!(g.body["jobTitle"], "Prof");
    assert_eq!(g.body["businessPhones"], json!(["+49 1"]));
    let a = env
        .exo(
            "Set-User",
            json!({"Identity": gid, "Department": "Physics"}),
        )
        .await;
    assert!(
        a.body["@adminapi.warnings"][0]
            .as_str()
            .unwrap()
            .contains("no settings")
    );
    let a = env
        .exo("Set-User", json!({"Identity": gid, "Manager": "x"}))
        .await;
    assert_eq!(a.status, 400);

    mail_user(&env, "hal").await;
    let a = env
        .exo("Get-User", json!({"ResultSize": "Unlimited"}))
        .await;
    let kinds: Vec<&str> = a.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["RecipientTypeDetails"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"User") && kinds.contains(&"MailUser"),
        "{kinds:?}"
    );
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "hal", "MicrosoftOnlineServicesID": "hal.new@example.edu"}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = env.exo("Get-MailUser", json!({"Identity": "hal"})).await;
    assert_eq!(a.body["value"][0]["WindowsLiveID"], "hal.new@example.edu");
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "hal", "MicrosoftOnlineServicesID": "gus@example.edu"}),
        )
        .await;
    assert_eq!(a.status, 400);
}

#[tokio::test]
async fn groups_and_contacts_are_recipients_owning_addresses() {
    // Not about timing: instant mode.
    let env = start_instant().await;
    env.emu
        .seed(Seed {
            groups: vec![MailObject {
                name: "Staff".into(),
                proxy_addresses: vec!["SMTP:staff@example.edu".into()],
                ..Default::default()
            }],
            contacts: vec![MailObject {
                name: "Ext Ivan".into(),
                alias: "ivan.ext".into(),
                proxy_addresses: vec!["SMTP:ivan@example.edu".into()],
                external_email_address: Some("ivan@elsewhere.org".into()),
                ..Default::default()
            }],
            users: vec![User {
                user_principal_name: "jo@example.edu".into(),
                mail_nickname: "jo".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
    let a = env.exo("Get-Recipient", json!({})).await;
    let types: Vec<&str> = a.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["RecipientTypeDetails"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["MailUniversalDistributionGroup", "MailContact"]);
    let v = &a.body["value"][1];
    for k in [
        "Guid",
        "Identity",
        "Alias",
        "DisplayName",
        "RecipientType",
        "PrimarySmtpAddress",
        "HiddenFromAddressListsEnabled",
        "CustomAttribute15",
        "WindowsLiveID",
        "Company",
    ] {
        assert!(v.get(k).is_some(), "{k} missing in {v}");
    }
    assert_eq!(v["ExternalEmailAddress"], "SMTP:ivan@elsewhere.org");
    let a = env
        .exo(
            "Get-EXORecipient",
            json!({"RecipientTypeDetails": "MailContact"}),
        )
        .await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 1);
    let a = env
        .exo("Get-Recipient", json!({"Identity": "staff@example.edu"}))
        .await;
    assert_eq!(a.body["value"][0]["Name"], "Staff");

    // Their addresses are taken everywhere; Graph's user list never shows them.
    let a = env
        .exo(
            "New-MailUser",
            json!({"Name": "staffer", "ExternalEmailAddress": "staff@example.edu"}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(exo_detail(&a).contains("ProxyAddressExistsException"));
    let a = env
        .patch("/users/jo@example.edu", json!({"mail": "ivan@example.edu"}))
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    let a = env.get("/users?$select=userPrincipalName").await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 1);

    // Soft-deleted mail users keep theirs.
    mail_user(&env, "kim").await;
    let a = env.exo("Remove-MailUser", json!({"Identity": "kim"})).await;
    assert_eq!(a.status, 200);
    let a = env
        .exo("Get-MailUser", json!({"SoftDeletedMailUser": true}))
        .await;
    assert_eq!(a.body["value"][0]["Name"], "kim");
    let a = env
        .exo(
            "New-MailUser",
            json!({"Name": "kim2", "ExternalEmailAddress": "kim@example.edu"}),
        )
        .await;
    assert_eq!(a.status, 400);
}

#[tokio::test]
async fn too_many_concurrent_cmdlets_get_a_plain_429() {
    // Timing: each cmdlet takes 400 ms, at most 2 at once.
    let env = start_realism(Realism {
        exchange_max_concurrent: Some(2),
        exchange_cmdlet_ms: 400,
        ..Realism::instant()
    })
    .await;
    let calls = (0..4).map(|_| env.exo("Get-Recipient", json!({})));
    let answers = futures_join(calls).await;
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(
        refused.len(),
        2,
        "{:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert_eq!(
        refused[0].body,
        "You have reached the maximum number of concurrent requests per tenant. Please wait and try again."
    );
    assert!(refused[0].headers.get("retry-after").is_none());
    // One at a time is fine.
    assert_eq!(env.exo("Get-Recipient", json!({})).await.status, 200);
}

async fn futures_join<F: std::future::Future<Output = Answer>>(
    fs: impl Iterator<Item = F>,
) -> Vec<Answer> {
    let mut set = Vec::new();
    for f in fs {
        set.push(f);
    }
    let mut out = Vec::new();
    // Poll all at once: join through a local task set of boxed futures.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = set.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<Answer>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(a) => done[i] = Some(a),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(done.into_iter().flatten());
    out
}

#[tokio::test]
async fn next_links_are_single_use_and_expire() {
    // Timing: a 300 ms link lifetime.
    let env = start_realism(Realism {
        exchange_next_link_ttl_ms: Some(300),
        ..Realism::instant()
    })
    .await;
    for n in ["la", "lb", "lc"] {
        mail_user(&env, n).await;
    }
    let url = env.emu.exchange_url();
    let a = env.exo_at(&url, "Get-Recipient", json!({}), Some(1)).await;
    let next = a.body["@odata.nextLink"].as_str().unwrap().to_string();
    let b = env.exo_at(&next, "Get-Recipient", json!({}), Some(1)).await;
    assert_eq!(b.status, 200, "{}", b.body);
    let again = env.exo_at(&next, "Get-Recipient", json!({}), Some(1)).await;
    assert_eq!(again.status, 400);
    assert!(
        exo_detail(&again)
            .ends_with("|Expired or Invalid pagination request. Default Expiry time is 00:30:00"),
        "{}",
        again.body
    );
    let late = b.body["@odata.nextLink"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let c = env.exo_at(&late, "Get-Recipient", json!({}), Some(1)).await;
    assert_eq!(c.status, 400);

    // Instant mode: links stay valid and replayable.
    let env = start_instant().await;
    for n in ["ma", "mb"] {
        mail_user(&env, n).await;
    }
    let a = env
        .exo_at(&env.emu.exchange_url(), "Get-Recipient", json!({}), Some(1))
        .await;
    let next = a.body["@odata.nextLink"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(
            env.exo_at(&next, "Get-Recipient", json!({}), Some(1))
                .await
                .status,
            200
        );
    }
}

#[tokio::test]
async fn targeted_faults_fail_or_cut_off_named_endpoints() {
    // Not about timing: instant mode.
    let env = start_with(EmulatorConfig::instant()).await;
    // Through the side door, as a separate process would.
    let r = env
        .http
        .put(format!("{}/_emulator/faults", env.emu.base_url()))
        .json(&json!({"rules": [
            {"endpoint": "EXO New-MailUser", "action": {"fail": {"status": 503}}, "count": 1},
            {"endpoint": "POST /v1.0/users", "action": "drop_response", "count": 1},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let a = env
        .exo(
            "New-MailUser",
            json!({"Name": "ned", "ExternalEmailAddress": "ned@example.edu"}),
        )
        .await;
    assert_eq!(a.status, 503);
    assert!(env.emu.state().users.is_empty(), "not executed");
    mail_user(&env, "ned").await;

    let r = env
        .http
        .post(env.graph("/users"))
        .bearer_auth(&env.graph_token)
        .json(&json!({"accountEnabled": true, "displayName": "Olga", "mailNickname": "olga",
            "userPrincipalName": "olga@example.edu", "passwordProfile": {"password": "Secr3t-Passw0rd!"}}))
        .send()
        .await;
    let cut = match r {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(cut, "response cut off");
    assert!(env.emu.user("olga@example.edu").is_some(), "executed");
    env.create_user("olga2", json!({})).await;
    assert_eq!(env.emu.counters().endpoint("EXO New-MailUser").faults, 1);
}
