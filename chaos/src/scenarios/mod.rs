//! The scenarios, and the helper roles this binary plays for them.

mod apply;
mod corrupt;
pub(crate) mod disk_full;
mod handshake;
mod mdns;
mod partition;

use std::process::ExitCode;

use crate::Scenario;

/// Every scenario, in the order `all` runs them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "kill_peer_mid_handshake",
        quick_iterations: 3,
        iterations: 9,
        run: handshake::run,
    },
    Scenario { name: "corrupt_wal", quick_iterations: 3, iterations: 12, run: corrupt::run },
    Scenario { name: "disk_full", quick_iterations: 2, iterations: 6, run: disk_full::run },
    Scenario {
        name: "mdns_fail_static_fallback",
        quick_iterations: 2,
        iterations: 4,
        run: mdns::run,
    },
    Scenario {
        name: "kill_brain_mid_apply",
        quick_iterations: 6,
        iterations: 30,
        run: apply::kill_brain_mid_apply,
    },
    Scenario { name: "partition", quick_iterations: 1, iterations: 3, run: partition::run },
    Scenario {
        name: "crash_during_recovery",
        quick_iterations: 3,
        iterations: 15,
        run: apply::crash_during_recovery,
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Runs a helper role when `argv[1]` names one (`__fake-peer`, `__netns`); `None` otherwise.
pub fn helper(argv: &[String]) -> Option<ExitCode> {
    match argv.get(1).map(String::as_str) {
        Some("__fake-peer") => Some(crate::fake_peer::main(&argv[2..])),
        Some("__netns") => Some(mdns::netns_main(&argv[2..])),
        _ => None,
    }
}
