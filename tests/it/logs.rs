//! What the real binary writes on standard error: progress lines during a long run (off a
//! terminal), the Azure SDK kept quiet below WARN, `--log-format json` and `journald`, and an
//! invalid `LDAP2EXO_LOG` reported.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use ldap2exo_emulator::{Budget, FaultConfig};

use crate::support::cli::Install;
use crate::support::slapd::{Slapd, SlapdOptions};
use crate::sync::{campus_emulator, runtime, sync};

/// The value of `name=` in a text log line (`done=5`, `phase="applying"`).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=");
    let at = line.find(&key)? + key.len();
    let rest = &line[at..];
    let value = rest.split(' ').next()?;
    Some(value.trim_matches('"'))
}

fn progress_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("ldap2exo::progress:"))
        .collect()
}

#[test]
fn a_long_sync_logs_its_progress_and_a_short_run_logs_none() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    // Applying the 39 creations lasts several seconds, with Exchange's provisioning delays (the
    // emulator's defaults), some latency, and writes throttled.
    let budget = Some(Budget {
        limit: 10,
        window_ms: 1000,
    });
    emu.set_faults(FaultConfig {
        latency_ms: 20,
        graph_write_budget: budget,
        exchange_write_budget: budget,
        ..Default::default()
    })
    .unwrap();
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    install
        .env
        .push(("LDAP2EXO_PROGRESS_SECONDS".into(), "600".into()));
    let planned = install.dry_run(0, &[]);
    let actions = planned.actions.len();
    assert_eq!(actions, 39);

    install.env.pop();
    install
        .env
        .push(("LDAP2EXO_PROGRESS_SECONDS".into(), "1".into()));
    let run = sync(&install, 0);
    let lines = progress_lines(&run.stderr);
    let applying: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| field(l, "phase") == Some("applying"))
        .collect();
    assert!(applying.len() >= 2, "{}", run.stderr);
    let done: Vec<u64> = applying
        .iter()
        .map(|l| field(l, "done").unwrap().parse().unwrap())
        .collect();
    assert!(
        done.windows(2).all(|w| w[0] <= w[1]) && done.first() < done.last(),
        "done counts grow: {done:?}\n{}",
        run.stderr
    );
    let last = applying.last().unwrap();
    assert_eq!(field(last, "total"), Some("39"), "{last}");
    assert_eq!(field(last, "failed"), Some("0"), "{last}");
    for name in ["rate_per_s", "eta_s", "throttled", "waited_s"] {
        assert!(field(last, name).is_some(), "{name} in {last}");
    }
    // The interval is honoured: the run is not flooded.
    assert!(lines.len() < 100, "{}", run.stderr);
    // Throttling is told as it happens, each 429 once.
    let throttled: Vec<u64> = lines
        .iter()
        .map(|l| field(l, "throttled").unwrap().parse().unwrap())
        .collect();
    let applied = run
        .stderr
        .lines()
        .find(|l| l.contains("plan applied"))
        .unwrap();
    let in_all: u64 = field(applied, "throttled").unwrap().parse().unwrap();
    assert!(in_all > 0, "the budget throttled the run: {applied}");
    assert!(
        throttled.iter().sum::<u64>() <= in_all,
        "{throttled:?} {applied}"
    );
    let told = lines
        .iter()
        .find(|l| field(l, "throttled") != Some("0"))
        .unwrap_or_else(|| panic!("no line says the run was throttled:\n{}", run.stderr));
    assert!(
        told.contains("progress; the tenant throttled us, waiting"),
        "{told}"
    );
    assert!(field(told, "waited_s").is_some(), "{told}");

    // A run shorter than the default interval says nothing about progress.
    install.env.pop();
    let quiet = install.run(&["sync", "--dry-run"]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert!(quiet.stderr.contains("plan computed"), "{}", quiet.stderr);
    assert!(progress_lines(&quiet.stderr).is_empty(), "{}", quiet.stderr);
}

#[test]
fn json_logs_carry_the_progress_fields() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    // Reading the tenant takes a few pages at this latency: longer than the interval below.
    emu.set_faults(FaultConfig {
        latency_ms: 400,
        ..Default::default()
    })
    .unwrap();
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    install
        .env
        .push(("LDAP2EXO_PROGRESS_SECONDS".into(), "0.1".into()));
    let run = install.run(&["--log-format", "json", "sync", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let events: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let progress: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["target"] == "ldap2exo::progress")
        .collect();
    let tenant = progress
        .iter()
        .find(|e| e["fields"]["phase"] == "reading_tenant")
        .unwrap_or_else(|| panic!("no progress while reading the tenant:\n{}", run.stderr));
    let f = &tenant["fields"];
    assert_eq!(tenant["level"], "INFO");
    assert!(f["done"].is_u64() && f["failed"] == 0, "{f}");
    assert!(f["throttled"].is_u64() && f["waited_s"].is_f64(), "{f}");
    // The total of the tenant read is unknown: left out rather than shown as 0.
    assert!(f.get("total").is_none() && f.get("eta_s").is_none(), "{f}");
}

