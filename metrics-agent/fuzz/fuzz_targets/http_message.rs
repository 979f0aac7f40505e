//! HTTP/1.1 message parsing: arbitrary bytes fed in arbitrary pieces never
//! panic, and the parser's memory stays within its cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_audit_core::message::{Kind, MAX_HEAD_BYTES, MessageParser};

const BODY_CAP: usize = 8192;

fuzz_target!(|data: &[u8]| {
    let Some((&control, mut rest)) = data.split_first() else { return };
    let kind = if control & 1 == 0 { Kind::Request } else { Kind::Response };
    let mut parser = MessageParser::new(kind, BODY_CAP);
    if kind == Kind::Response {
        parser.expect_response_to(if control & 2 == 0 { "POST" } else { "HEAD" });
    }
    // Piece lengths come from the control byte, so splits vary.
    let piece = 1 + (control as usize >> 2) * 7;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(piece.min(rest.len()));
        for m in parser.feed(now) {
            assert!(m.body.len() <= BODY_CAP);
        }
        assert!(parser.buffered() <= MAX_HEAD_BYTES + BODY_CAP + piece);
        rest = later;
    }
    let _ = parser.close();
});
