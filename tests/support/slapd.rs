//! A private OpenLDAP server for tests: `Slapd::start(SlapdOptions::default())`.
//!
//! Each instance gets a temporary directory with a generated test CA and server certificate
//! (for `127.0.0.1` and `localhost`), a `slapd.conf`, and an MDB database loaded with
//! `slapadd` before the server starts. The server listens on two free loopback ports
//! (`ldap://` with StartTLS available, and `ldaps://`) and is killed, and its directory
//! removed, when the `Slapd` is dropped.
//!
//! It needs Debian's `slapd` and `ldap-utils`. When they are missing it panics: run the
//! README's test command, which installs them. It never skips.
//!
//! Set `LDAP2EXO_KEEP_SLAPD=1` to keep the directory (its path is printed) for debugging,
//! and `LDAP2EXO_SLAPD_TMPDIR` to put it somewhere other than the system temp directory
//! (for hosts where an AppArmor profile keeps slapd out of /tmp).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SLAPD: &str = "/usr/sbin/slapd";
pub const SLAPADD: &str = "/usr/sbin/slapadd";
pub const LDAPMODIFY: &str = "/usr/bin/ldapmodify";
pub const LDAPWHOAMI: &str = "/usr/bin/ldapwhoami";
pub const LDAPSEARCH: &str = "/usr/bin/ldapsearch";
/// For certificates rcgen cannot make (X.509 version 1).
pub const OPENSSL: &str = "openssl";

/// The suffix of the test directory.
pub const SUFFIX: &str = "dc=example,dc=edu";
/// Where the fixture people live.
pub const PEOPLE_DN: &str = "ou=people,dc=example,dc=edu";
/// Where [`generate_people`] puts its people.
pub const GENERATED_DN: &str = "ou=generated,dc=example,dc=edu";
pub const ROOT_DN: &str = "cn=admin,dc=example,dc=edu";
pub const ROOT_PASSWORD: &str = "admin-test-password";
/// The read-only account ldap2exo binds with (defined in `campus.ldif`).
pub const SERVICE_DN: &str = "cn=ldap2exo,ou=services,dc=example,dc=edu";
pub const SERVICE_PASSWORD: &str = "ldap2exo-test-password";
/// An account with a hard size limit that paging cannot get around (defined in `campus.ldif`).
pub const LIMITED_DN: &str = "cn=limited,ou=services,dc=example,dc=edu";
pub const LIMITED_PASSWORD: &str = "limited-test-password";

/// The campus fixture.
pub fn campus_ldif() -> PathBuf {
    fixtures_dir().join("campus.ldif")
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What a server holds and how it limits its clients.
#[derive(Debug, Clone)]
pub struct SlapdOptions {
    /// LDIF files loaded with `slapadd`, in order. The first must create the suffix
    /// entry and the service accounts (the campus fixture does).
    pub ldif: Vec<PathBuf>,
    /// LDIF text loaded after the files (for example [`generate_people`]).
    pub extra_ldif: Vec<String>,
    /// `limits` for the service account [`SERVICE_DN`]. The default allows 10 entries per
    /// unpaged search and any number through paging, so a read that does not page fails.
    pub service_limits: String,
    /// `limits` for [`LIMITED_DN`]: by default a hard limit of 20 that paging cannot bypass.
    pub limited_limits: String,
    /// Global `sizelimit` (everyone but the root DN and the accounts above).
    pub global_limits: String,
    /// Lines added to the database section of `slapd.conf`.
    pub extra_config: String,
    /// What kind of certificate the server presents (always signed by the test CA).
    pub certificate: ServerCertificate,
    /// Load the `syncprov` overlay (RFC 4533 content synchronisation, `ldap.content_sync`)
    /// on the database, with an index on `entryCSN`, as the README asks sites to. On by default.
    pub syncprov: bool,
    /// `syncprov-sessionlog`: with it, a refresh names the entries that left (the delete
    /// phase); without it, the server names those still present (the present phase).
    pub syncprov_sessionlog: Option<u32>,
}

/// The server certificate a test slapd presents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServerCertificate {
    /// X.509 v3 with subjectAltName `127.0.0.1` and `localhost` (made with rcgen).
    #[default]
    V3,
    /// X.509 version 1 (no extensions at all), made with the `openssl` command because
    /// rcgen only writes v3; old or hand-made server certificates still look like this.
    V1,
}

