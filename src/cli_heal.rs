//! `feral-node heal`: damaged log records healed from the peers through the running node, with
//! their count and rate on a terminal. The node heals by itself (each sync session's hello
//! asks the peer for its damaged records, and a segment whose damaged records all have a
//! verified copy is rewritten); the command makes it happen now and shows it: a check (which
//! finds the damage), sync rounds with every known peer until nothing damaged is left or a
//! round mends nothing, and a check again.

use std::time::{Duration, Instant};

use feral_log::meter::Unit;
use serde_json::{Value, json};

use crate::cli_remote::Remote;
use crate::out::out;
use crate::{Failure, Outcome, fail};

/// Rounds in a row that may mend nothing before the command stops waiting: the copies of one
/// segment can arrive over one session and the segment be rewritten at the next.
const IDLE_ROUNDS_MAX: u32 = 2;

/// The damaged records the running node's status lists, and their count.
fn damage(remote: &Remote) -> Result<(u64, Vec<Value>), Failure> {
    let status = remote.expect_ok("GET", "/v1/status", None)?;
    let ops = status["damage"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|range| range["ops"].as_array().cloned().unwrap_or_default())
        .map(|op| json!({"origin": op["origin"], "seq": op["seq"], "op_id": op["op_id"], "lsn": op["lsn"]}))
        .collect();
    Ok((status["damaged_lsns"].as_u64().unwrap_or(0), ops))
}

/// The node's check through its API (200 with its report, damaged or not).
fn check(remote: &Remote) -> Result<Value, Failure> {
    let (status, report) = remote.call("GET", "/v1/check", None)?;
    if report.get("ok").is_none() {
        let code = report["error"].as_str().unwrap_or("error");
        return Err(fail(1, format!("check through the running node: {status} {code}: {report}")));
    }
    Ok(report)
}

pub(crate) fn heal(remote: &Remote, within: u64, json: bool) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(within);
    let first = check(remote)?;
    let (before, _) = damage(remote)?;
    if before == 0 {
        if !json {
            out!("nothing damaged in the log to heal");
        }
        return crate::cli_remote::report(&first, json);
    }
    let (mut rounds, mut no_peers) = (0u32, false);
    crate::progress::with_meter("heal", |meter| {
        meter.stage("damaged records healed from peers", Unit::Records, before);
        let (mut left, mut idle) = (before, 0);
        while left > 0 && idle < IDLE_ROUNDS_MAX && Instant::now() < deadline {
            let results = remote.expect_ok("POST", "/v1/sync", None)?;
            rounds += 1;
            if results.as_array().is_none_or(Vec::is_empty) {
                no_peers = true;
                break;
            }
            let (now, _) = damage(remote)?;
            meter.add(left.saturating_sub(now));
            idle = if now < left { 0 } else { idle + 1 };
            left = now;
        }
        Ok::<_, Failure>(())
    })?;
    let after = check(remote)?;
    let (left, missing) = damage(remote)?;
    if json {
        let out = json!({
            "damaged_before": before, "healed": before.saturating_sub(left),
            "still_damaged": left, "missing": missing, "sync_rounds": rounds, "check": after,
        });
        crate::print_json(&out, false)?;
    } else if left == 0 {
        let verdict = if after["ok"] == true { "ok" } else { "still not ok" };
        out!(
            "healed {before} damaged records from peers in {rounds} sync rounds; check: {verdict}"
        );
    } else {
        let why = if no_peers {
            "no peer is known (add --peers or let mDNS find them)".to_string()
        } else if Instant::now() >= deadline {
            format!("gave up after {within} s")
        } else {
            "no peer reached holds them".to_string()
        };
        out!("{left} of {before} damaged records are not healed after {rounds} sync rounds: {why}");
        for op in &missing {
            out!(
                "  origin {} seq {} op {} (LSN {})",
                op["origin"].as_str().unwrap_or("?"),
                op["seq"],
                op["op_id"].as_str().unwrap_or("?"),
                op["lsn"]
            );
        }
    }
    let corrupt =
        after["error"].as_str().and_then(feral_log::Code::parse).is_some_and(|c| c.is_corruption());
    Ok(if left > 0 || corrupt {
        crate::EXIT_CORRUPTION
    } else if after["ok"] == true {
        0
    } else {
        1
    })
}
