//! The packaging in `packaging/systemd/`, the `Dockerfile` and `docker-compose.yml`: the
//! systemd units as systemd itself checks them, and every path, port, name and variable they
//! assume against what the code really uses, so a changed default cannot leave them behind.
//!
//! No Docker engine is needed: the container files are checked against the code, not built.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ldap2exo::config::{self, Config};

const UNITS: [&str; 3] = [
    "ldap2exo.service",
    "ldap2exo-sync.service",
    "ldap2exo-sync.timer",
];

/// Where the units and the Dockerfile install the binary.
const INSTALLED_BINARY: &str = "/usr/local/bin/ldap2exo";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn unit(name: &str) -> String {
    read(&format!("packaging/systemd/{name}"))
}

/// The values of `key=` in a unit, in order (a key may repeat).
fn unit_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
        .collect()
}

fn unit_value(text: &str, key: &str) -> String {
    match unit_values(text, key).as_slice() {
        [one] => one.clone(),
        other => panic!("expected one {key}= in the unit, found {other:?}"),
    }
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ldap2exo"))
}

fn systemd_analyze(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run systemd-analyze ({e}): run scripts/install-deps.sh (Debian's `systemd` package)"
            )
        })
}

/// The units copied to a temporary directory with `ExecStart=` on the binary just built, so
/// systemd's check that the executable exists passes.
fn units_with_built_binary() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in UNITS {
        let text = unit(name);
        let built = text.replace(INSTALLED_BINARY, &binary().display().to_string());
        if name.ends_with(".service") {
            assert_ne!(built, text, "{name} does not run {INSTALLED_BINARY}");
        }
        std::fs::write(dir.path().join(name), built).unwrap();
    }
    dir
}

