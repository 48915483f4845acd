//! `ldap2exo-emulator`: runs the emulator as a process for demos and for tests in another
//! process. Writes the CA PEM where asked so clients can trust it, and the whole tenant state
//! as JSON on SIGTERM/SIGINT (and on `POST /_emulator/state-dump`).

use clap::Parser;
use ldap2exo_emulator::{
    DomainConfig, DomainType, Emulator, EmulatorConfig, Realism, Seed, SkuConfig, TenantConfig,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, thiserror::Error)]
enum MainError {
    #[error("cannot read seed file {0}: {1}")]
    SeedRead(PathBuf, std::io::Error),
    #[error("seed file {0} is not valid: {1}")]
    SeedParse(PathBuf, serde_json::Error),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("--sku {0:?}: expected SKU_ID:PART_NUMBER:UNITS[:exchange]")]
    Sku(String),
    #[error(transparent)]
    Emulator(#[from] ldap2exo_emulator::EmulatorError),
    #[error("signal handling failed: {0}")]
    Signal(std::io::Error),
}

/// Emulates Entra ID tokens, Microsoft Graph v1.0 and the Exchange Online admin API for
/// ldap2exo tests and demos. Serves HTTPS only, with a CA generated at start.
#[derive(Debug, Parser)]
#[command(name = "ldap2exo-emulator", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// JSON seed file: {"tenant": {...}, "users": [...], "inboundConnectors": [...], "outboundConnectors": [...]}.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Write the whole state here as JSON on SIGTERM/SIGINT and on POST /_emulator/state-dump.
    #[arg(long)]
    state_dump: Option<PathBuf>,
    /// Write the CA certificate (PEM) here so clients can trust the server.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Write the base URL here once listening (handy with --listen 127.0.0.1:0).
    #[arg(long)]
    url_out: Option<PathBuf>,
    /// Tenant id (GUID); overrides the seed file.
    #[arg(long)]
    tenant_id: Option<String>,
    /// Initial domain prefix: NAME.onmicrosoft.com; overrides the seed file.
    #[arg(long)]
    tenant_name: Option<String>,
    /// App (client) id; overrides the seed file.
    #[arg(long)]
    client_id: Option<String>,
    /// Client secret; overrides the seed file.
    #[arg(long, env = "EMULATOR_CLIENT_SECRET")]
    client_secret: Option<String>,
    /// PEM certificate file whose key signs client assertions.
    #[arg(long)]
    client_cert: Option<PathBuf>,
    /// Verified custom domain (repeatable); replaces the seed file's domains when given.
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// Unverified custom domain (repeatable).
    #[arg(long = "unverified-domain")]
    unverified_domains: Vec<String>,
    /// Verified custom domain whose accepted domain is InternalRelay (repeatable), e.g. the
    /// on-prem routing domain of an IMAP migration.
    #[arg(long = "relay-domain")]
    relay_domains: Vec<String>,
    /// SKU as SKU_ID:PART_NUMBER:UNITS[:exchange] (repeatable); replaces the seed's SKUs.
    #[arg(long = "sku")]
    skus: Vec<String>,
    /// Extra host name or IP for the server certificate (repeatable).
    #[arg(long = "hostname")]
    hostnames: Vec<String>,
    /// Instant mode: one consistent store, no delays, none of the strict-mode refusals
    /// (the per-delay flags below still apply on top).
    #[arg(long)]
    instant: bool,
    /// Delay until Exchange writes show in Graph, ms (strict default 1500).
    #[arg(long)]
    exchange_to_graph_ms: Option<u64>,
    /// Delay until Graph writes show in Exchange, ms (strict default 1500).
    #[arg(long)]
    graph_to_exchange_ms: Option<u64>,
    /// 404 window after a create, ms (strict default 400).
    #[arg(long = "create-404-ms")]
    create_404_ms: Option<u64>,
    /// Mailbox provisioning time after assignLicense, ms (strict default 2500).
    #[arg(long)]
    mailbox_provisioning_ms: Option<u64>,
    /// Exchange cmdlet calls allowed in flight at once; 0 = unlimited (strict default 3).
    #[arg(long)]
    exchange_max_concurrent: Option<usize>,
    /// Artificial processing time of every cmdlet call, ms (default 0).
    #[arg(long)]
    exchange_cmdlet_ms: Option<u64>,
    /// Lifetime of an Exchange nextLink, ms; 0 = forever and replayable (strict default 5000).
    #[arg(long)]
    exchange_next_link_ttl_ms: Option<u64>,
}

fn build_realism(cli: &Cli) -> Realism {
    let mut r = if cli.instant {
        Realism::instant()
    } else {
        Realism::default()
    };
    let set = |slot: &mut u64, v: Option<u64>| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    set(&mut r.exchange_to_graph_ms, cli.exchange_to_graph_ms);
    set(&mut r.graph_to_exchange_ms, cli.graph_to_exchange_ms);
    set(&mut r.create_404_ms, cli.create_404_ms);
    set(&mut r.mailbox_provisioning_ms, cli.mailbox_provisioning_ms);
    set(&mut r.exchange_cmdlet_ms, cli.exchange_cmdlet_ms);
    if let Some(n) = cli.exchange_max_concurrent {
        r.exchange_max_concurrent = (n > 0).then_some(n);
    }
    if let Some(t) = cli.exchange_next_link_ttl_ms {
        r.exchange_next_link_ttl_ms = (t > 0).then_some(t);
    }
    r
}

