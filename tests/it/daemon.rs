//! `ldap2exo daemon` end to end: the real binary on a schedule of seconds, against a private
//! slapd and the tenant emulator over HTTPS, with a real state store; its /healthz, /readyz
//! and /metrics read over real HTTP; stopped with real signals.
//!
//! These processes run on the real clock (no `LDAP2EXO_NOW`): the schedule is the point.
//! Every failed wait prints what the daemon logged.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ldap2exo_emulator::{Emulator, FaultAction, FaultConfig, FaultRule};

use crate::support::cli::Install;
use crate::support::slapd::{Slapd, SlapdOptions};
use crate::sync::{assert_no_duplicates, campus_emulator, live, runtime, stamped};

/// A running `ldap2exo daemon`, killed when dropped; its stderr goes to a file.
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    port: std::cell::OnceCell<u16>,
}

impl Daemon {
    /// Starts `ldap2exo daemon ARGS` for `install` on `schedule`, listening on a port the
    /// system picks (read back from its log).
    fn start(install: &Install, schedule: &str, args: &[&str], name: &str) -> Daemon {
        let log = install.dir.path().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_ldap2exo"))
            .arg("--config")
            .arg(&install.config)
            .arg("daemon")
            .args(args)
            .env_remove("LDAP2EXO_CONFIG")
            .env_remove("LDAP2EXO_NOW")
            .env("LDAP2EXO_LOG", "info")
            .env("LDAP2EXO__DAEMON__SCHEDULE", schedule)
            .env("LDAP2EXO__DAEMON__LISTEN", "127.0.0.1:0")
            .env("LDAP2EXO__DAEMON__SHUTDOWN_GRACE_SECONDS", "10")
            .envs(install.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the daemon");
        Daemon {
            child: Some(child),
            log,
            port: std::cell::OnceCell::new(),
        }
    }

    /// The port from the log line `daemon started listen=127.0.0.1:PORT`, once there is one.
    fn port(&self) -> Option<u16> {
        if let Some(p) = self.port.get() {
            return Some(*p);
        }
        let log = self.log();
        let at = log.find("daemon started listen=127.0.0.1:")?
            + "daemon started listen=127.0.0.1:".len();
        let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
        let port = digits.parse().ok()?;
        Some(*self.port.get_or_init(|| port))
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path`: the status code and the body.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port()?)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((code, body))
    }

    /// The parsed `/metrics`.
    fn metrics(&self) -> prometheus_parse::Scrape {
        let (code, body) = self.get("/metrics").expect("/metrics answers");
        assert_eq!(code, 200);
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
            .unwrap_or_else(|e| panic!("/metrics is not Prometheus text ({e}):\n{body}"))
    }

    /// Waits until `ok()` holds, or fails printing `what` and the daemon's log.
    fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            if start.elapsed() > limit {
                panic!(
                    "{what}: not within {limit:?}; the daemon logged:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How often the daemon logged `text`.
    fn logged(&self, text: &str) -> usize {
        self.log().matches(text).count()
    }

    /// SIGTERM, then a clean exit (0) within a minute.
    fn terminate(&mut self) {
        self.signal("TERM");
        let code = self.wait_exit(Duration::from_secs(60));
        assert_eq!(code, Some(0), "{}", self.log());
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// Waits for the process to end; its exit code (`None` when a signal killed it).
    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            if start.elapsed() > limit {
                panic!(
                    "the daemon did not exit within {limit:?}; it logged:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sum of a metric's samples whose labels include `labels`.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn status(install: &Install) -> serde_json::Value {
    let run = install.run(&["status", "--format", "json"]);
    assert_eq!(run.code, 0, "status: {}\n{}", run.stdout, run.stderr);
    run.json()
}

/// The fixture (39 people to provision) with the tenant; `latency_ms` on every tenant answer
/// makes the first run last long enough (some seconds) to act in the middle of it.
fn setup(rt: &tokio::runtime::Runtime, latency_ms: u64) -> (Emulator, Slapd, Install) {
    let emu = campus_emulator(rt, Vec::new());
    emu.set_faults(FaultConfig {
        latency_ms,
        ..Default::default()
    })
    .unwrap();
    let server = Slapd::start(SlapdOptions::default());
    let install = Install::with_tenant(&server, &emu);
    (emu, server, install)
}

const SLOW: u64 = 40;

#[test]
fn the_daemon_follows_ldap_on_its_schedule_and_tells_monitoring_how_it_is_doing() {
    let rt = runtime();
    let (emu, server, install) = setup(&rt, 0);
    let daemon = Daemon::start(&install, "*/2 * * * * *", &["--run-now"], "daemon");
    daemon.wait_for("/healthz answers", Duration::from_secs(30), || {
        daemon.get("/healthz").map(|(c, _)| c) == Some(200)
    });
    daemon.wait_for(
        "the fixture is provisioned",
        Duration::from_secs(90),
        || stamped(&emu.state()) == 39,
    );
    daemon.wait_for("/readyz is ready", Duration::from_secs(30), || {
        daemon.get("/readyz").map(|(c, _)| c) == Some(200)
    });
    let first = daemon.metrics();
    let ok_runs = sample(&first, "ldap2exo_runs_total", &[("outcome", "ok")]);
    assert!(ok_runs >= 1.0, "{:?}", first.samples);
    assert!(
        sample(
            &first,
            "ldap2exo_actions_total",
            &[("op", "create"), ("outcome", "done")]
        ) >= 39.0
    );
    assert!(
        sample(
            &first,
            "ldap2exo_tenant_requests_total",
            &[("service", "exchange"), ("status", "2xx")]
        ) > 0.0
    );
    assert!(sample(&first, "ldap2exo_ldap_entries_read_total", &[]) >= 46.0);
    assert!(sample(&first, "ldap2exo_last_success_timestamp_seconds", &[]) > 1.7e9);
    assert!(
        sample(&first, "ldap2exo_quarantined_entries", &[]) >= 1.0,
        "the fixture has broken entries"
    );
    assert_eq!(sample(&first, "ldap2exo_ready", &[]), 1.0);
    assert!(
        first
            .samples
            .iter()
            .any(|s| s.metric.starts_with("ldap2exo_run_duration_seconds")),
        "the run duration histogram is exported"
    );
    for private in ["adavis", "example.edu", "client_secret"] {
        let (_, body) = daemon.get("/metrics").unwrap();
        assert!(!body.contains(private), "{private} in /metrics");
    }

    // A change in LDAP between two ticks reaches the tenant without anybody running a sync.
    server.modify("dn: uid=adavis,ou=people,dc=example,dc=edu\nchangetype: modify\nreplace: displayName\ndisplayName: Alice Davis-Smith\n");
    daemon.wait_for(
        "the new display name reaches the tenant",
        Duration::from_secs(60),
        || {
            live(&emu.state())
                .iter()
                .any(|u| u.display_name.as_deref() == Some("Alice Davis-Smith"))
        },
    );

    // A failed run turns /readyz unready; the next good one makes it ready again.
    emu.set_faults(FaultConfig {
        rules: vec![FaultRule {
            endpoint: "EXO Get-Recipient".into(),
            action: FaultAction::Fail { status: 403 },
            count: 1_000,
        }],
        ..Default::default()
    })
    .unwrap();
    daemon.wait_for(
        "/readyz turns unready after a failed run",
        Duration::from_secs(60),
        || daemon.get("/readyz").map(|(c, _)| c) == Some(503),
    );
    let (_, why) = daemon.get("/readyz").unwrap();
    assert!(why.contains("did not succeed"), "{why}");
    assert!(
        sample(
            &daemon.metrics(),
            "ldap2exo_runs_total",
            &[("outcome", "failed")]
        ) >= 1.0
    );
    emu.set_faults(FaultConfig::default()).unwrap();
    daemon.wait_for(
        "/readyz is ready again after a good run",
        Duration::from_secs(60),
        || daemon.get("/readyz").map(|(c, _)| c) == Some(200),
    );
    let later = daemon.metrics();
    assert!(
        sample(&later, "ldap2exo_runs_total", &[("outcome", "ok")]) > ok_runs,
        "the run counter moves"
    );

    // status shows the daemon and when it runs next; runs are labelled by what started them.
    let s = status(&install);
    let runs = s["runs"].as_array().unwrap();
    assert!(runs.iter().any(|r| r["command"] == "daemon"), "{s:#}");
    assert_eq!(s["daemon"]["pid"], daemon.pid(), "{s:#}");
    let text = install.run(&["status"]);
    assert!(
        text.stdout.contains(&format!(
            "daemon: `ldap2exo daemon` (pid {} on host",
            daemon.pid()
        )) && text.stdout.contains("; next run "),
        "{}",
        text.stdout
    );

    let mut daemon = daemon;
    daemon.terminate();
    assert!(daemon.log().contains("daemon stopped"), "{}", daemon.log());
    assert_no_duplicates(&emu.state());
    let text = install.run(&["status"]);
    assert!(
        text.stdout.contains("daemon: not running"),
        "{}",
        text.stdout
    );
}

#[test]
fn runs_never_overlap_and_other_runs_are_refused_naming_the_holder() {
    let rt = runtime();
    let (emu, _server, install) = setup(&rt, SLOW);
    let planned = install.dry_run(0, &[]).summary.create;
    let daemon = Daemon::start(&install, "* * * * * *", &["--run-now"], "daemon");
    daemon.wait_for(
        "the first run is under way",
        Duration::from_secs(60),
        || live(&emu.state()).len() > 3,
    );
    let pid = daemon.pid().to_string();

    // A manual sync while the daemon's run goes on is refused, naming the daemon.
    let manual = install.run(&["sync"]);
    assert_eq!(manual.code, 1, "{}\n{}", manual.stdout, manual.stderr);
    assert!(
        manual.stderr.contains(&format!("pid {pid}"))
            && manual.stderr.contains("`ldap2exo daemon`"),
        "{}",
        manual.stderr
    );
    // So is a second daemon, at any time.
    let mut second = Daemon::start(&install, "* * * * * *", &[], "second");
    assert_eq!(
        second.wait_exit(Duration::from_secs(30)),
        Some(1),
        "{}",
        second.log()
    );
    assert!(
        second.log().contains(&format!("pid {pid}")),
        "{}",
        second.log()
    );

    daemon.wait_for("the first run finishes", Duration::from_secs(300), || {
        daemon.logged("scheduled run finished") >= 1
    });
    assert_eq!(stamped(&emu.state()), planned, "{}", daemon.log());
    daemon.wait_for(
        "a tick passed during the run and was skipped",
        Duration::from_secs(60),
        || {
            sample(
                &daemon.metrics(),
                "ldap2exo_ticks_skipped_total",
                &[("reason", "overlap")],
            ) >= 1.0
        },
    );
    daemon.wait_for(
        "two more runs on the schedule",
        Duration::from_secs(60),
        || daemon.logged("scheduled run finished") >= 3,
    );
    let mut daemon = daemon;
    daemon.terminate();

    // In the store, each run started after the one before it had finished.
    let s = status(&install);
    let mut runs: Vec<(i64, i64, i64)> = s["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == "daemon")
        .map(|r| {
            let t = |k: &str| {
                let v = &r[k];
                v.as_i64().unwrap_or_else(|| {
                    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("{k}: {r}")))
                        .unwrap()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs() as i64
                })
            };
            (r["id"].as_i64().unwrap(), t("started_at"), t("finished_at"))
        })
        .collect();
    runs.sort();
    assert!(runs.len() >= 2, "{s:#}");
    for pair in runs.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "run {} started before run {} finished: {runs:?}",
            pair[1].0,
            pair[0].0
        );
    }
    assert_no_duplicates(&emu.state());
}

#[test]
fn sigterm_mid_run_records_an_interrupted_run_that_the_next_start_completes() {
    let rt = runtime();
    let (emu, _server, install) = setup(&rt, SLOW);
    let planned = install.dry_run(0, &[]).summary.create;
    // A schedule that does not fire during the test: only --run-now runs.
    let yearly = "0 0 0 1 1 *";
    let mut daemon = Daemon::start(&install, yearly, &["--run-now"], "first");
    daemon.wait_for("the run is under way", Duration::from_secs(60), || {
        live(&emu.state()).len() > 3
    });
    daemon.terminate();
    let made = stamped(&emu.state());
    assert!(
        made < planned,
        "the run finished before the signal; nothing to test ({made} of {planned})"
    );

    let s = status(&install);
    let last = &s["runs"][0];
    assert_eq!(last["outcome"], "interrupted", "{s:#}");
    assert!(
        last["error"].as_str().unwrap().contains("not started"),
        "{last}"
    );

    // The next start does the rest, and nothing twice.
    let mut daemon = Daemon::start(&install, yearly, &["--run-now"], "second");
    daemon.wait_for(
        "the run that does the rest finishes",
        Duration::from_secs(300),
        || daemon.logged("scheduled run finished") == 1,
    );
    assert_eq!(stamped(&emu.state()), planned, "{}", daemon.log());
    daemon.terminate();
    assert_no_duplicates(&emu.state());
    let s = status(&install);
    assert_eq!(s["runs"][0]["outcome"], "ok", "{s:#}");
}

#[test]
fn a_lock_left_by_a_killed_daemon_is_recovered_and_its_run_marked_interrupted() {
    let rt = runtime();
    let (emu, _server, install) = setup(&rt, SLOW);
    let mut daemon = Daemon::start(&install, "0 0 0 1 1 *", &["--run-now"], "killed");
    daemon.wait_for("the run is under way", Duration::from_secs(60), || {
        live(&emu.state()).len() > 3
    });
    daemon.signal("KILL");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        None,
        "killed by a signal"
    );

    // The kernel released the locks with the process: the next sync runs, and says what it found.
    emu.set_faults(FaultConfig::default()).unwrap();
    let run = install.run(&["sync"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("marked interrupted"), "{}", run.stderr);
    let s = status(&install);
    let runs = s["runs"].as_array().unwrap();
    let killed = runs
        .iter()
        .find(|r| r["command"] == "daemon")
        .expect("the daemon's run");
    assert_eq!(killed["outcome"], "interrupted", "{s:#}");
    assert_no_duplicates(&emu.state());
    // And a new daemon starts.
    let mut again = Daemon::start(&install, "0 0 0 1 1 *", &[], "again");
    again.wait_for("/healthz answers", Duration::from_secs(30), || {
        again.get("/healthz").map(|(c, _)| c) == Some(200)
    });
    // A restart remembers the last success, and every outcome's series exists from the start.
    let scrape = again.metrics();
    assert!(sample(&scrape, "ldap2exo_last_success_timestamp_seconds", &[]) > 1.7e9);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "ldap2exo_runs_total" && s.labels.get("outcome") == Some("failed")),
        "{:?}",
        scrape.samples
    );
    again.signal("INT");
    assert_eq!(
        again.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        again.log()
    );
}

#[test]
fn a_daemon_that_cannot_work_says_why_at_start_with_exit_2() {
    let rt = runtime();
    let (_emu, server, install) = setup(&rt, 0);
    // The state directory is missing: a configuration error naming it.
    let mut missing = Install::with_tenant(&server, &_emu);
    missing.env.push((
        "LDAP2EXO__STATE__PATH".into(),
        install
            .dir
            .path()
            .join("no/such/dir/state.db")
            .display()
            .to_string(),
    ));
    let mut d = Daemon::start(&missing, "0 */15 * * * *", &[], "nodir");
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(2), "{}", d.log());
    assert!(d.log().contains("no/such/dir"), "{}", d.log());
    // No tenant credentials: every tick would fail, so the daemon does not start.
    let mut bare = Install::new(&server);
    bare.env
        .push(("LDAP2EXO__DAEMON__SCHEDULE".into(), "0 */15 * * * *".into()));
    let mut d = Daemon::start(&bare, "0 */15 * * * *", &[], "bare");
    assert_eq!(d.wait_exit(Duration::from_secs(30)), Some(2), "{}", d.log());
    assert!(d.log().contains("tenant.tenant_id"), "{}", d.log());
}

#[test]
fn sigterm_stops_a_manual_sync_cleanly_and_the_next_sync_finishes_it() {
    let rt = runtime();
    let (emu, _server, install) = setup(&rt, SLOW);
    let planned = install.dry_run(0, &[]).summary.create;
    let log = install.dir.path().join("sync.log");
    let out = install.dir.path().join("report.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ldap2exo"))
        .arg("--config")
        .arg(&install.config)
        .args(["sync", "--output"])
        .arg(&out)
        .env_remove("LDAP2EXO_CONFIG")
        .env("LDAP2EXO_NOW", install.now.to_string())
        .env("LDAP2EXO_LOG", "info")
        .envs(install.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    let start = Instant::now();
    while live(&emu.state()).len() <= 3 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the sync never got going:\n{}",
            logged()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap()
            .success()
    );
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(1), "a stopped sync exits 1:\n{}", logged());
    let report = std::fs::read_to_string(&out).unwrap();
    assert!(
        report.contains("not started (the run was stopped)"),
        "{report}\n{}",
        logged()
    );
    let made = stamped(&emu.state());
    assert!(
        made < planned,
        "the run finished before the signal ({made} of {planned}):\n{}",
        logged()
    );
    let s = status(&install);
    assert_eq!(s["runs"][0]["outcome"], "interrupted", "{s:#}");

    // The next sync does the rest, nothing twice.
    let run = install.run(&["sync"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(stamped(&emu.state()), planned);
    assert_no_duplicates(&emu.state());
}
