//! `GET /metrics`: the Prometheus text format. Label values are escaped (a peer's address or
//! an error code never breaks a line), and every label value comes from a closed set or from
//! this node's own state.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{Api, ApiResult, blocking};

/// A label value escaped as the text format requires: backslash, double quote, newline.
pub(crate) fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The text of one metric family.
struct Family {
    out: String,
}

impl Family {
    fn add(&mut self, name: &str, kind: &str, help: &str, samples: &[(Option<(&str, &str)>, u64)]) {
        let _ = write!(self.out, "# HELP feral_{name} {help}\n# TYPE feral_{name} {kind}\n");
        for (label, value) in samples {
            match label {
                None => {
                    let _ = writeln!(self.out, "feral_{name} {value}");
                }
                Some((key, v)) => {
                    let _ =
                        writeln!(self.out, "feral_{name}{{{key}=\"{}\"}} {value}", escape_label(v));
                }
            }
        }
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.add(name, kind, help, &[(None, value)]);
    }
}

/// Prometheus text exposition of the node's counters and gauges.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
pub(super) async fn metrics(State(api): State<Api>) -> ApiResult<Response> {
    let node = api.service.node.clone();
    let status = blocking(move || node.status()).await?;
    let m = &api.service.metrics;
    let mut f = Family { out: String::new() };
    f.one(
        "ops_appended_total",
        "counter",
        "Ops appended through the API.",
        m.ops_appended.load(Ordering::Relaxed),
    );
    f.one(
        "ops_applied",
        "gauge",
        "Ops applied to the episodes projection.",
        status.projection.applied_lsn,
    );
    f.one(
        "damaged_records",
        "gauge",
        "Log records found damaged (scrub, check or a read); served and synced around, never sent.",
        status.damaged_lsns,
    );
    f.one(
        "ops_received_total",
        "counter",
        "Ops received by sync sessions this node started.",
        m.ops_received.load(Ordering::Relaxed),
    );
    f.one(
        "runtime_alive_tasks",
        "gauge",
        "Tasks alive in the node's async runtime (a leak shows as growth).",
        tokio::runtime::Handle::current().metrics().num_alive_tasks() as u64,
    );
    let sessions = m.sessions.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let samples: Vec<_> =
        sessions.iter().map(|(k, v)| (Some(("result", k.as_str())), *v)).collect();
    f.add(
        "sync_sessions_total",
        "counter",
        "Sync sessions this node started, by result.",
        &samples,
    );
    f.one(
        "sync_bytes_sent_total",
        "counter",
        "Sync stream bytes sent.",
        m.bytes_sent.load(Ordering::Relaxed),
    );
    f.one(
        "sync_bytes_received_total",
        "counter",
        "Sync stream bytes received.",
        m.bytes_received.load(Ordering::Relaxed),
    );
    let schedule = api.service.schedule();
    let per_peer = |value: &dyn Fn(&feral_transport::scheduler::PeerSchedule) -> Option<u64>| {
        schedule.iter().filter_map(|p| Some((p.addr.to_string(), value(p)?))).collect::<Vec<_>>()
    };
    let gauges: [PeerGauge<'_>; 5] = [
        (
            "peer_seconds_since_sync",
            "Seconds since the last successful sync per peer.",
            per_peer(&|p| Some(p.last_sync_secs_ago.unwrap_or(u64::MAX))),
        ),
        (
            "peer_sessions_in_flight",
            "Sync sessions running with the peer (0 or 1).",
            per_peer(&|p| Some(u64::from(p.in_flight))),
        ),
        (
            "peer_lacked_ops",
            "Ops this node held that the peer lacked, at the last successful session's start.",
            per_peer(&|p| p.peer_lacked),
        ),
        (
            "peer_ahead_ops",
            "Ops the peer held that this node lacked, at the last successful session's start.",
            per_peer(&|p| p.lacked),
        ),
        (
            "peer_failures",
            "Failed syncs in a row per peer.",
            per_peer(&|p| Some(u64::from(p.failures))),
        ),
    ];
    for (name, help, values) in &gauges {
        let samples: Vec<_> =
            values.iter().map(|(addr, v)| (Some(("peer", addr.as_str())), *v)).collect();
        f.add(name, "gauge", help, &samples);
    }
    let discovery = api.service.book.counters();
    f.one(
        "mdns_peers_refused_total",
        "counter",
        "mDNS advertisements refused: more peers than the cap, or a node id its certificate did not prove.",
        discovery.refused,
    );
    f.one("io_paused", "gauge", "1 while writes are refused.", u64::from(status.io_paused));
    f.one(
        "drift_refusals_total",
        "counter",
        "Remote clocks refused for drift.",
        status.drift_refusals,
    );
    f.one(
        "bad_signature_refusals_total",
        "counter",
        "Received ops refused because no good seal of their origin covered them.",
        status.bad_signature_refusals,
    );
    f.one(
        "origin_refusals_total",
        "counter",
        "Received ops refused because they would start an origin past a cap.",
        status.origin_refusals,
    );
    f.one(
        "conflicts",
        "gauge",
        "Origins quarantined because their key signed two different ops at one seq.",
        status.conflicts.len() as u64,
    );
    f.one(
        "conflict_refusals_total",
        "counter",
        "Received ops refused because their origin is quarantined at or before their seq.",
        status.conflict_refusals,
    );
    f.one(
        "certificate_refusals_total",
        "counter",
        "Received ops refused because no certificate of the cluster CA vouched for their new origin's key.",
        status.certificate_refusals,
    );
    f.one(
        "revoked_nodes",
        "gauge",
        "Nodes the cluster CA revoked, as learned here.",
        status.revoked.len() as u64,
    );
    f.one(
        "revoked_refusals_total",
        "counter",
        "Received ops refused because their node is revoked.",
        status.revoked_refusals,
    );
    f.one(
        "invalid_revocations_total",
        "counter",
        "Received revocation statements that did not verify here.",
        status.invalid_revocations,
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], f.out).into_response())
}

/// One per-peer gauge: name, help, and (peer, value) samples.
type PeerGauge<'a> = (&'a str, &'a str, Vec<(String, u64)>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_cannot_break_a_line() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(escape_label("127.0.0.1:7411"), "127.0.0.1:7411");
    }
}
