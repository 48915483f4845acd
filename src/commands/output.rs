//! Where reports go: a file or standard output, and what a failed write means.

use std::path::{Path, PathBuf};

use super::CommandError;

/// Where a report goes, opened before the run reads or applies anything.
pub(super) enum Destination {
    /// A regular file: the report is written to `staged` beside it and renamed over `path`
    /// only once complete, so a run that fails or is refused leaves the previous report (or
    /// the reviewed plan) as it was, never an empty or half file.
    File {
        path: PathBuf,
        file: std::fs::File,
        staged: Option<Staged>,
    },
    Stdout,
}

/// A temporary file beside the report; removed unless it was renamed into place.
pub(super) struct Staged {
    path: PathBuf,
    kept: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Opens `output` for writing (a temporary file beside it, or the device or pipe itself),
/// or standard output. A file that cannot be created is [`CommandError::Output`] (exit 2): a
/// command-line problem, found before anything is done, so that no run applies its changes
/// and then loses its report.
pub(super) fn open(output: Option<&Path>) -> Result<Destination, CommandError> {
    let Some(path) = output else {
        return Ok(Destination::Stdout);
    };
    let failed = |source| CommandError::Output {
        path: path.to_owned(),
        source,
    };
    // A device or a named pipe (`/dev/stdout`, a FIFO) is written to directly: renaming a
    // file over it would replace it.
    let special = std::fs::metadata(path).is_ok_and(|m| !m.is_file());
    if special {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(failed)?;
        return Ok(Destination::File {
            path: path.to_owned(),
            file,
            staged: None,
        });
    }
    let name = path.file_name().map_or_else(
        || std::ffi::OsString::from("report"),
        std::ffi::OsStr::to_owned,
    );
    let mut staged_name = std::ffi::OsString::from(".");
    staged_name.push(&name);
    staged_name.push(format!(".{}.tmp", std::process::id()));
    let staged = path.with_file_name(staged_name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&staged)
        .map_err(failed)?;
    Ok(Destination::File {
        path: path.to_owned(),
        file,
        staged: Some(Staged {
            path: staged,
            kept: false,
        }),
    })
}

/// Writes a report to `dest`. A failed write (a full disk, EIO) is [`CommandError::Write`]
/// naming the file or "standard output", so the run exits non-zero instead of leaving a
/// truncated report behind. The one exception is a closed pipe on standard output
/// (`ldap2exo … | head`): the reader is gone, the report ends quietly.
pub(super) fn write_out(
    dest: Destination,
    report: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), CommandError> {
    use std::io::Write;
    match dest {
        Destination::File { path, file, staged } => {
            let mut w = std::io::BufWriter::new(file);
            let written = report(&mut w).and_then(|()| {
                w.flush()?;
                // Surface errors the kernel reports only on sync (NFS, quota).
                w.get_ref().sync_data()
            });
            let placed = written.and_then(|()| match staged {
                Some(mut staged) => {
                    std::fs::rename(&staged.path, &path)?;
                    staged.kept = true;
                    Ok(())
                }
                None => Ok(()),
            });
            placed.map_err(|source| CommandError::Write { path, source })
        }
        Destination::Stdout => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = report(&mut out).and_then(|()| out.flush());
            stdout_outcome(written)
        }
    }
}

/// The outcome of writing a report to standard output: a closed pipe is fine, any other
/// error is the command's.
fn stdout_outcome(written: std::io::Result<()>) -> Result<(), CommandError> {
    match written {
        Err(e) if !is_broken_pipe(&e) => Err(CommandError::Write {
            path: PathBuf::from("standard output"),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// EPIPE, also when a serializer wrapped it in another error.
fn is_broken_pipe(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return true;
    }
    // `io::Error::source` skips the wrapped error itself; `get_ref` gives it.
    let mut next: Option<&(dyn std::error::Error + 'static)> = e
        .get_ref()
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return is_broken_pipe(io);
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod report_write_tests {
    use super::*;
    use crate::commands::Exit;

    #[test]
    fn a_full_disk_is_an_error_naming_the_file() {
        let full = Path::new("/dev/full");
        if full.exists() {
            let dest = open(Some(full)).unwrap();
            let err = write_out(dest, |w| w.write_all(&[b'x'; 100_000])).unwrap_err();
            assert!(err.to_string().contains("/dev/full"), "{err}");
            assert_eq!(err.exit(), Exit::Failed);
        }
    }

    #[test]
    fn an_uncreatable_file_is_a_usage_error_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/report.json");
        let Err(err) = open(Some(&missing)) else {
            panic!("opened {}", missing.display());
        };
        assert!(err.to_string().contains("report.json"), "{err}");
        assert_eq!(err.exit(), Exit::Usage);
    }

    #[test]
    fn the_previous_report_stays_until_a_new_one_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("last.txt");
        std::fs::write(&path, "yesterday's report").unwrap();
        // A run that fails after opening its output (LDAP down, the lock refused) drops it.
        drop(open(Some(&path)).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "yesterday's report"
        );
        let dest = open(Some(&path)).unwrap();
        write_out(dest, |w| w.write_all(b"today's report")).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "today's report");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn standard_output_errors_count_except_a_closed_pipe() {
        use std::io::{Error, ErrorKind};
        assert!(stdout_outcome(Ok(())).is_ok());
        assert!(stdout_outcome(Err(Error::from(ErrorKind::BrokenPipe))).is_ok());
        // Wrapped by a serializer.
        let wrapped = Error::other(Error::from(ErrorKind::BrokenPipe));
        assert!(stdout_outcome(Err(wrapped)).is_ok());
        let err = stdout_outcome(Err(Error::from_raw_os_error(28))).unwrap_err();
        assert!(err.to_string().contains("standard output"), "{err}");
        assert_eq!(err.exit(), Exit::Failed);
    }
}