impl Default for SlapdOptions {
    fn default() -> Self {
        Self {
            ldif: vec![campus_ldif()],
            extra_ldif: Vec::new(),
            service_limits: "size.soft=10 size.hard=10 size.prtotal=unlimited".into(),
            limited_limits: "size.soft=20 size.hard=20 size.prtotal=20".into(),
            global_limits: "size.soft=500 size.hard=500 size.prtotal=unlimited".into(),
            extra_config: String::new(),
            certificate: ServerCertificate::default(),
            syncprov: true,
            syncprov_sessionlog: None,
        }
    }
}

impl SlapdOptions {
    /// The campus fixture plus the entries of `ldif`, all loaded with `slapadd -q` into the
    /// fresh database before slapd is started (slapadd must never write to a database a
    /// running slapd has open). Unlike an LDAP add, `slapadd -q` stores an entry as the LDIF
    /// spells it: an attribute whose lines are not adjacent is kept as two instances, which
    /// slapd then returns as two attributes of the same name, as on real directories.
    pub fn with_ldif(ldif: &str) -> Self {
        Self {
            extra_ldif: vec![ldif.to_owned()],
            ..Self::default()
        }
    }

    /// The campus fixture plus `n` generated people under [`GENERATED_DN`].
    pub fn with_generated(n: usize, seed: u64) -> Self {
        Self {
            extra_ldif: vec![generate_people(n, seed)],
            ..Self::default()
        }
    }
}

/// A running private slapd. Dropping it stops the server and removes its directory.
pub struct Slapd {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    ldap_port: u16,
    ldaps_port: u16,
    pub base_dn: String,
}

