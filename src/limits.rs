//! Every limit of the node facade in one place.

/// Ops queued for the projection applier before appenders wait (bounds memory and lag).
pub const APPLY_QUEUE_OPS_MAX: usize = 64 * 1024;
/// Bytes of queued ops (their data and names, as the applier holds them) before appenders
/// wait: received ops of 1 KiB would otherwise hold 64 MiB at the ops bound.
pub const APPLY_QUEUE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Origin keys a node keeps in memory for checking received seals (a cache: a key not held
/// is read again from its origin's genesis in the log).
pub const ORIGIN_KEYS_CACHED_MAX: usize = 4096;
/// Origins a store holds at most: a received run that would start one more is refused
/// (`too_many_origins`), so no flood of origins grows a store, or every handshake's list of
/// heads, without bound. Below the most a `Hello` may list, so every store can still sync.
pub const ORIGINS_MAX: usize = 16_384;
/// Origins one node key may own in a store (one per data directory it made, and one more per
/// restore).
pub const ORIGINS_PER_NODE_MAX: usize = 64;
const _: () = assert!(ORIGINS_MAX <= feral_sync::limits::HELLO_ORIGINS_MAX);
/// Conflicts whose evidence (the other branch's received ops) is kept in `conflicts/`; later
/// ones are quarantined all the same, without evidence (and say so).
pub const CONFLICT_EVIDENCE_MAX: usize = 64;
/// Largest `conflicts.json` a node reads (one entry per quarantined origin, at most
/// `ORIGINS_MAX` of them).
pub const CONFLICTS_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Nodes a store may hold revoked (a statement past it is refused with a clear error: a
/// cluster that revokes this many should make a new CA).
pub const REVOCATIONS_MAX: usize = 1024;
/// Longest reason a revocation statement carries.
pub const REVOCATION_REASON_BYTES_MAX: usize = 256;
/// Largest `revoked.json` a node reads (`REVOCATIONS_MAX` entries with their origins).
pub const REVOKED_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most ops the applier takes from its queue into one projection transaction (queued appends
/// are applied together when it falls behind: one commit instead of one per append).
pub const APPLY_BATCH_OPS_MAX: usize = 16 * 1024;

use std::time::Duration;

/// Largest request body the API reads by default (`api_body_bytes_max` in the config); a
/// larger one is answered 413 before it is read (a 60 MiB body once cost 1.1 GB of RAM).
pub const API_BODY_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
/// Requests the API handles at once; beyond it, 503 `busy` (each may hold a body and a
/// blocking thread).
pub const API_REQUESTS_IN_FLIGHT_MAX: usize = 64;
/// Connections one API listener keeps open; at the cap the longest-idle one is closed for
/// the new one (1,100 slow connections once made the API unreachable).
pub const API_CONNECTIONS_MAX: usize = 256;
/// From a connection's start (or its last response) to a whole request head.
pub const API_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that moves no byte for this long, between requests, is closed.
pub const API_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request body may take to arrive once its head is in.
pub const API_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Headers in one request (hyper's own default is 100).
pub const API_HEADERS_MAX: usize = 64;
/// How often a connection checks whether it has been idle too long.
pub const API_WATCHDOG_TICK: Duration = Duration::from_secs(1);
/// The accept loop's pause after a failed accept (EMFILE: wait for descriptors to free).
pub const API_ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// How long a stopping API waits for requests in flight.
pub const API_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long resolving the peer named in `POST /v1/sync` may take.
pub const API_PEER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest body of an error answer the framework made that is rewritten into the JSON shape.
pub const API_ERROR_BODY_BYTES_MAX: usize = 64 * 1024;

/// Changes per page of `GET /v1/changes` unless `limit` says otherwise.
pub const CHANGES_LIMIT_DEFAULT: usize = 100;
/// Largest `limit` of `GET /v1/changes`.
pub const CHANGES_LIMIT_MAX: usize = 1_000;
/// Log records one change-feed read looks through for changes of the asked tables before it
/// answers with what it has (possibly nothing, with `more`).
pub const CHANGES_SCAN_RECORDS_MAX: usize = 10_000;
/// Tables one change-feed request may filter on.
pub const CHANGES_TABLES_MAX: usize = 16;
/// Longest long-poll `wait` of `GET /v1/changes`.
pub const CHANGES_WAIT_MAX: Duration = Duration::from_secs(60);
/// Change-feed requests (long polls and event streams) served at once; past it, 503 `busy`.
pub const CHANGES_SUBSCRIBERS_MAX: usize = 32;
/// An event stream with nothing to send says so this often (a comment line), so the API's
/// idle timeout closes only streams whose client stopped reading.
pub const CHANGES_HEARTBEAT: Duration = Duration::from_secs(15);

/// Exports (`GET /v1/export`) served at once; past it, 503 `busy`. Each holds a blocking
/// thread and a read snapshot while its client reads.
pub const EXPORTS_MAX: usize = 2;
/// Bytes of an export gathered before they are handed to the connection.
pub const EXPORT_CHUNK_BYTES: usize = 64 * 1024;
/// Chunks of an export waiting for a slow client, at most (then the export waits for it:
/// memory per export is at most this many chunks).
pub const EXPORT_CHUNKS_QUEUED: usize = 4;
