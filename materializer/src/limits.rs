//! Every limit of the materializer in one place.

/// Longest episode id in bytes (it is a redb key and the op's row_id).
pub const EPISODE_ID_BYTES_MAX: usize = 1024;
/// Most entries in `emotions` or `participants`.
pub const EPISODE_LIST_ITEMS_MAX: usize = 1024;
/// Ops applied per redb transaction during catch-up and rebuild.
pub const CATCH_UP_BATCH_OPS: usize = 4096;
/// Ops applied with non-durable redb commits before a durable one. A crash loses at most these
/// from the projection; they replay from the log on open.
pub const PROJECTION_DURABLE_EVERY_OPS: u64 = 262_144;
/// Largest `limit` a listing accepts.
pub const LIST_LIMIT_MAX: usize = 10_000;
/// redb's page cache for the projection (bounded like the index's: redb's default is 1 GiB).
pub const PROJECTION_CACHE_BYTES: usize = 64 * 1024 * 1024;