/// Collects a child's standard error as it comes.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let sink = out.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    out
}

fn spawn(install: &Install, filter: &str, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ldap2exo"))
        .arg("--config")
        .arg(&install.config)
        .args(args)
        .env_remove("LDAP2EXO_CONFIG")
        .env_remove("RUST_LOG")
        .envs(install.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("LDAP2EXO_LOG", filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ldap2exo")
}

#[test]
fn an_unreachable_tenant_does_not_fill_the_log_with_sdk_chatter() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    // A port nobody listens on: every token request fails at once and the SDK retries.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&install.config).unwrap();
    let login = format!("login = \"{}\"", emu.base_url());
    assert!(text.contains(&login));
    std::fs::write(
        &install.config,
        text.replace(&login, &format!("login = \"https://127.0.0.1:{closed}\"")),
    )
    .unwrap();

    let mut quiet = spawn(&install, "info", &["check-config"]);
    let quiet_err = collect_stderr(&mut quiet);
    // The same run with the SDK's target named: its INFO lines are shown, which also proves
    // that the quiet run has met the failures it does not log.
    let mut named = spawn(
        &install,
        "info,typespec_client_core=info",
        &["check-config"],
    );
    let named_err = collect_stderr(&mut named);
    let failures = |s: &str| s.matches("<== Failed response").count();
    while failures(&named_err.lock().unwrap()) < 2 {
        assert!(
            named.try_wait().unwrap().is_none(),
            "the named run ended early:\n{}",
            named_err.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let named_log = named_err.lock().unwrap().clone();
    assert!(
        named_log
            .lines()
            .any(|l| l.contains(" INFO ")
                && l.contains("typespec_client_core::http::policies::logging")),
        "{named_log}"
    );
    for child in [&mut quiet, &mut named] {
        let _ = child.kill();
        child.wait().unwrap();
    }
    let quiet_log = quiet_err.lock().unwrap().clone();
    assert!(!quiet_log.contains("typespec"), "{quiet_log}");
    assert!(!quiet_log.contains("Failed response"), "{quiet_log}");
}

#[test]
fn the_sdk_debug_lines_need_naming_even_at_debug() {
    let rt = runtime();
    let emu = campus_emulator(&rt, Vec::new());
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::with_tenant(&server, &emu);
    install.env.push(("LDAP2EXO_LOG".into(), "debug".into()));
    let run = install.run(&["sync", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains(" DEBUG ") && l.contains(": ldap2exo::")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("typespec_client_core"),
        "{}",
        run.stderr
    );

    install.env.pop();
    install.env.push((
        "LDAP2EXO_LOG".into(),
        "info,typespec_client_core=debug".into(),
    ));
    let run = install.run(&["sync", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.lines().any(|l| l.contains(" DEBUG ")
            && l.contains("typespec_client_core::http::policies::logging: ==> Request")),
        "{}",
        run.stderr
    );
}

#[test]
fn an_invalid_progress_interval_is_named_and_the_default_used() {
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::new(&server);
    install
        .env
        .push(("LDAP2EXO_PROGRESS_SECONDS".into(), "abc".into()));
    let run = install.run(&["sync", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let warning = "LDAP2EXO_PROGRESS_SECONDS=`abc` is not a positive number of seconds";
    assert_eq!(run.stderr.matches(warning).count(), 1, "{}", run.stderr);
}

#[test]
fn an_invalid_log_filter_is_named_and_the_default_used() {
    let server = Slapd::start(SlapdOptions::default());
    let mut install = Install::new(&server);
    install
        .env
        .push(("LDAP2EXO_LOG".into(), "ldap2exo=loud".into()));
    let run = install.run(&["sync", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.starts_with(
            "ldap2exo: warning: LDAP2EXO_LOG=\"ldap2exo=loud\" is not a valid log filter"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("INFO"), "{}", run.stderr);
    assert!(run.stderr.contains("plan computed"), "{}", run.stderr);
}

/// Where tracing-journald sends its datagrams.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

#[test]
fn journald_logs_fall_back_to_text_without_a_journal() {
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::new(&server);
    let run = install.run(&["--log-format", "journald", "sync", "--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fallback = "the systemd journal cannot be reached; logging as text to standard error";
    if std::path::Path::new(JOURNAL_SOCKET).exists() {
        // Under systemd the lines go to the journal, not to standard error.
        assert!(!run.stderr.contains("plan computed"), "{}", run.stderr);
        assert!(!run.stderr.contains(fallback), "{}", run.stderr);
    } else {
        assert_eq!(run.stderr.matches(fallback).count(), 1, "{}", run.stderr);
        assert!(run.stderr.contains(" WARN "), "{}", run.stderr);
        assert!(
            run.stderr
                .lines()
                .any(|l| l.contains(" INFO ")
                    && l.contains("ldap2exo::commands::run: plan computed")),
            "{}",
            run.stderr
        );
    }
}
