//! Exchange admin API cmdlets, their refusals, paging, and the one-object-two-APIs model.
//!
//! These tests predate strict mode and are about other things than timing: they run in
//! instant mode (`start_instant`, `EmulatorConfig::instant()`) so no propagation delay or 404
//! window gets in the way. Strict-mode behaviour is tested in `propagation.rs` and
//! `strict_exchange.rs`.

mod common;
use common::*;
use ldap2exo_emulator::{Seed, User};
use serde_json::{Value, json};

/// `|Type|text` from `error.details[0].message` (`Ex<hex>|Type|text`); the unknown-cmdlet
/// error has no details, so fall back to `innererror.internalexception.message`.
fn exo_message(a: &Answer) -> &str {
    match a.body["error"]["details"][0]["message"].as_str() {
        Some(d) => d.get(8..).unwrap_or(d),
        None => a.body["error"]["innererror"]["internalexception"]["message"]
            .as_str()
            .unwrap_or(""),
    }
}

async fn new_mail_user(env: &Env, alias: &str) -> Value {
    let a = env
        .exo("New-MailUser", json!({
            "Name": alias, "Alias": alias, "DisplayName": format!("Person {alias}"),
            "ExternalEmailAddress": format!("SMTP:{alias}@example.edu"),
            "MicrosoftOnlineServicesID": format!("{alias}@example.edu"), "Password": "Secr3t-Passw0rd!",
        }))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["value"][0].clone()
}

