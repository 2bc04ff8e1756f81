//! The application log: text or JSON lines, to stderr or a file that SIGUSR1 reopens.
//!
//! `log_format` (or `--log-format`) picks tracing-subscriber's text or JSON formatter;
//! `log_file` sends the lines to a file opened for appending (each line is one
//! `write`, so the master and its workers, which share the file, never interleave
//! within a line). logrotate's convention, as with nginx: rename the file, then send
//! SIGUSR1; the master (or the control thread) opens the path again and tells each
//! worker to do the same, and the old file is closed once nobody writes to it. The
//! open file is an `ArcSwap`, so a reopen takes no lock on the logging path.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwapOption;
use tracing_subscriber::fmt::MakeWriter;

/// `log_format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s.trim() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// The log file: its path and the open file (none: stderr).
struct Target {
    path: PathBuf,
    file: ArcSwapOption<File>,
}

static TARGET: OnceLock<Target> = OnceLock::new();

/// Where each log line goes.
#[derive(Clone, Copy)]
struct Sink;

/// One line's writer: the file open now, or stderr.
enum LineWriter {
    File(Arc<File>),
    Stderr(io::Stderr),
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LineWriter::File(f) => (&**f).write(buf),
            LineWriter::Stderr(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LineWriter::File(f) => (&**f).flush(),
            LineWriter::Stderr(e) => e.flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        match TARGET.get().and_then(|t| t.file.load_full()) {
            Some(f) => LineWriter::File(f),
            None => LineWriter::Stderr(io::stderr()),
        }
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Installs the global logger (once; later calls do nothing). A log file that cannot
/// be opened is an error (the caller exits 2 with it).
pub fn init(level: tracing::Level, format: LogFormat, file: Option<&Path>) -> io::Result<()> {
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&io::stderr());
    if let Some(path) = file {
        let f = open(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("log_file: cannot open {}: {e}", path.display()),
            )
        })?;
        let _ = TARGET.set(Target {
            path: path.to_path_buf(),
            file: ArcSwapOption::from_pointee(f),
        });
    }
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(Sink)
        .with_target(false)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}

/// Opens the log files again (after logrotate renamed them): this one and the
/// access log's; nothing for what goes to stderr.
pub fn reopen() {
    crate::access_log::reopen();
    let Some(t) = TARGET.get() else { return };
    match open(&t.path) {
        Ok(f) => {
            t.file.store(Some(Arc::new(f)));
            tracing::info!(path = %t.path.display(), "log file reopened");
        }
        Err(e) => tracing::error!(
            path = %t.path.display(),
            "cannot reopen the log file, still writing to the old one: {e}"
        ),
    }
}
