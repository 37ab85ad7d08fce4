//! Every limit of the sync protocol in one place.

/// The protocol version this build speaks (3: ops travel as their stored bytes, each with its
/// proof trailer, and a sender frames only whole sealed runs; 4: a `Hello` lists the ranges
/// its sender wants again, below its heads, to heal damaged records).
pub const PROTOCOL_VERSION: u32 = 4;
/// Largest frame (length prefix excluded) a peer may send; a larger length is refused before
/// anything is allocated for it. A sender closes an `Ops` frame past
/// [`FRAME_OPS_BYTES_TARGET`] (1 MiB), so its largest frame is that plus one op of at most
/// `OP_DATA_BYTES_MAX` (1 MiB) and its names: about 2 MiB; the largest `Hello`
/// ([`HELLO_ORIGINS_MAX`] heads) is under 2 MiB. 4 MiB leaves twice that, and bounds what a
/// peer stalled inside a frame holds (the receive windows are twice this).
pub const FRAME_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;
/// Most ops in one `Ops` frame.
pub const FRAME_OPS_MAX: usize = 1024;
/// Op payload bytes a sender puts in one `Ops` frame before closing it (one op may exceed it).
pub const FRAME_OPS_BYTES_TARGET: usize = 1024 * 1024;
/// Most origins a `Hello` may list.
pub const HELLO_ORIGINS_MAX: usize = 64 * 1024;
/// Most ranges a `Hello` may want again (damaged records to heal); a node with more damage
/// asks for the first ones, and for the rest once those are healed.
pub const HELLO_WANTS_MAX: usize = 256;
/// Capacity an empty frame decoder keeps after a large frame; more is given back.
pub const DECODER_IDLE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Received frames a session holds while an apply runs; past it the driver stops reading, so
/// the peer's stream is held back by flow control. The frames waiting go in the next apply
/// together (one durable commit for up to this many frames: at most 4 × 1,024 ops, about
/// 8 MiB).
pub const INBOX_FRAMES_MAX: usize = 4;
/// From the start of a session to the peer's hello.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// After the hello, the longest time without a whole frame moving either way or a store
/// request finishing: a peer trickling a frame a byte at a time, or keeping the connection
/// alive without sending, is cut off.
pub const PROGRESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);
/// The longest session, however busy: 1,000,000 ops take about 5 s; a session that is cut
/// resumes from its heads in the next.
pub const SESSION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);
