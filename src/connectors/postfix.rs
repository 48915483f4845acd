//! The on-prem side to match: a Postfix snippet for the configured tenant.
//!
//! - `transport_maps`: only `<tenant>.onmicrosoft.com` and `<tenant>.mail.onmicrosoft.com` go
//!   to Exchange Online, never `*` (postconf(5) `transport_maps`, transport(5)).
//! - `smtp_tls_policy_maps`: TLS mandatory towards Exchange Online with the certificate
//!   verified (`secure`, postconf(5) `smtp_tls_policy_maps`; Exchange Online's MX hosts carry
//!   `*.mail.protection.outlook.com`).
//! - a transport `exo` of its own that presents the certificate named in
//!   `connectors.certificate_name` (`smtp_tls_chain_files`): the inbound OnPremises connector
//!   recognises the Linux side by that name only, and without it the back door connector
//!   refuses the mail.
//! - the listener Exchange Online delivers to (the smart host) asks for a client certificate
//!   (`smtpd_tls_ask_ccert`) and admits only Exchange Online's (`check_ccert_access`), and a
//!   dedicated cleanup with `header_checks` rejects mail whose `X-MS-Exchange-CrossTenant-Id`
//!   is another tenant's: every tenant's mail leaves from the same Exchange Online hosts.
//!
//! The next hop is `smtp:` with no host: Postfix looks up the domain's MX record. Microsoft
//! publishes the MX form only for custom domains (`<domain-with-dashes>.mail.protection.outlook.com`);
//! what the onmicrosoft domains' MX hosts are called is not documented, so the snippet asks DNS
//! rather than guess a name.

use crate::config::{ConnectorsConfig, TenantConfig};

/// The snippet, as comments and file sections an administrator copies into place.
pub fn render(
    t: &TenantConfig,
    c: Option<&ConnectorsConfig>,
    onprem_routing_domain: Option<&str>,
) -> String {
    let initial = t.onmicrosoft_domain.to_ascii_lowercase();
    let routing = t.routing_domain.to_ascii_lowercase();
    let tenant_id = t
        .tenant_id
        .clone()
        .unwrap_or_else(|| "<tenant.tenant_id>".into());
    let listener_host = c
        .and_then(|c| c.smart_host.clone())
        .unwrap_or_else(|| "<connectors.smart_host>".into());
    // Exchange Online relays internet mail here only with `route_internet_via_on_prem`;
    // `smtpd_relay_restrictions` must then admit it, or the default defers it until it bounces.
    let relay = match c.is_some_and(|c| c.route_internet_via_on_prem) {
        true => {
            "  -o smtpd_relay_restrictions=check_ccert_access,hash:/etc/postfix/exo_client_certs,defer_unauth_destination\n"
        }
        false => "",
    };
    let id_pattern = regex_escape(&tenant_id);
    let migration = migration_section(onprem_routing_domain);
    let certificate = c
        .and_then(|c| c.certificate_name.clone())
        .unwrap_or_else(|| "<connectors.certificate_name>".into());
    format!(
        "\
# Postfix on the Linux side, for tenant {tenant_id} ({initial}). Needs Postfix 3.4 or later
# (*_tls_chain_files) and the postfix-pcre package (header_checks).
# Only the tenant's two onmicrosoft domains are routed to Exchange Online.
# Never relay \"*\" (all other mail) to Exchange Online: with the outbound connectors
# pointing back here that is a mail loop, and it would relay the internet through the tenant.
# /etc/postfix/exo.pem: the key and certificate chain for {certificate}, in one file.

# --- main.cf: add these tables to the values you have (each setting takes several) ---
transport_maps = hash:/etc/postfix/exo_transport
smtp_tls_policy_maps = hash:/etc/postfix/exo_tls_policy

# --- /etc/postfix/exo_transport (postmap it): delivery by the domains' MX records ---
{initial:<40} exo:
{routing:<40} exo:

# --- /etc/postfix/exo_tls_policy (postmap it): TLS mandatory, certificate verified ---
{initial:<40} secure match=.mail.protection.outlook.com
{routing:<40} secure match=.mail.protection.outlook.com

# --- master.cf: the transport to Exchange Online. It presents the certificate for
# {certificate}: the inbound OnPremises connector knows the Linux side by that name, and
# without it the back door connector refuses the mail. ---
exo unix - - y - - smtp
  -o smtp_tls_chain_files=/etc/postfix/exo.pem
  -o smtp_tls_CAfile=/etc/ssl/certs/ca-certificates.crt

# --- master.cf: the listener Exchange Online delivers to. Exchange Online delivers on port 25
# only, so this listener needs an IP address of its own: the LOCAL address that {listener_host}
# reaches (after NAT, the address port 25 is forwarded to; Postfix cannot bind a public name
# that is not on this host, and then does not start at all). Your internet-facing
# \"smtp inet\" line must not bind that address (list its addresses as host:smtp instead of
# plain \"smtp\"). The listener presents the certificate for {certificate}, which the outbound
# connector checks (TlsDomain), and admits only Exchange Online's certificate; a mismatch
# defers (4xx), so Exchange Online retries while you fix the fingerprint. ---
<local address for {listener_host}>:smtp inet n - y - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_chain_files=/etc/postfix/exo.pem
  -o smtpd_tls_ask_ccert=yes
  -o smtpd_tls_fingerprint_digest=sha256
  -o smtpd_client_restrictions=check_ccert_access,hash:/etc/postfix/exo_client_certs,defer
{relay}  -o cleanup_service_name=cleanup_exo
cleanup_exo unix n - y - 0 cleanup
  -o header_checks=pcre:/etc/postfix/exo_header_checks

# --- /etc/postfix/exo_client_certs (postmap it): Exchange Online's client certificate ---
# The SHA-256 fingerprint of the certificate Exchange Online presents when it delivers here.
# Take it from a delivery (smtpd_tls_loglevel = 1 on this listener logs it); the certificate
# of its MX hosts is a first guess:
#   openssl s_client -connect \"$(dig +short mx {routing} | awk '{{print $2; exit}}')\":25 \\
#     -starttls smtp </dev/null | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2
# Update it when Microsoft renews the certificate.
# <fingerprint>   OK

# --- /etc/postfix/exo_header_checks: only the own tenant ---
/^X-MS-Exchange-CrossTenant-Id:(?!\\s*{id_pattern}\\s*$)/ REJECT not from tenant {tenant_id}
{migration}"
    )
}

