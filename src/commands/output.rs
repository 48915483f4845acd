//! Where reports go: a file or standard output, and what a failed write means.

use std::path::{Path, PathBuf};

use super::CommandError;

/// Writes a report to `output`, or to standard output. A failed write (a full disk, an
/// unwritable path, EIO) is [`CommandError::Write`] naming the file or "standard output", so
/// the run exits non-zero instead of leaving a truncated report behind. The one exception is
/// a closed pipe on standard output (`ldap2exo … | head`): the reader is gone, the report ends
/// quietly.
pub(super) fn write_out(
    output: Option<&Path>,
    report: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> Result<(), CommandError> {
    use std::io::Write;
    match output {
        Some(path) => {
            let written = std::fs::File::create(path).and_then(|f| {
                let mut w = std::io::BufWriter::new(f);
                report(&mut w)?;
                w.flush()?;
                // Surface errors the kernel reports only on sync (NFS, quota).
                w.get_ref().sync_data()
            });
            written.map_err(|source| CommandError::Write {
                path: path.to_owned(),
                source,
            })
        }
        None => {
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
            let err = write_out(Some(full), |w| w.write_all(&[b'x'; 100_000])).unwrap_err();
            assert!(err.to_string().contains("/dev/full"), "{err}");
            assert_eq!(err.exit(), Exit::Failed);
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/report.json");
        let err = write_out(Some(&missing), |w| w.write_all(b"{}")).unwrap_err();
        assert!(err.to_string().contains("report.json"), "{err}");
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
