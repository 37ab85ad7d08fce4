//! Named pause points for the chaos suite (`feral-chaos`).
//!
//! With `FERAL_FAILPOINT=<name>@<lsn>` in its environment, a process that reaches the point
//! `<name>` while handling the record with that LSN prints one line to stderr
//! (`feral failpoint <name>@<lsn> reached`) and stops there for good, so a supervisor can
//! SIGKILL it at that exact place: inside a group commit, between the log and the index,
//! inside a projection transaction. Unset (always, outside the chaos suite), a point costs one
//! load of an initialised `OnceLock`.
//!
//! Points: `log.torn_write` (half of that record's frame is written, nothing synced),
//! `log.synced` (its group commit is durable; index and projection not yet updated),
//! `index.commit` (the index transaction holding it is built, not committed),
//! `projection.apply` (the projection transaction is part way through, at that op),
//! `search.commit` (the search index is about to commit a range holding that op; the
//! projection may have committed it already).

use std::sync::OnceLock;

/// The environment variable that arms one point.
pub const ENV: &str = "FERAL_FAILPOINT";

static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();

fn armed() -> Option<&'static (String, u64)> {
    ARMED
        .get_or_init(|| {
            let text = std::env::var(ENV).ok()?;
            let (name, at) = text.split_once('@')?;
            Some((name.to_string(), at.trim().parse().ok()?))
        })
        .as_ref()
}

/// The LSN at which point `name` is armed, if it is.
pub fn armed_at(name: &str) -> Option<u64> {
    armed().filter(|(n, _)| n == name).map(|(_, at)| *at)
}

/// Stops here for good when `name` is armed at an LSN in `first..=last`.
pub fn reached(name: &str, first: u64, last: u64) {
    if let Some(at) = armed_at(name)
        && (first..=last).contains(&at)
    {
        pause(name, at);
    }
}

/// Announces the point on stderr and waits to be killed.
pub fn pause(name: &str, at: u64) -> ! {
    use std::io::Write;
    let mut err = std::io::stderr();
    let _ = writeln!(err, "feral failpoint {name}@{at} reached");
    let _ = err.flush();
    loop {
        std::thread::park();
    }
}
