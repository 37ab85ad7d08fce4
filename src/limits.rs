//! Every limit of the node facade in one place.

/// Ops queued for the projection applier before appenders wait (bounds memory and lag).
pub const APPLY_QUEUE_OPS_MAX: usize = 64 * 1024;
/// Most ops the applier takes from its queue into one projection transaction (queued appends
/// are applied together when it falls behind: one commit instead of one per append).
pub const APPLY_BATCH_OPS_MAX: usize = 16 * 1024;
