//! kill_peer_mid_handshake (lands next).
use crate::{Ctx, Report};
pub fn run(_ctx: &mut Ctx, report: &mut Report) -> anyhow::Result<()> {
    report.skip("not yet");
    Ok(())
}
