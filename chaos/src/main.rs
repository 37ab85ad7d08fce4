//! `feral-chaos <scenario|all|list> [--seed N] [--iterations N] [--quick] [--json]`: runs the
//! chaos and recovery scenarios against real `feral-node` processes; exits 0 only when every
//! guarantee held. See docs/failure-modes.md.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use feral_chaos::scenarios::{SCENARIOS, find};
use feral_chaos::{RunConfig, find_node_bin, run_scenario};

#[derive(Debug, Parser)]
#[command(name = "feral-chaos", version, about = "Chaos and recovery suites for feral-node")]
struct Args {
    /// A scenario, `all`, or `list` to print them.
    scenario: String,
    /// The first iteration's seed (iteration i uses seed + i); printed when chosen at random.
    #[arg(long)]
    seed: Option<u64>,
    /// Iterations per scenario [default: each scenario's own count].
    #[arg(long)]
    iterations: Option<u32>,
    /// A CI-sized run (fewer iterations, smaller stores).
    #[arg(long)]
    quick: bool,
    /// One JSON object per iteration on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// The feral-node binary [default: $FERAL_NODE_BIN, else beside feral-chaos].
    #[arg(long)]
    node_bin: Option<PathBuf>,
    /// Where iteration directories go [default: $TMPDIR/feral-chaos-<seed>].
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep every iteration's directory (failed ones are always kept).
    #[arg(long)]
    keep: bool,
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    // Helper roles this binary plays for the scenarios (not for people).
    if let Some(code) = feral_chaos::scenarios::helper(&argv) {
        return code;
    }
    let args = Args::parse();
    if args.scenario == "list" {
        for s in SCENARIOS {
            println!("{}", s.name);
        }
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<_> = if args.scenario == "all" {
        SCENARIOS.iter().collect()
    } else {
        match find(&args.scenario) {
            Some(s) => vec![s],
            None => {
                eprintln!(
                    "feral-chaos: no scenario {:?}; `feral-chaos list` shows them",
                    args.scenario
                );
                return ExitCode::from(2);
            }
        }
    };
    let chaos_bin = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&argv[0]));
    let Some(node_bin) = args.node_bin.clone().or_else(|| find_node_bin(&chaos_bin)) else {
        eprintln!(
            "feral-chaos: feral-node not found beside {}; build it (cargo build --bin feral-node) \
             or pass --node-bin",
            chaos_bin.display()
        );
        return ExitCode::from(2);
    };
    let seed = args.seed.unwrap_or_else(random_seed);
    eprintln!("feral-chaos: seed {seed} (replay with --seed {seed})");
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("feral-chaos-{seed}")));
    let config = RunConfig {
        node_bin,
        chaos_bin,
        work: work.clone(),
        seed,
        iterations: args.iterations,
        quick: args.quick,
        keep: args.keep,
    };
    let mut all_held = true;
    let mut failed = Vec::new();
    for scenario in chosen {
        let held = run_scenario(scenario, &config, &mut |report| {
            let mut out = std::io::stdout();
            let _ = if args.json {
                writeln!(out, "{}", serde_json::to_string(report).unwrap_or_default())
            } else {
                write!(out, "{}", report.human())
            };
            let _ = out.flush();
        });
        if !held {
            failed.push(scenario.name);
        }
        all_held &= held;
    }
    // Only empty when every iteration held and none was kept.
    let _ = std::fs::remove_dir(&work);
    if all_held {
        eprintln!("feral-chaos: every guarantee held (seed {seed})");
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "feral-chaos: guarantees broken in {} (seed {seed}; directories kept under {})",
            failed.join(", "),
            work.display()
        );
        ExitCode::from(1)
    }
}
