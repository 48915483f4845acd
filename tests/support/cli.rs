//! Running the `ldap2exo` binary against a private slapd, and seeding its state store.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ldap2exo::desired::Kind;
use ldap2exo::plan::{Op, Plan};
use ldap2exo::state::{ManagedObject, Outcome, RunEnd, RunMode, RunScope, Stage, Store};

use super::slapd::{self, Slapd};

/// 2026-09-01T00:00:00Z: the clock of every test run unless a test moves it.
pub const T0: i64 = 1_788_220_800;
pub const DAY: i64 = 86_400;

/// One ldap2exo installation: a configuration file for a slapd, and a state store.
pub struct Install {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub state: PathBuf,
    pub now: i64,
    pub env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
    pub fn plan(&self) -> Plan {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not a plan ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Install {
    /// The state store's files (database, WAL, shared memory) as text: for checks that no
    /// secret was ever written to them.
    pub fn state_files_text(&self) -> String {
        let mut stored = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().contains("state.db") {
                stored.extend(std::fs::read(&path).unwrap());
            }
        }
        String::from_utf8_lossy(&stored).into_owned()
    }

    /// A configuration for `server` with the fixture's tenant settings.
    pub fn new(server: &Slapd) -> Install {
        Self::with_toml(&server.ldap_toml())
    }

    /// A configuration for `server` and the tenant emulator `emu`: ids, endpoints, its CA, a
    /// mailbox licence; the client secret goes through the environment, as in production.
    pub fn with_tenant(server: &Slapd, emu: &ldap2exo_emulator::Emulator) -> Install {
        let mut install = Self::new(server);
        let t = emu.tenant();
        let ca = install.dir.path().join("tenant-ca.pem");
        std::fs::write(&ca, emu.ca_pem()).expect("write the emulator CA");
        let base = emu.base_url();
        let extra = format!(
            "tenant_id = \"{}\"\nclient_id = \"{}\"\nmailbox_sku = \"EXCHANGESTANDARD\"\nusage_location = \"DE\"\n\
             ca_file = {:?}\n\n[tenant.endpoints]\nlogin = \"{base}\"\ngraph = \"{base}\"\nexchange = \"{base}\"\n",
            t.tenant_id,
            t.client_id,
            ca.display().to_string()
        );
        let text = std::fs::read_to_string(&install.config).unwrap();
        let text = text.replace(
            "upn_domain = \"example.edu\"\n",
            &format!("upn_domain = \"example.edu\"\n{extra}"),
        );
        std::fs::write(&install.config, text).unwrap();
        install.env.push((
            "LDAP2EXO__TENANT__CLIENT_SECRET".into(),
            t.client_secret.clone().expect("a secret"),
        ));
        install
    }

    pub fn with_toml(ldap_toml: &str) -> Install {
        let dir = tempfile::tempdir().expect("temporary directory");
        let state = dir.path().join("state.db");
        let config = dir.path().join("ldap2exo.toml");
        let text = format!(
            "{ldap_toml}\n[tenant]\naccepted_domains = [\"example.edu\", \"staff.example.edu\"]\n\
             onmicrosoft_domain = \"exampleedu.onmicrosoft.com\"\n\
             routing_domain = \"exampleedu.mail.onmicrosoft.com\"\nupn_domain = \"example.edu\"\n\n\
             [state]\npath = {:?}\n",
            state.display().to_string()
        );
        std::fs::write(&config, text).expect("write configuration");
        Install {
            dir,
            config,
            state,
            now: T0,
            env: vec![(
                "LDAP2EXO__LDAP__BIND_PASSWORD".into(),
                slapd::SERVICE_PASSWORD.into(),
            )],
        }
    }

    /// Runs `ldap2exo --config <config> ARGS` with the clock at `self.now`.
    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = Command::new(env!("CARGO_BIN_EXE_ldap2exo"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("LDAP2EXO_CONFIG")
            .env("LDAP2EXO_NOW", self.now.to_string())
            .env("LDAP2EXO_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run ldap2exo");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `sync --dry-run --format json ARGS`, expecting exit code `code`.
    pub fn dry_run(&self, code: i32, args: &[&str]) -> Plan {
        let mut all = vec!["sync", "--dry-run", "--format", "json"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        assert_eq!(
            run.code, code,
            "exit code of {all:?}\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        run.plan()
    }

    /// Records `plan` in the state store as if it had been applied successfully at
    /// `self.now`: what `apply` will do once it talks to the tenant.
    pub fn record_applied(&self, plan: &Plan) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(record_applied(&self.state, plan, self.now, 30));
    }
}

async fn record_applied(path: &Path, plan: &Plan, now: i64, grace_days: i64) {
    let store = Store::open(path).await.expect("open state");
    let run = store
        .begin_run(RunMode::Apply, RunScope::Full, "sync", now)
        .await
        .unwrap();
    for a in &plan.actions {
        let existing = store.object(&a.anchor).await.unwrap();
        let mut obj = existing.unwrap_or_else(|| ManagedObject {
            anchor: a.anchor.clone(),
            kind: a.kind,
            uid: a.uid.clone(),
            dn: a.dn.clone(),
            tenant_object_id: Some(format!("oid-{}", a.anchor)),
            attributes: Default::default(),
            stage: Stage::Active,
            created_at: now,
            updated_at: now,
            disabled_at: None,
            delete_due_at: None,
            deleted_at: None,
        });
        if a.op == Op::Create {
            obj.attributes.clear();
            obj.stage = Stage::Active;
            obj.deleted_at = None;
        }
        for (field, (_, after)) in &a.changes {
            if matches!(field, "accountEnabled" | "kind" | "anchor") {
                continue;
            }
            match after {
                Some(v) => obj.attributes.insert(field.parse().unwrap(), v.clone()),
                None => obj.attributes.remove(field),
            };
        }
        obj.uid = a.uid.clone();
        obj.dn = a.dn.clone();
        obj.updated_at = now;
        match a.op {
            Op::Convert => {
                obj.kind = if a.kind == Kind::Mailbox {
                    Kind::Mailbox
                } else {
                    Kind::MailUser
                }
            }
            Op::Disable => {
                obj.stage = Stage::Disabled;
                obj.disabled_at = Some(now);
                obj.delete_due_at = Some(now + grace_days * DAY);
            }
            Op::Enable => {
                obj.stage = Stage::Active;
                obj.disabled_at = None;
                obj.delete_due_at = None;
            }
            Op::Delete | Op::Purge => {
                obj.stage = Stage::Deleted;
                obj.deleted_at = Some(now);
            }
            Op::Create | Op::Update => {}
        }
        store.upsert_object(&obj).await.unwrap();
    }
    let end = RunEnd {
        outcome: Outcome::Ok,
        source_count: Some(plan.source.entries as u64),
        verdict: Some("ok"),
        summary: None,
        results: None,
        error: None,
    };
    store.finish_run(run, &end, now).await.unwrap();
    store.close().await;
}
