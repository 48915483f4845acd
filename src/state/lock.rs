//! Who may use the state store now: the run lock and the daemon lock.
//!
//! Two runs against one state store would plan from the same rows and create the same people
//! twice, so every run (sync, dry run, plan, apply, a daemon tick) holds the **run lock** for
//! its whole length, and a `daemon` holds the **daemon lock** for its whole life (a second
//! daemon is refused; a manual `sync` between two ticks is fine).
//!
//! Each lock is an advisory `flock(2)` on a file beside the database (`<state>.run.lock`,
//! `<state>.daemon.lock`). The kernel drops the lock when its process dies, however it dies,
//! so a lock left by a crash needs no clean-up and no guessing from timestamps: the next
//! process simply gets it. The file's content says who holds it (pid, host, since, what, and
//! for a daemon its next run) so that a refusal can name the holder. `flock` is reliable on
//! local file systems; keep the state store off NFS (SQLite says the same for its own locks).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock; `holder` says who, as far as its file tells.
    #[error("{what} is held by {holder}")]
    Busy { what: &'static str, holder: String },
    #[error("cannot use the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Who holds a lock, as written into its file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// Unix seconds.
    pub since: i64,
    /// `sync`, `sync --dry-run`, `plan`, `apply`, `daemon`.
    pub command: String,
    /// The daemon's next scheduled run (Unix seconds), when a daemon holds the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<i64>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`ldap2exo {}` (pid {} on host {}) since {}",
            self.command,
            self.pid,
            self.host,
            crate::plan::rfc3339(self.since)
        )
    }
}

/// Which lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Run,
    Daemon,
}

impl Kind {
    fn suffix(self) -> &'static str {
        match self {
            Kind::Run => "run.lock",
            Kind::Daemon => "daemon.lock",
        }
    }
    fn what(self) -> &'static str {
        match self {
            Kind::Run => "the state store's run lock (a run is in progress)",
            Kind::Daemon => "the state store's daemon lock (a daemon is running)",
        }
    }
}

/// The lock file of `kind` for the state store at `state`.
pub fn path(state: &Path, kind: Kind) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".");
    name.push(kind.suffix());
    PathBuf::from(name)
}

/// A held lock; dropping it releases the lock (the file stays, its content is stale then).
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
    holder: Holder,
}

/// How long an acquisition retries a lock that is busy. `status` takes a lock shared for a
/// moment to learn whether anybody holds it; a run starting in that moment must not be
/// refused for it.
const BRIEF_HOLD: Duration = Duration::from_millis(1500);

/// The size the holder's JSON is padded to (a long host name may exceed it; the file then
/// grows, which is as safe).
const HOLDER_SIZE: usize = 512;

impl Lock {
    /// Takes the lock of `kind` for `command`, or says who holds it.
    pub async fn acquire(
        state: &Path,
        kind: Kind,
        command: &str,
        now: i64,
    ) -> Result<Lock, LockError> {
        let path = path(state, kind);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let deadline = tokio::time::Instant::now() + BRIEF_HOLD;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(TryLockError::WouldBlock) => {
                    let holder = read_holder(&mut file)
                        .map(|h| h.to_string())
                        .unwrap_or_else(|| {
                            "another process (its lock file names nobody yet)".into()
                        });
                    return Err(LockError::Busy {
                        what: kind.what(),
                        holder,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
        }
        let holder = Holder {
            pid: std::process::id(),
            host: hostname(),
            since: now,
            command: command.to_owned(),
            next_run: None,
        };
        let mut lock = Lock { file, path, holder };
        lock.write()?;
        Ok(lock)
    }

    /// Records the daemon's next scheduled run in the lock file, for `status`.
    pub fn set_next_run(&mut self, next_run: Option<i64>) -> Result<(), LockError> {
        self.holder.next_run = next_run;
        self.write()
    }

    /// Writes the holder over the old content, padded with spaces to a fixed size, so the
    /// file never shrinks: a reader sees the old holder, the new one, or (in the instant of a
    /// write) a mix it cannot parse and reports as unknown; never an empty file.
    fn write(&mut self) -> Result<(), LockError> {
        let mut text = serde_json::to_string(&self.holder).expect("a holder serialises");
        let width = text.len().max(HOLDER_SIZE);
        text.extend(std::iter::repeat_n(' ', width - text.len()));
        let written = self
            .file
            .rewind()
            .and_then(|()| self.file.write_all(text.as_bytes()))
            .and_then(|()| self.file.flush());
        written.map_err(|source| LockError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// What [`holder`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    Free,
    By(Holder),
    /// Held, by a process whose lock file does not say (yet) who it is.
    ByUnknown,
}

/// Who holds the lock of `kind` now, without taking it for longer than a moment. A read-only
/// state directory (a monitoring user) is fine: the file is opened for reading only.
pub fn holder(state: &Path, kind: Kind) -> Result<Held, LockError> {
    let path = path(state, kind);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Held::Free),
        Err(source) => return Err(LockError::Io { path, source }),
    };
    match file.try_lock_shared() {
        // Nobody holds it exclusively: whatever the file says is stale.
        Ok(()) => {
            let _ = file.unlock();
            Ok(Held::Free)
        }
        Err(TryLockError::WouldBlock) => {
            Ok(read_holder(&mut file).map_or(Held::ByUnknown, Held::By))
        }
        Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim_end()).ok()
}

/// This machine's name (`gethostname(2)`, which works where `/proc/sys` is hidden, as under
/// the unit's `ProcSubset=pid`), for telling the operator where a lock holder runs.
pub fn hostname() -> String {
    hostname::get()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_holder_is_refused_with_the_first_named() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        let mut first = Lock::acquire(&state, Kind::Run, "sync", 1_700_000_000)
            .await
            .unwrap();
        let err = Lock::acquire(&state, Kind::Run, "daemon", 1_700_000_001)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(msg.contains("`ldap2exo sync`"), "{msg}");
        assert!(msg.contains("2023-11-14T22:13:20Z"), "{msg}");
        // The other lock is independent.
        Lock::acquire(&state, Kind::Daemon, "daemon", 1)
            .await
            .unwrap();

        first.set_next_run(Some(1_700_000_900)).unwrap();
        let Held::By(seen) = holder(&state, Kind::Run).unwrap() else {
            panic!("the holder is named")
        };
        assert_eq!(seen.next_run, Some(1_700_000_900));
        assert_eq!(seen.command, "sync");
        // A shorter holder leaves no tail of the longer one behind.
        first.set_next_run(None).unwrap();
        let Held::By(seen) = holder(&state, Kind::Run).unwrap() else {
            panic!("the holder is still named")
        };
        assert_eq!(seen.next_run, None);
        drop(first);
        assert_eq!(
            holder(&state, Kind::Run).unwrap(),
            Held::Free,
            "released on drop"
        );
        Lock::acquire(&state, Kind::Run, "sync", 2).await.unwrap();
    }

    #[test]
    fn no_lock_file_means_no_holder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            holder(&dir.path().join("s.db"), Kind::Daemon).unwrap(),
            Held::Free
        );
    }
}