impl Slapd {
    /// Generates certificates and configuration, loads the LDIF, starts slapd and waits
    /// until it answers an anonymous bind. Panics with the reason when anything fails.
    pub fn start(options: SlapdOptions) -> Slapd {
        for tool in [SLAPD, SLAPADD, LDAPMODIFY, LDAPWHOAMI] {
            if !Path::new(tool).exists() {
                panic!(
                    "\n\n*** {tool} is missing: the LDAP integration tests need Debian's `slapd` and \
                     `ldap-utils`.\n*** Run the README's test command (it installs them), or \
                     `apt-get install -y slapd ldap-utils`.\n\n"
                );
            }
        }
        let dir = match std::env::var_os("LDAP2EXO_SLAPD_TMPDIR") {
            Some(base) => tempfile::Builder::new()
                .prefix("ldap2exo-slapd-")
                .tempdir_in(base),
            None => tempfile::Builder::new().prefix("ldap2exo-slapd-").tempdir(),
        }
        .expect("create a temporary directory for slapd");
        let path = dir.path().to_owned();
        let db = path.join("db");
        std::fs::create_dir(&db).expect("create the slapd database directory");

        write_certificates(&path, options.certificate);
        let conf = path.join("slapd.conf");
        std::fs::write(&conf, slapd_conf(&path, &options)).expect("write slapd.conf");

        let mut ldifs = options.ldif.clone();
        for (i, text) in options.extra_ldif.iter().enumerate() {
            let file = path.join(format!("extra-{i}.ldif"));
            std::fs::write(&file, text).expect("write extra LDIF");
            ldifs.push(file);
        }
        for ldif in &ldifs {
            let out = Command::new(SLAPADD)
                .args(["-q", "-f"])
                .arg(&conf)
                .arg("-l")
                .arg(ldif)
                .output()
                .expect("run slapadd");
            if !out.status.success() {
                panic!(
                    "slapadd -l {} failed ({}):\n{}{}{}",
                    ldif.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    apparmor_hint(&path)
                );
            }
        }

        let mut slapd = Slapd {
            child: None,
            dir: Some(dir),
            path: path.clone(),
            ldap_port: 0,
            ldaps_port: 0,
            base_dn: SUFFIX.to_owned(),
        };
        // A free port can be taken between choosing it and slapd binding it: retry.
        let mut last_log = String::new();
        for _ in 0..5 {
            let (p1, p2) = (free_port(), free_port());
            if p1 == p2 {
                continue;
            }
            let log = std::fs::File::create(path.join("slapd.log")).expect("create slapd.log");
            let urls = format!("ldap://127.0.0.1:{p1}/ ldaps://127.0.0.1:{p2}/");
            let child = Command::new(SLAPD)
                .arg("-f")
                .arg(&conf)
                .args(["-h", &urls, "-d", "0"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {SLAPD}: {e}"));
            slapd.child = Some(child);
            slapd.ldap_port = p1;
            slapd.ldaps_port = p2;
            if slapd.wait_ready(Duration::from_secs(20)) {
                return slapd;
            }
            if let Some(mut c) = slapd.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            last_log = std::fs::read_to_string(path.join("slapd.log")).unwrap_or_default();
        }
        panic!(
            "slapd did not come up (5 attempts); last log:\n{last_log}{}",
            apparmor_hint(&path)
        );
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            let ok = Command::new(LDAPWHOAMI)
                .args(["-x", "-o", "nettimeout=2", "-H", &self.ldap_url()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `ldap://127.0.0.1:<port>` (plain; StartTLS available).
    pub fn ldap_url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.ldap_port)
    }

    /// `ldaps://127.0.0.1:<port>`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// `ldap://localhost:<port>`: the certificate also names `localhost`.
    pub fn ldap_url_localhost(&self) -> String {
        format!("ldap://localhost:{}", self.ldap_port)
    }

    /// The PEM file of the test CA that signed the server certificate.
    pub fn ca_pem_path(&self) -> PathBuf {
        self.path.join("ca.pem")
    }

    /// The server's temporary directory (config, certificates, database, log).
    pub fn dir(&self) -> &Path {
        &self.path
    }

    pub fn people_dn(&self) -> &'static str {
        PEOPLE_DN
    }

    pub fn service_dn(&self) -> &'static str {
        SERVICE_DN
    }

    pub fn service_password(&self) -> &'static str {
        SERVICE_PASSWORD
    }