/// The on-prem routing domain of an IMAP migration: until cutover a migrating person's
/// Exchange Online mailbox forwards to `<uid>@<it>`, and that mail must reach the person's
/// Dovecot mailbox directly.
fn migration_section(domain: Option<&str>) -> String {
    let Some(d) = domain else {
        return String::new();
    };
    format!(
        "\
\n# --- [migration] onprem_routing_domain {d}: until cutover, a migrating person's Exchange
# Online mailbox forwards to <uid>@{d}. Accept that domain and deliver <uid>@{d} straight to
# the person's Dovecot mailbox (e.g. list it in virtual_mailbox_domains with a
# virtual_mailbox_maps entry per uid, delivered by LMTP), never through the person's LDAP
# forward: that points into the tenant at cutover, and the mail would go round in a loop. ---
"
    )
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if !ch.is_ascii_alphanumeric() && ch != '-' {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> TenantConfig {
        toml::from_str(
            r#"accepted_domains = ["example.edu"]
onmicrosoft_domain = "exampleedu.onmicrosoft.com"
routing_domain = "exampleedu.mail.onmicrosoft.com"
upn_domain = "example.edu""#,
        )
        .unwrap()
    }

    #[test]
    fn the_migration_routing_domain_is_delivered_to_dovecot_only_when_configured() {
        let with = render(&tenant(), None, Some("mbox.example.edu"));
        assert!(
            with.contains("onprem_routing_domain mbox.example.edu")
                && with.contains("never through the person's LDAP")
                && with.contains("forward: that points into the tenant"),
            "{with}"
        );
        let without = render(&tenant(), None, None);
        assert!(!without.contains("onprem_routing_domain"), "{without}");
        // The routing domain is never routed anywhere by the snippet, least of all to
        // Exchange Online.
        let routes: Vec<&str> = with.lines().filter(|l| l.ends_with(" exo:")).collect();
        assert_eq!(routes.len(), 2);
        assert!(
            with.lines()
                .filter(|l| !l.starts_with('#'))
                .all(|l| !l.contains("mbox.example.edu")),
            "{with}"
        );
    }

    #[test]
    fn exchange_online_may_relay_only_when_internet_mail_leaves_through_on_prem() {
        let mut c = ConnectorsConfig {
            smart_host: Some("mx-in.example.edu".into()),
            certificate_name: Some("mail.example.edu".into()),
            on_prem_public_ips: vec![],
            route_internet_via_on_prem: false,
            close_back_door: false,
            name_prefix: "ldap2exo".into(),
        };
        let relay = "smtpd_relay_restrictions=check_ccert_access";
        assert!(!render(&tenant(), Some(&c), None).contains(relay));
        c.route_internet_via_on_prem = true;
        let with = render(&tenant(), Some(&c), None);
        assert!(with.contains(relay), "{with}");
        // A certificate that does not match defers, it never bounces.
        assert!(with.contains("exo_client_certs,defer\n"), "{with}");
    }
}
