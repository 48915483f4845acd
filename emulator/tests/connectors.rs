//! The connector cmdlets: New-/Set-/Remove-InboundConnector and -OutboundConnector, with
//! Microsoft's parameter names, defaults and the refusals the emulator README lists.

mod common;
use common::*;
use serde_json::{Value, json};

/// The `text` of `Ex<hex>|Type|text` in `error.details[0].message`.
fn refusal(a: &Answer) -> String {
    assert_eq!(a.status, 400, "expected a refusal: {}", a.body);
    let d = a.body["error"]["details"][0]["message"]
        .as_str()
        .unwrap_or("");
    d.splitn(3, '|').nth(2).unwrap_or(d).to_string()
}

async fn outbound(env: &Env, params: Value) -> Answer {
    env.exo("New-OutboundConnector", params).await
}

#[tokio::test]
async fn a_new_inbound_connector_has_the_defaults_and_is_listed() {
    let env = start_instant().await;
    let a = env
        .exo(
            "New-InboundConnector",
            json!({"Name": "From campus", "ConnectorType": "onpremises", "SenderDomains": ["*"],
                   "TlsSenderCertificateName": "mail.example.edu", "RequireTls": true,
                   "TreatMessagesAsInternal": true}),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let c = &a.body["value"][0];
    assert_eq!(
        c["ConnectorType"], "OnPremises",
        "enums come back canonical"
    );
    assert_eq!(c["Enabled"], true);
    assert_eq!(c["CloudServicesMailEnabled"], false);
    assert_eq!(c["EFSkipLastIP"], false);
    assert_eq!(c["EFSkipIPs"], json!([]));
    let got = env
        .exo("Get-InboundConnector", json!({"Identity": "from campus"}))
        .await;
    assert_eq!(
        got.body["value"][0]["TlsSenderCertificateName"],
        "mail.example.edu"
    );
    assert_eq!(env.emu.state().inbound_connectors.len(), 1);
}

#[tokio::test]
async fn names_are_unique_and_unknown_parameters_are_refused() {
    let env = start_instant().await;
    let p = json!({"Name": "X", "SenderDomains": ["*"]});
    assert_eq!(env.exo("New-InboundConnector", p.clone()).await.status, 200);
    let again = env.exo("New-InboundConnector", p).await;
    assert!(refusal(&again).contains("already being used"));
    let typo = env
        .exo(
            "New-InboundConnector",
            json!({"Name": "Y", "SenderDomains": ["*"], "RequireTLSs": true}),
        )
        .await;
    assert!(
        refusal(&typo)
            .contains("A parameter cannot be found that matches parameter name 'RequireTLSs'")
    );
    let no_domains = env.exo("New-InboundConnector", json!({"Name": "Z"})).await;
    assert!(refusal(&no_domains).contains("'SenderDomains'"));
    let bad_type = env
        .exo(
            "New-InboundConnector",
            json!({"Name": "Z", "SenderDomains": ["*"], "ConnectorType": "Hybrid"}),
        )
        .await;
    assert!(refusal(&bad_type).contains("OnPremises, Partner"));
    let long = "n".repeat(65);
    let too_long = env
        .exo(
            "New-InboundConnector",
            json!({"Name": long, "SenderDomains": ["*"]}),
        )
        .await;
    assert!(refusal(&too_long).contains("maximum length is 64"));
}

#[tokio::test]
async fn inbound_rules_between_parameters() {
    let env = start_instant().await;
    let internal_partner = env
        .exo(
            "New-InboundConnector",
            json!({"Name": "A", "SenderDomains": ["*"], "TreatMessagesAsInternal": true}),
        )
        .await;
    assert!(refusal(&internal_partner).contains("OnPremises"));
    let internal_cross = env
        .exo(
            "New-InboundConnector",
            json!({"Name": "A", "SenderDomains": ["*"], "ConnectorType": "OnPremises",
            "TreatMessagesAsInternal": true, "CloudServicesMailEnabled": true}),
        )
        .await;
    assert!(refusal(&internal_cross).contains("CloudServicesMailEnabled"));
    let cert_without_name = env
        .exo(
            "New-InboundConnector",
            json!({"Name": "A", "SenderDomains": ["*"], "RestrictDomainsToCertificate": true}),
        )
        .await;
    assert!(refusal(&cert_without_name).contains("TlsSenderCertificateName"));
    let partner_only_on_premises = env
        .exo(
            "New-InboundConnector",
            json!({"Name": "A", "SenderDomains": ["*"], "ConnectorType": "OnPremises",
            "TlsSenderCertificateName": "mail.example.edu", "RestrictDomainsToCertificate": true}),
        )
        .await;
    assert!(refusal(&partner_only_on_premises).contains("only to Partner type"));
    let embedded = env
        .exo(
            "New-InboundConnector",
            json!({"Name": "A", "SenderDomains": ["a.*.example.edu"]}),
        )
        .await;
    assert!(refusal(&embedded).contains("SenderDomains"));
    // Set- checks the resulting connector too.
    assert_eq!(
        env.exo(
            "New-InboundConnector",
            json!({"Name": "B", "SenderDomains": ["*"]})
        )
        .await
        .status,
        200
    );
    let set = env
        .exo(
            "Set-InboundConnector",
            json!({"Identity": "B", "TreatMessagesAsInternal": true}),
        )
        .await;
    assert!(refusal(&set).contains("OnPremises"));
    let unchanged = env
        .exo(
            "Set-InboundConnector",
            json!({"Identity": "B", "Enabled": true}),
        )
        .await;
    assert_eq!(unchanged.status, 200);
    assert!(
        unchanged.body["@adminapi.warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("no settings of 'B' have been modified"),
        "{}",
        unchanged.body
    );
}

#[tokio::test]
async fn star_on_an_on_premises_outbound_connector_needs_route_all_via_on_premises() {
    let env = start_instant().await;
    let base = json!({"ConnectorType": "OnPremises", "RecipientDomains": ["*"], "UseMXRecord": false,
                      "SmartHosts": ["mx-in.example.edu"]});
    let mut p = base.clone();
    p["Name"] = json!("Star");
    let a = outbound(&env, p).await;
    assert!(refusal(&a).contains("RouteAllMessagesViaOnPremises"));
    let mut p = base.clone();
    p["Name"] = json!("Star");
    p["RouteAllMessagesViaOnPremises"] = json!(true);
    assert_eq!(outbound(&env, p).await.status, 200);
    // A Partner connector may route `*`.
    let mut p = base;
    p["Name"] = json!("Partner star");
    p["ConnectorType"] = json!("Partner");
    assert_eq!(outbound(&env, p).await.status, 200);
    // Adding `*` later through Set- is refused the same way.
    let p = json!({"Name": "Campus", "ConnectorType": "OnPremises", "RecipientDomains": ["example.edu"],
                   "UseMXRecord": false, "SmartHosts": ["mx-in.example.edu"]});
    assert_eq!(outbound(&env, p).await.status, 200);
    let set = env
        .exo(
            "Set-OutboundConnector",
            json!({"Identity": "Campus", "RecipientDomains": ["example.edu", "*"]}),
        )
        .await;
    assert!(refusal(&set).contains("RouteAllMessagesViaOnPremises"));
}

#[tokio::test]
async fn outbound_smart_hosts_and_tls_rules() {
    let env = start_instant().await;
    let no_hosts = outbound(
        &env,
        json!({"Name": "A", "RecipientDomains": ["example.edu"], "UseMXRecord": false}),
    )
    .await;
    assert!(refusal(&no_hosts).contains("SmartHosts"));
    let no_domain = outbound(&env, json!({"Name": "A", "RecipientDomains": ["example.edu"], "TlsSettings": "DomainValidation"})).await;
    assert!(refusal(&no_domain).contains("TlsDomain is required"));
    let stray_domain = outbound(
        &env,
        json!({"Name": "A", "RecipientDomains": ["example.edu"],
        "TlsSettings": "CertificateValidation", "TlsDomain": "mx.example.edu"}),
    )
    .await;
    assert!(refusal(&stray_domain).contains("DomainValidation"));
    let bad_tls = outbound(&env, json!({"Name": "A", "TlsSettings": "Strict"})).await;
    assert!(refusal(&bad_tls).contains("EncryptionOnly, CertificateValidation, DomainValidation"));
    let route_partner = outbound(
        &env,
        json!({"Name": "A", "RouteAllMessagesViaOnPremises": true}),
    )
    .await;
    assert!(refusal(&route_partner).contains("OnPremises"));
    let all_partner = outbound(&env, json!({"Name": "A", "AllAcceptedDomains": true})).await;
    assert!(refusal(&all_partner).contains("OnPremises"));
    let ok = outbound(
        &env,
        json!({"Name": "A", "RecipientDomains": ["example.edu"],
        "TlsSettings": "DomainValidation", "TlsDomain": "mx.example.edu"}),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["value"][0]["UseMXRecord"], true, "the default");
    // UseMXRecord $false on Set- needs SmartHosts on the same command line.
    let set = env
        .exo(
            "Set-OutboundConnector",
            json!({"Identity": "A", "UseMXRecord": false}),
        )
        .await;
    assert!(refusal(&set).contains("same command line"));
    let set = env
        .exo("Set-OutboundConnector", json!({"Identity": "A", "UseMXRecord": false, "SmartHosts": ["mx.example.edu"], "Name": "B"}))
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let got = env
        .exo("Get-OutboundConnector", json!({"Identity": "B"}))
        .await;
    assert_eq!(
        got.body["value"][0]["SmartHosts"],
        json!(["mx.example.edu"])
    );
}

#[tokio::test]
async fn remove_takes_the_connector_away() {
    let env = start_instant().await;
    assert_eq!(outbound(&env, json!({"Name": "A"})).await.status, 200);
    let r = env
        .exo("Remove-OutboundConnector", json!({"Identity": "a"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(env.emu.state().outbound_connectors.is_empty());
    let again = env
        .exo("Remove-OutboundConnector", json!({"Identity": "A"}))
        .await;
    assert_eq!(again.status, 404, "{}", again.body);
    let r = env
        .exo("Remove-InboundConnector", json!({"Identity": "nothing"}))
        .await;
    assert_eq!(r.status, 404);
}
