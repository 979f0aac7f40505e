//! AWS event stream framing (Bedrock): arbitrary bytes in arbitrary pieces
//! never panic, memory stays bounded, and every message decoded is one whose
//! prelude and message CRCs matched. Half the inputs are made of valid
//! messages (the input's bytes as payloads and header values) with one byte
//! possibly flipped, so the decoding past the CRC checks is exercised too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_audit_core::eventstream::{Decoder, encode};

const MAX_MESSAGE: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let [piece, mode, flip_hi, flip_lo, body @ ..] = data else { return };
    let piece = usize::from(*piece).max(1);
    let bytes = if mode & 1 == 1 {
        let mut framed = Vec::new();
        for part in body.split(|&b| b == 0xff) {
            let kind = String::from_utf8_lossy(&part[..part.len().min(8)]).into_owned();
            framed.extend(encode(&[(":event-type", &kind), (":message-type", "event")], part));
        }
        if mode & 2 == 2 && !framed.is_empty() {
            let at = usize::from(u16::from_be_bytes([*flip_hi, *flip_lo])) % framed.len();
            framed[at] ^= 1 << (mode >> 5);
        }
        framed
    } else {
        body.to_vec()
    };
    let mut decoder = Decoder::new(MAX_MESSAGE);
    let mut decoded = Vec::new();
    for p in bytes.chunks(piece) {
        decoder.feed(p, |m| decoded.push(m));
        assert!(decoder.memory() <= 2 * MAX_MESSAGE, "{}", decoder.memory());
    }
    if mode & 3 == 1 {
        // Valid messages, none corrupted, none over the cap: all decoded.
        let fits = body.split(|&b| b == 0xff).all(|p| p.len() + 128 < MAX_MESSAGE);
        if fits {
            assert_eq!(decoded.len(), body.split(|&b| b == 0xff).count());
        }
    }
    // Whatever decoded re-encodes to a message that decodes the same.
    for m in decoded {
        let headers: Vec<(&str, &str)> = [(":event-type", &m.event_type), (":message-type", &m.message_type)]
            .into_iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
            .collect();
        let mut again = Vec::new();
        Decoder::new(usize::MAX).feed(&encode(&headers, &m.payload), |m| again.push(m));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].payload, m.payload);
    }
});
