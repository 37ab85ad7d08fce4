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
/// Most index entries one listing page passes over: a page whose filters pass few rows stops
/// here (with a cursor to go on) instead of reading the whole projection in one request.
pub const LIST_SCAN_ROWS_MAX: usize = 100_000;
/// redb's page cache for the projection (bounded like the index's, `INDEX_CACHE_BYTES` in
/// feral-log, which says why 32 MiB: redb's default is 1 GiB).
pub const PROJECTION_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Largest `limit` of one search page.
pub const SEARCH_LIMIT_MAX: usize = 1_000;
/// Deepest a search pages (hits skipped): a page past it costs a sort of that many hits, and a
/// query that needs it is better narrowed by its filters.
pub const SEARCH_OFFSET_MAX: usize = 10_000;
/// Most distinct words one search looks for.
pub const SEARCH_QUERY_TERMS_MAX: usize = 64;
/// Longest token indexed, in bytes (longer ones, such as base64 blobs, are dropped).
pub const SEARCH_TOKEN_BYTES_MAX: usize = 64;
/// The search writer's indexing memory (tantivy's smallest is 15 MB); a segment is written
/// out when it is used up. 24 MiB measured as fast as 32 MiB at 100,000 and 1,000,000
/// episodes (docs/performance.md), with a quarter less memory.
pub const SEARCH_WRITER_BYTES: usize = 24 * 1024 * 1024;
/// Search changes that make a commit due (besides the interval and any reader that needs them).
pub const SEARCH_COMMIT_EVERY_OPS: u64 = 100_000;
/// Longest a search change waits for a commit when no reader asks for it.
pub const SEARCH_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);
