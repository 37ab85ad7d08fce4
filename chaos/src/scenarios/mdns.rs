//! mdns_fail_static_fallback: inside a fresh network namespace (never on the host's
//! interfaces), two nodes run with mDNS on while mDNS cannot work: loopback has no multicast
//! (nothing is ever found), or UDP 5353 is taken (the daemon cannot bind). With
//! FERAL_SYNC_PEERS set, each node runs, lists its peer as `static`, and sync succeeds.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::harness::{RunOpts, free_udp_port, last_json};
use crate::proc::Proc;
use crate::scenarios::disk_full::is_root;
use crate::{Ctx, Report, Rng, flag};

const VARIANTS: &[&str] = &["no_multicast", "port_5353_taken"];

pub fn run(ctx: &mut Ctx, report: &mut Report) -> Result<()> {
    let variant = VARIANTS[(ctx.seed % VARIANTS.len() as u64) as usize];
    report.variant = variant.to_string();
    if !is_root() {
        report.skip("a fresh network namespace (unshare -n) needs root; mDNS never runs on the host's interfaces");
        return Ok(());
    }
    std::fs::create_dir_all(&ctx.dir)?;
    let mut cmd = Command::new("unshare");
    cmd.arg("-n").arg(&ctx.chaos_bin).arg("__netns");
    cmd.args(["--variant", variant, "--seed", &ctx.seed.to_string()]);
    cmd.arg("--node-bin").arg(&ctx.node_bin).arg("--dir").arg(&ctx.dir);
    let mut p = Proc::spawn(cmd, format!("unshare -n feral-chaos __netns {variant}"))?;
    let status = p.wait(Instant::now() + Duration::from_secs(180))?;
    let inner: Report =
        last_json(&p.stdout.join("\n")).and_then(|v| serde_json::from_value(v).ok()).with_context(
            || format!("no report from the namespace ({status}); output:\n{}", p.tail()),
        )?;
    for g in inner.guarantees {
        report.check(&g.name, g.held, g.detail);
    }
    report.figures.extend(inner.figures);
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    let status = Command::new("ip").args(args).status().context("running ip")?;
    if !status.success() {
        bail!("ip {}: {status}", args.join(" "));
    }
    Ok(())
}

/// The part that runs inside the namespace; prints its report as one JSON line.
pub fn netns_main(args: &[String]) -> ExitCode {
    let run = || -> Result<Report> {
        let variant = flag(args, "--variant")?.to_string();
        let seed: u64 = flag(args, "--seed")?.parse()?;
        let mut ctx = Ctx {
            node_bin: PathBuf::from(flag(args, "--node-bin")?),
            chaos_bin: std::env::current_exe()?,
            dir: PathBuf::from(flag(args, "--dir")?),
            rng: Rng::new(seed),
            seed,
            quick: true,
        };
        let mut report = Report::new("mdns_fail_static_fallback", seed, 0);
        if let Err(e) = inside(&mut ctx, &mut report, &variant) {
            report.check("ran_to_completion", false, format!("{e:#}"));
        }
        Ok(report)
    };
    match run() {
        Ok(report) => {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("__netns: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn inside(ctx: &mut Ctx, report: &mut Report, variant: &str) -> Result<()> {
    // Only loopback exists here; make sure of it before any daemon starts.
    let links = std::fs::read_to_string("/proc/self/net/dev")?;
    let names: Vec<&str> =
        links.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
    if names != ["lo"] {
        bail!("not in a fresh namespace: interfaces {names:?}");
    }
    ip(&["link", "set", "lo", "up"])?;
    let _taken = match variant {
        "port_5353_taken" => {
            ip(&["link", "set", "lo", "multicast", "on"])?;
            // Bound without SO_REUSEADDR/SO_REUSEPORT: no one else can bind the mDNS port.
            Some(UdpSocket::bind("0.0.0.0:5353").context("taking UDP 5353")?)
        }
        _ => {
            ip(&["link", "set", "lo", "multicast", "off"])?;
            None
        }
    };
    let h = ctx.harness()?;
    let (a, b) = (h.node("a", None)?, h.node("b", None)?);
    let writes = ctx.rng.range(1, 50) as usize;
    h.append_episodes(&a, "a", writes)?;
    h.append_episodes(&b, "b", writes)?;
    let a_addr: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
    let b_addr: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
    let opts = |listen: SocketAddr, peer: SocketAddr| RunOpts {
        listen,
        mdns: true,
        env: vec![("FERAL_SYNC_PEERS".into(), peer.to_string())],
        ..Default::default()
    };
    let a_run = h.start(&a, &opts(a_addr, b_addr))?;
    let b_run = h.start(&b, &opts(b_addr, a_addr))?;
    let status = a_run.status()?;
    report.check(
        "node_running",
        status["node_id"].is_string(),
        "the API answers with mDNS failing",
    );
    let (_, peers) = a_run.get("/v1/peers")?;
    let list = peers.as_array().cloned().unwrap_or_default();
    let all_static = !list.is_empty() && list.iter().all(|p| p["source"] == "static");
    report.check(
        "peers_static",
        all_static && list.iter().any(|p| p["addr"] == b_addr.to_string()),
        format!("peers: {peers}"),
    );
    let result = a_run.sync_own(b_addr, Duration::from_secs(60))?;
    report.check("sync_succeeds", result["success"] == true, format!("{result}"));
    // Both directions converge (B's scheduler syncs with A too): wait for the episode counts.
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = (2 * writes) as u64;
    let counts = loop {
        let ca = a_run.status()?["projection"]["episodes"].as_u64().unwrap_or(0);
        let cb = b_run.status()?["projection"]["episodes"].as_u64().unwrap_or(0);
        if (ca == want && cb == want) || Instant::now() >= deadline {
            break (ca, cb);
        }
        if ca != want {
            let _ = a_run.sync_with(b_addr);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    report.check(
        "converged",
        counts == (want, want),
        format!("episodes A {} B {} of {want}", counts.0, counts.1),
    );
    a_run.stop()?;
    b_run.stop()?;
    Ok(())
}