    pub fn root_dn(&self) -> &'static str {
        ROOT_DN
    }

    pub fn root_password(&self) -> &'static str {
        ROOT_PASSWORD
    }

    /// An `[ldap]` configuration for this server as INTERFACE.md shows it: StartTLS with
    /// the test CA, the service account, base `ou=people`, the default mapping, and the
    /// example hidden/disabled rules.
    pub fn ldap_config(&self) -> ldap2exo::config::LdapConfig {
        ldap2exo::config::LdapConfig {
            url: self.ldap_url(),
            starttls: true,
            ca_file: Some(self.ca_pem_path()),
            bind_dn: Some(SERVICE_DN.into()),
            bind_password_file: None,
            bind_password: Some(ldap2exo::secret::Secret::new(SERVICE_PASSWORD.into())),
            base_dn: PEOPLE_DN.into(),
            scope: ldap2exo::config::Scope::Sub,
            filter: "(&(objectClass=inetOrgPerson)(mail=*))".into(),
            page_size: 500,
            timeout_seconds: 30,
            content_sync: false,
            full_reconcile_interval_hours: 24,
            attributes: Default::default(),
            rules: ldap2exo::config::Rules {
                hidden_filter: Some("(employeeType=service)".into()),
                disabled_filter: Some("(shadowExpire=1)".into()),
            },
        }
    }

    /// The `[ldap]` section of a TOML configuration for this server (same values as
    /// [`Slapd::ldap_config`]). The password is not in it: give it through
    /// `LDAP2EXO__LDAP__BIND_PASSWORD` (see [`SERVICE_PASSWORD`]) or `bind_password_file`.
    pub fn ldap_toml(&self) -> String {
        format!(
            "[ldap]\nurl = \"{}\"\nstarttls = true\nca_file = {:?}\nbind_dn = \"{SERVICE_DN}\"\n\
             base_dn = \"{PEOPLE_DN}\"\nscope = \"sub\"\nfilter = \"(&(objectClass=inetOrgPerson)(mail=*))\"\n\
             page_size = 500\n\n[ldap.rules]\nhidden_filter = \"(employeeType=service)\"\n\
             disabled_filter = \"(shadowExpire=1)\"\n",
            self.ldap_url(),
            self.ca_pem_path().display().to_string(),
        )
    }

    /// Adds the entries of `ldif` (plain entries, no `changetype`) as the root DN.
    /// Panics when `ldapmodify` fails.
    pub fn add_ldif(&self, ldif: &str) {
        if let Err(e) = self.ldapmodify(ldif, true) {
            panic!("ldapmodify -a failed: {e}\n--- LDIF ---\n{ldif}");
        }
    }

    /// Applies change records (`changetype: modify|add|delete|modrdn`) as the root DN.
    /// Panics when `ldapmodify` fails.
    pub fn modify(&self, ldif: &str) {
        if let Err(e) = self.ldapmodify(ldif, false) {
            panic!("ldapmodify failed: {e}\n--- LDIF ---\n{ldif}");
        }
    }

    /// Runs `ldapmodify` as the root DN with ManageDsaIT (so referral objects are changed
    /// themselves, not followed) and the Relax Rules control (so an added entry may carry
    /// its own `entryUUID`). `add` adds plain entries (`-a`).
    pub fn ldapmodify(&self, ldif: &str, add: bool) -> Result<String, String> {
        let mut cmd = Command::new(LDAPMODIFY);
        // -M: ManageDsaIT; -e relax: lets an add set entryUUID, so added people have fixed anchors.
        cmd.args([
            "-x",
            "-M",
            "-e",
            "relax",
            "-H",
            &self.ldap_url(),
            "-D",
            ROOT_DN,
            "-w",
            ROOT_PASSWORD,
        ]);
        if add {
            cmd.arg("-a");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {LDAPMODIFY}: {e}"))?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ldif.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("{}: {text}", out.status))
        }
    }

    /// Deletes one entry as the root DN.
    pub fn delete(&self, dn: &str) {
        self.modify(&format!("dn: {dn}\nchangetype: delete\n"));
    }

    /// Stops the server now (dropping does the same).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take()
            && std::env::var_os("LDAP2EXO_KEEP_SLAPD").is_some()
        {
            eprintln!("keeping slapd directory {}", dir.keep().display());
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

fn apparmor_hint(dir: &Path) -> String {
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y");
    if enabled {
        format!(
            "\nAppArmor is enabled: its slapd profile may deny {}. Look for `apparmor=\"DENIED\"` \
             in the kernel log and set LDAP2EXO_SLAPD_TMPDIR to a directory slapd may use.",
            dir.display()
        )
    } else {
        String::new()
    }
}

/// Writes `ca.pem`, `ca.key`, `server.pem` and `server.key` into `dir`.
fn write_certificates(dir: &Path, shape: ServerCertificate) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "ldap2exo test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).expect("self-sign the CA");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = server
        .signed_by(&key, &issuer)
        .expect("sign the server certificate");

    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
    std::fs::write(dir.join("ca.key"), issuer.key().serialize_pem()).expect("write ca.key");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write server.pem");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write server.key");
    if shape == ServerCertificate::V1 {
        write_v1_certificate(dir);
    }
}

