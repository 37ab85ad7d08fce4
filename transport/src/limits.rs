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
/// New ops are pushed to the peers this long after the first of them: the writes of a burst
/// within it share one session per peer (and later ones one more session each).
pub const PUSH_COALESCE_WINDOW: Duration = Duration::from_millis(2);
/// After a session that new ops came during, the next one with that peer waits this long, so
/// a stream of writes is carried by a few sessions of many ops, not one session per write.
pub const PUSH_REPEAT_GAP: Duration = Duration::from_millis(25);
/// How long a stopping endpoint waits for its closed connections to drain. Their close frames
/// are out by then; a connection whose handshake never got an answer would otherwise hold the
/// stop for its whole probe backoff (about 3 s), and a peer that missed a close times out on
/// its own.
pub const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_millis(250);
/// The scheduler's first wait after a failed sync; it doubles after each failure.
pub const SCHEDULE_BACKOFF_BASE: Duration = Duration::from_secs(5);
/// The scheduler's longest wait after failures.
pub const SCHEDULE_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// mDNS peers a node keeps; more advertisements are refused and counted.
pub const DISCOVERED_PEERS_MAX: usize = 64;
/// Peers named in sync requests a node keeps.
pub const MANUAL_PEERS_MAX: usize = 32;
/// A discovered or manual peer is forgotten after this many failed syncs in a row (a
/// discovered one is found again when it next announces itself).
pub const PEER_FAILURES_MAX: u32 = 5;
/// Sync connections this node serves at once (each holds up to two receive windows).
pub const SERVED_CONNECTIONS_MAX: usize = 16;
/// A session's stream receive window: twice the 1 MiB frame a sender fills
/// (`FRAME_OPS_BYTES_TARGET`), so one frame is in flight while the previous one is applied.
/// Measured on the 100k-op catch-up between two processes: 8 MiB windows (twice the frame
/// limit) made it 5-10 % slower and the receiver's peak RSS 15 MiB larger; 2 MiB matches
/// quinn's 1.25 MB default in speed and memory. The driver reads whatever arrives into the
/// frame decoder, so a larger frame still passes, one window at a time.
pub const STREAM_RECEIVE_WINDOW_BYTES: u32 = 2 * feral_sync::limits::FRAME_OPS_BYTES_TARGET as u32;
/// A connection's receive window (one stream per connection).
pub const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = STREAM_RECEIVE_WINDOW_BYTES + 64 * 1024;
/// Bytes a connection may send before its peer acknowledges them.
pub const SEND_WINDOW_BYTES: u64 = 2 * STREAM_RECEIVE_WINDOW_BYTES as u64;
