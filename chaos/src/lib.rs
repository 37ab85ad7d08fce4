//! feral-chaos: the chaos and recovery suites. Every scenario drives real `feral-node`
//! processes on loopback (SIGKILL, real tmpfs, real corruption of real files, a lossy UDP relay,
//! network namespaces) from a seed, and reports each guarantee as one JSON object per iteration.
//! See docs/failure-modes.md.

pub mod fake_peer;
pub mod harness;
pub mod proc;
pub mod relay;
pub mod report;
pub mod rng;
pub mod scenarios;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use report::Report;
pub use rng::Rng;

/// What one iteration of a scenario gets.
#[derive(Debug)]
pub struct Ctx {
    /// The `feral-node` binary.
    pub node_bin: PathBuf,
    /// This binary (re-run as a helper: a misbehaving peer, a namespace child).
    pub chaos_bin: PathBuf,
    /// The iteration's own directory.
    pub dir: PathBuf,
    /// Seeded choices.
    pub rng: Rng,
    /// The iteration's seed.
    pub seed: u64,
    /// A CI-sized run.
    pub quick: bool,
}

impl Ctx {
    /// A harness (cluster CA and stores) in the iteration's directory.
    pub fn harness(&self) -> anyhow::Result<harness::Harness> {
        harness::Harness::new(&self.node_bin, &self.dir)
    }
}

/// One scenario: its name, iterations for a quick and a full run, and its body.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// The name on the command line.
    pub name: &'static str,
    /// Iterations in a `--quick` run.
    pub quick_iterations: u32,
    /// Iterations in a default run.
    pub iterations: u32,
    /// The body: checks guarantees into the report; an error fails the iteration.
    pub run: fn(&mut Ctx, &mut Report) -> anyhow::Result<()>,
}

/// How to run scenarios.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The `feral-node` binary.
    pub node_bin: PathBuf,
    /// This binary.
    pub chaos_bin: PathBuf,
    /// Where iteration directories go.
    pub work: PathBuf,
    /// The first iteration's seed; iteration `i` uses `seed + i`.
    pub seed: u64,
    /// Iterations per scenario (`None`: the scenario's own count).
    pub iterations: Option<u32>,
    /// A CI-sized run.
    pub quick: bool,
    /// Keep every iteration's directory (failed ones are always kept).
    pub keep: bool,
}

/// Runs every iteration of `scenario`, handing each report to `emit`. Returns true when every
/// guarantee held.
pub fn run_scenario(
    scenario: &Scenario,
    config: &RunConfig,
    emit: &mut dyn FnMut(&Report),
) -> bool {
    let count = config.iterations.unwrap_or(if config.quick {
        scenario.quick_iterations
    } else {
        scenario.iterations
    });
    let mut all_held = true;
    for i in 0..count {
        let seed = config.seed.wrapping_add(u64::from(i));
        let dir = config.work.join(format!("{}-{seed}", scenario.name));
        let _ = std::fs::remove_dir_all(&dir);
        let mut ctx = Ctx {
            node_bin: config.node_bin.clone(),
            chaos_bin: config.chaos_bin.clone(),
            dir: dir.clone(),
            rng: Rng::new(seed),
            seed,
            quick: config.quick,
        };
        let mut report = Report::new(scenario.name, seed, i);
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (scenario.run)(&mut ctx, &mut report)
        }));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                report.check("ran_to_completion", false, format!("{e:#}"));
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                report.check("ran_to_completion", false, format!("the suite panicked: {what}"));
            }
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        if report.held && !config.keep {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            report.figure("run_dir", dir.display().to_string());
        }
        all_held &= report.held;
        emit(&report);
    }
    all_held
}

/// The value after `name` in a helper role's arguments (`--dir D`).
pub fn flag<'a>(args: &'a [String], name: &str) -> anyhow::Result<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .ok_or_else(|| anyhow::anyhow!("{name} is required"))
}

/// Where `feral-node` is: `$FERAL_NODE_BIN`, else beside this binary.
pub fn find_node_bin(chaos_bin: &Path) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FERAL_NODE_BIN") {
        return Some(PathBuf::from(path));
    }
    let beside = chaos_bin.parent()?.join("feral-node");
    beside.exists().then_some(beside)
}
