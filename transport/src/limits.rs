//! Every limit of the transport in one place.

use std::time::Duration;

/// A QUIC connection with no packet for this long is dead.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive pings, well below the idle timeout, so a half-open peer is detected.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Bytes read from a stream at once.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Attempts of connect + handshake in one `sync_with_peer`.
pub const SYNC_ATTEMPTS_DEFAULT: u32 = 3;
/// The first backoff between attempts; it doubles after each.
pub const SYNC_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// How long the last frames and the refusal of a failing session may take to write.
pub const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often every peer is synced.
pub const SYNC_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);
/// The scheduler's first wait after a failed sync; it doubles after each failure.
pub const SCHEDULE_BACKOFF_BASE: Duration = Duration::from_secs(5);
/// The scheduler's longest wait after failures.
pub const SCHEDULE_BACKOFF_MAX: Duration = Duration::from_secs(300);
