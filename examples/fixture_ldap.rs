//! Starts the test fixture directory in a private slapd and runs one command against it.
//!
//! ```text
//! cargo run --example fixture_ldap -- [--generate N] [--keep-state FILE] [--content-sync] -- COMMAND [ARGS...]
//! cargo run --example fixture_ldap -- --print-generated N SEED
//! ```
//!
//! The demo and the benchmark use it, so they run against exactly the server the integration
//! tests use (`tests/support/slapd.rs`): StartTLS with a freshly made test CA, the read-only
//! service account, the campus fixture (and with `--generate N`, N more generated people).
//! It writes an ldap2exo configuration for that server and runs COMMAND with
//! `LDAP2EXO_CONFIG` and `LDAP2EXO__LDAP__BIND_PASSWORD` set, plus `FIXTURE_*` variables for
//! other LDAP clients (see below). Then it stops slapd and exits with COMMAND's status.
//! `FIXTURE_ROOT_DN` and `FIXTURE_ROOT_PASSWORD` let COMMAND change the directory
//! (`ldapmodify -x -e relax`, as the tests do), e.g. to roll a population over.
//!
//! `--content-sync` gives the service account unlimited size and time limits and the
//! `syncprov` overlay a session log, as the README asks of a site that turns on
//! `ldap.content_sync` (the overlay itself is always loaded).
//!
//! `--print-generated N SEED` starts nothing: it prints N generated people of SEED as LDIF
//! (without their `ou=generated` parent, which `--generate` already made) for `ldapmodify -a`;
//! a SEED other than 1 gives other uids (`g<SEED>x…`) and other `entryUUID`s, so they are new
//! people beside those of `--generate`.

#[allow(dead_code)]
#[path = "../tests/support/slapd.rs"]
mod slapd;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use slapd::{Slapd, SlapdOptions};

fn usage() -> ExitCode {
    eprintln!(
        "usage: fixture_ldap [--generate N] [--state FILE] [--content-sync] -- COMMAND [ARGS...]\n       \
         fixture_ldap --print-generated N SEED"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut generate = 0usize;
    let mut state: Option<PathBuf> = None;
    let mut command: Vec<String> = Vec::new();
    let mut content_sync = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--content-sync" => content_sync = true,
            "--generate" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) => generate = n,
                None => return usage(),
            },
            "--print-generated" => {
                let n = args.next().and_then(|n| n.parse::<usize>().ok());
                let seed = args.next().and_then(|n| n.parse::<u64>().ok());
                let (Some(n), Some(seed)) = (n, seed) else {
                    return usage();
                };
                let ldif = slapd::generate_people(n, seed);
                // The first record is the `ou=generated` entry itself.
                let people = ldif.split_once("\n\n").map_or("", |(_, rest)| rest);
                print!("{people}");
                return ExitCode::SUCCESS;
            }
            "--state" => match args.next() {
                Some(p) => state = Some(p.into()),
                None => return usage(),
            },
            "--" => {
                command = args.by_ref().collect();
            }
            _ => return usage(),
        }
    }
    if command.is_empty() {
        return usage();
    }

    let mut options = if generate > 0 {
        SlapdOptions::with_generated(generate, 1)
    } else {
        SlapdOptions::default()
    };
    if content_sync {
        options.service_limits = "size=unlimited time=unlimited".into();
        options.syncprov_sessionlog = Some(100_000);
    }
    eprintln!(
        "fixture_ldap: starting slapd with the campus fixture{}",
        if generate > 0 {
            format!(" and {generate} generated people")
        } else {
            String::new()
        }
    );
    let server = Slapd::start(options);
    // With generated people the base is the whole suffix, so both populations are read.
    let base = if generate > 0 {
        slapd::SUFFIX
    } else {
        slapd::PEOPLE_DN
    };
    let state = state.unwrap_or_else(|| server.dir().join("state.db"));
    let config_path = server.dir().join("ldap2exo.toml");
    let config = format!(
        "{}\n[tenant]\naccepted_domains = [\"example.edu\", \"staff.example.edu\"]\n\
         onmicrosoft_domain = \"exampleedu.onmicrosoft.com\"\n\
         routing_domain = \"exampleedu.mail.onmicrosoft.com\"\nupn_domain = \"example.edu\"\n\n\
         [state]\npath = {:?}\n\n\
         [connectors]\nsmart_host = \"mx-in.example.edu\"\ncertificate_name = \"mail.example.edu\"\n",
        server.ldap_toml().replace(
            &format!("base_dn = \"{}\"", slapd::PEOPLE_DN),
            &format!("base_dn = \"{base}\"")
        ),
        state.display().to_string(),
    );
    std::fs::write(&config_path, config).expect("write the fixture configuration");
    eprintln!(
        "fixture_ldap: {} (config {})",
        server.ldap_url(),
        config_path.display()
    );

    let status = Command::new(&command[0])
        .args(&command[1..])
        .env("LDAP2EXO_CONFIG", &config_path)
        .env("LDAP2EXO__LDAP__BIND_PASSWORD", slapd::SERVICE_PASSWORD)
        .env("FIXTURE_LDAP_URL", server.ldap_url())
        .env("FIXTURE_CA_FILE", server.ca_pem_path())
        .env("FIXTURE_BIND_DN", slapd::SERVICE_DN)
        .env("FIXTURE_BIND_PASSWORD", slapd::SERVICE_PASSWORD)
        .env("FIXTURE_BASE_DN", base)
        .env("FIXTURE_ROOT_DN", slapd::ROOT_DN)
        .env("FIXTURE_ROOT_PASSWORD", slapd::ROOT_PASSWORD)
        .status();
    drop(server);
    match status {
        Ok(s) => ExitCode::from(s.code().unwrap_or(1).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("fixture_ldap: cannot run {}: {e}", command[0]);
            ExitCode::from(1)
        }
    }
}
