//! Progress of long operations on a terminal (stderr only, and only when it is a terminal, so
//! scripts and pipes see nothing of it).

use std::io::Write;
use std::time::{Duration, Instant};

/// How often progress is redrawn.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// One operation's progress line.
pub(crate) struct Progress {
    what: String,
    started: Instant,
    live: bool,
}

impl Progress {
    /// Starts a progress line for `what` (shown only on a terminal).
    pub(crate) fn start(what: String) -> Progress {
        // SAFETY: isatty has no preconditions; 2 is stderr.
        let live = unsafe { libc::isatty(2) } == 1;
        let p = Progress { what, started: Instant::now(), live };
        p.update("");
        p
    }

    /// Redraws the line with `detail`.
    pub(crate) fn update(&self, detail: &str) {
        if self.live {
            let secs = self.started.elapsed().as_secs_f64();
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[2K{} … {detail} ({secs:.1} s)", self.what);
            let _ = err.flush();
        }
    }

    /// Clears the line.
    pub(crate) fn finish(&self) {
        if self.live {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

/// Runs `work`, redrawing an elapsed-time line for it on a terminal while it runs.
pub(crate) fn with_progress<T>(what: String, work: impl FnOnce() -> T) -> T {
    let progress = Progress::start(what);
    if !progress.live {
        return work();
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::park_timeout(TICK);
                progress.update("");
            }
        });
        let out = work();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    });
    progress.finish();
    out
}
