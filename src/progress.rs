//! Progress of long operations on a terminal: one indicatif bar per stage of a
//! [`feral_log::meter::Meter`], with its count, rate and time left, on stderr only and only
//! when stderr is a terminal, so scripts and pipes see nothing of it.

use std::io::IsTerminal;
use std::time::Duration;

use feral_log::meter::{Meter, Reading, Unit};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the meter is read and the bar redrawn.
pub(crate) const TICK: Duration = Duration::from_millis(100);

/// Whether progress is drawn at all: stderr is a terminal.
pub(crate) fn live() -> bool {
    std::io::stderr().is_terminal()
}

/// Runs `work` with a meter that is drawn on the terminal while it runs (stage by stage, a
/// finished stage's line kept with its final count). Off the terminal, `work` gets
/// [`Meter::off`] and nothing is drawn.
pub(crate) fn with_meter<T>(what: &str, work: impl FnOnce(&Meter) -> T) -> T {
    if !live() {
        return work(&Meter::off());
    }
    let meter = Meter::new();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let drawer = scope.spawn(|| {
            let mut shown: Option<(u64, ProgressBar)> = None;
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                if let Some(reading) = meter.read() {
                    draw(what, &reading, &mut shown);
                }
                if finished {
                    break;
                }
                std::thread::park_timeout(TICK);
            }
            if let Some((_, bar)) = shown {
                bar.finish();
            }
        });
        let out = work(&meter);
        done.store(true, std::sync::atomic::Ordering::Release);
        drawer.thread().unpark();
        let _ = drawer.join();
        out
    })
}

/// Shows `reading`: a new bar when its stage is new (the last one's line is finished).
fn draw(what: &str, reading: &Reading, shown: &mut Option<(u64, ProgressBar)>) {
    if shown.as_ref().is_none_or(|(stage, _)| *stage != reading.stage) {
        if let Some((_, bar)) = shown.take() {
            bar.finish();
        }
        let bar = bar_for(reading);
        bar.set_message(format!("{what}: {}", reading.name));
        *shown = Some((reading.stage, bar));
    }
    if let Some((_, bar)) = shown {
        if reading.total > 0 {
            bar.set_length(reading.total);
        }
        bar.set_position(reading.done);
    }
}

fn template(unit: Unit, known_total: bool) -> &'static str {
    match (unit, known_total) {
        (Unit::Bytes, true) => {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}, {eta} left"
        }
        (Unit::Bytes, false) => "{spinner} {msg} {bytes} {binary_bytes_per_sec} ({elapsed})",
        (Unit::Records, true) => {
            "{msg} [{bar:30}] {human_pos}/{human_len} records {per_sec}, {eta} left"
        }
        (Unit::Records, false) => "{spinner} {msg} {human_pos} records {per_sec} ({elapsed})",
    }
}

fn bar_for(reading: &Reading) -> ProgressBar {
    let template = template(reading.unit, reading.total > 0);
    let bar = if reading.total > 0 {
        ProgressBar::with_draw_target(Some(reading.total), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    };
    match ProgressStyle::with_template(template) {
        Ok(style) => bar.with_style(style.progress_chars("=> ")),
        // The templates are constants; a bad one shows the default bar, not nothing.
        Err(e) => {
            tracing::warn!(error = %e, "progress template refused");
            bar
        }
    }
}

/// A spinner with elapsed time for work that counts nothing it can report (a request the
/// running node serves); hidden off the terminal.
pub(crate) struct Spinner(ProgressBar);

impl Spinner {
    /// Starts a spinner for `what`.
    pub(crate) fn start(what: String) -> Spinner {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(what);
        bar.enable_steady_tick(TICK);
        Spinner(bar)
    }

    /// Changes the message (`what` and, say, a count).
    pub(crate) fn message(&self, message: String) {
        self.0.set_message(message);
    }

    /// Clears the spinner's line.
    pub(crate) fn finish(&self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_shape_has_a_valid_template() {
        for unit in [Unit::Bytes, Unit::Records] {
            for total in [0, 10] {
                let t = template(unit, total > 0);
                assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
                let reading = Reading { stage: 1, name: "x".into(), unit, done: 3, total };
                assert_eq!(bar_for(&reading).length(), (total > 0).then_some(total));
            }
        }
    }
}
