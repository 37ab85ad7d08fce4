//! The limits of an op and of its decoding.

/// Largest op `data` field accepted.
pub const OP_DATA_BYTES_MAX: usize = 1024 * 1024;
/// Largest `table` or `row_id` string.
pub const OP_NAME_BYTES_MAX: usize = 1024;
/// Decode limit handed to bincode: no decoded op may allocate more than this (the log's
/// largest record payload).
pub const DECODE_BYTES_MAX: usize = 4 * 1024 * 1024;