#[tokio::test]
async fn new_mail_user_is_the_graph_user_and_a_licence_converts_it() {
    let env = start_instant().await;
    let mu = new_mail_user(&env, "ivy").await;
    assert_eq!(mu["RecipientTypeDetails"], "MailUser");
    assert_eq!(mu["ExternalEmailAddress"], "SMTP:ivy@example.edu");
    let id = mu["ExternalDirectoryObjectId"]
        .as_str()
        .unwrap()
        .to_string();

    let a = env.exo("Set-MailUser", json!({
        "Identity": "ivy@example.edu",
        "EmailAddresses": {"@odata.type": "#Exchange.GenericHashTable", "Add": ["smtp:ivy.alias@example.edu"]},
        "CustomAttribute15": "ldap2exo:ivy", "HiddenFromAddressListsEnabled": true,
    })).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["value"], json!([]));

    // Graph sees the same object.
    let g = env.get(&format!("/users/{id}?$select=userPrincipalName,mail,proxyAddresses,onPremisesExtensionAttributes")).await;
    assert_eq!(g.body["userPrincipalName"], "ivy@example.edu");
    assert_eq!(g.body["mail"], "ivy@example.edu");
    assert_eq!(
        g.body["proxyAddresses"],
        json!([
            "SMTP:ivy@example.edu",
            "smtp:ivy@contoso.onmicrosoft.com",
            "smtp:ivy.alias@example.edu"
        ])
    );
    assert_eq!(
        g.body["onPremisesExtensionAttributes"]["extensionAttribute15"],
        "ldap2exo:ivy"
    );
    // And Graph writes show in Exchange.
    env.patch(
        &format!("/users/{id}"),
        json!({"onPremisesExtensionAttributes": {"extensionAttribute3": "g"}}),
    )
    .await;
    let r = env.exo("Get-MailUser", json!({"Identity": "ivy"})).await;
    assert_eq!(r.body["value"][0]["CustomAttribute3"], "g");
    assert_eq!(r.body["value"][0]["HiddenFromAddressListsEnabled"], true);

    // Licensing converts the MailUser in place.
    env.patch(&format!("/users/{id}"), json!({"usageLocation": "NL"}))
        .await;
    let a = env.post(&format!("/users/{id}/assignLicense"), json!({"addLicenses": [{"skuId": "4b9405b0-7788-4568-add1-99614e613b69"}], "removeLicenses": []})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = env
        .exo("Get-Mailbox", json!({"Identity": "ivy@example.edu"}))
        .await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(m.body["value"][0]["RecipientTypeDetails"], "UserMailbox");
    assert_eq!(m.body["value"][0]["ExternalDirectoryObjectId"], id.as_str());
    assert!(m.body["value"][0]["ExternalEmailAddress"].is_null());
    // It is no longer a MailUser.
    let a = env
        .exo(
            "Set-MailUser",
            json!({"Identity": "ivy", "CustomAttribute1": "x"}),
        )
        .await;
    assert_eq!(a.status, 404);
    assert!(
        exo_message(&a).starts_with(
            "|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|"
        )
    );
    // Set-Mailbox works on it, and forwarding round-trips.
    let a = env.exo("Set-Mailbox", json!({"Identity": id, "ForwardingSmtpAddress": "smtp:ivy@elsewhere.org", "EmailAddresses": {"Add": "smtp:ivy@contoso.mail.onmicrosoft.com"}})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = env.exo("Get-Mailbox", json!({"Identity": "ivy"})).await;
    assert_eq!(
        m.body["value"][0]["ForwardingSmtpAddress"],
        "smtp:ivy@elsewhere.org"
    );
    assert!(
        m.body["value"][0]["EmailAddresses"]
            .as_array()
            .unwrap()
            .contains(&json!("smtp:ivy@contoso.mail.onmicrosoft.com"))
    );
}

#[tokio::test]
async fn licence_drops_unverified_addresses() {
    let env = start_instant().await;
    let id = env.emu.add_user(User {
        user_principal_name: "jo@example.edu".into(),
        mail_nickname: "jo".into(),
        usage_location: Some("DE".into()),
        proxy_addresses: vec!["SMTP:jo@legacy.org".into(), "smtp:jo@example.edu".into()],
        recipient_type_details: Some(ldap2exo_emulator::RecipientKind::MailUser),
        external_email_address: Some("jo@legacy.org".into()),
        ..Default::default()
    });
    env.post(&format!("/users/{id}/assignLicense"), json!({"addLicenses": [{"skuId": "4b9405b0-7788-4568-add1-99614e613b69"}], "removeLicenses": []})).await;
    let u = env.emu.user(&id).unwrap();
    assert_eq!(
        u.proxy_addresses,
        vec!["SMTP:jo@example.edu", "smtp:jo@contoso.onmicrosoft.com"]
    );
}

#[tokio::test]
async fn proxy_address_conflicts_and_error_shape() {
    let env = start_instant().await;
    env.emu
        .seed(Seed {
            users: vec![User {
                user_principal_name: "cloud@contoso.onmicrosoft.com".into(),
                mail_nickname: "cloud".into(),
                mail: Some("taken@example.edu".into()),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
    new_mail_user(&env, "kim").await;
    let a = env.exo("Set-MailUser", json!({"Identity": "kim", "EmailAddresses": {"@odata.type": "#Exchange.GenericHashTable", "Add": ["smtp:taken@example.edu"]}})).await;
    assert_eq!(a.status, 400);
    // The documented form names the holder (OfficeDocs-Support, proxy-address-being-used.md).
    let message = exo_message(&a);
    assert!(
        message.starts_with("|Microsoft.Exchange.Data.Directory.ProxyAddressExistsException|The proxy address \"smtp:taken@example.edu\" is already being used by \"EMUPR01MB0001.prod.outlook.com/Microsoft Exchange Hosted Organizations/contoso.onmicrosoft.com/"),
        "{message}"
    );
    assert!(
        message.ends_with("\". Choose another proxy address."),
        "{message}"
    );
    assert!(
        a.body["error"]["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already being used")
    );
    assert_eq!(
        a.body["error"]["innererror"]["internalexception"]["type"],
        "Microsoft.Exchange.Management.PSDirectInvoke.DirectInvokeCmdletExecutionException"
    );

    // New-MailUser with an address someone owns.
    let a = env
        .exo(
            "New-MailUser",
            json!({"Name": "taken", "ExternalEmailAddress": "taken@example.edu"}),
        )
        .await;
    assert_eq!(a.status, 400);
    assert!(
        exo_message(&a).contains("is already being used"),
        "{}",
        a.body
    );
    // Removed (soft-deleted) objects keep their addresses.
    assert_eq!(
        env.exo(
            "Remove-MailUser",
            json!({"Identity": "kim", "Confirm": false})
        )
        .await
        .status,
        200
    );
    let a = env.exo("New-MailUser", json!({"Name": "kim2", "ExternalEmailAddress": "kim@example.edu", "MicrosoftOnlineServicesID": "kim@example.edu", "Password": "Secr3t-Passw0rd!"})).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let d = env
        .get("/directory/deletedItems/microsoft.graph.user")
        .await;
    assert_eq!(d.body["value"][0]["userPrincipalName"], "kim@example.edu");
    let s = env
        .exo("Get-MailUser", json!({"SoftDeletedMailUser": true}))
        .await;
    assert_eq!(s.body["value"][0]["Alias"], "kim");
}

#[tokio::test]
async fn cmdlet_refusals() {
    let env = start_instant().await;
    new_mail_user(&env, "lee").await;
    let cases = [
        (
            "Set-MailUser",
            json!({"Identity": "lee", "Colour": "red"}),
            "A parameter cannot be found that matches parameter name 'Colour'.",
        ),
        (
            "Set-MailUser",
            json!({"Identity": "nobody"}),
            "couldn't be found",
        ),
        (
            "Get-Nothing",
            json!({}),
            "is not recognized as the name of a cmdlet",
        ),
        (
            "Set-MailUser",
            json!({"Identity": "lee", "EmailAddresses": {"Add": ["smtp:lee@unverified.org"]}}),
            "not an accepted domain",
        ),
        (
            "Set-MailUser",
            json!({"Identity": "lee", "EmailAddresses": {"Remove": ["SMTP:lee@example.edu"]}}),
            "primary SMTP address",
        ),
        (
            "Set-MailUser",
            json!({"Identity": "lee", "EmailAddresses": ["SMTP:a@example.edu", "SMTP:b@example.edu"]}),
            "multiple primary",
        ),
        (
            "Set-MailUser",
            json!({"Identity": "lee", "EmailAddresses": {"Add": ["smtp:not an address"]}}),
            "isn't correct",
        ),
        (
            "New-MailUser",
            json!({"Name": "lee", "ExternalEmailAddress": "x@elsewhere.org"}),
            "already being used",
        ),
        (
            "New-MailUser",
            json!({"Name": "n".repeat(65), "ExternalEmailAddress": "x@elsewhere.org"}),
            "maximum length is 64",
        ),
        (
            "New-MailUser",
            json!({"Name": "ok", "Alias": "bad alias", "ExternalEmailAddress": "x@elsewhere.org"}),
            "alias",
        ),
        (
            "Get-Recipient",
            json!({"Filter": "Colour -eq 'red'"}),
            "is not a recognized filterable property",
        ),
        (
            "Get-Recipient",
            json!({"Filter": "CustomAttribute1 -eq"}),
            "Invalid filter syntax",
        ),
    ];
    for (cmd, params, needle) in cases {
        let a = env.exo(cmd, params).await;
        assert!(a.status == 400 || a.status == 404, "{cmd}: {}", a.body);
        assert!(
            exo_message(&a).contains(needle),
            "{cmd}: expected {needle:?} in {}",
            a.body
        );
    }
    let a = env
        .send(
            env.http
                .post(env.emu.exchange_url())
                .bearer_auth(&env.exo_token)
                .json(&json!({"CmdletName": "Get-Mailbox"})),
        )
        .await;
    assert_eq!(a.status, 400);
    // Nothing changed.
    let r = env.exo("Get-MailUser", json!({"Identity": "lee"})).await;
    assert_eq!(
        r.body["value"][0]["EmailAddresses"],
        json!(["SMTP:lee@example.edu", "smtp:lee@contoso.onmicrosoft.com"])
    );
}

#[tokio::test]
async fn recipients_filter_and_page() {
    let env = start_instant().await;
    let users: Vec<User> = (0..7)
        .map(|i| User {
            user_principal_name: format!("r{i}@example.edu"),
            mail_nickname: format!("r{i}"),
            proxy_addresses: vec![format!("SMTP:r{i}@example.edu")],
            recipient_type_details: Some(if i < 5 {
                ldap2exo_emulator::RecipientKind::MailUser
            } else {
                ldap2exo_emulator::RecipientKind::UserMailbox
            }),
            extension_attributes: [(
                15u8,
                if i % 2 == 0 {
                    "ldap2exo:even".to_string()
                } else {
                    "odd".to_string()
                },
            )]
            .into_iter()
            .collect(),
            ..Default::default()
        })
        .collect();
    env.seed_users(users);
    // A plain Entra user is not a recipient.
    env.create_user("plain", json!({})).await;

    let a = env.exo("Get-Recipient", json!({"Filter": "CustomAttribute15 -eq 'ldap2exo:even' -and EmailAddresses -eq 'smtp:r2@example.edu'"})).await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 1, "{}", a.body);
    assert_eq!(a.body["value"][0]["Alias"], "r2");
    let a = env
        .exo(
            "Get-Recipient",
            json!({"RecipientTypeDetails": ["UserMailbox"], "ResultSize": "Unlimited"}),
        )
        .await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 2);
    let a = env
        .exo(
            "Get-Recipient",
            json!({"RecipientTypeDetails": "MailUser,UserMailbox"}),
        )
        .await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 7);

    // ResultSize truncates with a warning.
    let a = env.exo("Get-Recipient", json!({"ResultSize": 3})).await;
    assert_eq!(a.body["value"].as_array().unwrap().len(), 3);
    assert!(
        a.body["@adminapi.warnings"][0]
            .as_str()
            .unwrap()
            .contains("ResultSize")
    );

    // Paging: POST the same body to nextLink.
    let params = json!({"ResultSize": "Unlimited"});
    let mut a = env
        .exo_at(
            &env.emu.exchange_url(),
            "Get-EXORecipient",
            params.clone(),
            Some(3),
        )
        .await;
    let mut names = Vec::new();
    loop {
        assert_eq!(a.status, 200, "{}", a.body);
        for v in a.body["value"].as_array().unwrap() {
            // Get-EXORecipient's minimal property set: no custom attributes unless asked for.
            assert!(v.get("CustomAttribute15").is_none());
            names.push(v["Name"].as_str().unwrap().to_string());
        }
        match a.body["@odata.nextLink"].as_str() {
            Some(n) => {
                a = env
                    .exo_at(n, "Get-EXORecipient", params.clone(), Some(3))
                    .await
            }
            None => break,
        }
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 7);
    let a = env
        .exo(
            "Get-EXORecipient",
            json!({"Identity": "r0", "Properties": ["CustomAttribute15"]}),
        )
        .await;
    assert_eq!(a.body["value"][0]["CustomAttribute15"], "ldap2exo:even");
}

#[tokio::test]
async fn domains_and_connectors() {
    let env = start_instant().await;
    env.emu.seed(Seed {
        inbound_connectors: vec![json!({"Name": "From Linux", "Identity": "From Linux", "ConnectorType": "OnPremises", "TreatMessagesAsInternal": true, "TlsSenderCertificateName": "mx.example.edu", "RequireTls": true})],
        outbound_connectors: vec![json!({"Name": "To Linux", "Identity": "To Linux", "ConnectorType": "OnPremises", "SmartHosts": ["mx.example.edu"], "UseMXRecord": false, "TlsSettings": "CertificateValidation"})],
        ..Default::default()
    }).unwrap();
    let a = env.exo("Get-AcceptedDomain", json!({})).await;
    let names: Vec<&str> = a.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["DomainName"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec![
            "contoso.onmicrosoft.com",
            "contoso.mail.onmicrosoft.com",
            "example.edu"
        ]
    );
    let a = env.exo("Get-InboundConnector", json!({})).await;
    assert_eq!(a.body["value"][0]["TreatMessagesAsInternal"], true);
    let a = env
        .exo("Get-OutboundConnector", json!({"Identity": "To Linux"}))
        .await;
    assert_eq!(a.body["value"][0]["UseMXRecord"], false);
    assert_eq!(
        env.exo("Get-OutboundConnector", json!({"Identity": "nope"}))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn accepted_domains_carry_their_domain_type() {
    let mut cfg = ldap2exo_emulator::EmulatorConfig::instant();
    cfg.tenant.domains.push(ldap2exo_emulator::DomainConfig {
        name: "mbox.example.edu".into(),
        verified: true,
        domain_type: ldap2exo_emulator::DomainType::InternalRelay,
    });
    let env = start_with(cfg).await;
    let a = env.exo("Get-AcceptedDomain", json!({})).await;
    let types: Vec<(&str, &str)> = a.body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["DomainName"].as_str().unwrap(),
                d["DomainType"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        types,
        vec![
            ("contoso.onmicrosoft.com", "Authoritative"),
            ("contoso.mail.onmicrosoft.com", "Authoritative"),
            ("example.edu", "Authoritative"),
            ("mbox.example.edu", "InternalRelay"),
        ]
    );
    let a = env
        .exo(
            "Get-AcceptedDomain",
            json!({"Identity": "MBOX.example.edu"}),
        )
        .await;
    assert_eq!(a.body["value"][0]["DomainType"], "InternalRelay");
}
