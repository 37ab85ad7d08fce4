//! The record decoder on arbitrary bytes: frame decoding (salt from the first 8 bytes), the op
//! payload codec, and the segment header and footer. Nothing may panic or read past the input.
#![no_main]

use feral_log::record::{Decoded, decode_frame};
use feral_log::segment::{Footer, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Header::decode(data);
    let _ = Footer::decode(data);
    let _ = feral_log::codec::decode_op(data);
    let Some((salt, rest)) = data.split_first_chunk::<8>() else { return };
    let salt = u64::from_le_bytes(*salt);
    let mut at = 0;
    // Walk frames as a segment scan does, while they decode.
    while at < rest.len() {
        match decode_frame(&rest[at..], salt, 1 << 20) {
            Decoded::Frame(frame) => {
                assert!(frame.frame_len > 0 && frame.frame_len <= rest.len() - at);
                let _ = feral_log::codec::decode_op(frame.payload);
                at += frame.frame_len;
            }
            Decoded::Zero | Decoded::Bad(_) => break,
        }
    }
});