#[test]
fn systemd_accepts_the_units_without_a_warning() {
    let dir = units_with_built_binary();
    let out = systemd_analyze(&[&["verify"], UNITS.as_slice()].concat(), dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {UNITS:?}: {}\n{stderr}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    // verify does not notice a timer whose service is missing: it starts the service of its
    // own name, which must be shipped beside it.
    let timer = unit("ldap2exo-sync.timer");
    assert!(
        unit_values(&timer, "Unit").is_empty(),
        "the timer names another unit"
    );
    assert!(
        repo()
            .join("packaging/systemd/ldap2exo-sync.service")
            .is_file()
    );
}

#[test]
fn the_services_are_hardened() {
    let dir = units_with_built_binary();
    for name in ["ldap2exo.service", "ldap2exo-sync.service"] {
        // systemd's own score, 0 (locked down) to 10 (unprotected), times ten. The units
        // score 1.2 and 1.4 with systemd 252; dropping a group of protections crosses 2.0.
        let out = systemd_analyze(
            &[
                "security",
                "--offline=yes",
                "--threshold=20",
                "--no-pager",
                name,
            ],
            dir.path(),
        );
        assert!(
            out.status.success(),
            "{name} is exposed above 2.0 by systemd-analyze security:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The command line of a service, as ldap2exo parses it: `--help` after the unit's own
/// arguments exits 0 only if every command and flag before it exists.
fn assert_ldap2exo_parses_exec_start(name: &str) {
    let exec = unit_value(&unit(name), "ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some(INSTALLED_BINARY), "{name}");
    let args: Vec<&str> = words.collect();
    let out = Command::new(binary())
        .args(&args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name}: ldap2exo {args:?} --help: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        args[..2],
        ["--config", config::DEFAULT_PATH],
        "{name} names the default configuration file"
    );
}

#[test]
fn the_units_command_lines_are_ldap2exos() {
    assert_ldap2exo_parses_exec_start("ldap2exo-sync.service");
    assert_ldap2exo_parses_exec_start("ldap2exo.service");
}

/// Every secret a unit loads is handed to the configuration through a variable ldap2exo
/// reads, and each variable names a credential the unit loads.
#[test]
fn the_units_credentials_reach_the_configuration() {
    for name in ["ldap2exo.service", "ldap2exo-sync.service"] {
        let text = unit(name);
        let credentials: BTreeMap<String, String> = unit_values(&text, "LoadCredential")
            .iter()
            .map(|c| {
                let (id, path) = c.split_once(':').expect("LoadCredential=ID:PATH");
                (id.to_owned(), path.to_owned())
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let mut env = Vec::new();
        for assignment in unit_values(&text, "Environment") {
            let (var, value) = assignment.split_once('=').unwrap();
            let Some(id) = value.strip_prefix("%d/") else {
                continue;
            };
            assert!(
                credentials.contains_key(id),
                "{name}: {var} names credential {id}, which no LoadCredential= loads"
            );
            std::fs::write(dir.path().join(id), format!("{id}-value\n")).unwrap();
            env.push((var.to_owned(), dir.path().join(id).display().to_string()));
        }
        assert_eq!(
            env.len(),
            credentials.len(),
            "{name}: a loaded credential that no variable points at: {credentials:?}"
        );
        for path in credentials.values() {
            assert!(path.starts_with("/etc/ldap2exo/secrets/"), "{name}: {path}");
        }

        let config = Config::load(&repo().join("config/ldap2exo.example.toml"), env)
            .unwrap_or_else(|e| panic!("{name}'s variables: {e}"));
        let bind = config.ldap.bind_password.expect("the bind password");
        assert_eq!(bind.expose(), "ldap_bind_password-value", "{name}");
        let secret = config.tenant.client_secret.expect("the client secret");
        assert_eq!(secret.expose(), "tenant_client_secret-value", "{name}");
    }
}

/// The directories, the configuration file, the port and the binary name the units, the
/// Dockerfile and docker-compose.yml use are the code's defaults.
#[test]
fn the_packaging_uses_the_codes_defaults() {
    let defaults = Config::from_toml(
        "[ldap]\nurl = \"ldaps://h\"\nbase_dn = \"dc=x\"\n[tenant]\naccepted_domains = [\"x.org\"]\n\
         onmicrosoft_domain = \"x.onmicrosoft.com\"\nrouting_domain = \"x.mail.onmicrosoft.com\"\n\
         upn_domain = \"x.org\"\n",
        Path::new("defaults.toml"),
        Vec::new(),
    )
    .unwrap();
    let state_dir = defaults.state.path.parent().unwrap().to_str().unwrap();
    let config_dir = Path::new(config::DEFAULT_PATH)
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    let port = defaults.daemon.listen.rsplit_once(':').unwrap().1;
    let name = binary().file_name().unwrap().to_str().unwrap();
    assert_eq!(state_dir, "/var/lib/ldap2exo");
    assert_eq!(config_dir, "/etc/ldap2exo");
    assert_eq!(Path::new(INSTALLED_BINARY).file_name().unwrap(), name);

    for service in ["ldap2exo.service", "ldap2exo-sync.service"] {
        let text = unit(service);
        let state = unit_value(&text, "StateDirectory");
        assert_eq!(
            format!("/var/lib/{}", state.split_whitespace().next().unwrap()),
            state_dir,
            "{service}"
        );
        assert_eq!(
            format!("/etc/{}", unit_value(&text, "ConfigurationDirectory")),
            config_dir,
            "{service}"
        );
    }
    // The timer's report goes into a directory systemd makes for it.
    let sync = unit("ldap2exo-sync.service");
    let report = unit_value(&sync, "ExecStart");
    let report = Path::new(report.rsplit_once("--output ").unwrap().1);
    let made: Vec<String> = unit_value(&sync, "StateDirectory")
        .split_whitespace()
        .map(|d| format!("/var/lib/{d}"))
        .collect();
    assert!(
        made.iter()
            .any(|d| Path::new(d) == report.parent().unwrap()),
        "{report:?} is not in a StateDirectory= of ldap2exo-sync.service: {made:?}"
    );

    let docker = read("Dockerfile");
    for needed in [
        format!("--bin {name}"),
        format!("ENTRYPOINT [\"{name}\"]"),
        format!("COPY --from=build {INSTALLED_BINARY} {INSTALLED_BINARY}"),
        format!("VOLUME [\"{state_dir}\"]"),
        format!("-o ldap2exo -g ldap2exo {state_dir}\n"),
        format!("install -d -m 0755 -o root -g root {config_dir} "),
        format!("ENV LDAP2EXO__DAEMON__LISTEN=0.0.0.0:{port}\n"),
        format!("EXPOSE {port}\n"),
        "CMD [\"daemon\"]".to_owned(),
        "/healthz".to_owned(),
    ] {
        assert!(docker.contains(&needed), "the Dockerfile lacks `{needed}`");
    }
    assert!(
        docker.contains(&format!("ARG RUST_IMAGE=rust:{}-bookworm", rust_version())),
        "the Dockerfile's Rust is not Cargo.toml's rust-version {}",
        rust_version()
    );

    let compose = read("docker-compose.yml");
    for needed in [
        format!("./config/docker.toml:{}:ro", config::DEFAULT_PATH),
        format!("ldap2exo-state:{state_dir}\n"),
        format!("\"127.0.0.1:{port}:{port}\""),
        format!(
            "stop_grace_period: {}",
            unit_value(&unit("ldap2exo.service"), "TimeoutStopSec")
        ),
    ] {
        assert!(
            compose.contains(&needed),
            "docker-compose.yml lacks `{needed}`"
        );
    }
}

/// The configuration docker-compose.yml mounts is valid, keeps the default state path (on
/// the volume), and its secret files are the compose secrets with the fixture's values.
#[test]
fn the_compose_configuration_is_valid() {
    let compose = read("docker-compose.yml");
    let secrets = repo().join("tests/fixtures/docker/secrets");
    let mut env = Vec::new();
    for (key, var) in [
        ("ldap_bind_password", "LDAP2EXO__LDAP__BIND_PASSWORD_FILE"),
        (
            "tenant_client_secret",
            "LDAP2EXO__TENANT__CLIENT_SECRET_FILE",
        ),
    ] {
        assert!(
            compose.contains(&format!(
                "  {key}:\n    file: ./tests/fixtures/docker/secrets/{key}\n"
            )),
            "docker-compose.yml lacks the secret {key}"
        );
        assert!(read("config/docker.toml").contains(&format!("_file = \"/run/secrets/{key}\"")));
        env.push((var.to_owned(), secrets.join(key).display().to_string()));
    }
    let config = Config::load(&repo().join("config/docker.toml"), env).unwrap();
    assert_eq!(
        config.ldap.bind_password.unwrap().expose(),
        super::support::slapd::SERVICE_PASSWORD
    );
    // The compose emulator runs with its default app registration.
    let emulator = ldap2exo_emulator::TenantConfig::default();
    assert_eq!(
        config.tenant.client_secret.unwrap().expose(),
        emulator
            .client_secret
            .expect("the emulator's default secret")
    );
    assert_eq!(
        config.tenant.tenant_id.as_deref(),
        Some(emulator.tenant_id.as_str())
    );
    assert_eq!(
        config.tenant.client_id.as_deref(),
        Some(emulator.client_id.as_str())
    );
    assert_eq!(config.state.path, Path::new("/var/lib/ldap2exo/state.db"));
}

fn rust_version() -> String {
    let manifest = read("Cargo.toml");
    let line = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml");
    line.trim_matches('"').to_owned()
}

/// The image's HEALTHCHECK, run with bash as Docker runs it, against a server that answers
/// like the daemon: healthy on 200 from `GET /healthz` on the port of
/// `LDAP2EXO__DAEMON__LISTEN`, unhealthy on anything else or nobody listening.
#[test]
fn the_images_healthcheck_asks_healthz() {
    let docker = read("Dockerfile");
    let line = docker
        .split("\nHEALTHCHECK ")
        .nth(1)
        .and_then(|h| h.split_once("CMD "))
        .map(|(_, cmd)| cmd.lines().next().unwrap())
        .expect("a HEALTHCHECK ... CMD [...] in the Dockerfile");
    let argv: Vec<String> = serde_json::from_str(line).expect("HEALTHCHECK in exec form");

    for (status, healthy) in [("200 OK", true), ("503 Service Unavailable", false)] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            use std::io::{BufRead, BufReader, Write};
            let (mut stream, _) = listener.accept().unwrap();
            // The whole request is read before answering: closing with unread bytes would
            // reset the connection under the client's read.
            let mut reader = BufReader::new(&stream);
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap_or(0) > 0 && header != "\r\n" {
                header.clear();
            }
            write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").unwrap();
            request_line
        });
        let run = Command::new(&argv[0])
            .args(&argv[1..])
            .env("LDAP2EXO__DAEMON__LISTEN", format!("0.0.0.0:{port}"))
            .output()
            .unwrap();
        assert_eq!(
            run.status.success(),
            healthy,
            "HEALTHCHECK against {status}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        // Unblocks the server if the check never connected; it then reads an empty request.
        let _ = std::net::TcpStream::connect(("127.0.0.1", port));
        assert_eq!(server.join().unwrap(), "GET /healthz HTTP/1.1\r\n");
    }

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let run = Command::new(&argv[0])
        .args(&argv[1..])
        .env("LDAP2EXO__DAEMON__LISTEN", format!("0.0.0.0:{port}"))
        .output()
        .unwrap();
    assert!(!run.status.success(), "healthy with nobody listening");
}