fn parse_sku(s: &str) -> Result<SkuConfig, MainError> {
    let parts: Vec<&str> = s.split(':').collect();
    let (id, part, units, exchange) = match parts.as_slice() {
        [id, part, units] => (id, part, units, false),
        [id, part, units, "exchange"] => (id, part, units, true),
        _ => return Err(MainError::Sku(s.to_string())),
    };
    let units: u32 = units.parse().map_err(|_| MainError::Sku(s.to_string()))?;
    let mut sku = if exchange {
        SkuConfig::exchange_online_plan1(units)
    } else {
        SkuConfig::without_exchange(units)
    };
    sku.sku_id = id.to_string();
    sku.sku_part_number = part.to_string();
    Ok(sku)
}

fn build_config(cli: &Cli) -> Result<EmulatorConfig, MainError> {
    let mut seed = match &cli.seed {
        Some(p) => {
            let text = std::fs::read(p).map_err(|e| MainError::SeedRead(p.clone(), e))?;
            serde_json::from_slice::<Seed>(&text).map_err(|e| MainError::SeedParse(p.clone(), e))?
        }
        None => Seed::default(),
    };
    let mut tenant: TenantConfig = seed.tenant.take().unwrap_or_default();
    if let Some(v) = &cli.tenant_id {
        tenant.tenant_id = v.clone();
    }
    if let Some(v) = &cli.tenant_name {
        tenant.tenant_name = v.clone();
    }
    if let Some(v) = &cli.client_id {
        tenant.client_id = v.clone();
    }
    if let Some(v) = &cli.client_secret {
        tenant.client_secret = Some(v.clone());
    }
    if let Some(p) = &cli.client_cert {
        tenant.client_certificate_pem =
            Some(std::fs::read_to_string(p).map_err(|e| MainError::SeedRead(p.clone(), e))?);
    }
    if !cli.domains.is_empty() || !cli.unverified_domains.is_empty() {
        tenant.domains = cli
            .domains
            .iter()
            .map(|d| DomainConfig {
                name: d.clone(),
                verified: true,
                domain_type: DomainType::Authoritative,
            })
            .chain(cli.unverified_domains.iter().map(|d| DomainConfig {
                name: d.clone(),
                verified: false,
                domain_type: DomainType::Authoritative,
            }))
            .collect();
    }
    for d in &cli.relay_domains {
        tenant.domains.retain(|x| !x.name.eq_ignore_ascii_case(d));
        tenant.domains.push(DomainConfig {
            name: d.clone(),
            verified: true,
            domain_type: DomainType::InternalRelay,
        });
    }
    if !cli.skus.is_empty() {
        tenant.skus = cli
            .skus
            .iter()
            .map(|s| parse_sku(s))
            .collect::<Result<_, _>>()?;
    }
    Ok(EmulatorConfig {
        listen: cli.listen,
        tenant,
        extra_hostnames: cli.hostnames.clone(),
        state_dump_path: cli.state_dump.clone(),
        seed,
        realism: build_realism(cli),
        ..EmulatorConfig::default()
    })
}

async fn run(cli: Cli) -> Result<(), MainError> {
    let config = build_config(&cli)?;
    let emu = Emulator::start(config).await?;
    if let Some(p) = &cli.ca_out {
        std::fs::write(p, emu.ca_pem()).map_err(|e| MainError::Write(p.clone(), e))?;
    }
    if let Some(p) = &cli.url_out {
        std::fs::write(p, emu.base_url()).map_err(|e| MainError::Write(p.clone(), e))?;
    }
    let t = emu.tenant();
    eprintln!("ldap2exo-emulator listening on {}", emu.base_url());
    eprintln!(
        "  tenant {} ({}), client id {}",
        t.tenant_id,
        t.initial_domain(),
        t.client_id
    );
    eprintln!("  token  {}", emu.token_url());
    eprintln!("  graph  {}", emu.graph_url());
    eprintln!("  exo    {}", emu.exchange_url());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(MainError::Signal)?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(MainError::Signal)?,
        _ = term.recv() => {}
    }
    if let Some(p) = emu.dump_state_if_configured()? {
        eprintln!("state written to {}", p.display());
    }
    emu.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ldap2exo-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realism_flags() {
        let cli = Cli::parse_from(["emu"]);
        assert_eq!(build_realism(&cli), Realism::default());
        let cli = Cli::parse_from(["emu", "--instant", "--create-404-ms", "50"]);
        let r = build_realism(&cli);
        assert_eq!(r.create_404_ms, 50);
        assert_eq!(r.exchange_to_graph_ms, 0);
        let cli = Cli::parse_from([
            "emu",
            "--exchange-max-concurrent",
            "0",
            "--exchange-next-link-ttl-ms",
            "0",
        ]);
        let r = build_realism(&cli);
        assert_eq!(
            (r.exchange_max_concurrent, r.exchange_next_link_ttl_ms),
            (None, None)
        );
    }
}
