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

/// mimalloc v3 keeps freed memory for a second (`purge_delay`, 1000 ms) and commits its
/// arenas eagerly on Linux (`arena_eager_commit` 2) before giving pages back, so a run that
/// frees the tenant's listings while it builds the plan held about twice its live heap.
/// Returning freed memory at once (both set through the environment) cut the peak of a
/// 5,000-person rollover from 130 to 84 MB for up to a sixth more CPU; set here, the first
/// arena may already exist, and the run peaked at 92 MB (README, `bench-rollover.sh`,
/// with the inventory's compact recipients too). A site that sets
/// `MIMALLOC_PURGE_DELAY` or `MIMALLOC_ARENA_EAGER_COMMIT` keeps its own choice.
fn return_freed_memory_at_once() {
    // The option numbers of the bundled mimalloc 3.x (`mi_option_e` in its
    // include/mimalloc.h); libmimalloc-sys names only those v2 and v3 share. The test
    // `the_allocator_options_are_mimalloc_3s` pins them.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
    // Transparent huge pages: mimalloc asks for them (`allow_thp` 1), and with the immediate
    // purge a page given back and touched again is a fresh 2 MiB page the kernel zeroes
    // whole. In a 50,000-person dry run that zeroing was 15 % of the CPU time; with 4 KiB
    // pages it is gone and the peak fell by about 10 MB (perf, bench-source.sh). The option
    // alone comes too late for that: see `give_up_huge_pages`.
    for (option, variable) in [
        (PURGE_DELAY, "MIMALLOC_PURGE_DELAY"),
        (ARENA_EAGER_COMMIT, "MIMALLOC_ARENA_EAGER_COMMIT"),
        (ALLOW_THP, "MIMALLOC_ALLOW_THP"),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mi_option_set only stores a number in mimalloc's option table; both
            // options are read again at each purge and each new arena.
            unsafe { libmimalloc_sys::mi_option_set(option, 0) };
        }
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        give_up_huge_pages();
    }
}

/// mimalloc turns THP off for the process (`PR_SET_THP_DISABLE`) only when `allow_thp` is 0
/// at its start, before `main`; by then its first arena is already marked for huge pages
/// (`MADV_HUGEPAGE`), so setting the option here did not stop the zeroing (perf: 19 % of a
/// 50,000-person dry run, with 10 MB more at the peak). The process-wide switch covers that
/// arena too; children inherit it.
fn give_up_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only and changes a flag
    // of this process's memory map; it fails harmlessly (EINVAL) on kernels without it.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn main() -> ExitCode {
    return_freed_memory_at_once();
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

#[cfg(test)]
mod tests {
    /// The numbers `return_freed_memory_at_once` sets are mimalloc 3's `arena_eager_commit`,
    /// `purge_delay` and `allow_thp`: a mimalloc upgrade that renumbers them fails here, not
    /// silently in production. Their defaults (2, 1000 and 1; the neighbours of 43 default to
    /// 16 and 0) tell them from their neighbours.
    #[test]
    fn the_allocator_options_are_mimalloc_3s() {
        // SAFETY: plain reads of mimalloc's version and option table.
        let (version, eager, delay, thp) = unsafe {
            (
                libmimalloc_sys::mi_version(),
                libmimalloc_sys::mi_option_get(4),
                libmimalloc_sys::mi_option_get(15),
                libmimalloc_sys::mi_option_get(43),
            )
        };
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
            assert_eq!(thp, 1, "option 43 is not allow_thp");
        }
        assert!((30000..40000).contains(&version), "mimalloc {version}");
        if std::env::var_os("MIMALLOC_ARENA_EAGER_COMMIT").is_none() {
            assert_eq!(eager, 2, "option 4 is not arena_eager_commit");
        }
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(delay, 1000, "option 15 is not purge_delay");
        }
    }

    /// The switch `main` throws is the process's, not only mimalloc's option.
    #[test]
    fn huge_pages_are_given_up_for_the_whole_process() {
        // SAFETY: PR_GET_THP_DISABLE only reads the flag.
        let flag = || unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        // (A test process starts with huge pages allowed unless its parent gave them up.)
        super::give_up_huge_pages();
        assert_eq!(flag(), 1);
    }
}
