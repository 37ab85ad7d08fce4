//! The sync stream decoder on arbitrary bytes, delivered in arbitrary chunks (the first byte
//! sets the chunk size), as a peer could send them: every message decodes or is refused with
//! an error (forged lengths included); nothing panics and nothing grows past the frame limit.
//! The ops of an `Ops` frame are then read for their heads and decoded, as a receiver does.
#![no_main]

use feral_sync::message::{FrameDecoder, SyncMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((chunk, stream)) = data.split_first() else { return };
    let chunk = usize::from(*chunk).max(1);
    let mut decoder = FrameDecoder::default();
    for piece in stream.chunks(chunk) {
        // A reader asks how much it may read before pushing, as the driver does.
        if decoder.wanted().is_err() {
            return;
        }
        decoder.push(piece);
        loop {
            match decoder.next_message() {
                Ok(Some(SyncMessage::Ops(ops))) => {
                    for op in ops {
                        let _ = op.head();
                        let _ = op.decode();
                    }
                }
                Ok(Some(_message)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
