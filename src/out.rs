//! Standard output of the command line. A reader that goes away (`feral-node episodes |
//! head -1`) is not an error: once stdout is closed (EPIPE) the rest of the output is dropped
//! and the command ends normally. Any other write error (a full disk behind a redirect) is
//! remembered, and the command exits 1 naming it: output is never lost silently.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout's reader has gone: later output is dropped.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// The first write error other than a closed pipe.
static FAILED: Mutex<Option<String>> = Mutex::new(None);

/// Records the result of a write to stdout.
fn settle(result: io::Result<()>) {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => CLOSED.store(true, Ordering::Relaxed),
        Err(e) => {
            CLOSED.store(true, Ordering::Relaxed);
            let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Writes one line (what `println!` would) with the rules above.
pub(crate) fn line(args: fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = io::stdout().lock();
    settle(stdout.write_fmt(args).and_then(|()| stdout.write_all(b"\n")));
}

/// The first stdout write error other than a closed pipe, if any (the command then fails).
pub(crate) fn failure() -> Option<String> {
    FAILED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Stdout as a `Write` with the same rules (for bulk output such as `dump`).
#[derive(Debug, Default)]
pub(crate) struct Stdout;

impl Write for Stdout {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if !CLOSED.load(Ordering::Relaxed) {
            settle(io::stdout().lock().write_all(bytes));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !CLOSED.load(Ordering::Relaxed) {
            settle(io::stdout().lock().flush());
        }
        Ok(())
    }
}

/// `println!` through [`line`].
macro_rules! out {
    () => {
        $crate::out::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::out::line(format_args!($($arg)*))
    };
}

pub(crate) use out;
