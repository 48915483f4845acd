//! The `ldap2exo` binary: parse the command line, load the configuration, start logging,
//! dispatch, and turn the outcome into an exit code.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use ldap2exo::cli::{Cli, Command};
use ldap2exo::commands::{self, Exit};
use ldap2exo::shutdown::Stop;

// Reading 50,000 entries makes millions of small allocations; glibc's allocator spent about
// 40% of a dry run's CPU time on them (measured with perf), mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    ldap2exo::telemetry::init(cli.log_format);
    let result: anyhow::Result<Exit> = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map(|runtime| {
            runtime.block_on(async {
                // `status` reads only the state store: a monitoring user needs no secrets.
                let load = match &cli.command {
                    Command::Status(_) => commands::load_config_without_secrets,
                    // The Postfix snippet is rendered from the file alone.
                    Command::Connectors(c)
                        if matches!(c.command, ldap2exo::cli::ConnectorsCommand::Postfix) =>
                    {
                        commands::load_config_without_secrets
                    }
                    _ => commands::load_config,
                };
                let config = match load(&cli.config) {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("ldap2exo: {e}");
                        return e.exit();
                    }
                };
                // Only the commands that write handle signals; the others keep the default (end
                // at once), so a first Ctrl-C on `check-config` or `audit` is not swallowed.
                let stop = match &cli.command {
                    Command::CheckConfig
                    | Command::Status(_)
                    | Command::Audit(_)
                    | Command::Connectors(_) => Stop::new(),
                    _ => Stop::on_signals(),
                };
                let outcome = match &cli.command {
                    Command::CheckConfig => commands::check_config(&config).await,
                    Command::Sync(args) => commands::sync(&config, args, &stop).await,
                    Command::Plan(args) => commands::plan(&config, args, &stop).await,
                    Command::Apply(args) => commands::apply_file(&config, args, &stop).await,
                    Command::Status(args) => commands::status(&config, args).await,
                    Command::Daemon(args) => commands::daemon(&config, args, &stop).await,
                    Command::Audit(args) => commands::audit(&config, args).await,
                    Command::Connectors(args) => commands::connectors(&config, args).await,
                    Command::Migrate(args) => commands::migrate(&config, args, &stop).await,
                    Command::Restore(args) => commands::restore(&config, args, &stop).await,
                };
                match outcome {
                    Ok(exit) => exit,
                    Err(e) => {
                        eprintln!("ldap2exo: {e}");
                        e.exit()
                    }
                }
            })
        });
    match result {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(e) => {
            eprintln!("ldap2exo: {e:#}");
            ExitCode::from(Exit::Failed as u8)
        }
    }
}
