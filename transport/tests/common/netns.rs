//! Running a test inside a fresh network namespace, so mDNS never touches the host's
//! interfaces. Shared by the test suites that use mDNS (included by path).
#![allow(dead_code)]

use std::process::Command;

/// Set in the environment of the re-run inside the namespace.
pub const INSIDE: &str = "FERAL_IN_NETNS";

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// Re-runs the named ignored test of this binary inside `unshare -n` (as root; prints why and
/// returns otherwise) and asserts it passed.
pub fn run_in_netns(test: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        println!("SKIPPED: a network namespace needs root (CI runs as root)");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("unshare")
        .args(["-n", "--"])
        .arg(exe)
        .args(["--exact", test, "--ignored", "--nocapture"])
        .env(INSIDE, "1")
        .output()
        .expect("unshare");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "{test} in a netns: {}", String::from_utf8_lossy(&out.stderr));
}

/// True only inside the namespace [`run_in_netns`] creates: nothing but `lo` (read from
/// /proc/self/net/dev, which is per network namespace; /sys/class/net is not).
pub fn inside_fresh_netns() -> bool {
    let dev = std::fs::read_to_string("/proc/self/net/dev").unwrap_or_default();
    let names: Vec<&str> =
        dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    std::env::var_os(INSIDE).is_some() && names == ["lo"]
}

/// Runs `ip ARGS` and asserts it worked.
pub fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip");
    assert!(status.success(), "ip {args:?}");
}

/// Brings loopback up with multicast, for mDNS inside the namespace.
pub fn loopback_with_multicast() {
    ip(&["link", "set", "lo", "up"]);
    ip(&["link", "set", "lo", "multicast", "on"]);
}
