//! Every limit of the log in one place: sizes in bytes, counts, and durations, units last.

/// Default capacity of one segment file, header and footer included.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;
/// Smallest segment a log may be created with (tests seal many small segments).
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// Largest segment a log may be created with; frame offsets stay well inside `u32`.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
pub use feral_types::limits::{DECODE_BYTES_MAX, OP_DATA_BYTES_MAX, OP_NAME_BYTES_MAX};
/// Largest encoded op payload one record may carry (what the codec decodes at most).
pub const RECORD_PAYLOAD_BYTES_MAX: u32 = DECODE_BYTES_MAX as u32;
/// Largest queue of records a group-commit leader keeps allocated for the next batch.
pub const GROUP_RECORDS_MAX: usize = 64 * 1024;
/// Largest frame buffer the writer keeps allocated between batches.
pub const BUFFER_BYTES_KEPT: usize = 16 * 1024 * 1024;
/// Ops indexed with non-durable redb commits before a durable one: bounds the catch-up on open
/// after a crash (262,144 records replay in about 0.5 s). A durable redb commit also rewrites
/// allocator state that grows with the file, so doing it every 8192 ops cost the append up to
/// 40 % at 1024 ops per sync once the index had grown.
pub const INDEX_DURABLE_EVERY_OPS: u64 = 262_144;
/// Capacity the in-flight maps keep once drained.
pub const INFLIGHT_OPS_KEPT: usize = 16 * 1024;
/// Most ops one `append_batch` or `ingest` call takes (a larger call is refused whole with
/// `batch_too_large`, before anything is written). A quarter of [`INFLIGHT_OPS_MAX`], so one
/// call never holds the in-flight set alone; a sync frame holds at most 1,024 ops, and an API
/// body of 4 MiB rarely more than 30,000 episodes.
pub const SUBMIT_OPS_MAX: usize = 64 * 1024;
/// Durable ops waiting for the indexer before appenders are made to wait (backpressure).
pub const INFLIGHT_OPS_MAX: usize = 256 * 1024;
/// Fewest consecutive ops stored as one run entry in the index (fewer get an entry each).
pub const INDEX_RUN_OPS_MIN: usize = 4;
/// Most ops in one run entry (bounds the entry at about 176 KiB).
pub const INDEX_RUN_OPS_MAX: usize = 4096;
/// Ops replayed into the index per redb transaction during catch-up and rebuild.
pub const INDEX_REPLAY_BATCH_OPS: usize = 4096;
/// Default bound on how far a remote HLC may run ahead of local physical time (`max_drift_secs`
/// in the config). Five minutes let a forged edit win over a real one made minutes later; a
/// minute covers the clock skew of machines on one LAN that run NTP.
pub const HLC_DRIFT_MS_MAX_DEFAULT: u64 = 60 * 1000;
/// Bytes read at once while scanning a segment.
pub const SCAN_CHUNK_BYTES: usize = 1024 * 1024;
/// Bytes read at once for a point read by op_id (a frame is usually well under this; a larger
/// one is read whole). A scan-sized read per get cost 60 µs.
pub const POINT_READ_CHUNK_BYTES: usize = 4096;
/// redb's page cache for the index. redb's default lets it grow to 1 GiB as a large store is
/// read or written (a node receiving 1,000,000 ops peaked at 465 MiB resident). 32 MiB each
/// for index and projection, with the allocator settings of `feral-node`, holds that node at
/// 234 MiB (64 MiB each: 360 MiB, or 254 MiB with the allocator purging at once, 27 % slower),
/// for about 10 % of local ingest speed in one A/B pair of runs (docs/performance.md).
pub const INDEX_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// How far ahead of the frames the zeroer initializes the active segment: all of it, in one
/// stretch with one sync (zeroing a little ahead after every commit made every commit's
/// fdatasync wait for a journal commit of the extents just converted, and was slower than
/// not zeroing at all).
pub const ZERO_AHEAD_BYTES: u64 = u64::MAX;
/// Zeros written at once by the zeroer, under the writer lock (about 60 µs of copying).
pub const ZERO_CHUNK_BYTES: u64 = 256 * 1024;
/// Records a background check verifies between two looks at the write path: if a group
/// commit happened since the last look, it steps aside for [`CHECK_YIELD`].
pub const CHECK_PACE_RECORDS: u64 = 64;
/// How long a check steps aside for appends that are running. It still finishes: at most
/// this per [`CHECK_PACE_RECORDS`] records, so beside appends that never stop a check of
/// 1,000,000 records takes at most about 16 s more; on an idle store it never waits.
pub const CHECK_YIELD: std::time::Duration = std::time::Duration::from_micros(1000);

/// redb's structure check needs no transaction open on the file: it waits this long, at most,
/// for the read snapshots already taken (a sync's, a digest's, another check's) to end, its
/// caller keeping new ones from starting. Past it the check fails naming the wait (not a
/// finding of damage).
pub const STRUCTURE_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How often the structure check looks again whether those snapshots ended.
pub const STRUCTURE_CHECK_RETRY: std::time::Duration = std::time::Duration::from_millis(5);
/// How long opening a directory waits when the lock's holder is this very process: a child
/// being spawned by another thread holds a copy of every descriptor (and so the flock) from
/// its fork until its exec closes them, so a handle just closed can look held for a moment.
pub const LOCK_SELF_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Damaged stretches a salvage report lists one by one; past it they are counted.
pub const SALVAGE_DAMAGED_LISTED_MAX: usize = 1024;

/// Damaged segments the damage register lists (past it, more damage is logged, not listed).
pub const DAMAGED_SEGMENTS_MAX: usize = 256;

/// Damaged ops listed per segment in the damage register (the rest are counted).
pub const DAMAGED_OPS_LISTED_MAX: usize = 4096;

/// The disk-full reserve: a preallocated file deleted when the disk fills, so derived state
/// can commit and a resume can reopen it (see `reserve.rs`).
pub const RESERVE_BYTES: u64 = 16 * 1024 * 1024;
