//! Logging with `tracing`: human-readable text on standard error by default, JSON lines with
//! `--log-format json`, the systemd journal with `--log-format journald`.
//!
//! The filter comes from `LDAP2EXO_LOG` (or `RUST_LOG`), default `info`; the Azure SDK's
//! crates (`typespec_client_core`, `typespec`, `azure_core`, `azure_identity`) log at WARN and
//! above unless the filter names them, since their INFO lines (one per failed HTTP response)
//! repeat what our own errors say. An invalid filter is reported on standard error, naming the
//! variable, and the default is used. Reports go to standard output, logs to standard error,
//! so `sync --format json | jq` keeps working. Text on a terminal is written around the
//! progress bar ([`crate::progress`]) so that neither tears the other.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::cli::LogFormat;

/// The SDK crates whose logs below WARN are chatter for our operators.
const QUIET_CRATES: [&str; 4] = [
    "typespec_client_core",
    "typespec",
    "azure_core",
    "azure_identity",
];

/// Whether the logs are text on a terminal, where a progress bar can be drawn.
static BAR: AtomicBool = AtomicBool::new(false);

/// Whether [`init`] set up text logs on a terminal: the progress is then a bar, else lines.
pub fn draws_bar() -> bool {
    BAR.load(Ordering::Relaxed)
}

/// The filter to use for the user's `filter` (from `variable`), or the default; and a warning
/// for standard error when the user's filter is invalid.
pub fn filter(user: Option<(&str, &str)>) -> (EnvFilter, Option<String>) {
    let default = || EnvFilter::new(directives("info"));
    match user {
        None => (default(), None),
        Some((variable, value)) => match EnvFilter::try_new(directives(value)) {
            Ok(filter) => (filter, None),
            Err(e) => (
                default(),
                Some(format!(
                    "ldap2exo: warning: {variable}={value:?} is not a valid log filter ({e}); \
                     logging at the default level, info"
                )),
            ),
        },
    }
}

/// `user`'s directives, plus WARN for each quiet crate the user does not name.
pub fn directives(user: &str) -> String {
    let named: Vec<&str> = user.split(',').filter_map(directive_target).collect();
    let mut out = user.trim().to_owned();
    for krate in QUIET_CRATES {
        let mentioned = named.iter().any(|t| {
            *t == krate
                || t.strip_prefix(krate)
                    .is_some_and(|rest| rest.starts_with("::"))
        });
        if !mentioned {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(krate);
            out.push_str("=warn");
        }
    }
    out
}

/// The target a directive names (`azure_core::http=debug` → `azure_core::http`); none for a
/// bare level (`debug`) or a span-only directive (`[run]=debug`).
fn directive_target(directive: &str) -> Option<&str> {
    let d = directive.trim();
    let end = d.find(['[', '=']).unwrap_or(d.len());
    let target = d[..end].trim();
    let is_level = ["trace", "debug", "info", "warn", "error", "off"]
        .iter()
        .any(|l| target.eq_ignore_ascii_case(l))
        || target.parse::<u8>().is_ok();
    let bare_level = is_level && end == d.len();
    if target.is_empty() || bare_level {
        None
    } else {
        Some(target)
    }
}

/// The user's filter: `LDAP2EXO_LOG`, else `RUST_LOG`; an empty variable counts as unset.
fn user_filter() -> Option<(&'static str, String)> {
    ["LDAP2EXO_LOG", "RUST_LOG"].into_iter().find_map(|var| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (var, v))
    })
}

/// Standard error, written around the progress bar when one is drawn.
#[derive(Debug, Clone, Copy)]
struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }
    // The fmt layer hands over each event whole, in one `write_all`: the bar is hidden once.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        crate::progress::write_around_bar(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Stderr;
    fn make_writer(&'a self) -> Stderr {
        Stderr
    }
}

