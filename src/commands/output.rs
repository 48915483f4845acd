//! Where reports go: a file or standard output, and what a failed write means.

use std::path::{Path, PathBuf};

use super::CommandError;

/// Where a report goes, opened before the run reads or applies anything.
pub(super) enum Destination {
    File { path: PathBuf, file: std::fs::File },
    Stdout,
}

/// Opens (creates) `output`, or standard output. A file that cannot be created is
/// [`CommandError::Output`] (exit 2): a command-line problem, found before anything is done,
/// so that no run applies its changes and then loses its report.
pub(super) fn open(output: Option<&Path>) -> Result<Destination, CommandError> {
    match output {
        Some(path) => std::fs::File::create(path)
            .map(|file| Destination::File {
                path: path.to_owned(),
                file,
            })
            .map_err(|source| CommandError::Output {
                path: path.to_owned(),
                source,
            }),
        None => Ok(Destination::Stdout),
    }
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
        Destination::File { path, file } => {
            let mut w = std::io::BufWriter::new(file);
            let written = report(&mut w).and_then(|()| {
                w.flush()?;
                // Surface errors the kernel reports only on sync (NFS, quota).
                w.get_ref().sync_data()
            });
            written.map_err(|source| CommandError::Write { path, source })
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