/// Replaces `server.pem` with an X.509 version 1 certificate for the same key, signed by the
/// same test CA: everything about it is right except its version.
fn write_v1_certificate(dir: &Path) {
    let openssl = |args: &[&str]| {
        let out = Command::new(OPENSSL)
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{OPENSSL}` ({e}): the X.509 v1 certificate test needs it; \
                     run the README's test command (it installs openssl)"
                )
            });
        assert!(
            out.status.success(),
            "openssl {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    openssl(&[
        "req",
        "-new",
        "-key",
        "server.key",
        "-subj",
        "/CN=127.0.0.1",
        "-out",
        "server.csr",
    ]);
    // `x509 -req` without an extension file signs a certificate without extensions, which
    // OpenSSL 3.0 writes as version 1; later OpenSSL versions may add key identifiers (and
    // so version 3) by default, hence the check below instead of trusting it.
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "7",
        "-days",
        "3650",
        "-out",
        "server.pem",
    ]);
    let text = openssl(&["x509", "-in", "server.pem", "-noout", "-text"]);
    assert!(
        text.contains("Version: 1 (0x0)"),
        "openssl did not make a version 1 certificate:\n{text}"
    );
}

fn slapd_conf(dir: &Path, o: &SlapdOptions) -> String {
    let d = dir.display();
    let schema = fixtures_dir().join("schema/ldap2exo-mail.schema");
    let mut s = String::new();
    for name in ["core", "cosine", "nis", "inetorgperson", "misc"] {
        writeln!(s, "include /etc/ldap/schema/{name}.schema").unwrap();
    }
    writeln!(s, "include \"{}\"", schema.display()).unwrap();
    write!(
        s,
        r#"
pidfile "{d}/slapd.pid"
argsfile "{d}/slapd.args"
modulepath /usr/lib/ldap
moduleload back_mdb
{syncprov_module}loglevel 0

TLSCACertificateFile "{d}/ca.pem"
TLSCertificateFile "{d}/server.pem"
TLSCertificateKeyFile "{d}/server.key"

sizelimit {global}

database mdb
maxsize 1073741824
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory "{d}/db"
index objectClass eq
index uid,mail eq
index entryUUID eq
# What the rules of config/fixture.toml test: each rule is a search of its own (README).
index employeeType,shadowExpire eq

limits dn.exact="{SERVICE_DN}" {service}
limits dn.exact="{LIMITED_DN}" {limited}

access to attrs=userPassword
  by anonymous auth
  by * none
access to *
  by * read
{extra}
{syncprov_overlay}
"#,
        syncprov_module = if o.syncprov {
            "moduleload syncprov\n"
        } else {
            ""
        },
        syncprov_overlay = match (o.syncprov, o.syncprov_sessionlog) {
            (false, _) => String::new(),
            (true, log) => format!(
                "index entryCSN eq\noverlay syncprov\nsyncprov-checkpoint 100 5\n{}",
                log.map(|n| format!("syncprov-sessionlog {n}\n"))
                    .unwrap_or_default()
            ),
        },
        global = o.global_limits,
        service = o.service_limits,
        limited = o.limited_limits,
        extra = o.extra_config,
    )
    .unwrap();
    s
}

/// A small deterministic random number generator (xorshift64*), so generated data
/// depends only on the seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const GIVEN: &[&str] = &[
    "Anna", "Ben", "Chloé", "Daniel", "Emma", "Farah", "George", "Hanna", "Irina", "Jonas",
    "Kevin", "Laura", "Mei", "Noah", "Óscar", "Paula", "Quentin", "Rasmus", "Sofía", "Thanh",
    "Ute", "Vlad", "William", "Yuki", "Zoe", "Łukasz", "Jürgen", "Seán", "An", "Kelechi",
];
const SURNAME: &[&str] = &[
    "Anderson",
    "Brown",
    "Chen",
    "Davis",
    "Evans",
    "Fernández",
    "García",
    "Hussain",
    "Ivanova",
    "Jensen",
    "Kim",
    "Lee",
    "Müller",
    "Nguyễn",
    "Okafor",
    "Patel",
    "Rossi",
    "Schmidt",
    "Taylor",
    "Wiśniewski",
    "O'Brien",
    "Wong",
    "Zhang",
    "Kowalski",
    "Dubois",
    "Popescu",
];
const DEPARTMENTS: &[&str] = &[
    "Physics",
    "Chemistry",
    "Biology",
    "Computer Science",
    "Mathematics",
    "History",
    "Law",
    "Medicine",
    "Economics",
    "Music",
    "Architecture",
    "Linguistics",
];

/// LDIF for `n` valid, distinct people under [`GENERATED_DN`] (the container entry first),
/// deterministic for a given `seed`: unique uids (`g<seed>x<i>`), unique `entryUUID`s, mail
/// in `example.edu` (students) or `staff.example.edu` (staff), some aliases, some forwards
/// into the tenant (migrated), some external forwards, unicode names. Load it once per
/// server (the container would clash); use another seed for a different population.
pub fn generate_people(n: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut s = String::with_capacity(n * 600 + 200);
    writeln!(
        s,
        "dn: {GENERATED_DN}\nobjectClass: top\nobjectClass: organizationalUnit\nou: generated\n\
         entryUUID: {}\n",
        generated_uuid(seed, 0xffff_ffff_ffff)
    )
    .unwrap();
    for i in 0..n {
        let given = rng.pick(GIVEN);
        let sn = rng.pick(SURNAME);
        let staff = rng.chance(25);
        let uid = format!("g{seed}x{i:06}");
        let domain = if staff {
            "staff.example.edu"
        } else {
            "example.edu"
        };
        writeln!(s, "dn: uid={uid},{GENERATED_DN}").unwrap();
        for oc in [
            "top",
            "person",
            "organizationalPerson",
            "inetOrgPerson",
            "posixAccount",
            "shadowAccount",
            "mailRecipientExt",
        ] {
            writeln!(s, "objectClass: {oc}").unwrap();
        }
        writeln!(
            s,
            "uid: {uid}\ncn: {given} {sn}\nsn: {sn}\ngivenName: {given}\ndisplayName: {given} {sn}"
        )
        .unwrap();
        writeln!(s, "mail: {uid}@{domain}").unwrap();
        if rng.chance(30) {
            writeln!(s, "mailAlternateAddress: {uid}.alias@{domain}").unwrap();
        }
        if rng.chance(10) {
            writeln!(
                s,
                "mailForwardingAddress: {uid}@exampleedu.mail.onmicrosoft.com"
            )
            .unwrap();
        } else if rng.chance(3) {
            writeln!(s, "mailForwardingAddress: {uid}.home@gmail.com").unwrap();
        }
        writeln!(
            s,
            "employeeType: {}\no: Example University\nou: {}\ntitle: {}",
            if staff { "staff" } else { "student" },
            rng.pick(DEPARTMENTS),
            if staff { "Lecturer" } else { "Student" }
        )
        .unwrap();
        if staff {
            writeln!(s, "telephoneNumber: +1 617 555 {:04}", rng.next() % 10_000).unwrap();
        }
        writeln!(
            s,
            "uidNumber: {}\ngidNumber: {}\nhomeDirectory: /home/{uid}\nloginShell: /bin/bash",
            200_000 + i,
            if staff { 5000 } else { 6000 }
        )
        .unwrap();
        writeln!(s, "entryUUID: {}\n", generated_uuid(seed, i as u64)).unwrap();
    }
    s
}

/// The `entryUUID` [`generate_people`] gives person `i` of `seed`.
pub fn generated_uuid(seed: u64, i: u64) -> String {
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        seed as u32,
        (seed >> 32) as u16,
        i & 0xffff_ffff_ffff
    )
}