pub fn init(format: LogFormat) {
    let user = user_filter();
    let (filter, warning) = filter(user.as_ref().map(|(k, v)| (*k, v.as_str())));
    if let Some(warning) = warning {
        eprintln!("{warning}");
    }
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let registry = tracing_subscriber::registry().with(filter);
    let text = || {
        tracing_subscriber::fmt::layer()
            .with_writer(Stderr)
            .with_ansi(terminal)
    };
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = match format {
        LogFormat::Text => {
            BAR.store(terminal, Ordering::Relaxed);
            registry.with(text()).try_init()
        }
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(Stderr))
            .try_init(),
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(journal) => registry.with(journal).try_init(),
            Err(e) => {
                let result = registry.with(text()).try_init();
                tracing::warn!(
                    error = %e,
                    "the systemd journal cannot be reached; logging as text to standard error"
                );
                result
            }
        },
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_crates_are_quiet_below_warn_unless_named() {
        assert_eq!(
            directives("info"),
            "info,typespec_client_core=warn,typespec=warn,azure_core=warn,azure_identity=warn"
        );
        // A bare level is not a target: the SDK stays quiet even at debug.
        assert_eq!(
            directives("debug"),
            "debug,typespec_client_core=warn,typespec=warn,azure_core=warn,azure_identity=warn"
        );
        // Named crates (or modules of them) keep the user's directive, and only those.
        assert_eq!(
            directives("info,typespec_client_core::http=debug, azure_identity"),
            "info,typespec_client_core::http=debug, azure_identity,typespec=warn,azure_core=warn"
        );
        // `typespec` names neither `typespec_client_core` nor another crate's module.
        assert_eq!(
            directives("typespec=info,ldap2exo::tenant=trace"),
            "typespec=info,ldap2exo::tenant=trace,typespec_client_core=warn,azure_core=warn,azure_identity=warn"
        );
        assert_eq!(
            directives("[run]=debug"),
            "[run]=debug,typespec_client_core=warn,typespec=warn,azure_core=warn,azure_identity=warn"
        );
    }

    /// What a subscriber with `filter` writes for an INFO and a WARN event of `target`.
    fn logged(filter: EnvFilter, target_info: bool) -> String {
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::registry().with(filter).with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(move || Sink(sink.clone())),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "typespec_client_core::http::policies::logging", "<== Failed response");
            tracing::warn!(target: "azure_identity::credentials", "token refused");
            tracing::info!(target: "ldap2exo::commands::run", "plan computed");
            if target_info {
                tracing::debug!(target: "azure_core::http::pager", "initial page request");
            }
        });
        String::from_utf8(out.lock().unwrap().clone()).unwrap()
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn by_default_the_sdk_says_only_warnings_and_we_say_info() {
        let (f, warning) = filter(None);
        assert_eq!(warning, None);
        let out = logged(f, true);
        assert!(!out.contains("Failed response"), "{out}");
        assert!(!out.contains("initial page request"), "{out}");
        assert!(out.contains("token refused"), "{out}");
        assert!(out.contains("plan computed"), "{out}");
    }

    #[test]
    fn a_filter_naming_an_sdk_crate_wins() {
        let (f, _) = filter(Some(("LDAP2EXO_LOG", "info,azure_core=debug")));
        let out = logged(f, true);
        assert!(out.contains("initial page request"), "{out}");
        assert!(!out.contains("Failed response"), "{out}");
        let (f, _) = filter(Some(("RUST_LOG", "warn,typespec_client_core=info")));
        let out = logged(f, false);
        assert!(out.contains("Failed response"), "{out}");
        assert!(!out.contains("plan computed"), "{out}");
    }

    #[test]
    fn an_invalid_filter_is_named_and_replaced_by_the_default() {
        let (f, warning) = filter(Some(("LDAP2EXO_LOG", "info,ldap2exo=loud")));
        let warning = warning.expect("a warning");
        assert!(
            warning.starts_with(
                "ldap2exo: warning: LDAP2EXO_LOG=\"info,ldap2exo=loud\" is not a valid log filter"
            ),
            "{warning}"
        );
        assert_eq!(
            f.to_string(),
            EnvFilter::new(directives("info")).to_string()
        );
        let (_, warning) = filter(Some(("RUST_LOG", "ldap2exo=[")));
        assert!(
            warning
                .expect("a warning")
                .contains("RUST_LOG=\"ldap2exo=[\"")
        );
    }
}
