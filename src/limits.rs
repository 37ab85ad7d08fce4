//! Every limit of the node facade in one place.

/// Ops queued for the projection applier before appenders wait (bounds memory and lag).
pub const APPLY_QUEUE_OPS_MAX: usize = 64 * 1024;
