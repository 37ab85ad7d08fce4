//! One JSON object per iteration: the scenario, its seed, each guarantee with whether it held,
//! and the figures measured.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One promise checked in an iteration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Guarantee {
    /// What is promised (snake_case).
    pub name: String,
    /// Whether it held.
    pub held: bool,
    /// What was seen.
    pub detail: String,
}

/// The outcome of one iteration of one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The variant this iteration ran (a kill point, a corruption target…).
    pub variant: String,
    /// Replays this iteration: `feral-chaos <scenario> --seed <seed> --iterations 1`.
    pub seed: u64,
    /// The iteration's number in this run.
    pub iteration: u32,
    /// True when every guarantee held (and the iteration was not skipped).
    pub held: bool,
    /// Why the iteration could not run here (held stays true; nothing was checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Every guarantee checked.
    pub guarantees: Vec<Guarantee>,
    /// What was measured.
    pub figures: Map<String, Value>,
    /// How long the iteration took.
    pub elapsed_ms: u64,
}

impl Report {
    /// An empty report for an iteration.
    pub fn new(scenario: &str, seed: u64, iteration: u32) -> Report {
        Report {
            scenario: scenario.to_string(),
            variant: String::new(),
            seed,
            iteration,
            held: true,
            skipped: None,
            guarantees: Vec::new(),
            figures: Map::new(),
            elapsed_ms: 0,
        }
    }

    /// Records a guarantee; returns whether it held.
    pub fn check(&mut self, name: &str, held: bool, detail: impl std::fmt::Display) -> bool {
        self.held &= held;
        self.guarantees.push(Guarantee {
            name: name.to_string(),
            held,
            detail: detail.to_string(),
        });
        held
    }

    /// Records a figure.
    pub fn figure(&mut self, name: &str, value: impl Into<Value>) {
        self.figures.insert(name.to_string(), value.into());
    }

    /// Marks the iteration as not runnable here, with the reason.
    pub fn skip(&mut self, why: impl Into<String>) {
        self.skipped = Some(why.into());
    }

    /// A line for people: the verdict, then each guarantee.
    pub fn human(&self) -> String {
        let verdict = match (&self.skipped, self.held) {
            (Some(why), _) => format!("SKIPPED ({why})"),
            (None, true) => "held".to_string(),
            (None, false) => "FAILED".to_string(),
        };
        let mut out = format!(
            "{} [{}] seed {} iteration {}: {verdict} in {} ms\n",
            self.scenario, self.variant, self.seed, self.iteration, self.elapsed_ms
        );
        for g in &self.guarantees {
            let mark = if g.held { "ok  " } else { "FAIL" };
            out.push_str(&format!("  {mark} {}: {}\n", g.name, g.detail));
        }
        if !self.figures.is_empty() {
            out.push_str(&format!("  figures: {}\n", Value::Object(self.figures.clone())));
        }
        out
    }
}
